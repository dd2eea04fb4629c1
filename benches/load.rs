//! Load harness: drives a real gateway over loopback with concurrent gRPC
//! clients and prints requests/s and p50/p99 latency per scenario.
//!
//! Scenarios run interleaved in rounds, in one process and one run, so that
//! every ratio compares figures measured under the same machine noise; a
//! baseline listed below a row measured against it runs just before that
//! row (`schedule`). The `vs` column divides medians over the rounds; the
//! last column divides each round's figure by its baseline's in that round
//! and gives the median and range of those ratios. The scenarios:
//! - `empty`: `grpc.health.v1.Health/Check` on the same server stack, the
//!   baseline cost of one RPC;
//! - `score`: `Score` on the Caravan LightGBM model;
//! - `score_batch_256`: `ScoreBatch` with 256 rows;
//! - `Score` with inline path-dependent TreeSHAP attributions, against the
//!   TreeSHAP kernel the gateway serves with, measured in each round just
//!   before: one row per call on one thread, with no RPC, its rows/s times
//!   the cores;
//! - `Score` with deferred attributions, on the `async` gateway (deferred
//!   attributions live in the record), against that gateway's `Score`
//!   without attributions. After each of its rounds the harness waits until
//!   the gateway owes nothing, so that the backlog slows only its own
//!   scenario, and prints how many were owed and how fast they were computed;
//! - `Score` with a TC string for a subject with consent on record (decode,
//!   pseudonymise, ledger look-up), against the US `Score` that needs none;
//! - the Open Inference Protocol's `ModelInfer` with the same row as an FP32
//!   tensor in `raw_input_contents` (as tritonclient sends it) and the same
//!   signals as parameters, against the positional `Score`.
//!
//! Like ghz or wrk, the load generator sends requests it encoded once up
//! front and does not decode the replies (it checks each call's gRPC status,
//! and decodes one reply per scenario to make sure it is right), so the
//! client's own protobuf work does not crowd the server off the shared cores.
//!
//! The harness allocates with mimalloc, as `candor serve` does, so that the
//! gateways measured here run as shipped.
//!
//! Three gateways run side by side, recording decisions `off`, `sync` and
//! `async`, so the cost of the decision record is a ratio within one run
//! too. Last, on the `sync` gateway: `GetExplanation` from the record and
//! from the cache, and the cache's hit ratio under a skewed look-up mix.
//!
//! Throughput is measured at saturation: 128 calls in flight keep both
//! cores busy in most scenarios, where 32 left the gateway idle part of
//! the time while calls crossed the loopback (inline attributions ran about
//! 15% faster at 64, and no faster at 256). A `sync` call also waits for
//! its batch's fsync, so more calls must be in flight for each group
//! commit to carry as many decisions as the gateway can record: at 512 its
//! CPU per call was 9–12% lower than at 128, `off`'s 2–5% (BENCHMARKS.md,
//! session 17). The comparison of recording `sync` and `async` with
//! recording `off` (and deferred attributions, measured against `async`)
//! therefore runs all its sides at 512. Every gateway does somewhat more
//! per CPU-second there (more calls share an inference batch and a
//! write), so the table also has `off` at 512 against `off` at 128: what
//! concurrency alone gives. Latencies are those of a saturated
//! gateway, queueing included, and grow with the calls in flight; the
//! `GetExplanation` section runs at 32 calls in flight.
//!
//! Settings (environment): LOAD_SECS (per scenario and round,
//! default 3), LOAD_ROUNDS (default 3), LOAD_CLIENTS
//! (concurrent calls, default 128), RECORD_CLIENTS (concurrent calls
//! comparing the recording modes, default 512), LOAD_CONNECTIONS (default 4),
//! WHY_CLIENTS (default 32), WHY_DECISIONS (default 3000), WHY_LOOKUPS
//! (default 30000), LOAD_ONLY (comma-separated table rows to run, for
//! profiling one scenario), LOAD_MODEL (`name[@version]`: the model of
//! every scoring row but inline attributions, default `caravan-lgbm`),
//! LOAD_SUBJECTS (how many subjects the named `Score` rows score for in
//! turn, default 0: anonymous).
//! Run with `make bench` (or `cargo bench --bench load`).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use candor::{
    Config, Gateway,
    consent::{ledger::LegalBasis, service::RecordRequest},
    explain::{Method, SlotScorer},
    grpc::{
        inference,
        pb::{self, feature_value::Kind},
    },
    models::ModelSelector,
};
use prost::Message;
use rand_chacha::rand_core::SeedableRng;
use tonic::{codegen::Bytes, transport::Channel};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;
use common::{call, percentile, rows, setting, tc_all, us_adult};
use tonic_health::pb::HealthCheckRequest;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Scenario {
    Empty,
    Score,
    ScorePositional,
    ScoreBatch256,
    ScoreInlineAttributions,
    ScoreDeferredAttributions,
    ScoreTcfLedger,
    OipModelInfer,
}

