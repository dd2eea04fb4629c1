//! The scoring service in plain Rust: resolve the model, validate the
//! features, evaluate consent, mask what the person did not allow, run
//! inference, and stamp the decision with its provenance.
//!
//! Nothing here knows about gRPC. Handlers in [`crate::grpc`] convert protobuf
//! messages to the request types below and the results back. Recording
//! decisions and reading them back lives in [`record`].

mod attribute;
mod deploy;
mod record;
mod shadow;

pub use crate::models::ModelIdentity;
pub use deploy::{Reloaded, RolloutChange};
pub use record::{Served, decision_id};
pub use shadow::DriftReport;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use uuid::Uuid;

use self::attribute::{Answer, AttributeJob, Urgency};

use crate::{
    access::{
        Access,
        audit::{self, StaffRead},
    },
    config::Config,
    consent::{
        Decoded, Jurisdiction, Signals,
        ledger::{Ledger, LedgerRef, PurposeState},
        policy::{self, Evaluation, Policy, Provenance, Settings, Tier},
        service::Consents,
    },
    decisions::{cache::ExplanationCache, crypto::InputCipher},
    error::Error,
    explain::{
        DecisionAttribution, ExplainMode, Method,
        pool::{ExplainPool, Pacing, PoolError, Priority},
    },
    inference::{InferenceError, InferencePool, runtime},
    metrics::{Metrics, Stage},
    models::{
        ModelPackage, ModelSelector, Registry, archive::Archive, manifest::FeatureSpec,
        schema::FeatureRow,
    },
    monitor::{AuditAttributes, FairnessMonitor},
    store::{Store, StoreSettings, now_ms},
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
    /// Counted by the fairness monitor only.
    pub audit: AuditAttributes,
    /// The caller's `x-request-id`, or one made up; kept with the decision.
    pub request_id: String,
    /// When the caller stops waiting (its gRPC deadline): sampled inline
    /// attributions stop in time.
    pub deadline: Option<std::time::Instant>,
}

/// The size of the answer the edge will send for some decisions, and the
/// request field their rows came in: an answer too large to send is found
/// before its decisions are recorded, since a decision nobody received
/// must not stand in the record.
#[derive(Clone)]
pub struct AnswerSize {
    /// The request field the rows came in, as a refusal names it.
    pub field: &'static str,
    /// The answer's encoded size for the given decisions.
    pub bytes: Arc<Measure>,
}

/// The encoded size of the answer for some decisions.
pub type Measure = dyn Fn(&[Decision]) -> usize + Send + Sync;

impl std::fmt::Debug for AnswerSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerSize")
            .field("field", &self.field)
            .finish_non_exhaustive()
    }
}

/// Many candidate rows to score with one model for one subject.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub model: ModelSelector,
    pub subject: Subject,
    pub rows: Vec<FeatureRow>,
    /// Where each row's ad would be shown, in row order: a batch scores
    /// candidates, each its own campaign and ad. Empty: every row is the
    /// subject's placement.
    pub placements: Vec<Placement>,
    pub explain: ExplainMode,
    pub audit: AuditAttributes,
    pub request_id: String,
    pub deadline: Option<std::time::Instant>,
    /// Checked before recording, where the answer may be large (many rows,
    /// inline attributions).
    pub answer_size: Option<AnswerSize>,
}

/// Rows to explain outside any decision.
#[derive(Debug, Clone)]
pub struct ExplainRequest {
    pub model: ModelSelector,
    pub rows: Vec<FeatureRow>,
    pub method: Method,
    /// The rows came as a batch: a bad one is named `rows[i]`, where a
    /// lone row's features are named as in `Score`.
    pub batch: bool,
    /// When sampled attributions must stop for the answer to arrive in
    /// time, as on `Score`.
    pub deadline: Option<Instant>,
}

/// A what-if row's score and attributions.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    pub model: ModelIdentity,
    pub score: f64,
    pub attribution: DecisionAttribution,
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
    pub explanation_status: ExplanationStatus,
}

impl Decision {
    /// `decided_at` in Unix milliseconds.
    pub fn decided_at_ms(&self) -> i64 {
        self.decided_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_millis() as i64)
    }
}

/// What one scoring call brings to [`Gateway::decide`] besides its rows.
struct Call<'a> {
    /// When consent was judged: the decision's time. A subject erased after
    /// it has its in-flight decisions refused by the writer, however long
    /// inference and attribution then took.
    decided_at: SystemTime,
    explain: ExplainMode,
    evaluation: &'a Evaluation,
    provenance: Arc<Provenance>,
    /// One per row.
    placements: &'a [Placement],
    request_id: &'a str,
    deadline: Option<std::time::Instant>,
    answer_size: Option<&'a AnswerSize>,
}

/// Where a decision's attributions are, or will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExplanationStatus {
    Inline,
    Deferred,
    OnRequest,
    NotApplicable,
}

/// What a decision's consent was judged from: the request's signals and
/// the person's ledger state at that moment.
pub(super) struct Judged {
    signals: Decoded,
    state: Arc<Vec<PurposeState>>,
}

