//! The `candor` command line: `serve`, `score`, `why`, `token issue`,
//! `audit`, `models validate` and `models card`.
//!
//! Start-up errors are reported with `anyhow` here and nowhere else; the
//! library below returns typed errors.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tokio::net::TcpListener;

use std::io::Write as _;

use crate::{
    audit,
    config::Config,
    explain::Method,
    gateway::Gateway,
    grpc::{
        self,
        client::{ConsentSignals, ScoreCall},
    },
    inference::runtime,
    models::{
        ModelPackage, card, manifest,
        package::MANIFEST_FILE,
        schema::{FeatureValue, Features},
        validate::validate_package,
    },
};

/// A number flag that must also pass `check`, the same check a manifest's
/// field gets.
fn checked(
    check: fn(f64) -> Result<f64, &'static str>,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text| {
        let value: f64 = text.trim().parse().map_err(|e| format!("{e}"))?;
        check(value).map_err(str::to_owned)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "candor",
    version,
    about = "Explainable, consent-aware model-serving gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the gateway.
    Serve(ServeArgs),
    /// Score features with a running gateway and print the decisions as JSON.
    Score(ScoreArgs),
    /// Explain a recorded decision: "why am I seeing this ad?".
    Why(WhyArgs),
    /// Audit a model package for group fairness on a labelled data set.
    Audit(AuditArgs),
    /// Work with model packages.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Consumer tokens for the publisher's backend.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint a short-lived token that lets one person read their own
    /// decisions, explanations and consent, and erase their data. Prints
    /// the token on standard output.
    Issue(TokenArgs),
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The publisher's identifier of the person (pseudonymised with the
    /// gateway's subject key before it goes into the token).
    #[arg(long)]
    subject: String,
    /// Lifetime in seconds (at most 86400).
    #[arg(long, default_value_t = 900)]
    ttl_secs: u64,
    /// The gateway's TOML configuration, for its subject key file.
    #[arg(long, env = "CANDOR_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Check a package (or every package under a folder) before deploying it.
    Validate(ValidateArgs),
    /// Print a package's model card as Markdown.
    Card(CardArgs),
}

