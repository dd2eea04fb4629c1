//! The decision record: every decision, with its model, subject pseudonym,
//! context, tier, provenance and score, and either its attributions or the
//! inputs needed to compute them later (encrypted at rest with AES-GCM).
//!
//! A provenance is stored once, content-addressed by its SHA-256: every row
//! of a batch, and every request of a subject under the same signals, share
//! it. Writes go through the database's writer thread in batches (group
//! commit). In `sync` durability a response waits for its batch; in `async`
//! it does not, and a crash loses at most the batches not yet committed
//! (see [`Durability`]). Reads back a decision for "why am I seeing this?"
//! go through the explanation cache first ([`cache`]).

pub mod cache;
pub mod crypto;
pub mod shadow;
pub mod stored;

use std::{collections::HashSet, sync::Arc};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::crypto::InputCipher;
#[cfg(test)]
use crate::store::now_ms;
use crate::{
    consent::policy::{Provenance, Tier},
    explain::DecisionAttribution,
    models::ModelIdentity,
    paging::{DecisionPosition, Position},
    store::StoreError,
};

pub(crate) const DDL: &str = "
CREATE TABLE IF NOT EXISTS decisions (
    seq             INTEGER PRIMARY KEY,
    decision_id     TEXT NOT NULL UNIQUE,
    decided_at      INTEGER NOT NULL,
    request_id      TEXT NOT NULL,
    model_name      TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    model_sha256    TEXT NOT NULL,
    subject_ref     TEXT,
    placement_id    TEXT NOT NULL,
    campaign_id     TEXT NOT NULL,
    ad_id           TEXT NOT NULL,
    tier            TEXT NOT NULL,
    score           REAL,
    provenance_sha256 TEXT NOT NULL,
    -- Binary (decisions::stored); JSON text in records written before it.
    explanation     BLOB,
    inputs          BLOB,
    explain_method  TEXT,
    retain_until    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS provenances (
    sha256          TEXT PRIMARY KEY,
    subject_ref     TEXT,
    json            TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS provenances_subject ON provenances(subject_ref);
DROP INDEX IF EXISTS decisions_subject;
-- A subject's decisions, found by subject. An index on decisions would take
-- each decision into the leaf page of its subject: a commit of a hundred
-- decisions for a hundred subjects rewrote a hundred pages. Instead a new
-- decision goes to the end of subject_tail, in the order decisions arrive,
-- and the writer moves the tail into subject_index in bulk, sorted, so that
-- a page takes all of its new entries in one write (merge_subject_tail).
-- A look-up by subject reads both. Anonymous decisions are in neither.
CREATE TABLE IF NOT EXISTS subject_index (
    subject_ref     TEXT NOT NULL,
    decided_at      INTEGER NOT NULL,
    decision_id     TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    retain_until    INTEGER NOT NULL,
    PRIMARY KEY (subject_ref, decided_at, decision_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subject_tail (
    seq             INTEGER PRIMARY KEY,
    subject_ref     TEXT NOT NULL,
    decided_at      INTEGER NOT NULL,
    decision_id     TEXT NOT NULL,
    retain_until    INTEGER NOT NULL
);
-- A decision's entry is made with it, by insert() (as a trigger it would
-- make every insert of a decision journal its pages against failing
-- half-way), and deleted with it by this trigger, however it goes (erasure,
-- retention).
CREATE TRIGGER IF NOT EXISTS decisions_subject_entry_gone AFTER DELETE ON decisions
WHEN OLD.subject_ref IS NOT NULL BEGIN
    DELETE FROM subject_tail WHERE seq = OLD.seq;
    DELETE FROM subject_index WHERE subject_ref = OLD.subject_ref
        AND decided_at = OLD.decided_at AND decision_id = OLD.decision_id;
END;
CREATE INDEX IF NOT EXISTS decisions_retention ON decisions(retain_until);
-- The sweeper takes owed attributions oldest first; this index hands them
-- over in that order instead of sorting the whole backlog on every pass.
DROP INDEX IF EXISTS decisions_pending;
CREATE INDEX IF NOT EXISTS decisions_owed ON decisions(decided_at) WHERE explain_method IS NOT NULL;
-- The retention configuration last applied to the decisions on record
-- (apply_retention), so that a start with the same one scans nothing.
CREATE TABLE IF NOT EXISTS retention_applied (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    config          TEXT NOT NULL
);
";

/// Whether `key` opens the newest sealed inputs on record (true when none
/// are): the proof that a database without the input key's check value was
/// written under it.
pub fn sealed_with(conn: &Connection, key: &[u8]) -> Result<bool, StoreError> {
    let newest: Option<(String, Vec<u8>)> = conn
        .query_row(
            "SELECT decision_id, inputs FROM decisions WHERE inputs IS NOT NULL
             ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(newest.is_none_or(|(id, sealed)| InputCipher::new(key).open_bytes(&id, &sealed).is_ok()))
}

/// When a scoring response may leave relative to its record's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The response waits until its decision's batch is committed and the
    /// WAL synced after it.
    Sync,
    /// The response does not wait. A crash of the process loses the
    /// decisions not yet committed: those queued, plus the batch being
    /// gathered, which waits for company for the commit window
    /// (`decisions.async_commit_window_ms`, 10 ms by default,
    /// [`crate::store::StoreSettings`]) and while the previous commit is
    /// synced, and holds at most 1024 requests. However far the writer
    /// falls behind, that is at most `decisions.async_max_uncommitted`
    /// decisions (10,000 by default): beyond it responses wait for their
    /// commit, as in `Sync`. An operating-system crash or power loss can
    /// also lose the commits whose fsync had not finished: one or two
    /// batches. At full load that is a few tens of milliseconds of
    /// decisions.
    Async,
    /// Nothing is recorded. For benchmarks that measure recording's cost.
    Off,
}

/// One feature's part in a stored explanation.
#[derive(get_size2::GetSize, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainedFeature {
    pub name: String,
    /// The value the model saw (its substitute when masked: `Rows::substitutes`).
    pub value: f64,
    pub contribution: f64,
    pub standard_error: f64,
    pub masked: bool,
}

#[derive(get_size2::GetSize, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainedGroup {
    pub name: String,
    pub contribution: f64,
    pub features: Vec<String>,
}

/// A decision's attributions as stored and cached.
#[derive(get_size2::GetSize, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub method: String,
    pub method_version: String,
    pub output_space: String,
    pub base_value: f64,
    pub margin: f64,
    pub base_score: f64,
    pub residual: f64,
    pub ort_difference: f64,
    /// Pairs the sampled estimator used; zero for exact methods.
    #[serde(default)]
    pub sample_pairs: usize,
    pub features: Vec<ExplainedFeature>,
    pub groups: Vec<ExplainedGroup>,
}

