//! Recording decisions and reading them back: the decision record, the
//! explanation cache in front of it, deferred attributions, retention.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::sync::oneshot;

use super::{
    Decision, ExplanationStatus, Gateway, Placement,
    attribute::{Recorded, Urgency},
};
use crate::{
    consent::ledger::{self, StoredRecord},
    decisions::{self, DecisionRow, Durability, Explanation, NewDecision, RecordBatch},
    error::Error,
    explain::{Method, pool::PoolError},
    models::{ModelPackage, ModelSelector, VersionRef},
    paging::{
        Budget, DecisionPosition, MAX_TOKEN_LEN, Page, PageRequest, PageTokens, Position, Scope,
    },
    store::{Job, StoreError, now_ms},
    why::Language,
};

/// Where an explanation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Cache,
    Record,
    Computed,
}

impl Served {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::Record => "record",
            Self::Computed => "computed",
        }
    }
}

/// How many owed attributions the sweeper takes at once.
const SWEEP_BATCH: usize = 256;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// A decision id as the record keys it: the canonical (lowercase,
/// hyphenated) form of any UUID spelling a caller may send, since UUIDs
/// compare case-insensitively (RFC 9562) and ids are copied by hand.
pub fn decision_id(id: &str) -> Result<String, Error> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| {
            Error::InvalidArgument(format!("decision_id: {id:?} is not a decision id (a UUID)"))
        })
}

impl Gateway {
    pub fn cache(&self) -> &crate::decisions::cache::ExplanationCache {
        &self.cache
    }

    pub(super) fn retain_until(&self, model: &str, now: i64) -> i64 {
        let d = &self.config.decisions;
        let days = d
            .model_retention_days
            .get(model)
            .copied()
            .unwrap_or(d.retention_days);
        now + i64::from(days) * DAY_MS
    }

    /// How long the signals behind decisions are kept as evidence in the
    /// consent ledger: as long as the longest-kept decision that can cite
    /// them, which cites evidence recorded at most the ledger's evidence
    /// lifetime (12 hours) before it; a day more covers that.
    fn evidence_kept_ms(&self) -> i64 {
        let d = &self.config.decisions;
        let days = d
            .model_retention_days
            .values()
            .copied()
            .chain([d.retention_days])
            .max()
            .unwrap_or(d.retention_days);
        (i64::from(days) + 1) * DAY_MS
    }

