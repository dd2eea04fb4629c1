//! Shadow scoring: versions that score production's requests without
//! touching the response. After a routed decision is answered, its rows go
//! to a bounded queue; a background task scores them with every shadow
//! version under the same consent verdict (the same features masked),
//! attributes both the shadow's and the live version's scores, and records
//! the shadow outputs beside the live decision's id
//! ([`crate::decisions::shadow`]). When the queue is full the shadow work
//! is dropped and counted: shadows never slow live traffic.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::{Decision, Gateway, Judged, ModelIdentity, Tier, attribute::Urgency};
use crate::{
    decisions::{
        Explanation,
        shadow::{self, FeatureDrift, ShadowRow},
    },
    error::Error,
    explain::Method,
    models::{ModelPackage, ModelSelector, VersionRef, schema::FeatureRow},
    store::{Job, now_ms},
};

/// Requests waiting for their shadows.
pub(super) const SHADOW_QUEUE: usize = 1024;

/// Per feature, production's and a candidate's mean |attribution|.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftReport {
    pub live: ModelIdentity,
    pub candidate: ModelIdentity,
    /// `shadow`: the same requests, paired; `canary`: each version's own
    /// recorded decisions.
    pub comparison: &'static str,
    pub live_decisions: u64,
    pub candidate_decisions: u64,
    pub features: Vec<FeatureDrift>,
}

pub(super) struct ShadowJob {
    live: Arc<ModelPackage>,
    /// Each shadow version with the features its own consent verdict masks.
    shadows: Vec<(Arc<ModelPackage>, Vec<String>)>,
    rows: Vec<FeatureRow>,
    decisions: Vec<Decision>,
}

impl Gateway {
    /// Queues the shadows of a routed decision, if its model has any.
    pub(super) fn shadow(
        &self,
        selector: &ModelSelector,
        live: &Arc<ModelPackage>,
        rows: &[FeatureRow],
        decisions: &[Decision],
        judged: &Judged,
    ) {
        // Shadows follow production traffic; a call that pinned a version
        // (or the canary) is not production's.
        let routed = matches!(selector.version, None | Some(VersionRef::Production));
        let scored = decisions.iter().all(|d| d.score.is_some());
        if !routed || !scored || decisions.is_empty() {
            return;
        }
        let Ok(registry) = self.registry() else {
            return;
        };
        let shadows = registry.shadows(live.name());
        if shadows.is_empty()
            || registry
                .model(live.name())
                .is_ok_and(|m| &m.default != live.version())
        {
            return;
        }
        // Each shadow is judged as a live call to it would be, at the same
        // moment: its manifest may declare other data categories.
        let at_ms = decisions[0].decided_at_ms();
        let shadows: Vec<_> = shadows
            .into_iter()
            .filter_map(|package| {
                let verdict = judged.evaluate(&self.policy, &package, at_ms);
                if verdict.tier == Tier::Refused {
                    return None;
                }
                let columns = package.schema.columns();
                let masked = verdict
                    .masked
                    .iter()
                    .map(|&i| columns[i].name.clone())
                    .collect();
                Some((package, masked))
            })
            .collect();
        if shadows.is_empty() {
            return;
        }
        let job = ShadowJob {
            live: live.clone(),
            shadows,
            rows: rows.to_vec(),
            decisions: decisions.to_vec(),
        };
        if self.shadows.try_send(job).is_err() {
            self.metrics.shadow_dropped();
        }
    }

