//! The scoring service in plain Rust: resolve the model, validate the
//! features, evaluate consent, mask what the person did not allow, run
//! inference, and stamp the decision with its provenance.
//!
//! Nothing here knows about gRPC. Handlers in [`crate::grpc`] convert protobuf
//! messages to the request types below and the results back.

use std::{sync::Arc, time::SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    config::Config,
    consent::{
        Signals,
        ledger::{Ledger, LedgerRef, load_or_create_key, now_ms},
        policy::{Evaluation, Policy, Provenance, Settings, Tier},
        service::Consents,
    },
    error::Error,
    explain::{DecisionAttribution, ExplainMode, Method, pool::ExplainPool, sampling::Scorer},
    inference::{Backend, InferencePool, OrtBackend, runtime},
    models::{ModelPackage, ModelSelector, Registry, schema::FeatureRow},
};

/// Where the ad would run; recorded with the decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub placement_id: String,
    pub campaign_id: String,
    pub ad_id: String,
}

/// Who is scored, where, and under which consent signals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The publisher's identifier; pseudonymised before it goes anywhere.
    pub id: Option<String>,
    pub placement: Placement,
    pub signals: Signals,
}

/// One subject to score.
#[derive(Debug, Clone)]
pub struct ScoreRequest {
    pub model: ModelSelector,
    pub subject: Subject,
    pub row: FeatureRow,
    pub explain: ExplainMode,
}

/// Many candidate rows to score with one model for one subject.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub model: ModelSelector,
    pub subject: Subject,
    pub rows: Vec<FeatureRow>,
    pub explain: ExplainMode,
}

/// Rows to explain outside any decision.
#[derive(Debug, Clone)]
pub struct ExplainRequest {
    pub model: ModelSelector,
    pub rows: Vec<FeatureRow>,
    pub method: Method,
}

/// A what-if row's score and attributions.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    pub model: ModelIdentity,
    pub score: f64,
    pub attribution: DecisionAttribution,
}

/// Exactly which artefact made a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelIdentity {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