    /// Empties the evidence no decision still kept can cite (its signals,
    /// the person's age status and pseudonym), then deletes the staff reads
    /// past `access.staff_read_retention_days`, a batch per transaction.
    async fn expire_evidence_and_reads(&self) {
        let before = now_ms() - self.evidence_kept_ms();
        match self
            .expire_in_batches(
                "evidence",
                |tx| Job::ExpireEvidence(before, tx),
                ledger::EXPIRED_AT_ONCE,
            )
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                records = n,
                "emptied consent evidence no decision still kept can cite"
            ),
            Err(e) => tracing::warn!(error = %e, "emptying expired consent evidence failed"),
        }
        let days = self.config.access.staff_read_retention_days;
        let before = now_ms() - i64::from(days) * DAY_MS;
        match self
            .expire_in_batches(
                "staff_reads",
                |tx| Job::ExpireStaffReads(before, tx),
                crate::access::audit::EXPIRED_AT_ONCE,
            )
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                reads = n,
                "deleted staff reads past access.staff_read_retention_days"
            ),
            Err(e) => tracing::warn!(error = %e, "deleting expired staff reads failed"),
        }
    }

    /// Deletes the provenances no decision cites any more (those of purged
    /// decisions). The scan of the record for them runs on a read
    /// connection, so it holds up no commit (it took the writer 0.4 s on
    /// 600,000 decisions); the writer notes what decisions cite meanwhile,
    /// and spares those.
    async fn forget_uncited_provenances(&self) -> Result<u64, StoreError> {
        self.store.submit(Job::TrackProvenances).await?;
        let store = self.store.clone();
        let uncited =
            tokio::task::spawn_blocking(move || store.read(decisions::uncited_provenances))
                .await
                .map_err(|e| {
                    StoreError::Sqlite(format!("the scan for uncited provenances panicked: {e}"))
                })
                .and_then(|r| r);
        let forgotten = match uncited {
            Ok(uncited) => self.forget_provenances(uncited).await,
            Err(e) => Err(e),
        };
        if forgotten.is_err() {
            // Ends the tracking: the set of what decisions cite would grow
            // until the next purge.
            let _ = self
                .store
                .submit(|tx| Job::ForgetProvenances(Vec::new(), true, tx))
                .await;
        }
        forgotten
    }

    /// [`Self::forget_uncited_provenances`]'s deletion, in steps.
    async fn forget_provenances(&self, uncited: Vec<String>) -> Result<u64, StoreError> {
        let mut chunks: Vec<Vec<String>> = uncited
            .chunks(decisions::PURGED_AT_ONCE)
            .map(<[String]>::to_vec)
            .collect();
        if chunks.is_empty() {
            // One empty step still ends the tracking.
            chunks.push(Vec::new());
        }
        let steps = chunks.len();
        let mut forgotten = 0;
        for (i, shas) in chunks.into_iter().enumerate() {
            let last = i + 1 == steps;
            forgotten += self
                .store
                .submit(|tx| Job::ForgetProvenances(shas, last, tx))
                .await?;
        }
        Ok(forgotten)
    }

    /// Submits `job` until one step removes fewer than `at_once` records, so
    /// that other work is committed between steps; returns how many it
    /// removed in all, or the error that stopped it.
    async fn expire_in_batches(
        &self,
        kind: &'static str,
        job: impl Fn(oneshot::Sender<Result<u64, StoreError>>) -> Job,
        at_once: usize,
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let step = self.store.submit(&job).await;
            self.metrics.retention(kind, step.as_ref().ok().copied());
            let n = step?;
            removed += n;
            if n < at_once as u64 {
                return Ok(removed);
            }
        }
    }

    /// Writes the decisions to the record: with their attributions when
    /// computed inline, else with the rows as scored, sealed; each where its
    /// ad was placed (`placements`, one per decision).
    pub(super) async fn record(
        &self,
        package: &ModelPackage,
        decisions: &[Decision],
        rows: Option<&[f32]>,
        placements: &[Placement],
        request_id: &str,
        deferred: Option<Method>,
    ) -> Result<(), Error> {
        let durability = self.config.decisions.durability;
        if durability == Durability::Off {
            return Ok(());
        }
        let width = package.schema.width();
        // Counted from the decision's time, as the export and the purge
        // read it.
        let retain_until_ms = self.retain_until(
            package.name(),
            decisions
                .first()
                .map_or_else(now_ms, Decision::decided_at_ms),
        );
        let records: Vec<NewDecision> = decisions
            .iter()
            .enumerate()
            .zip(placements)
            .map(|((i, d), placement)| {
                let id = d.id.to_string();
                let explanation = d.attribution.as_ref().map(Explanation::from);
                let inputs = match (&explanation, rows) {
                    (None, Some(rows)) => {
                        Some(self.cipher.seal(&id, &rows[i * width..(i + 1) * width]))
                    }
                    _ => None,
                };
                NewDecision {
                    decision_id: id,
                    decided_at_ms: d.decided_at_ms(),
                    model: d.model.clone(),
                    placement_id: placement.placement_id.clone(),
                    campaign_id: placement.campaign_id.clone(),
                    ad_id: placement.ad_id.clone(),
                    tier: d.provenance.tier,
                    score: d.score,
                    explanation,
                    explain_method: deferred
                        .filter(|_| d.explanation_status == ExplanationStatus::Deferred)
                        .map(Method::as_str),
                    inputs,
                    retain_until_ms,
                }
            })
            .collect();
        let Some(first) = decisions.first() else {
            return Ok(());
        };
        let batch = Arc::new(RecordBatch::new(
            &first.provenance,
            request_id.into(),
            records,
        ));
        for (d, r) in decisions.iter().zip(&batch.rows) {
            if r.explanation.is_some() {
                self.cache.insert(batch.read_back(r, d.provenance.clone()));
            }
        }
        let has_deferred = batch.rows.iter().any(|r| r.explain_method.is_some());
        // While commits fail, `async` waits too: nothing is acknowledged
        // that is not on disk, and the retry queue stays bounded. So it
        // does while the writer is behind by the bound of what a crash may
        // lose (`decisions.async_max_uncommitted`).
        let waits = durability == Durability::Sync || self.store.is_failing();
        if waits || !self.store.send_unwaited(&batch)? {
            self.store.submit(|tx| Job::Record(batch, Some(tx))).await?;
        } else {
            let judged_at = first.decided_at_ms();
            // Checked once the record is queued: an erasure that began
            // since then has its subject fenced off, and the writer refuses
            // the record; one that has not yet begun will erase it. Either
            // way the caller is told as `sync` would tell it.
            let erasures = self.store.erasures();
            if batch
                .subject_ref
                .as_deref()
                .is_some_and(|s| erasures.begun_before(s, judged_at))
            {
                return Err(StoreError::Erased.into());
            }
        }
        if has_deferred {
            self.deferred.notify_one();
        }
        Ok(())
    }

    /// Starts the background work: computing deferred attributions and
    /// purging decisions past their retention. Holds the gateway weakly, so
    /// it ends when the gateway does.
    pub(super) fn spawn_maintenance(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(sweep_deferred(weak.clone()));
        let shadow_jobs = self
            .shadow_jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(jobs) = shadow_jobs {
            tokio::spawn(super::shadow::run(weak.clone(), jobs));
        }
        tokio::spawn(purge(
            weak,
            Duration::from_secs(self.config.decisions.purge_interval_secs),
        ));
    }

    /// A recorded decision with its attributions: from the cache, else the
    /// record, else computed from the record's sealed inputs. `authorize`
    /// sees the decision before anything is computed for it.
    pub async fn explanation(
        &self,
        id: &str,
        authorize: impl Fn(&DecisionRow) -> Result<(), Error>,
    ) -> Result<(Arc<DecisionRow>, Served), Error> {
        let canonical = decision_id(id)?;
        let id = canonical.as_str();
        if let Some(row) = self.cache.get(id) {
            authorize(&row)?;
            return Ok((row, Served::Cache));
        }
        let read = || {
            let (store, cipher) = (self.store.clone(), self.cipher.clone());
            let key = id.to_owned();
            async move {
                tokio::task::spawn_blocking(move || {
                    store.read(|c| decisions::get(c, &key, now_ms(), &cipher))
                })
                .await
                .map_err(|e| Error::Internal(format!("record read panicked: {e}")))?
                .map_err(Error::from)
            }
        };
        let mut row = read().await?;
        // In `async` durability a decision is answered before its commit:
        // asked for at once, it may not be in the record yet. Once what
        // was acknowledged before this read is committed, it is, or it
        // never was.
        if row.is_none() && self.store.acknowledged_uncommitted() {
            self.store.committed().await?;
            row = read().await?;
        }
        let row = row.ok_or_else(|| Error::UnknownDecision(id.to_owned()))?;
        authorize(&row)?;
        if row.explanation.is_some() || row.inputs.is_none() {
            self.cache.count_record_read();
            return Ok((self.cache.insert(row), Served::Record));
        }
        let computing = self
            .computing
            .get_with_by_ref(id, async { Arc::default() })
            .await;
        let _one_at_a_time = computing.lock().await;
        if let Some(cached) = self.cache.get(id) {
            return Ok((cached, Served::Cache));
        }
        let row = self.compute_explanation(row).await?;
        self.cache.count_computed();
        Ok((self.cache.insert(row), Served::Computed))
    }

    /// The exact package that made a recorded decision, if it still runs.
    pub fn package_of(&self, row: &DecisionRow) -> Result<Arc<ModelPackage>, Error> {
        let version = row.model_version.parse().ok().map(VersionRef::Exact);
        let package = self
            .resolve(&ModelSelector {
                name: row.model_name.to_string(),
                version,
            })
            .map_err(|_| {
                Error::FailedPrecondition(format!(
                    "decision {}: model {} {} is no longer loaded, so its attributions cannot be computed",
                    row.decision_id, row.model_name, row.model_version
                ))
            })?;
        if *package.sha256 != *row.model_sha256 {
            return Err(Error::FailedPrecondition(format!(
                "decision {}: model {} {} was replaced by a different artefact",
                row.decision_id, row.model_name, row.model_version
            )));
        }
        Ok(package)
    }

    /// The exact package that made a recorded decision, also when its
    /// version is no longer served: then loaded back from the models
    /// folder, if the same artefact (SHA-256) is still there, or else from
    /// the copy kept when it served ([`crate::models::archive`]).
    pub async fn explaining_package(&self, row: &DecisionRow) -> Result<Arc<ModelPackage>, Error> {
        let served = match self.package_of(row) {
            Ok(package) => return Ok(package),
            Err(e) => e,
        };
        let key = (
            row.model_name.to_string(),
            row.model_version.to_string(),
            row.model_sha256.to_string(),
        );
        if let Some(package) = self.retired.get(&key) {
            return Ok(package);
        }
        // The record's names become a path: one plain component each.
        let plain = |s: &str| {
            let mut parts = std::path::Path::new(s).components();
            matches!(
                (parts.next(), parts.next()),
                (Some(std::path::Component::Normal(_)), None)
            )
        };
        if !plain(&row.model_name) || !plain(&row.model_version) {
            return Err(served);
        }
        let dir = self
            .config
            .models_dir
            .join(&*row.model_name)
            .join(&*row.model_version);
        // The artefact as it is now: a failed load is tried again only once
        // the file has changed (restored, or put back).
        let as_now = std::fs::metadata(dir.join(crate::models::package::MODEL_FILE))
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        if self.unavailable.get(&key) == Some(as_now) {
            return Err(served);
        }
        // Concurrent look-ups share one load (moka runs the first caller's
        // and the others wait for it), and the artefact's SHA-256 is
        // checked before anything is loaded. What cannot be loaded back is
        // remembered with the file as it was, so that an export or a burst
        // of look-ups does not load it once per decision.
        // The models folder first, then the copy kept when it served.
        let archived = self.archive.find(&key.2, &key.0, &key.1);
        let (retired, want, at) = (self.retired.clone(), key.2.clone(), key.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            retired.try_get_with(at, || -> Result<Arc<ModelPackage>, String> {
                let same = |dir: &std::path::PathBuf| {
                    std::fs::read(dir.join(crate::models::package::MODEL_FILE)).is_ok_and(|file| {
                        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file)) == want
                    })
                };
                let dir = [Some(dir), archived]
                    .into_iter()
                    .flatten()
                    .find(same)
                    .ok_or("no copy of the artefact")?;
                let package = ModelPackage::load(&dir, 1).map_err(|e| e.to_string())?;
                tracing::info!(model = %package.name(), version = %package.version(), "loaded a retired version to explain its decisions");
                Ok(Arc::new(package))
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("loading a retired model panicked: {e}")))?;
        loaded.map_err(|_| {
            self.unavailable.insert(key, as_now);
            served
        })
    }

    /// Attributes recorded decisions of one package from their sealed
    /// inputs, stores the attributions and erases the inputs.
    async fn attribute_recorded(
        &self,
        package: &Arc<ModelPackage>,
        rows: Vec<DecisionRow>,
        urgency: Urgency,
    ) -> Result<Vec<DecisionRow>, Error> {
        let width = package.schema.width();
        let mut inputs = Vec::with_capacity(rows.len() * width);
        let mut scores = Vec::with_capacity(rows.len());
        let mut kept = Vec::with_capacity(rows.len());
        let mut unusable = Vec::new();
        for row in rows {
            let sealed = row.inputs.as_deref().unwrap_or_default();
            match self.cipher.open(&row.decision_id, sealed) {
                Ok(values) if values.len() == width => {
                    inputs.extend(values);
                    scores.push(row.score.unwrap_or_default() as f32);
                    kept.push(row);
                }
                Ok(_) => unusable.push((
                    row.decision_id,
                    "its inputs do not fit the model".to_owned(),
                )),
                Err(e) => unusable.push((row.decision_id, e.to_string())),
            }
        }
        if !unusable.is_empty() {
            for (id, why) in &unusable {
                tracing::warn!(decision = %id, reason = %why, "attributions cannot be computed");
            }
            // Nothing will ever open them: stop owing them.
            let ids = unusable.iter().map(|(id, _)| id.clone()).collect();
            self.store.send(Job::Forgo(ids))?;
            if kept.is_empty() {
                return Err(Error::FailedPrecondition(unusable.remove(0).1));
            }
        }
        let rows = kept;
        let method = rows
            .first()
            .and_then(|r| r.explain_method.as_deref())
            .and_then(Method::parse)
            .unwrap_or_default();
        let masked: Vec<usize> = package
            .schema
            .columns()
            .iter()
            .enumerate()
            .filter(|(_, c)| rows[0].provenance.masked_features.contains(&c.name))
            .map(|(i, _)| i)
            .collect();
        // The pool thread makes the record's form itself, off the async
        // workers.
        let recorded: Vec<Recorded> = self
            .attribute(package, inputs, scores, method, &masked, urgency)
            .await?;
        // Queued together, the attachments share the writer's group commits.
        let mut attaching = Vec::with_capacity(rows.len());
        for (row, (explanation, json)) in rows.into_iter().zip(recorded) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.store
                .send(Job::Attach(row.decision_id.clone(), json, Some(tx)))?;
            attaching.push((row, explanation, rx));
        }
        let mut done = Vec::with_capacity(attaching.len());
        for (mut row, explanation, attached) in attaching {
            let exists = match attached.await.map_err(|_| StoreError::ShutDown)? {
                Ok(exists) => exists,
                // The database cannot keep the attributions now (full,
                // locked, broken): they stay owed, to be computed and kept
                // once commits succeed, and the answer stands if the
                // decision still does.
                Err(
                    StoreError::Full(_)
                    | StoreError::Busy(_)
                    | StoreError::Sqlite(_)
                    | StoreError::Damaged(_),
                ) => {
                    let (store, cipher) = (self.store.clone(), self.cipher.clone());
                    let id = row.decision_id.clone();
                    tokio::task::spawn_blocking(move || {
                        store.read(|c| decisions::get(c, &id, now_ms(), &cipher))
                    })
                    .await
                    .map_err(|e| Error::Internal(format!("record read panicked: {e}")))??
                    .is_some()
                }
                Err(e) => return Err(e.into()),
            };
            if !exists {
                // Erased or purged while we computed: nothing to answer.
                continue;
            }
            row.explanation = Some(explanation);
            row.inputs = None;
            row.explain_method = None;
            done.push(row);
        }
        Ok(done)
    }

    async fn compute_explanation(&self, row: DecisionRow) -> Result<DecisionRow, Error> {
        let package = self.explaining_package(&row).await?;
        let id = row.decision_id.clone();
        self.attribute_recorded(&package, vec![row], Urgency::Waiting { deadline: None })
            .await?
            .pop()
            .ok_or(Error::UnknownDecision(id))
    }

    /// One page of the subject's recorded decisions, newest first.
    pub async fn decisions(&self, page: &PageRequest) -> Result<Page<DecisionRow>, Error> {
        let subject_ref = self.consents.subject_ref(&page.subject_id)?;
        let after = self
            .page_tokens()
            .open(Scope::ListDecisions, &subject_ref, &page.token)?
            .map(Position::decision)
            .transpose()?
            .unwrap_or(DecisionPosition::NEWEST);
        let rows = self
            .decisions_after(&subject_ref, after, page.size + 1)
            .await?;
        Ok(Page::of(subject_ref, rows, page.size))
    }

    async fn decisions_after(
        &self,
        subject_ref: &str,
        after: DecisionPosition,
        limit: usize,
    ) -> Result<Vec<DecisionRow>, Error> {
        let (store, cipher) = (self.store.clone(), self.cipher.clone());
        let key = subject_ref.to_owned();
        tokio::task::spawn_blocking(move || {
            store.read(|c| decisions::list(c, &key, after, limit, now_ms(), &cipher))
        })
        .await
        .map_err(|e| Error::Internal(format!("record read panicked: {e}")))?
        .map_err(Error::from)
    }

    /// Issues and opens the tokens that carry a page's end to the next
    /// call.
    pub fn page_tokens(&self) -> &PageTokens {
        self.consents.ledger().page_tokens()
    }
}