impl Judged {
    /// `package`'s own verdict under the same signals and state, at `at_ms`.
    pub(super) fn evaluate(
        &self,
        policy: &Policy,
        package: &ModelPackage,
        at_ms: i64,
    ) -> Evaluation {
        policy.evaluate(package.schema.columns(), &self.signals, &self.state, at_ms)
    }
}

/// Where the gateway is in its life, as health reports it: only `Ready`
/// is SERVING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The models are loading: nothing can be scored yet.
    Loading,
    Ready,
    /// Loaded, but the models folder holds no model that loads: nothing can
    /// be scored until a package is deployed. Scoring reports NOT_SERVING;
    /// reads, and the deploys that end it, are served.
    NoModel,
    /// A stop has begun: calls are still served while load balancers see
    /// NOT_SERVING, until the server stops accepting them.
    Draining,
}

/// The gateway's shared state: the model registry, the inference pools, the
/// consent ledger and the policy.
pub struct Gateway {
    config: Config,
    access: Access,
    metrics: Metrics,
    pool: InferencePool,
    explain_pool: ExplainPool<AttributeJob>,
    /// Deferred and shadow attributions, at the lowest CPU priority.
    background_pool: ExplainPool<AttributeJob>,
    registry: ArcSwapOption<Registry>,
    ready: watch::Sender<Readiness>,
    /// Ends a stop's grace early (a second signal).
    grace_cut: tokio::sync::Notify,
    consents: Consents,
    policy: Policy,
    store: Arc<Store>,
    cipher: Arc<InputCipher>,
    /// Copies of the packages that served, to explain their decisions
    /// after their folders go.
    archive: Archive,
    /// What recording took lately: inline attributions leave it room
    /// before the call's deadline.
    record_cost: RecordCost,
    /// What inline attributions took lately, per row.
    explain_cost: ExplainCost,
    cache: Arc<ExplanationCache>,
    /// One lock per decision whose attributions a look-up is computing:
    /// look-ups of it at once (a person and a support agent, a client's
    /// retries) wait for the first and find them cached, rather than each
    /// compute them.
    computing: moka::future::Cache<String, Arc<tokio::sync::Mutex<()>>>,
    /// Wakes the deferred-attribution sweeper.
    deferred: Arc<tokio::sync::Notify>,
    /// Held by the one registry change in progress.
    deploying: tokio::sync::Mutex<()>,
    shadows: tokio::sync::mpsc::Sender<shadow::ShadowJob>,
    /// Taken by the shadow task when the models are loaded.
    shadow_jobs: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<shadow::ShadowJob>>>,
    fairness: FairnessMonitor,
    /// Packages of versions no longer served, loaded back from the models
    /// folder to explain their decisions: unloading a version ends its
    /// serving, not people's right to an explanation. Keyed by name,
    /// version and SHA-256: versions that share an artefact differ in
    /// their manifests (what may be named, the reasons' words).
    retired: moka::sync::Cache<(String, String, String), Arc<ModelPackage>>,
    /// Retired versions that could not be loaded back (gone, or another
    /// artefact under their name), with their `model.onnx` as it was then
    /// (length and modification time; None when it was missing), for
    /// [`UNAVAILABLE_FOR`].
    unavailable: moka::sync::Cache<(String, String, String), Option<ArtefactStamp>>,
}

type ArtefactStamp = (u64, Option<std::time::SystemTime>);

/// How long a retired version that could not be loaded back is not tried
/// again while its file stays as it was: an export of a thousand of its
/// decisions tries once.
const UNAVAILABLE_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Recent times to record a call's decisions, as moving averages: of calls
/// of a few rows (mostly the commit's wait), and per row of batches.
#[derive(Debug, Default)]
struct RecordCost {
    /// Microseconds; 0 until measured.
    call_us: std::sync::atomic::AtomicU64,
    row_us: std::sync::atomic::AtomicU64,
}

/// What inline attributions took per row lately, per model and method
/// (an eighth of each new sample, as [`RecordCost`]), so that a call whose
/// deadline they cannot meet defers them at once. A figure not renewed
/// for [`ExplainCost::STALE`] is not trusted: a moment of contention must
/// not keep a model's attributions deferred for good, since calls judged
/// too slow never run to measure again.
#[derive(Default)]
struct ExplainCost(std::sync::Mutex<std::collections::HashMap<CostKey, (Duration, Instant)>>);

/// A model (by its SHA-256) and a method.
type CostKey = (Arc<str>, Method);

impl ExplainCost {
    const STALE: Duration = Duration::from_secs(10);

    /// Counts a call's `rows` attributions that took `took`, or, when it
    /// was cut short (`finished` false), took longer.
    fn observe(&self, key: CostKey, rows: usize, took: Duration, finished: bool) {
        let Ok(rows) = u32::try_from(rows.max(1)) else {
            return;
        };
        let sample = took / rows;
        let now = Instant::now();
        let mut costs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (cost, measured) = costs.entry(key).or_insert((sample, now));
        *cost = if finished {
            *cost - *cost / 8 + sample / 8
        } else {
            (*cost).max(sample)
        };
        *measured = now;
    }