impl ModelIdentity {
    pub fn of(package: &ModelPackage) -> Self {
        Self {
            name: package.name().to_owned(),
            version: package.version().to_string(),
            sha256: package.sha256.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// UUIDv7, so decision ids sort by time.
    pub id: Uuid,
    pub model: ModelIdentity,
    /// `None` when the tier is refused: no model ran.
    pub score: Option<f64>,
    pub decided_at: SystemTime,
    pub attribution: Option<DecisionAttribution>,
    /// Every decision carries it, in every tier.
    pub provenance: Arc<Provenance>,
}

/// The gateway's shared state: the model registry, the inference pools, the
/// consent ledger and the policy.
pub struct Gateway {
    config: Config,
    pool: InferencePool,
    explain_pool: ExplainPool,
    registry: ArcSwapOption<Registry>,
    ready: watch::Sender<bool>,
    consents: Consents,
    policy: Policy,
}

impl Gateway {
    /// Opens the consent ledger and starts the inference threads. Models are
    /// loaded separately by [`Gateway::load_models`], so the server can
    /// report NOT_SERVING while they load.
    pub fn new(config: Config) -> Result<Self, Error> {
        let key = load_or_create_key(&config.consent.subject_key_file)?;
        let ledger = Arc::new(Ledger::open(&config.database, key)?);
        if config.consent.tcf_vendor_id.is_none() {
            tracing::warn!(
                "consent.tcf_vendor_id is not set: TCF vendor consent and publisher restrictions are not checked, only purpose signals"
            );
        }
        let policy = Policy::new(Settings {
            tcf_vendor_id: config.consent.tcf_vendor_id,
            unknown_jurisdiction: config.consent.unknown_jurisdiction,
        });
        let pool = InferencePool::new(
            config.inference_threads,
            config.inference_queue,
            config.max_batch_rows,
        );
        let explain_pool = ExplainPool::new(config.inference_threads, config.inference_queue);
        Ok(Self {
            consents: Consents::new(ledger, config.consent.controller.clone()),
            policy,
            config,
            pool,
            explain_pool,
            registry: ArcSwapOption::empty(),
            ready: watch::channel(false).0,
        })
    }

    pub fn consents(&self) -> &Consents {
        &self.consents
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Loads ONNX Runtime and every package in the models folder, then marks
    /// the gateway ready.
    pub async fn load_models(self: &Arc<Self>) -> Result<(), Error> {
        let this = self.clone();
        let registry = tokio::task::spawn_blocking(move || {
            runtime::init(&this.config.ort_lib)?;
            let slots = this.pool.slots() + this.explain_pool.threads();
            Registry::load_dir(&this.config.models_dir, slots).map_err(Error::from)
        })
        .await
        .map_err(|e| Error::Internal(format!("model loading panicked: {e}")))??;
        let count: usize = registry.models().map(|(_, m)| m.versions.len()).sum();
        tracing::info!(models = count, dir = %self.config.models_dir.display(), "models loaded");
        self.registry.store(Some(Arc::new(registry)));
        self.ready.send_replace(true);
        Ok(())
    }

    /// Follows readiness: `false` until the models are loaded.
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    pub fn registry(&self) -> Result<Arc<Registry>, Error> {
        self.registry.load_full().ok_or(Error::NotReady)
    }

    pub fn resolve(&self, selector: &ModelSelector) -> Result<Arc<ModelPackage>, Error> {
        Ok(self.registry()?.resolve(selector)?)
    }

    pub async fn score(&self, request: ScoreRequest) -> Result<Decision, Error> {
        let package = self.resolve(&request.model)?;
        let mut row = Vec::with_capacity(package.schema.width());
        package
            .schema
            .encode_row(&request.row, &mut row)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let (evaluation, provenance) = self.judge(&package, request.subject).await?;
        let mut decisions = self
            .decide(package, row, request.explain, &evaluation, provenance)
            .await?;
        Ok(decisions.remove(0))
    }

    pub async fn score_batch(&self, request: BatchRequest) -> Result<Vec<Decision>, Error> {
        let package = self.resolve(&request.model)?;
        let rows = self.validate_rows(&package, &request.rows)?;
        let (evaluation, provenance) = self.judge(&package, request.subject).await?;
        self.decide(package, rows, request.explain, &evaluation, provenance)
            .await
    }

    /// Evaluates consent for a subject and this model, and records the
    /// inline signals as evidence: everything the decision will rest on.
    async fn judge(
        &self,
        package: &ModelPackage,
        subject: Subject,
    ) -> Result<(Evaluation, Arc<Provenance>), Error> {
        let signals = subject.signals.decode()?;
        let ledger = self.consents.ledger();
        let subject_ref = subject.id.as_deref().map(|id| ledger.pseudonymise(id));
        // One indexed read on a pooled connection: short enough to run here
        // rather than hop to a blocking thread.
        let state = match &subject_ref {
            Some(s) => ledger.state(s)?,
            None => Vec::new(),
        };
        let columns = package.schema.columns();
        let evaluation = self.policy.evaluate(columns, &signals, &state, now_ms());
        let evidence = ledger
            .evidence(subject_ref.as_deref(), &signals, self.consents.controller())
            .await?;
        let mut ledger_records: Vec<LedgerRef> = Vec::new();
        for record in evaluation.purposes.iter().filter_map(|p| p.record.as_ref()) {
            if !ledger_records.contains(record) {
                ledger_records.push(record.clone());
            }
        }
        ledger_records.push(evidence);
        let provenance = Provenance {
            regime: evaluation.regime,
            tier: evaluation.tier,
            purposes: evaluation.purposes.clone(),
            rules: evaluation.rules.clone(),
            masked_features: evaluation
                .masked
                .iter()
                .map(|&i| columns[i].name.clone())
                .collect(),
            ledger_records,
            signals_hash: signals.hash,
            policy_version: self.policy.version(),
            policy_hash: self.policy.hash().to_owned(),
            model_sha256: package.sha256.clone(),
            subject_ref,
        };
        Ok((evaluation, Arc::new(provenance)))
    }

    /// Scores and attributes rows outside any decision: what-if analysis for
    /// ML engineers. Nothing is recorded and no decision id is issued.
    pub async fn explain(&self, request: ExplainRequest) -> Result<Vec<Explained>, Error> {
        let package = self.resolve(&request.model)?;
        let rows = self.validate_rows(&package, &request.rows)?;
        let (scores, attributions) = self.evaluate(&package, rows, Some(request.method)).await?;
        Ok(scores
            .into_iter()
            .zip(attributions.unwrap_or_default())
            .map(|(score, attribution)| Explained {
                model: ModelIdentity::of(&package),
                score: f64::from(score),
                attribution,
            })
            .collect())
    }

    /// Checks a batch's size and every row, and encodes them in column order.
    fn validate_rows(
        &self,
        package: &ModelPackage,
        rows: &[FeatureRow],
    ) -> Result<Vec<f32>, Error> {
        let max = self.config.max_batch_rows;
        if rows.len() > max {
            return Err(Error::InvalidArgument(format!(
                "rows: {} rows exceed the limit of {max} per call; split the batch",
                rows.len()
            )));
        }
        if rows.is_empty() {
            return Err(Error::InvalidArgument(
                "rows: a batch needs at least one row".into(),
            ));
        }
        let mut encoded = Vec::with_capacity(package.schema.width() * rows.len());
        for (i, features) in rows.iter().enumerate() {
            package
                .schema
                .encode_row(features, &mut encoded)
                .map_err(|e| Error::InvalidArgument(format!("rows[{i}].{e}")))?;
        }
        Ok(encoded)
    }

    /// Applies the consent verdict to validated rows, scores what remains
    /// and, when asked, attributes each score.
    async fn decide(
        &self,
        package: Arc<ModelPackage>,
        mut rows: Vec<f32>,
        explain: ExplainMode,
        evaluation: &Evaluation,
        provenance: Arc<Provenance>,
    ) -> Result<Vec<Decision>, Error> {
        let width = package.schema.width();
        let decision = |score, attribution| Decision {
            id: Uuid::now_v7(),
            model: ModelIdentity::of(&package),
            score,
            decided_at: SystemTime::now(),
            attribution,
            provenance: provenance.clone(),
        };
        if evaluation.tier == Tier::Refused {
            return Ok((0..rows.len() / width)
                .map(|_| decision(None, None))
                .collect());
        }
        for row in rows.chunks_mut(width) {
            for &i in &evaluation.masked {
                row[i] = package.background_means[i];
            }
        }
        let method = match explain {
            ExplainMode::Inline(method) => Some(method),
            ExplainMode::None => None,
        };
        let (scores, attributions) = self.evaluate(&package, rows, method).await?;
        let mut attributions = attributions.map(Vec::into_iter);
        Ok(scores
            .into_iter()
            .map(|s| {
                let attribution = attributions.as_mut().and_then(Iterator::next).map(|mut a| {
                    for &i in &evaluation.masked {
                        a.features[i].masked = true;
                    }
                    a
                });
                decision(Some(f64::from(s)), attribution)
            })
            .collect())
    }

    /// Runs the model on validated rows and, with a method, attributes each
    /// score on the explanation pool.
    async fn evaluate(
        &self,
        package: &Arc<ModelPackage>,
        rows: Vec<f32>,
        method: Option<Method>,
    ) -> Result<(Vec<f32>, Option<Vec<DecisionAttribution>>), Error> {
        let inputs = method.map(|m| (m, rows.clone()));
        let scores = self.pool.predict(package.backend.clone(), rows).await?;
        let Some((method, inputs)) = inputs else {
            return Ok((scores, None));
        };
        let package = package.clone();
        let ort_scores = scores.clone();
        // Explanation threads use the session slots after the inference
        // workers', so the model-agnostic estimator never waits for them.
        let first_slot = self.pool.slots();
        let attributions = self
            .explain_pool
            .run(move |thread| {
                let mut scorer = SlotScorer {
                    backend: package.backend.as_ref(),
                    slot: first_slot + thread,
                };
                let columns = package.schema.columns();
                inputs
                    .chunks(columns.len())
                    .zip(ort_scores)
                    .map(|(row, score)| {
                        let attribution = package.explainer.explain(row, method, &mut scorer)?;
                        Ok(DecisionAttribution::new(
                            attribution,
                            row,
                            columns,
                            &package.manifest.groups,
                            f64::from(score),
                        ))
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .await?
            .map_err(|e| Error::Internal(format!("attribution failed: {e}")))?;
        Ok((scores, Some(attributions)))
    }
}

/// Lets the model-agnostic estimator run the model on one session slot.
struct SlotScorer<'a> {
    backend: &'a OrtBackend,
    slot: usize,
}

impl Scorer for SlotScorer<'_> {
    fn score(&mut self, rows: &[f32]) -> Result<Vec<f32>, String> {
        self.backend
            .predict(self.slot, rows)
            .map_err(|e| e.to_string())
    }
}