/// Computes owed deferred attributions whenever decisions ask for them,
/// and every few seconds anyway, so that nothing a full pool or a restart
/// postponed is forgotten.
async fn sweep_deferred(gateway: Weak<Gateway>) {
    loop {
        let Some(g) = gateway.upgrade() else { return };
        let wake = g.deferred.clone();
        let sweep = g.sweep_once().await;
        drop(g);
        match sweep {
            Sweep::More => tokio::task::yield_now().await,
            // Let the pool drain, or the failure pass, before trying again.
            Sweep::Stalled => tokio::time::sleep(Duration::from_millis(200)).await,
            Sweep::Done => {
                let _ = tokio::time::timeout(Duration::from_secs(2), wake.notified()).await;
            }
        }
    }
}

/// What one pass of the sweeper left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sweep {
    /// Nothing owed is left.
    Done,
    /// More is owed, and this pass made progress: go on at once.
    More,
    /// The background pool is full, or the pass attributed nothing.
    Stalled,
}

impl Gateway {
    /// One pass over the owed attributions, oldest first.
    async fn sweep_once(&self) -> Sweep {
        let (store, cipher) = (self.store.clone(), self.cipher.clone());
        let pending = match tokio::task::spawn_blocking(move || {
            store.read(|c| decisions::pending(c, SWEEP_BATCH, &cipher))
        })
        .await
        {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read owed attributions");
                return Sweep::Done;
            }
            Err(_) => return Sweep::Done,
        };
        let full = pending.len() == SWEEP_BATCH;
        let mut by_model: Vec<(Arc<ModelPackage>, Vec<DecisionRow>)> = Vec::new();
        for row in pending {
            let package = match self.package_of(&row) {
                Ok(p) => p,
                Err(e) => {
                    // Its model is gone: owing it forever would block the
                    // decisions behind it.
                    tracing::warn!(error = %e, "deferred attribution given up");
                    let _ = self.store.send(Job::Forgo(vec![row.decision_id]));
                    continue;
                }
            };
            let method = row.explain_method.clone();
            // One group per model, method and mask: a group is attributed
            // with one mask, so subjects with different masks never share.
            match by_model.iter_mut().find(|(p, rows)| {
                Arc::ptr_eq(p, &package)
                    && rows[0].explain_method == method
                    && rows[0].provenance.masked_features == row.provenance.masked_features
            }) {
                Some((_, rows)) => rows.push(row),
                None => by_model.push((package, vec![row])),
            }
        }
        let mut progress = false;
        for (package, rows) in by_model {
            match self
                .attribute_recorded(&package, rows, Urgency::Background)
                .await
            {
                Ok(done) => {
                    progress |= !done.is_empty();
                    for row in done {
                        self.cache.insert(row);
                    }
                }
                Err(Error::ExplainPool(PoolError::Overloaded(_))) => return Sweep::Stalled,
                Err(e) => tracing::warn!(error = %e, "deferred attribution failed"),
            }
        }
        match (full, progress) {
            (false, _) => Sweep::Done,
            (true, true) => Sweep::More,
            (true, false) => Sweep::Stalled,
        }
    }
}

