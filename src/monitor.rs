//! The online fairness monitor: does a live model select some groups of
//! people for an ad far less often than others?
//!
//! Requests may carry audit-only attributes (an age band, say). They never
//! reach the model and are never stored with the subject or the decision:
//! each decision only adds one to its group's counters, in buckets of a
//! sixtieth of the window (at least a second) over a sliding window that
//! holds every decision of the last `window_secs`, and at most two buckets
//! more. From those counts the monitor reports each
//! group's selection rate (score at or above the model's decision
//! threshold), its ratio to the most favoured group's, and flags the model
//! when the lowest ratio falls below the configured threshold (the
//! four-fifths rule by default). Refused decisions have no score and are
//! not counted, nor are models that declare no decision threshold.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Mutex,
};

use crate::config::FairnessConfig;

/// Bounds that keep the monitor's memory and metric cardinality small
/// whatever callers send.
pub const MAX_ATTRIBUTES: usize = 8;
pub const MAX_TEXT: usize = 64;
pub const MAX_GROUPS: usize = 32;
/// Attributes one model counts within a window; a new name beyond them is
/// not counted until another has left the window.
pub const MAX_ATTRIBUTE_NAMES: usize = 32;
/// Where values past [`MAX_GROUPS`] per attribute are counted.
pub const OTHER_GROUP: &str = "(other)";

/// Buckets per window: a decision leaves it at most two buckets late.
const BUCKETS_PER_WINDOW: u64 = 60;

/// A request's audit-only attributes, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditAttributes(BTreeMap<String, String>);

impl AuditAttributes {
    /// Checks names and values; the error gives the offending entry's name
    /// (none when there are too many) and what is wrong with it.
    pub fn new(attributes: BTreeMap<String, String>) -> Result<Self, (Option<String>, String)> {
        if attributes.len() > MAX_ATTRIBUTES {
            return Err((
                None,
                format!(
                    "{} attributes; at most {MAX_ATTRIBUTES} are counted",
                    attributes.len()
                ),
            ));
        }
        for (name, value) in &attributes {
            check_name(name)
                .and_then(|()| check_group(value))
                .map_err(|problem| (Some(name.clone()), problem))?;
        }
        Ok(Self(attributes))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A group is 1-`MAX_TEXT` bytes of printable text, and not the name the
/// groups past the first `MAX_GROUPS` are counted under.
fn check_group(group: &str) -> Result<(), String> {
    if group.is_empty()
        || group.len() > MAX_TEXT
        || group.chars().any(crate::printable::unprintable)
    {
        Err(format!(
            "the group must be 1-{MAX_TEXT} bytes without control, line-breaking or invisible characters"
        ))
    } else if group == OTHER_GROUP {
        Err(format!(
            "{OTHER_GROUP} is where groups past the first {MAX_GROUPS} are counted, not a group"
        ))
    } else {
        Ok(())
    }
}

/// An attribute's name is 1-`MAX_TEXT` lowercase letters, digits or '_',
/// so that one attribute is never counted under two spellings.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_TEXT
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "names are 1-{MAX_TEXT} lowercase letters, digits or '_'"
        ))
    }
}

/// One group's counts in one bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    bucket: i64,
    decisions: u64,
    selected: u64,
}

/// Per (model, attribute): each group's buckets.
type Groups = HashMap<String, VecDeque<Bucket>>;
type Counts = HashMap<(String, String), Groups>;

/// Forgets the groups, and then the attributes, with no count since bucket
/// `oldest`: whatever names callers once sent, the monitor holds only the
/// window's.
fn prune(counts: &mut Counts, oldest: i64) {
    counts.retain(|_, groups| {
        groups.retain(|_, buckets| buckets.back().is_some_and(|b| b.bucket >= oldest));
        !groups.is_empty()
    });
}

