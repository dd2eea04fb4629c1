//! Prometheus metrics: what operators watch. Per-RPC counts and latency are
//! observed by the gRPC admission layer, per-stage latency and tier counts
//! by the gateway; gauges that describe state (cache, backlog, ledger,
//! pending commits) and the explanation cache's own counts are read at
//! scrape time so they are never stale. What only goes up is a counter
//! (named `..._total`), whatever reads it.
//!
//! Served in the OpenMetrics text format on a separate HTTP port by
//! [`serve`], beside a `/healthz` that follows readiness.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::net::TcpListener;

use crate::{
    consent::policy::Tier,
    gateway::{Gateway, Readiness},
};

/// A stage of a scoring call, timed on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Validate,
    Consent,
    Inference,
    Explain,
    Record,
}

impl Stage {
    /// In declaration order: a stage's value is its index here.
    const ALL: [Stage; 5] = [
        Stage::Validate,
        Stage::Consent,
        Stage::Inference,
        Stage::Explain,
        Stage::Record,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Stage::Validate => "validate",
            Stage::Consent => "consent",
            Stage::Inference => "inference",
            Stage::Explain => "explain",
            Stage::Record => "record",
        }
    }
}

type Labels<const N: usize> = [(&'static str, &'static str); N];
type Histograms<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// From 50 µs to ~49 s in steps of 1.5× (a slow call still lands in a
/// bucket), fine enough to read a p99 from; each bound rounded to
/// three significant digits, so that its `le` label reads as written
/// (0.000075, not 0.00007500000000000001).
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 1.5, 35).map(|bound| {
        format!("{bound:.2e}")
            .parse()
            .expect("a formatted float parses")
    }))
}

