//! Attribution kernels against a prediction of the same model, side by side:
//! exact TreeSHAP on the Caravan LightGBM (300 trees × 31 leaves), one row at
//! a time on one thread, path-dependent and interventional (100 background
//! rows), next to ONNX Runtime scoring the same row.
//!
//! The same kernels run on the 500-tree depth-6 stress model of
//! `tests/fixtures/stress/lgbm-500x6` (made by `models/attribution_goldens.py
//! --stress`), with the native model's covers.
//!
//! Run with `cargo bench --bench attributions`.

use std::path::PathBuf;

use candor::{
    explain::{
        INTERVENTIONAL_BACKGROUND_ROWS, interventional::Interventional, trees::Ensemble,
        treeshap::PathDependent,
    },
    inference::{Backend, runtime},
    models::ModelPackage,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kernels(c: &mut Criterion) {
    let ort = std::env::var_os("CANDOR_ORT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".ort/libonnxruntime.so.1.31.1"));
    runtime::init(&ort).expect("ONNX Runtime (make ort)");
    let dir = root().join("models/caravan-lgbm/1.0.0");
    let package = ModelPackage::load(&dir, 1).expect("the bundled package loads");
    let golden = package.golden.as_ref().expect("golden rows");
    let width = golden.rows.width;
    let rows: Vec<&[f32]> = (0..golden.rows.len()).map(|i| golden.rows.row(i)).collect();

    let mut ensemble =
        Ensemble::from_onnx(&std::fs::read(dir.join("model.onnx")).unwrap(), width).unwrap();
    ensemble.cover_from_rows(&package.background.values);
    let reference = package.background.values[..INTERVENTIONAL_BACKGROUND_ROWS * width].to_vec();
    let interventional = Interventional::new(ensemble.clone(), reference);
    let shap = PathDependent::new(ensemble);

    let mut group = c.benchmark_group("caravan-lgbm, ORT, one thread");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("ORT score", |b| {
        b.iter(|| {
            i = (i + 1) % rows.len();
            package.backend.predict(0, rows[i]).unwrap()
        })
    });
    group.finish();
    tree_shap(c, "caravan-lgbm", &rows, &shap, &interventional);
}

fn matrix(path: &std::path::Path) -> Vec<f32> {
    let mut reader = csv::Reader::from_path(path).expect("fixture rows");
    reader
        .records()
        .flat_map(|r| {
            r.unwrap()
                .iter()
                .map(|v| {
                    if v.is_empty() {
                        f32::NAN
                    } else {
                        v.parse().unwrap()
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn stress(c: &mut Criterion) {
    let dir = root().join("tests/fixtures/stress/lgbm-500x6");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let width = meta["n_features"].as_u64().unwrap() as usize;
    let mut ensemble =
        Ensemble::from_onnx(&std::fs::read(dir.join("model.onnx")).unwrap(), width).unwrap();
    let mut covers = std::collections::HashMap::new();
    let mut reader = csv::Reader::from_path(dir.join("covers.csv")).unwrap();
    for r in reader.records() {
        let r = r.unwrap();
        covers.insert(
            (r[0].parse().unwrap(), r[1].parse().unwrap()),
            r[2].parse().unwrap(),
        );
    }
    ensemble.set_covers(&covers).unwrap();
    let x = matrix(&dir.join("X.csv"));
    let rows: Vec<&[f32]> = x.chunks(width).collect();
    let interventional = Interventional::new(ensemble.clone(), matrix(&dir.join("background.csv")));
    let shap = PathDependent::new(ensemble);

    tree_shap(c, "lgbm-500x6 stress", &rows, &shap, &interventional);
}

criterion_group!(benches, kernels, stress);
criterion_main!(benches);

/// Both TreeSHAP kernels, cycling through `rows` one at a time, then the
/// path-dependent kernel over all of `rows` in one call, as the peers are
/// given them.
fn tree_shap(
    c: &mut Criterion,
    name: &str,
    rows: &[&[f32]],
    shap: &PathDependent,
    interventional: &Interventional,
) {
    let mut group = c.benchmark_group(format!("{name}, one row, one thread"));
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("TreeSHAP path-dependent", |b| {
        b.iter(|| {
            i = (i + 1) % rows.len();
            shap.explain(rows[i])
        })
    });
    group.bench_function("TreeSHAP interventional, 100 background rows", |b| {
        b.iter(|| {
            i = (i + 1) % rows.len();
            interventional.explain(rows[i])
        })
    });
    group.finish();
    let mut group = c.benchmark_group(format!("{name}, all rows per call, one thread"));
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("TreeSHAP path-dependent", |b| {
        b.iter(|| shap.explain_rows(rows))
    });
    group.finish();
}
