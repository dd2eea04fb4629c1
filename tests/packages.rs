//! Loading refuses broken packages with an error that names the file and the
//! field; `candor models validate` reports the same as text and JSON.

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use candor::{
    grpc::pb::{self, explain_service_client::ExplainServiceClient},
    inference::runtime,
    models::{ModelPackage, Registry},
};
use common::*;

/// Copies the default Caravan package into `<tmp>/models/caravan-lgbm/1.0.0`.
/// Replaces the package's covers.csv with what `edit` makes of it.
fn rewrite_covers(package: &Path, edit: impl FnOnce(&str) -> String) {
    let path = package.join("covers.csv");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, edit(&text)).unwrap();
}

fn copy_default(tmp: &Path) -> PathBuf {
    copy_package("caravan-lgbm/1.0.0", &tmp.join("models"))
}

#[test]
fn broken_packages_are_refused_naming_file_and_field() {
    runtime::init(&ort_lib()).unwrap();
    type Breakage = fn(&Path);
    let cases: Vec<(&str, Breakage, &str, Option<&str>, &str)> = vec![
        (
            "wrong input tensor",
            |p| {
                edit(
                    &p.join("manifest.toml"),
                    "tensor = \"input\"",
                    "tensor = \"x\"",
                )
            },
            "manifest.toml",
            Some("model.input.tensor"),
            "\"x\" is not a graph input",
        ),
        (
            "wrong output tensor",
            |p| {
                edit(
                    &p.join("manifest.toml"),
                    "tensor = \"probabilities\"",
                    "tensor = \"proba\"",
                )
            },
            "manifest.toml",
            Some("model.output.tensor"),
            "\"proba\" is not a graph output",
        ),
        (
            "fixed batch size",
            |p| {
                // The Caravan interface, [1, 78] (tests/gate_fixtures.py).
                let fixture = repo_root().join("tests/fixtures/gate/fixed-batch.onnx");
                fs::copy(fixture, p.join("model.onnx")).unwrap();
            },
            "model.onnx",
            None,
            "a fixed batch size of 1",
        ),
        (
            "ZipMap output",
            |p| {
                // The Caravan interface, its probabilities also wrapped in a
                // ZipMap as skl2onnx does by default (tests/gate_fixtures.py).
                let fixture = repo_root().join("tests/fixtures/gate/zipmap.onnx");
                fs::copy(fixture, p.join("model.onnx")).unwrap();
                edit(
                    &p.join("manifest.toml"),
                    "tensor = \"probabilities\"",
                    "tensor = \"output_probability\"",
                );
            },
            "manifest.toml",
            Some("model.output.tensor"),
            "a sequence of maps is a ZipMap",
        ),
        (
            "model file trained on another column order",
            |p| {
                // The training script's stamp, two columns swapped in place
                // (the same length, so the file stays valid).
                let path = p.join("model.onnx");
                let bytes = fs::read(&path).unwrap();
                let order = b"MAANTHUI,MGEMOMV,MRELGE,";
                let at = bytes
                    .windows(order.len())
                    .position(|w| w == order)
                    .expect("the bundled model carries its feature stamp");
                let mut patched = bytes.clone();
                patched[at..at + order.len()].copy_from_slice(b"MAANTHUI,MRELGE,MGEMOMV,");
                fs::write(&path, patched).unwrap();
            },
            "model.onnx",
            Some("metadata candor.input.features"),
            "with \"MRELGE\" in column 2, but the manifest puts \"MGEMOMV\" there",
        ),
        (
            "output index",
            |p| edit(&p.join("manifest.toml"), "index = 1", "index = 2"),
            "manifest.toml",
            Some("model.output.index"),
            "outside the output's 2 columns",
        ),
        (
            "feature count",
            |p| {
                let path = p.join("manifest.toml");
                let text = fs::read_to_string(&path).unwrap();
                let last = text.rfind("[[features]]").unwrap();
                let end = text[last..]
                    .find("\n[[groups]]")
                    .map_or(text.len(), |e| last + e);
                let trimmed = format!("{}{}", &text[..last], &text[end..])
                    .replace("\"ABYSTAND\"", "\"AWAPART\"");
                let trimmed = trimmed.replace(", \"AWAPART\"]", "]");
                fs::write(&path, trimmed).unwrap();
            },
            "manifest.toml",
            Some("features"),
            "declares 77 features but the graph input",
        ),
        (
            "folder name",
            |p| {
                edit(
                    &p.join("manifest.toml"),
                    "version = \"1.0.0\"",
                    "version = \"1.0.1\"",
                )
            },
            "manifest.toml",
            Some("model.version"),
            "does not match the package folder",
        ),
        (
            "unknown key",
            |p| {
                edit(
                    &p.join("manifest.toml"),
                    "[model.input]",
                    "colour = \"red\"\n[model.input]",
                )
            },
            "manifest.toml",
            None,
            "unknown field `colour`",
        ),
        (
            "corrupt model",
            |p| fs::write(p.join("model.onnx"), b"not an onnx file").unwrap(),
            "model.onnx",
            None,
            "does not decode as an ONNX model",
        ),
        (
            "background header",
            |p| edit(&p.join("background.csv"), "MAANTHUI", "MAANTHU"),
            "background.csv",
            Some("header"),
            "column 1 is \"MAANTHU\" where \"MAANTHUI\" belongs",
        ),
        (
            "background value",
            |p| {
                let path = p.join("background.csv");
                let text = fs::read_to_string(&path).unwrap();
                let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
                lines[1] = format!("99{}", &lines[1][lines[1].find(',').unwrap()..]);
                fs::write(&path, lines.join("\n")).unwrap();
            },
            "background.csv",
            Some("row 1, column MAANTHUI"),
            "value 99 is outside the allowed range [1, 10]",
        ),
        (
            "a golden score left empty",
            |p| {
                let path = p.join("golden.csv");
                let text = fs::read_to_string(&path).unwrap();
                let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
                let cut = lines[1].rfind(',').unwrap();
                lines[1].truncate(cut + 1);
                fs::write(&path, lines.join("\n")).unwrap();
            },
            "golden.csv",
            Some("row 1, column score"),
            "is empty or NaN",
        ),
        (
            "missing background",
            |p| fs::remove_file(p.join("background.csv")).unwrap(),
            "background.csv",
            None,
            "cannot read",
        ),
        (
            "covers header",
            |p| edit(&p.join("covers.csv"), "tree_id", "tree"),
            "covers.csv",
            Some("header"),
            "tree_id,node_id,cover",
        ),
        (
            "a node without a cover",
            |p| {
                rewrite_covers(p, |text| {
                    let kept: Vec<&str> = text.lines().take(text.lines().count() - 1).collect();
                    kept.join("\n")
                })
            },
            "covers.csv",
            None,
            "no cover for tree",
        ),
        (
            "a cover for a node the graph lacks",
            |p| rewrite_covers(p, |text| format!("{text}9999,0,1\n")),
            "covers.csv",
            None,
            "tree 9999 node 0 has a cover but is not in the graph",
        ),
        (
            "a node given a cover twice",
            |p| {
                rewrite_covers(p, |text| {
                    let first = text.lines().nth(1).unwrap();
                    format!("{text}{first}\n")
                })
            },
            "covers.csv",
            None,
            "is given a cover twice",
        ),
        (
            "covers that do not add up",
            |p| edit(&p.join("covers.csv"), "0,0,3737", "0,0,4000"),
            "covers.csv",
            None,
            "tree 0 node 0 has cover 4000 but its children",
        ),
    ];
    for (what, breakage, file, field, needle) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let package = copy_default(tmp.path());
        breakage(&package);
        let err = ModelPackage::load(&package, 1).expect_err(what);
        assert_eq!(
            err.file.file_name().unwrap().to_str().unwrap(),
            file,
            "{what}: {err}"
        );
        if let Some(field) = field {
            assert_eq!(err.field.as_deref(), Some(field), "{what}: {err}");
        }
        assert!(err.to_string().contains(needle), "{what}: {err}");
        // The registry refuses to start on it too.
        assert!(
            Registry::load_dir(&tmp.path().join("models"), 1, None, None).is_err(),
            "{what}"
        );
    }
}

