//! The explanation cache: decisions with their attributions, keyed by
//! decision id, bounded by the bytes they hold and by a TTL.
//!
//! A hit answers "why am I seeing this?" without touching the database. A
//! miss falls back to the decision record, and a record without attributions
//! to computing them from its sealed inputs. Withdrawal, objection and
//! erasure drop a subject's entries at once; an entry also expires when its
//! decision's retention ends, whatever the TTL, so the cache never answers
//! for a decision the record would no longer hold.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use super::DecisionRow;
use crate::store::now_ms;

/// How each look-up was answered.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    /// Answered from the decision record.
    pub record_reads: AtomicU64,
    /// Attributions computed from the record's sealed inputs.
    pub computed: AtomicU64,
}

/// A snapshot of [`CacheStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheCounts {
    pub hits: u64,
    pub record_reads: u64,
    pub computed: u64,
}

pub struct ExplanationCache {
    entries: moka::sync::Cache<String, Arc<DecisionRow>>,
    /// Subjects erased within the entries' lifetime: their decisions are
    /// never cached again, even when read before the erasure committed.
    erased: moka::sync::Cache<String, ()>,
    stats: CacheStats,
}

/// Bytes moka keeps per entry beside the key and value: its hash-table slot,
/// access-order and timer nodes and the entry's metadata.
const ENTRY_OVERHEAD: usize = 400;

/// The bytes an entry holds: its key, the row with everything it owns, and
/// moka's bookkeeping. The bound is a memory budget, so this counts real
/// capacities (a shared provenance is counted with every row that holds it)
/// plus one seventh for the allocator rounding the row's ~260 small
/// allocations up to their size classes. `tests/cache_memory.rs` checks the
/// sum against a counting allocator.
fn weight(key: &str, row: &DecisionRow) -> u32 {
    use get_size2::GetSize;
    let owned = key.len() + row.get_size();
    let bytes = owned + owned / 7 + ENTRY_OVERHEAD;
    bytes.min(u32::MAX as usize) as u32
}

impl ExplanationCache {
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &String, row: &Arc<DecisionRow>| weight(key, row))
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build(),
            erased: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(ttl)
                .build(),
            stats: CacheStats::default(),
        }
    }

    /// A cached decision, counted as a hit. One past its retention is gone
    /// from the record, so from here too (the TTL may be longer).
    pub fn get(&self, id: &str) -> Option<Arc<DecisionRow>> {
        let found = self.entries.get(id).filter(|row| {
            let retained = row.retain_until_ms >= now_ms();
            if !retained {
                self.entries.invalidate(id);
            }
            retained
        });
        if found.is_some() {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Caches a decision (unless its subject was erased); its sealed inputs
    /// never enter the cache.
    pub fn insert(&self, mut row: DecisionRow) -> Arc<DecisionRow> {
        row.inputs = None;
        let row = Arc::new(row);
        let erased = row
            .subject_ref
            .as_ref()
            .is_some_and(|s| self.erased.contains_key(s));
        if !erased {
            self.entries.insert(row.decision_id.clone(), row.clone());
        }
        row
    }

    pub fn count_record_read(&self) {
        self.stats.record_reads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_computed(&self) {
        self.stats.computed.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops every entry about the subject, at once; after an erasure, also
    /// refuses new ones.
    pub fn invalidate_subject(&self, subject_ref: &str, erased: bool) {
        if erased {
            self.erased.insert(subject_ref.to_owned(), ());
        }
        let subject = subject_ref.to_owned();
        self.entries
            .invalidate_entries_if(move |_, row| row.subject_ref.as_deref() == Some(&subject))
            .expect("invalidation closures are enabled");
        // Closures run lazily; make the removal visible to the next look-up.
        self.entries.run_pending_tasks();
    }

    /// Drops every entry (after a key rotation, or to measure cold reads).
    pub fn clear(&self) {
        self.entries.invalidate_all();
        self.entries.run_pending_tasks();
    }

    /// The summed weight of the live entries, after pending evictions.
    pub fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            hits: self.stats.hits.load(Ordering::Relaxed),
            record_reads: self.stats.record_reads.load(Ordering::Relaxed),
            computed: self.stats.computed.load(Ordering::Relaxed),
        }
    }
}
