//! The audit report as Markdown, for people: the model card embeds the
//! summary, `candor audit` prints the whole report.

use std::fmt::Write as _;

use super::{AttributeReport, FOUR_FIFTHS, Report, beside};

/// Features listed per group in the attribution table.
const TOP_FEATURES: usize = 8;

fn rate(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"))
}

/// A selection-rate ratio, with the digits that show it on its side of
/// `limit`: undefined when nobody is selected or there is no second group
/// to compare with (the findings say which).
fn ratio(v: Option<f64>, limit: f64) -> String {
    v.map_or_else(|| "undefined".to_owned(), |v| beside(v, limit))
}

/// A group's name as one Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// Below the four-fifths rule (an undefined ratio does not meet it either).
fn warn(v: Option<f64>) -> &'static str {
    if v.is_none_or(|v| v < FOUR_FIFTHS) {
        " ⚠"
    } else {
        ""
    }
}

fn signed(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:+.3}"))
}

/// One line per attribute: its verdict against the declared thresholds and
/// the four-fifths rule.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    for a in &report.attributes {
        let _ = writeln!(
            out,
            "- **{}**{}: disparate-impact ratio {} (declared minimum {}; four-fifths rule {}), equal-opportunity difference {} (declared maximum {}); most favoured group {:?}. {}",
            a.column,
            banding(a),
            ratio(a.demographic_parity_ratio, a.min_disparate_impact),
            a.min_disparate_impact,
            if a.meets_four_fifths_rule {
                "met"
            } else {
                "NOT met"
            },
            match (
                a.equal_opportunity_difference,
                a.max_equal_opportunity_difference
            ) {
                (Some(d), Some(max)) => beside(d, max),
                (d, _) => rate(d),
            },
            match (a.max_equal_opportunity_difference, &report.label_column) {
                (None, _) => "none".to_owned(),
                (Some(m), Some(_)) => m.to_string(),
                // Rates against outcomes need the outcomes.
                (Some(m), None) => format!("{m}, not checked: the data has no labels"),
            },
            a.most_favoured,
            if a.passed {
                "Passes its declared thresholds.".to_owned()
            } else {
                format!("FAILS: {}.", a.findings.join("; "))
            },
        );
    }
    out
}

fn banding(a: &AttributeReport) -> String {
    a.bands
        .as_ref()
        .map(|input| format!(" (bands the model input {input}: the model sees it)"))
        .unwrap_or_default()
}

/// The full report.
pub fn markdown(report: &Report) -> String {
    let mut out = format!(
        "# Fairness audit: {} {}\n\n\
         - Model SHA-256: `{}`\n\
         - Data: `{}` ({} rows, SHA-256 `{}`), label column: {}\n\
         - Decision: selected when `{}` = {}; overall selection rate {:.3}\n\
         - Verdict: **{}**\n\n",
        report.model,
        report.version,
        report.sha256,
        report.data,
        report.overall.rows,
        report.data_sha256,
        report.label_column.as_deref().unwrap_or("none"),
        report.selection_rule,
        report.decision_threshold,
        report.overall.selection_rate,
        if report.passed {
            "passes the declared thresholds"
        } else {
            "FAILS the declared thresholds"
        },
    );
    if let Some(note) = &report.note {
        let _ = writeln!(out, "> {note}\n");
    }
    let _ = writeln!(
        out,
        "The four-fifths rule flags any group selected at under {FOUR_FIFTHS} times the most favoured group's rate.\n"
    );
    out.push_str(&summary(report));
    for a in &report.attributes {
        let _ = writeln!(out, "\n## {}{}\n", a.column, banding(a));
        out.push_str(
            "| group | rows | selected | selection rate | disparate impact | positives | TPR | TPR − favoured | mean score | observed rate |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for g in &a.groups {
            let _ = writeln!(
                out,
                "| {}{} | {} | {} | {:.3} | {} | {} | {} | {} | {:.4} | {} |",
                cell(&g.group),
                if !g.compared {
                    format!(" (under {} rows: not compared)", a.min_group_rows)
                } else if g.group == a.most_favoured {
                    " (most favoured)".to_owned()
                } else {
                    String::new()
                },
                g.rates.rows,
                g.rates.selected,
                g.rates.selection_rate,
                if g.compared {
                    format!(
                        "{}{}",
                        ratio(g.disparate_impact, a.min_disparate_impact),
                        warn(g.disparate_impact)
                    )
                } else {
                    "n/a".to_owned()
                },
                g.rates
                    .positives
                    .map_or_else(|| "n/a".to_owned(), |p| p.to_string()),
                match (g.rates.positives, g.rates.true_positive_rate) {
                    (Some(0), _) => "none (no positives)".to_owned(),
                    (_, tpr) => rate(tpr),
                },
                signed(g.equal_opportunity_difference),
                g.rates.mean_score,
                rate(g.rates.observed_rate),
            );
        }
        if a.groups.iter().any(|g| !g.calibration.is_empty()) {
            out.push_str("\nCalibration (mean score / observed rate, rows) by score bin:\n\n| group | bins |\n|---|---|\n");
            for g in &a.groups {
                let bins: Vec<String> = g
                    .calibration
                    .iter()
                    .map(|b| {
                        format!(
                            "[{:.1}, {:.1}): {:.3} / {:.3} ({})",
                            b.lower, b.upper, b.mean_score, b.observed_rate, b.rows
                        )
                    })
                    .collect();
                let _ = writeln!(out, "| {} | {} |", cell(&g.group), bins.join("; "));
            }
        }
        if let Some(attribution) = &report.attribution {
            let _ = writeln!(
                out,
                "\nMean |attribution| ({}, {} space, first {} rows), top {TOP_FEATURES} features by group:\n",
                attribution.method, attribution.output_space, attribution.rows
            );
            for g in &a.groups {
                let mut features: Vec<_> = g.mean_abs_attribution.iter().collect();
                features.sort_by(|x, y| y.value.total_cmp(&x.value));
                let top: Vec<String> = features
                    .iter()
                    .take(TOP_FEATURES)
                    .map(|f| format!("{} {:.4}", f.feature, f.value))
                    .collect();
                let _ = writeln!(
                    out,
                    "- {} ({} rows): {}",
                    g.group,
                    g.attribution_rows,
                    top.join(", ")
                );
            }
        }
    }
    out
}