async fn purge(gateway: Weak<Gateway>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(g) = gateway.upgrade() else { return };
        let now = now_ms();
        let purged = g
            .expire_in_batches(
                "decisions",
                |tx| Job::Purge(now, tx),
                decisions::PURGED_AT_ONCE,
            )
            .await;
        match purged {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(decisions = n, "purged decisions past their retention");
                if let Err(e) = g.forget_uncited_provenances().await {
                    tracing::warn!(error = %e, "deleting provenances no decision cites failed; the next purge tries again");
                }
            }
            Err(e) => {
                // Decisions may be waiting for the database too: the copies
                // they cite wait with them.
                tracing::warn!(error = %e, "retention purge failed");
                continue;
            }
        }
        g.expire_evidence_and_reads().await;
        let pruned = g.prune_archive().await;
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::info!(artefacts = n, "removed package copies no decision cites"),
            Err(e) => tracing::warn!(error = %e, "pruning the package copies failed"),
        }
    }
}

impl Gateway {
    /// Keeps a copy of every package `registry` serves (before it serves,
    /// so that every decision's artefact is kept); a copy that cannot be
    /// made is logged, and only the explanations of that version's
    /// decisions after its folder goes depend on it.
    pub(super) async fn keep_packages(&self, registry: &Arc<crate::models::Registry>) {
        let (archive, registry) = (self.archive.clone(), registry.clone());
        let kept = tokio::task::spawn_blocking(move || {
            for (_, model) in registry.models() {
                for package in model.versions.values() {
                    if let Err(e) = archive.keep(package) {
                        tracing::warn!(model = %package.name(), version = %package.version(), error = %e, "cannot keep a copy of the package to explain its decisions later");
                    }
                }
            }
        })
        .await;
        if let Err(e) = kept {
            tracing::warn!(error = %e, "keeping copies of the packages panicked");
        }
    }