impl From<&DecisionAttribution> for Explanation {
    fn from(d: &DecisionAttribution) -> Self {
        let a = &d.attribution;
        Self {
            method: a.method.to_owned(),
            method_version: a.method_version.to_owned(),
            output_space: a.output_space.to_owned(),
            base_value: a.base_value,
            margin: a.margin,
            base_score: a.base_score,
            residual: a.residual,
            ort_difference: d.ort_difference,
            sample_pairs: a.sample_pairs,
            features: d
                .features
                .iter()
                .map(|f| ExplainedFeature {
                    name: f.name.clone(),
                    value: f64::from(f.value),
                    contribution: f.contribution,
                    standard_error: f.standard_error,
                    masked: f.masked,
                })
                .collect(),
            groups: d
                .groups
                .iter()
                .map(|g| ExplainedGroup {
                    name: g.name.clone(),
                    contribution: g.contribution,
                    features: g.features.clone(),
                })
                .collect(),
        }
    }
}

/// A decision as the record holds it.
#[derive(get_size2::GetSize, Debug, Clone, PartialEq)]
pub struct DecisionRow {
    pub decision_id: String,
    pub decided_at_ms: i64,
    pub request_id: Arc<str>,
    pub model_name: Arc<str>,
    pub model_version: Arc<str>,
    pub model_sha256: Arc<str>,
    pub subject_ref: Option<String>,
    pub placement_id: String,
    pub campaign_id: String,
    pub ad_id: String,
    pub tier: Tier,
    pub score: Option<f64>,
    pub provenance: Arc<Provenance>,
    pub explanation: Option<Explanation>,
    /// The row as scored, sealed with AES-GCM; `None` once attributions
    /// exist, and for refused decisions (no model ran).
    pub inputs: Option<Vec<u8>>,
    /// Set while deferred attributions are owed: the method to compute.
    pub explain_method: Option<String>,
    pub retain_until_ms: i64,
}

impl DecisionRow {
    /// The decision's place in the order pages list decisions in. The
    /// record keys decisions by their UUID; anything else is a corrupt row.
    pub fn position(&self) -> Result<Position, StoreError> {
        let id = uuid::Uuid::parse_str(&self.decision_id).map_err(|e| StoreError::Corrupt {
            record_id: self.decision_id.clone(),
            message: format!("the decision id is not a UUID: {e}"),
        })?;
        Ok(Position::Decision(DecisionPosition {
            decided_at_ms: self.decided_at_ms,
            id,
        }))
    }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

/// A decision on its way to the record: what its row stores and no more.
/// The writer thread frees what it is sent, and a block freed by a thread
/// other than the one that allocated it costs the allocator far more than a
/// local free; so the request's provenance (dozens of strings) stays with
/// the request, and the batch carries its stored form instead
/// (BENCHMARKS.md, "Session 18").
#[derive(Debug, Clone, PartialEq)]
pub struct NewDecision {
    pub decision_id: String,
    pub decided_at_ms: i64,
    pub model: ModelIdentity,
    pub placement_id: String,
    pub campaign_id: String,
    pub ad_id: String,
    pub tier: Tier,
    pub score: Option<f64>,
    pub explanation: Option<Explanation>,
    /// The row as scored, sealed; see [`DecisionRow::inputs`].
    pub inputs: Option<Vec<u8>>,
    pub explain_method: Option<&'static str>,
    pub retain_until_ms: i64,
}

/// The decisions of one request, which share one provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordBatch {
    pub provenance_sha256: Arc<str>,
    pub provenance_json: Arc<str>,
    pub subject_ref: Option<Arc<str>>,
    pub request_id: Arc<str>,
    pub rows: Vec<NewDecision>,
}

/// A provenance as last serialised on this thread, with its hash, JSON and
/// subject.
type Serialised = (Arc<Provenance>, Stored);
type Stored = (Arc<str>, Arc<str>, Option<Arc<str>>);

thread_local! {
    static LAST_SERIALISED: std::cell::RefCell<Option<Serialised>> =
        const { std::cell::RefCell::new(None) };
}

impl RecordBatch {
    /// Serialises the shared provenance once for all `rows`. Requests under
    /// the same signals follow one another (every anonymous request of a
    /// placement, a subject's page views), so a thread reuses the form it
    /// made last when the provenance is equal.
    pub fn new(provenance: &Arc<Provenance>, request_id: Arc<str>, rows: Vec<NewDecision>) -> Self {
        let (provenance_sha256, provenance_json, subject_ref) =
            LAST_SERIALISED.with_borrow_mut(|last| {
                if let Some((p, stored)) = last.as_ref()
                    && p == provenance
                {
                    return stored.clone();
                }
                let json: Arc<str> = json(&**provenance).into();
                let sha: Arc<str> = hex::encode(Sha256::digest(json.as_bytes())).into();
                let stored = (sha, json, provenance.subject_ref.as_deref().map(Arc::from));
                *last = Some((provenance.clone(), stored.clone()));
                stored
            });
        Self {
            provenance_sha256,
            provenance_json,
            subject_ref,
            request_id,
            rows,
        }
    }

