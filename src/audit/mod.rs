//! The offline fairness audit (`candor audit`, and the validation gate's
//! fairness rule): scores a labelled data set with a package's model through
//! ONNX Runtime and reports, per group of each audited attribute, the
//! selection rate at the model's decision threshold, the disparate-impact
//! ratio against the most favoured group, the equal-opportunity difference,
//! calibration, and the mean |attribution| of every feature.
//!
//! It exists so that a model's disparities are measured before it serves,
//! by the same model, threshold and attributions the gateway uses. Group
//! columns are audit-only: a column that is a model input is refused, unless
//! it is declared as banding that input (an income band of the income
//! feature), which the report then states.

pub mod chart;
pub mod data;
pub mod metrics;
pub mod render;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use self::metrics::{CalibrationBin, Rates};
use crate::{
    explain::{Method, SlotScorer},
    inference::{Backend, InferenceError},
    models::{
        manifest::FairnessGroup,
        package::{ModelPackage, Rows},
    },
};

/// The four-fifths rule: a group selected at under 80% of the most
/// favoured group's rate shows adverse impact. Reported whatever the
/// package declares.
pub const FOUR_FIFTHS: f64 = 0.8;
/// Groups with fewer rows are reported but not compared: one row selected
/// would make its group the most favoured, and a handful of rows says
/// nothing of a rate (the online monitor's `fairness.min_group_decisions`
/// has the same default).
pub const MIN_GROUP_ROWS: u64 = 30;
/// Equal-width score bins of the calibration tables.
pub const CALIBRATION_BINS: usize = 10;
/// The file name the audit's JSON report takes in a package folder, where
/// the model card reads it.
pub const REPORT_FILE: &str = "fairness.json";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}: {message}", path.display())]
    Data { path: PathBuf, message: String },
    #[error(
        "group column {0:?} is {1}; protected attributes are used only for the audit and never given to the model (declare a column that merely bands an input with `bands` in the manifest, or as COLUMN:INPUT to `candor audit`)"
    )]
    GroupIsInput(String, String),
    #[error("group column {column:?} does not band model input {input:?}: {detail}")]
    NotABand {
        column: String,
        input: String,
        detail: String,
    },
    #[error("{0:?} is not a model input")]
    UnknownInput(String),
    #[error("group column {0:?} is named twice; audit each attribute once")]
    GroupTwice(String),
    #[error(
        "group column {0:?} is the label column; a group is who someone is, the label what they did"
    )]
    GroupIsLabel(String),
    #[error("the model declares no decision threshold (model.output.decision_threshold)")]
    NoThreshold,
    #[error("the package declares no fairness audit ([fairness] in its manifest)")]
    NotDeclared,
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("attributions failed: {0}")]
    Attribution(String),
    #[error("cannot write {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
}

impl AuditError {
    fn data(path: &Path, message: String) -> Self {
        Self::Data {
            path: path.to_path_buf(),
            message,
        }
    }
}

/// One audited attribute: its column, the input it bands (if any) and its
/// thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupColumn {
    pub column: String,
    pub bands: Option<String>,
    pub min_disparate_impact: f64,
    pub max_equal_opportunity_difference: Option<f64>,
    /// Groups with fewer rows are reported, not compared.
    pub min_group_rows: usize,
}

impl GroupColumn {
    /// `COLUMN`, or `COLUMN:INPUT` for a column that bands a model input.
    pub fn parse(
        spec: &str,
        min_disparate_impact: f64,
        max_eod: Option<f64>,
        min_group_rows: usize,
    ) -> Self {
        let (column, bands) = match spec.split_once(':') {
            Some((c, input)) => (c, Some(input.to_owned())),
            None => (spec, None),
        };
        Self {
            column: column.to_owned(),
            bands,
            min_disparate_impact,
            max_equal_opportunity_difference: max_eod,
            min_group_rows,
        }
    }
}

impl From<&FairnessGroup> for GroupColumn {
    fn from(g: &FairnessGroup) -> Self {
        Self {
            column: g.column.clone(),
            bands: g.bands.clone(),
            min_disparate_impact: g.min_disparate_impact,
            max_equal_opportunity_difference: g.max_equal_opportunity_difference,
            min_group_rows: MIN_GROUP_ROWS as usize,
        }
    }
}