impl Scenario {
    const ALL: [Scenario; 8] = [
        Scenario::Empty,
        Scenario::Score,
        Scenario::ScoreTcfLedger,
        Scenario::ScorePositional,
        Scenario::ScoreBatch256,
        Scenario::ScoreInlineAttributions,
        Scenario::ScoreDeferredAttributions,
        Scenario::OipModelInfer,
    ];

    fn name(self) -> String {
        let target = target_label();
        match self {
            Self::Empty => "empty (health Check)".into(),
            Self::Score => format!("Score, {target}, named features"),
            Self::ScorePositional => format!("Score, {target}, positional values"),
            Self::ScoreBatch256 => format!("ScoreBatch 256 rows, {target}"),
            Self::ScoreInlineAttributions => "Score + inline TreeSHAP, caravan-lgbm".into(),
            Self::ScoreDeferredAttributions if LOAD_MODEL.name == "caravan-lgbm" => {
                format!("Score + deferred TreeSHAP, {target}")
            }
            Self::ScoreDeferredAttributions => format!("Score + deferred attributions, {target}"),
            Self::ScoreTcfLedger => format!("Score + TC string + ledger, {target}"),
            Self::OipModelInfer => format!("OIP ModelInfer, {target}, FP32 raw tensor"),
        }
    }

    fn rows(self) -> u64 {
        if self == Self::ScoreBatch256 { 256 } else { 1 }
    }
}

/// The model every scoring row calls but inline attributions, which are
/// measured against the TreeSHAP kernel of the default `caravan-lgbm`:
/// `LOAD_MODEL=name[@version]`, any package with the Caravan inputs (the
/// rows are `caravan-lgbm` 1.0.0's golden rows), by default `caravan-lgbm`
/// at its default version.
static LOAD_MODEL: LazyLock<pb::ModelRef> = LazyLock::new(|| {
    let choice = std::env::var("LOAD_MODEL").unwrap_or_else(|_| "caravan-lgbm".into());
    let (name, version) = choice.split_once('@').unwrap_or((&choice, ""));
    pb::ModelRef {
        name: name.into(),
        version: version.into(),
    }
});

/// How many subjects the `Score` rows without a TC string (named
/// features, inline and deferred attributions, and the recording rows)
/// make their requests for, in turn: `LOAD_SUBJECTS`, by default 0
/// (anonymous requests, which the record keeps out of its by-subject
/// index).
static LOAD_SUBJECTS: LazyLock<usize> = LazyLock::new(|| setting("LOAD_SUBJECTS", 0) as usize);

/// [`LOAD_MODEL`] with the version `gateway` serves by default if it names
/// none: positional values must name the version whose column order they
/// follow.
fn pinned_model(gateway: &Gateway) -> pb::ModelRef {
    let version = match LOAD_MODEL.version.as_str() {
        "" => None,
        v => Some(v.parse().expect("LOAD_MODEL: a version after '@'")),
    };
    let package = gateway
        .resolve(&ModelSelector {
            name: LOAD_MODEL.name.clone(),
            version,
        })
        .expect("LOAD_MODEL names a loaded model");
    pb::ModelRef {
        name: LOAD_MODEL.name.clone(),
        version: package.version().to_string(),
    }
}

/// [`LOAD_MODEL`] as the table names it.
fn target_label() -> String {
    match LOAD_MODEL.version.as_str() {
        "" => LOAD_MODEL.name.clone(),
        version => format!("{}@{version}", LOAD_MODEL.name),
    }
}

fn bench_subject(i: usize) -> String {
    format!("bench-subject-{i}")
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/caravan-lgbm/1.0.0/golden.csv")
}

/// A golden row's values in the manifest's column order (a BTreeMap
/// iterates in name order; the column order is the golden file's).
fn positional(row: &BTreeMap<String, pb::FeatureValue>, columns: &[String]) -> Vec<f64> {
    columns
        .iter()
        .map(|c| match row[c].kind {
            Some(Kind::Integer(v)) => v as f64,
            _ => unreachable!("golden rows are integers"),
        })
        .collect()
}

/// Feature names in column order.
fn columns() -> Vec<String> {
    let mut reader = csv::Reader::from_path(golden_path()).expect("golden rows");
    reader
        .headers()
        .unwrap()
        .iter()
        .filter(|h| *h != "score")
        .map(str::to_owned)
        .collect()
}

struct Outcome {
    calls: u64,
    errors: u64,
    /// What the first failed call was told, to say why calls failed.
    first_error: Option<tonic::Status>,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    cpu: Cpu,
}

/// CPU time used by the whole process (clients, gateways, inference and
/// record threads, including threads that have exited) and by the record's
/// writer and flusher threads alone. At saturation a scenario's CPU per
/// call is its cost, and it moves far less with a neighbour's load than its
/// rate does; with idle cores (calls waiting for a commit) the two part.
#[derive(Clone, Copy, Default)]
struct Cpu {
    all: Duration,
    record: Duration,
}

