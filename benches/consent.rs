//! The per-request cost of consent, piece by piece, next to ONNX Runtime
//! scoring one row of the same model: decoding a TC string and a GPP string,
//! pseudonymising the subject, reading its ledger state from SQLite, and
//! evaluating the policy for the Caravan LightGBM's 78 features.
//!
//! Run with `cargo bench --bench consent`.

use std::{path::PathBuf, sync::Arc};

use candor::{
    consent::{
        AgeStatus, Jurisdiction, Signals,
        ledger::{Collection, Draft, Ledger, LegalBasis, PurposeEntry, RecordKind, Status, now_ms},
        policy::{Policy, Settings, UnknownJurisdiction},
    },
    inference::{Backend, runtime},
    models::ModelPackage,
    store::Store,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn policy_string(name: &str) -> String {
    let path = root().join("tests/fixtures/consent/policy_strings.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["strings"][name]["string"].as_str().unwrap().to_owned()
}

fn eu_signals(tc_string: &str) -> Signals {
    Signals {
        jurisdiction: Some(Jurisdiction {
            country: "DE".into(),
            region: None,
        }),
        age: AgeStatus::Adult,
        tc_string: Some(tc_string.to_owned()),
        ..Signals::default()
    }
}

fn consent(c: &mut Criterion) {
    let ort = std::env::var_os("CANDOR_ORT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".ort/libonnxruntime.so.1.31.1"));
    runtime::init(&ort).expect("ONNX Runtime (make ort)");
    let package = ModelPackage::load(&root().join("models/caravan-lgbm/1.0.0"), 1)
        .expect("the bundled package loads");
    let row = package.golden.as_ref().unwrap().rows.row(0).to_vec();

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("candor.db")).unwrap());
    let ledger = Ledger::new(store, vec![7; 32]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // 10,000 subjects with a consent on record, as a realistic index.
    let drafts: Vec<Draft> = (0..10_000)
        .map(|i| Draft {
            kind: RecordKind::Consent,
            subject_ref: Some(ledger.pseudonymise(&format!("subject-{i}"))),
            controller: "bench".into(),
            purposes: (1..=4)
                .map(|p| PurposeEntry {
                    tcf_id: p,
                    dpv: String::new(),
                    legal_basis: LegalBasis::Consent,
                    status: Status::Given,
                })
                .collect(),
            data_categories: vec![],
            collection: Collection {
                method: "cmp_ui".into(),
                collected_at_ms: now_ms(),
                jurisdiction: "DE".into(),
                language: "en".into(),
                notice: None,
            },
            withdrawal_method: String::new(),
            evidence: None,
            recorded_by: None,
        })
        .collect();
    runtime.block_on(ledger.append(drafts)).unwrap();
    let policy = Policy::new(Settings {
        tcf_vendor_id: Some(1000),
        unknown_jurisdiction: UnknownJurisdiction::Refuse,
    });
    let tc_all = policy_string("tcf-all");
    let decoded = eu_signals(&tc_all).decode().unwrap();
    let subject = ledger.pseudonymise("subject-4242");
    let state = ledger.state(&subject).unwrap();
    assert_eq!(state.len(), 4);
    let gpp = Signals {
        jurisdiction: Some(Jurisdiction {
            country: "US".into(),
            region: Some("CA".into()),
        }),
        gpp_string: Some(policy_string("gpp-usnat-usca-none")),
        ..Signals::default()
    };

    let mut group = c.benchmark_group("consent, per request");
    group.bench_function("ORT score, one row (reference)", |b| {
        b.iter(|| package.backend.predict(0, &row).unwrap())
    });
    group.bench_function("decode TC string + hash signals", |b| {
        b.iter(|| eu_signals(&tc_all).decode().unwrap())
    });
    group.bench_function("decode GPP usnat+usca + hash signals", |b| {
        b.iter(|| gpp.clone().decode().unwrap())
    });
    group.bench_function("pseudonymise subject (HMAC-SHA256)", |b| {
        b.iter(|| ledger.pseudonymise("subject-4242"))
    });
    group.bench_function("ledger state look-up (SQLite, 10k subjects)", |b| {
        b.iter(|| ledger.state(&subject).unwrap())
    });
    group.bench_function("evaluate policy, 78 features", |b| {
        b.iter(|| policy.evaluate(package.schema.columns(), &decoded, &state, now_ms()))
    });
    group.bench_function("all of the above but ORT", |b| {
        b.iter(|| {
            let decoded = eu_signals(&tc_all).decode().unwrap();
            let subject = ledger.pseudonymise("subject-4242");
            let state = ledger.state(&subject).unwrap();
            policy.evaluate(package.schema.columns(), &decoded, &state, now_ms())
        })
    });
    group.finish();
}

criterion_group!(benches, consent);
criterion_main!(benches);