/// Which rows' attributions the audit averages, and how they are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttributionOptions {
    pub method: Method,
    /// Only the first rows of the data set (the sampled estimator is slow);
    /// `None` for all.
    pub max_rows: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub data: PathBuf,
    /// The package folder the data set is a file of, when the manifest
    /// declares it: then it is read as the package's own files are
    /// ([`crate::models::package::read_in_package`]). `None` for a data set
    /// the caller names.
    pub within: Option<PathBuf>,
    pub label_column: Option<String>,
    pub groups: Vec<GroupColumn>,
    /// `None` skips attributions (the validation gate needs none).
    pub attributions: Option<AttributionOptions>,
    pub note: Option<String>,
}

impl AuditOptions {
    /// The audit the package's manifest declares.
    pub fn declared(package: &ModelPackage) -> Result<Self, AuditError> {
        let fairness = package
            .manifest
            .fairness
            .as_ref()
            .ok_or(AuditError::NotDeclared)?;
        Ok(Self {
            data: package.dir.join(&fairness.data),
            within: Some(package.dir.clone()),
            label_column: fairness.label_column.clone(),
            groups: fairness.groups.iter().map(GroupColumn::from).collect(),
            attributions: None,
            note: fairness.note.clone(),
        })
    }
}

/// The audit's findings, as written to `fairness.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub model: String,
    pub version: String,
    pub sha256: String,
    /// The data set's file name and SHA-256.
    pub data: String,
    pub data_sha256: String,
    pub label_column: Option<String>,
    pub decision_threshold: f64,
    /// How a score becomes a decision.
    pub selection_rule: String,
    pub overall: Rates,
    pub calibration: Vec<CalibrationBin>,
    pub attributes: Vec<AttributeReport>,
    pub attribution: Option<AttributionSummary>,
    pub note: Option<String>,
    /// Every attribute meets its declared thresholds.
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributionSummary {
    pub method: String,
    /// "log_odds", "softmax_logit", "probit", "raw" or "score": what the
    /// attributions add up to (see the proto's `Attribution.output_space`).
    pub output_space: String,
    pub rows: usize,
}

/// One audited attribute's groups and verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeReport {
    pub column: String,
    /// The model input this column bands: the model sees this attribute.
    pub bands: Option<String>,
    pub min_disparate_impact: f64,
    pub max_equal_opportunity_difference: Option<f64>,
    /// Groups with fewer rows were reported, not compared (0 in reports
    /// written before it existed: all were compared).
    #[serde(default)]
    pub min_group_rows: usize,
    pub most_favoured: String,
    /// Smallest selection rate over the largest among the groups compared
    /// (fairlearn's `demographic_parity_ratio` when every group is);
    /// undefined when no group has anyone selected, or fewer than two are
    /// compared.
    pub demographic_parity_ratio: Option<f64>,
    pub demographic_parity_difference: f64,
    /// Largest minus smallest true-positive rate of the groups compared
    /// that have actual positives (fairlearn's
    /// `equal_opportunity_difference` when every group has some).
    pub equal_opportunity_difference: Option<f64>,
    pub meets_four_fifths_rule: bool,
    /// Each threshold missed, in words.
    pub findings: Vec<String>,
    pub passed: bool,
    pub groups: Vec<GroupReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    pub group: String,
    #[serde(flatten)]
    pub rates: Rates,
    /// Large enough to be compared (`min_group_rows`).
    #[serde(default = "compared_before")]
    pub compared: bool,
    /// Selection rate over the most favoured group's; undefined when no
    /// group has anyone selected.
    pub disparate_impact: Option<f64>,
    /// True-positive rate minus the most favoured group's.
    pub equal_opportunity_difference: Option<f64>,
    pub calibration: Vec<CalibrationBin>,
    pub attribution_rows: usize,
    /// Mean |φ| per feature, in model order.
    pub mean_abs_attribution: Vec<FeatureMean>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureMean {
    pub feature: String,
    pub value: f64,
}

/// Reports written before groups could be left out compared every group.
fn compared_before() -> bool {
    true
}

