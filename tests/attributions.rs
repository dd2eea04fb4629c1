//! Tree ensembles read from the bundled ONNX files reproduce ONNX Runtime's
//! scores, and their TreeSHAP attributions add up to the margin.

mod common;

use candor::{
    explain::{trees::Ensemble, treeshap::PathDependent},
    grpc::pb::{self, explain_service_client::ExplainServiceClient},
};
use common::*;

fn rows(path: &std::path::Path, skip_last: bool) -> Vec<Vec<f32>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let n = r.len() - usize::from(skip_last);
            r.iter()
                .take(n)
                .map(|v| v.parse::<f32>().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn lightgbm_trees_read_from_onnx_score_like_onnx_runtime() {
    let versions = std::fs::read_dir(repo_root().join("models/caravan-lgbm")).unwrap();
    let mut dirs: Vec<_> = versions.map(|v| v.unwrap().path()).collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no caravan-lgbm package under models/");
    for dir in dirs {
        let version = dir.file_name().unwrap().to_string_lossy().into_owned();
        let ensemble =
            Ensemble::from_onnx(&std::fs::read(dir.join("model.onnx")).unwrap(), 78).unwrap();
        assert_eq!(
            ensemble.outputs, 1,
            "a binary classifier explains one margin"
        );
        let golden = golden(&dir);
        for (row, want) in rows(&dir.join("golden.csv"), true)
            .iter()
            .zip(&golden.scores)
        {
            let p = ensemble.transform(&ensemble.margins(row), 0);
            assert!((p - want).abs() <= 1e-6, "{version}: {p} vs ORT {want}");
        }
    }
}

#[test]
fn treeshap_on_the_bundled_lightgbm_is_additive() {
    let dir = repo_root().join("models/caravan-lgbm/1.0.0");
    let mut ensemble =
        Ensemble::from_onnx(&std::fs::read(dir.join("model.onnx")).unwrap(), 78).unwrap();
    assert_eq!(ensemble.trees.len(), 300);
    let background: Vec<f32> = rows(&dir.join("background.csv"), false).concat();
    ensemble.cover_from_rows(&background);
    let explainer = PathDependent::new(ensemble.clone());
    // With covers from the background, the expected value is the background's
    // mean margin.
    let mean: f64 = background
        .chunks(78)
        .map(|r| ensemble.margins(r)[0])
        .sum::<f64>()
        / (background.len() / 78) as f64;
    assert!(
        (explainer.expected()[0] - mean).abs() <= 1e-9 * mean.abs().max(1.0),
        "{} vs {mean}",
        explainer.expected()[0]
    );
    for row in rows(&dir.join("golden.csv"), true) {
        let shap = explainer.explain(&row);
        let margin = ensemble.margins(&row)[0];
        let residual = (shap.expected[0] + shap.phi.iter().sum::<f64>() - margin).abs();
        assert!(
            residual <= 1e-9 * margin.abs().max(1.0),
            "residual {residual}"
        );
    }
}

/// The model-agnostic estimator spends the package's sample budget, and a
/// request's deadline cuts it short instead of the request failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_attributions_stop_at_the_deadline() {
    let mut config = common::test_config();
    let models = config.database.parent().unwrap().join("models");
    let dst = common::copy_package("caravan-mlp/1.0.0", &models);
    // A budget no request could wait for.
    let manifest = dst.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        format!("{text}\n[explanation]\nsample_pairs = 100000\n"),
    )
    .unwrap();
    config.models_dir = models;
    let server = common::TestServer::start_with(config).await;
    let mut request = common::caravan_request();
    request.model = common::model_ref("caravan-mlp", "");
    request.explain = Some(pb::ExplainOptions {
        mode: pb::ExplainMode::Inline as i32,
        method: 0,
    });
    let mut request = tonic::Request::new(request);
    request.set_timeout(std::time::Duration::from_millis(1000));
    let started = std::time::Instant::now();
    let d = server.score_one(request).await;
    assert!(started.elapsed() < std::time::Duration::from_millis(1000));
    let a = d.attribution.unwrap();
    assert!(
        (2..100_000).contains(&a.sample_pairs),
        "{} pairs",
        a.sample_pairs
    );
    assert!(a.features.iter().any(|f| f.standard_error > 0.0));
    assert!(a.additivity_residual < 1e-6, "efficient however many pairs");

    // A what-if row, alone or in a batch, is cut short the same way.
    let mut explain = ExplainServiceClient::new(server.channel().await);
    let row = common::caravan_request();
    let mut lone = tonic::Request::new(pb::ExplainRequest {
        model: common::model_ref("caravan-mlp", ""),
        features: row.features.clone(),
        ..Default::default()
    });
    lone.set_timeout(std::time::Duration::from_millis(1000));
    let started = std::time::Instant::now();
    let a = explain
        .explain(lone)
        .await
        .unwrap()
        .into_inner()
        .attribution
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_millis(1000));
    assert!((2..100_000).contains(&a.sample_pairs), "{}", a.sample_pairs);
    let mut batch = tonic::Request::new(pb::ExplainBatchRequest {
        model: common::model_ref("caravan-mlp", ""),
        rows: vec![pb::BatchRow {
            features: row.features,
            ..Default::default()
        }],
        ..Default::default()
    });
    batch.set_timeout(std::time::Duration::from_millis(1000));
    let results = explain.explain_batch(batch).await.unwrap().into_inner();
    let a = results.results[0].attribution.as_ref().unwrap();
    assert!((2..100_000).contains(&a.sample_pairs), "{}", a.sample_pairs);
}