#[test]
fn a_package_feeding_religion_to_advertising_is_refused() {
    runtime::init(&ort_lib()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let package = copy_default(tmp.path());
    // Relabel one feature with the truth about a religion proxy column.
    edit(
        &package.join("manifest.toml"),
        "category = \"income\"",
        "category = \"religion\"",
    );
    let err = ModelPackage::load(&package, 1).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("features"));
    assert!(
        err.to_string()
            .contains("special-category data may not serve personalised_advertising"),
        "{err}"
    );
}

/// Special-category data may be loaded for measurement, but no decision
/// about one person's ad may rest on it: scoring with such a package is
/// FAILED_PRECONDITION, naming the features, and so is explaining rows
/// with it (what-if analysis runs the model on them too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_measurement_model_with_special_category_data_makes_no_ad_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let package = copy_default(tmp.path());
    let manifest = package.join("manifest.toml");
    edit(
        &manifest,
        "category = \"income\"",
        "category = \"religion\"",
    );
    edit(
        &manifest,
        "purposes = [\"personalised_advertising\"]",
        "purposes = [\"measurement\"]",
    );
    let mut config = test_config();
    config.models_dir = tmp.path().join("models");
    let server = TestServer::start_with(config).await;
    let scored = server.scoring().await.score(caravan_request()).await;
    let request = caravan_request();
    let explained = ExplainServiceClient::new(server.channel().await)
        .explain(pb::ExplainRequest {
            model: request.model,
            features: request.features,
            ..Default::default()
        })
        .await;
    for refused in [scored.unwrap_err(), explained.unwrap_err()] {
        assert_refused(
            &refused,
            tonic::Code::FailedPrecondition,
            "model: caravan-lgbm 1.0.0 takes special-category data (",
        );
    }
    server.stop().await;
}