/// Runs the audit of `package` (slot 0 of its sessions) on `options.data`.
pub fn run(package: &ModelPackage, options: &AuditOptions) -> Result<Report, AuditError> {
    let threshold = package
        .manifest
        .model
        .output
        .decision_threshold
        .ok_or(AuditError::NoThreshold)?;
    check_audit_only(package, &options.groups, options.label_column.as_deref())?;
    let data = data::read(
        &options.data,
        options.within.as_deref(),
        &package.schema,
        &options.groups,
        options.label_column.as_deref(),
    )?;
    for (g, values) in options.groups.iter().zip(&data.groups) {
        match &g.bands {
            Some(input) => check_bands(package, &data.rows, g, input, values)?,
            None => check_not_a_copy(package, &data.rows, g, values)?,
        }
    }
    let scores: Vec<f64> = package
        .backend
        .predict(0, &data.rows.values)?
        .into_iter()
        .map(f64::from)
        .collect();
    // The ad is shown at or above the threshold (manifest: "the score at or
    // above which the ad is shown"); compared in f64, as the float32 score
    // widens exactly.
    let selected: Vec<bool> = scores.iter().map(|&s| s >= threshold).collect();
    let labels = data.labels.as_deref();
    let all: Vec<usize> = (0..scores.len()).collect();
    let (attribution, phi) = match options.attributions {
        Some(a) => {
            let (summary, phi) = attribute(package, &data.rows, a)?;
            (Some(summary), phi)
        }
        None => (None, Vec::new()),
    };
    let attributes = options
        .groups
        .iter()
        .zip(&data.groups)
        .map(|(g, values)| audit_attribute(package, g, values, &scores, &selected, labels, &phi))
        .collect::<Vec<_>>();
    Ok(Report {
        model: package.name().to_owned(),
        version: package.version().to_string(),
        sha256: package.sha256.clone(),
        data: options
            .data
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        data_sha256: data.sha256,
        label_column: options.label_column.clone(),
        decision_threshold: threshold,
        selection_rule: "score >= decision_threshold".to_owned(),
        overall: metrics::rates(&scores, &selected, labels, &all),
        calibration: labels
            .map(|y| metrics::calibration(&scores, y, &all, CALIBRATION_BINS))
            .unwrap_or_default(),
        passed: attributes.iter().all(|a| a.passed),
        attributes,
        attribution,
        note: options.note.clone(),
    })
}

/// Refuses group columns the model sees, unless declared as a band.
fn check_audit_only(
    package: &ModelPackage,
    groups: &[GroupColumn],
    label: Option<&str>,
) -> Result<(), AuditError> {
    let is_input = |name: &str| package.schema.columns().iter().any(|f| f.name == name);
    for (i, g) in groups.iter().enumerate() {
        // Names differ in case between conventions (`minkgem`, `MINKGEM`).
        if let Some(input) = package
            .schema
            .columns()
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(&g.column))
        {
            return Err(AuditError::GroupIsInput(
                g.column.clone(),
                format!("a model input ({})", input.name),
            ));
        }
        if groups[..i].iter().any(|earlier| earlier.column == g.column) {
            return Err(AuditError::GroupTwice(g.column.clone()));
        }
        if label == Some(g.column.as_str()) {
            return Err(AuditError::GroupIsLabel(g.column.clone()));
        }
        if let Some(input) = &g.bands
            && !is_input(input)
        {
            return Err(AuditError::UnknownInput(input.clone()));
        }
    }
    Ok(())
}

/// A group column that holds an input's values under another name is that
/// input: the model sees it.
fn check_not_a_copy(
    package: &ModelPackage,
    rows: &Rows,
    g: &GroupColumn,
    values: &[String],
) -> Result<(), AuditError> {
    let numbers: Option<Vec<f64>> = values.iter().map(|v| v.parse().ok()).collect();
    let Some(numbers) = numbers else {
        return Ok(());
    };
    for (c, input) in package.schema.columns().iter().enumerate() {
        let same = numbers
            .iter()
            .enumerate()
            .all(|(r, &v)| rows.row(r)[c] == v as f32);
        if same {
            return Err(AuditError::GroupIsInput(
                g.column.clone(),
                format!(
                    "a copy of a model input ({}, equal in every row)",
                    input.name
                ),
            ));
        }
    }
    Ok(())
}