    /// Removes the package copies that no recorded decision or shadow
    /// output cites and no version serves or has served since the last
    /// prune. Not while commits fail: decisions waiting that long may cite
    /// any copy.
    async fn prune_archive(&self) -> Result<usize, Error> {
        let blocking =
            |e: tokio::task::JoinError| Error::Internal(format!("pruning panicked: {e}"));
        // The scan of the record runs before the deploy lock is taken, so
        // that deploys do not wait for it; what it cannot see yet (the
        // decisions of a version loaded and unloaded meanwhile) the
        // archive's count of what has served since the last prune covers.
        // Decisions queued now were made by versions that served since
        // the last prune; older ones wait only while commits fail, and one
        // that commits during the scan would be missed by it.
        if self.store.is_failing() {
            return Ok(0);
        }
        let store = self.store.clone();
        let cited: std::collections::HashSet<String> = tokio::task::spawn_blocking(move || {
            store.read(|c| {
                let mut stmt = c.prepare(
                    "SELECT model_sha256 FROM decisions UNION SELECT model_sha256 FROM shadow_outputs",
                )?;
                let shas = stmt
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(shas)
            })
        })
        .await
        .map_err(blocking)??;
        // A deploy keeps its packages' copies before it serves them: while
        // one runs, a copy may be about to serve and yet cited by nothing.
        let _deploying = self.deploying.lock().await;
        if self.store.is_failing() {
            return Ok(0);
        }
        let loaded: std::collections::HashSet<String> = self
            .registry()
            .map(|registry| {
                registry
                    .models()
                    .flat_map(|(_, m)| m.versions.values().map(|p| p.sha256.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let archive = self.archive.clone();
        tokio::task::spawn_blocking(move || {
            let cited = cited.union(&loaded).cloned().collect();
            archive.prune(&cited, loaded)
        })
        .await
        .map_err(blocking)?
        .map_err(|e| Error::Internal(format!("package copies: {e}")))
    }
}

/// How much the database holds and owes, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSizes {
    pub owed_attributions: i64,
    pub ledger_records: i64,
    pub pending_writes: i64,
    pub database_bytes: i64,
    pub wal_bytes: i64,
}

impl Gateway {
    /// Reads SQLite: call it off the async workers.
    pub fn store_sizes(&self) -> StoreSizes {
        let counted = self.store.read(|c| {
            Ok(c.query_row(
                "SELECT (SELECT COUNT(*) FROM decisions WHERE explain_method IS NOT NULL),
                        (SELECT COALESCE(MAX(seq), 0) FROM ledger)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        });
        let (owed_attributions, ledger_records) = counted.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot count the backlog and ledger for the metrics");
            (-1, -1)
        });
        let (database_bytes, wal_bytes) = self.store.file_bytes();
        StoreSizes {
            owed_attributions,
            ledger_records,
            pending_writes: self.store.queued() as i64,
            database_bytes: database_bytes as i64,
            wal_bytes: wal_bytes as i64,
        }
    }
}

/// One page of everything held about a subject, for a GDPR Art. 15 access
/// request.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectExport {
    pub subject_ref: String,
    pub procedure: String,
    pub json: String,
    /// Where the next page starts; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// One item of an export page, in the export's order: the consent history
/// oldest first, then the decisions newest first.
enum ExportItem<'a> {
    Record(&'a StoredRecord),
    Decision(&'a DecisionRow),
}

impl Gateway {
    /// The ledger records a decision cited, oldest first.
    pub async fn consent_trail(
        &self,
        provenance: &crate::consent::policy::Provenance,
    ) -> Result<Vec<StoredRecord>, Error> {
        let ledger = self.consents.ledger().clone();
        let refs = provenance.ledger_records.clone();
        tokio::task::spawn_blocking(move || ledger.records(&refs))
            .await
            .map_err(|e| Error::Internal(format!("ledger read panicked: {e}")))?
            .map_err(Error::from)
    }

    /// One page of the subject's data: the consent state (first page
    /// only), then their consent history and every decision with its
    /// consumer explanation, with the procedure in plain language. The
    /// page's text (subject_ref, procedure, JSON and token) takes at most
    /// `room` bytes; an item that alone would not fit is refused rather
    /// than left out.
    pub async fn export_subject(
        &self,
        page: &PageRequest,
        language: Language,
        room: usize,
    ) -> Result<SubjectExport, Error> {
        let subject_id = page.subject_id.as_str();
        let subject_ref = self.consents.subject_ref(subject_id)?;
        let at = self
            .page_tokens()
            .open(Scope::Export, &subject_ref, &page.token)?;
        // Read one item past the page, to know whether more follow.
        let (records, decisions_after) = match at {
            Some(Position::Decision(after)) => (Vec::new(), after),
            None | Some(Position::Ledger { .. }) => {
                let after_seq = at.map_or(Ok(0), Position::ledger)?;
                let records = self
                    .consents
                    .records_after(&subject_ref, after_seq, page.size + 1)
                    .await?;
                (records, DecisionPosition::NEWEST)
            }
        };
        let rows = match (page.size + 1).checked_sub(records.len()) {
            Some(left @ 1..) => {
                self.decisions_after(&subject_ref, decisions_after, left)
                    .await?
            }
            _ => Vec::new(),
        };
        let items: Vec<ExportItem> = records
            .iter()
            .map(ExportItem::Record)
            .chain(rows.iter().map(ExportItem::Decision))
            .collect();

        let mut json = serde_json::json!({
            "subject_ref": subject_ref,
            // The longer of its two values, while the page is measured.
            "more_pages": false,
            "consent_history": [],
            "decisions": [],
        });
        if at.is_none() {
            let (_, state) = self.consents.state(subject_id).await?;
            json["consent_state"] = state
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "tcf_purpose": s.tcf_id,
                        "status": s.status_at(now_ms()).as_str(),
                        "legal_basis": s.legal_basis.as_str(),
                        "effective_at_ms": s.effective_at_ms,
                        "expires_at_ms": s.expires_at_ms,
                        "record": s.record,
                    })
                })
                .collect();
        }
        // Compact JSON is the concatenation of its parts, so the page's size
        // is known item by item: the envelope, then each item and a comma.
        let fixed = subject_ref.len()
            + crate::why::procedure(language, true).len()
            + MAX_TOKEN_LEN
            + json.to_string().len();
        let items_room = room.checked_sub(fixed).ok_or_else(|| {
            Error::TooLarge(format!(
                "max_message_bytes: {room} bytes leave no room for an export page, which needs {fixed} without any item; raise max_message_bytes"
            ))
        })?;
        let mut budget = Budget::new(items_room);
        let mut kept: Vec<(Position, serde_json::Value)> = Vec::new();
        for item in items.iter().take(page.size) {
            let (position, value) = self.export_item(item, language).await?;
            let size = value.to_string().len();
            if !budget.take(size + 1) {
                if kept.is_empty() {
                    return Err(Error::TooLarge(format!(
                        "max_message_bytes: the export's next item ({position}) alone is {size} bytes, more than the {items_room} bytes a page leaves for items; raise max_message_bytes to read it"
                    )));
                }
                break;
            }
            kept.push((position, value));
        }
        let more = kept.len() < items.len();
        let next_page_token = kept
            .last()
            .filter(|_| more)
            .map(|(at, _)| self.page_tokens().issue(Scope::Export, &subject_ref, *at));
        json["more_pages"] = more.into();
        for (at, value) in kept {
            let list = match at {
                Position::Ledger { .. } => "consent_history",
                Position::Decision(_) => "decisions",
            };
            json[list]
                .as_array_mut()
                .expect("the lists are arrays")
                .push(value);
        }
        Ok(SubjectExport {
            procedure: crate::why::procedure(language, more),
            json: json.to_string(),
            subject_ref,
            next_page_token,
        })
    }