/// A feature a request may leave out reaches the model as NaN. A logistic
/// regression cannot score that, so declaring it optional is refused at
/// load, naming it; LightGBM's trees route a missing value, so there the
/// same declaration loads.
#[test]
fn a_feature_the_model_cannot_score_missing_may_not_be_optional() {
    runtime::init(&ort_lib()).unwrap();
    let optional_first = |package: &str| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = copy_package(package, &tmp.path().join("models"));
        edit(
            &dir.join("manifest.toml"),
            "missing_allowed = false",
            "missing_allowed = true",
        );
        (ModelPackage::load(&dir, 1), tmp)
    };
    let (refused, _tmp) = optional_first("caravan-logreg/1.0.0");
    let err = refused.unwrap_err();
    assert_eq!(err.field.as_deref(), Some("features"), "{err}");
    assert!(err.file.ends_with("manifest.toml"), "{err}");
    assert!(
        err.to_string().contains(
            "MAANTHUI: missing_allowed = true, but with it missing from background row 1 the model scores NaN"
        ),
        "{err}"
    );
    let (loaded, _tmp) = optional_first("caravan-lgbm/1.0.0");
    loaded.unwrap();
}

/// A version folder that links into an artefact store is named by the
/// link, as the registry reaches it: `<name>/<version>` as given.
#[test]
fn a_package_reached_through_a_link_is_named_by_the_link() {
    runtime::init(&ort_lib()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let stored = copy_package("caravan-logreg/1.0.0", &tmp.path().join("store"));
    let artefact = tmp.path().join("store/artifact-3f2a");
    fs::rename(&stored, &artefact).unwrap();
    let linked = tmp.path().join("models/caravan-logreg/1.0.0");
    fs::create_dir_all(linked.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&artefact, &linked).unwrap();
    let package = ModelPackage::load(&linked, 1).unwrap();
    assert_eq!(package.name(), "caravan-logreg");
    let (registry, failed) = Registry::load_dir(&tmp.path().join("models"), 1, None, None).unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(registry.model("caravan-logreg").unwrap().versions.len(), 1);
}

/// A model trained on Caravan's zip-code religion columns (declared as
/// proxies for religion) must never load for advertising.
#[test]
fn a_model_trained_on_the_religion_proxy_columns_is_refused_naming_them() {
    runtime::init(&ort_lib()).unwrap();
    let package = repo_root().join("tests/fixtures/packages/caravan-religion-proxy/1.0.0");
    let err = ModelPackage::load(&package, 1).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("manifest.toml"), "{message}");
    for column in ["MGODRK", "MGODPR", "MGODOV", "MGODGE"] {
        assert!(
            message.contains(&format!("{column} (religion)")),
            "{message}"
        );
    }
}

