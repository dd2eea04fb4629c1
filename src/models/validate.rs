//! The validation gate (`candor models validate`, and the server's check on
//! deploy): the rules a package must pass before it may serve, each named,
//! as a report that reads well for people and as JSON.
//!
//! Some rules are also enforced when a manifest loads (special categories
//! for advertising); the gate checks them on their own first, so that its
//! report names the rule a package breaks, not only the load error.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{
    manifest::{Manifest, check_reason, line_of},
    package::{GOLDEN_FILE, MANIFEST_FILE, ModelPackage},
};
use crate::{
    audit::{self, AuditOptions},
    explain::{Method, SlotScorer},
    inference::Backend,
    why::Language,
};

/// Largest allowed |Rust ORT score − Python ORT golden score|, relative
/// beyond magnitude 1 (`explain::within`): ORT's float32 sums round
/// differently with the batch size, by more for larger outputs.
pub const GOLDEN_TOLERANCE: f64 = 1e-6;
/// Largest allowed |base + Σφ − margin| of a background row's attributions,
/// in the explainer's output space (log-odds, raw or score), relative beyond
/// magnitude 1 as the goldens are: exact methods add up to float64
/// rounding, which grows with the margin (a regressor predicting 2.5e10 is
/// off by ~1e-5 however exact), the sampled estimator by construction.
pub const ADDITIVITY_TOLERANCE: f64 = 1e-6;
/// Background rows the sampled estimator is checked on: each costs a model
/// run per permutation, and its additivity does not depend on the row.
pub const SAMPLED_ADDITIVITY_ROWS: usize = 16;

/// What a passing check's detail adds when it has something to say that
/// does not fail the package: the deploy log lifts it out.
pub const NOTE: &str = "; note: ";

/// The gate's rules, by name. A failure's line starts with the name.
pub mod rules {
    pub const GRAPH_MATCHES_MANIFEST: &str = "graph_matches_manifest";
    pub const GOLDEN_ROWS_REPRODUCE: &str = "golden_rows_reproduce";
    pub const ATTRIBUTIONS_ADDITIVE: &str = "attributions_additive";
    pub const NO_SPECIAL_CATEGORY_FOR_ADVERTISING: &str = "no_special_category_for_advertising";
    pub const FEATURES_DOCUMENTED: &str = "features_documented";
    pub const FAIRNESS_THRESHOLDS: &str = "fairness_thresholds";
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub package: PathBuf,
    pub model: Option<String>,
    pub version: Option<String>,
    pub sha256: Option<String>,
    /// The content the checks were run on ([`ModelPackage::content_sha256`]).
    pub content_sha256: Option<String>,
    pub passed: bool,
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
pub struct Check {
    /// The rule's name (see [`rules`]).
    pub name: &'static str,
    pub description: &'static str,
    pub passed: bool,
    pub detail: String,
}

impl Report {
    fn check(
        &mut self,
        name: &'static str,
        description: &'static str,
        result: Result<String, String>,
    ) {
        let passed = result.is_ok();
        self.passed &= passed;
        self.checks.push(Check {
            name,
            description,
            passed,
            detail: result.unwrap_or_else(|e| e),
        });
    }

    /// The failed checks, one per line, each naming its rule: what a
    /// refused deploy answers.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The report as plain text, one line per check.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{} {}{}\n",
            if self.passed { "PASS" } else { "FAIL" },
            self.package.display(),
            match (&self.model, &self.version) {
                (Some(m), Some(v)) => format!(" ({m} {v})"),
                _ => String::new(),
            }
        );
        for c in &self.checks {
            out.push_str(&format!(
                "  [{}] {} ({}): {}\n",
                if c.passed { "ok" } else { "FAILED" },
                c.name,
                c.description,
                c.detail
            ));
        }
        out
    }
}

/// Validates the package in `dir`. ONNX Runtime must already be
/// initialised; the package is loaded on the calling thread and dropped at
/// the end, so any thread may call it.
pub fn validate_package(dir: &Path) -> Report {
    validate(dir, true)
}

/// [`validate_package`] on the package's own content only, as the gateway
/// deploys it: which of the versions beside it keeps the default claim is
/// the registry's to settle (the version in service keeps it), and a
/// verdict on the package's bytes must not change with its neighbours.
pub fn validate_package_alone(dir: &Path) -> Report {
    validate(dir, false)
}

