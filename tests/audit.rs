//! The fairness audit: its metrics equal fairlearn's on the committed audit
//! data sets within 1e-9 (goldens written by tests/fairness_goldens.py, never
//! rerun here), it refuses group columns the model sees, and `candor audit`
//! writes its report as JSON, Markdown and a PNG chart.

mod common;

use std::path::Path;

use candor::{
    audit::{self, AuditOptions, Report},
    inference::{Backend, runtime},
    models::ModelPackage,
};
use common::*;
use serde_json::Value;

/// Largest accepted |Candor − fairlearn| of any metric.
const TOLERANCE: f64 = 1e-9;

fn close(what: &str, ours: f64, theirs: &Value) {
    let theirs = theirs
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: no golden"));
    assert!(
        (ours - theirs).abs() <= TOLERANCE,
        "{what}: Candor {ours}, fairlearn {theirs}"
    );
}

#[test]
fn metrics_equal_fairlearns_on_the_committed_data_sets() {
    runtime::init(&ort_lib()).unwrap();
    let goldens: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/fixtures/audit/goldens.json")).unwrap(),
    )
    .unwrap();
    let packages = goldens["packages"].as_object().unwrap();
    assert!(packages.len() >= 2);
    for (name, g) in packages {
        let package = ModelPackage::load(&repo_root().join("models").join(name), 1).unwrap();
        assert_eq!(
            package.sha256, g["sha256"],
            "{name}: goldens of another model"
        );
        let options = AuditOptions::declared(&package).unwrap();
        let data = audit::data::read(
            &options.data,
            options.within.as_deref(),
            &package.schema,
            &options.groups,
            options.label_column.as_deref(),
        )
        .unwrap();
        assert_eq!(
            data.sha256, g["data_sha256"],
            "{name}: goldens of another data set"
        );

        // Both sides decide on identical numbers: Python's ORT scores, bit for bit.
        let scores = package.backend.predict(0, &data.rows.values).unwrap();
        let golden_scores = g["scores"].as_array().unwrap();
        assert_eq!(scores.len(), golden_scores.len());
        for (i, (&ours, theirs)) in scores.iter().zip(golden_scores).enumerate() {
            assert_eq!(
                f64::from(ours).to_bits(),
                theirs.as_f64().unwrap().to_bits(),
                "{name} row {i}"
            );
        }

        let report = audit::run(&package, &options).unwrap();
        assert_eq!(report.decision_threshold, g["decision_threshold"]);
        let overall = &g["overall"];
        close(
            "overall selection rate",
            report.overall.selection_rate,
            &overall["selection_rate"],
        );
        close(
            "overall TPR",
            report.overall.true_positive_rate.unwrap(),
            &overall["true_positive_rate"],
        );
        close(
            "overall mean score",
            report.overall.mean_score,
            &overall["mean_score"],
        );
        assert_eq!(
            report.attributes.len(),
            g["attributes"].as_object().unwrap().len()
        );
        for a in &report.attributes {
            let ga = &g["attributes"][&a.column];
            let at = |m: &str| format!("{name} {} {m}", a.column);
            close(
                &at("demographic_parity_ratio"),
                a.demographic_parity_ratio.expect("someone is selected"),
                &ga["demographic_parity_ratio"],
            );
            close(
                &at("demographic_parity_difference"),
                a.demographic_parity_difference,
                &ga["demographic_parity_difference"],
            );
            close(
                &at("equal_opportunity_difference"),
                a.equal_opportunity_difference.unwrap(),
                &ga["equal_opportunity_difference"],
            );
            let groups = ga["groups"].as_object().unwrap();
            assert_eq!(a.groups.len(), groups.len(), "{}", at("groups"));
            let f = |group: &str, m: &str| groups[group][m].as_f64().unwrap();
            let top_rate = groups
                .keys()
                .map(|k| f(k, "selection_rate"))
                .fold(0.0, f64::max);
            for grp in &a.groups {
                let gg = &groups[&grp.group];
                let at = |m: &str| at(&format!("group {} {m}", grp.group));
                assert_eq!(
                    grp.rates.rows as u64,
                    gg["rows"].as_u64().unwrap(),
                    "{}",
                    at("rows")
                );
                close(
                    &at("selection_rate"),
                    grp.rates.selection_rate,
                    &gg["selection_rate"],
                );
                close(
                    &at("true_positive_rate"),
                    grp.rates.true_positive_rate.unwrap(),
                    &gg["true_positive_rate"],
                );
                close(
                    &at("observed_rate"),
                    grp.rates.observed_rate.unwrap(),
                    &gg["observed_rate"],
                );
                close(&at("mean_score"), grp.rates.mean_score, &gg["mean_score"]);
                // Against the most favoured group, from fairlearn's own rates.
                let favoured = &a.most_favoured;
                close(
                    &at("disparate_impact"),
                    grp.disparate_impact.expect("someone is selected"),
                    &Value::from(f(&grp.group, "selection_rate") / top_rate),
                );
                close(
                    &at("equal_opportunity_difference"),
                    grp.equal_opportunity_difference.unwrap(),
                    &Value::from(
                        f(&grp.group, "true_positive_rate") - f(favoured, "true_positive_rate"),
                    ),
                );
                assert_eq!(
                    f(favoured, "selection_rate"),
                    top_rate,
                    "{}",
                    at("most favoured")
                );
            }
        }
    }
}

