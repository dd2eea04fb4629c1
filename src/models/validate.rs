//! `candor models validate`: the checks a package must pass before it may be
//! deployed, as a report that reads well for people and as JSON.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::package::{GOLDEN_FILE, ModelPackage};
use crate::inference::Backend;

/// Largest allowed |Rust ORT score − Python ORT golden score|.
pub const GOLDEN_TOLERANCE: f64 = 1e-6;

#[derive(Debug, Serialize)]
pub struct Report {
    pub package: PathBuf,
    pub model: Option<String>,
    pub version: Option<String>,
    pub sha256: Option<String>,
    pub passed: bool,
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

impl Report {
    fn check(&mut self, name: &'static str, result: Result<String, String>) {
        let passed = result.is_ok();
        self.passed &= passed;
        self.checks.push(Check {
            name,
            passed,
            detail: result.unwrap_or_else(|e| e),
        });
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
                "  [{}] {}: {}\n",
                if c.passed { "ok" } else { "FAILED" },
                c.name,
                c.detail
            ));
        }
        out
    }
}

/// Validates the package in `dir`. ONNX Runtime must already be initialised.
pub fn validate_package(dir: &Path) -> Report {
    let mut report = Report {
        package: dir.to_path_buf(),
        model: None,
        version: None,
        sha256: None,
        passed: true,
        checks: vec![],
    };
    let package = match ModelPackage::load(dir, 1) {
        Ok(p) => p,
        Err(e) => {
            report.check(
                "package loads and matches its ONNX graph",
                Err(e.to_string()),
            );
            return report;
        }
    };
    report.model = Some(package.name().to_owned());
    report.version = Some(package.version().to_string());
    report.sha256 = Some(package.sha256.clone());
    report.check(
        "package loads and matches its ONNX graph",
        Ok(format!(
            "{} features, {} background rows, purposes: {}",
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
        )),
    );
    report.check("golden rows reproduce", check_goldens(&package));
    report
}

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
    let (worst_row, worst) = scores
        .iter()
        .zip(&golden.scores)
        .map(|(&got, &want)| (f64::from(got) - want).abs())
        .enumerate()
        .fold(
            (0, 0.0_f64),
            |best, (i, d)| if d > best.1 { (i, d) } else { best },
        );
    if worst > GOLDEN_TOLERANCE {
        return Err(format!(
            "row {} differs by {worst:.3e} (tolerance {GOLDEN_TOLERANCE:e})",
            worst_row + 1
        ));
    }
    Ok(format!(
        "{} rows within {GOLDEN_TOLERANCE:e} (max |diff| {worst:.3e})",
        golden.scores.len()
    ))
}