/// A band is a function of its input: every value of the input falls in
/// one group.
fn check_bands(
    package: &ModelPackage,
    rows: &Rows,
    g: &GroupColumn,
    input: &str,
    values: &[String],
) -> Result<(), AuditError> {
    let c = package
        .schema
        .columns()
        .iter()
        .position(|f| f.name == input)
        .ok_or_else(|| AuditError::UnknownInput(input.to_owned()))?;
    let mut band_of: HashMap<u32, &str> = HashMap::new();
    for (r, group) in values.iter().enumerate() {
        let x = rows.row(r)[c];
        if let Some(other) = band_of.insert(x.to_bits(), group)
            && other != group
        {
            return Err(AuditError::NotABand {
                column: g.column.clone(),
                input: input.to_owned(),
                detail: format!("rows with {input} = {x} fall in groups {other:?} and {group:?}"),
            });
        }
    }
    Ok(())
}

/// Mean |φ| inputs: per row of the data set, its attributions (rows past
/// the cap have none).
fn attribute(
    package: &ModelPackage,
    rows: &Rows,
    options: AttributionOptions,
) -> Result<(AttributionSummary, Vec<Vec<f64>>), AuditError> {
    let n = options.max_rows.map_or(rows.len(), |m| m.min(rows.len()));
    let mut scorer = SlotScorer {
        backend: package.backend.as_ref(),
        slot: 0,
    };
    let mut space = "";
    let phi = (0..n)
        .map(|r| {
            let a = package
                .explainer
                .explain(rows.row(r), options.method, &mut scorer, None)
                .map_err(AuditError::Attribution)?;
            space = a.output_space;
            Ok(a.contributions)
        })
        .collect::<Result<Vec<_>, AuditError>>()?;
    Ok((
        AttributionSummary {
            method: package.explainer.method(options.method).to_owned(),
            output_space: space.to_owned(),
            rows: n,
        },
        phi,
    ))
}