    /// `d` as the record reads it back, made under `provenance`.
    pub fn read_back(&self, d: &NewDecision, provenance: Arc<Provenance>) -> DecisionRow {
        DecisionRow {
            decision_id: d.decision_id.clone(),
            decided_at_ms: d.decided_at_ms,
            request_id: self.request_id.clone(),
            model_name: d.model.name.clone(),
            model_version: d.model.version.clone(),
            model_sha256: d.model.sha256.clone(),
            subject_ref: self.subject_ref.as_deref().map(str::to_owned),
            placement_id: d.placement_id.clone(),
            campaign_id: d.campaign_id.clone(),
            ad_id: d.ad_id.clone(),
            tier: d.tier,
            score: d.score,
            provenance,
            explanation: d.explanation.clone(),
            inputs: d.inputs.clone(),
            explain_method: d.explain_method.map(str::to_owned),
            retain_until_ms: d.retain_until_ms,
        }
    }
}

/// The provenances the writer has stored, so that a decision made under
/// one already stored (every anonymous request under the same signals, a
/// subject's repeated requests) skips writing it again. Bounded; forgotten
/// whenever provenances may have been deleted or a write undone.
///
/// While the purge looks for provenances no decision cites (on a read
/// connection, off the writer), it also notes every provenance a decision
/// recorded meanwhile cites, so that none of those is taken as uncited.
#[derive(Default)]
pub(crate) struct StoredProvenances {
    stored: HashSet<Arc<str>>,
    cited: Option<HashSet<Arc<str>>>,
}

impl StoredProvenances {
    /// More than this many are forgotten at once: a bound, not a cache
    /// policy, since a workload's provenances repeat or they do not.
    const MOST: usize = 4096;

    pub(crate) fn forget(&mut self) {
        self.stored.clear();
    }

    /// Notes the provenances decisions cite from now on.
    pub(crate) fn track(&mut self) {
        self.cited = Some(HashSet::new());
    }

    pub(crate) fn untrack(&mut self) {
        self.cited = None;
    }
}

/// The provenances no decision cites: read on a read connection, so that
/// its scan of the record holds nobody up. The writer deletes them with
/// [`forget_provenances`], sparing any a decision cited since
/// [`StoredProvenances::track`] (begun before this read).
pub(crate) fn uncited_provenances(conn: &Connection) -> Result<Vec<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT sha256 FROM provenances
             WHERE sha256 NOT IN (SELECT provenance_sha256 FROM decisions)",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// Deletes the provenances of `shas` that no decision cited since the
/// tracking began; returns how many.
pub(crate) fn forget_provenances(
    conn: &Connection,
    shas: &[String],
    stored: &mut StoredProvenances,
) -> Result<u64, StoreError> {
    let mut delete = conn.prepare_cached("DELETE FROM provenances WHERE sha256 = ?1")?;
    let mut deleted = 0;
    for sha in shas {
        if stored
            .cited
            .as_ref()
            .is_some_and(|c| c.contains(sha.as_str()))
        {
            continue;
        }
        deleted += delete.execute([sha])? as u64;
    }
    stored.forget();
    Ok(deleted)
}

pub(crate) fn insert(
    conn: &Connection,
    batch: &RecordBatch,
    stored: &mut StoredProvenances,
    cipher: Option<&InputCipher>,
) -> Result<(), StoreError> {
    if batch.rows.is_empty() {
        return Ok(());
    }
    if let Some(cited) = stored.cited.as_mut() {
        cited.insert(batch.provenance_sha256.clone());
    }
    if !stored.stored.contains(&*batch.provenance_sha256) {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO provenances (sha256, subject_ref, json) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![
            &*batch.provenance_sha256,
            batch.subject_ref.as_deref(),
            &*batch.provenance_json
        ])?;
        if stored.stored.len() >= StoredProvenances::MOST {
            stored.forget();
        }
        stored.stored.insert(batch.provenance_sha256.clone());
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO decisions (decision_id, decided_at, request_id, model_name, model_version,
           model_sha256, subject_ref, placement_id, campaign_id, ad_id, tier, score,
           provenance_sha256, explanation, inputs, explain_method, retain_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?;
    let mut entry = batch
        .subject_ref
        .as_ref()
        .map(|_| {
            conn.prepare_cached(
                "INSERT INTO subject_tail (seq, subject_ref, decided_at, decision_id, retain_until)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
        })
        .transpose()?;
    for r in &batch.rows {
        stmt.execute(params![
            r.decision_id,
            r.decided_at_ms,
            &*batch.request_id,
            &*r.model.name,
            &*r.model.version,
            &*r.model.sha256,
            batch.subject_ref.as_deref(),
            r.placement_id,
            r.campaign_id,
            r.ad_id,
            r.tier.as_str(),
            r.score,
            &*batch.provenance_sha256,
            r.explanation
                .as_ref()
                .map(|e| Ok::<_, StoreError>(stored::seal(
                    &stored::encode(e),
                    &r.decision_id,
                    cipher.ok_or(StoreError::NoInputKey)?
                )))
                .transpose()?,
            r.inputs,
            r.explain_method,
            r.retain_until_ms,
        ])?;
        if let Some(entry) = &mut entry {
            entry.execute(params![
                conn.last_insert_rowid(),
                batch.subject_ref.as_deref(),
                r.decided_at_ms,
                r.decision_id,
                r.retain_until_ms,
            ])?;
        }
    }
    Ok(())
}

/// Stores a decision's attributions (in [`stored`] form) and erases its
/// inputs; false when the decision is gone (erased or purged meanwhile).
pub(crate) fn attach(
    conn: &Connection,
    id: &str,
    explanation: &[u8],
    cipher: Option<&InputCipher>,
) -> Result<bool, StoreError> {
    let sealed = stored::seal(explanation, id, cipher.ok_or(StoreError::NoInputKey)?);
    let n = conn
        .prepare_cached(
            "UPDATE decisions SET explanation = ?2, inputs = NULL, explain_method = NULL
             WHERE decision_id = ?1",
        )?
        .execute(params![id, sealed])?;
    Ok(n == 1)
}

/// Drops the deferred-attribution debt of decisions that can never be
/// attributed (their model is gone, or their inputs do not open). Their
/// sealed inputs stay until retention ends.
pub(crate) fn forgo(conn: &Connection, ids: &[String]) -> Result<(), StoreError> {
    let mut stmt =
        conn.prepare_cached("UPDATE decisions SET explain_method = NULL WHERE decision_id = ?1")?;
    for id in ids {
        stmt.execute([id])?;
    }
    Ok(())
}

/// The record's rows of one subject, by `seq`, from both parts of the
/// subject index.
const SUBJECT_SEQS: &str = "SELECT seq FROM subject_index WHERE subject_ref = ?1
    UNION ALL SELECT seq FROM subject_tail WHERE subject_ref = ?1";

/// A subject's decisions deleted per step of an erasure ([`erase_step`]).
pub(crate) const ERASED_AT_ONCE: usize = 2_000;

/// Deletes up to [`ERASED_AT_ONCE`] of the subject's decisions; returns
/// how many. An erasure runs these until one is short, then
/// [`erase_subject`] with the ledger's part.
pub(crate) fn erase_step(conn: &Connection, subject: &str) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached(&format!(
            "DELETE FROM decisions WHERE seq IN (SELECT seq FROM ({SUBJECT_SEQS}) LIMIT ?2)"
        ))?
        .execute(params![subject, ERASED_AT_ONCE as i64])?;
    Ok(n as u64)
}

pub(crate) fn erase_subject(conn: &Connection, subject: &str) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached(&format!(
            "DELETE FROM decisions WHERE seq IN ({SUBJECT_SEQS})"
        ))?
        .execute([subject])?;
    conn.prepare_cached("DELETE FROM provenances WHERE subject_ref = ?1")?
        .execute([subject])?;
    shadow::erase_subject(conn, subject)?;
    Ok(n as u64)
}