/// A copied manifest brings `default = true` along: the lowest version
/// keeps the claim, the other is refused, and the rest serve.
#[test]
fn a_second_default_version_is_refused_and_the_rest_serve() {
    runtime::init(&ort_lib()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let package = copy_default(tmp.path());
    let second = tmp.path().join("models/caravan-lgbm/1.0.1");
    fs::create_dir_all(&second).unwrap();
    for entry in fs::read_dir(&package).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), second.join(entry.file_name())).unwrap();
    }
    edit(
        &second.join("manifest.toml"),
        "version = \"1.0.0\"",
        "version = \"1.0.1\"",
    );
    let (registry, failed) = Registry::load_dir(&tmp.path().join("models"), 1, None, None).unwrap();
    let lgbm = registry.model("caravan-lgbm").unwrap();
    assert_eq!(lgbm.default.to_string(), "1.0.0");
    assert_eq!(lgbm.versions.len(), 1);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].field.as_deref(), Some("model.default"));
    assert!(failed[0].file.starts_with(&second), "{}", failed[0]);
}

/// While serving, the version in service keeps the default claim: a copy
/// dropped in beside it with the mark is refused, even when it is lower,
/// and production goes on. A version refused for the claim loads once the
/// claimant is gone: the gate's verdict on its bytes does not depend on
/// its neighbours.
#[test]
fn the_version_in_service_keeps_the_default_claim() {
    runtime::init(&ort_lib()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let served = copy_default(tmp.path());
    let higher = models.join("caravan-lgbm/1.0.1");
    fs::rename(&served, &higher).unwrap();
    edit(
        &higher.join("manifest.toml"),
        "version = \"1.0.0\"",
        "version = \"1.0.1\"",
    );
    let gate = |dir: &Path| {
        let report = candor::models::validate::validate_package_alone(dir);
        if report.passed {
            Ok(report.content_sha256)
        } else {
            Err(report.failures())
        }
    };
    let (first, failed) = Registry::load_dir(&models, 1, None, Some(&gate)).unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        first.model("caravan-lgbm").unwrap().default.to_string(),
        "1.0.1"
    );

    // A lower copy that brings the mark along arrives.
    let lower = copy_default(tmp.path());
    let (second, failed) = Registry::load_dir(&models, 1, Some(&first), Some(&gate)).unwrap();
    let lgbm = second.model("caravan-lgbm").unwrap();
    assert_eq!(lgbm.default.to_string(), "1.0.1");
    assert_eq!(lgbm.versions.len(), 1);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].file.starts_with(&lower), "{}", failed[0]);
    assert!(failed[0].message.contains("version 1.0.1"), "{}", failed[0]);

    // At a start, the lowest claimant keeps it; the other loads once the
    // claimant is unloaded and gone.
    let (started, failed) = Registry::load_dir(&models, 1, None, Some(&gate)).unwrap();
    assert_eq!(
        started.model("caravan-lgbm").unwrap().default.to_string(),
        "1.0.0"
    );
    assert!(failed[0].file.starts_with(&higher), "{failed:?}");
    // Where a reload pinned the claimant in service as production, a start
    // keeps it there.
    fs::write(
        models.join("caravan-lgbm/rollout.toml"),
        "production = \"1.0.1\"\n",
    )
    .unwrap();
    let (pinned, failed) = Registry::load_dir(&models, 1, None, Some(&gate)).unwrap();
    assert_eq!(
        pinned.model("caravan-lgbm").unwrap().default.to_string(),
        "1.0.1"
    );
    assert!(failed[0].file.starts_with(&lower), "{failed:?}");
    fs::remove_dir_all(&lower).unwrap();
    fs::write(
        models.join("caravan-lgbm/rollout.toml"),
        "unloaded = [\"1.0.0\"]\n",
    )
    .unwrap();
    let (after, failed) = Registry::load_dir(&models, 1, Some(&started), Some(&gate)).unwrap();
    assert!(
        after
            .model("caravan-lgbm")
            .unwrap()
            .versions
            .keys()
            .any(|v| v.to_string() == "1.0.1"),
        "{failed:?}"
    );
}

