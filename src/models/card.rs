//! The model card: what a package is for, what it was trained on, what it
//! reads, how well and how fairly it performs, how its decisions are
//! explained and who owns it, as Markdown. `candor models card` prints it
//! and `DescribeModel` returns it, both from a loaded package, so the card
//! cannot drift from what serves.

use std::fmt::Write as _;

use super::package::ModelPackage;
use crate::{
    audit::{self, render},
    explain::{Explainer, Method},
};

/// How the package's decisions are attributed, in words.
pub fn explanation_method(explainer: &Explainer) -> String {
    let name = explainer.method(Method::PathDependent);
    match explainer {
        Explainer::Tree { trained_covers, .. } => format!(
            "{name}: exact TreeSHAP read from the ONNX trees, against {}; {} on request, against the background sample",
            if *trained_covers {
                "the trees' covers from the native model (the training distribution, covers.csv)"
            } else {
                "covers counted by routing the background sample through the trees (the package has no covers.csv)"
            },
            explainer.method(Method::Interventional)
        ),
        Explainer::Linear { .. } => {
            format!("{name}: exact linear attributions w·(x − E[x]) over the background sample")
        }
        Explainer::Sampling { width, .. }
            if *width <= crate::explain::sampling::EXACT_MAX_FEATURES =>
        {
            format!(
                "{name}: exact Shapley values of the score against background rows, every coalition of the {width} features enumerated"
            )
        }
        Explainer::Sampling { pairs, .. } => format!(
            "{name}: model-agnostic Shapley values of the score against background rows, seeded, with a standard error per value (up to {pairs} antithetic permutation pairs per decision)"
        ),
    }
}

/// The card as Markdown.
pub fn markdown(package: &ModelPackage) -> String {
    let m = &package.manifest;
    let mut out = format!(
        "# Model card: {} {}\n\n{}\n\n- Model SHA-256: `{}`\n- Owner: {}\n\n## Intended use and purpose\n\n{}\n\nPurposes: {}.\n",
        m.model.name,
        m.model.version,
        m.model.description,
        package.sha256,
        m.model.owner,
        m.model.intended_use,
        purposes(m),
    );
    if let Some(t) = m.model.output.decision_threshold {
        let _ = writeln!(
            out,
            "\nOutput: {} (`{}`, column {}); the ad is shown when the score is at or above {t}.",
            m.model.output.description, m.model.output.tensor, m.model.output.index
        );
    }
    out.push_str("\n## Training data\n\n");
    match &m.training {
        Some(t) => {
            let _ = writeln!(out, "- Data set: {}\n- Date: {}", t.dataset, t.date);
            if let (Some(train), Some(hold)) = (t.train_rows, t.holdout_rows) {
                let _ = writeln!(out, "- Rows: {train} for training, {hold} held out");
            }
            if let Some(split) = &t.split {
                let _ = writeln!(out, "- Split: {split}");
            }
            if !t.excluded_columns.is_empty() {
                let _ = writeln!(out, "- Columns kept out: {}", t.excluded_columns.join(", "));
            }
            let _ = writeln!(out, "- Script: `{}`", t.script);
            if !t.libraries.is_empty() {
                let _ = writeln!(out, "- Libraries: {}", t.libraries.join(", "));
            }
        }
        None => out.push_str("Not declared.\n"),
    }
    out.push_str("\n## Features\n\n| # | feature | data category | source | description |\n|---:|---|---|---|---|\n");
    for f in package.schema.columns() {
        let _ = writeln!(
            out,
            "| {} | {} | {}{} | {} | {} |",
            f.position,
            f.name,
            f.category.as_str(),
            f.proxy_for
                .map(|p| format!(" (proxy for {})", p.as_str()))
                .unwrap_or_default(),
            f.source.as_str(),
            f.description.replace('|', "\\|"),
        );
    }
    out.push_str("\n## Metrics\n\n");
    if m.metrics.is_empty() {
        out.push_str("None declared.\n");
    } else {
        out.push_str("| metric | value | data set |\n|---|---:|---|\n");
        for metric in &m.metrics {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                metric.name, metric.value, metric.dataset
            );
        }
    }
    out.push_str("\n## Fairness\n\n");
    out.push_str(&fairness(package));
    let _ = writeln!(
        out,
        "\n## Explanation method\n\n{}.\n\n## Owner\n\n{}",
        explanation_method(&package.explainer),
        m.model.owner
    );
    out
}

fn purposes(m: &super::manifest::Manifest) -> String {
    m.model
        .purposes
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The fairness audit's results and note, or that there is none.
fn fairness(package: &ModelPackage) -> String {
    let Some(report) = &package.fairness else {
        return "No fairness audit is committed with this package.\n".into();
    };
    let mut out = format!(
        "Audited on `{}` ({} rows) at the decision threshold {} (`{}`); the full report is `{}` in the package.\n\n",
        report.data,
        report.overall.rows,
        report.decision_threshold,
        report.selection_rule,
        audit::REPORT_FILE
    );
    out.push_str(&render::summary(report));
    if let Some(note) = &report.note {
        let _ = writeln!(out, "\n> {note}");
    }
    out
}

/// The card in brief, as Markdown: what support staff need to answer
/// "what is this model, who answers for it, what does it read about me,
/// is it fair, and how is its answer explained?".
pub fn summary(package: &ModelPackage) -> String {
    let m = &package.manifest;
    let mut card = format!(
        "## {} {}\n\n{}\n\n- **Owner:** {}\n- **Purposes:** {}\n- **Intended use:** {}\n",
        m.model.name,
        m.model.version,
        m.model.description,
        m.model.owner,
        purposes(m),
        m.model.intended_use
    );
    if let Some(t) = &m.training {
        let _ = writeln!(card, "- **Training data:** {} ({})", t.dataset, t.date);
    }
    for metric in &m.metrics {
        let _ = writeln!(
            card,
            "- **{}:** {} on {}",
            metric.name, metric.value, metric.dataset
        );
    }
    let mut categories: Vec<&str> = package
        .schema
        .columns()
        .iter()
        .map(|f| f.category.as_str())
        .collect();
    categories.sort_unstable();
    categories.dedup();
    let _ = writeln!(
        card,
        "- **Data categories read:** {}\n- **Explanation method:** {}\n\n### Fairness\n\n{}",
        categories.join(", "),
        explanation_method(&package.explainer),
        fairness(package)
    );
    card
}