    /// How long `rows` attributions would take, once measured lately.
    fn expected(&self, key: &CostKey, rows: usize) -> Option<Duration> {
        let costs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (cost, measured) = costs.get(key)?;
        (measured.elapsed() < Self::STALE).then_some(())?;
        cost.checked_mul(u32::try_from(rows).ok()?)
    }
}

impl RecordCost {
    /// Rows from which a call's time is counted per row.
    const BATCH: usize = 16;
    /// Assumed until measured: a commit's wait, and a batch row's share.
    const CALL: Duration = Duration::from_millis(5);
    const ROW: Duration = Duration::from_micros(100);

    fn observe(&self, rows: usize, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let (average, sample) = match rows {
            0 => return,
            1..Self::BATCH => (&self.call_us, took.as_micros()),
            n => (&self.row_us, took.as_micros() / n as u128),
        };
        let sample = u64::try_from(sample).unwrap_or(u64::MAX).max(1);
        let old = average.load(Relaxed);
        // An eighth of each new sample: a slow commit counts, and passes.
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        average.store(new, Relaxed);
    }

    /// Room to leave for recording `rows` decisions: twice what it took
    /// lately, for a commit slower than the average.
    fn reserve(&self, rows: usize) -> Duration {
        use std::sync::atomic::Ordering::Relaxed;
        let measured = |average: &std::sync::atomic::AtomicU64, otherwise: Duration| match average
            .load(Relaxed)
        {
            0 => otherwise,
            us => Duration::from_micros(us),
        };
        let expected = match rows {
            0..Self::BATCH => measured(&self.call_us, Self::CALL),
            n => measured(&self.row_us, Self::ROW) * n as u32,
        };
        expected * 2
    }
}

/// A score that is not a finite number is the request's to change only
/// where a feature without declared bounds let a value in; within every
/// bound the manifest declares, the model is at fault, not the caller.
fn not_finite_is_named(package: &ModelPackage, e: InferenceError) -> Error {
    match e {
        InferenceError::NonFinite { row, value } => not_finite(
            &package.manifest.features,
            &format!("{} {}", package.name(), package.version()),
            row,
            value,
        ),
        e => e.into(),
    }
}

fn not_finite(features: &[FeatureSpec], model: &str, row: usize, value: f32) -> Error {
    let unbounded: Vec<&str> = (features.iter())
        .filter(|f| !f.is_bounded())
        .map(|f| f.name.as_str())
        .collect();
    if unbounded.is_empty() {
        return Error::Internal(format!(
            "rows[{row}]: model {model} scored {value} for values within every bound its manifest declares, so no decision is made; a defect of the model, for its owner to fix"
        ));
    }
    let named = match unbounded.len() {
        n @ 6.. => format!("{} and {} more", unbounded[..5].join(", "), n - 5),
        _ => unbounded.join(", "),
    };
    Error::InvalidArgument(format!(
        "rows[{row}]: the model's score for these values is {value}, not a finite number, so no decision is made from them; features whose manifest declares no bounds ({named}) may be far outside what the model was trained on"
    ))
}