    /// The person's data a decision's model saw, for their access export
    /// (GDPR Art. 15(3)): each feature's value, with its description and
    /// data category when the model's package is at hand. Features the
    /// policy kept back are left out: the model saw their population
    /// average, not the person's data. Null when no model ran (a refused
    /// decision) or nothing of the inputs is kept.
    fn data_used(&self, row: &DecisionRow, package: Option<&ModelPackage>) -> serde_json::Value {
        let masked = &row.provenance.masked_features;
        let values: Vec<(String, f64)> = match (&row.explanation, &row.inputs) {
            (Some(e), _) => e
                .features
                .iter()
                .filter(|f| !f.masked)
                .map(|f| (f.name.clone(), f.value))
                .collect(),
            (None, Some(sealed)) => match self.cipher.open(&row.decision_id, sealed) {
                Ok(row_values) => match package {
                    Some(p) if row_values.len() == p.schema.width() => p
                        .manifest
                        .features
                        .iter()
                        .filter(|f| !masked.contains(&f.name))
                        .filter_map(|f| {
                            Some((f.name.clone(), f64::from(*row_values.get(f.position)?)))
                        })
                        .collect(),
                    // Without the model's manifest the columns have no
                    // names; the person still gets the values, in order.
                    _ => {
                        return serde_json::json!({
                            "values_in_model_column_order": row_values.iter().map(|v| as_sent(f64::from(*v))).collect::<Vec<_>>(),
                        });
                    }
                },
                Err(e) => return serde_json::json!({ "unreadable": e.to_string() }),
            },
            (None, None) => return serde_json::Value::Null,
        };
        let spec =
            |name: &str| package.and_then(|p| p.manifest.features.iter().find(|f| f.name == name));
        values
            .into_iter()
            .map(|(name, value)| {
                let spec = spec(&name);
                serde_json::json!({
                    "feature": name,
                    // A missing value is null.
                    "value": as_sent(value),
                    "description": spec.map(|s| s.description.as_str()),
                    "data_category": spec.map(|s| s.category.as_str()),
                    // GDPR Art. 15(1)(g): where it came from.
                    "source": spec.map(|s| s.source.as_str()),
                })
            })
            .collect()
    }