impl Cpu {
    fn now() -> Self {
        // SAFETY: getrusage writes into the zeroed struct it is given.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Self {
            all: time(usage.ru_utime) + time(usage.ru_stime),
            record: record_threads_cpu(),
        }
    }

    fn since(self, earlier: Self) -> Self {
        Self {
            all: self.all.saturating_sub(earlier.all),
            record: self.record.saturating_sub(earlier.record),
        }
    }

    fn add(self, other: Self) -> Self {
        Self {
            all: self.all + other.all,
            record: self.record + other.record,
        }
    }
}

/// The CPU time of the threads named `candor-db-*` (the store's writer and
/// flusher), from `/proc/self/task/*/stat`.
fn record_threads_cpu() -> Duration {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let seconds: f64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            // pid (comm) state ppid ...: utime and stime are the 12th and
            // 13th fields after the command's closing parenthesis.
            let (head, rest) = stat.rsplit_once(')')?;
            head.contains("(candor-db-").then_some(())?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .sum();
    Duration::from_secs_f64(seconds)
}

impl Scenario {
    fn path(self) -> &'static str {
        match self {
            Self::Empty => "/grpc.health.v1.Health/Check",
            Self::Score
            | Self::ScorePositional
            | Self::ScoreInlineAttributions
            | Self::ScoreDeferredAttributions
            | Self::ScoreTcfLedger => "/candor.v1.ScoringService/Score",
            Self::ScoreBatch256 => "/candor.v1.ScoringService/ScoreBatch",
            Self::OipModelInfer => "/inference.GRPCInferenceService/ModelInfer",
        }
    }

    /// The encoded requests this scenario cycles through.
    /// `pinned` is [`LOAD_MODEL`] with its version, which positional
    /// values need.
    fn payloads(
        self,
        rows: &[BTreeMap<String, pb::FeatureValue>],
        pinned: &pb::ModelRef,
    ) -> Vec<Bytes> {
        let model = || Some(LOAD_MODEL.clone());
        let columns = columns();
        match self {
            Self::Empty => vec![
                HealthCheckRequest {
                    service: String::new(),
                }
                .encode_to_vec()
                .into(),
            ],
            // Anonymous by default; with LOAD_SUBJECTS=N, each request is
            // one of N subjects' in turn (a pseudonym the record indexes).
            Self::Score | Self::ScoreInlineAttributions | Self::ScoreDeferredAttributions => rows
                .iter()
                .cycle()
                .take(rows.len().max(*LOAD_SUBJECTS))
                .enumerate()
                .map(|(i, row)| {
                    let explain = match self {
                        Self::ScoreInlineAttributions => Some(pb::ExplainMode::Inline),
                        Self::ScoreDeferredAttributions => Some(pb::ExplainMode::Deferred),
                        _ => None,
                    }
                    .map(|mode| pb::ExplainOptions {
                        mode: mode as i32,
                        method: 0,
                    });
                    // Inline attributions are measured against the kernel
                    // of the default caravan-lgbm.
                    let model = match self {
                        Self::ScoreInlineAttributions => Some(pb::ModelRef {
                            name: "caravan-lgbm".into(),
                            version: String::new(),
                        }),
                        _ => model(),
                    };
                    pb::ScoreRequest {
                        model,
                        subject_id: match *LOAD_SUBJECTS {
                            0 => String::new(),
                            n => format!("load-subject-{}", i % n),
                        },
                        features: pb::features(row.clone()),
                        context: us_adult(),
                        explain,
                        ..Default::default()
                    }
                    .encode_to_vec()
                    .into()
                })
                .collect(),
            // Each row is its own subject, with consent on record and a TC
            // string to decode: the EU path with every look-up.
            Self::ScoreTcfLedger => rows
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    pb::ScoreRequest {
                        model: model(),
                        subject_id: bench_subject(i),
                        features: pb::features(row.clone()),
                        context: Some(pb::RequestContext {
                            jurisdiction_country: "DE".into(),
                            age_status: pb::AgeStatus::Adult as i32,
                            tc_string: tc_all(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }
                    .encode_to_vec()
                    .into()
                })
                .collect(),
            Self::ScorePositional => rows
                .iter()
                .map(|row| {
                    pb::ScoreRequest {
                        model: Some(pinned.clone()),
                        context: us_adult(),
                        values: positional(row, &columns),
                        ..Default::default()
                    }
                    .encode_to_vec()
                    .into()
                })
                .collect(),
            // The positional Score's row and signals, as tritonclient sends them.
            Self::OipModelInfer => rows
                .iter()
                .map(|row| {
                    let values = positional(row, &columns);
                    let text = |s: &str| inference::InferParameter {
                        parameter_choice: Some(
                            inference::infer_parameter::ParameterChoice::StringParam(s.into()),
                        ),
                    };
                    inference::ModelInferRequest {
                        model_name: pinned.name.clone(),
                        model_version: pinned.version.clone(),
                        parameters: [
                            ("jurisdiction_country".to_owned(), text("US")),
                            ("age_status".to_owned(), text("adult")),
                        ]
                        .into(),
                        inputs: vec![inference::model_infer_request::InferInputTensor {
                            name: "input".into(),
                            datatype: "FP32".into(),
                            shape: vec![1, values.len() as i64],
                            ..Default::default()
                        }],
                        raw_input_contents: vec![
                            values
                                .iter()
                                .flat_map(|&v| (v as f32).to_le_bytes())
                                .collect(),
                        ],
                        ..Default::default()
                    }
                    .encode_to_vec()
                    .into()
                })
                .collect(),
            Self::ScoreBatch256 => vec![
                pb::ScoreBatchRequest {
                    model: model(),
                    context: us_adult(),
                    rows: (0..256)
                        .map(|i| pb::BatchRow {
                            features: pb::features(rows[i % rows.len()].clone()),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }
                .encode_to_vec()
                .into(),
            ],
        }
    }

    /// Decodes one reply and checks it is what the scenario expects.
    fn check_reply(self, reply: &Bytes) {
        match self {
            Self::Empty => {
                let r = tonic_health::pb::HealthCheckResponse::decode(reply.clone()).unwrap();
                assert_eq!(r.status, 1, "the server is SERVING");
            }
            Self::Score | Self::ScorePositional | Self::ScoreTcfLedger => {
                let d = pb::ScoreResponse::decode(reply.clone())
                    .unwrap()
                    .decision
                    .unwrap();
                assert_eq!(d.tier, pb::Tier::Personalised as i32);
                assert!(d.score.unwrap() > 0.0);
            }
            Self::ScoreInlineAttributions => {
                let r = pb::ScoreResponse::decode(reply.clone()).unwrap();
                assert_eq!(r.decision.unwrap().attribution.unwrap().features.len(), 78);
            }
            Self::ScoreDeferredAttributions => {
                let d = pb::ScoreResponse::decode(reply.clone())
                    .unwrap()
                    .decision
                    .unwrap();
                assert!(d.attribution.is_none());
                assert_eq!(d.explanation_status, pb::ExplanationStatus::Deferred as i32);
            }
            Self::OipModelInfer => {
                let r = inference::ModelInferResponse::decode(reply.clone()).unwrap();
                let tier = &r.parameters["tier"].parameter_choice;
                assert_eq!(
                    tier,
                    &Some(inference::infer_parameter::ParameterChoice::StringParam(
                        "personalised".into()
                    ))
                );
                let score = &r.raw_output_contents[0];
                assert!(f64::from_le_bytes(score[..8].try_into().unwrap()) > 0.0);
            }
            Self::ScoreBatch256 => assert_eq!(
                pb::ScoreBatchResponse::decode(reply.clone())
                    .unwrap()
                    .decisions
                    .len(),
                256
            ),
        }
    }
}

async fn drive(
    scenario: Scenario,
    channels: &[Channel],
    clients: usize,
    secs: u64,
    payloads: Arc<Vec<Bytes>>,
) -> Outcome {
    let reply = call(&channels[0], scenario.path(), payloads[0].clone())
        .await
        .expect("a first call succeeds");
    scenario.check_reply(&reply);
    let warmup = Duration::from_millis(500);
    let measure = Duration::from_secs(secs);
    let start = Instant::now();
    let (measure_from, stop_at) = (start + warmup, start + warmup + measure);
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let from = Cpu::now();
        tokio::time::sleep_until(stop_at.into()).await;
        Cpu::now().since(from)
    });
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let channel = channels[c % channels.len()].clone();
            let payloads = payloads.clone();
            tokio::spawn(async move {
                let (mut latencies, mut calls, mut errors, mut i) = (Vec::new(), 0u64, 0u64, c);
                let mut first_error = None;
                loop {
                    let t0 = Instant::now();
                    if t0 >= stop_at {
                        break;
                    }
                    let answer = call(
                        &channel,
                        scenario.path(),
                        payloads[i % payloads.len()].clone(),
                    )
                    .await;
                    i += 1;
                    if t0 >= measure_from {
                        latencies.push(t0.elapsed().as_micros() as u32);
                        calls += 1;
                        if let Err(status) = answer {
                            errors += 1;
                            first_error.get_or_insert(status);
                        }
                    }
                }
                (latencies, calls, errors, first_error)
            })
        })
        .collect();
    let mut outcome = Outcome {
        calls: 0,
        errors: 0,
        first_error: None,
        elapsed: measure,
        latencies_us: Vec::new(),
        cpu: Cpu::default(),
    };
    for t in tasks {
        let (l, c, e, first) = t.await.unwrap();
        outcome.latencies_us.extend(l);
        outcome.calls += c;
        outcome.errors += e;
        outcome.first_error = outcome.first_error.or(first);
    }
    outcome.cpu = cpu.await.unwrap();
    outcome
}