    async fn run_shadow(&self, job: ShadowJob) -> Result<(), Error> {
        let masked = &job.decisions[0].provenance.masked_features;
        let (live_rows, live_masked) = encode(&job.live, &job.rows, masked)?;
        let live: Vec<shadow::Contributions> = match job
            .decisions
            .iter()
            .map(|d| {
                d.attribution
                    .as_ref()
                    .map(|a| shadow::contributions(&Explanation::from(a)))
            })
            .collect::<Option<Vec<_>>>()
        {
            Some(inline) => inline,
            None => {
                let scores = job
                    .decisions
                    .iter()
                    .map(|d| d.score.unwrap_or_default() as f32)
                    .collect();
                self.attribute(
                    &job.live,
                    live_rows,
                    scores,
                    Method::default(),
                    &live_masked,
                    Urgency::Background,
                )
                .await?
                .iter()
                .map(|a| shadow::contributions(&Explanation::from(a)))
                .collect()
            }
        };
        let now = now_ms();
        let mut out = Vec::new();
        let positional = job
            .rows
            .iter()
            .any(|r| matches!(r, FeatureRow::Positional(_)));
        for (package, masked) in &job.shadows {
            // Positional values mean the live version's column order.
            let same_columns = || {
                let names = |p: &ModelPackage| -> Vec<String> {
                    p.schema.columns().iter().map(|c| c.name.clone()).collect()
                };
                names(package) == names(&job.live)
            };
            if positional && !same_columns() {
                tracing::warn!(model = %package.name(), version = %package.version(), "shadow skipped: positional rows and a different column order");
                continue;
            }
            let (rows, masked) = match encode(package, &job.rows, masked) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(model = %package.name(), version = %package.version(), error = %e, "shadow cannot score this request");
                    continue;
                }
            };
            let scores = self
                .pool
                .predict(package.backend.clone(), rows.clone())
                .await?;
            let attributions = self
                .attribute(
                    package,
                    rows,
                    scores.clone(),
                    Method::default(),
                    &masked,
                    Urgency::Background,
                )
                .await?;
            let retain_until_ms = self.retain_until(package.name(), now);
            for ((d, score), (attribution, live)) in job
                .decisions
                .iter()
                .zip(scores)
                .zip(attributions.iter().zip(&live))
            {
                out.push(ShadowRow {
                    decision_id: d.id.to_string(),
                    model_name: package.name().to_owned(),
                    model_version: package.version().to_string(),
                    model_sha256: package.sha256.clone(),
                    subject_ref: d.provenance.subject_ref.clone(),
                    // The live decision's time: the writer refuses a
                    // shadow of a subject erased since.
                    decided_at_ms: d.decided_at_ms(),
                    score: f64::from(score),
                    explanation: Explanation::from(attribution),
                    live: live.clone(),
                    retain_until_ms,
                });
            }
        }
        if !out.is_empty() {
            self.store.send(Job::Shadow(Arc::new(out)))?;
        }
        Ok(())
    }

    /// How the attributions of `candidate` (a shadow or canary version)
    /// differ from production's, per feature, since `since_ms`.
    pub async fn attribution_drift(
        &self,
        model: &str,
        candidate: &VersionRef,
        since_ms: i64,
    ) -> Result<DriftReport, Error> {
        let registry = self.registry()?;
        let served = registry.model_in("model", model)?;
        let candidate = match candidate {
            VersionRef::Exact(v) => v,
            VersionRef::Canary => served
                .rollout
                .canary
                .as_ref()
                .map(|c| &c.version)
                .ok_or_else(|| Error::NotFound(format!("candidate: {model} has no canary")))?,
            VersionRef::Production => {
                return Err(Error::InvalidArgument(
                    "candidate: production is what the candidate is compared with; name a shadow or canary".into(),
                ));
            }
        };
        if &served.default == candidate {
            return Err(Error::InvalidArgument(format!(
                "candidate: {candidate} is {model}'s production version; name a shadow or canary"
            )));
        }
        let candidate = served.versions.get(candidate).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "candidate: {model} has no version {candidate} loaded"
            ))
        })?;
        let live = registry.production(model)?;
        // Sizes in log-odds against sizes in probability would read as
        // drift where there is none.
        let spaces = [&live, &candidate].map(|p| p.explainer.output_space());
        if spaces[0] != spaces[1] {
            return Err(Error::FailedPrecondition(format!(
                "candidate: {model} {}'s attributions are in {} units and production {}'s in {}; their sizes and ranks cannot be compared",
                candidate.version(),
                spaces[1],
                live.version(),
                spaces[0]
            )));
        }
        let (store, cipher) = (self.store.clone(), self.cipher.clone());
        let (name, live_version, candidate_version) = (
            model.to_owned(),
            live.version().to_string(),
            candidate.version().to_string(),
        );
        let (comparison, live_means, candidate_means) = tokio::task::spawn_blocking(move || {
            store.read(|c| {
                let (l, s) = shadow::shadow_pairs(
                    c,
                    &name,
                    &live_version,
                    &candidate_version,
                    since_ms,
                    &cipher,
                )?;
                if s.count > 0 {
                    return Ok(("shadow", l, s));
                }
                Ok((
                    "canary",
                    shadow::recorded(c, &name, &live_version, since_ms, &cipher)?,
                    shadow::recorded(c, &name, &candidate_version, since_ms, &cipher)?,
                ))
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("drift read panicked: {e}")))??;
        // Ranks among values that are all zero would be alphabetical order
        // presented as drift; means over a handful of decisions would hand
        // an engineer individual people's attributions (one decision's
        // time is in its id), unrecorded, as the consumer view's reasons
        // are withheld for segments this small.
        let fewest = u64::from(self.config.decisions.min_segment_size);
        let window = if since_ms > 0 {
            format!(" since {since_ms} ms after the epoch (since_unix_ms)")
        } else {
            String::new()
        };
        for (field, version, means) in [
            ("candidate", candidate.version(), &candidate_means),
            ("model", live.version(), &live_means),
        ] {
            if means.count == 0 {
                return Err(Error::FailedPrecondition(format!(
                    "{field}: {model} {version} has no decision with attributions on record{window}: nothing to compare yet (a shadow's count from its first recorded output; a canary's or production's once their attributions exist, inline or attached later)"
                )));
            }
            if means.count < fewest {
                return Err(Error::FailedPrecondition(format!(
                    "{field}: {model} {version} has {} decisions with attributions on record{window}, fewer than decisions.min_segment_size ({fewest}); means over so few would show individual people's attributions: widen the window or wait for more",
                    means.count
                )));
            }
        }
        Ok(DriftReport {
            live: live.identity.clone(),
            candidate: candidate.identity.clone(),
            comparison,
            live_decisions: live_means.count,
            candidate_decisions: candidate_means.count,
            features: shadow::drift(&live_means, &candidate_means),
        })
    }

    /// What a shadow version answered for one decision.
    pub async fn shadow_outputs(&self, decision_id: &str) -> Result<Vec<ShadowRow>, Error> {
        let (outputs, decided) = self.read_shadows(decision_id, true).await?;
        if !decided {
            return Err(Error::UnknownDecision(decision_id.to_owned()));
        }
        Ok(outputs)
    }

    /// The shadow outputs of a decision known to be recorded (one being
    /// exported), without looking the decision up again.
    pub(super) async fn shadows_of_recorded(
        &self,
        decision_id: &str,
    ) -> Result<Vec<ShadowRow>, Error> {
        Ok(self.read_shadows(decision_id, false).await?.0)
    }

    /// A decision's shadow outputs, and whether it was made: when `check`,
    /// no outputs for a decision never made (or purged, or erased) is told
    /// apart from a decision without shadows.
    async fn read_shadows(
        &self,
        decision_id: &str,
        check: bool,
    ) -> Result<(Vec<ShadowRow>, bool), Error> {
        let (store, cipher) = (self.store.clone(), self.cipher.clone());
        let id = decision_id.to_owned();
        tokio::task::spawn_blocking(move || {
            store.read(|c| {
                let outputs = shadow::for_decision(c, &id, &cipher)?;
                let decided = !check
                    || !outputs.is_empty()
                    || crate::decisions::get(c, &id, now_ms(), &cipher)?.is_some();
                Ok((outputs, decided))
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("shadow read panicked: {e}")))?
        .map_err(Error::from)
    }
}

/// `rows` in `package`'s column order with the features the consent
/// verdict masked (by name) set to their substitutes (`Rows::substitutes`), and the
/// masked positions.
fn encode(
    package: &ModelPackage,
    rows: &[FeatureRow],
    masked: &[String],
) -> Result<(Vec<f32>, Vec<usize>), Error> {
    let columns = package.schema.columns();
    let positions: Vec<usize> = masked
        .iter()
        .filter_map(|name| columns.iter().position(|c| &c.name == name))
        .collect();
    let width = package.schema.width();
    let mut out = Vec::with_capacity(width * rows.len());
    for row in rows {
        let start = out.len();
        package
            .schema
            .encode_row(row, &mut out)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        for &i in &positions {
            out[start + i] = package.substitutes[i];
        }
    }
    Ok((out, positions))
}

/// Says which shadow versions a new registry's rollouts name in vain.
pub(super) fn warn_unscored(registry: &crate::models::Registry) {
    for p in registry.unscored_shadows() {
        tracing::warn!(model = %p.name(), version = %p.version(), "the rollout names this version as a shadow, but it takes special-category data, which no ad decision may use: it scores nothing");
    }
}

/// Runs queued shadow work until the gateway is gone.
pub(super) async fn run(gateway: Weak<Gateway>, mut jobs: mpsc::Receiver<ShadowJob>) {
    while let Some(job) = jobs.recv().await {
        let Some(g) = gateway.upgrade() else { return };
        if let Err(e) = g.run_shadow(job).await {
            tracing::warn!(error = %e, "shadow scoring failed");
        }
    }
}
