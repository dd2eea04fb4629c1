//! The explanation cache's bound is a memory budget: its weigher must count
//! what entries really hold. A counting allocator measures the heap the cache
//! keeps, which must match the weight it reports and stay within its bound.
//!
//! One test only: the allocator's counter is process-wide.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        Arc,
        atomic::{AtomicIsize, Ordering},
    },
    time::Duration,
};

use candor::{
    consent::{
        ledger::{LedgerRef, LegalBasis},
        policy::{Provenance, PurposeOutcome, PurposeStatus, Regime, Source, Tier},
    },
    decisions::{
        DecisionRow, ExplainedFeature, ExplainedGroup, Explanation, cache::ExplanationCache,
    },
};

/// Counts the bytes the allocator really hands out (its usable size, not
/// the requested one), net of frees.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

fn usable(ptr: *mut u8) -> isize {
    // SAFETY: `ptr` was returned by the system allocator and is live.
    unsafe { libc::malloc_usable_size(ptr.cast()) as isize }
}

// SAFETY: every call is forwarded to `System`; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(usable(ptr), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(usable(ptr), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = usable(ptr);
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(usable(new) - before, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn hex(i: usize, len: usize) -> String {
    format!("{i:0len$x}")
}

/// A decision shaped like the bundled models' (78 features in groups, a
/// TCF provenance citing ledger records), every string distinct.
fn decision(i: usize) -> DecisionRow {
    let subject = format!("subject-{}", i % 500);
    let features: Vec<ExplainedFeature> = (0..78)
        .map(|f| ExplainedFeature {
            name: format!("FEATURE{f:02}"),
            value: f as f64,
            contribution: 0.01 * f as f64,
            standard_error: 0.0,
            masked: f % 9 == 0,
        })
        .collect();
    let groups = (0..10)
        .map(|g| ExplainedGroup {
            name: format!("group-{g}"),
            contribution: g as f64,
            features: features[g * 7..g * 7 + 7]
                .iter()
                .map(|f| f.name.clone())
                .collect(),
        })
        .collect();
    let ledger = |p: usize| LedgerRef {
        seq: (i * 11 + p) as i64,
        record_id: format!("0199{}", hex(i * 11 + p, 32)),
        hash: hex(i * 11 + p, 64),
    };
    let provenance = Provenance {
        jurisdiction: "DE".into(),
        regime: Regime::Tcf,
        tier: Tier::Personalised,
        purposes: (1..=11)
            .map(|p| PurposeOutcome {
                tcf_id: p as u8,
                dpv: format!("dpv:Purpose{p}"),
                status: PurposeStatus::Granted,
                legal_basis: Some(LegalBasis::Consent),
                source: Source::Ledger,
                record: Some(ledger(p)),
            })
            .collect(),
        rules: vec![
            "gdpr.tcf.p3".into(),
            "gdpr.tcf.p4".into(),
            "art9.mask".into(),
        ],
        masked_features: features
            .iter()
            .filter(|f| f.masked)
            .map(|f| f.name.clone())
            .collect(),
        ledger_records: (1..=11).map(ledger).collect(),
        signals_hash: hex(i, 64),
        policy_version: "2026-11".into(),
        policy_hash: hex(i + 1, 64),
        model_sha256: hex(7, 64),
        subject_ref: Some(subject.clone()),
        tc_last_updated_ms: Some(1_764_547_200_000),
    };
    DecisionRow {
        decision_id: format!("0199{}", hex(i, 32)),
        decided_at_ms: 1_795_000_000_000 + i as i64,
        request_id: hex(i, 32).into(),
        model_name: "caravan-lgbm".into(),
        model_version: "1.0.0".into(),
        model_sha256: hex(7, 64).into(),
        subject_ref: Some(subject),
        placement_id: "homepage-top".into(),
        campaign_id: format!("campaign-{}", i % 40),
        ad_id: format!("ad-{i}"),
        tier: Tier::Personalised,
        score: Some(0.1),
        provenance: Arc::new(provenance),
        explanation: Some(Explanation {
            method: "tree_shap_path_dependent".into(),
            method_version: "quadrature/1".into(),
            output_space: "log_odds".into(),
            base_value: -2.5,
            margin: -1.0,
            base_score: 0.07,
            residual: 1e-9,
            ort_difference: 1e-8,
            sample_pairs: 0,
            features,
            groups,
        }),
        inputs: None,
        explain_method: None,
        retain_until_ms: i64::MAX,
    }
}

#[test]
fn the_cache_bound_is_the_memory_its_entries_hold() {
    // Unbounded in practice: every entry stays, so the weight it reports
    // can be set against what the allocator handed out for it.
    let entries = 4_000;
    let cache = ExplanationCache::new(1 << 40, Duration::from_secs(3600));
    let before = live();
    for i in 0..entries {
        cache.insert(decision(i));
    }
    let weight = cache.weighted_size() as f64;
    let held = (live() - before) as f64;
    let ratio = weight / held;
    eprintln!(
        "{entries} entries: weight {weight:.0} B, allocator {held:.0} B, ratio {ratio:.3}, {:.0} B/entry",
        held / entries as f64
    );
    assert!(
        (0.8..=1.25).contains(&ratio),
        "the weigher counts {weight} bytes for {held} bytes held (ratio {ratio:.3})"
    );
    drop(cache);

    // Bounded: many more entries than fit, and the heap stays near the bound.
    let bound: u64 = 8 << 20;
    let cache = ExplanationCache::new(bound, Duration::from_secs(3600));
    let before = live();
    for i in 0..entries * 10 {
        cache.insert(decision(i));
    }
    let weight = cache.weighted_size();
    // An evicted entry's memory is freed a maintenance pass or more after
    // its eviction (moka's map defers the drop until no reader can hold
    // it: crossbeam-epoch), so the heap is measured once it stops falling.
    let mut settled = live();
    for _ in 0..10 {
        cache.weighted_size();
        if live() >= settled {
            break;
        }
        settled = live();
    }
    let held = (settled - before) as f64;
    eprintln!("bound {bound} B: weight {weight} B, allocator {held:.0} B");
    assert!(weight <= bound, "weight {weight} over the bound {bound}");
    assert!(
        held <= bound as f64 * 1.2,
        "the cache holds {held} bytes under a bound of {bound}"
    );
}