/// One table row's measurements over all rounds.
#[derive(Default)]
struct Series {
    /// Requests (or kernel rows) per second, one per round.
    rates: Vec<f64>,
    latencies_us: Vec<u32>,
    errors: u64,
    rows: u64,
    cpu: Cpu,
}

impl Series {
    /// CPU µs per row (decision), all threads and the record threads'
    /// part; `None` where no calls were timed (the kernel).
    fn cpu_per_row(&self) -> Option<(f64, f64)> {
        (self.rows > 0).then(|| {
            let per_row = |d: Duration| d.as_secs_f64() * 1e6 / self.rows as f64;
            (per_row(self.cpu.all), per_row(self.cpu.record))
        })
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The gateways under test: the same models and data, differing only in
/// how decisions are recorded.
const DURABILITIES: [&str; 3] = ["off", "sync", "async"];

/// What a run measures.
#[derive(Clone, Copy)]
enum Load {
    /// A scenario's calls against one gateway, `in_flight` at a time.
    Rpc {
        scenario: Scenario,
        server: usize,
        in_flight: usize,
    },
    /// The path-dependent TreeSHAP kernel of the gateway's Caravan model,
    /// one row per call on one thread, without RPC; rows/s times the cores.
    Kernel,
}

/// One measured series and the series it is compared with.
struct Run {
    load: Load,
    /// Index into the run list of the reference.
    baseline: usize,
}

impl Run {
    fn name(&self) -> String {
        match self.load {
            Load::Rpc { scenario, .. } => scenario.name(),
            Load::Kernel => format!(
                "TreeSHAP kernel, one row per call, one thread x {} cores",
                cores()
            ),
        }
    }

    fn recording(&self) -> &'static str {
        match self.load {
            Load::Rpc { server, .. } => DURABILITIES[server],
            Load::Kernel => "-",
        }
    }

    fn in_flight_column(&self) -> String {
        match self.load {
            Load::Rpc { in_flight, .. } => in_flight.to_string(),
            Load::Kernel => "-".to_owned(),
        }
    }

    fn rows(&self) -> u64 {
        match self.load {
            Load::Rpc { scenario, .. } => scenario.rows(),
            Load::Kernel => 1,
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The table's rows. `load` and `record` are the calls kept in flight by
/// most scenarios and by the comparison of recording `sync` and `async`
/// with recording `off` (the module's doc says why they differ).
fn runs(load: usize, record: usize) -> Vec<Run> {
    use Scenario::*;
    let run = |scenario, server, baseline, in_flight| Run {
        load: Load::Rpc {
            scenario,
            server,
            in_flight,
        },
        baseline,
    };
    vec![
        run(Empty, 0, 0, load),
        run(Score, 0, 0, load),
        run(ScoreTcfLedger, 0, 1, load),
        run(ScorePositional, 0, 0, load),
        run(ScoreBatch256, 0, 0, load),
        Run {
            load: Load::Kernel,
            baseline: 5,
        },
        run(ScoreInlineAttributions, 0, 5, load),
        run(Score, 1, 13, record),
        run(Score, 2, 13, record),
        // Deferred attributions live in the record: against the same
        // gateway's Score without attributions, measured just before.
        run(ScoreDeferredAttributions, 2, 8, record),
        run(ScoreBatch256, 1, 4, load),
        run(ScoreBatch256, 2, 4, load),
        run(OipModelInfer, 0, 3, load),
        // Last, so that the rows' numbers stay those of earlier runs
        // (LOAD_ONLY, BENCHMARKS.md): recording off at the recording
        // comparison's concurrency, against itself at `load`.
        run(Score, 0, 1, record),
    ]
}

/// The order a round runs the rows in: the table's, except that a baseline
/// listed after a row measured against it runs just before that row. The
/// machine's speed drifts within a round (a round of every row lasts over a
/// minute with the deferred backlog's drain), and recording `off` at
/// `RECORD_CLIENTS`, the last row, ran a minute after the `sync` and
/// `async` rows it is the baseline of.
fn schedule(runs: &[Run]) -> Vec<usize> {
    let mut order = Vec::with_capacity(runs.len());
    for (i, run) in runs.iter().enumerate() {
        for row in [run.baseline, i] {
            if row >= i && !order.contains(&row) {
                order.push(row);
            }
        }
    }
    order
}

/// Rows/s of the path-dependent TreeSHAP kernel that serves `gateway`'s
/// Caravan model, one golden row per call on this thread for `secs`, times
/// the cores: what inline attributions over gRPC are measured against.
fn kernel(gateway: &Gateway, secs: u64) -> f64 {
    let package = gateway
        .resolve(&ModelSelector {
            name: "caravan-lgbm".into(),
            version: None,
        })
        .expect("the Caravan model is loaded");
    let golden = package.golden.as_ref().expect("golden rows");
    let mut scorer = SlotScorer {
        backend: package.backend.as_ref(),
        slot: 0,
    };
    let explain = |i: usize, scorer: &mut SlotScorer| {
        let row = golden.rows.row(i % golden.rows.len());
        package
            .explainer
            .explain(row, Method::PathDependent, scorer, None)
            .expect("the row is explained")
    };
    let warmup = Instant::now() + Duration::from_millis(500);
    let mut i = 0;
    while Instant::now() < warmup {
        explain(i, &mut scorer);
        i += 1;
    }
    let (start, mut rows) = (Instant::now(), 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        explain(i, &mut scorer);
        i += 1;
        rows += 1;
    }
    rows as f64 / start.elapsed().as_secs_f64() * cores() as f64
}

/// A gateway under test: its address, itself, and its data folder, which is
/// deleted when this is dropped (a full run records gigabytes).
struct Server {
    addr: std::net::SocketAddr,
    gateway: Arc<Gateway>,
    _data: tempfile::TempDir,
}

/// Starts a gateway on its own runtime (as `candor serve` runs), admitting
/// twice the `in_flight` calls the harness keeps open: a client's next
/// call may arrive before its last answer's permit is let go, and at the
/// limit itself some calls would be refused (RESOURCE_EXHAUSTED).
fn start_server(root: &std::path::Path, durability: &str, in_flight: usize) -> Server {
    // CANDOR_* variables configure the server exactly as for `candor serve`.
    #[derive(serde::Serialize)]
    struct Paths {
        listen: &'static str,
        models_dir: PathBuf,
        ort_lib: PathBuf,
        database: PathBuf,
        consent: ConsentPaths,
        decisions: DecisionPaths,
        limits: Limits,
    }
    #[derive(serde::Serialize)]
    struct Limits {
        max_in_flight: usize,
    }
    #[derive(serde::Serialize)]
    struct ConsentPaths {
        subject_key_file: PathBuf,
        tcf_vendor_id: u16,
    }
    #[derive(serde::Serialize)]
    struct DecisionPaths {
        input_key_file: PathBuf,
        durability: String,
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let data = dir.path();
    let config = Config::load(
        None,
        Paths {
            listen: "127.0.0.1:0",
            models_dir: root.join("models"),
            ort_lib: common::ort_lib(),
            database: data.join("candor.db"),
            consent: ConsentPaths {
                subject_key_file: data.join("subject.key"),
                tcf_vendor_id: 1000,
            },
            decisions: DecisionPaths {
                input_key_file: data.join("inputs.key"),
                durability: durability.into(),
            },
            limits: Limits {
                max_in_flight: 2 * in_flight,
            },
        },
    )
    .expect("valid configuration");
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let gateway = Arc::new(Gateway::new(config.clone()).expect("the gateway opens"));
    let addr = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        gateway.load_models().await.expect("bundled models load");
        // Each TC-string subject has a consent on record, so the ledger
        // look-up finds rows, as it would in production.
        for i in 0..rows().len() {
            gateway
                .consents()
                .record(
                    RecordRequest {
                        subject_id: bench_subject(i),
                        purposes: (1..=4).map(|p| (p, LegalBasis::Consent, true)).collect(),
                        method: "cmp_ui",
                        collected_at_ms: None,
                        notice: None,
                        jurisdiction: "DE".into(),
                        language: "en".into(),
                        data_categories: vec![],
                    },
                    candor::consent::ledger::Actor {
                        name: "load harness".into(),
                        role: "scorer".into(),
                    },
                )
                .await
                .expect("consent recorded");
        }
        server_rt.spawn(candor::serve(
            listener,
            gateway.clone(),
            std::future::pending(),
        ));
        addr
    });
    // The runtime lives as long as the process.
    std::mem::forget(server_rt);
    Server {
        addr,
        gateway,
        _data: dir,
    }
}

fn main() {
    let secs = setting("LOAD_SECS", 3);
    let rounds = setting("LOAD_ROUNDS", 3);
    let clients = setting("LOAD_CLIENTS", 128) as usize;
    let record_clients = setting("RECORD_CLIENTS", 512) as usize;
    let connections = setting("LOAD_CONNECTIONS", 4) as usize;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let servers: Vec<_> = DURABILITIES
        .iter()
        .map(|d| start_server(&root, d, clients.max(record_clients)))
        .collect();

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows = rows();
    // LOAD_ONLY=1,7 keeps only those runs (by table row, from 0): for
    // profiling one scenario.
    let only: Option<Vec<usize>> = std::env::var("LOAD_ONLY")
        .ok()
        .map(|v| v.split(',').filter_map(|i| i.trim().parse().ok()).collect());
    let runs = runs(clients, record_clients);
    let pinned = pinned_model(&servers[0].gateway);
    let payloads: BTreeMap<Scenario, Arc<Vec<Bytes>>> = Scenario::ALL
        .iter()
        .map(|&s| (s, Arc::new(s.payloads(&rows, &pinned))))
        .collect();
    let mut results: Vec<Series> = runs.iter().map(|_| Series::default()).collect();
    let mut drains: Vec<(i64, Duration)> = Vec::new();
    let ledger_at_start: Vec<i64> = servers
        .iter()
        .map(|s| s.gateway.store_sizes().ledger_records)
        .collect();
    client_rt.block_on(async {
        let mut channels: Vec<Vec<Channel>> = Vec::new();
        for Server { addr, .. } in &servers {
            let mut per_server = Vec::new();
            for _ in 0..connections {
                per_server.push(
                    candor::grpc::connect(Channel::from_shared(format!("http://{addr}")).unwrap())
                        .await
                        .unwrap(),
                );
            }
            channels.push(per_server);
        }
        let order = schedule(&runs);
        for round in 0..rounds {
            for &i in &order {
                let run = &runs[i];
                if only.as_ref().is_some_and(|o| !o.contains(&i)) {
                    continue;
                }
                let Load::Rpc {
                    scenario,
                    server,
                    in_flight,
                } = run.load
                else {
                    let rate = kernel(&servers[0].gateway, secs);
                    eprintln!("round {round}: {:<62} {rate:>9.0} rows/s", run.name());
                    results[i].rates.push(rate);
                    continue;
                };
                let o = drive(
                    scenario,
                    &channels[server],
                    in_flight,
                    secs,
                    payloads[&scenario].clone(),
                )
                .await;
                let rps = o.calls as f64 / o.elapsed.as_secs_f64();
                eprintln!(
                    "round {round}: {:<42} recording {:<5} {in_flight:>4} in flight {rps:>9.0} req/s  errors {}{}",
                    scenario.name(),
                    DURABILITIES[server],
                    o.errors,
                    o.first_error.as_ref().map_or(String::new(), |s| format!(
                        " (the first {:?}: {})",
                        s.code(),
                        s.message()
                    ))
                );
                let series = &mut results[i];
                series.rates.push(rps);
                series.latencies_us.extend(o.latencies_us);
                series.errors += o.errors;
                series.rows += o.calls * scenario.rows();
                series.cpu = series.cpu.add(o.cpu);
                if scenario == Scenario::ScoreDeferredAttributions {
                    // The backlog is computed before anything else is
                    // measured, so that it slows only its own scenario.
                    let (owed, took) = drain(&servers[server].gateway);
                    eprintln!(
                        "round {round}: {owed} deferred attributions owed when the load stopped, computed in {:.1} s without load ({:.0}/s)",
                        took.as_secs_f64(),
                        owed as f64 / took.as_secs_f64()
                    );
                    drains.push((owed, took));
                }
            }
        }
    });

    println!(
        "\nload harness: {clients} calls in flight ({record_clients} to compare recording sync and async with off) over {connections} connections, {rounds} rounds x {secs} s per scenario, {} cores",
        cores()
    );
    println!(
        "| scenario | recording | in flight | req/s (median of rounds) | rows/s | p50 ms | p99 ms | errors | vs | same round: median (range) | CPU µs/row (record threads) | CPU/row: baseline's ÷ this |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let medians: Vec<f64> = results
        .iter()
        .map(|r| {
            if r.rates.is_empty() {
                f64::NAN
            } else {
                median(r.rates.clone())
            }
        })
        .collect();
    for (i, run) in runs.iter().enumerate() {
        if only.as_ref().is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        // Each round's ratio to the baseline measured in that same round:
        // noise that lasts longer than a round (a neighbour's build on the
        // shared machine) slows both sides of a ratio alike.
        let paired: Vec<f64> = results[i]
            .rates
            .iter()
            .zip(&results[run.baseline].rates)
            .map(|(r, b)| 100.0 * r / b)
            .collect();
        let same_round = if paired.is_empty() {
            "-".to_owned()
        } else {
            let (lo, hi) = paired
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), &p| (lo.min(p), hi.max(p)));
            format!("{:.1}% ({lo:.1}–{hi:.1})", median(paired.clone()))
        };
        let cpu = results[i].cpu_per_row();
        let cpu_column = cpu.map_or("-".to_owned(), |(all, record)| {
            format!("{all:.1} ({record:.1})")
        });
        let cpu_ratio = cpu
            .zip(results[run.baseline].cpu_per_row())
            .map_or("-".to_owned(), |((this, _), (base, _))| {
                format!("{:.1}%", 100.0 * base / this)
            });
        let Series {
            latencies_us: latencies,
            errors,
            ..
        } = &mut results[i];
        latencies.sort_unstable();
        let rps = medians[i];
        let base = &runs[run.baseline];
        // A baseline left out by LOAD_ONLY has no rate to compare with.
        let versus = if medians[run.baseline].is_nan() {
            "-".to_owned()
        } else {
            format!(
                "{:.1}% of {} (recording {}, {} in flight)",
                100.0 * rps / medians[run.baseline],
                base.name(),
                base.recording(),
                base.in_flight_column()
            )
        };
        // The kernel has no calls to time.
        let latency = |p| {
            if latencies.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.3}", percentile(latencies, p))
            }
        };
        println!(
            "| {} | {} | {} | {rps:.0} | {:.0} | {} | {} | {errors} | {versus} | {same_round} | {cpu_column} | {cpu_ratio} |",
            run.name(),
            run.recording(),
            run.in_flight_column(),
            rps * run.rows() as f64,
            latency(0.50),
            latency(0.99),
        );
    }
    if !drains.is_empty() {
        let (owed, took) = drains
            .iter()
            .fold((0, Duration::ZERO), |(o, t), (owed, took)| {
                (o + owed, t + *took)
            });
        println!(
            "\ndeferred attributions: {owed} owed when the load stopped, over {} rounds; computed without load in {:.1} s ({:.0}/s)",
            drains.len(),
            took.as_secs_f64(),
            owed as f64 / took.as_secs_f64()
        );
    }
    // A subject's signals are evidence once per signal set, however many
    // of its requests arrive at once.
    let appended: Vec<String> = servers
        .iter()
        .zip(DURABILITIES)
        .zip(&ledger_at_start)
        .map(|((s, d), start)| format!("{d} {}", s.gateway.store_sizes().ledger_records - start))
        .collect();
    println!(
        "\nledger records appended under load, per gateway: {}",
        appended.join(", ")
    );
    if only.is_none() {
        let clients = setting("WHY_CLIENTS", 32) as usize;
        client_rt.block_on(explanations(&servers[1].addr, &servers[1].gateway, clients));
    }
}