pub struct FairnessMonitor {
    config: FairnessConfig,
    counts: Mutex<Counts>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupRate {
    pub group: String,
    pub decisions: u64,
    pub selected: u64,
    pub selection_rate: f64,
    pub ratio_to_most_favoured: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttributeFairness {
    pub model: String,
    pub attribute: String,
    pub groups: Vec<GroupRate>,
    pub disparate_impact: Option<f64>,
    pub flagged: bool,
}

impl FairnessMonitor {
    pub fn new(config: FairnessConfig) -> Self {
        Self {
            config,
            counts: Mutex::default(),
        }
    }

    pub fn config(&self) -> &FairnessConfig {
        &self.config
    }

    /// The first of a request's attributes this monitor does not count for
    /// a model whose manifest audits `audited`: each must be one of those
    /// columns or configured in `fairness.attributes`. So no caller can
    /// take the model's places with names of its own, and a misspelt
    /// attribute is refused rather than counted apart.
    pub fn unmonitored<'a>(
        &self,
        audited: &[String],
        attributes: &'a AuditAttributes,
    ) -> Option<&'a str> {
        attributes.0.keys().map(String::as_str).find(|name| {
            !audited.iter().any(|a| a == name) && !self.config.attributes.iter().any(|a| a == name)
        })
    }

    /// Counts decisions of `model` with these `scores` for every group the
    /// request belongs to.
    pub fn observe(
        &self,
        model: &str,
        threshold: f64,
        attributes: &AuditAttributes,
        scores: &[f64],
        now_ms: i64,
    ) {
        if attributes.is_empty() || scores.is_empty() {
            return;
        }
        let selected = scores.iter().filter(|&&s| s >= threshold).count() as u64;
        let (bucket, oldest) = self.buckets(now_ms);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (attribute, group) in &attributes.0 {
            let key = (model.to_owned(), attribute.clone());
            if !counts.contains_key(&key) {
                let named = |counts: &Counts| counts.keys().filter(|(m, _)| m == model).count();
                if named(&counts) >= MAX_ATTRIBUTE_NAMES {
                    prune(&mut counts, oldest);
                }
                if named(&counts) >= MAX_ATTRIBUTE_NAMES {
                    tracing::debug!(
                        model,
                        attribute,
                        "audit attribute not counted: too many names in the window"
                    );
                    continue;
                }
            }
            let groups = counts.entry(key).or_default();
            let key = if groups.contains_key(group) || groups.len() < MAX_GROUPS {
                group.as_str()
            } else {
                OTHER_GROUP
            };
            let buckets = groups.entry(key.to_owned()).or_default();
            while buckets.front().is_some_and(|b| b.bucket < oldest) {
                buckets.pop_front();
            }
            if buckets.back().is_none_or(|b| b.bucket != bucket) {
                buckets.push_back(Bucket {
                    bucket,
                    ..Bucket::default()
                });
            }
            let b = buckets.back_mut().expect("pushed above");
            b.decisions += scores.len() as u64;
            b.selected += selected;
        }
    }

