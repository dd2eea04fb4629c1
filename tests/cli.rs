//! The `candor` binary as a newcomer uses it: `serve`, then `score`.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use candor::grpc::pb::scoring_service_client::ScoringServiceClient;
use common::*;

fn first_golden_row() -> (String, f64) {
    let text =
        std::fs::read_to_string(repo_root().join("models/caravan-lgbm/1.0.0/golden.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let n = header.len() - 1;
    (
        format!("{}\n{}\n", header[..n].join(","), row[..n].join(",")),
        row[n].parse().unwrap(),
    )
}

// Multi-threaded: the blocking `candor score` child must not starve the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candor_score_prints_the_decision_as_json() {
    let server = TestServer::start().await;
    let (csv, want) = first_golden_row();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("row.csv");
    std::fs::write(&path, &csv).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_candor"))
        .args([
            "score",
            "--addr",
            &server.url(),
            "--model",
            "caravan-lgbm",
            "--csv",
            path.to_str().unwrap(),
            "--country",
            "US",
            "--age",
            "adult",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decision: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        (decision["score"].as_f64().unwrap() - want).abs() <= 1e-6,
        "{decision}"
    );
    assert_eq!(decision["model"]["version"], "1.0.0");
    assert_eq!(decision["tier"], "personalised");
    assert_eq!(decision["provenance"]["regime"], "us_gpp");

    // Flags and JSON reach the same server; bad input is reported, not scored.
    let out = Command::new(env!("CARGO_BIN_EXE_candor"))
        .args([
            "score",
            "--addr",
            &server.url(),
            "--model",
            "caravan-lgbm@1.1.0",
            "-f",
            "PPERSAUT=3",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("is missing"),
        "{err}"
    );
    server.stop().await;
}

/// A CSV longer than one batch is sent in batches, in order; a batch that
/// fails after others were scored says which rows were not, and leaves the
/// decisions made on standard output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candor_score_sends_a_long_csv_in_batches() {
    let server = TestServer::start().await;
    let text =
        std::fs::read_to_string(repo_root().join("models/caravan-lgbm/1.0.0/golden.csv")).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .take(6)
        .map(|l| l.split(',').collect())
        .collect();
    let n = rows[0].len() - 1;
    let csv =
        |rows: &[Vec<&str>]| -> String { rows.iter().map(|r| r[..n].join(",") + "\n").collect() };
    let want: Vec<f64> = rows[1..].iter().map(|r| r[n].parse().unwrap()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let score = |name: &str, text: String| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_candor"))
            .args([
                "score",
                "--addr",
                &server.url(),
                "--model",
                "caravan-lgbm@1.0.0",
            ])
            .args([
                "--batch-rows",
                "2",
                "--country",
                "US",
                "--age",
                "adult",
                "--csv",
            ])
            .arg(path)
            .output()
            .unwrap()
    };

    let out = score("five.csv", csv(&rows));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decisions: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let scores: Vec<f64> = decisions
        .iter()
        .map(|d| d["score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores.len(), want.len());
    for (got, want) in scores.iter().zip(&want) {
        assert!((got - want).abs() <= 1e-6, "{scores:?} against {want:?}");
    }

    // The fifth row (the third batch) has a value out of its range.
    let mut broken = rows.clone();
    broken[5][0] = "999";
    let out = score("broken.csv", csv(&broken));
    assert!(!out.status.success());
    let made: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made.len(), 4);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rows 5 to 5 of 5") && err.contains("InvalidArgument"),
        "{err}"
    );
    server.stop().await;
}

/// Starts `candor serve` on port 0 with its database in `data`, waits for
/// its models, and returns it with its address and a thread that keeps
/// draining its log (so it never blocks on a full pipe).
fn spawn_server(
    data: &std::path::Path,
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    String,
    std::thread::JoinHandle<Vec<String>>,
) {
    spawn_server_with(data, env, |_| {})
}

/// `candor serve` on the bundled models, keeping its database and keys in
/// `data`, with its metrics on a port of its own; the listen address is
/// the caller's to give.
fn serve_command(data: &std::path::Path) -> Command {
    serve_models_command(data, &repo_root().join("models"))
}

/// [`serve_command`] with the packages in `models`.
fn serve_models_command(data: &std::path::Path, models: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_candor"));
    command
        .args(["serve", "--models-dir", models.to_str().unwrap()])
        .env("CANDOR_ORT_LIB", ort_lib())
        .env("CANDOR_DATABASE", data.join("candor.db"))
        .env("CANDOR_CONSENT__SUBJECT_KEY_FILE", data.join("subject.key"))
        .env("CANDOR_DECISIONS__INPUT_KEY_FILE", data.join("inputs.key"))
        .env("CANDOR_METRICS_LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG");
    command
}

/// [`spawn_server`], with the command prepared further by `prepare`.
fn spawn_server_with(
    data: &std::path::Path,
    env: &[(&str, &str)],
    prepare: impl FnOnce(&mut Command),
) -> (
    std::process::Child,
    String,
    std::thread::JoinHandle<Vec<String>>,
) {
    let mut command = serve_command(data);
    command
        .args(["--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    prepare(&mut command);
    let mut child = command.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    let mut seen = Vec::new();
    while let Some(Ok(line)) = stderr.next() {
        seen.push(line.clone());
        // `addr=…` in text logs, `"addr":"…"` in JSON ones.
        for key in ["addr=", "\"addr\":\""] {
            if let Some(at) = line.find(key) {
                let rest = &line[at + key.len()..];
                addr = rest
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .map(str::to_owned);
            }
        }
        if line.contains("models loaded") {
            break;
        }
    }
    let Some(addr) = addr else {
        let _ = child.kill();
        panic!("serve logs its address");
    };
    let addr = format!("http://{addr}");
    let rest = std::thread::spawn(move || {
        seen.extend(stderr.map_while(Result::ok));
        seen
    });
    (child, addr, rest)
}

/// Settings that start a gateway but would not do what was meant are
/// named in its log: a key file others can read, and a retention for a
/// model that is not loaded (a misspelt name keeps the default).
#[tokio::test]
async fn serve_warns_of_a_readable_key_and_a_retention_for_no_model() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("subject.key");
    std::fs::write(&key, sha256_hex(b"a key others can read")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (mut child, _, log) = spawn_server(
        data.path(),
        &[("CANDOR_DECISIONS__MODEL_RETENTION_DAYS__CARAVAN-LGMB", "7")],
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    let log = log.join().unwrap().join("\n");
    assert!(
        log.contains("the key file is readable by other users"),
        "{log}"
    );
    assert!(
        log.contains("decisions.model_retention_days names a model that is not loaded"),
        "{log}"
    );
}

#[tokio::test]
async fn serve_drains_in_flight_calls_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let (child, addr, rest) = spawn_server(data.path(), &[]);
    let channel = tonic::transport::Channel::from_shared(addr)
        .unwrap()
        .connect()
        .await
        .unwrap();

    // A large batch keeps the server busy while SIGTERM arrives.
    let batch = caravan_batch(1024);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut client = ScoringServiceClient::new(channel.clone());
            let batch = batch.clone();
            tokio::spawn(async move { client.score_batch(batch).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    for call in calls {
        let response = call
            .await
            .unwrap()
            .expect("a call in flight at SIGTERM completes");
        assert_eq!(response.into_inner().decisions.len(), 1024);
    }
    let mut child = child;
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let rest = rest.join().unwrap();
    assert!(
        rest.iter().any(|l| l.contains("draining in-flight calls")),
        "{rest:?}"
    );
}

/// A stop while the models load ends the start at once: an orchestrator
/// that gives up on a slow start must not wait for every package first.
#[test]
fn sigterm_while_the_models_load_stops_the_start() {
    let data = tempfile::tempdir().unwrap();
    // Enough packages that loading them all takes seconds, long after the
    // signal arrives.
    let models = data.path().join("models");
    for patch in 0..8 {
        let package = copy_package("caravan-lgbm/1.1.0", &models);
        let version = format!("1.1.{}", patch + 1);
        edit(
            &package.join("manifest.toml"),
            "version = \"1.1.0\"",
            &format!("version = \"{version}\""),
        );
        std::fs::rename(&package, package.with_file_name(version)).unwrap();
    }
    let mut child = serve_models_command(data.path(), &models)
        .args(["--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let loading = log
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("checking a package against the validation gate"));
    assert!(loading.is_some(), "the first package is being checked");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let rest: Vec<String> = log.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("stopped while loading the models")),
        "{rest:?}"
    );
    assert!(
        !rest.iter().any(|l| l.contains("models loaded")),
        "{rest:?}"
    );
}

/// In `sync` durability a response leaves only after its decision is
/// committed: SIGKILL during load loses nothing that was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_load_loses_no_answered_decision() {
    let (answered, missing) = killed_during_load(&[("CANDOR_DECISIONS__DURABILITY", "sync")]).await;
    assert!(
        missing.is_empty(),
        "{} of {answered} answered decisions lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// In `async` durability a crash loses at most
/// `decisions.async_max_uncommitted` answered decisions, however long the
/// commit window: beyond the bound, responses wait for their commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_async_loses_at_most_the_bound() {
    let (answered, missing) = killed_during_load(&[
        ("CANDOR_DECISIONS__DURABILITY", "async"),
        ("CANDOR_DECISIONS__ASYNC_COMMIT_WINDOW_MS", "100"),
        ("CANDOR_DECISIONS__ASYNC_MAX_UNCOMMITTED", "2"),
    ])
    .await;
    assert!(
        missing.len() <= 2,
        "{} of {answered} answered decisions lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Scores from 8 clients for 1.5 s against a gateway started with `env`,
/// SIGKILLs it, and reads the record as a restart would: how many calls
/// were answered, and the answered decisions it lacks.
async fn killed_during_load(env: &[(&str, &str)]) -> (usize, Vec<String>) {
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr, _rest) = spawn_server(data.path(), env);
    let channel = tonic::transport::Channel::from_shared(addr)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let mut client = ScoringServiceClient::new(channel.clone());
            let answered = answered.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let mut request = caravan_request();
                    request.subject_id = format!("crash-{c}-{i}");
                    match client.score(request).await {
                        Ok(r) => answered
                            .lock()
                            .unwrap()
                            .push(r.into_inner().decision.unwrap().decision_id),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let _ = child.wait();
    for c in clients {
        c.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() > 20,
        "only {} answered before the kill",
        answered.len()
    );

    // Opening the database replays its WAL, as a restart would.
    let db = rusqlite::Connection::open(data.path().join("candor.db")).unwrap();
    let missing = answered
        .iter()
        .filter(|id| {
            let found: i64 = db
                .query_row(
                    "SELECT count(*) FROM decisions WHERE decision_id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .unwrap();
            found != 1
        })
        .cloned()
        .collect();
    (answered.len(), missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candor_why_explains_a_recorded_decision() {
    let server = TestServer::start().await;
    let mut request = caravan_request();
    request.subject_id = "grace".into();
    let d = server.score_one(request).await;
    let url = server.url();
    let id = d.decision_id.clone();
    let run = move |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_candor"))
            .args(["why", &id, "--addr", &url])
            .args(args)
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["--language", "nl"])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("Waarom je deze advertentie ziet"),
        "{text}"
    );
    let out = tokio::task::spawn_blocking(move || run(&["--audience", "engineer", "--json"]))
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["decision_id"], d.decision_id);
    let features = &json["engineer"]["attribution"]["features"];
    assert_eq!(features.as_array().unwrap().len(), 78, "{json}");
    // The whole answer, as the proto3 JSON mapping gives it.
    assert!(json["decided_at"].is_string(), "{json}");
    assert!(
        json["engineer"]["provenance"]["rules_fired"].is_array(),
        "{json}"
    );
    assert!(features[0]["standard_error"].is_number(), "{json}");
}

/// Against a gateway with access keys, `score` sends its key and `why`
/// sends a staff reader's key and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_commands_carry_credentials_and_a_staff_reason() {
    use candor::config::Role;
    let mut config = test_config();
    config.access.api_keys = vec![
        api_key(Role::Scorer, "scorer-key"),
        api_key(Role::Support, "support-key"),
    ];
    let server = TestServer::start_with(config).await;
    let (csv, _) = first_golden_row();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("row.csv");
    std::fs::write(&path, &csv).unwrap();
    let url = server.url();
    let path = path.to_str().unwrap().to_owned();
    let candor = |args: Vec<String>, env: Vec<(&'static str, &'static str)>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_candor"));
        command
            .args(args)
            .env_remove("CANDOR_TOKEN")
            .env_remove("CANDOR_REASON");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    let score = |token: Option<&str>| {
        let mut args: Vec<String> = [
            "score",
            "--addr",
            &url,
            "--model",
            "caravan-lgbm",
            "--csv",
            &path,
        ]
        .map(str::to_owned)
        .into();
        args.extend(["--subject", "zoe", "--country", "US", "--age", "adult"].map(str::to_owned));
        if let Some(t) = token {
            args.extend(["--token".to_owned(), t.to_owned()]);
        }
        args
    };
    let run = move |args, env| tokio::task::spawn_blocking(move || candor(args, env));
    let refused = run(score(None), vec![]).await.unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"));
    let out = run(score(Some("scorer-key")), vec![]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decision: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = decision["decision_id"].as_str().unwrap().to_owned();

    let why = |reason: bool| {
        let mut args: Vec<String> = [
            "why",
            &id,
            "--addr",
            &url,
            "--audience",
            "support",
            "--json",
        ]
        .map(str::to_owned)
        .into();
        if reason {
            args.extend(["--reason".to_owned(), "ticket 4711".to_owned()]);
        }
        args
    };
    // The key from the environment, as CANDOR_TOKEN; no reason: refused.
    let token = vec![("CANDOR_TOKEN", "support-key")];
    let out = run(why(false), token.clone()).await.unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("x-candor-reason"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(why(true), token).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["decision_id"], id);
    // The support view carries the tier in plain words and the score.
    let view = json.to_string();
    assert!(view.contains("\"tier_explained\":\""), "{view}");
    assert!(view.contains("\"base_score\":"), "{view}");
    // As text, the trail says what each record held, how and where it was
    // collected; the purposes say how each was decided.
    let mut text = why(true);
    text.retain(|a| a != "--json");
    let out = run(text, vec![("CANDOR_TOKEN", "support-key")])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\nPurposes: purpose 3 not_required (us_signals)"),
        "{text}"
    );
    assert!(text.contains("evidence 20"), "{text}");
    assert!(text.contains("collected by inline_signal in US"), "{text}");
    server.stop().await;
}

/// An OTLP collector that keeps the spans it receives.
#[derive(Default, Clone)]
struct Collector {
    spans: std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, each call's span (with its
/// request id) reaches the collector; the JSON log lines carry the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_exported_over_otlp_and_logs_carry_the_request_id() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr, rest) = spawn_server(
        data.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("CANDOR_LOG_FORMAT", "json"),
            ("RUST_LOG", "info,candor=debug"),
        ],
    );
    let channel = tonic::transport::Channel::from_shared(addr)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(caravan_request());
    request
        .metadata_mut()
        .insert("x-request-id", "trace-me-1".parse().unwrap());
    let response = ScoringServiceClient::new(channel)
        .score(request)
        .await
        .unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "trace-me-1"
    );

    let mut found = false;
    for _ in 0..100 {
        found = collector.spans.lock().unwrap().iter().any(|s| {
            s.name == "rpc"
                && s.attributes.iter().any(|a| {
                    a.key == "request_id" && format!("{:?}", a.value).contains("trace-me-1")
                })
        });
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the rpc span reached the collector");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    let lines = rest.join().unwrap();
    let line = lines
        .iter()
        .find(|l| l.contains("trace-me-1"))
        .unwrap_or_else(|| panic!("no log line names the request: {lines:?}"));
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(json["span"]["request_id"], "trace-me-1", "{json}");
}

/// A credential or a staff reason in the environment is a secret: the
/// client commands' help names the variables but never shows their values.
#[test]
fn the_client_commands_help_keeps_credentials_from_the_environment_secret() {
    for command in ["score", "why"] {
        let out = Command::new(env!("CARGO_BIN_EXE_candor"))
            .args([command, "--help"])
            .env("CANDOR_TOKEN", "key-SECRET-VALUE")
            .env("CANDOR_REASON", "ticket-PRIVATE-4711")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{help}");
        assert!(help.contains("CANDOR_TOKEN"), "{help}");
        assert!(
            !help.contains("SECRET") && !help.contains("PRIVATE"),
            "{help}"
        );
    }
}

/// An address without its scheme is refused naming the fix, rather than
/// failing at the first call with "transport error".
#[test]
fn an_address_without_its_scheme_is_refused_with_the_fix() {
    let out = Command::new(env!("CARGO_BIN_EXE_candor"))
        .args([
            "score",
            "--addr",
            "127.0.0.1:9",
            "--model",
            "m",
            "-f",
            "a=1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--addr 127.0.0.1:9: give the scheme too: http://127.0.0.1:9"),
        "{stderr}"
    );
}

/// Started under a low open-file limit, the gateway raises it to the
/// hard limit, and warns when even that is too few for
/// `limits.max_connections`: out of descriptors it would accept nothing
/// and say nothing.
#[test]
fn serve_raises_the_open_file_limit_and_warns_when_it_is_too_low() {
    use std::os::unix::process::CommandExt;
    let limited = |soft: u64, hard: u64| {
        move |command: &mut Command| {
            // SAFETY: setrlimit is async-signal-safe, as pre_exec needs.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
    };
    const WARNING: &str = "the process may open fewer files than limits.max_connections needs";
    for (hard, max_connections, warned) in [(512, "8192", true), (4096, "1000", false)] {
        let data = tempfile::tempdir().unwrap();
        let (mut child, _, log) = spawn_server_with(
            data.path(),
            &[("CANDOR_LIMITS__MAX_CONNECTIONS", max_connections)],
            limited(256, hard),
        );
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().unwrap();
        let log = log.join().unwrap().join("\n");
        assert_eq!(log.contains(WARNING), warned, "{log}");
        let open_files = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        assert!(
            open_files.split_whitespace().nth(3) == Some(&hard.to_string()),
            "raised to the hard limit: {open_files}"
        );
    }
}

/// With JSON logs, the line that says why the gateway could not serve is
/// JSON too, so that a log pipeline reads it like every other.
#[test]
fn a_failed_start_is_told_in_the_log_format() {
    let data = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = serve_command(data.path())
        .args(["--listen", &taken.local_addr().unwrap().to_string()])
        .args(["--log-format", "json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap();
    let line: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(
        line["fields"]["message"], "candor stopped on an error",
        "{last}"
    );
    assert!(
        line["fields"]["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot listen on"),
        "{last}"
    );
}

/// A port that accepts the connection and never answers (a hung gateway, a
/// wrong service behind a balancer) ends a client command with an error
/// naming the wait, not a hang; an address that is not a gateway's is
/// refused as such.
#[test]
fn a_gateway_that_never_answers_is_an_error_not_a_hang() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", silent.local_addr().unwrap());
    // Accepted and held open, never answered.
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(4).collect();
        std::thread::sleep(std::time::Duration::from_secs(60));
        drop(held);
    });
    let run = |addr: &str| {
        Command::new(env!("CARGO_BIN_EXE_candor"))
            .args(["why", "01a23602-e44e-773f-9848-ad29145a88e8"])
            .args(["--addr", addr, "--timeout-secs", "1"])
            .output()
            .unwrap()
    };
    let started = std::time::Instant::now();
    let out = run(&addr);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did not answer within 1 s"), "{stderr}");
    for wrong in ["ftp://127.0.0.1:1", "http://127.0.0.1:1/some/path"] {
        let out = run(wrong);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("a gateway is reached at http://HOST:PORT"),
            "{stderr}"
        );
    }
}

/// Serving in clear off loopback is refused before anything is bound or
/// opened: no "listening" line, no database made.
#[test]
fn serving_in_clear_off_loopback_is_refused_before_anything_starts() {
    let data = tempfile::tempdir().unwrap();
    let out = serve_command(data.path())
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a loopback address"), "{stderr}");
    assert!(!stderr.contains("candor listening"), "{stderr}");
    assert!(!data.path().join("candor.db").exists());
}

/// A token is issued only for a subject id a decision can be made for.
#[test]
fn a_token_is_issued_only_for_a_subject_id_scoring_takes() {
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("subject.key");
    std::fs::write(&key, sha256_hex(b"a subject key")).unwrap();
    let issue = |subject: &str| {
        Command::new(env!("CARGO_BIN_EXE_candor"))
            .args(["token", "issue", "--subject", subject])
            .env("CANDOR_CONSENT__SUBJECT_KEY_FILE", &key)
            .output()
            .unwrap()
    };
    assert!(issue("alice@example.com").status.success());
    let out = issue(&"x".repeat(300));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--subject: 300 bytes, longer than the 256"),
        "{stderr}"
    );
}