#[derive(Debug, Args)]
struct CardArgs {
    /// The package folder (models/<name>/<version>).
    dir: PathBuf,
    /// Path of libonnxruntime.so.1.31.1 [default: .ort/libonnxruntime.so.1.31.1, or CANDOR_ORT_LIB].
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuditFormat {
    Json,
    Markdown,
    Png,
}

#[derive(Debug, Args)]
struct AuditArgs {
    /// The package folder (models/<name>/<version>).
    #[arg(long)]
    model: PathBuf,
    /// The data set: a CSV with the model's features by name, the group
    /// columns and the label [default: the manifest's `fairness.data`].
    #[arg(long)]
    data: Option<PathBuf>,
    /// An audited column, or COLUMN:INPUT for a column that bands the model
    /// input INPUT. Repeatable [default: the manifest's `fairness.groups`].
    #[arg(long = "group-column")]
    group_columns: Vec<String>,
    /// The 0/1 outcome column [default: the manifest's `fairness.label_column`].
    #[arg(long, conflicts_with = "no_label")]
    label_column: Option<String>,
    /// Audit without labels, even where the manifest declares one: no
    /// true-positive rates or calibration.
    #[arg(long)]
    no_label: bool,
    /// Groups with fewer rows are reported, not compared.
    #[arg(long, default_value_t = audit::MIN_GROUP_ROWS, value_parser = clap::value_parser!(u64).range(1..))]
    min_group_rows: u64,
    /// Lowest accepted disparate-impact ratio of the --group-column columns.
    #[arg(long, default_value_t = audit::FOUR_FIFTHS, value_parser = checked(manifest::disparate_impact_floor))]
    min_disparate_impact: f64,
    /// Largest accepted equal-opportunity difference of the --group-column columns.
    #[arg(long, value_parser = checked(manifest::opportunity_gap))]
    max_equal_opportunity_difference: Option<f64>,
    /// Write fairness.json, fairness.md and fairness.png into this folder
    /// instead of printing.
    #[arg(long)]
    out: Option<PathBuf>,
    /// What to produce; repeatable [default: markdown when printing; json,
    /// markdown and png with --out].
    #[arg(long, value_enum)]
    format: Vec<AuditFormat>,
    /// Tree attributions: path_dependent or interventional.
    #[arg(long, default_value = "path_dependent")]
    attribution_method: String,
    /// Attribute only the first N rows (the sampled estimator of non-tree,
    /// non-linear models is slow); 0 skips attributions [default: all rows].
    #[arg(long)]
    attribution_rows: Option<usize>,
    /// Path of libonnxruntime.so.1.31.1 [default: .ort/libonnxruntime.so.1.31.1, or CANDOR_ORT_LIB].
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Optional TOML configuration file.
    #[arg(long, env = "CANDOR_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: ConfigFlags,
}

/// Flags that override configuration; absent flags leave the file,
/// environment or default value in place.
#[derive(Debug, Args, Serialize, Default)]
struct ConfigFlags {
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    /// Folder of model packages [default: models].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    models_dir: Option<PathBuf>,
    /// Path of libonnxruntime.so.1.31.1 [default: .ort/libonnxruntime.so.1.31.1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ort_lib: Option<PathBuf>,
    /// Inference threads [default: number of cores].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    inference_threads: Option<usize>,
    /// Requests that may wait for inference before new ones are shed [default: 4096].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    inference_queue: Option<usize>,
    /// Most rows per ScoreBatch call [default: 1024].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_batch_rows: Option<usize>,
    /// Share of their time the deferred and shadow attribution threads
    /// compute while other work keeps them off their cores, in (0, 1]
    /// [default: 0.02].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    background_share: Option<f64>,
    /// Largest gRPC message in bytes [default: 4194304].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_message_bytes: Option<usize>,
    /// Log format: text or json [default: text].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
    /// The embedded SQLite database [default: data/candor.db].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<PathBuf>,
    /// HTTP address of /metrics and /healthz [default: 127.0.0.1:9464].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<String>,
}

/// Where the client commands reach the gateway.
#[derive(Debug, Args)]
struct GatewayArgs {
    /// Gateway address: http://HOST:PORT, or https://HOST:PORT for a
    /// gateway serving TLS.
    #[arg(long, env = "CANDOR_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// With an https:// address: the CA certificate (PEM) that signed the
    /// gateway's; without it, the public web PKI's roots.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// With an https:// address: this client's certificate chain (PEM),
    /// for a gateway that verifies clients (mutual TLS, `tls.client_ca`).
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The private key (PEM) of `--client-cert`.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// How long to wait for the gateway to connect, and to answer each call,
    /// in seconds: a gateway that accepts the connection and never answers
    /// is an error, not a hang.
    #[arg(long, env = "CANDOR_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout_secs: u64,
}

#[derive(Debug, Args)]
struct ScoreArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Model name, optionally with a version: `caravan-lgbm` or `caravan-lgbm@1.1.0`.
    #[arg(long)]
    model: String,
    /// The publisher's identifier for the person scored.
    #[arg(long, default_value = "")]
    subject: String,
    /// A feature as NAME=VALUE; repeat for each feature. An empty VALUE means missing.
    #[arg(short, long = "feature", value_name = "NAME=VALUE")]
    features: Vec<String>,
    /// A JSON file ("-" for stdin): one object of features, or an array of them.
    #[arg(long, conflicts_with_all = ["features", "csv"])]
    json: Option<PathBuf>,
    /// A CSV file ("-" for stdin) with a header of feature names; one row per decision.
    #[arg(long, conflicts_with = "features")]
    csv: Option<PathBuf>,
    /// The most rows one ScoreBatch call carries: the gateway's
    /// `max_batch_rows`. More rows are sent in turn, in order.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    batch_rows: u64,
    /// The person's country (ISO 3166-1 alpha-2), e.g. DE or US.
    #[arg(long, default_value = "")]
    country: String,
    /// For the US, the state, e.g. CA.
    #[arg(long, default_value = "")]
    region: String,
    /// The person's age status.
    #[arg(long, value_parser = ["adult", "minor", "unknown"], default_value = "unknown")]
    age: String,
    /// An IAB TCF v2.2/v2.3 TC string.
    #[arg(long, default_value = "")]
    tc_string: String,
    /// An IAB GPP string.
    #[arg(long, default_value = "")]
    gpp_string: String,
    /// The browser sent Global Privacy Control (Sec-GPC: 1).
    #[arg(long)]
    gpc: bool,
    /// An API key (role `scorer`), sent as `authorization: Bearer ...`;
    /// needed when the gateway has access keys.
    #[arg(long, env = "CANDOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Args)]
struct WhyArgs {
    /// The decision id a Score response returned.
    decision_id: String,
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Who reads it.
    #[arg(long, value_parser = ["consumer", "support", "engineer"], default_value = "consumer")]
    audience: String,
    /// Language of the consumer view (en, nl).
    #[arg(long, default_value = "en")]
    language: String,
    /// An API key or a subject token, sent as `authorization: Bearer ...`.
    #[arg(long, env = "CANDOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Why a staff member reads this person's decision (e.g. the support
    /// ticket): every staff read needs it, of any view, and it is recorded.
    /// A subject reading their own decision with their token gives none.
    #[arg(long, env = "CANDOR_REASON", hide_env_values = true)]
    reason: Option<String>,
    /// Print the whole answer as JSON instead of text: the proto3 JSON
    /// mapping of GetExplanationResponse, with the proto's field names,
    /// every field present, and 64-bit integers as numbers, not strings.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// A package folder (with manifest.toml), or a folder of packages.
    dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Path of libonnxruntime.so.1.31.1 [default: .ort/libonnxruntime.so.1.31.1, or CANDOR_ORT_LIB].
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Score(args) => score(args),
        Command::Why(args) => why(args),
        Command::Audit(args) => audit(args),
        Command::Models {
            command: ModelsCommand::Validate(args),
        } => validate(args),
        Command::Models {
            command: ModelsCommand::Card(args),
        } => card(args),
        Command::Token {
            command: TokenCommand::Issue(args),
        } => issue_token(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn issue_token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.config.as_deref(), ConfigFlags::default())
        .context("invalid configuration")?;
    let key_file = &config.consent.subject_key_file;
    // Minting under a key the gateway does not hold would only make tokens
    // it rejects: never create the key here.
    if !key_file.is_file() {
        bail!(
            "consent.subject_key_file: {} does not exist; start the gateway once (it creates the key) or point --config at its configuration",
            key_file.display()
        );
    }
    if args.subject.trim().is_empty() {
        bail!("--subject: is empty; a token is bound to one person");
    }
    // No decision is made for a longer one (Score refuses it), so a token
    // for it could never find anything.
    if args.subject.len() > crate::grpc::MAX_ID_BYTES {
        bail!(
            "--subject: {} bytes, longer than the {} a subject id may have",
            args.subject.len(),
            crate::grpc::MAX_ID_BYTES
        );
    }
    let key = crate::store::load_or_create_key(key_file, "consent.subject_key_file")?;
    let subject_ref = crate::consent::ledger::pseudonym(&key, &args.subject);
    let tokens = crate::access::tokens::Tokens::new(&crate::consent::ledger::token_key(&key));
    let token = tokens.issue(
        &subject_ref,
        crate::access::tokens::now_secs(),
        std::time::Duration::from_secs(args.ttl_secs),
    )?;
    print(&token)
}

/// Threads for the server's blocking work: database reads, model loads,
/// metrics. Most of it waits for one of the store's four read connections,
/// so threads beyond a few only park, each keeping a stack and allocator
/// caches. With tokio's default (512), disk stalls at 500 calls/s grew the
/// pool to 35 threads for good (RELIABILITY.md).
const BLOCKING_THREADS: usize = 16;

/// Descriptors the gateway needs beside its client connections: the
/// database and its WAL (a writer, a flusher and pooled readers), the
/// models' files while they load, the metrics port's connections, the
/// folder watch, the runtime's own.
const RESERVED_FILES: u64 = 256;

/// Raises the open-file limit to the most the system allows (a service
/// manager's default soft limit, often 1024, is far below the 8192
/// connections allowed by default), and warns when even that leaves too
/// few descriptors for `limits.max_connections`: out of descriptors, the
/// gateway could accept no connection and open no file, and say nothing.
fn check_open_files(max_connections: usize) {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current < limit.maximum {
            let raised = rustix::process::Rlimit {
                current: limit.maximum,
                ..limit
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                limit = raised;
            }
        }
        if let Some(open) = limit.current
            && open < max_connections as u64 + RESERVED_FILES
        {
            tracing::warn!(
                open_files = open,
                limits.max_connections = max_connections,
                reserved = RESERVED_FILES,
                "the process may open fewer files than limits.max_connections needs: out of descriptors the gateway can accept no connection and open no file; raise the limit (ulimit -n, LimitNOFILE=) or lower limits.max_connections"
            );
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config =
        Config::load(args.config.as_deref(), &args.flags).context("invalid configuration")?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .context("cannot start the async runtime")?;
    let runtime = tokio.enter();
    let log_format = config.log_format;
    let _telemetry = crate::telemetry::init(log_format).context("cannot set up trace export")?;
    let served = serve_on(&tokio, config);
    drop(runtime);
    match served {
        Ok(Served::Stopped) => {}
        Ok(Served::StoppedWhileStarting) => {
            // The database's open or the models' load goes on on a blocking
            // thread, which dropping the runtime would wait for (a minute
            // for a large database or package). It is left to end with the
            // process: every write the gateway acknowledged is committed,
            // and SQLite's journal makes a stop at any point safe, as a
            // crash would be.
            tokio.shutdown_background();
        }
        // The line that says why the gateway stopped is one a JSON log
        // pipeline reads, like every other.
        Err(e) if log_format == crate::config::LogFormat::Json => {
            tracing::error!(error = format!("{e:#}"), "candor stopped on an error");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e),
    }
    Ok(ExitCode::SUCCESS)
}

/// [`serve`] on its runtime, once the configuration is read and logging
/// set up.
fn serve_on(tokio: &tokio::runtime::Runtime, config: Config) -> anyhow::Result<Served> {
    // Before anything is bound or opened: a refusal is not a crash.
    crate::grpc::check_exposure(&config, config.listen)?;
    // Fail before binding, with the message that says how to get the library.
    runtime::init(&config.ort_lib)?;
    check_open_files(config.limits.max_connections);
    tokio.block_on(async {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("metrics_listen: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        // One signal stops both servers, and the start: opening a large
        // database takes a while (its check reads every page). A second
        // ends the stop's grace.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (again, signalled_again) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: draining in-flight calls");
            let _ = stop.send(true);
            shutdown_signal().await;
            tracing::info!("a second signal: no more grace");
            let _ = again.send(());
        });
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let opening = tokio::task::spawn_blocking(move || Gateway::new(config));
        let gateway = tokio::select! {
            opened = opening => Arc::new(
                opened
                    .context("opening the gateway panicked")?
                    .context("cannot start the gateway")?,
            ),
            () = until_stopped(stopped.clone()) => {
                tracing::info!("stopped while opening the database, before serving");
                return anyhow::Ok(Served::StoppedWhileStarting);
            }
        };
        let cutting = gateway.clone();
        tokio::spawn(async move {
            if signalled_again.await.is_ok() {
                cutting.end_grace();
            }
        });
        tracing::info!(addr = %listener.local_addr()?, "candor listening");
        // `/healthz` answers until the gRPC server has stopped, so that it
        // says "shutting down" through the stop's grace.
        let (served, served_rx) = tokio::sync::watch::channel(false);
        if let Some(listener) = metrics_listener {
            tracing::info!(http = %listener.local_addr()?, "metrics and health on HTTP");
            tokio::spawn(crate::metrics::serve(
                listener,
                gateway.clone(),
                until_stopped(served_rx),
            ));
        }
        let server = async {
            let result =
                grpc::serve(listener, gateway.clone(), until_stopped(stopped.clone())).await;
            let _ = served.send(true);
            result.context("gRPC server failed")
        };
        // A stop while the models load ends the start: the load goes on on
        // a blocking thread (a minute for large packages) that nothing waits
        // for, while the server drains as in any stop.
        let load = async {
            tokio::select! {
                loaded = gateway.load_models() => {
                    loaded.context("cannot load the models").map(|()| Served::Stopped)
                }
                () = until_stopped(stopped.clone()) => {
                    tracing::info!("stopped while loading the models, before they served");
                    Ok(Served::StoppedWhileStarting)
                }
            }
        };
        let ((), served) = tokio::try_join!(server, load)?;
        tracing::info!("candor stopped");
        anyhow::Ok(served)
    })
}

/// How `serve` ended.
#[derive(Debug, PartialEq)]
enum Served {
    Stopped,
    /// Before the database was open or the models loaded.
    StoppedWhileStarting,
}

/// Resolves on ctrl-c or SIGTERM; the server then drains in-flight calls.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn score(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let (model, version) = match args.model.split_once('@') {
        Some((m, v)) => (m.to_owned(), Some(v.to_owned())),
        None => (args.model.clone(), None),
    };
    let (rows, listed) = if let Some(path) = &args.json {
        rows_from_json(&read_input(path)?).with_context(|| path.display().to_string())?
    } else if let Some(path) = &args.csv {
        let rows = rows_from_csv(&read_input(path)?).with_context(|| path.display().to_string())?;
        (rows, false)
    } else {
        let row = args
            .features
            .iter()
            .map(|f| parse_flag(f))
            .collect::<anyhow::Result<Features>>()?;
        unique(names(&row), "--feature")?;
        (vec![row], false)
    };
    if rows.is_empty() {
        bail!("no rows to score");
    }
    let call = ScoreCall {
        model,
        version,
        subject_id: args.subject,
        rows,
        listed,
        consent: ConsentSignals {
            country: args.country,
            region: args.region,
            age: args.age,
            tc_string: args.tc_string,
            gpp_string: args.gpp_string,
            gpc: args.gpc,
        },
        token: args.token,
        batch_rows: usize::try_from(args.batch_rows)?,
    };
    let total = call.rows.len();
    let scored = with_gateway(&args.gateway, call.token.is_some(), |channel| async move {
        grpc::client::score(channel, &call).await
    })?;
    let printed = print(&serde_json::to_string_pretty(&scored.decisions)?)?;
    match scored.failed {
        None => Ok(printed),
        Some((rows, status)) => Err(status_error(&status, &args.gateway).context(format!(
            "rows {} to {} of {total} (counted from 1; the gateway's rows[i] is the i-th of them, from 0) were not scored, nor any after them; the {} decisions printed above were made and recorded",
            rows.start + 1,
            rows.end,
            rows.start
        ))),
    }
}