/// How long the subject tail grows before the writer merges it. A merge
/// costs about the same per entry at 4,096 entries as at 16,384, but holds
/// the writer (and the `sync` calls waiting for the next commit) a quarter
/// as long, and a look-up's scan of the tail stays short (BENCHMARKS.md,
/// "Session 20").
pub(crate) const SUBJECT_TAIL_ROWS: usize = 4_096;

/// Moves the subject tail into the subject index in one sorted insert, so
/// that each page of the index is written once however many entries it
/// takes. Run inside a transaction; returns how many entries moved.
pub(crate) fn merge_subject_tail(conn: &Connection) -> Result<usize, StoreError> {
    let moved = index_entries(conn, "subject_tail")?;
    conn.prepare_cached("DELETE FROM subject_tail")?
        .execute([])?;
    Ok(moved)
}

/// Puts the entries `source` gives into `subject_index` in its key's order,
/// so that each of its pages is written once; an entry already there stays
/// as it is.
fn index_entries(conn: &Connection, source: &str) -> Result<usize, StoreError> {
    let columns = "subject_ref, decided_at, decision_id, seq, retain_until";
    Ok(conn
        .prepare_cached(&format!(
            "INSERT OR IGNORE INTO subject_index ({columns})
             SELECT {columns} FROM {source} ORDER BY subject_ref, decided_at, decision_id"
        ))?
        .execute([])?)
}

/// How many entries the subject tail holds.
pub(crate) fn subject_tail_rows(conn: &Connection) -> Result<usize, StoreError> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM subject_tail", [], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Records written before the subject index kept a subject's decisions in
/// an index on `decisions`; their entries move to `subject_index` once, and
/// that index goes. (Entries already in the tail, made by this version
/// before a downgrade recreated the old index, stay where they are.)
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let old: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master
                        WHERE type = 'index' AND name = 'decisions_by_subject')",
        [],
        |r| r.get(0),
    )?;
    if !old {
        return Ok(());
    }
    let tx = conn.transaction()?;
    index_entries(
        &tx,
        "decisions WHERE subject_ref IS NOT NULL AND seq NOT IN (SELECT seq FROM subject_tail)",
    )?;
    tx.execute("DROP INDEX decisions_by_subject", [])?;
    tx.commit()?;
    Ok(())
}

/// Holds the decisions already on record to the retention configured now
/// (`default_days`, or a model's own in `per_model`): one whose kept-until
/// lies beyond its decision time plus that retention is brought forward
/// to it, with its index entries and shadow outputs, so that a shortened
/// retention applies to what was recorded before as well. A lengthened one
/// applies to new decisions only: each person was told the shorter. Runs
/// its scans only when the configuration differs from the last one
/// applied; returns how many decisions it shortened.
pub(crate) fn apply_retention(
    conn: &Connection,
    default_days: u32,
    per_model: &std::collections::BTreeMap<String, u32>,
) -> Result<u64, StoreError> {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let config =
        serde_json::json!({ "default_days": default_days, "model_days": per_model }).to_string();
    // Taken for writing at once: a read that later upgrades could meet the
    // writer's commits in between and fail.
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let applied: Option<String> = tx
        .query_row(
            "SELECT config FROM retention_applied WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if applied.as_deref() == Some(config.as_str()) {
        return Ok(0);
    }
    // Records made before retention was counted from the decision's time
    // kept it from the moment of recording, moments later: that is not a
    // longer retention.
    const RECORDED_AFTER_MS: i64 = 10 * 60 * 1000;
    let mut shortened = 0;
    for (model, days) in per_model {
        let ms = i64::from(*days) * DAY_MS;
        shortened += tx.execute(
            "UPDATE decisions SET retain_until = decided_at + ?1
             WHERE model_name = ?2 AND retain_until > decided_at + ?1 + ?3",
            params![ms, model, RECORDED_AFTER_MS],
        )?;
    }
    let models: Vec<&str> = per_model.keys().map(String::as_str).collect();
    shortened += tx.execute(
        "UPDATE decisions SET retain_until = decided_at + ?1
         WHERE retain_until > decided_at + ?1 + ?3
           AND model_name NOT IN (SELECT value FROM json_each(?2))",
        params![
            i64::from(default_days) * DAY_MS,
            serde_json::json!(models).to_string(),
            RECORDED_AFTER_MS
        ],
    )?;
    if shortened > 0 {
        tx.execute_batch(
            "UPDATE subject_index SET retain_until = d.retain_until FROM decisions d
             WHERE d.decision_id = subject_index.decision_id
               AND d.retain_until < subject_index.retain_until;
             UPDATE subject_tail SET retain_until = d.retain_until FROM decisions d
             WHERE d.seq = subject_tail.seq AND d.retain_until < subject_tail.retain_until;
             UPDATE shadow_outputs SET retain_until = d.retain_until FROM decisions d
             WHERE d.decision_id = shadow_outputs.decision_id
               AND d.retain_until < shadow_outputs.retain_until;",
        )?;
    }
    tx.execute(
        "INSERT INTO retention_applied (id, config) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET config = excluded.config",
        [&config],
    )?;
    tx.commit()?;
    Ok(shortened as u64)
}

