//! The scoring service in plain Rust: resolve the model, validate the
//! features, run inference, and stamp the decision.
//!
//! Nothing here knows about gRPC. Handlers in [`crate::grpc`] convert protobuf
//! messages to the request types below and the results back.

use std::{sync::Arc, time::SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    config::Config,
    error::Error,
    explain::{DecisionAttribution, ExplainMode, Method, pool::ExplainPool, sampling::Scorer},
    inference::{Backend, InferencePool, OrtBackend, runtime},
    models::{ModelPackage, ModelSelector, Registry, schema::FeatureRow},
};

/// One subject to score.
#[derive(Debug, Clone)]
pub struct ScoreRequest {
    pub model: ModelSelector,
    pub row: FeatureRow,
    pub explain: ExplainMode,
}

/// Many candidate rows to score with one model.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub model: ModelSelector,
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
    pub score: f64,
    pub decided_at: SystemTime,
    pub attribution: Option<DecisionAttribution>,
}

/// The gateway's shared state: the model registry and the inference pool.
pub struct Gateway {
    config: Config,
    pool: InferencePool,
    explain_pool: ExplainPool,
    registry: ArcSwapOption<Registry>,
    ready: watch::Sender<bool>,
}

impl Gateway {
    /// Starts the inference threads. Models are loaded separately by
    /// [`Gateway::load_models`], so the server can report NOT_SERVING while
    /// they load.
    pub fn new(config: Config) -> Self {
        let pool = InferencePool::new(
            config.inference_threads,
            config.inference_queue,
            config.max_batch_rows,
        );
        let explain_pool = ExplainPool::new(config.inference_threads, config.inference_queue);
        Self {
            config,
            pool,
            explain_pool,
            registry: ArcSwapOption::empty(),
            ready: watch::channel(false).0,
        }
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
        let mut decisions = self.decide(package, row, request.explain).await?;
        Ok(decisions.remove(0))
    }

    pub async fn score_batch(&self, request: BatchRequest) -> Result<Vec<Decision>, Error> {
        let package = self.resolve(&request.model)?;
        let rows = self.validate_rows(&package, &request.rows)?;
        self.decide(package, rows, request.explain).await
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

    /// Scores validated rows and, when asked, attributes each score.
    async fn decide(
        &self,
        package: Arc<ModelPackage>,
        rows: Vec<f32>,
        explain: ExplainMode,
    ) -> Result<Vec<Decision>, Error> {
        let method = match explain {
            ExplainMode::Inline(method) => Some(method),
            ExplainMode::None => None,
        };
        let (scores, attributions) = self.evaluate(&package, rows, method).await?;
        let mut attributions = attributions.map(Vec::into_iter);
        Ok(scores
            .into_iter()
            .map(|s| Decision {
                id: Uuid::now_v7(),
                model: ModelIdentity::of(&package),
                score: f64::from(s),
                decided_at: SystemTime::now(),
                attribution: attributions.as_mut().and_then(Iterator::next),
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