/// Waits until the gateway owes no deferred attributions (a minute at
/// most); returns how many it owed and how long they took.
fn drain(gateway: &Gateway) -> (i64, Duration) {
    let started = Instant::now();
    let owed = gateway.store_sizes().owed_attributions;
    while gateway.store_sizes().owed_attributions > 0 && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = gateway.store_sizes().owed_attributions;
    (owed - left, started.elapsed())
}

/// GetExplanation latency from the record and from the cache, and the hit
/// ratio under a skewed (Zipf) look-up mix, on the `sync` gateway.
async fn explanations(addr: &std::net::SocketAddr, gateway: &Gateway, clients: usize) {
    let n = setting("WHY_DECISIONS", 3000) as usize;
    let lookups = setting("WHY_LOOKUPS", 30_000) as usize;
    let channel = candor::grpc::connect(Channel::from_shared(format!("http://{addr}")).unwrap())
        .await
        .unwrap();
    let rows = rows();
    let mut ids = Vec::with_capacity(n);
    let mut scoring = pb::scoring_service_client::ScoringServiceClient::new(channel.clone());
    for i in 0..n {
        let d = scoring
            .score(pb::ScoreRequest {
                model: Some(pb::ModelRef {
                    name: "caravan-lgbm".into(),
                    version: String::new(),
                }),
                subject_id: format!("why-{i}"),
                features: pb::features(rows[i % rows.len()].clone()),
                context: us_adult(),
                explain: Some(pb::ExplainOptions {
                    mode: pb::ExplainMode::Inline as i32,
                    method: 0,
                }),
                ..Default::default()
            })
            .await
            .expect("scored")
            .into_inner()
            .decision
            .unwrap();
        ids.push(d.decision_id);
    }
    let get = |ids: Vec<String>| {
        let channel = channel.clone();
        async move {
            let ids = Arc::new(ids);
            let tasks: Vec<_> = (0..clients)
                .map(|c| {
                    let ids = ids.clone();
                    let mut client = pb::explanation_service_client::ExplanationServiceClient::new(
                        channel.clone(),
                    );
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        for id in ids.iter().skip(c).step_by(clients) {
                            let t0 = Instant::now();
                            client
                                .get_explanation(pb::GetExplanationRequest {
                                    decision_id: id.clone(),
                                    audience: pb::Audience::Consumer as i32,
                                    language: "en".into(),
                                })
                                .await
                                .expect("explained");
                            latencies.push(t0.elapsed().as_micros() as u32);
                        }
                        latencies
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all.sort_unstable();
            all
        }
    };
    let cache = gateway.cache();
    cache.clear();
    let before = cache.counts();
    let from_record = get(ids.clone()).await;
    let mid = cache.counts();
    let from_cache = get(ids.clone()).await;
    let after = cache.counts();
    assert_eq!(
        mid.record_reads - before.record_reads,
        n as u64,
        "cold reads hit the record"
    );
    assert_eq!(after.hits - mid.hits, n as u64, "warm reads hit the cache");
    println!(
        "\nGetExplanation (consumer view), {n} recorded decisions, {clients} concurrent clients:"
    );
    println!("| served from | calls | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for (name, l) in [
        ("record (cache cleared)", &from_record),
        ("cache", &from_cache),
    ] {
        println!(
            "| {name} | {} | {:.3} | {:.3} |",
            l.len(),
            percentile(l, 0.5),
            percentile(l, 0.99)
        );
    }

    // Look-ups follow Zipf(s = 1.1) over the decisions, newest first: most
    // questions are about a few recent ads.
    cache.clear();
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(1.1)).collect();
    let total: f64 = weights.iter().sum();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let picks: Vec<String> = (0..lookups)
        .map(|_| {
            let mut u = rand::Rng::random::<f64>(&mut rng) * total;
            let mut k = 0;
            while k + 1 < n && u > weights[k] {
                u -= weights[k];
                k += 1;
            }
            ids[n - 1 - k].clone()
        })
        .collect();
    let before = cache.counts();
    let skewed = get(picks).await;
    let after = cache.counts();
    let hits = after.hits - before.hits;
    let misses = after.record_reads - before.record_reads + after.computed - before.computed;
    println!(
        "\nSkewed mix: {lookups} look-ups, Zipf(1.1) over {n} decisions, cold cache: hit ratio {:.1}% ({hits} hits, {misses} misses), p50 {:.3} ms, p99 {:.3} ms",
        100.0 * hits as f64 / (hits + misses) as f64,
        percentile(&skewed, 0.5),
        percentile(&skewed, 0.99)
    );
}
