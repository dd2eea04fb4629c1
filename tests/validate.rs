//! The validation gate (`candor models validate`, and the check on deploy):
//! each rule refuses a package broken for it, with a message that names the
//! rule, and every bundled package passes them all.

mod common;

use std::{fs, path::Path};

use candor::{
    inference::runtime,
    models::validate::{Check, Report, rules, validate_package},
};
use common::*;

/// The report's result for `rule`.
fn check<'r>(report: &'r Report, rule: &str) -> &'r Check {
    report.checks.iter().find(|c| c.name == rule).unwrap()
}

const ALL_RULES: [&str; 6] = [
    rules::FEATURES_DOCUMENTED,
    rules::NO_SPECIAL_CATEGORY_FOR_ADVERTISING,
    rules::GRAPH_MATCHES_MANIFEST,
    rules::GOLDEN_ROWS_REPRODUCE,
    rules::ATTRIBUTIONS_ADDITIVE,
    rules::FAIRNESS_THRESHOLDS,
];

#[test]
fn every_bundled_package_passes_every_rule_from_any_thread() {
    runtime::init(&ort_lib()).unwrap();
    for dir in bundled_packages() {
        // The deploy RPC calls the gate off the thread that initialised ORT.
        let report = std::thread::spawn(move || validate_package(&dir))
            .join()
            .unwrap();
        assert!(report.passed, "{}", report.to_text());
        let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), ALL_RULES.len(), "{names:?}");
        for rule in ALL_RULES {
            assert!(names.contains(&rule), "{rule} not checked: {names:?}");
        }
    }
}

type Breakage = fn(&Path);

#[test]
fn each_rule_refuses_a_package_broken_for_it_and_names_the_rule() {
    runtime::init(&ort_lib()).unwrap();
    let cases: [(&str, &str, Breakage); 6] = [
        (rules::FEATURES_DOCUMENTED, "caravan-logreg/1.0.0", |p| {
            // The first feature loses its Dutch reason template.
            edit(
                &p.join("manifest.toml"),
                ", nl = \"de woninggegevens van je postcode\" }",
                " }",
            )
        }),
        (
            rules::NO_SPECIAL_CATEGORY_FOR_ADVERTISING,
            "caravan-logreg/1.0.0",
            |p| {
                edit(
                    &p.join("manifest.toml"),
                    "category = \"zip_code_demographics\"",
                    "category = \"religion\"",
                )
            },
        ),
        (rules::GRAPH_MATCHES_MANIFEST, "caravan-logreg/1.0.0", |p| {
            edit(
                &p.join("manifest.toml"),
                "tensor = \"input\"",
                "tensor = \"x\"",
            )
        }),
        (
            rules::GOLDEN_ROWS_REPRODUCE,
            "caravan-logreg/1.0.0",
            break_first_golden,
        ),
        (rules::ATTRIBUTIONS_ADDITIVE, "caravan-mlp/1.0.0", |p| {
            // A graph that adds unseeded noise (tests/gate_fixtures.py):
            // its Shapley values cannot add up to its score. Its
            // committed audit is of the replaced model, so it goes too.
            fs::copy(
                repo_root().join("tests/fixtures/gate/noisy.onnx"),
                p.join("model.onnx"),
            )
            .unwrap();
            fs::remove_file(p.join("fairness.json")).unwrap();
        }),
        (rules::FAIRNESS_THRESHOLDS, "caravan-logreg/1.0.0", |p| {
            // The four-fifths rule, which caravan-logreg fails by age band.
            // The committed report names the old threshold, so it goes too.
            edit(
                &p.join("manifest.toml"),
                "min_disparate_impact = 0.6",
                "min_disparate_impact = 0.8",
            );
            fs::remove_file(p.join("fairness.json")).unwrap();
        }),
    ];
    for (rule, package, breakage) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = copy_package(package, &tmp.path().join("models"));
        breakage(&dir);
        let report = validate_package(&dir);
        assert!(!report.passed, "{rule}: {}", report.to_text());
        let failures = report.failures();
        let line = failures
            .lines()
            .find(|l| l.starts_with(&format!("{rule}: ")))
            .unwrap_or_else(|| panic!("{rule} does not fail:\n{}", report.to_text()));
        assert!(
            !line.contains("not checked"),
            "{rule} was skipped, not failed: {line}"
        );
        assert!(
            report.to_text().contains(&format!("[FAILED] {rule} (")),
            "{}",
            report.to_text()
        );
    }
}