impl Gateway {
    /// Opens the consent ledger and starts the inference threads. Models are
    /// loaded separately by [`Gateway::load_models`], so the server can
    /// report NOT_SERVING while they load.
    pub fn new(config: Config) -> Result<Self, Error> {
        let store = Arc::new(Store::open_with(
            &config.database,
            &StoreSettings {
                max_bytes: config.database_max_mb.map(|mb| mb * 1024 * 1024),
                async_commit_window: std::time::Duration::from_millis(
                    config.decisions.async_commit_window_ms,
                ),
                async_max_uncommitted: config.decisions.async_max_uncommitted,
            },
        )?);
        let d = &config.decisions;
        let shortened = store.read(|conn| {
            crate::decisions::apply_retention(conn, d.retention_days, &d.model_retention_days)
        })?;
        if shortened > 0 {
            tracing::info!(
                decisions = shortened,
                "a shorter retention is configured: decisions recorded before are now kept only that long"
            );
        }
        let subject_key = store.bound_key(
            &config.consent.subject_key_file,
            "consent.subject_key_file",
            None,
        )?;
        let input_key = store.bound_key(
            &config.decisions.input_key_file,
            "decisions.input_key_file",
            Some(crate::decisions::sealed_with),
        )?;
        // The configuration refuses one file for both; a copy or a hard
        // link of it is only seen here.
        if input_key == subject_key {
            return Err(crate::store::StoreError::Key {
                setting: "decisions.input_key_file",
                path: config.decisions.input_key_file.clone(),
                message: "holds the same key as consent.subject_key_file (a copy or a hard link of it); each key has one use: give it a key of its own".into(),
            }
            .into());
        }
        let cipher = Arc::new(InputCipher::new(&input_key));
        store.seal_with(cipher.clone());
        let sealed = store.read(|conn| crate::decisions::shadow::seal_clear_live(conn, &cipher))?;
        if sealed > 0 {
            tracing::info!(
                shadow_outputs = sealed,
                "sealed the live attributions recorded in clear beside shadow outputs"
            );
        }
        let ledger = Arc::new(Ledger::new(store.clone(), subject_key));
        let cache = Arc::new(ExplanationCache::new(
            config.decisions.cache_max_bytes,
            std::time::Duration::from_secs(config.decisions.cache_ttl_secs),
        ));
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
        let explain_pool = ExplainPool::new(
            "candor-explain",
            config.inference_threads,
            config.inference_queue,
            Priority::Normal,
        );
        let background_pool = ExplainPool::new(
            "candor-deferred",
            config.inference_threads,
            config.inference_queue,
            Priority::Lowest(Pacing::new(config.background_share.into())),
        );
        let (shadows, shadow_jobs) = tokio::sync::mpsc::channel(shadow::SHADOW_QUEUE);
        Ok(Self {
            shadows,
            shadow_jobs: std::sync::Mutex::new(Some(shadow_jobs)),
            fairness: FairnessMonitor::new(config.fairness.clone()),
            // A few at a time, for a while: each holds ORT sessions.
            retired: moka::sync::Cache::builder()
                .max_capacity(4)
                .time_to_idle(std::time::Duration::from_secs(600))
                .build(),
            unavailable: moka::sync::Cache::builder()
                .max_capacity(256)
                .time_to_live(UNAVAILABLE_FOR)
                .build(),
            access: Access::new(config.access.clone(), &ledger.token_key()),
            metrics: Metrics::default(),
            consents: Consents::new(ledger, config.consent.controller.clone(), cache.clone()),
            policy,
            store,
            cipher,
            record_cost: RecordCost::default(),
            explain_cost: ExplainCost::default(),
            archive: Archive::new(
                (config.database.parent())
                    .unwrap_or(std::path::Path::new("."))
                    .join("packages"),
            ),
            cache,
            computing: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(std::time::Duration::from_secs(60))
                .build(),
            deferred: Arc::new(tokio::sync::Notify::new()),
            deploying: tokio::sync::Mutex::new(()),
            config,
            pool,
            explain_pool,
            background_pool,
            registry: ArcSwapOption::empty(),
            ready: watch::channel(Readiness::Loading).0,
            grace_cut: tokio::sync::Notify::new(),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Records a read of `subject_ref`'s data by someone other than that
    /// person, before the data is shown.
    pub async fn record_staff_read(&self, read: StaffRead) -> Result<(), Error> {
        Ok(audit::record(&self.store, read).await?)
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

    pub fn fairness(&self) -> &FairnessMonitor {
        &self.fairness
    }

    /// ORT sessions each package opens: one per inference worker and per
    /// explanation thread of either pool.
    fn session_slots(&self) -> usize {
        self.pool.slots() + self.explain_pool.threads() + self.background_pool.threads()
    }

    /// Loads ONNX Runtime and every package in the models folder, then marks
    /// the gateway ready.
    pub async fn load_models(self: &Arc<Self>) -> Result<(), Error> {
        let this = self.clone();
        let registry = tokio::task::spawn_blocking(move || {
            runtime::init(&this.config.ort_lib)?;
            let gate: Option<crate::models::Gate<'_>> = this
                .config
                .gate_at_startup
                .then_some(&deploy::deployment_gate);
            Registry::load_dir(&this.config.models_dir, this.session_slots(), None, gate)
                .map_err(Error::from)
        })
        .await
        .map_err(|e| Error::Internal(format!("model loading panicked: {e}")))??;
        let (registry, failed) = registry;
        for e in &failed {
            tracing::error!(error = %e, "model package not loaded; the other models serve");
        }
        let count: usize = registry.models().map(|(_, m)| m.versions.len()).sum();
        // A retention for a model that is not here (a misspelt name) would
        // never apply, and its decisions would keep the default.
        for model in self.config.decisions.model_retention_days.keys() {
            if registry.model(model).is_err() {
                tracing::warn!(
                    model,
                    "decisions.model_retention_days names a model that is not loaded; its retention applies once it is"
                );
            }
        }
        let registry = Arc::new(registry);
        self.keep_packages(&registry).await;
        shadow::warn_unscored(&registry);
        self.registry.store(Some(registry));
        if self.config.watch_models {
            self.watch_models()?;
        }
        self.spawn_maintenance();
        self.note_models(count);
        // Said once the gateway serves them: scripts wait for this line.
        if count == 0 {
            tracing::warn!(dir = %self.config.models_dir.display(), "no model loaded: nothing can be scored until a package is deployed in the models folder");
        } else {
            tracing::info!(models = count, dir = %self.config.models_dir.display(), "models loaded");
        }
        Ok(())
    }

    /// Readiness once `count` model versions serve: ready, or with no
    /// model nothing can be scored. A stop that began stays a stop.
    pub(super) fn note_models(&self, count: usize) {
        let now = if count == 0 {
            Readiness::NoModel
        } else {
            Readiness::Ready
        };
        self.ready.send_if_modified(|r| {
            let changes = *r != Readiness::Draining && *r != now;
            if changes {
                *r = now;
            }
            changes
        });
    }

    /// Follows readiness: loading, then ready (or without a model), then
    /// draining once a stop begins.
    pub fn readiness(&self) -> watch::Receiver<Readiness> {
        self.ready.subscribe()
    }

    /// Marks the gateway as stopping: health turns NOT_SERVING so that load
    /// balancers send new calls elsewhere, while the calls that still
    /// arrive are served.
    pub fn drain(&self) {
        self.ready.send_replace(Readiness::Draining);
    }

    /// Ends a stop's grace (`shutdown_grace_secs`) now, or as soon as it
    /// begins: the operator who signals twice does not want to wait.
    pub fn end_grace(&self) {
        self.grace_cut.notify_one();
    }

    /// Resolves when [`Self::end_grace`] is called.
    pub async fn grace_ended(&self) {
        self.grace_cut.notified().await;
    }

    /// True while the database's commits succeed (see
    /// [`Store::commits_succeed`]).
    pub fn commits_succeed(&self) -> watch::Receiver<bool> {
        self.store.commits_succeed()
    }

    pub fn registry(&self) -> Result<Arc<Registry>, Error> {
        self.registry.load_full().ok_or(Error::NotReady)
    }

    /// The package `selector` names, routing none to production.
    pub fn resolve(&self, selector: &ModelSelector) -> Result<Arc<ModelPackage>, Error> {
        Ok(self.registry()?.resolve(selector, None)?)
    }

    /// The package that will score this subject's requests.
    pub fn serving(
        &self,
        selector: &ModelSelector,
        subject: &Subject,
    ) -> Result<Arc<ModelPackage>, Error> {
        Ok(self.route(selector, subject)?.0)
    }

    /// The package that serves this subject: the canary for the subjects in
    /// its share, production for the others.
    fn route(
        &self,
        selector: &ModelSelector,
        subject: &Subject,
    ) -> Result<(Arc<ModelPackage>, Option<String>), Error> {
        let subject_ref = subject
            .id
            .as_deref()
            .map(|id| self.consents.ledger().pseudonymise(id));
        let package = self.registry()?.resolve(selector, subject_ref.as_deref())?;
        Ok((package, subject_ref))
    }

    pub async fn score(&self, request: ScoreRequest) -> Result<Decision, Error> {
        let ScoreRequest {
            model,
            subject,
            row,
            explain,
            audit,
            request_id,
            deadline,
        } = request;
        let request = BatchRequest {
            model,
            subject,
            rows: vec![row],
            placements: Vec::new(),
            explain,
            audit,
            request_id,
            deadline,
            // One decision's answer is far below any message limit.
            answer_size: None,
        };
        let decisions = self
            .score_rows(request, |package, rows| {
                Self::validate_row(package, &rows[0])
            })
            .await?;
        Ok(decisions.into_iter().next().expect("one row, one decision"))
    }

    pub async fn score_batch(&self, request: BatchRequest) -> Result<Vec<Decision>, Error> {
        self.score_rows(request, |package, rows| self.validate_rows(package, rows))
            .await
    }

    /// Routes, validates with `validate`, judges consent, decides, and
    /// hands the answer to [`Self::after`].
    async fn score_rows(
        &self,
        request: BatchRequest,
        validate: impl FnOnce(&ModelPackage, &[FeatureRow]) -> Result<Vec<f32>, Error>,
    ) -> Result<Vec<Decision>, Error> {
        let started = Instant::now();
        let (package, subject_ref) = self.route(&request.model, &request.subject)?;
        never_scored(&package)?;
        if !request.audit.is_empty() {
            // Any loaded version's columns: the monitor counts per model,
            // and a canary auditing another column must not refuse its
            // share of subjects what production takes.
            let registry = self.registry()?;
            let audited = &registry.model(package.name())?.audited;
            if let Some(name) = self.fairness.unmonitored(audited, &request.audit) {
                return Err(Error::InvalidArgument(format!(
                    "context.audit_attributes[{name:?}]: not monitored for {}; it counts the columns its manifests audit ({}) and fairness.attributes ({})",
                    package.name(),
                    audited.join(", "),
                    self.fairness.config().attributes.join(", ")
                )));
            }
        }
        let rows = validate(&package, &request.rows)?;
        self.metrics.stage(Stage::Validate, started);
        let placements = if request.placements.is_empty() {
            vec![request.subject.placement.clone(); request.rows.len()]
        } else {
            request.placements
        };
        let decided_at = SystemTime::now();
        let (evaluation, provenance, judged) =
            self.judge(&package, request.subject, subject_ref).await?;
        let decisions = self
            .decide(
                package.clone(),
                rows,
                Call {
                    decided_at,
                    explain: request.explain,
                    evaluation: &evaluation,
                    provenance,
                    placements: &placements,
                    request_id: &request.request_id,
                    deadline: request.deadline,
                    answer_size: request.answer_size.as_ref(),
                },
            )
            .await?;
        self.after(
            &request.model,
            &package,
            &request.rows,
            &decisions,
            &request.audit,
            &judged,
        );
        Ok(decisions)
    }

    /// What follows an answered decision without delaying it: the fairness
    /// monitor's counts and the shadow versions' work.
    fn after(
        &self,
        selector: &ModelSelector,
        package: &Arc<ModelPackage>,
        rows: &[FeatureRow],
        decisions: &[Decision],
        audit: &AuditAttributes,
        judged: &Judged,
    ) {
        if let Some(threshold) = package.manifest.model.output.decision_threshold
            && !audit.is_empty()
        {
            let scores: Vec<f64> = decisions.iter().filter_map(|d| d.score).collect();
            self.fairness
                .observe(package.name(), threshold, audit, &scores, now_ms());
        }
        self.shadow(selector, package, rows, decisions, judged);
    }

    /// Evaluates consent for a subject and this model, and records the
    /// inline signals as evidence: everything the decision will rest on,
    /// and what it was judged from, for the shadow versions to be judged
    /// from too.
    async fn judge(
        &self,
        package: &ModelPackage,
        subject: Subject,
        subject_ref: Option<String>,
    ) -> Result<(Evaluation, Arc<Provenance>, Judged), Error> {
        let started = Instant::now();
        let signals = subject.signals.decode()?;
        let ledger = self.consents.ledger();
        let mut state = match &subject_ref {
            Some(s) => self.consents.state_of(s).await?,
            None => Arc::default(),
        };
        // A known person's US opt-out outlives the request that carried it.
        if let Some(s) = &subject_ref
            && policy::opt_out_to_remember(&signals, &state, now_ms())
        {
            let jurisdiction = signals
                .signals
                .jurisdiction
                .as_ref()
                .map_or(String::new(), Jurisdiction::code);
            self.consents.remember_opt_out(s, jurisdiction).await?;
            state = self.consents.state_of(s).await?;
        }
        let columns = package.schema.columns();
        let mut evaluation = self.policy.evaluate(columns, &signals, &state, now_ms());
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
            jurisdiction: signals
                .signals
                .jurisdiction
                .as_ref()
                .map_or(String::new(), Jurisdiction::code),
            regime: evaluation.regime,
            tier: evaluation.tier,
            purposes: std::mem::take(&mut evaluation.purposes),
            rules: evaluation.rules.iter().map(|r| (*r).to_owned()).collect(),
            masked_features: evaluation
                .masked
                .iter()
                .map(|&i| columns[i].name.clone())
                .collect(),
            ledger_records,
            signals_hash: signals.hash.clone(),
            policy_version: self.policy.version().to_owned(),
            policy_hash: self.policy.hash().to_owned(),
            model_sha256: package.sha256.clone(),
            subject_ref,
            tc_last_updated_ms: signals.tc_last_updated_ms(),
        };
        self.metrics.stage(Stage::Consent, started);
        Ok((evaluation, Arc::new(provenance), Judged { signals, state }))
    }

    /// Scores and attributes rows outside any decision: what-if analysis for
    /// ML engineers. Nothing is recorded and no decision id is issued.
    pub async fn explain(&self, request: ExplainRequest) -> Result<Vec<Explained>, Error> {
        let package = self.resolve(&request.model)?;
        never_scored(&package)?;
        let rows = match request.rows.as_slice() {
            [row] if !request.batch => Self::validate_row(&package, row)?,
            rows => self.validate_rows(&package, rows)?,
        };
        let scores = self
            .pool
            .predict(package.backend.clone(), rows.clone())
            .await
            .map_err(|e| not_finite_is_named(&package, e))?;
        let attributions = self
            .attribute(
                &package,
                rows,
                scores.clone(),
                request.method,
                &[],
                Urgency::Waiting {
                    deadline: request.deadline,
                },
            )
            .await?;
        Ok(scores
            .into_iter()
            .zip(attributions)
            .map(|(score, attribution)| Explained {
                model: package.identity.clone(),
                score: f64::from(score),
                attribution,
            })
            .collect())
    }

    /// Checks a lone row and encodes it in column order.
    fn validate_row(package: &ModelPackage, row: &FeatureRow) -> Result<Vec<f32>, Error> {
        let mut encoded = Vec::with_capacity(package.schema.width());
        package
            .schema
            .encode_row(row, &mut encoded)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(encoded)
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

    /// Applies the consent verdict to validated rows, scores what remains,
    /// attributes each score when asked, and records the decisions.
    async fn decide(
        &self,
        package: Arc<ModelPackage>,
        mut rows: Vec<f32>,
        call: Call<'_>,
    ) -> Result<Vec<Decision>, Error> {
        let Call {
            decided_at,
            explain,
            evaluation,
            provenance,
            placements,
            request_id,
            deadline,
            answer_size,
        } = call;
        let width = package.schema.width();
        let decision = |score, attribution, explanation_status| Decision {
            id: Uuid::now_v7(),
            model: package.identity.clone(),
            score,
            decided_at,
            attribution,
            provenance: provenance.clone(),
            explanation_status,
        };
        if evaluation.tier == Tier::Refused {
            let decisions: Vec<Decision> = (0..rows.len() / width)
                .map(|_| decision(None, None, ExplanationStatus::NotApplicable))
                .collect();
            self.sendable(answer_size, &decisions)?;
            let started = Instant::now();
            self.record(&package, &decisions, None, placements, request_id, None)
                .await?;
            self.metrics.stage(Stage::Record, started);
            // Counted once recorded: a decision the record refused is none.
            self.metrics.decisions(evaluation.tier, decisions.len());
            return Ok(decisions);
        }
        for row in rows.chunks_mut(width) {
            for &i in &evaluation.masked {
                row[i] = package.substitutes[i];
            }
        }
        let started = Instant::now();
        let scores = self
            .pool
            .predict(package.backend.clone(), rows.clone())
            .await
            .map_err(|e| not_finite_is_named(&package, e))?;
        self.metrics.stage(Stage::Inference, started);
        let (mut status, mut deferred) = match explain {
            ExplainMode::Inline(_) => (ExplanationStatus::Inline, None),
            ExplainMode::Deferred(method) => (ExplanationStatus::Deferred, Some(method)),
            ExplainMode::None => (ExplanationStatus::OnRequest, None),
        };
        let mut attributions = None;
        if let ExplainMode::Inline(method) = explain {
            let started = Instant::now();
            // Recording the decisions comes after, within the same deadline:
            // attributions that run up to it leave the answer late.
            let deadline = deadline.map(|at| {
                at.checked_sub(self.record_cost.reserve(scores.len()))
                    .unwrap_or(started)
            });
            let cost = (package.identity.sha256.clone(), method);
            // Attributions that cannot be done in time are owed from the
            // start: begun, they would take the cores the rest of the call
            // needs, only to be thrown away. (The sampled estimator stops
            // at the deadline with what it has.)
            let hopeless = !package.explainer.stops_at_deadline()
                && deadline
                    .zip(self.explain_cost.expected(&cost, scores.len()))
                    .is_some_and(|(at, takes)| started + takes > at);
            // Sampling stops a fifth of the remaining time early, so that a
            // cut-short estimate still beats the fallback below.
            let sampling_deadline =
                deadline.map(|at| at - at.saturating_duration_since(started) / 5);
            // Built only for attributions that will run: it copies the rows.
            let work = || {
                self.attribute(
                    &package,
                    rows.clone(),
                    scores.clone(),
                    method,
                    &evaluation.masked,
                    Urgency::Waiting {
                        deadline: sampling_deadline,
                    },
                )
            };
            let done = match (hopeless, deadline) {
                (true, _) => None,
                (false, Some(at)) => tokio::time::timeout_at(at.into(), work()).await.ok(),
                (false, None) => Some(work().await),
            };
            // A call cut short took at least this long. A call judged too
            // slow, or turned away by a saturated pool, measured nothing.
            match &done {
                Some(Ok(_)) => {
                    self.explain_cost
                        .observe(cost, scores.len(), started.elapsed(), true)
                }
                None if !hopeless => {
                    self.explain_cost
                        .observe(cost, scores.len(), started.elapsed(), false)
                }
                _ => {}
            }
            match done {
                Some(Ok(a)) => attributions = Some(a.into_iter()),
                // Out of time, or the explanation threads are saturated:
                // the score still goes out, and its attributions are owed
                // (the response says so).
                None | Some(Err(Error::ExplainPool(PoolError::Overloaded(_)))) => {
                    status = ExplanationStatus::Deferred;
                    deferred = Some(method);
                }
                Some(Err(e)) => return Err(e),
            }
            self.metrics.stage(Stage::Explain, started);
        }
        let mut decisions: Vec<Decision> = scores
            .iter()
            .map(|s| {
                let attribution = attributions.as_mut().and_then(Iterator::next);
                decision(Some(f64::from(*s)), attribution, status)
            })
            .collect();
        let mut sendable = self.sendable(answer_size, &decisions);
        if let (Err(_), ExplainMode::Inline(method), ExplanationStatus::Inline) =
            (&sendable, explain, status)
        {
            // Too large to send with their attributions: the scores go
            // out and the attributions are owed, as when time runs out.
            for d in &mut decisions {
                d.attribution = None;
                d.explanation_status = ExplanationStatus::Deferred;
            }
            deferred = Some(method);
            sendable = self.sendable(answer_size, &decisions);
        }
        sendable?;
        let started = Instant::now();
        self.record(
            &package,
            &decisions,
            Some(&rows),
            placements,
            request_id,
            deferred,
        )
        .await?;
        self.metrics.stage(Stage::Record, started);
        self.record_cost.observe(decisions.len(), started.elapsed());
        self.metrics.decisions(evaluation.tier, decisions.len());
        Ok(decisions)
    }

    /// Refuses decisions whose answer would exceed `max_message_bytes`.
    fn sendable(&self, size: Option<&AnswerSize>, decisions: &[Decision]) -> Result<(), Error> {
        // One decision without attributions is far below any limit, as on
        // `Score`, and measuring it would cost every such call.
        let (Some(size), false) = (size, matches!(decisions, [d] if d.attribution.is_none()))
        else {
            return Ok(());
        };
        let limit = self.config.max_message_bytes;
        match (size.bytes)(decisions) {
            bytes if bytes > limit => Err(Error::answer_too_large(
                size.field,
                decisions.len(),
                bytes,
                limit,
            )),
            _ => Ok(()),
        }
    }

    /// Attributes validated rows whose scores ORT returned, on the pool
    /// their urgency calls for, answered as `T` (named attributions, or the
    /// record's form); features at `masked` positions are marked masked.
    async fn attribute<T: Answer>(
        &self,
        package: &Arc<ModelPackage>,
        inputs: Vec<f32>,
        ort_scores: Vec<f32>,
        method: Method,
        masked: &[usize],
        urgency: Urgency,
    ) -> Result<Vec<T>, Error> {
        // Each explanation thread has its own session slot after the
        // inference workers', so the model-agnostic estimator never waits.
        let explain_slots = self.pool.slots();
        let (pool, first_slot, deadline) = match urgency {
            Urgency::Waiting { deadline } => (&self.explain_pool, explain_slots, deadline),
            Urgency::Background => (
                &self.background_pool,
                explain_slots + self.explain_pool.threads(),
                None,
            ),
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        pool.submit(AttributeJob {
            package: package.clone(),
            inputs,
            scores: ort_scores,
            method,
            masked: masked.to_vec(),
            deadline,
            first_slot,
            reply: T::reply(reply),
        })?;
        answer
            .await
            .map_err(|_| PoolError::ShutDown)?
            .map_err(|e| Error::Internal(format!("attribution failed: {e}")))
            .inspect(|done| {
                for a in done {
                    self.metrics.residual(a.residual());
                }
            })
    }
}

/// The load gate lets special-category data in only for purposes other
/// than advertising (measurement); no request's rows, for an ad decision or
/// a what-if explanation, ever reach such a package, whatever it declares.
fn never_scored(package: &ModelPackage) -> Result<(), Error> {
    match package.barred_from_ads() {
        Some(why) => Err(Error::FailedPrecondition(format!(
            "model: {why}; it is loaded for its declared purposes only"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::manifest::Manifest;

    /// Within every bound the manifest declares, a score that is not a
    /// number is the model's defect; where a feature has no bounds, the
    /// request may be at fault, and the answer names those features.
    /// The room left for recording follows what recording took, per call
    /// for single decisions and per row for batches.
    #[test]
    fn recording_is_given_room_as_it_took_lately() {
        let cost = RecordCost::default();
        assert_eq!(cost.reserve(1), RecordCost::CALL * 2);
        assert_eq!(cost.reserve(300), RecordCost::ROW * 600);
        cost.observe(1, Duration::from_millis(2));
        cost.observe(300, Duration::from_millis(60));
        assert_eq!(cost.reserve(1), Duration::from_millis(4));
        assert_eq!(cost.reserve(300), Duration::from_millis(120));
        // A slow commit moves the average an eighth of the way.
        cost.observe(1, Duration::from_millis(10));
        assert_eq!(cost.reserve(1), Duration::from_millis(6));
    }

    /// Inline attributions are expected to take what they took per row
    /// lately; a call cut short raises the figure to at least what it
    /// spent, so that the next such call defers at once.
    #[test]
    fn attributions_are_expected_to_take_what_they_took_lately() {
        let cost = ExplainCost::default();
        let key = (Arc::<str>::from("sha"), Method::PathDependent);
        assert_eq!(cost.expected(&key, 10), None, "not measured yet");
        cost.observe(key.clone(), 4, Duration::from_millis(8), true);
        assert_eq!(cost.expected(&key, 100), Some(Duration::from_millis(200)));
        // Cut short after 30 ms of 10 rows: at least 3 ms a row.
        cost.observe(key.clone(), 10, Duration::from_millis(30), false);
        assert_eq!(cost.expected(&key, 1), Some(Duration::from_millis(3)));
        // A cut-short call that spent less says nothing new.
        cost.observe(key.clone(), 10, Duration::from_millis(1), false);
        assert_eq!(cost.expected(&key, 1), Some(Duration::from_millis(3)));
        let other = (Arc::<str>::from("sha"), Method::Interventional);
        assert_eq!(cost.expected(&other, 1), None, "per method");
        // An old figure is not trusted: the next call runs and measures.
        cost.0.lock().unwrap().get_mut(&key).unwrap().1 -= ExplainCost::STALE;
        assert_eq!(cost.expected(&key, 1), None, "stale");
    }

    #[test]
    fn a_score_that_is_not_finite_is_the_models_within_its_bounds() {
        let feature = |name: &str, position: usize, bounds: &str| {
            format!(
                "[[features]]\nname = \"{name}\"\nposition = {position}\ntype = \"float\"\n{bounds}\ndescription = \"d\"\ncategory = \"device\"\nsource = \"first_party\"\n"
            )
        };
        let manifest = |second: &str| {
            Manifest::from_toml(&format!(
                crate::models::manifest::test_manifest!("{}{}"),
                feature("price", 0, "min = 1.0\nmax = 3.0"),
                feature("visits", 1, second),
            ))
            .unwrap()
        };
        let bounded = not_finite(
            &manifest("min = 0.0\nmax = 9.0").features,
            "m 1.0.0",
            1,
            f32::INFINITY,
        );
        assert!(matches!(bounded, Error::Internal(_)), "{bounded}");
        assert!(
            bounded
                .to_string()
                .contains("rows[1]: model m 1.0.0 scored inf for values within every bound"),
            "{bounded}"
        );
        let open = not_finite(&manifest("min = 0.0").features, "m 1.0.0", 0, f32::NAN);
        assert!(matches!(open, Error::InvalidArgument(_)), "{open}");
        assert!(open.to_string().contains("no bounds (visits)"), "{open}");
    }
}