fn why(args: WhyArgs) -> anyhow::Result<ExitCode> {
    let request = grpc::client::WhyCall {
        decision_id: args.decision_id,
        audience: args.audience,
        language: args.language,
        token: args.token,
        reason: args.reason,
    };
    let (json, text) = with_gateway(
        &args.gateway,
        request.token.is_some(),
        |channel| async move { grpc::client::why(channel, &request).await },
    )?;
    if args.json {
        print(&serde_json::to_string_pretty(&json)?)
    } else {
        print(text.trim_end())
    }
}

/// Connects to the gateway and runs one call on a small runtime; a
/// credential is about to be sent when `credential`.
fn with_gateway<T, F>(
    gateway: &GatewayArgs,
    credential: bool,
    call: impl FnOnce(tonic::transport::Channel) -> F,
) -> anyhow::Result<T>
where
    F: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let addr = &gateway.addr;
    let mut endpoint = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .with_context(|| format!("bad --addr {addr:?}"))?;
    let uri = endpoint.uri().clone();
    if uri.scheme_str().is_none() {
        anyhow::bail!(
            "--addr {addr}: give the scheme too: http://{addr}, or https://{addr} for a gateway serving TLS"
        );
    }
    if !matches!(uri.scheme_str(), Some("http" | "https"))
        || !matches!(uri.path(), "" | "/")
        || uri.query().is_some()
    {
        anyhow::bail!(
            "--addr {addr}: a gateway is reached at http://HOST:PORT, or https://HOST:PORT for one serving TLS"
        );
    }
    let timeout = std::time::Duration::from_secs(gateway.timeout_secs);
    // Each call is bounded, not the command: a long input's later batches
    // must not take the decisions of the earlier ones down with them.
    endpoint = endpoint.connect_timeout(timeout).timeout(timeout);
    let pem = |flag: &str, path: &Path| {
        std::fs::read(path).with_context(|| format!("{flag} {}: cannot read", path.display()))
    };
    if uri.scheme_str() == Some("https") {
        let tls = tonic::transport::ClientTlsConfig::new();
        let mut tls = match &gateway.ca_cert {
            Some(path) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem(
                "--ca-cert",
                path,
            )?)),
            None => tls.with_webpki_roots(),
        };
        if let (Some(cert), Some(key)) = (&gateway.client_cert, &gateway.client_key) {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                pem("--client-cert", cert)?,
                pem("--client-key", key)?,
            ));
        }
        endpoint = endpoint
            .tls_config(tls)
            .with_context(|| format!("--addr {addr}: cannot set up TLS"))?;
    } else if let Some(flag) = [
        (gateway.ca_cert.is_some(), "--ca-cert"),
        (gateway.client_cert.is_some(), "--client-cert"),
    ]
    .iter()
    .find_map(|&(given, flag)| given.then_some(flag))
    {
        anyhow::bail!("{flag}: applies to an https:// --addr, not {addr}");
    } else if credential
        && !uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<std::net::IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback())
        && uri.host() != Some("localhost")
    {
        eprintln!(
            "warning: sending the credential in clear to {addr}; use an https:// address unless a TLS-terminating proxy is in between"
        );
    }
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async {
        // A port that accepts and never speaks HTTP/2 would hold the
        // handshake for ever.
        let channel = tokio::time::timeout(timeout, crate::grpc::connect(endpoint))
            .await
            .map_err(|_| unanswered(gateway))?
            .with_context(|| format!("cannot reach the gateway at {addr}"))?;
        call(channel).await.map_err(|s| status_error(&s, gateway))
    })
}