    /// An export item's place in the export's order and its JSON.
    async fn export_item(
        &self,
        item: &ExportItem<'_>,
        language: Language,
    ) -> Result<(Position, serde_json::Value), Error> {
        Ok(match item {
            ExportItem::Record(r) => (
                r.position(),
                serde_json::json!({
                    "record": r.reference,
                    "kind": r.kind.as_str(),
                    "recorded_at_ms": r.recorded_at_ms,
                    "content": r.content.as_deref().and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok()),
                }),
            ),
            ExportItem::Decision(row) => {
                let package = self.explaining_package(row).await.ok();
                // The view rests on the attributions: a decision that still
                // owes them gets them now, as GetExplanation would.
                let explained = match (&row.explanation, &row.inputs, &package) {
                    (None, Some(_), Some(_)) => {
                        self.compute_explanation(DecisionRow::clone(row)).await.ok()
                    }
                    _ => None,
                };
                let row = explained.as_ref().unwrap_or(row);
                // Candidate versions scored the same request in the shadow:
                // their answers are about the person too.
                let shadows = self
                    .shadows_of_recorded(&row.decision_id)
                    .await
                    .unwrap_or_default();
                let view = crate::why::consumer(
                    row,
                    package.as_deref().map(crate::why::ModelFacts::of),
                    language,
                    self.config.decisions.min_segment_size,
                );
                let (masked, masked_unnamed) = crate::why::masked_for_person(
                    &row.provenance.masked_features,
                    package.as_deref().map(|p| &p.manifest),
                );
                (
                    row.position()?,
                    serde_json::json!({
                        "decision_id": row.decision_id,
                        "decided_at_ms": row.decided_at_ms,
                        // GDPR Art. 15(1)(d): how long it is kept.
                        "kept_until_ms": row.retain_until_ms,
                        "model": { "name": row.model_name, "version": row.model_version, "sha256": row.model_sha256 },
                        "placement_id": row.placement_id,
                        "campaign_id": row.campaign_id,
                        "ad_id": row.ad_id,
                        "tier": row.tier.as_str(),
                        "score": row.score,
                        "rules_fired": row.provenance.rules,
                        // GDPR Art. 15(1)(c), 6(1): on what basis, purpose by
                        // purpose, and from which signal or record.
                        "purposes": row.provenance.purposes.iter().map(|o| serde_json::json!({
                            "purpose": o.dpv,
                            "tcf_id": o.tcf_id,
                            "status": o.status.as_str(),
                            "legal_basis": o.legal_basis.map(|b| b.as_str()),
                            "source": o.source.as_str(),
                            "ledger_record": o.record.as_ref().map(|r| r.record_id.as_str()),
                        })).collect::<Vec<_>>(),
                        "jurisdiction": row.provenance.jurisdiction,
                        // Sensitive ones are counted, never named, as in the
                        // consumer view.
                        "masked_features": masked,
                        "masked_features_not_named": masked_unnamed,
                        "data_used": self.data_used(row, package.as_deref()),
                        "shadow_scores": shadows.iter().map(|o| serde_json::json!({
                            "model": { "name": o.model_name, "version": o.model_version, "sha256": o.model_sha256 },
                            "score": o.score,
                        })).collect::<Vec<_>>(),
                        "why": {
                            "basis": view.basis,
                            "main_parameters": view.main_parameters,
                            "reasons": view.reasons.iter().map(|r| r.text.clone()).collect::<Vec<_>>(),
                            "consent": view.consent_line,
                        },
                    }),
                )
            }
        })
    }
}

