//! The group fairness metrics, as plain functions of scores, decisions and
//! labels, so that they can be checked against fairlearn's definitions.
//!
//! Conventions follow fairlearn: the selection rate is the share of rows
//! selected, the true-positive rate the share of actual positives selected,
//! the disparate-impact ratio a group's selection rate over the highest one
//! (fairlearn's `demographic_parity_ratio` is the smallest such ratio), and
//! the equal-opportunity difference the largest true-positive rate minus the
//! smallest. A group without actual positives has no true-positive rate and
//! takes no part in the equal-opportunity difference.

use serde::{Deserialize, Serialize};

/// Counts and rates over one set of rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub rows: usize,
    pub selected: usize,
    pub selection_rate: f64,
    /// Mean model score.
    pub mean_score: f64,
    /// Actual positives; `None` without labels.
    pub positives: Option<usize>,
    /// Observed positive rate (what a calibrated score averages to).
    pub observed_rate: Option<f64>,
    /// Share of actual positives selected; `None` without labels, and for
    /// rows without an actual positive (fairlearn counts those 0, by
    /// scikit-learn's `zero_division`, and so would report a gap that no
    /// data shows).
    pub true_positive_rate: Option<f64>,
}

/// Rates over the rows at `index` (all rows when `None`).
pub fn rates(scores: &[f64], selected: &[bool], labels: Option<&[bool]>, index: &[usize]) -> Rates {
    let n = index.len();
    let chosen = index.iter().filter(|&&i| selected[i]).count();
    let mean_score = index.iter().map(|&i| scores[i]).sum::<f64>() / n as f64;
    let (positives, observed_rate, true_positive_rate) = match labels {
        Some(y) => {
            let positives = index.iter().filter(|&&i| y[i]).count();
            let hits = index.iter().filter(|&&i| y[i] && selected[i]).count();
            (
                Some(positives),
                Some(positives as f64 / n as f64),
                (positives > 0).then(|| hits as f64 / positives as f64),
            )
        }
        None => (None, None, None),
    };
    Rates {
        rows: n,
        selected: chosen,
        selection_rate: chosen as f64 / n as f64,
        mean_score,
        positives,
        observed_rate,
        true_positive_rate,
    }
}

/// One calibration bin: scores in `[lower, upper)` (the last bin also holds
/// `upper`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    pub lower: f64,
    pub upper: f64,
    pub rows: usize,
    pub mean_score: f64,
    pub observed_rate: f64,
}

/// Mean score against observed rate in `bins` equal-width score bins over
/// [0, 1]; empty bins are left out.
pub fn calibration(
    scores: &[f64],
    labels: &[bool],
    index: &[usize],
    bins: usize,
) -> Vec<CalibrationBin> {
    let mut sums = vec![(0usize, 0.0f64, 0usize); bins];
    for &i in index {
        let b = ((scores[i].clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sums[b].0 += 1;
        sums[b].1 += scores[i];
        sums[b].2 += usize::from(labels[i]);
    }
    sums.into_iter()
        .enumerate()
        .filter(|(_, (n, ..))| *n > 0)
        .map(|(b, (n, score, positives))| CalibrationBin {
            lower: b as f64 / bins as f64,
            upper: (b + 1) as f64 / bins as f64,
            rows: n,
            mean_score: score / n as f64,
            observed_rate: positives as f64 / n as f64,
        })
        .collect()
}

/// The index of the most favoured group: the highest selection rate, the
/// first such group on a tie.
pub fn most_favoured(selection_rates: &[f64]) -> usize {
    selection_rates.iter().enumerate().fold(
        0,
        |best, (i, &r)| if r > selection_rates[best] { i } else { best },
    )
}

/// Largest minus smallest of the values present (fairlearn's `difference`);
/// undefined with fewer than two, where there is no gap to measure.
pub fn spread(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let present: Vec<f64> = values.into_iter().flatten().collect();
    let lo = present.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = present.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (present.len() >= 2).then_some(hi - lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rates_over_the_indexed_rows() {
        let scores = [0.9, 0.2, 0.6, 0.1, 0.7];
        let selected = [true, false, true, false, true];
        let labels = [true, true, false, false, true];
        let r = rates(&scores, &selected, Some(&labels), &[0, 1, 2, 3]);
        assert_eq!((r.rows, r.selected, r.positives), (4, 2, Some(2)));
        assert_eq!(r.selection_rate, 0.5);
        assert_eq!(r.true_positive_rate, Some(0.5));
        assert_eq!(r.observed_rate, Some(0.5));
        assert!((r.mean_score - 0.45).abs() < 1e-15);
        let none = rates(&scores, &selected, Some(&labels), &[2, 3]);
        assert_eq!(none.true_positive_rate, None, "no actual positive");
        assert_eq!(rates(&scores, &selected, None, &[0]).observed_rate, None);
    }

    /// fairlearn 0.15.0 gives `equal_opportunity_difference` 1.0 for these
    /// rows, counting group b's rate as 0; b has no actual positive, so it
    /// has no rate, and no gap is shown.
    #[test]
    fn a_group_without_positives_has_no_true_positive_rate() {
        let scores = [0.9, 0.1, 0.8, 0.2, 0.7, 0.3];
        let selected = [true, false, true, false, true, false];
        let labels = [true, false, true, false, false, false];
        let a = rates(&scores, &selected, Some(&labels), &[0, 1, 2]);
        let b = rates(&scores, &selected, Some(&labels), &[3, 4, 5]);
        assert_eq!(
            (a.true_positive_rate, b.true_positive_rate),
            (Some(1.0), None)
        );
        assert_eq!(spread([a.true_positive_rate, b.true_positive_rate]), None);
    }

    #[test]
    fn bins_scores_and_keeps_one_in_the_last_bin() {
        let scores = [0.05, 0.15, 0.12, 1.0];
        let labels = [false, true, false, true];
        let bins = calibration(&scores, &labels, &[0, 1, 2, 3], 10);
        assert_eq!(bins.len(), 3);
        assert_eq!((bins[1].rows, bins[1].observed_rate), (2, 0.5));
        assert!((bins[1].mean_score - 0.135).abs() < 1e-15);
        assert_eq!((bins[2].lower, bins[2].rows), (0.9, 1));
    }

    #[test]
    fn favours_the_highest_rate_and_spreads_present_values() {
        assert_eq!(most_favoured(&[0.2, 0.5, 0.5, 0.1]), 1);
        assert_eq!(spread([Some(0.25), None, Some(0.75), Some(0.5)]), Some(0.5));
        assert_eq!(spread([None, None]), None);
        assert_eq!(spread([Some(0.4), None]), None, "one rate has no gap");
    }
}