fn unanswered(gateway: &GatewayArgs) -> anyhow::Error {
    anyhow::anyhow!(
        "the gateway at {} did not answer within {} s (--timeout-secs); is it the gateway's gRPC port, and is it up?",
        gateway.addr,
        gateway.timeout_secs
    )
}

/// A call's failure as the command reports it.
fn status_error(s: &tonic::Status, gateway: &GatewayArgs) -> anyhow::Error {
    // The channel's own bound on a call (`Endpoint::timeout`).
    if s.code() == tonic::Code::Cancelled && s.message() == tonic::TimeoutExpired(()).to_string() {
        return unanswered(gateway);
    }
    // A transport failure says only "transport error"; its causes say what
    // went wrong (a TLS port spoken to in clear, say).
    let mut causes = String::new();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        causes.push_str(&format!(": {e}"));
        source = e.source();
    }
    anyhow::anyhow!("{:?}: {}{causes}", s.code(), s.message())
}

/// Writes `text` to standard output, ending it with a newline.
fn print(text: &str) -> anyhow::Result<ExitCode> {
    let newline = if text.ends_with('\n') { "" } else { "\n" };
    match write!(std::io::stdout(), "{text}{newline}") {
        // A reader that stopped early (`| head`) is not an error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        result => {
            result?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    Ok(text)
}

/// A flag or CSV cell: an integer if it reads as one, else a number, else a
/// category label; empty means missing. The server checks it against the
/// feature's declared type.
fn parse_value(text: &str) -> FeatureValue {
    let text = text.trim();
    if text.is_empty() {
        FeatureValue::Missing
    } else if let Ok(i) = text.parse::<i64>() {
        FeatureValue::Integer(i)
    } else if let Ok(x) = text.parse::<f64>() {
        FeatureValue::Number(x)
    } else {
        FeatureValue::Category(text.to_owned())
    }
}

fn parse_flag(flag: &str) -> anyhow::Result<(String, FeatureValue)> {
    let (name, value) = flag
        .split_once('=')
        .with_context(|| format!("--feature {flag:?} is not NAME=VALUE"))?;
    Ok((name.trim().to_owned(), parse_value(value)))
}

/// Refuses a row that names a feature twice: which value was meant cannot
/// be known, and once the row becomes the request's map only one would be
/// sent, silently.
fn unique<'a>(names: impl IntoIterator<Item = &'a str>, at: &str) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    if let Some(name) = names.into_iter().find(|name| !seen.insert(*name)) {
        bail!("{at}: feature {name:?} is given more than once");
    }
    Ok(())
}