/// A value the model saw, as the person's data held it: the model takes
/// 32-bit floats, and 1.99 widened from one reads 1.9900000095367432. The
/// shortest decimal that is the same 32-bit float is what was sent.
fn as_sent(value: f64) -> f64 {
    let narrow = value as f32;
    narrow.to_string().parse().unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exported_value_reads_as_it_was_sent() {
        for sent in [1.99, 0.2048, 6.0, -3.5, 1e-7] {
            assert_eq!(as_sent(f64::from(sent as f32)), sent);
        }
        assert!(as_sent(f64::NAN).is_nan());
    }

    #[test]
    fn every_spelling_of_a_decision_id_finds_the_same_record() {
        let id = "0192f7c8-3d2e-7a6b-9c1d-2e3f4a5b6c7d";
        for spelling in [
            id.to_owned(),
            id.to_uppercase(),
            format!("urn:uuid:{id}"),
            format!("{{{id}}}"),
            id.replace('-', ""),
        ] {
            assert_eq!(decision_id(&spelling).unwrap(), id, "{spelling}");
        }
        for bad in ["", "not-a-uuid", "0192f7c8-3d2e-7a6b-9c1d"] {
            let e = decision_id(bad).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.starts_with("decision_id: ")),
                "{e}"
            );
        }
    }
}