fn validate(dir: &Path, beside: bool) -> Report {
    let mut report = Report {
        package: dir.to_path_buf(),
        model: None,
        version: None,
        sha256: None,
        content_sha256: None,
        passed: true,
        checks: vec![],
    };
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = super::package::read_text_in_package(dir, &manifest_path).map_err(|e| e.to_string());
    report.check(
        rules::FEATURES_DOCUMENTED,
        "every feature has a data category and a consumer-facing reason in every language",
        text.clone().and_then(|t| check_documented(&t)),
    );
    report.check(
        rules::NO_SPECIAL_CATEGORY_FOR_ADVERTISING,
        "no special-category feature serves an advertising purpose",
        text.and_then(|t| check_special_categories(&t)),
    );
    const GRAPH: &str = "the ONNX graph loads and matches the manifest";
    let package = match ModelPackage::load(dir, 1) {
        Ok(p) => p,
        Err(e) => {
            report.check(rules::GRAPH_MATCHES_MANIFEST, GRAPH, Err(e.to_string()));
            let skipped = || Err("not checked: the package does not load".to_owned());
            report.check(rules::GOLDEN_ROWS_REPRODUCE, GOLDEN, skipped());
            report.check(rules::ATTRIBUTIONS_ADDITIVE, ADDITIVE, skipped());
            report.check(rules::FAIRNESS_THRESHOLDS, FAIRNESS, skipped());
            return report;
        }
    };
    report.model = Some(package.name().to_owned());
    report.version = Some(package.version().to_string());
    report.sha256 = Some(package.sha256.clone());
    report.content_sha256 = Some(package.content_sha256.clone());
    // Passing, but worth saying: the consumer view then counts segment
    // sizes on the background sample alone, and withholds most reasons.
    let population = match package
        .manifest
        .training
        .as_ref()
        .and_then(|t| t.train_rows)
    {
        Some(_) => String::new(),
        None => format!(
            "{NOTE}no [training] train_rows, so the consumer view counts how many people a reason describes on the {} background rows alone, and withholds reasons about fewer than decisions.min_segment_size of them",
            package.background.len()
        ),
    };
    report.check(
        rules::GRAPH_MATCHES_MANIFEST,
        GRAPH,
        if beside {
            default_claim(dir, &package)
        } else {
            Ok(())
        }
        .map(|()| {
            format!(
                "{} features, {} background rows, purposes: {}{population}",
                package.schema.width(),
                package.background.len(),
                package
                    .manifest
                    .model
                    .purposes
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
    );
    report.check(
        rules::GOLDEN_ROWS_REPRODUCE,
        GOLDEN,
        check_goldens(&package),
    );
    report.check(
        rules::ATTRIBUTIONS_ADDITIVE,
        ADDITIVE,
        check_additivity(&package),
    );
    report.check(
        rules::FAIRNESS_THRESHOLDS,
        FAIRNESS,
        check_fairness(&package),
    );
    report
}

const GOLDEN: &str = "the package's golden rows reproduce";
const ADDITIVE: &str = "attributions are additive on the background sample";
const FAIRNESS: &str = "the fairness audit passes the package's declared thresholds";

/// A manifest that does not parse, with the file and line to look at.
fn unreadable(text: &str, e: &toml::de::Error) -> String {
    let line = e.span().map_or(0, |s| line_of(text, s.start));
    format!("{MANIFEST_FILE} line {line}: {}", e.message().trim())
}

/// Reads the raw TOML, so that a feature without a category is reported by
/// this rule rather than only as a parse error.
fn check_documented(text: &str) -> Result<String, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| unreadable(text, &e))?;
    let features = table
        .get("features")
        .and_then(toml::Value::as_array)
        .ok_or(format!("{MANIFEST_FILE}: declares no [[features]]"))?;
    let mut missing = Vec::new();
    for (i, f) in features.iter().enumerate() {
        let name = f
            .get("name")
            .and_then(toml::Value::as_str)
            .map_or_else(|| format!("features[{i}]"), str::to_owned);
        if f.get("category")
            .and_then(toml::Value::as_str)
            .is_none_or(str::is_empty)
        {
            missing.push(format!("features[{i}].category ({name}): no data category"));
        }
        for language in Language::ALL {
            let template = f
                .get("reason")
                .and_then(|r| r.get(language.tag()))
                .and_then(toml::Value::as_str);
            if template.is_none_or(|t| t.trim().is_empty()) {
                missing.push(format!(
                    "features[{i}].reason.{} ({name}): no reason template",
                    language.tag()
                ));
            }
        }
    }
    if !missing.is_empty() {
        return Err(format!("{MANIFEST_FILE}: {}", missing.join("; ")));
    }
    // A category the schema does not know is no data category: the typed
    // manifest must read too.
    let manifest = toml::from_str::<Manifest>(text)
        .map_err(|e| format!("not checked: {}", unreadable(text, &e)))?;
    // The reasons a person reads, checked here as at every load.
    let unfit: Vec<String> = manifest
        .features
        .iter()
        .enumerate()
        .flat_map(|(i, f)| {
            f.reason.iter().filter_map(move |(language, template)| {
                check_reason(template, f.is_special_category())
                    .err()
                    .map(|e| format!("features[{i}].reason.{language} ({}): {e}", f.name))
            })
        })
        .collect();
    if !unfit.is_empty() {
        return Err(format!("{MANIFEST_FILE}: {}", unfit.join("; ")));
    }
    Ok(format!("{} features documented", features.len()))
}

/// The manifest's own refusal, run on the manifest alone.
fn check_special_categories(text: &str) -> Result<String, String> {
    let manifest: Manifest =
        toml::from_str(text).map_err(|e| format!("not checked: {}", unreadable(text, &e)))?;
    manifest
        .refuse_special_categories_for_advertising()
        .map_err(|e| e.to_string())?;
    Ok(
        if manifest.model.purposes.iter().any(|p| p.is_advertising()) {
            "no feature is or stands in for a special category".to_owned()
        } else {
            "no advertising purpose".to_owned()
        },
    )
}

/// At a start the server refuses a version that claims to be the default
/// when a lower version beside it claims it too (`refuse_second_defaults`;
/// while serving, the claimant in service keeps it): so does
/// `candor models validate`, by reading the manifests of the versions beside
/// the package.
fn default_claim(dir: &Path, package: &ModelPackage) -> Result<(), String> {
    if !package.manifest.model.default {
        return Ok(());
    }
    let Some(versions) = dir.parent().and_then(|d| fs::read_dir(d).ok()) else {
        return Ok(());
    };
    let first = versions
        .flatten()
        .filter_map(|v| fs::read_to_string(v.path().join(MANIFEST_FILE)).ok())
        .filter_map(|text| Manifest::from_toml(&text).ok())
        .filter(|m| m.model.default && m.model.name == package.name())
        .map(|m| m.model.version)
        .filter(|v| v < package.version())
        .min();
    match first {
        Some(first) => Err(format!(
            "model.default: {}",
            super::second_default(package.name(), &first)
        )),
        None => Ok(()),
    }
}

/// The most a score changes with ONNX Runtime's thread count (which
/// reorders float sums), relative beyond magnitude 1, with margin.
const THREAD_NOISE: f64 = 1e-4;

fn check_goldens(package: &ModelPackage) -> Result<String, String> {
    let golden = package
        .golden
        .as_ref()
        .ok_or_else(|| format!("{GOLDEN_FILE} is missing"))?;
    if golden.rows.is_empty() {
        return Err(format!("{GOLDEN_FILE} has no rows"));
    }
    let scores = package
        .backend
        .predict(0, &golden.rows.values)
        .map_err(|e| e.to_string())?;
    let (worst_row, worst) = worst(
        scores
            .iter()
            .zip(&golden.scores)
            // The difference in units of the tolerance's scale.
            .map(|(&got, &want)| (f64::from(got) - want).abs() / want.abs().max(1.0)),
    );
    if worst.is_nan() || worst > GOLDEN_TOLERANCE {
        // Threads only reorder float sums: a gap far beyond that is a
        // different computation.
        let cause = if worst <= THREAD_NOISE {
            "the gateway scores with one intra-op thread, so goldens must come from a session with intra_op_num_threads = 1"
        } else {
            "that is more than thread counts change, so the rows do not reach the model as they did in Python: check that each feature's position follows the column order the model was trained on, that the golden scores come from the output and index model.output names, and that the golden rows hold the model's inputs, not the raw data before its preprocessing"
        };
        return Err(format!(
            "{GOLDEN_FILE}: row {}'s score differs from ONNX Runtime's by {worst:.3e} (tolerance {GOLDEN_TOLERANCE:e}, relative beyond magnitude 1); {cause}",
            worst_row + 1
        ));
    }
    // Passing, but worth saying: a class label cast to float meets every
    // technical rule and ranks nothing.
    let distinct = scores
        .iter()
        .map(|s| s.to_bits())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let label = if distinct <= 2 && scores.len() > 2 {
        format!(
            "{NOTE}the score takes only {distinct} distinct value(s) over these rows, so it cannot rank ads: check that model.output names a probability or margin, not a class label"
        )
    } else {
        String::new()
    };
    Ok(format!(
        "{} rows within {GOLDEN_TOLERANCE:e} (max |diff| {worst:.3e}, relative beyond magnitude 1){label}",
        golden.scores.len()
    ))
}

/// The index and value of the largest of `values`; a NaN is worse than
/// any number, so that no comparison with one can pass.
fn worst(values: impl Iterator<Item = f64>) -> (usize, f64) {
    values.enumerate().fold((0, 0.0_f64), |best, (i, d)| {
        if best.1.is_nan() || !(d.is_nan() || d > best.1) {
            best
        } else {
            (i, d)
        }
    })
}

fn check_additivity(package: &ModelPackage) -> Result<String, String> {
    let rows = match package.explainer {
        crate::explain::Explainer::Sampling { .. } => {
            package.background.len().min(SAMPLED_ADDITIVITY_ROWS)
        }
        _ => package.background.len(),
    };
    let mut scorer = SlotScorer {
        backend: package.backend.as_ref(),
        slot: 0,
    };
    let residuals = (0..rows)
        .map(|r| {
            package
                .explainer
                .explain(
                    package.background.row(r),
                    Method::PathDependent,
                    &mut scorer,
                    None,
                )
                .map(|a| relative_residual(&a))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (worst_row, worst) = worst(residuals.into_iter());
    let method = package.explainer.method(Method::PathDependent);
    if worst.is_nan() || worst > ADDITIVITY_TOLERANCE {
        return Err(format!(
            "{method}: background row {} has |base + Σφ − margin| = {worst:.3e} (tolerance {ADDITIVITY_TOLERANCE:e}, relative beyond magnitude 1)",
            worst_row + 1
        ));
    }
    Ok(format!(
        "{method}: {rows} background rows within {ADDITIVITY_TOLERANCE:e} (max residual {worst:.3e}, relative beyond magnitude 1)"
    ))
}

/// |base + Σφ − margin| in units of the tolerance's scale: the larger of
/// the margin and the base beyond magnitude 1.
fn relative_residual(a: &crate::explain::Attribution) -> f64 {
    a.residual / a.margin.abs().max(a.base_value.abs()).max(1.0)
}

fn check_fairness(package: &ModelPackage) -> Result<String, String> {
    let options = AuditOptions::declared(package).map_err(|e| e.to_string())?;
    let report = audit::run(package, &options).map_err(|e| e.to_string())?;
    let verdicts: Vec<String> = report
        .attributes
        .iter()
        .map(|a| {
            let eod = a
                .equal_opportunity_difference
                .map_or_else(|| "n/a".to_owned(), |d| format!("{d:.3}"));
            // An attribute passes only with a defined ratio.
            if let (true, Some(ratio)) = (a.passed, a.demographic_parity_ratio) {
                format!(
                    "{}: disparate impact {ratio:.3} ≥ {}{}, equal opportunity difference {eod}",
                    a.column,
                    a.min_disparate_impact,
                    if a.meets_four_fifths_rule {
                        ""
                    } else {
                        " (below the four-fifths rule)"
                    }
                )
            } else {
                format!("{}: {}", a.column, a.findings.join(", "))
            }
        })
        .collect();
    let detail = format!(
        "{} rows of {}; {}",
        report.overall.rows,
        report.data,
        verdicts.join("; ")
    );
    if report.passed {
        Ok(detail)
    } else {
        Err(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::{ADDITIVITY_TOLERANCE, relative_residual, worst};
    use crate::explain::Attribution;

    /// A regressor predicting ~2.5e10 whose exact attributions miss by
    /// float64 rounding at that scale (7.6e-6) adds up; a probability
    /// that misses by 2e-6 does not.
    #[test]
    fn additivity_is_judged_relative_to_the_output_beyond_magnitude_1() {
        let attribution = |margin: f64, base_value: f64, residual: f64| Attribution {
            method: "shapley_exact_enumeration",
            method_version: "1",
            output_space: "raw",
            base_value,
            margin,
            contributions: vec![],
            standard_errors: vec![],
            residual,
            sample_pairs: 0,
            score: margin,
            base_score: base_value,
            compute: std::time::Duration::ZERO,
        };
        let within = |a: Attribution| relative_residual(&a) <= ADDITIVITY_TOLERANCE;
        assert!(within(attribution(2.5e10, 2.4e10, 7.6e-6)));
        assert!(within(attribution(1.0, 2.5e10, 7.6e-6)));
        assert!(!within(attribution(0.4, 0.06, 2e-6)));
        assert!(!within(attribution(2.5e10, 2.4e10, 1e5)));
        assert!(!within(attribution(2.5e10, 2.4e10, f64::NAN)));
    }

    #[test]
    fn a_nan_is_the_worst_difference() {
        assert_eq!(worst([0.5, 2.0, 1.0].into_iter()), (1, 2.0));
        for values in [
            [f64::NAN, 1.0, 0.0],
            [0.0, f64::NAN, 1.0],
            [0.0, 1.0, f64::NAN],
        ] {
            let (i, d) = worst(values.into_iter());
            assert!(d.is_nan() && values[i].is_nan(), "{values:?}");
        }
    }
}