/// A row's feature names.
fn names(row: &Features) -> impl Iterator<Item = &str> {
    row.iter().map(|(name, _)| name.as_str())
}

fn rows_from_csv(text: &str) -> anyhow::Result<Vec<Features>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers()?.clone();
    unique(header.iter(), "CSV header")?;
    reader
        .records()
        .map(|record| {
            let record = record?;
            Ok(header
                .iter()
                .zip(record.iter())
                .map(|(h, v)| (h.to_owned(), parse_value(v)))
                .collect())
        })
        .collect()
}

/// A JSON object's members in their order, a repeated name kept (a
/// `serde_json` map keeps only the last).
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of features")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The rows of a JSON input, and whether it was a list of them.
fn rows_from_json(text: &str) -> anyhow::Result<(Vec<Features>, bool)> {
    // A byte-order mark is not JSON, but editors write one (RFC 8259 lets a
    // parser ignore it).
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let value: serde_json::Value = serde_json::from_str(text).context("invalid JSON")?;
    let listed = value.is_array();
    // The shape is checked on the parsed value; the members are then read
    // again with their repeats.
    let objects = match &value {
        serde_json::Value::Array(items) => {
            if let Some(i) = items.iter().position(|v| !v.is_object()) {
                bail!("JSON row {i} is not an object");
            }
            serde_json::from_str::<Vec<Members>>(text)?
        }
        serde_json::Value::Object(_) => vec![serde_json::from_str::<Members>(text)?],
        _ => bail!("JSON input must be an object of features or an array of them"),
    };
    objects
        .into_iter()
        .enumerate()
        .map(|(i, Members(members))| {
            let row = members
                .into_iter()
                .map(|(name, v)| {
                    let value = match v {
                        serde_json::Value::Null => FeatureValue::Missing,
                        serde_json::Value::Number(n) => match n.as_i64() {
                            Some(i) => FeatureValue::Integer(i),
                            None => FeatureValue::Number(n.as_f64().unwrap_or(f64::NAN)),
                        },
                        serde_json::Value::String(s) => FeatureValue::Category(s),
                        other => bail!("JSON row {i}, feature {name:?}: {other} is not a number, string or null"),
                    };
                    Ok((name, value))
                })
                .collect::<anyhow::Result<Features>>()?;
            unique(names(&row), &format!("JSON row {i}"))?;
            Ok(row)
        })
        .collect::<anyhow::Result<_>>()
        .map(|rows| (rows, listed))
}