/// Deletes decisions past their retention, then the provenances no decision
/// cites any more (one scan, on the purge schedule only).
/// Decisions (and shadow outputs) one purge step deletes: a step holds the
/// writer, and every call waiting for a commit, while it runs, and needs
/// room in the WAL for what it deletes, so a backlog of expired decisions
/// (after a stop, or a shortened retention) goes in steps of a few
/// milliseconds and a few MB of WAL (a disk with no room at all still
/// needs those few MB freed: the WAL holds commits that may grow the file).
pub(crate) const PURGED_AT_ONCE: usize = 2_000;

/// Deletes up to [`PURGED_AT_ONCE`] decisions past their retention at
/// `now_ms`, soonest expired first, and up to four times as many shadow
/// outputs (a decision may have several); returns how many decisions.
/// The provenances no decision cites any more go after the purge
/// ([`uncited_provenances`]).
pub(crate) fn purge(conn: &Connection, now_ms: i64) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached(
            "DELETE FROM decisions WHERE seq IN
             (SELECT seq FROM decisions WHERE retain_until < ?1 ORDER BY retain_until LIMIT ?2)",
        )?
        .execute(params![now_ms, PURGED_AT_ONCE as i64])?;
    shadow::purge(conn, now_ms, 4 * PURGED_AT_ONCE)?;
    Ok(n as u64)
}

const COLUMNS: &str = "d.decision_id, d.decided_at, d.request_id, d.model_name, d.model_version,
    d.model_sha256, d.subject_ref, d.placement_id, d.campaign_id, d.ad_id, d.tier, d.score, p.json,
    d.explanation, d.inputs, d.explain_method, d.retain_until";
const FROM: &str = "decisions d JOIN provenances p ON p.sha256 = d.provenance_sha256";

fn row(
    r: &rusqlite::Row<'_>,
    cipher: &InputCipher,
) -> rusqlite::Result<Result<DecisionRow, StoreError>> {
    let decision_id: String = r.get(0)?;
    let provenance: String = r.get(12)?;
    let explanation = stored::read(r.get_ref(13)?, &decision_id, cipher);
    let parsed = serde_json::from_str::<Provenance>(&provenance)
        .map_err(|e| e.to_string())
        .and_then(|p| Ok((p, explanation?)));
    let (provenance, explanation) = match parsed {
        Ok(v) => v,
        Err(message) => {
            return Ok(Err(StoreError::Corrupt {
                record_id: decision_id,
                message,
            }));
        }
    };
    Ok(Ok(DecisionRow {
        decision_id,
        decided_at_ms: r.get(1)?,
        request_id: r.get(2)?,
        model_name: r.get(3)?,
        model_version: r.get(4)?,
        model_sha256: r.get(5)?,
        subject_ref: r.get(6)?,
        placement_id: r.get(7)?,
        campaign_id: r.get(8)?,
        ad_id: r.get(9)?,
        tier: provenance.tier,
        score: r.get(11)?,
        provenance: Arc::new(provenance),
        explanation,
        inputs: r.get(14)?,
        explain_method: r.get(15)?,
        retain_until_ms: r.get(16)?,
    }))
}

/// A decision the record still holds at `now_ms`: one past its retention is
/// gone, whether or not the scheduled purge has deleted it yet.
pub fn get(
    conn: &Connection,
    id: &str,
    now_ms: i64,
    cipher: &InputCipher,
) -> Result<Option<DecisionRow>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM {FROM} WHERE d.decision_id = ?1 AND d.retain_until >= ?2"
    ))?
    .query_row(params![id, now_ms], |r| row(r, cipher))
    .optional()?
    .transpose()
}

/// A subject's decisions older than a position, newest first, with ties in
/// time broken by id, from either part of the subject index. The first
/// condition on `decided_at` alone lets `subject_index` seek to the
/// position instead of scanning to it; both parts give their entries in the
/// page's order and are merged, so only the page's entries are read, and
/// only the page's rows from `decisions`.
fn list_sql() -> String {
    let window = "subject_ref = ?1 AND retain_until >= ?3
        AND decided_at <= ?4 AND (decided_at < ?4 OR decision_id < ?5)";
    let entries =
        |table: &str| format!("SELECT seq, decided_at, decision_id FROM {table} WHERE {window}");
    format!(
        "WITH page AS ({} UNION ALL {} ORDER BY decided_at DESC, decision_id DESC LIMIT ?2)
         SELECT {COLUMNS} FROM page CROSS JOIN {FROM} WHERE d.seq = page.seq
         ORDER BY d.decided_at DESC, d.decision_id DESC",
        entries("subject_index"),
        entries("subject_tail"),
    )
}

/// Up to `limit` of the subject's decisions that the record still holds at
/// `now_ms`, newest first, starting after `after`
/// ([`DecisionPosition::NEWEST`] for the newest).
pub fn list(
    conn: &Connection,
    subject: &str,
    after: DecisionPosition,
    limit: usize,
    now_ms: i64,
    cipher: &InputCipher,
) -> Result<Vec<DecisionRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&list_sql())?;
    let rows = stmt.query_map(
        params![
            subject,
            limit as i64,
            now_ms,
            after.decided_at_ms,
            after.id.hyphenated().to_string()
        ],
        |r| row(r, cipher),
    )?;
    rows.map(|r| r?).collect()
}