#[test]
fn validate_passes_the_bundled_models_and_fails_a_broken_one() {
    let models = repo_root().join("models");
    let out = candor(&["models", "validate", models.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("PASS").count(),
        bundled_packages().len(),
        "{text}"
    );
    assert!(
        text.contains(
            "golden_rows_reproduce (the package's golden rows reproduce): 300 rows within 1e-6"
        ),
        "{text}"
    );
    // A model's folder holds its versions' packages.
    let out = candor(&[
        "models",
        "validate",
        models.join("caravan-logreg").to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("PASS").count(), 1, "{text}");

    let tmp = tempfile::tempdir().unwrap();
    let package = copy_default(tmp.path());
    let golden = package.join("golden.csv");
    let original = std::fs::read_to_string(&golden).unwrap();
    break_first_golden(&package);
    let out = candor(&["models", "validate", "--json", package.to_str().unwrap()]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let check = report[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "golden_rows_reproduce")
        .unwrap();
    assert_eq!(check["passed"], false);
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("golden.csv: row 1's score differs"),
        "{check}"
    );
    // A gap that large is no thread effect: the hint points at the
    // columns, and a gap of the size threads make at the threads.
    assert!(
        detail.contains("the column order the model was trained on"),
        "{detail}"
    );
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let cut = lines[2].rfind(',').unwrap();
    let score: f64 = lines[2][cut + 1..].parse().unwrap();
    lines[2] = format!("{},{}", &lines[2][..cut], score + 5e-6);
    std::fs::write(&golden, lines.join("\n")).unwrap();
    let out = candor(&["models", "validate", package.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("row 2's score differs") && text.contains("intra_op_num_threads = 1"),
        "{text}"
    );
}

#[test]
fn a_missing_onnx_runtime_says_how_to_get_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_candor"))
        .args([
            "serve",
            "--ort-lib",
            "/nonexistent/libonnxruntime.so.1.31.1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("make ort") && err.contains("onnxruntime==1.31.1"),
        "{err}"
    );
}

#[test]
fn the_model_card_tells_what_the_package_is_and_how_it_fares() {
    let package = repo_root().join("models/caravan-mlp/1.0.0");
    let out = candor(&["models", "card", package.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let card = String::from_utf8_lossy(&out.stdout);
    let expected = [
        "# Model card: caravan-mlp 1.0.0",
        "Purposes: personalised_advertising.",
        "- Date: 2026-11-29",
        "| 0 | MAANTHUI | zip_code_demographics | zip_code_aggregate |",
        "| roc_auc |",
        "shapley_permutation_antithetic: model-agnostic Shapley values",
        "**age_band**: disparate-impact ratio",
        "four-fifths rule NOT met",
        "(bands the model input MINKGEM: the model sees it)",
        "## Owner\n\nCandor ML Platform",
        "Rank caravan-insurance ads",
    ];
    for text in expected {
        assert!(card.contains(text), "{text:?} missing:\n{card}");
    }
}

/// A tree model's card says where its path-dependent covers come from: the
/// native model's `covers.csv`, or the background sample without one.
#[test]
fn the_model_card_says_where_the_tree_covers_come_from() {
    let tmp = tempfile::tempdir().unwrap();
    let package = copy_package("caravan-lgbm/1.0.0", tmp.path());
    let card = |dir: &Path| {
        let out = candor(&["models", "card", dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let trained = card(&package);
    assert!(
        trained.contains("covers from the native model (the training distribution, covers.csv)"),
        "{trained}"
    );
    fs::remove_file(package.join("covers.csv")).unwrap();
    let routed = card(&package);
    assert!(
        routed.contains("covers counted by routing the background sample through the trees"),
        "{routed}"
    );
    assert!(!routed.contains("training distribution"), "{routed}");
}

/// The gate runs once on bytes it refused: a reload (each rollout change
/// or watched file event) reports the refusal again without running the
/// audit again, and runs it when the package changes.
#[test]
fn a_refused_package_is_gated_again_only_when_it_changes() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    runtime::init(&ort_lib()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    copy_package("caravan-lgbm/1.0.0", &models);
    let refused = copy_package("caravan-logreg/1.0.0", &models);
    let runs = AtomicUsize::new(0);
    let gate = |dir: &Path| -> Result<Option<String>, String> {
        if dir.starts_with(&refused) {
            runs.fetch_add(1, Ordering::SeqCst);
            return Err("fairness_thresholds: below the declared minimum".into());
        }
        Ok(None)
    };
    let load = |previous: Option<&Registry>| {
        let (registry, failed) = Registry::load_dir(&models, 1, previous, Some(&gate)).unwrap();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].to_string().contains("fairness_thresholds"),
            "{failed:?}"
        );
        registry
    };
    let first = load(None);
    let second = load(Some(&first));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the same bytes were gated again"
    );
    edit(
        &refused.join("manifest.toml"),
        "owner = ",
        "# edited\nowner = ",
    );
    load(Some(&second));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "changed bytes were not gated"
    );
}

/// What serves keeps serving across a reload: a version edited into
/// something that no longer loads, a removed folder, an unreadable
/// `rollout.toml` moves no traffic, and each is reported.
#[test]
fn a_reload_moves_traffic_only_on_an_explicit_change() {
    runtime::init(&ort_lib()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let v1 = copy_package("caravan-lgbm/1.0.0", &models);
    copy_package("caravan-lgbm/1.1.0", &models);
    let mlp = copy_package("caravan-mlp/1.0.0", &models);
    let load = |previous: Option<&Registry>| {
        let (registry, failed) = Registry::load_dir(&models, 1, previous, None).unwrap();
        let failed: Vec<String> = failed.iter().map(ToString::to_string).collect();
        (registry, failed)
    };
    let production = |r: &Registry| r.model("caravan-lgbm").unwrap().default.to_string();
    let (first, failed) = load(None);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(production(&first), "1.0.0");

    edit(
        &v1.join("manifest.toml"),
        "default = true",
        "default = true\ncolour = \"red\"",
    );
    fs::remove_dir_all(&mlp).unwrap();
    let (second, failed) = load(Some(&first));
    assert_eq!(production(&second), "1.0.0");
    assert!(second.model("caravan-mlp").is_ok());
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed.iter().all(|e| e.contains("keeps serving as loaded")),
        "{failed:?}"
    );

    let rollout = models.join("caravan-lgbm/rollout.toml");
    fs::write(&rollout, "production = \"1.1.0\"\n").unwrap();
    let (third, _) = load(Some(&second));
    assert_eq!(production(&third), "1.1.0");
    fs::write(
        &rollout,
        "production = \"1.1.0\"\n[canary]\nversion = \"1.0.0\"\npercent = 150.0\n",
    )
    .unwrap();
    let (fourth, failed) = load(Some(&third));
    assert_eq!(production(&fourth), "1.1.0");
    assert!(
        failed
            .iter()
            .any(|e| e.contains("rollout.toml") && e.contains("the rollout in effect stays")),
        "{failed:?}"
    );

    // A production that is not loaded is refused as SetRollout refuses it.
    fs::write(&rollout, "production = \"9.9.9\"\n").unwrap();
    let (fifth, failed) = load(Some(&fourth));
    assert_eq!(production(&fifth), "1.1.0");
    assert!(
        failed.iter().any(|e| e.contains("rollout.toml")
            && e.contains("production")
            && e.contains("9.9.9")
            && e.contains("the rollout in effect stays (production 1.1.0)")),
        "{failed:?}"
    );

    // After a restart on that file, requests naming no version are refused;
    // an unreadable file then keeps them refused rather than promoting the
    // manifests' choice.
    let (restarted, _) = load(None);
    assert_eq!(production(&restarted), "9.9.9");
    fs::write(&rollout, "production = [[[ garbage").unwrap();
    let (garbled, _) = load(Some(&restarted));
    assert_eq!(production(&garbled), "9.9.9");
    fs::write(&rollout, "[canary]\nversion = \"1.0.0\"\npercent = 150.0\n").unwrap();
    let (refused, _) = load(Some(&garbled));
    assert_eq!(production(&refused), "9.9.9");
}

/// A package named through `..` (or `.`) is found where it resolves.
#[test]
fn a_package_path_through_dot_dot_loads() {
    runtime::init(&ort_lib()).unwrap();
    let winding = repo_root().join("models/caravan-lgbm/1.0.0/../1.0.0");
    let package = ModelPackage::load(&winding, 1).unwrap();
    assert_eq!(package.name(), "caravan-lgbm");
}

/// A package's files are its own regular files: a link out of the package
/// (to the gateway's key, whose first line an error quoted) and a pipe
/// (which hung the load) are refused by name, and a link within the
/// package, as a mounted volume makes, is followed.
#[test]
fn a_package_reads_only_its_own_regular_files() {
    runtime::init(&ort_lib()).unwrap();
    let with_background = |make: &dyn Fn(&Path)| {
        let tmp = tempfile::tempdir().unwrap();
        let package = copy_default(tmp.path());
        fs::remove_file(package.join("background.csv")).unwrap();
        make(&package);
        let loaded = ModelPackage::load(&package, 1).map(|_| ());
        (tmp, loaded)
    };
    let (_tmp, outside) = with_background(&|package| {
        let key = package.parent().unwrap().join("inputs.key");
        fs::write(&key, "SECRET-KEY-BYTES\n").unwrap();
        std::os::unix::fs::symlink(&key, package.join("background.csv")).unwrap();
    });
    let e = outside.unwrap_err().to_string();
    assert!(e.contains("is a link to a file outside the package"), "{e}");
    assert!(!e.contains("SECRET"), "{e}");
    let (_tmp, pipe) = with_background(&|package| {
        let made = Command::new("mkfifo")
            .arg(package.join("background.csv"))
            .status()
            .unwrap();
        assert!(made.success());
    });
    let e = pipe.unwrap_err().to_string();
    assert!(e.contains("is not a regular file"), "{e}");
    let (_tmp, within) = with_background(&|package| {
        fs::create_dir(package.join("data")).unwrap();
        fs::copy(
            repo_root().join("models/caravan-lgbm/1.0.0/background.csv"),
            package.join("data/bg.csv"),
        )
        .unwrap();
        std::os::unix::fs::symlink("data/bg.csv", package.join("background.csv")).unwrap();
    });
    within.unwrap();

    // The declared fairness data set and a model's rollout.toml too: the
    // gate's audit reads the first, and a reload the second.
    let tmp = tempfile::tempdir().unwrap();
    let package = copy_default(tmp.path());
    let secret = tmp.path().join("inputs.key");
    fs::write(&secret, "SECRET-KEY-BYTES,1\n").unwrap();
    fs::remove_file(package.join("audit.csv")).unwrap();
    // Without the committed report, which would refuse the data as not
    // what it audited, the gate audits the data set itself.
    fs::remove_file(package.join("fairness.json")).unwrap();
    std::os::unix::fs::symlink(&secret, package.join("audit.csv")).unwrap();
    let report = candor::models::validate::validate_package_alone(&package);
    let failures = report.failures();
    assert!(
        failures.contains("audit.csv")
            && failures.contains("is a link to a file outside the package"),
        "{failures}"
    );
    assert!(!failures.contains("SECRET"), "{failures}");
    let rollout = package.parent().unwrap().join("rollout.toml");
    std::os::unix::fs::symlink(&secret, &rollout).unwrap();
    let e = candor::models::rollout::Rollout::read(package.parent().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a link to a file outside the package"), "{e}");
    assert!(!e.contains("SECRET"), "{e}");
}

/// What serves is what the validation gate checked: a model file replaced
/// while the gate ran (a minute, for a large forest) is refused, not
/// loaded unchecked, and is checked as it is at the next reload.
#[test]
fn a_package_changed_while_the_gate_checks_it_is_not_served() {
    runtime::init(&ort_lib()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let package = copy_package("caravan-logreg/1.0.0", &models);
    // Without the committed audit report, which names the model file it
    // audited, a replaced model would load.
    fs::remove_file(package.join("fairness.json")).unwrap();
    let swap = repo_root().join("models/caravan-lgbm/1.2.0/model.onnx");
    let gate = |dir: &Path| {
        let report = candor::models::validate::validate_package_alone(dir);
        assert!(report.passed, "{}", report.failures());
        // Replaced once the checks have read it.
        fs::copy(&swap, dir.join("model.onnx")).unwrap();
        Ok(report.content_sha256)
    };
    let refused = match Registry::load_dir(&models, 1, None, Some(&gate)) {
        Err(e) => e,
        Ok((registry, failed)) => {
            assert!(registry.model("caravan-logreg").is_err());
            failed.into_iter().next().unwrap()
        }
    };
    assert!(refused.file.starts_with(&package), "{refused}");
    assert!(
        refused
            .message
            .contains("changed while the validation gate checked it"),
        "{refused}"
    );
}