fn model(package: &str) -> String {
    repo_root()
        .join("models")
        .join(package)
        .display()
        .to_string()
}

#[test]
fn audit_writes_json_markdown_and_png() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = candor(&[
        "audit",
        "--model",
        &model("caravan-logreg/1.0.0"),
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Report = serde_json::from_str(
        &std::fs::read_to_string(out_dir.path().join(audit::REPORT_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(report.model, "caravan-logreg");
    let columns: Vec<&str> = report
        .attributes
        .iter()
        .map(|a| a.column.as_str())
        .collect();
    assert_eq!(columns, ["age_band", "income_band"]);
    assert_eq!(report.attributes[1].bands.as_deref(), Some("MINKGEM"));
    let attribution = report.attribution.as_ref().unwrap();
    assert_eq!(
        (attribution.method.as_str(), attribution.rows),
        ("linear_exact", 1165)
    );
    for g in &report.attributes[0].groups {
        assert_eq!(g.mean_abs_attribution.len(), 78);
        assert!(g.mean_abs_attribution.iter().any(|f| f.value > 0.0));
    }
    let markdown = std::fs::read_to_string(out_dir.path().join("fairness.md")).unwrap();
    assert!(
        markdown.starts_with("# Fairness audit: caravan-logreg 1.0.0"),
        "{markdown}"
    );
    assert!(
        markdown.contains("bands the model input MINKGEM"),
        "{markdown}"
    );
    let png = std::fs::read(out_dir.path().join("fairness.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);

    // The committed report is of this model and these decisions.
    let committed: Report = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(&model("caravan-logreg/1.0.0")).join(audit::REPORT_FILE),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(committed.sha256, report.sha256);
    for (c, r) in committed.attributes.iter().zip(&report.attributes) {
        for (cg, rg) in c.groups.iter().zip(&r.groups) {
            assert_eq!(
                (cg.rates.rows, cg.rates.selected),
                (rg.rates.rows, rg.rates.selected)
            );
        }
    }
}

#[test]
fn audit_refuses_group_columns_the_model_sees() {
    let logreg = model("caravan-logreg/1.0.0");
    let run = |group: &str| {
        candor(&[
            "audit",
            "--model",
            &logreg,
            "--group-column",
            group,
            "--attribution-rows",
            "0",
        ])
    };
    let out = run("MINKGEM");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("group column \"MINKGEM\" is a model input"),
        "{err}"
    );

    // One attribute audited twice, or the outcome taken for a group.
    let twice = candor(&[
        "audit",
        "--model",
        &logreg,
        "--group-column",
        "age_band",
        "--group-column",
        "age_band",
        "--attribution-rows",
        "0",
    ]);
    assert!(!twice.status.success());
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(err.contains("\"age_band\" is named twice"), "{err}");
    let label = run("Purchase");
    assert!(!label.status.success());
    let err = String::from_utf8_lossy(&label.stderr);
    assert!(err.contains("\"Purchase\" is the label column"), "{err}");

    let out = run("age_band:MINKGEM");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not band model input \"MINKGEM\""),
        "{err}"
    );

    // A declared band of an input is audited (and fails the four-fifths
    // rule, the default minimum), and the report says the model sees it.
    let out = run("income_band:MINKGEM");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("**income_band** (bands the model input MINKGEM"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_failed_threshold_fails_the_command_and_names_the_gap() {
    let logreg = model("caravan-logreg/1.0.0");
    let by_age = |more: &[&str]| {
        let mut args = vec![
            "audit",
            "--model",
            &logreg,
            "--group-column",
            "age_band",
            "--attribution-rows",
            "0",
        ];
        args.extend_from_slice(more);
        candor(&args)
    };
    let out = by_age(&[]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("four-fifths rule NOT met"), "{text}");
    assert!(text.contains("is below the declared minimum 0.8"), "{text}");
    // A report piped elsewhere still leaves the verdict on the terminal.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the audit fails its thresholds"), "{err}");
    // Written to files, the verdict still reaches the terminal.
    let dir = tempfile::tempdir().unwrap();
    let out = by_age(&["--out", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the audit fails its thresholds"), "{err}");
    assert!(err.contains("is below the declared minimum 0.8"), "{err}");
}

/// A label column written from a float column (pandas' 0.0 / 1.0) is the
/// same labels.
#[test]
fn labels_written_as_floats_are_the_same_labels() {
    runtime::init(&ort_lib()).unwrap();
    let package = ModelPackage::load(&repo_root().join("models/caravan-logreg/1.0.0"), 1).unwrap();
    let mut options = AuditOptions::declared(&package).unwrap();
    let as_ints = audit::run(&package, &options).unwrap();
    let text = std::fs::read_to_string(&options.data).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let at = header.split(',').position(|c| c == "Purchase").unwrap();
    let floats: Vec<String> = std::iter::once(header.to_owned())
        .chain(lines.map(|line| {
            let mut fields: Vec<String> = line.split(',').map(str::to_owned).collect();
            fields[at] = format!("{}.0", fields[at]);
            fields.join(",")
        }))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    options.data = tmp.path().join("audit.csv");
    options.within = None;
    std::fs::write(&options.data, floats.join("\n") + "\n").unwrap();
    let as_floats = audit::run(&package, &options).unwrap();
    assert_eq!(as_floats.overall, as_ints.overall);
    assert_eq!(as_floats.attributes, as_ints.attributes);
}

#[test]
fn a_stale_committed_audit_is_refused_at_load() {
    runtime::init(&ort_lib()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_package("caravan-logreg/1.0.0", &tmp.path().join("models"));
    let path = dir.join(audit::REPORT_FILE);
    let mut report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    report["sha256"] = Value::from("0".repeat(64));
    std::fs::write(&path, report.to_string()).unwrap();
    let err = ModelPackage::load(&dir, 1).unwrap_err();
    assert!(err.file.ends_with(audit::REPORT_FILE), "{err}");
    assert_eq!(err.field.as_deref(), Some("sha256"), "{err}");
}

/// The model card shows the committed report as the package's audit, so it
/// must audit the package as it is: the manifest's decision threshold, the
/// audit data and the declared groups and thresholds. Any of them changed
/// since, the package is refused at load, naming what differs.
#[test]
fn a_report_of_another_threshold_data_or_declaration_is_refused_at_load() {
    runtime::init(&ort_lib()).unwrap();
    type Breakage = fn(&Path);
    let cases: [(&str, Breakage); 4] = [
        ("decision_threshold", |p| {
            edit(
                &p.join("manifest.toml"),
                "decision_threshold = 0.09672",
                "decision_threshold = 0.05",
            )
        }),
        ("data_sha256", |p| {
            let audit = p.join("audit.csv");
            let text = std::fs::read_to_string(&audit).unwrap();
            let kept: Vec<&str> = text.lines().take(600).collect();
            std::fs::write(&audit, kept.join("\n") + "\n").unwrap();
        }),
        ("attributes", |p| {
            edit(
                &p.join("manifest.toml"),
                "min_disparate_impact = 0.6",
                "min_disparate_impact = 0.95",
            )
        }),
        ("fairness", |p| {
            let manifest = p.join("manifest.toml");
            let text = std::fs::read_to_string(&manifest).unwrap();
            let cut = text.find("[fairness]").unwrap();
            std::fs::write(&manifest, &text[..cut]).unwrap();
        }),
    ];
    for (field, breakage) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = copy_package("caravan-logreg/1.0.0", &tmp.path().join("models"));
        breakage(&dir);
        let err = ModelPackage::load(&dir, 1).unwrap_err();
        assert!(err.file.ends_with(audit::REPORT_FILE), "{field}: {err}");
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
        assert!(
            err.to_string().contains("rerun `candor audit --out`"),
            "{err}"
        );
        // And that is how it is mended.
        let dir_arg = dir.display().to_string();
        let rerun = candor(&[
            "audit",
            "--model",
            &dir_arg,
            "--out",
            &dir_arg,
            "--attribution-rows",
            "0",
        ]);
        if field != "fairness" {
            assert!(
                ModelPackage::load(&dir, 1).is_ok(),
                "{field}: {}",
                String::from_utf8_lossy(&rerun.stderr)
            );
        }
    }
}

/// A threshold no ratio can be compared with (NaN, 0, above 1) is refused
/// as a manifest's would be, instead of passing every audit.
#[test]
fn audit_thresholds_out_of_range_are_refused() {
    let logreg = model("caravan-logreg/1.0.0");
    for (flag, value) in [
        ("--min-disparate-impact", "nan"),
        ("--min-disparate-impact", "0"),
        ("--max-equal-opportunity-difference", "-1"),
        ("--max-equal-opportunity-difference", "nan"),
    ] {
        let out = candor(&["audit", "--model", &logreg, &format!("{flag}={value}")]);
        assert!(!out.status.success(), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains("must lie in"), "{err}");
    }
}

/// The committed logreg audit data, edited by `edit` (header, then rows as
/// fields), audited with `groups` (`None`: the declared ones).
fn audit_edited(
    edit: impl FnOnce(&mut Vec<String>, &mut Vec<Vec<String>>),
    groups: Option<&[&str]>,
) -> Result<Report, audit::AuditError> {
    runtime::init(&ort_lib()).unwrap();
    let package = ModelPackage::load(&repo_root().join("models/caravan-logreg/1.0.0"), 1).unwrap();
    let mut options = AuditOptions::declared(&package).unwrap();
    let text = std::fs::read_to_string(&options.data).unwrap();
    let mut lines = text.lines();
    let mut header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    let mut rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    edit(&mut header, &mut rows);
    let tmp = tempfile::tempdir().unwrap();
    options.data = tmp.path().join("edited.csv");
    options.within = None;
    let body: Vec<String> = std::iter::once(header.join(","))
        .chain(rows.iter().map(|r| r.join(",")))
        .collect();
    std::fs::write(&options.data, body.join("\n") + "\n").unwrap();
    if let Some(groups) = groups {
        options.groups = groups
            .iter()
            .map(|g| audit::GroupColumn::parse(g, 0.8, None, audit::MIN_GROUP_ROWS as usize))
            .collect();
    }
    audit::run(&package, &options)
}

fn column(header: &[String], name: &str) -> usize {
    header.iter().position(|c| c == name).unwrap()
}

/// Data that would change what is audited without saying so is refused,
/// naming the column: a name given twice, an input under another name, a
/// missing or odd group.
#[test]
fn audit_data_that_would_mislead_is_refused_by_name() {
    let err = |r: Result<Report, audit::AuditError>| r.unwrap_err().to_string();
    let twice = err(audit_edited(
        |header, rows| {
            header.push("MINKGEM".into());
            rows.iter_mut().for_each(|r| r.push("0".into()));
        },
        None,
    ));
    assert!(
        twice.contains("column \"MINKGEM\" is named twice"),
        "{twice}"
    );

    // The income input under a lower-case name, and a copy of it.
    for name in ["minkgem", "income_copy"] {
        let copy = err(audit_edited(
            |header, rows| {
                let at = column(header, "MINKGEM");
                header.push(name.into());
                rows.iter_mut().for_each(|r| {
                    let v = r[at].clone();
                    r.push(v);
                });
            },
            Some(&[name]),
        ));
        assert!(
            copy.contains(&format!("group column \"{name}\" is a")) && copy.contains("MINKGEM"),
            "{copy}"
        );
    }

    for (cell, why) in [
        ("N/A", "no group"),
        ("nan", "no group"),
        ("a\u{7}b", "control or invisible character"),
        ("40-50\u{200B}", "control or invisible character"),
    ] {
        let odd = err(audit_edited(
            |header, rows| {
                let at = column(header, "age_band");
                rows[4][at] = cell.into();
            },
            None,
        ));
        assert!(
            odd.contains("row 5, column age_band") && odd.contains(why),
            "{odd}"
        );
    }
    let short = err(audit_edited(|_, rows| drop(rows[5].pop()), None));
    assert!(
        short.contains("row 6: has 80 fields, the header 81"),
        "{short}"
    );
}

/// A group too small to say anything is reported but not compared; a
/// group without actual positives has no true-positive rate; one group
/// alone has nobody to be compared with.
#[test]
fn small_groups_groups_without_positives_and_lone_groups_are_not_compared() {
    let declared = audit_edited(|_, _| {}, None).unwrap();
    // One selected row in a group of its own.
    let tiny = audit_edited(
        |header, rows| {
            let at = column(header, "age_band");
            let mut one = rows[0].clone();
            one[at] = "single".into();
            rows.push(one);
        },
        None,
    )
    .unwrap();
    let (before, after) = (&declared.attributes[0], &tiny.attributes[0]);
    assert_eq!(after.most_favoured, before.most_favoured);
    assert_eq!(
        after.demographic_parity_ratio,
        before.demographic_parity_ratio
    );
    let single = after.groups.iter().find(|g| g.group == "single").unwrap();
    assert!(!single.compared && single.disparate_impact.is_none());
    assert_eq!(single.rates.rows, 1);

    // A group of 80 rows none of which bought.
    let nobody = audit_edited(
        |header, rows| {
            let (at, label) = (column(header, "age_band"), column(header, "Purchase"));
            let mut moved = 0;
            for r in rows.iter_mut().filter(|r| r[label] == "0") {
                if moved < 80 {
                    r[at] = "no-buyers".into();
                    moved += 1;
                }
            }
        },
        None,
    )
    .unwrap();
    let attribute = &nobody.attributes[0];
    let group = attribute
        .groups
        .iter()
        .find(|g| g.group == "no-buyers")
        .unwrap();
    assert_eq!(group.rates.positives, Some(0));
    assert_eq!(group.rates.true_positive_rate, None);
    assert_eq!(group.equal_opportunity_difference, None);
    let tprs: Vec<f64> = attribute
        .groups
        .iter()
        .filter_map(|g| g.rates.true_positive_rate)
        .collect();
    let spread = tprs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        - tprs.iter().copied().fold(f64::INFINITY, f64::min);
    assert!((attribute.equal_opportunity_difference.unwrap() - spread).abs() < 1e-15);

    // Actual positives in one group only: the declared maximum of the
    // equal-opportunity difference cannot be measured, so it is not met.
    let one_with_buyers = audit_edited(
        |header, rows| {
            let (at, label) = (column(header, "age_band"), column(header, "Purchase"));
            for (i, r) in rows.iter_mut().enumerate() {
                r[at] = if r[label] == "1" || i % 2 == 0 {
                    "buyers"
                } else {
                    "others"
                }
                .into();
            }
        },
        None,
    )
    .unwrap();
    let attribute = &one_with_buyers.attributes[0];
    assert!(attribute.max_equal_opportunity_difference.is_some());
    assert_eq!(attribute.equal_opportunity_difference, None);
    assert!(!attribute.passed);
    assert!(
        attribute
            .findings
            .iter()
            .any(|f| f.contains("cannot be measured")),
        "{:?}",
        attribute.findings
    );

    let lone = audit_edited(
        |header, rows| {
            let at = column(header, "age_band");
            rows.iter_mut().for_each(|r| r[at] = "everyone".into());
        },
        None,
    )
    .unwrap();
    let attribute = &lone.attributes[0];
    assert_eq!(attribute.demographic_parity_ratio, None);
    assert_eq!(attribute.equal_opportunity_difference, None);
    assert!(!attribute.meets_four_fifths_rule && !attribute.passed);
    assert!(
        attribute.findings[0].contains("holds 1 group of age_band large enough to compare"),
        "{:?}",
        attribute.findings
    );
}

/// `--no-label` audits without the declared label; the manifest's note on
/// its thresholds is left out of an audit against other ones.
#[test]
fn an_ad_hoc_audit_may_drop_the_label_and_leaves_out_the_declared_note() {
    let logreg = model("caravan-logreg/1.0.0");
    let out = candor(&[
        "audit",
        "--model",
        &logreg,
        "--no-label",
        "--group-column",
        "age_band",
        "--attribution-rows",
        "0",
        "--format",
        "json",
    ]);
    let report: Report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report.label_column, None);
    assert!(
        report.attributes[0]
            .groups
            .iter()
            .all(|g| g.rates.true_positive_rate.is_none())
    );
    assert_eq!(report.note, None);
    let declared = candor(&[
        "audit",
        "--model",
        &logreg,
        "--attribution-rows",
        "0",
        "--format",
        "json",
    ]);
    let report: Report = serde_json::from_slice(&declared.stdout).unwrap();
    assert!(report.note.is_some());
    // Without labels, a declared equal-opportunity maximum is not checked,
    // and the report says so rather than "passes".
    let unlabelled = candor(&[
        "audit",
        "--model",
        &logreg,
        "--no-label",
        "--attribution-rows",
        "0",
    ]);
    let text = String::from_utf8_lossy(&unlabelled.stdout);
    assert!(
        text.contains("not checked: the data has no labels"),
        "{text}"
    );
}