/// Decisions still owed deferred attributions, oldest first.
pub fn pending(
    conn: &Connection,
    limit: usize,
    cipher: &InputCipher,
) -> Result<Vec<DecisionRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM {FROM} WHERE d.explain_method IS NOT NULL
         ORDER BY d.decided_at LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit as i64], |r| row(r, cipher))?;
    rows.map(|r| r?).collect()
}

/// A contextual decision `id` of `subject`, without attributions, and the
/// batch that records it.
#[cfg(test)]
pub(crate) fn sample_batch(id: &str, subject: Option<&str>) -> RecordBatch {
    let row = NewDecision {
        decision_id: id.into(),
        decided_at_ms: now_ms(),
        model: ModelIdentity {
            name: "m".into(),
            version: "1.0.0".into(),
            sha256: "sha".into(),
        },
        placement_id: String::new(),
        campaign_id: String::new(),
        ad_id: String::new(),
        tier: Tier::Contextual,
        score: Some(0.2),
        explanation: None,
        inputs: None,
        explain_method: None,
        retain_until_ms: i64::MAX,
    };
    RecordBatch::new(&sample_provenance(subject), "r".into(), vec![row])
}

/// [`sample_batch`]'s decision as the record reads it back.
#[cfg(test)]
pub(crate) fn sample_row(id: &str, subject: Option<&str>) -> DecisionRow {
    let batch = sample_batch(id, subject);
    batch.read_back(&batch.rows[0], sample_provenance(subject))
}