pub struct Metrics {
    registry: Registry,
    rpc_requests: Family<Labels<2>, Counter>,
    rpc_seconds: Histograms<1>,
    /// `stage_duration_seconds` by [`Stage`], and `decisions` by [`Tier`],
    /// looked up once here: every scoring call observes several, and a
    /// family look-up hashes its labels under a lock.
    stage_seconds: [Histogram; Stage::ALL.len()],
    decisions: [Counter; 3],
    in_flight: Gauge,
    answers_unread: Gauge,
    /// The largest |base + Σφ − margin| seen, as f64 bits.
    max_residual: AtomicU64,
    // Read from the gateway at scrape time.
    max_residual_gauge: Gauge<f64, AtomicU64>,
    lookups: Family<Labels<1>, Counter>,
    cache_hit_ratio: Gauge<f64, AtomicU64>,
    backlog: Gauge,
    shadow_dropped: Counter,
    disparate_impact: Family<[(&'static str, String); 2], Gauge<f64, AtomicU64>>,
    fairness_flagged: Family<[(&'static str, String); 2], Gauge>,
    ledger_records: Gauge,
    pending_commit: Gauge,
    sqlite_memory: Gauge,
    database_bytes: Gauge,
    wal_bytes: Gauge,
    retention_removed: Family<Labels<1>, Counter>,
    retention_failures: Family<Labels<1>, Counter>,
}

/// What the retention purge removes.
pub const RETENTION_KINDS: [&str; 3] = ["decisions", "evidence", "staff_reads"];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("candor");
        let rpc_requests = Family::default();
        registry.register(
            "rpc_requests",
            "gRPC calls by method and status code",
            rpc_requests.clone(),
        );
        let rpc_seconds: Histograms<1> = Family::new_with_constructor(latency);
        registry.register(
            "rpc_duration_seconds",
            "Latency of admitted gRPC calls by method, until the response headers or until the client went away",
            rpc_seconds.clone(),
        );
        let stage_seconds: Histograms<1> = Family::new_with_constructor(latency);
        registry.register(
            "stage_duration_seconds",
            "Scoring latency by stage: validate, consent, inference, explain, record",
            stage_seconds.clone(),
        );
        let decisions: Family<Labels<1>, Counter> = Family::default();
        registry.register("decisions", "Decisions by consent tier", decisions.clone());
        let in_flight = Gauge::default();
        registry.register(
            "rpc_in_flight",
            "gRPC calls admitted and not yet answered",
            in_flight.clone(),
        );
        let answers_unread = Gauge::default();
        registry.register(
            "rpc_answers_unread",
            "Answers handed to their connections and not yet read by their clients; with rpc_in_flight, what limits.max_in_flight counts",
            answers_unread.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let max_residual_gauge = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "additivity_residual_max",
            "Largest |base + sum of attributions - model margin| since start",
            max_residual_gauge.clone(),
        );
        let cache_hit_ratio = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "explanation_cache_hit_ratio",
            "Explanation look-ups answered from the cache, of all look-ups",
            cache_hit_ratio.clone(),
        );
        let lookups = Family::default();
        registry.register(
            "explanation_lookups",
            "Explanation look-ups since start, by what answered them: the cache, the decision record, or attributions computed from sealed inputs",
            lookups.clone(),
        );
        let shadow_dropped = Counter::default();
        registry.register(
            "shadow_dropped",
            "Requests whose shadow scoring was dropped because its queue was full",
            shadow_dropped.clone(),
        );
        let disparate_impact = Family::default();
        registry.register(
            "fairness_disparate_impact",
            "Lowest selection-rate ratio of an audit group to the most favoured group, over the monitor's window, by model and audit attribute",
            disparate_impact.clone(),
        );
        let fairness_flagged = Family::default();
        registry.register(
            "fairness_flagged",
            "1 when a model's disparate-impact ratio for an audit attribute is below the configured threshold",
            fairness_flagged.clone(),
        );
        let retention_removed = Family::default();
        registry.register(
            "retention_removed",
            "Records the retention purge deleted or emptied since start, by kind: decisions, evidence (consent evidence emptied), staff_reads",
            retention_removed.clone(),
        );
        let retention_failures = Family::default();
        registry.register(
            "retention_failures",
            "Retention purge runs that stopped on a database error, by kind (the log says which error)",
            retention_failures.clone(),
        );
        // At zero from the start, so that an alert on them has a series.
        for kind in RETENTION_KINDS {
            let labels = [("kind", kind)];
            drop(retention_removed.get_or_create(&labels));
            drop(retention_failures.get_or_create(&labels));
        }
        Self {
            lookups,
            shadow_dropped,
            retention_removed,
            retention_failures,
            database_bytes: gauge(
                &mut registry,
                "database_bytes",
                "Size of the database file (its free pages included: space the record reuses)",
            ),
            wal_bytes: gauge(
                &mut registry,
                "database_wal_bytes",
                "Size of the database's write-ahead log, beside the file",
            ),
            disparate_impact,
            fairness_flagged,
            backlog: gauge(
                &mut registry,
                "explanation_backlog",
                "Recorded decisions still owed deferred attributions",
            ),
            ledger_records: gauge(
                &mut registry,
                "ledger_records",
                "Records in the consent ledger's hash chain",
            ),
            pending_commit: gauge(
                &mut registry,
                "records_pending_commit",
                "Writes queued for the database writer, not yet committed",
            ),
            sqlite_memory: gauge(
                &mut registry,
                "sqlite_memory_bytes",
                "Bytes SQLite holds on the C heap, outside Rust's allocator",
            ),
            registry,
            rpc_requests,
            rpc_seconds,
            stage_seconds: Stage::ALL.map(|s| {
                stage_seconds
                    .get_or_create(&[("stage", s.as_str())])
                    .clone()
            }),
            // In declaration order, as `Stage::ALL`: the enum's value is the index.
            decisions: [Tier::Personalised, Tier::Contextual, Tier::Refused]
                .map(|t| decisions.get_or_create(&[("tier", t.as_str())]).clone()),
            in_flight,
            answers_unread,
            max_residual: AtomicU64::new(0f64.to_bits()),
            max_residual_gauge,
            cache_hit_ratio,
        }
    }
}

impl Metrics {
    /// An admitted call, answered with `code` after running since `started`.
    pub fn rpc(&self, rpc: &'static str, code: &'static str, started: Instant) {
        self.count(rpc, code);
        self.rpc_latency(rpc, started);
    }

    /// The time to a call's answer (a stream's first), without counting
    /// the call: a stream is counted at its end ([`Metrics::count`]).
    pub fn rpc_latency(&self, rpc: &'static str, started: Instant) {
        self.rpc_seconds
            .get_or_create(&[("rpc", rpc)])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts a call under the code its client got, without its latency:
    /// a call refused before it ran (unauthenticated, denied, shed), kept
    /// out of the latency of the work the gateway does, or a stream at its
    /// end.
    pub fn count(&self, rpc: &'static str, code: &'static str) {
        self.rpc_requests
            .get_or_create(&[("rpc", rpc), ("code", code)])
            .inc();
    }

    pub fn stage(&self, stage: Stage, started: Instant) {
        self.stage_seconds[stage as usize].observe(started.elapsed().as_secs_f64());
    }

    pub fn decisions(&self, tier: Tier, count: usize) {
        self.decisions[tier as usize].inc_by(count as u64);
    }

    /// One step of a retention purge of `kind` (one of [`RETENTION_KINDS`]):
    /// what it removed, or that it failed.
    pub fn retention(&self, kind: &'static str, removed: Option<u64>) {
        let labels = [("kind", kind)];
        match removed {
            Some(n) => {
                self.retention_removed.get_or_create(&labels).inc_by(n);
            }
            None => {
                self.retention_failures.get_or_create(&labels).inc();
            }
        }
    }

    pub fn shadow_dropped(&self) {
        self.shadow_dropped.inc();
    }

    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    pub fn answers_unread(&self) -> &Gauge {
        &self.answers_unread
    }

    pub fn residual(&self, residual: f64) {
        if !residual.is_finite() {
            return;
        }
        let _ = self
            .max_residual
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                (residual > f64::from_bits(bits)).then_some(residual.to_bits())
            });
    }

