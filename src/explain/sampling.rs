//! Model-agnostic Shapley values for any graph, from the model's own outputs.
//!
//! The game is interventional: v(S) = E_b f(x_S, b_S̄) over background rows
//! b. With few features it is solved exactly by enumerating coalitions;
//! otherwise by permutation sampling with antithetic pairs (a permutation and
//! its reverse share a background row), which converges faster per model call
//! than KernelSHAP. Every permutation's rows go to the model in one batch.
//! Sampling is seeded, so the same row always gets the same answer, and each
//! value carries its standard error.
//!
//! Both explain the model's score (e.g. the probability), not a margin: a
//! generic graph has no margin to read.
//!
//! The base value is the model's mean score over the whole background, as
//! every other explainer's is. Sampled pairs walk from a sample of the
//! background, whose mean misses it by a sampling error their values share;
//! the estimate is constrained to add up to the score less the base, that
//! error spread over the values in proportion to their variances (the
//! additive efficient normalisation of Covert & Lee, "Improving KernelSHAP",
//! AISTATS 2021). Enumeration plays the game against the first
//! [`EXACT_REFERENCE_ROWS`] background rows, exactly, and its base value is
//! their mean: every reference costs 2^width rows.

use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

/// Up to this many features, coalitions are enumerated exactly.
pub const EXACT_MAX_FEATURES: usize = 10;
/// Background rows exact enumeration walks from.
pub const EXACT_REFERENCE_ROWS: usize = 32;

/// Scores a batch of rows (row-major) with the model.
pub trait Scorer {
    fn score(&mut self, rows: &[f32]) -> Result<Vec<f32>, String>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub phi: Vec<f64>,
    /// Standard error of each value; zero when exact, and when no sampled
    /// reference differed from the row in that feature.
    pub standard_error: Vec<f64>,
    /// The mean score over the background (its first
    /// [`EXACT_REFERENCE_ROWS`] rows when enumerated).
    pub base: f64,
    /// The model's score for the row.
    pub value: f64,
    /// Permutation pairs evaluated; zero when exact.
    pub pairs: usize,
    /// |references' mean score + Σφ − score| before the values were held to
    /// the background's mean: each pair adds up by construction, so only a
    /// model that answers one row differently from call to call leaves one.
    pub residual: f64,
}

/// What one estimate may spend: antithetic pairs, and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub pairs: usize,
    /// Stop sampling (after at least two pairs) once this has passed: the
    /// standard error then says how much precision the deadline cost.
    pub deadline: Option<std::time::Instant>,
}

/// Explains `row` against `background` (row-major, `width` columns), whose
/// mean score is `expected`, within `budget`.
pub fn explain(
    scorer: &mut dyn Scorer,
    row: &[f32],
    background: &[f32],
    width: usize,
    expected: f64,
    budget: Budget,
    seed: u64,
) -> Result<Estimate, String> {
    if width <= EXACT_MAX_FEATURES {
        let references = &background[..background.len().min(EXACT_REFERENCE_ROWS * width)];
        return exact(scorer, row, references, width);
    }
    let mut references: Vec<&[f32]> = background.chunks(width).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Pairs take the reference rows in a random order, each once before
    // any twice: with fewer pairs than rows, the estimate (and the base
    // value) is of the whole background's game, not of its first rows'.
    references.shuffle(&mut rng);
    let mut order: Vec<usize> = (0..width).collect();
    let (mut sum, mut sum_sq) = (vec![0.0; width], vec![0.0; width]);
    // The references' scores, summed, and the row's, as the last pair saw it.
    let (mut first, mut value) = (0.0, 0.0);
    let mut pairs = 0;
    for p in 0..budget.pairs.max(2) {
        if p >= 2
            && budget
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
        {
            break;
        }
        pairs += 1;
        order.shuffle(&mut rng);
        let reference = references[p % references.len()];
        // One batch: the walk from the reference to the row along the
        // permutation, then along its reverse.
        let mut rows = Vec::with_capacity(2 * (width + 1) * width);
        for forward in [true, false] {
            let mut z = reference.to_vec();
            rows.extend_from_slice(&z);
            for k in 0..width {
                let j = if forward {
                    order[k]
                } else {
                    order[width - 1 - k]
                };
                z[j] = row[j];
                rows.extend_from_slice(&z);
            }
        }
        let scores = scorer.score(&rows)?;
        let mut pair = vec![0.0; width];
        for (half, forward) in [(0, true), (1, false)] {
            let s = &scores[half * (width + 1)..(half + 1) * (width + 1)];
            for k in 0..width {
                let j = if forward {
                    order[k]
                } else {
                    order[width - 1 - k]
                };
                pair[j] += 0.5 * (f64::from(s[k + 1]) - f64::from(s[k]));
            }
        }
        first += f64::from(scores[0]);
        value = f64::from(scores[width]);
        for j in 0..width {
            sum[j] += pair[j];
            sum_sq[j] += pair[j] * pair[j];
        }
    }
    let n = pairs as f64;
    let mut phi: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let standard_error: Vec<f64> = sum_sq
        .iter()
        .zip(&phi)
        .map(|(sq, mean)| ((sq / n - mean * mean).max(0.0) * n / (n - 1.0) / n).sqrt())
        .collect();
    // The values add up to the score less the references' mean; the gap to
    // the background's is the references' sampling error.
    let references_mean = first / n;
    let residual = (references_mean + phi.iter().sum::<f64>() - value).abs();
    let gap = (value - expected) - phi.iter().sum::<f64>();
    let mut weights: Vec<f64> = standard_error.iter().map(|se| se * se).collect();
    if weights.iter().sum::<f64>() == 0.0 {
        // Every pair agreed: the error is shared by the features the
        // background varies in, and a feature it never varies in keeps
        // its zero (the dummy axiom).
        weights = (0..width)
            .map(|j| {
                let varies = background.chunks(width).any(|b| b[j] != row[j]);
                if varies { 1.0 } else { 0.0 }
            })
            .collect();
    }
    let total: f64 = weights.iter().sum();
    if total > 0.0 {
        for (phi, weight) in phi.iter_mut().zip(&weights) {
            *phi += gap * weight / total;
        }
    }
    Ok(Estimate {
        phi,
        standard_error,
        base: expected,
        value,
        pairs,
        residual,
    })
}