/// The provenance of [`sample_batch`]'s decisions, a new one each call.
#[cfg(test)]
fn sample_provenance(subject: Option<&str>) -> Arc<Provenance> {
    Arc::new(Provenance {
        jurisdiction: "US".into(),
        regime: crate::consent::policy::Regime::Us,
        tier: Tier::Contextual,
        purposes: vec![],
        rules: vec![],
        masked_features: vec![],
        ledger_records: vec![],
        signals_hash: String::new(),
        policy_version: "1".into(),
        policy_hash: String::new(),
        model_sha256: "sha".into(),
        subject_ref: subject.map(str::to_owned),
        tc_last_updated_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Records written before the binary form hold JSON text; both read
    /// back as the same explanation.
    #[test]
    fn explanations_read_back_from_either_stored_form() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(DDL).unwrap();
        let feature = |name: &str, contribution| ExplainedFeature {
            name: name.into(),
            value: 1.0,
            contribution,
            standard_error: 0.0,
            masked: false,
        };
        let explanation = Explanation {
            method: "tree_shap_path_dependent".into(),
            method_version: "1".into(),
            output_space: "log_odds".into(),
            base_value: -2.0,
            margin: -1.5,
            base_score: 0.12,
            residual: 0.0,
            ort_difference: 0.0,
            sample_pairs: 0,
            features: vec![feature("a", 0.25), feature("b", 0.25)],
            groups: vec![ExplainedGroup {
                name: "ab".into(),
                contribution: 0.5,
                features: vec!["a".into(), "b".into()],
            }],
        };
        let mut batch = sample_batch("d", None);
        batch.rows[0].explanation = Some(explanation.clone());
        insert(
            &conn,
            &batch,
            &mut StoredProvenances::default(),
            Some(&crypto::test_cipher()),
        )
        .unwrap();
        let read = || {
            get(&conn, "d", 0, &crypto::test_cipher())
                .unwrap()
                .unwrap()
                .explanation
                .unwrap()
        };
        assert_eq!(read(), explanation);
        conn.execute(
            "UPDATE decisions SET explanation = ?1",
            [json(&explanation)],
        )
        .unwrap();
        assert_eq!(read(), explanation);
        conn.execute("UPDATE decisions SET explanation = x'00ff'", [])
            .unwrap();
        assert!(matches!(
            get(&conn, "d", 0, &crypto::test_cipher()),
            Err(StoreError::Corrupt { .. })
        ));
    }

    /// A thread reuses the stored form of an equal provenance it made last,
    /// and never that of a different one.
    #[test]
    fn equal_provenances_share_one_stored_form() {
        let fresh = |subject: &str| {
            let json = json(&*sample_provenance(Some(subject)));
            let sha = hex::encode(Sha256::digest(json.as_bytes()));
            (sha, json)
        };
        let a = sample_batch("a", Some("s"));
        let b = sample_batch("b", Some("s"));
        assert!(Arc::ptr_eq(&a.provenance_json, &b.provenance_json));
        let c = sample_batch("c", Some("t"));
        assert_ne!(a.provenance_sha256, c.provenance_sha256);
        assert_eq!(c.subject_ref.as_deref(), Some("t"));
        for (subject, batch) in [
            ("s", &a),
            ("s", &b),
            ("t", &c),
            ("s", &sample_batch("d", Some("s"))),
        ] {
            let (sha, json) = fresh(subject);
            assert_eq!(
                (&*batch.provenance_sha256, &*batch.provenance_json),
                (&*sha, &*json)
            );
        }
    }

    /// Paging by position lists every decision once, newest first, ties in
    /// time by id, however the pages fall, and a decision recorded between
    /// two pages neither repeats nor hides one; and so wherever the
    /// decisions are between the subject index and its tail, a merge
    /// between two pages included.
    #[test]
    fn pages_of_decisions_neither_repeat_nor_skip_one() {
        // Three share a millisecond; ids are inserted out of their order.
        let made = [(5, 10), (3, 20), (9, 20), (4, 20), (1, 30)];
        for merged in 0..=made.len() {
            let conn = Connection::open_in_memory().unwrap();
            conn.execute_batch(DDL).unwrap();
            let mut stored = StoredProvenances::default();
            let record = |n: u128, at: i64, subject: &str, stored: &mut StoredProvenances| {
                let id = uuid::Uuid::from_u128(n).hyphenated().to_string();
                let mut batch = sample_batch(&id, Some(subject));
                batch.rows[0].decided_at_ms = at;
                insert(&conn, &batch, stored, Some(&crypto::test_cipher())).unwrap();
                id
            };
            let (older, newer) = made.split_at(merged);
            let mut expected = Vec::new();
            for (n, at) in older {
                expected.push((*at, record(*n, *at, "s", &mut stored)));
            }
            record(7, 25, "another", &mut StoredProvenances::default());
            merge_subject_tail(&conn).unwrap();
            for (n, at) in newer {
                expected.push((*at, record(*n, *at, "s", &mut stored)));
            }
            expected.sort_by(|a, b| b.cmp(a));
            let ids = |rows: &[DecisionRow]| -> Vec<String> {
                rows.iter().map(|r| r.decision_id.clone()).collect()
            };
            let all = list(
                &conn,
                "s",
                DecisionPosition::NEWEST,
                100,
                0,
                &crypto::test_cipher(),
            )
            .unwrap();
            let want: Vec<String> = expected.iter().map(|(_, id)| id.clone()).collect();
            assert_eq!(ids(&all), want, "{merged} merged");
            for size in 1..=5 {
                let (mut seen, mut after) = (Vec::new(), DecisionPosition::NEWEST);
                loop {
                    let page = list(&conn, "s", after, size, 0, &crypto::test_cipher()).unwrap();
                    let Some(last) = page.last() else { break };
                    after = last.position().unwrap().decision().unwrap();
                    if seen.is_empty() {
                        // Recorded after the first page, so newer than
                        // every page still to come.
                        record(8, 50, "s", &mut stored);
                    } else if size % 2 == 1 {
                        merge_subject_tail(&conn).unwrap();
                    }
                    seen.extend(ids(&page));
                }
                assert_eq!(seen, want, "pages of {size}, {merged} merged");
                conn.execute("DELETE FROM decisions WHERE decided_at = 50", [])
                    .unwrap();
            }
            assert_eq!(
                entry_count(&conn),
                made.len() as i64 + 1,
                "one entry per decision of a subject"
            );
        }
    }

    /// Erasure and the retention purge delete a decision's entry in the
    /// subject index with it, wherever the entry is; anonymous decisions
    /// have none.
    #[test]
    fn entries_go_with_their_decisions() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(DDL).unwrap();
        conn.execute_batch(shadow::DDL).unwrap();
        let mut stored = StoredProvenances::default();
        let mut record = |id: &str, subject: Option<&str>, retain_until_ms: i64| {
            let mut batch = sample_batch(id, subject);
            batch.rows[0].retain_until_ms = retain_until_ms;
            insert(&conn, &batch, &mut stored, Some(&crypto::test_cipher())).unwrap();
        };
        record("s-merged", Some("s"), 100);
        record("t-merged", Some("t"), 100);
        record("t-kept", Some("t"), i64::MAX);
        merge_subject_tail(&conn).unwrap();
        record("s-tail", Some("s"), i64::MAX);
        record("t-tail", Some("t"), 100);
        record("anonymous", None, i64::MAX);
        let entries = |subject: &str| -> Vec<String> {
            let mut stmt = conn
                .prepare(
                    "SELECT decision_id FROM subject_index WHERE subject_ref = ?1
                     UNION ALL SELECT decision_id FROM subject_tail WHERE subject_ref = ?1
                     ORDER BY 1",
                )
                .unwrap();
            let ids = stmt.query_map([subject], |r| r.get(0)).unwrap();
            ids.map(Result::unwrap).collect()
        };
        assert_eq!(entries("s"), ["s-merged", "s-tail"]);
        assert_eq!(erase_subject(&conn, "s").unwrap(), 2);
        assert!(entries("s").is_empty());
        assert_eq!(purge(&conn, 101).unwrap(), 2);
        assert_eq!(entries("t"), ["t-kept"]);
        assert_eq!(entry_count(&conn), 1, "the anonymous decision has no entry");
    }

    /// Entries in both parts of the subject index.
    /// A retention shortened in the configuration reaches the decisions
    /// already recorded, and their index entries; a lengthened one does
    /// not; the same configuration twice scans once.
    #[test]
    fn a_shortened_retention_reaches_decisions_already_recorded() {
        const DAY: i64 = 24 * 3600 * 1000;
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(DDL).unwrap();
        conn.execute_batch(shadow::DDL).unwrap();
        let mut stored = StoredProvenances::default();
        for (id, model, subject) in [
            ("a", "m", Some("s")),
            ("b", "other", Some("s")),
            ("c", "m", None),
        ] {
            let mut batch = sample_batch(id, subject);
            batch.rows[0].model.name = model.into();
            // Recorded a moment after the decision, as before retention
            // was counted from the decision's time.
            batch.rows[0].retain_until_ms = batch.rows[0].decided_at_ms + 90 * DAY + 5;
            insert(&conn, &batch, &mut stored, Some(&crypto::test_cipher())).unwrap();
        }
        // Each decision's own time: the samples are made moments apart.
        let kept = |table: &str, id: &str| -> i64 {
            conn.query_row(
                &format!("SELECT retain_until - decided_at FROM {table} WHERE decision_id = ?1"),
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        // The same retention as recorded: nothing is shortened.
        assert_eq!(apply_retention(&conn, 90, &Default::default()).unwrap(), 0);
        let per_model = std::collections::BTreeMap::from([("m".to_owned(), 1)]);
        assert_eq!(apply_retention(&conn, 30, &per_model).unwrap(), 3);
        assert_eq!(kept("decisions", "a"), DAY);
        assert_eq!(kept("decisions", "c"), DAY);
        assert_eq!(kept("decisions", "b"), 30 * DAY);
        assert_eq!(kept("subject_tail", "a"), DAY);
        assert_eq!(kept("subject_tail", "b"), 30 * DAY);
        assert_eq!(apply_retention(&conn, 30, &per_model).unwrap(), 0);
        // Longer again: the person was told the shorter, which stands.
        assert_eq!(apply_retention(&conn, 90, &Default::default()).unwrap(), 0);
        assert_eq!(kept("decisions", "a"), DAY);
        assert_eq!(kept("decisions", "b"), 30 * DAY);
    }

    fn entry_count(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT (SELECT COUNT(*) FROM subject_index) + (SELECT COUNT(*) FROM subject_tail)",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// What the subject index is asked to do, in any order.
    #[derive(Debug, Clone)]
    enum Op {
        Record { subject: u8, at: i64, kept: bool },
        Merge,
        Erase(u8),
        Purge,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3u8, 0..8i64, any::<bool>())
                .prop_map(|(subject, at, kept)| Op::Record { subject, at, kept }),
            1 => Just(Op::Merge),
            1 => (0..3u8).prop_map(Op::Erase),
            1 => Just(Op::Purge),
        ]
    }

    proptest! {
        /// Whatever was recorded, merged, erased and purged, and in
        /// whatever order, each subject's pages list exactly the decisions
        /// it still has, newest first, and only they have entries.
        #[test]
        fn the_subject_index_lists_what_the_record_holds(ops in proptest::collection::vec(op(), 1..40)) {
            let conn = Connection::open_in_memory().unwrap();
            conn.execute_batch(DDL).unwrap();
            conn.execute_batch(shadow::DDL).unwrap();
            let mut stored = StoredProvenances::default();
            // (decided_at, id, subject, kept past the purge)
            let mut held: Vec<(i64, String, u8, bool)> = Vec::new();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Record { subject, at, kept } => {
                        // Distinct ids, in another order than the
                        // decisions': ties in time are broken by id.
                        let id = uuid::Uuid::from_u128(n as u128 * 7 % 64).hyphenated().to_string();
                        let mut batch = sample_batch(&id, Some(&subject.to_string()));
                        batch.rows[0].decided_at_ms = at;
                        batch.rows[0].retain_until_ms = if kept { i64::MAX } else { 100 };
                        insert(&conn, &batch, &mut stored, Some(&crypto::test_cipher())).unwrap();
                        held.push((at, id, subject, kept));
                    }
                    Op::Merge => {
                        merge_subject_tail(&conn).unwrap();
                    }
                    Op::Erase(subject) => {
                        erase_subject(&conn, &subject.to_string()).unwrap();
                        stored.forget();
                        held.retain(|h| h.2 != subject);
                    }
                    Op::Purge => {
                        purge(&conn, 101).unwrap();
                        stored.forget();
                        held.retain(|h| h.3);
                    }
                }
            }
            prop_assert_eq!(entry_count(&conn), held.len() as i64);
            for subject in 0..3u8 {
                let mut want: Vec<(i64, String)> = held
                    .iter()
                    .filter(|h| h.2 == subject)
                    .map(|h| (h.0, h.1.clone()))
                    .collect();
                want.sort_by(|a, b| b.cmp(a));
                let (mut seen, mut after) = (Vec::new(), DecisionPosition::NEWEST);
                loop {
                    let page = list(&conn, &subject.to_string(), after, 2, 0, &crypto::test_cipher()).unwrap();
                    let Some(last) = page.last() else { break };
                    after = last.position().unwrap().decision().unwrap();
                    seen.extend(page.into_iter().map(|r| (r.decided_at_ms, r.decision_id)));
                }
                prop_assert_eq!(seen, want, "subject {}", subject);
            }
        }
    }

    /// A record made before the subject index finds its subjects' decisions
    /// after the migration, which drops the old index.
    #[test]
    fn records_from_before_the_subject_index_are_migrated() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(DDL).unwrap();
        let mut stored = StoredProvenances::default();
        for (id, subject) in [
            ("a", Some("s")),
            ("b", Some("t")),
            ("c", None),
            ("d", Some("s")),
        ] {
            insert(
                &conn,
                &sample_batch(id, subject),
                &mut stored,
                Some(&crypto::test_cipher()),
            )
            .unwrap();
        }
        // As the record was: no entries, and an index on `decisions`.
        conn.execute_batch(
            "DELETE FROM subject_tail;
             CREATE INDEX decisions_by_subject ON decisions(subject_ref, decided_at)
                 WHERE subject_ref IS NOT NULL;",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let listed = |subject| -> Vec<String> {
            let rows = list(
                &conn,
                subject,
                DecisionPosition::NEWEST,
                10,
                0,
                &crypto::test_cipher(),
            )
            .unwrap();
            let mut ids: Vec<String> = rows.into_iter().map(|r| r.decision_id).collect();
            ids.sort();
            ids
        };
        assert_eq!(listed("s"), ["a", "d"]);
        assert_eq!(listed("t"), ["b"]);
        let old: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'decisions_by_subject'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0);
    }

    /// Look-ups by subject seek in the subject index and read the short
    /// tail, and reach the record's rows by `seq`: neither scans the record.
    #[test]
    fn look_ups_by_subject_use_the_subject_index() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(DDL).unwrap();
        let plan = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let details = stmt.query_map(params, |r| r.get::<_, String>(3)).unwrap();
            details.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let list = plan(&list_sql(), &[&"s", &10, &0, &1, &"id"]);
        let erase = plan(
            &format!("DELETE FROM decisions WHERE seq IN ({SUBJECT_SEQS})"),
            &[&"s"],
        );
        for plan in [&list, &erase] {
            assert!(
                plan.contains("SEARCH subject_index USING PRIMARY KEY (subject_ref=?"),
                "{plan}"
            );
            assert!(
                !plan.contains("SCAN d") && !plan.contains("SCAN decisions"),
                "{plan}"
            );
        }
        let by_seq = "USING INTEGER PRIMARY KEY (rowid=?)";
        assert!(list.contains(&format!("SEARCH d {by_seq}")), "{list}");
        assert!(
            erase.contains(&format!("SEARCH decisions {by_seq}")),
            "{erase}"
        );
        // A later page seeks to its position rather than reading the
        // entries before it, and the two parts are merged in the page's
        // order, so that the page stops at its last entry.
        assert!(list.contains("(subject_ref=? AND decided_at<?)"), "{list}");
        assert!(list.contains("MERGE (UNION ALL)"), "{list}");
    }
}
