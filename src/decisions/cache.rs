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
    entries: moka::sync::Cache<String, Cached>,
    /// Subjects erased within the entries' lifetime: their decisions are
    /// never cached again, even when read before the erasure committed.
    erased: moka::sync::Cache<String, ()>,
    /// Subject → the generation of its last invalidation. moka removes a
    /// subject's entries lazily, and misses those whose insert it has not
    /// yet applied, so a look-up also refuses an entry older than its
    /// subject's invalidation.
    invalidated: moka::sync::Cache<String, u64>,
    /// Counts invalidations: an entry is of the generation it was inserted in.
    generation: AtomicU64,
    stats: CacheStats,
}

/// A cached decision and the generation it was inserted in.
#[derive(Clone)]
struct Cached {
    row: Arc<DecisionRow>,
    generation: u64,
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
                .weigher(|key: &String, cached: &Cached| weight(key, &cached.row))
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build(),
            erased: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(ttl)
                .build(),
            invalidated: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(ttl)
                .build(),
            generation: AtomicU64::new(0),
            stats: CacheStats::default(),
        }
    }

    /// A cached decision, counted as a hit. One past its retention is gone
    /// from the record, so from here too (the TTL may be longer), and so is
    /// one cached before its subject's entries were dropped.
    pub fn get(&self, id: &str) -> Option<Arc<DecisionRow>> {
        let found = self.entries.get(id).filter(|cached| {
            let dropped = cached.row.subject_ref.as_ref().is_some_and(|s| {
                self.invalidated
                    .get(s)
                    .is_some_and(|at| at > cached.generation)
            });
            let current = !dropped && cached.row.retain_until_ms >= now_ms();
            if !current {
                self.entries.invalidate(id);
            }
            current
        });
        if found.is_some() {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
        }
        found.map(|cached| cached.row)
    }

    /// Caches a decision (unless its subject was erased); its sealed inputs
    /// never enter the cache.
    pub fn insert(&self, mut row: DecisionRow) -> Arc<DecisionRow> {
        row.inputs = None;
        let row = Arc::new(row);
        let generation = self.generation.load(Ordering::SeqCst);
        let erased = row
            .subject_ref
            .as_ref()
            .is_some_and(|s| self.erased.contains_key(s));
        if !erased {
            self.entries.insert(
                row.decision_id.clone(),
                Cached {
                    row: row.clone(),
                    generation,
                },
            );
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
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.invalidated.insert(subject_ref.to_owned(), generation);
        // What moka drops frees its memory now; what it misses, get refuses.
        let subject = subject_ref.to_owned();
        self.entries
            .invalidate_entries_if(move |_, cached| {
                cached.row.subject_ref.as_deref() == Some(&subject)
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::sample_row;

    /// moka drops a subject's entries lazily and misses some whose insert
    /// it has not yet applied while others insert (2 of 10,000 here before
    /// the generations): one cached just before its subject was erased was
    /// still answered minutes later. Nothing cached before a subject's
    /// invalidation is answered after it; others' entries are, and a
    /// decision made since is cached unless the subject was erased.
    #[test]
    fn nothing_cached_before_a_subject_is_dropped_is_answered_after() {
        for erased in [true, false] {
            let cache = Arc::new(ExplanationCache::new(1 << 30, Duration::from_secs(3600)));
            for round in 0..200 {
                let others = cache.clone();
                let inserting = std::thread::spawn(move || {
                    for i in 0..500 {
                        others.insert(sample_row(&format!("b{round}-{i}"), Some("bob")));
                    }
                });
                for i in 0..50 {
                    cache.insert(sample_row(&format!("a{round}-{i}"), Some("alice")));
                }
                cache.invalidate_subject("alice", erased);
                inserting.join().unwrap();
                for i in 0..50 {
                    let id = format!("a{round}-{i}");
                    assert!(cache.get(&id).is_none(), "{id}, erased: {erased}");
                }
                assert!(cache.get(&format!("b{round}-499")).is_some());
            }
            cache.insert(sample_row("since", Some("alice")));
            assert_eq!(cache.get("since").is_some(), !erased);
        }
    }
}