    /// The text exposition, with state gauges read from `gateway` now.
    pub fn render(&self, gateway: &Gateway) -> String {
        let counts = gateway.cache().counts();
        for (answered_from, n) in [
            ("cache", counts.hits),
            ("record", counts.record_reads),
            ("computed", counts.computed),
        ] {
            // The cache counts since start; a max, not a store, so that
            // two scrapes racing cannot move the counter back.
            self.lookups
                .get_or_create(&[("answered_from", answered_from)])
                .inner()
                .fetch_max(n, Ordering::Relaxed);
        }
        let looked_up = counts.hits + counts.record_reads + counts.computed;
        self.cache_hit_ratio.set(if looked_up == 0 {
            0.0
        } else {
            counts.hits as f64 / looked_up as f64
        });
        self.max_residual_gauge
            .set(f64::from_bits(self.max_residual.load(Ordering::Relaxed)));
        // Only what the window holds now: a ratio that became undefined (too
        // few decisions, nobody selected) or an attribute that left the
        // window must not stay on display.
        self.disparate_impact.clear();
        self.fairness_flagged.clear();
        for a in gateway.fairness().report("", "", crate::store::now_ms()) {
            let labels = [("model", a.model), ("attribute", a.attribute)];
            if let Some(ratio) = a.disparate_impact {
                self.disparate_impact.get_or_create(&labels).set(ratio);
            }
            self.fairness_flagged
                .get_or_create(&labels)
                .set(i64::from(a.flagged));
        }
        let sizes = gateway.store_sizes();
        self.backlog.set(sizes.owed_attributions);
        self.ledger_records.set(sizes.ledger_records);
        self.pending_commit.set(sizes.pending_writes);
        self.sqlite_memory.set(crate::store::sqlite_memory_bytes());
        self.database_bytes.set(sizes.database_bytes);
        self.wal_bytes.set(sizes.wal_bytes);
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::{http::StatusCode, routing::get};
    let metrics = {
        let gateway = gateway.clone();
        move || {
            let gateway = gateway.clone();
            async move {
                // Scrapes read SQLite for the backlog and ledger size.
                let text = tokio::task::spawn_blocking(move || gateway.metrics().render(&gateway))
                    .await
                    .unwrap_or_default();
                // What `encode` writes: declared as Prometheus' older text
                // format, the `_total` samples of a counter would not match
                // its `# TYPE` line, and the counter would read as untyped.
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }
    };
    let healthz = move || {
        let ready = *gateway.readiness().borrow();
        let recording = *gateway.commits_succeed().borrow();
        async move {
            match (ready, recording) {
                (Readiness::Ready, true) => (StatusCode::OK, "ok\n"),
                (Readiness::Loading, _) => (StatusCode::SERVICE_UNAVAILABLE, "loading models\n"),
                (Readiness::Draining, _) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
                (Readiness::NoModel, _) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no model loaded: deploy a package into the models folder\n",
                ),
                (Readiness::Ready, false) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot record decisions: database commits fail\n",
                ),
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz));
    // Scrapers and probes need few connections, each briefly: bounded in
    // number and in life, idle sockets cannot take the descriptors the gRPC
    // port and the database need.
    let places = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors or a reset before accept: the listener
                // itself is fine.
                Err(e) => {
                    tracing::debug!(error = %e, "metrics port: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _place = place;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(METRICS_HEADER_TIME)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            // At the end of its life a connection finishes the answer it is
            // writing, then closes.
            if tokio::time::timeout(METRICS_CONNECTION_LIFE, connection.as_mut())
                .await
                .is_err()
            {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(METRICS_HEADER_TIME, connection).await;
            }
        });
    }
}

/// Connections the metrics port holds at once; one more is closed as it is
/// accepted.
pub const METRICS_CONNECTIONS: usize = 64;
/// How long a metrics connection may stay open, idle or not: a scraper
/// reconnects.
const METRICS_CONNECTION_LIFE: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a request's head may take to arrive, as for the gRPC port's
/// first bytes.
const METRICS_HEADER_TIME: std::time::Duration = std::time::Duration::from_secs(10);