/// A data category the schema does not know is no data category: the
/// documentation rule fails with the manifest, not "78 features
/// documented".
#[test]
fn an_unknown_data_category_does_not_document_a_feature() {
    runtime::init(&ort_lib()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_package("caravan-logreg/1.0.0", &tmp.path().join("models"));
    edit(
        &dir.join("manifest.toml"),
        "category = \"zip_code_demographics\"",
        "category = \"bogus\"",
    );
    let report = validate_package(&dir);
    let check = check(&report, rules::FEATURES_DOCUMENTED);
    assert!(!check.passed, "{}", report.to_text());
    assert!(check.detail.contains("bogus"), "{}", check.detail);
}

/// An audit with nothing to compare used to pass as "parity" (a ratio of
/// 1): a threshold no score reaches, or audit data of a single group.
#[test]
fn an_audit_with_nothing_to_compare_fails_the_gate() {
    runtime::init(&ort_lib()).unwrap();
    let fairness_failure = |dir: &Path| {
        // The committed report audits the package as it was.
        fs::remove_file(dir.join("fairness.json")).unwrap();
        let report = validate_package(dir);
        assert!(!report.passed, "{}", report.to_text());
        report
            .failures()
            .lines()
            .find(|l| l.starts_with(&format!("{}: ", rules::FAIRNESS_THRESHOLDS)))
            .unwrap_or_else(|| panic!("{}", report.to_text()))
            .to_owned()
    };

    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_package("caravan-logreg/1.0.0", &tmp.path().join("models"));
    edit(
        &dir.join("manifest.toml"),
        "decision_threshold = 0.09672",
        "decision_threshold = 2.0",
    );
    let line = fairness_failure(&dir);
    assert!(
        line.contains("age_band: no row of the groups compared is selected")
            && line.contains("undefined"),
        "{line}"
    );

    // Nor does a threshold below every score, which selects everyone.
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_package("caravan-logreg/1.0.0", &tmp.path().join("models"));
    edit(
        &dir.join("manifest.toml"),
        "decision_threshold = 0.09672",
        "decision_threshold = -0.1",
    );
    let line = fairness_failure(&dir);
    assert!(line.contains("age_band: every row is selected"), "{line}");

    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_package("caravan-logreg/1.0.0", &tmp.path().join("models"));
    let audit = dir.join("audit.csv");
    let text = fs::read_to_string(&audit).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let column = header.split(',').position(|c| c == "age_band").unwrap();
    let one_group: Vec<String> = std::iter::once(header.to_owned())
        .chain(lines.map(|line| {
            let mut fields: Vec<&str> = line.split(',').collect();
            fields[column] = "40-50";
            fields.join(",")
        }))
        .collect();
    fs::write(&audit, one_group.join("\n") + "\n").unwrap();
    let line = fairness_failure(&dir);
    assert!(
        line.contains("age_band: the audit data holds 1 group of age_band large enough to compare"),
        "{line}"
    );
}

/// Without `[training] train_rows` the consumer view sizes segments on the
/// background sample alone and withholds most reasons: the gate passes
/// such a package but says so.
#[test]
fn a_package_without_its_training_size_passes_with_a_note() {
    runtime::init(&ort_lib()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_package("caravan-logreg/1.0.0", &tmp.path().join("models"));
    edit(&dir.join("manifest.toml"), "train_rows = 4657\n", "");
    let report = validate_package(&dir);
    let graph = check(&report, rules::GRAPH_MATCHES_MANIFEST);
    assert!(graph.passed, "{}", report.to_text());
    assert!(
        graph.detail.contains("note: no [training] train_rows"),
        "{}",
        graph.detail
    );
    let bundled = validate_package(&repo_root().join("models/caravan-logreg/1.0.0"));
    assert!(!bundled.to_text().contains("note: no [training]"));
}

/// A score that takes two values at most (a class label cast to float, say)
/// passes every rule but cannot rank ads: the gate says so.
#[test]
fn a_score_that_cannot_rank_passes_with_a_note() {
    runtime::init(&ort_lib()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_package("caravan-logreg/1.0.0", &tmp.path().join("models"));
    let golden = dir.join("golden.csv");
    let text = fs::read_to_string(&golden).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Rows that all score alike, as every row does under a label.
    let alike = [lines[0], lines[1], lines[1], lines[1]].join("\n");
    fs::write(&golden, alike).unwrap();
    let report = validate_package(&dir);
    let check = check(&report, rules::GOLDEN_ROWS_REPRODUCE);
    assert!(check.passed, "{}", report.to_text());
    assert!(
        check
            .detail
            .contains("note: the score takes only 1 distinct value(s)"),
        "{}",
        check.detail
    );
    let bundled = validate_package(&repo_root().join("models/caravan-logreg/1.0.0"));
    assert!(!bundled.to_text().contains("cannot rank"));
}

/// A copied manifest that still claims to be the default fails the gate
/// as it fails at load: a lower version of the model claims it already.
#[test]
fn a_second_version_claiming_the_default_fails_as_it_would_at_load() {
    runtime::init(&ort_lib()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let first = copy_package("caravan-logreg/1.0.0", &models);
    edit(
        &first.join("manifest.toml"),
        "version = \"1.0.0\"",
        "version = \"1.0.0\"\ndefault = true",
    );
    let second = models.join("caravan-logreg/1.1.0");
    fs::rename(
        copy_package("caravan-logreg/1.0.0", &tmp.path().join("x")),
        &second,
    )
    .unwrap();
    edit(
        &second.join("manifest.toml"),
        "version = \"1.0.0\"",
        "version = \"1.1.0\"\ndefault = true",
    );
    assert!(validate_package(&first).passed);
    let report = validate_package(&second);
    let check = check(&report, rules::GRAPH_MATCHES_MANIFEST);
    assert!(!check.passed, "{}", report.to_text());
    assert!(
        check.detail.contains("model.default: version 1.0.0"),
        "{}",
        check.detail
    );
}

/// A reason is shown to the person as written: a template that names a
/// special category for an ordinary feature, or carries markup, fails the
/// documentation rule naming the file, the field and the feature.
#[test]
fn a_reason_template_naming_a_special_category_fails_the_gate() {
    runtime::init(&ort_lib()).unwrap();
    for (template, says) in [
        ("your religion and your health", "names a special category"),
        ("<script>x</script>", "no markup"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = copy_package("caravan-logreg/1.0.0", &tmp.path().join("models"));
        edit(
            &dir.join("manifest.toml"),
            "en = \"the housing figures for your postcode\"",
            &format!("en = \"{template}\""),
        );
        let report = validate_package(&dir);
        let check = check(&report, rules::FEATURES_DOCUMENTED);
        assert!(!check.passed, "{}", report.to_text());
        assert!(
            check
                .detail
                .contains("manifest.toml: features[0].reason.en (MAANTHUI): "),
            "{}",
            check.detail
        );
        assert!(check.detail.contains(says), "{}", check.detail);
    }
}