    /// The window's rates for every (model, attribute) matching the filters
    /// (empty matches all), sorted by model and attribute.
    pub fn report(&self, model: &str, attribute: &str, now_ms: i64) -> Vec<AttributeFairness> {
        let (_, oldest) = self.buckets(now_ms);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut counts, oldest);
        let mut out: Vec<AttributeFairness> = counts
            .iter()
            .filter(|((m, a), _)| {
                (model.is_empty() || m == model) && (attribute.is_empty() || a == attribute)
            })
            .map(|((m, a), groups)| {
                let rates = groups
                    .iter()
                    .map(|(group, buckets)| {
                        let (decisions, selected) = buckets
                            .iter()
                            .filter(|b| b.bucket >= oldest)
                            .fold((0, 0), |(d, s), b| (d + b.decisions, s + b.selected));
                        (group.clone(), decisions, selected)
                    })
                    .filter(|(_, decisions, _)| *decisions > 0)
                    .collect();
                self.compare(m, a, rates)
            })
            .collect();
        out.sort_by(|x, y| (&x.model, &x.attribute).cmp(&(&y.model, &y.attribute)));
        out
    }

    fn compare(
        &self,
        model: &str,
        attribute: &str,
        rates: Vec<(String, u64, u64)>,
    ) -> AttributeFairness {
        let comparable = |decisions: u64| decisions >= self.config.min_group_decisions;
        let rate = |d: u64, s: u64| s as f64 / d as f64;
        let best = rates
            .iter()
            .filter(|(_, d, _)| comparable(*d))
            .map(|(_, d, s)| rate(*d, *s))
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
        let comparable_count = rates.iter().filter(|(_, d, _)| comparable(*d)).count();
        let mut groups: Vec<GroupRate> = rates
            .into_iter()
            .map(|(group, decisions, selected)| {
                let selection_rate = rate(decisions, selected);
                GroupRate {
                    // Nobody selected in any group: no ratio exists (0/0),
                    // and calling it parity would hide a model that shows
                    // its ad to no one.
                    ratio_to_most_favoured: best
                        .filter(|&b| comparable(decisions) && b > 0.0)
                        .map(|b| selection_rate / b),
                    group,
                    decisions,
                    selected,
                    selection_rate,
                }
            })
            .collect();
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        let disparate_impact = (comparable_count >= 2)
            .then(|| {
                groups
                    .iter()
                    .filter_map(|g| g.ratio_to_most_favoured)
                    .fold(f64::INFINITY, f64::min)
            })
            .filter(|r| r.is_finite());
        AttributeFairness {
            model: model.to_owned(),
            attribute: attribute.to_owned(),
            flagged: disparate_impact.is_some_and(|r| r < self.config.min_disparate_impact),
            disparate_impact,
            groups,
        }
    }

    /// The bucket `now_ms` falls in, and the oldest still in the window:
    /// enough whole buckets before the current one to cover the window, so
    /// that a decision counts for at least `window_secs`.
    fn buckets(&self, now_ms: i64) -> (i64, i64) {
        let window_ms = self.config.window_secs.saturating_mul(1000);
        let width = window_ms.div_ceil(BUCKETS_PER_WINDOW).max(1000);
        let whole = window_ms.div_ceil(width);
        let bucket = now_ms.div_euclid(width as i64);
        (bucket, bucket - whole as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> AuditAttributes {
        AuditAttributes::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
        .unwrap()
    }

    fn monitor(min_group_decisions: u64) -> FairnessMonitor {
        FairnessMonitor::new(FairnessConfig {
            window_secs: 600,
            min_disparate_impact: 0.8,
            min_group_decisions,
            attributes: Vec::new(),
        })
    }

    #[test]
    fn flags_a_group_selected_under_four_fifths_as_often() {
        let m = monitor(10);
        let young = attrs(&[("age_band", "18-34")]);
        let old = attrs(&[("age_band", "65+")]);
        // 18-34: 6 of 10 selected; 65+: 4 of 10 → ratio 4/6 < 0.8.
        let scores = |selected: usize| -> Vec<f64> {
            (0..10)
                .map(|i| if i < selected { 0.9 } else { 0.1 })
                .collect()
        };
        m.observe("m", 0.5, &young, &scores(6), 0);
        m.observe("m", 0.5, &old, &scores(4), 0);
        let r = &m.report("", "", 0)[0];
        assert_eq!(r.groups.len(), 2);
        assert!((r.disparate_impact.unwrap() - 4.0 / 6.0).abs() < 1e-12);
        assert!(r.flagged);
        assert_eq!(r.groups[0].ratio_to_most_favoured, Some(1.0));
    }

    #[test]
    fn small_groups_are_reported_but_not_compared() {
        let m = monitor(30);
        m.observe("m", 0.5, &attrs(&[("a", "x")]), &[0.9; 40], 0);
        m.observe("m", 0.5, &attrs(&[("a", "y")]), &[0.1; 5], 0);
        let r = &m.report("m", "a", 0)[0];
        assert_eq!(r.disparate_impact, None);
        assert!(!r.flagged);
        assert_eq!(r.groups[1].ratio_to_most_favoured, None);
    }

    #[test]
    fn no_ratio_exists_when_no_group_is_selected() {
        let m = monitor(10);
        m.observe("m", 0.5, &attrs(&[("a", "x")]), &[0.1; 20], 0);
        m.observe("m", 0.5, &attrs(&[("a", "y")]), &[0.2; 20], 0);
        let r = &m.report("m", "a", 0)[0];
        assert_eq!(r.disparate_impact, None);
        assert!(!r.flagged);
        assert!(r.groups.iter().all(|g| g.ratio_to_most_favoured.is_none()));
    }

    /// A decision counts for the whole window, and leaves it at most two
    /// buckets (a thirtieth of the window) later.
    #[test]
    fn a_decision_counts_for_the_whole_window() {
        for window_secs in [1, 60, 120, 3600, 86_400] {
            let window = window_secs as i64 * 1000;
            for at in [0, 1, window / 7, window - 1, 12_345_678] {
                let m = FairnessMonitor::new(FairnessConfig {
                    window_secs,
                    min_disparate_impact: 0.8,
                    min_group_decisions: 1,
                    attributes: Vec::new(),
                });
                m.observe("m", 0.5, &attrs(&[("a", "x")]), &[0.9], at);
                for later in [at, at + window / 2, at + window] {
                    let r = m.report("m", "a", later);
                    let counted = r.first().map(|a| a.groups[0].decisions);
                    assert_eq!(counted, Some(1), "{window_secs} s, {at} → {later}");
                }
                let gone = at + window + (window / 30).max(2000);
                assert!(
                    m.report("m", "a", gone).is_empty(),
                    "{window_secs} s, {at} → {gone}"
                );
            }
        }
    }

    #[test]
    fn counts_leave_the_window() {
        let m = monitor(1);
        m.observe("m", 0.5, &attrs(&[("a", "x")]), &[0.9], 0);
        m.observe("m", 0.5, &attrs(&[("a", "y")]), &[0.1], 0);
        assert!(m.report("m", "", 0)[0].flagged);
        let later = 11 * 60_000;
        m.observe("m", 0.5, &attrs(&[("a", "y")]), &[0.9], later);
        let r = &m.report("m", "", later)[0];
        assert_eq!(r.groups.len(), 1);
        assert_eq!(r.groups[0].decisions, 1);
    }

    #[test]
    fn attribute_names_are_bounded_and_leave_with_the_window() {
        let m = monitor(1);
        for i in 0..10_000 {
            m.observe("m", 0.5, &attrs(&[(&format!("a{i}"), "x")]), &[0.9], 0);
        }
        assert_eq!(m.report("", "", 0).len(), MAX_ATTRIBUTE_NAMES);
        let later = 11 * 60_000;
        assert!(m.report("", "", later).is_empty());
        m.observe("m", 0.5, &attrs(&[("late", "x")]), &[0.9], later);
        let r = m.report("", "", later);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].attribute, "late");
    }

    #[test]
    fn group_count_is_bounded() {
        let m = monitor(1);
        for i in 0..MAX_GROUPS + 5 {
            m.observe("m", 0.5, &attrs(&[("a", &format!("g{i}"))]), &[0.9], 0);
        }
        let r = &m.report("m", "a", 0)[0];
        assert_eq!(r.groups.len(), MAX_GROUPS + 1);
        let other = r.groups.iter().find(|g| g.group == OTHER_GROUP).unwrap();
        assert_eq!(other.decisions, 5);
    }

    #[test]
    fn refuses_unbounded_or_odd_attributes() {
        let one = |k: &str, v: &str| {
            AuditAttributes::new([(k.to_owned(), v.to_owned())].into_iter().collect())
        };
        assert!(one("Age Band", "1").is_err());
        assert!(one("age", "").is_err());
        assert!(one("age", &"x".repeat(65)).is_err());
        assert!(one("age", "a\nb").is_err());
        let many = (0..9).map(|i| (format!("a{i}"), "v".to_owned())).collect();
        assert!(AuditAttributes::new(many).is_err());
        assert!(one("age_band", "35-44").is_ok());
    }
}