/// Exact Shapley values by enumerating all 2^width coalitions.
fn exact(
    scorer: &mut dyn Scorer,
    row: &[f32],
    background: &[f32],
    width: usize,
) -> Result<Estimate, String> {
    let references = background.len() / width;
    let coalitions = 1usize << width;
    let mut rows = Vec::with_capacity(coalitions * references * width);
    for s in 0..coalitions {
        for b in background.chunks(width) {
            rows.extend((0..width).map(|j| if s & (1 << j) != 0 { row[j] } else { b[j] }));
        }
    }
    let scores = scorer.score(&rows)?;
    let v: Vec<f64> = scores
        .chunks(references)
        .map(|c| c.iter().map(|&x| f64::from(x)).sum::<f64>() / references as f64)
        .collect();
    Ok(Estimate {
        phi: shapley(width, &v),
        standard_error: vec![0.0; width],
        base: v[0],
        value: v[coalitions - 1],
        pairs: 0,
        residual: 0.0,
    })
}

/// Shapley values of a game given by its value on every coalition:
/// `v[s]` for the bitmask `s` of players in the coalition.
pub fn shapley(width: usize, v: &[f64]) -> Vec<f64> {
    let fact = |n: usize| (1..=n).map(|k| k as f64).product::<f64>();
    (0..width)
        .map(|i| {
            (0..v.len())
                .filter(|s| s & (1 << i) == 0)
                .map(|s| {
                    let size = s.count_ones() as usize;
                    fact(size) * fact(width - size - 1) / fact(width) * (v[s | (1 << i)] - v[s])
                })
                .sum()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(n: usize) -> Budget {
        Budget {
            pairs: n,
            deadline: None,
        }
    }

    #[test]
    fn a_passed_deadline_stops_after_two_pairs() {
        let mut model = Logistic(vec![0.3; 12]);
        let bg = background(12, 8);
        let x = vec![1.0f32; 12];
        let budget = Budget {
            pairs: 1000,
            deadline: Some(std::time::Instant::now()),
        };
        let expected = mean(&mut model, &bg);
        let e = explain(&mut model, &x, &bg, 12, expected, budget, 7).unwrap();
        assert_eq!(e.pairs, 2);
        assert!(e.standard_error.iter().all(|se| se.is_finite()));
    }

    /// f(x) = σ(w·x): a smooth non-linear model whose exact interventional
    /// Shapley values are computed here by enumeration for small widths.
    struct Logistic(Vec<f64>);

    impl Scorer for Logistic {
        fn score(&mut self, rows: &[f32]) -> Result<Vec<f32>, String> {
            Ok(rows
                .chunks(self.0.len())
                .map(|r| {
                    let m: f64 = r.iter().zip(&self.0).map(|(&x, w)| f64::from(x) * w).sum();
                    (1.0 / (1.0 + (-m).exp())) as f32
                })
                .collect())
        }
    }

    /// The model's mean score over the background.
    fn mean(model: &mut dyn Scorer, background: &[f32]) -> f64 {
        let scores = model.score(background).unwrap();
        scores.iter().map(|&s| f64::from(s)).sum::<f64>() / scores.len() as f64
    }

    fn background(width: usize, rows: usize) -> Vec<f32> {
        (0..width * rows)
            .map(|i| ((i * 7919) % 13) as f32 / 6.0 - 1.0)
            .collect()
    }

    /// With fewer pairs than background rows, the references are a random
    /// sample of the whole background, not its first rows, and the values
    /// still add up to the score less the whole background's mean.
    #[test]
    fn a_sample_of_references_adds_up_to_the_whole_background() {
        // Features 0 and 1 differ from the row only in the later rows.
        let mut model = Logistic(
            std::iter::once(1.0)
                .chain(std::iter::repeat_n(3.0, 11))
                .collect(),
        );
        let x = vec![0.0f32; 12];
        let bg: Vec<f32> = (0..8)
            .flat_map(|r| (0..12).map(move |c| if c < 2 && r >= 4 { 1.0 } else { 0.0 }))
            .collect();
        let expected = mean(&mut model, &bg);
        let estimates: Vec<Estimate> = (0..8)
            .map(|seed| explain(&mut model, &x, &bg, 12, expected, pairs(4), seed).unwrap())
            .collect();
        for e in &estimates {
            assert_eq!(e.base, expected);
            assert!(
                (e.base + e.phi.iter().sum::<f64>() - e.value).abs() < 1e-6,
                "{e:?}"
            );
            assert!(e.phi[2..].iter().all(|&phi| phi == 0.0), "dummies: {e:?}");
        }
        // Only references from the later rows tell the two apart.
        assert!(
            estimates.iter().any(|e| (e.phi[0] - e.phi[1]).abs() > 1e-3),
            "{estimates:?}"
        );
        // Each row a reference once: the exact game.
        let whole = explain(&mut model, &x, &bg, 12, expected, pairs(8), 3).unwrap();
        let exact = exact(&mut model, &x, &bg, 12).unwrap();
        assert!((whole.phi[0] - exact.phi[0]).abs() < 1e-6, "{whole:?}");
        assert!((whole.phi[1] - exact.phi[1]).abs() < 1e-6, "{whole:?}");
    }

    #[test]
    fn exact_enumeration_adds_up() {
        let mut model = Logistic(vec![0.8, -1.2, 0.3, 2.0]);
        let x = [1.0, 0.5, -1.0, 0.25];
        let bg = background(4, 5);
        let expected = mean(&mut model, &bg);
        let e = explain(&mut model, &x, &bg, 4, expected, pairs(0), 1).unwrap();
        assert!((e.base + e.phi.iter().sum::<f64>() - e.value).abs() < 1e-6);
        assert_eq!(e.pairs, 0);
    }

    #[test]
    fn sampling_is_additive_reproducible_and_within_three_sigma_of_exact() {
        // 12 features: sampled; the exact answer comes from the same game
        // solved by enumeration.
        let weights: Vec<f64> = (0..12).map(|i| ((i as f64) - 5.5) * 0.3).collect();
        let x: Vec<f32> = (0..12).map(|i| ((i % 5) as f32) * 0.5 - 1.0).collect();
        let bg = background(12, 4);
        let mut model = Logistic(weights);
        let expected = mean(&mut model, &bg);
        let a = explain(&mut model, &x, &bg, 12, expected, pairs(400), 7).unwrap();
        let b = explain(&mut model, &x, &bg, 12, expected, pairs(400), 7).unwrap();
        assert_eq!(a, b, "seeded sampling is reproducible");
        assert!(
            (a.base + a.phi.iter().sum::<f64>() - a.value).abs() < 1e-6,
            "each pair is additive"
        );
        let exact = exact(&mut model, &x, &bg, 12).unwrap();
        for j in 0..12 {
            let tolerance = 3.0 * a.standard_error[j] + 1e-6;
            assert!(
                (a.phi[j] - exact.phi[j]).abs() <= tolerance,
                "feature {j}: {} vs exact {} (se {})",
                a.phi[j],
                exact.phi[j],
                a.standard_error[j]
            );
        }
    }
}