/// Loads ONNX Runtime for the offline commands, from `--ort-lib` or the
/// configuration's `ort_lib`.
fn init_ort(ort_lib: Option<PathBuf>) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        ort_lib: Option<PathBuf>,
    }
    let config = Config::load(None, Flags { ort_lib }).context("invalid configuration")?;
    runtime::init(&config.ort_lib)?;
    Ok(())
}

fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    init_ort(args.ort_lib)?;
    let package = ModelPackage::load_to_audit(&args.model)?;
    let declared = audit::AuditOptions::declared(&package).ok();
    let data = match (args.data, &declared) {
        (Some(data), _) => data,
        (None, Some(d)) => d.data.clone(),
        (None, None) => bail!("--data is needed: the package declares no [fairness] data set"),
    };
    let min_group_rows = usize::try_from(args.min_group_rows)?;
    let as_declared = args.group_columns.is_empty();
    let groups: Vec<_> = if as_declared {
        declared
            .as_ref()
            .map(|d| d.groups.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|g| audit::GroupColumn {
                min_group_rows,
                ..g
            })
            .collect()
    } else {
        args.group_columns
            .iter()
            .map(|spec| {
                audit::GroupColumn::parse(
                    spec,
                    args.min_disparate_impact,
                    args.max_equal_opportunity_difference,
                    min_group_rows,
                )
            })
            .collect()
    };
    if groups.is_empty() {
        bail!("--group-column is needed: the package declares no [fairness] groups");
    }
    let method = Method::parse(&args.attribution_method).with_context(|| {
        format!(
            "--attribution-method {:?}: expected path_dependent or interventional",
            args.attribution_method
        )
    })?;
    let options = audit::AuditOptions {
        data,
        within: None,
        label_column: args
            .label_column
            .or_else(|| declared.as_ref().and_then(|d| d.label_column.clone()))
            .filter(|_| !args.no_label),
        groups,
        attributions: (args.attribution_rows != Some(0)).then_some(audit::AttributionOptions {
            method,
            max_rows: args.attribution_rows,
        }),
        // The manifest's note speaks of its own thresholds.
        note: declared.and_then(|d| d.note).filter(|_| as_declared),
    };
    let report = audit::run(&package, &options)?;
    let json = serde_json::to_string_pretty(&report)? + "\n";
    let markdown = audit::render::markdown(&report);
    match args.out {
        Some(out) => {
            let formats = if args.format.is_empty() {
                vec![AuditFormat::Json, AuditFormat::Markdown, AuditFormat::Png]
            } else {
                args.format
            };
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            for format in formats {
                let path = out.join(match format {
                    AuditFormat::Json => audit::REPORT_FILE,
                    AuditFormat::Markdown => "fairness.md",
                    AuditFormat::Png => "fairness.png",
                });
                match format {
                    AuditFormat::Json => std::fs::write(&path, &json)?,
                    AuditFormat::Markdown => std::fs::write(&path, &markdown)?,
                    AuditFormat::Png => audit::chart::draw(&report, &path)?,
                }
                eprintln!("wrote {}", path.display());
            }
        }
        None => {
            let formats = if args.format.is_empty() {
                vec![AuditFormat::Markdown]
            } else {
                args.format
            };
            for format in formats {
                match format {
                    AuditFormat::Json => print(&json)?,
                    AuditFormat::Markdown => print(&markdown)?,
                    AuditFormat::Png => bail!("--format png needs --out DIR"),
                };
            }
        }
    }
    // The exit status alone would read as an error of the command, and a
    // report piped to a file says nothing on the terminal.
    if !report.passed {
        eprint!(
            "the audit fails its thresholds:\n{}",
            audit::render::summary(&report)
        );
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn card(args: CardArgs) -> anyhow::Result<ExitCode> {
    init_ort(args.ort_lib)?;
    let package = ModelPackage::load(&args.dir, 1)?;
    print(&card::markdown(&package))
}

fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    init_ort(args.ort_lib)?;
    let dirs = if args.dir.join(MANIFEST_FILE).is_file() {
        vec![args.dir.clone()]
    } else {
        package_dirs(&args.dir)?
    };
    if dirs.is_empty() {
        bail!(
            "no model package (a folder with {MANIFEST_FILE}) under {}",
            args.dir.display()
        );
    }
    let reports: Vec<_> = dirs.iter().map(|d| validate_package(d)).collect();
    if args.json {
        print(&serde_json::to_string_pretty(&reports)?)?;
    } else {
        let text: String = reports.iter().map(|r| r.to_text()).collect();
        print(&text)?;
    }
    Ok(if reports.iter().all(|r| r.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Every package folder under `root`: a models folder's `<name>/<version>/`
/// ones, or a model folder's `<version>/` ones.
fn package_dirs(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for name in
        std::fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))?
    {
        let name = name?.path();
        if name.join(MANIFEST_FILE).is_file() {
            dirs.push(name);
            continue;
        }
        if !name.is_dir() {
            continue;
        }
        for version in std::fs::read_dir(&name)? {
            let version = version?.path();
            if version.join(MANIFEST_FILE).is_file() {
                dirs.push(version);
            }
        }
    }
    dirs.sort();
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_by_shape() {
        assert_eq!(parse_value("3"), FeatureValue::Integer(3));
        assert_eq!(parse_value("2.5"), FeatureValue::Number(2.5));
        assert_eq!(parse_value("gold"), FeatureValue::Category("gold".into()));
        assert_eq!(parse_value(" "), FeatureValue::Missing);
        assert!(parse_flag("novalue").is_err());
    }

    #[test]
    fn reads_json_objects_and_arrays() {
        let (one, listed) = rows_from_json(r#"{"A": 1, "B": 1.5, "C": null, "D": "x"}"#).unwrap();
        assert_eq!(one[0][2], ("C".to_owned(), FeatureValue::Missing));
        assert_eq!(one[0][1], ("B".to_owned(), FeatureValue::Number(1.5)));
        assert!(!listed);
        assert_eq!(
            rows_from_json(r#"[{"A": 1}, {"A": 2}]"#).unwrap().0.len(),
            2
        );
        // A list of one is a list: its answer is one too.
        assert!(rows_from_json(r#"[{"A": 1}]"#).unwrap().1);
        // A byte-order mark, as editors write one.
        assert!(rows_from_json("\u{FEFF}{\"A\": 1}").is_ok());
        assert!(rows_from_json("[1]").is_err());
        assert!(rows_from_json(r#"{"A": [1]}"#).is_err());
    }

    #[test]
    fn a_feature_given_twice_is_refused_naming_it() {
        let twice = rows_from_json(r#"{"A": 6, "B": 1, "A": 0}"#).unwrap_err();
        assert!(
            twice
                .to_string()
                .contains("JSON row 0: feature \"A\" is given more than once"),
            "{twice}"
        );
        let second = rows_from_json(r#"[{"A": 1}, {"B": 1, "B": 2}]"#).unwrap_err();
        assert!(
            second.to_string().contains("JSON row 1: feature \"B\""),
            "{second}"
        );
        let header = rows_from_csv("A,B,A\n6,1,0\n").unwrap_err();
        assert!(
            header.to_string().contains("CSV header: feature \"A\""),
            "{header}"
        );
        let flags = vec![parse_flag("A=6").unwrap(), parse_flag("A=0").unwrap()];
        assert!(unique(names(&flags), "--feature").is_err());
    }

    #[test]
    fn reads_csv_rows() {
        let rows = rows_from_csv("A,B\n1,\n2,3.5\n").unwrap();
        assert_eq!(rows[0][1], ("B".to_owned(), FeatureValue::Missing));
        assert_eq!(rows[1][1], ("B".to_owned(), FeatureValue::Number(3.5)));
    }
}