fn audit_attribute(
    package: &ModelPackage,
    g: &GroupColumn,
    values: &[String],
    scores: &[f64],
    selected: &[bool],
    labels: Option<&[bool]>,
    phi: &[Vec<f64>],
) -> AttributeReport {
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, v) in values.iter().enumerate() {
        members.entry(v).or_default().push(i);
    }
    let rates: Vec<Rates> = members
        .values()
        .map(|index| metrics::rates(scores, selected, labels, index))
        .collect();
    // Groups too small to say anything are reported, never compared.
    let compared: Vec<bool> = rates.iter().map(|r| r.rows >= g.min_group_rows).collect();
    let n_compared = compared.iter().filter(|&&c| c).count();
    let selection: Vec<f64> = rates
        .iter()
        .zip(&compared)
        .map(|(r, &c)| {
            if c {
                r.selection_rate
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let favoured = metrics::most_favoured(&selection);
    let top = rates[favoured].selection_rate;
    let low = selection
        .iter()
        .copied()
        .filter(|s| s.is_finite())
        .fold(top, f64::min);
    let favoured_tpr = rates[favoured].true_positive_rate;
    let eod = metrics::spread(
        rates
            .iter()
            .zip(&compared)
            .map(|(r, &c)| r.true_positive_rate.filter(|_| c)),
    );
    // With nobody selected there is no rate to compare with: "parity"
    // would pass a model that shows the ad to no one. With one group there
    // is nobody to compare with.
    let ratio = |rate: f64| (top > 0.0 && n_compared >= 2).then(|| rate / top);
    let columns = package.schema.columns();
    let groups: Vec<GroupReport> = members
        .iter()
        .zip(rates)
        .zip(&compared)
        .map(|(((name, index), rates), &compared)| {
            let attributed: Vec<&Vec<f64>> = index.iter().filter_map(|&i| phi.get(i)).collect();
            GroupReport {
                group: (*name).to_owned(),
                compared,
                disparate_impact: ratio(rates.selection_rate).filter(|_| compared),
                equal_opportunity_difference: rates
                    .true_positive_rate
                    .zip(favoured_tpr)
                    .filter(|_| compared && n_compared >= 2)
                    .map(|(t, f)| t - f),
                calibration: labels
                    .map(|y| metrics::calibration(scores, y, index, CALIBRATION_BINS))
                    .unwrap_or_default(),
                attribution_rows: attributed.len(),
                mean_abs_attribution: if attributed.is_empty() {
                    Vec::new()
                } else {
                    columns
                        .iter()
                        .enumerate()
                        .map(|(c, f)| FeatureMean {
                            feature: f.name.clone(),
                            value: attributed.iter().map(|p| p[c].abs()).sum::<f64>()
                                / attributed.len() as f64,
                        })
                        .collect()
                },
                rates,
            }
        })
        .collect();
    let dp_ratio = ratio(low);
    let mut findings = Vec::new();
    let small: Vec<&str> = groups
        .iter()
        .filter(|r| !r.compared)
        .map(|r| r.group.as_str())
        .collect();
    if n_compared < 2 {
        let left_out = if small.is_empty() {
            String::new()
        } else {
            format!(
                " ({} left out with fewer than {} rows each)",
                small.join(", "),
                g.min_group_rows
            )
        };
        findings.push(format!(
            "the audit data holds {n_compared} group{} of {} large enough to compare{left_out}: there are no selection rates to compare; it needs at least two groups of {} rows",
            if n_compared == 1 { "" } else { "s" },
            g.column,
            g.min_group_rows
        ));
    }
    match dp_ratio {
        None if n_compared < 2 => {}
        None => {
            let compared_rows = members
                .values()
                .zip(&compared)
                .filter(|(_, c)| **c)
                .flat_map(|(index, _)| index.iter().map(|&i| scores[i]));
            let (least, most) = compared_rows
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, m), s| {
                    (l.min(s), m.max(s))
                });
            findings.push(format!(
                "no row of the groups compared is selected (no score of theirs reaches the decision threshold; they run from {least:.4} to {most:.4}): the disparate-impact ratio is undefined"
            ));
        }
        // Parity by construction, like nobody selected: a threshold at or
        // below every score shows everyone the ad, and passes any audit.
        Some(_) if selected.iter().all(|&s| s) => {
            let least = scores.iter().copied().fold(f64::INFINITY, f64::min);
            findings.push(format!(
                "every row is selected (the decision threshold is at or below every score, the lowest {least:.4}): the selection rates cannot differ, so they show nothing"
            ));
        }
        Some(r) if r < g.min_disparate_impact => findings.push(format!(
            "disparate-impact ratio {} is below the declared minimum {}",
            beside(r, g.min_disparate_impact),
            g.min_disparate_impact
        )),
        Some(_) => {}
    }
    match (eod.filter(|_| n_compared >= 2), g.max_equal_opportunity_difference) {
        (Some(d), Some(max)) if d > max => findings.push(format!(
            "equal-opportunity difference {} is above the declared maximum {max}",
            beside(d, max)
        )),
        // A maximum that cannot be measured is not met: it needs two
        // groups compared with actual positives (without labels there are
        // no rates to judge, and the report says so).
        (None, Some(max)) if labels.is_some() && n_compared >= 2 => findings.push(format!(
            "the equal-opportunity difference (declared maximum {max}) cannot be measured: fewer than two of the groups compared have actual positives"
        )),
        _ => {}
    }
    AttributeReport {
        column: g.column.clone(),
        bands: g.bands.clone(),
        min_disparate_impact: g.min_disparate_impact,
        max_equal_opportunity_difference: g.max_equal_opportunity_difference,
        min_group_rows: g.min_group_rows,
        // With no group large enough, none is favoured.
        most_favoured: if n_compared > 0 {
            groups[favoured].group.clone()
        } else {
            String::new()
        },
        demographic_parity_ratio: dp_ratio,
        demographic_parity_difference: top - low,
        equal_opportunity_difference: eod.filter(|_| n_compared >= 2),
        meets_four_fifths_rule: dp_ratio.is_some_and(|r| r >= FOUR_FIFTHS),
        passed: findings.is_empty(),
        findings,
        groups,
    }
}

/// `value` to three decimals, or to as many more as it takes to show it on
/// its side of `limit` (0.606 is not below 0.60591; 0.60589 is).
pub(crate) fn beside(value: f64, limit: f64) -> String {
    (3..=17)
        .map(|digits| format!("{value:.digits$}"))
        .find(|shown| {
            shown
                .parse::<f64>()
                .is_ok_and(|v| (v < limit) == (value < limit) && (v > limit) == (value > limit))
        })
        .unwrap_or_else(|| value.to_string())
}
