//! Tree ensembles read from the bundled ONNX files reproduce ONNX Runtime's
//! scores, and their TreeSHAP attributions add up to the margin.

mod common;

use candor::explain::{trees::Ensemble, treeshap::PathDependent};
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
    for version in ["1.0.0", "1.1.0"] {
        let dir = repo_root().join("models/caravan-lgbm").join(version);
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
