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
    /// The generation of each subject's last invalidation. moka removes a
    /// subject's entries lazily, and misses those whose insert it has not
    /// yet applied, so a look-up also refuses an entry older than its
    /// subject's invalidation.
    invalidated: Invalidations,
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

/// The bytes an entry holds: its key and the row with everything it owns
/// (a shared provenance is counted with every row that holds it; the row
/// makes ~260 small allocations), with moka's bookkeeping.
fn weight(key: &str, row: &DecisionRow) -> u32 {
    use get_size2::GetSize;
    crate::memory::weight(key.len() + row.get_size())
}

/// The generation of each subject's last invalidation, in a table of fixed
/// size indexed by a hash of the subject, so that withdrawals and erasures
/// of ever new people take no more memory and none is forgotten. Subjects
/// that share a slot refuse each other's older entries, which the record
/// then answers; an entry is never served past its own subject's
/// invalidation.
struct Invalidations {
    slots: Box<[AtomicU64]>,
    hasher: std::hash::RandomState,
}

impl Invalidations {
    /// A table of `bytes`, at most 8 MiB: a million slots.
    fn new(bytes: u64) -> Self {
        let slots = (bytes / 8).clamp(1, 1 << 20) as usize;
        Self {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn slot(&self, subject: &str) -> &AtomicU64 {
        use std::hash::BuildHasher;
        let i = self.hasher.hash_one(subject) % self.slots.len() as u64;
        &self.slots[i as usize]
    }

    /// The latest invalidation of `subject` (or of one sharing its slot).
    fn at(&self, subject: &str) -> u64 {
        self.slot(subject).load(Ordering::SeqCst)
    }

    fn record(&self, subject: &str, generation: u64) {
        self.slot(subject).fetch_max(generation, Ordering::SeqCst);
    }
}

/// The weight of an erased subject's marker.
fn marker_weight(subject: &String, _: &()) -> u32 {
    crate::memory::weight(std::mem::size_of::<String>() + subject.capacity())
}

impl ExplanationCache {
    /// A cache holding `max_bytes` of entries, each for at most `ttl`, and
    /// an eighth of that again (at least 256 KiB) for the erased subjects'
    /// markers, the oldest let go first, and for the table of invalidations
    /// (at most 8 MiB), so that withdrawals and erasures of ever new people
    /// cannot grow it either.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let markers = (max_bytes / 8).max(256 * 1024);
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &String, cached: &Cached| weight(key, &cached.row))
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build(),
            erased: moka::sync::Cache::builder()
                .max_capacity(markers)
                .weigher(marker_weight)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_live(ttl)
                .build(),
            invalidated: Invalidations::new(markers),
            generation: AtomicU64::new(0),
            stats: CacheStats::default(),
        }
    }

    /// A cached decision, counted as a hit. One past its retention is gone
    /// from the record, so from here too (the TTL may be longer), and so is
    /// one cached before its subject's entries were dropped.
    pub fn get(&self, id: &str) -> Option<Arc<DecisionRow>> {
        let found = self.entries.get(id).filter(|cached| {
            let dropped = cached
                .row
                .subject_ref
                .as_ref()
                .is_some_and(|s| self.invalidated.at(s) > cached.generation);
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
        self.invalidated.record(subject_ref, generation);
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

    /// Withdrawals and erasures of ever new people keep the markers within
    /// their bytes, and an entry that escaped its subject's invalidation
    /// stays refused however many came after.
    #[test]
    fn subject_markers_stay_within_their_bytes() {
        let cache = ExplanationCache::new(2 << 20, Duration::from_secs(3600));
        let budget = (2u64 << 20) / 8;
        assert_eq!(cache.invalidated.slots.len() as u64 * 8, budget);
        cache.invalidate_subject("bob", true);
        // As moka may apply an insert from before the invalidation after it.
        let late = || Cached {
            row: Arc::new(sample_row("late", Some("bob"))),
            generation: 0,
        };
        cache.entries.insert("late".into(), late());
        assert!(cache.get("late").is_none());
        for i in 0..20_000 {
            cache.invalidate_subject(&format!("subject-{i:058}"), i % 2 == 0);
        }
        cache.erased.run_pending_tasks();
        let erased = cache.erased.weighted_size();
        assert!(erased <= budget, "{erased} bytes of erased subjects");
        assert!(!cache.erased.contains_key("bob"), "the oldest went first");
        cache.entries.insert("late".into(), late());
        assert!(cache.get("late").is_none());
        // Decisions made since are cached and answered.
        cache.insert(sample_row("since", Some("bob")));
        assert!(cache.get("since").is_some());
    }
}
