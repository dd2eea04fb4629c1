//! Operations against a real server: the metrics endpoint moves with
//! traffic and declares every metric as what it is, overload is shed with
//! RESOURCE_EXHAUSTED (after the caller is identified), calls cancelled or
//! past their deadline are answered and counted as such, and faults (a
//! locked or full database, a corrupt model, a package removed while
//! serving) get clear errors while everything else keeps serving and
//! nothing acknowledged is lost.

mod common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use candor::{
    config::Role,
    decisions::Durability,
    grpc::pb::{
        self, explanation_service_client::ExplanationServiceClient,
        model_service_client::ModelServiceClient, scoring_service_client::ScoringServiceClient,
    },
};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Request};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// `GET path` over plain HTTP/1.1: (status code, header block, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: candor\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_owned(), body.to_owned())
}

/// Serves the gateway's `/metrics` and `/healthz` on a port of their own.
async fn serve_metrics(server: &TestServer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(candor::metrics::serve(
        listener,
        server.gateway.clone(),
        std::future::pending(),
    ));
    addr
}

/// Idle sockets on the metrics port cannot pile up: past its bound a
/// connection is closed as it is accepted, and the port serves again once
/// they go.
#[tokio::test]
async fn the_metrics_port_holds_a_bounded_number_of_connections() {
    let server = TestServer::start().await;
    let metrics_addr = serve_metrics(&server).await;
    let mut idle = Vec::new();
    for _ in 0..candor::metrics::METRICS_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(metrics_addr).await.unwrap());
    }
    // Past the bound: accepted and closed at once, so the read ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut byte))
        .await
        .expect("a connection past the bound is closed, not held");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, health) = http_get(metrics_addr, "/healthz").await;
    assert_eq!((status, health.trim()), (200, "ok"));
}

/// Once a stop begins, `/healthz` says so, through the stop's grace.
#[tokio::test]
async fn healthz_says_when_a_stop_has_begun() {
    let server = TestServer::start().await;
    let metrics_addr = serve_metrics(&server).await;
    server.gateway.drain();
    let (status, _, health) = http_get(metrics_addr, "/healthz").await;
    assert_eq!((status, health.trim()), (503, "shutting down"));
    server.stop().await;
}

async fn scrape(metrics: SocketAddr) -> String {
    let (status, _, text) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    text
}

/// Waits up to 10 s for `candor_rpc_in_flight` to read `calls`.
async fn await_in_flight(metrics: SocketAddr, calls: f64) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(metrics).await;
        let now = sample(&text, "candor_rpc_in_flight ");
        if now == Some(calls) {
            return;
        }
        assert!(
            Instant::now() < until,
            "candor_rpc_in_flight stays at {now:?}, not {calls}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Another process's write lock on the database: every write (consent
/// evidence, decision records) waits for it, up to the store's 5 s busy
/// timeout, and so does every Score call. Released when dropped.
fn write_lock(database: &Path) -> rusqlite::Connection {
    let locker = rusqlite::Connection::open(database).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    locker
}

/// The value of the first sample line that starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_every_series_and_move_with_traffic() {
    let server = TestServer::start().await;
    let metrics_addr = serve_metrics(&server).await;
    let (status, _, health) = http_get(metrics_addr, "/healthz").await;
    assert_eq!((status, health.trim()), (200, "ok"));
    let before = scrape(metrics_addr).await;

    let mut scoring = server.scoring().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut request = caravan_request();
        request.subject_id = format!("m{i}");
        request.explain = Some(pb::ExplainOptions {
            mode: pb::ExplainMode::Inline as i32,
            method: 0,
        });
        let d = scoring.score(request).await.unwrap().into_inner();
        ids.push(d.decision.unwrap().decision_id);
    }
    let mut why = ExplanationServiceClient::new(server.channel().await);
    for id in &ids {
        why.get_explanation(pb::GetExplanationRequest {
            decision_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let bad = scoring
        .score(pb::ScoreRequest {
            model: model_ref("no-such-model", ""),
            ..caravan_request()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::NotFound);
    // A method this gateway does not have, counted under one label.
    let nope = common::call_a_missing_method(server.channel().await).await;
    assert_eq!(nope.code(), Code::Unimplemented);

    let after = scrape(metrics_addr).await;
    assert_eq!(
        sample(
            &after,
            r#"candor_rpc_requests_total{rpc="(unknown)",code="UNIMPLEMENTED"}"#
        ),
        Some(1.0),
        "{after}"
    );
    let score_ok = r#"candor_rpc_requests_total{rpc="/candor.v1.ScoringService/Score",code="OK"}"#;
    assert_eq!(sample(&before, score_ok), None);
    assert_eq!(sample(&after, score_ok), Some(5.0), "{after}");
    assert_eq!(
        sample(
            &after,
            r#"candor_rpc_requests_total{rpc="/candor.v1.ScoringService/Score",code="NOT_FOUND"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            r#"candor_rpc_duration_seconds_count{rpc="/candor.v1.ExplanationService/GetExplanation"}"#
        ),
        Some(5.0)
    );
    for stage in ["validate", "consent", "inference", "explain", "record"] {
        let series = format!(r#"candor_stage_duration_seconds_count{{stage="{stage}"}}"#);
        assert_eq!(sample(&after, &series), Some(5.0), "{series}");
    }
    assert_eq!(
        sample(&after, r#"candor_decisions_total{tier="personalised"}"#),
        Some(5.0)
    );
    // Inline attributions were cached: every look-up was a hit.
    assert_eq!(
        sample(&after, "candor_explanation_cache_hit_ratio"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            r#"candor_explanation_lookups_total{answered_from="cache"}"#
        ),
        Some(5.0)
    );
    // Exact TreeSHAP: additive to rounding.
    let residual = sample(&after, "candor_additivity_residual_max").unwrap();
    assert!((0.0..1e-9).contains(&residual), "{residual}");
    assert!(
        sample(&after, "candor_ledger_records").unwrap()
            > sample(&before, "candor_ledger_records").unwrap()
    );
    assert!(sample(&after, "candor_sqlite_memory_bytes").unwrap() > 0.0);
    assert!(sample(&after, "candor_database_bytes").unwrap() > 0.0);
    assert_eq!(
        sample(
            &after,
            r#"candor_retention_failures_total{kind="decisions"}"#
        ),
        Some(0.0)
    );
    for series in [
        "candor_explanation_backlog",
        "candor_records_pending_commit",
        "candor_rpc_answers_unread",
        "candor_rpc_in_flight",
    ] {
        assert!(sample(&after, series).is_some(), "{series} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_resource_exhausted() {
    let mut config = test_config();
    config.limits.max_in_flight = 2;
    let server = TestServer::start_with(config).await;
    let channel = server.channel().await;
    // Slow calls (256 rows with inline attributions) from many clients.
    let calls: Vec<_> = (0..48)
        .map(|_| {
            let mut client = ScoringServiceClient::new(channel.clone());
            let request = pb::ScoreBatchRequest {
                explain: Some(pb::ExplainOptions {
                    mode: pb::ExplainMode::Inline as i32,
                    method: 0,
                }),
                ..caravan_batch(256)
            };
            tokio::spawn(async move { client.score_batch(request).await })
        })
        .collect();
    let (mut ok, mut shed) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(s.message().contains("max_in_flight"), "{s:?}");
                shed += 1;
            }
            Err(s) => panic!("neither served nor shed: {s:?}"),
        }
    }
    assert!(ok >= 2 && shed > 0, "{ok} served, {shed} shed");
    // Still healthy afterwards.
    server
        .scoring()
        .await
        .score(caravan_request())
        .await
        .unwrap();
}

/// `request` with an API key.
fn with_key<T>(mut request: Request<T>, key: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_capacity_callers_are_still_told_who_may_call_and_health_is_served() {
    let mut config = test_config();
    config.limits.max_in_flight = 1;
    config.access.api_keys = vec![
        api_key(Role::Scorer, "scorer-key"),
        api_key(Role::Support, "support-key"),
    ];
    let database = config.database.clone();
    let server = TestServer::start_with(config).await;
    let metrics = serve_metrics(&server).await;
    let channel = server.channel().await;
    let locker = write_lock(&database);
    // The one slot is taken by a call that waits for the lock.
    let held = {
        let mut client = ScoringServiceClient::new(channel.clone());
        tokio::spawn(async move {
            client
                .score(with_key(Request::new(caravan_request()), "scorer-key"))
                .await
        })
    };
    await_in_flight(metrics, 1.0).await;

    let score = |key: Option<&str>| {
        let mut client = ScoringServiceClient::new(channel.clone());
        let request = Request::new(caravan_request());
        let request = match key {
            Some(key) => with_key(request, key),
            None => request,
        };
        async move { client.score(request).await.unwrap_err().code() }
    };
    assert_eq!(score(None).await, Code::Unauthenticated);
    assert_eq!(score(Some("no-such-key")).await, Code::Unauthenticated);
    assert_eq!(score(Some("support-key")).await, Code::PermissionDenied);
    assert_eq!(score(Some("scorer-key")).await, Code::ResourceExhausted);
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    drop(locker);
    held.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_calls_leave_the_in_flight_gauge_and_are_counted() {
    let mut config = test_config();
    config.limits.max_in_flight = 3;
    let database = config.database.clone();
    let server = TestServer::start_with(config).await;
    let metrics = serve_metrics(&server).await;
    let channel = server.channel().await;
    let locker = write_lock(&database);
    const SCORE: &str = "/candor.v1.ScoringService/Score";

    // Clients that go away: their calls are dropped mid-flight.
    let calls: Vec<_> = (0..3)
        .map(|i| tokio::spawn(score_as(channel.clone(), format!("gone-{i}"))))
        .collect();
    await_in_flight(metrics, 3.0).await;
    for call in &calls {
        call.abort();
    }
    await_in_flight(metrics, 0.0).await;

    // A client whose deadline passes. tonic's client gives up at it too and
    // reports CANCELLED; whichever side notices first, the call is counted
    // as expired.
    let mut request = Request::new(caravan_request());
    request.set_timeout(Duration::from_millis(300));
    let expired = ScoringServiceClient::new(channel.clone())
        .score(request)
        .await
        .unwrap_err();
    assert!(
        matches!(expired.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{expired:?}"
    );
    await_in_flight(metrics, 0.0).await;

    let text = scrape(metrics).await;
    let count = |code: &str| {
        sample(
            &text,
            &format!(r#"candor_rpc_requests_total{{rpc="{SCORE}",code="{code}"}}"#),
        )
    };
    assert_eq!(count("CANCELLED"), Some(3.0), "{text}");
    assert_eq!(count("DEADLINE_EXCEEDED"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!(r#"candor_rpc_duration_seconds_count{{rpc="{SCORE}"}}"#)
        ),
        Some(4.0)
    );
    // And every slot is free again.
    drop(locker);
    let again: Vec<_> = (0..3)
        .map(|i| tokio::spawn(score_as(channel.clone(), format!("back-{i}"))))
        .collect();
    for call in again {
        call.await.unwrap().unwrap();
    }
}

/// A client of the generated kind whose transport has no timer: tonic's
/// `Channel` gives up at a call's `grpc-timeout` on its own (and reports
/// CANCELLED), which would hide what the server answers at the deadline.
async fn without_client_deadline(
    server: &TestServer,
) -> ScoringServiceClient<
    impl tonic::client::GrpcService<
        tonic::body::Body,
        ResponseBody = hyper::body::Incoming,
        Error = hyper::Error,
    >,
> {
    let sender = http2_connection(server).await;
    let transport = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        let mut sender = sender.clone();
        async move { sender.send_request(request).await }
    });
    ScoringServiceClient::with_origin(transport, server.url().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_is_deadline_exceeded_with_its_request_id() {
    let config = test_config();
    let database = config.database.clone();
    let server = TestServer::start_with(config).await;
    let metrics = serve_metrics(&server).await;
    let mut client = without_client_deadline(&server).await;
    let locker = write_lock(&database);

    let mut request = Request::new(caravan_request());
    request.set_timeout(Duration::from_millis(200));
    request
        .metadata_mut()
        .insert("x-request-id", "late-1".parse().unwrap());
    let started = Instant::now();
    let expired = client.score(request).await.unwrap_err();
    assert_eq!(expired.code(), Code::DeadlineExceeded, "{expired:?}");
    assert!(expired.message().contains("grpc-timeout"), "{expired:?}");
    assert!(
        expired.message().ends_with("listed with request_id late-1"),
        "{expired:?}"
    );
    assert_eq!(
        expired.metadata().get("x-request-id").unwrap(),
        "late-1",
        "{expired:?}"
    );
    // At the deadline, not when the lock gave up.
    assert!(started.elapsed() < Duration::from_secs(3));

    let text = scrape(metrics).await;
    assert_eq!(
        sample(
            &text,
            r#"candor_rpc_requests_total{rpc="/candor.v1.ScoringService/Score",code="DEADLINE_EXCEEDED"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "candor_rpc_in_flight "), Some(0.0));
    drop(locker);
    // Without a deadline the same call is served.
    client.score(caravan_request()).await.unwrap();
}

/// A `grpc-timeout` that is not one is refused by name rather than ignored
/// (its caller would wait without the deadline it believes it set), and one
/// that ends before the message has arrived is answered as a deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_instant_grpc_timeout_is_named() {
    let server = TestServer::start().await;
    let sender = http2_connection(&server).await;
    let transport = tower::service_fn(move |mut request: http::Request<tonic::body::Body>| {
        let mut sender = sender.clone();
        request
            .headers_mut()
            .insert("grpc-timeout", http::HeaderValue::from_static("2e2m"));
        async move { sender.send_request(request).await }
    });
    let mut client = ScoringServiceClient::with_origin(transport, server.url().parse().unwrap());
    let refused = client.score(caravan_request()).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("grpc-timeout: \"2e2m\" is not"),
        "{refused:?}"
    );

    let mut client = without_client_deadline(&server).await;
    let mut request = Request::new(caravan_request());
    request.set_timeout(Duration::from_nanos(1));
    let expired = client.score(request).await.unwrap_err();
    assert_eq!(expired.code(), Code::DeadlineExceeded, "{expired:?}");
    assert!(
        expired
            .message()
            .starts_with("deadline: the call was not answered within its grpc-timeout of 1ns"),
        "{expired:?}"
    );
}

/// A stream is counted under the status its trailers carry, not the OK of
/// its first headers: a health watch that has answered and then runs out
/// of its deadline is DEADLINE_EXCEEDED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_counted_under_the_status_it_ends_with() {
    let server = TestServer::start().await;
    let metrics = serve_metrics(&server).await;
    let mut request = Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(Duration::from_millis(300));
    let mut stream = HealthClient::new(server.channel().await)
        .watch(request)
        .await
        .unwrap()
        .into_inner();
    let ended = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended OK"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");
    let series = |code: &str| {
        format!(r#"candor_rpc_requests_total{{rpc="/grpc.health.v1.Health/Watch",code="{code}"}}"#)
    };
    let text = scrape(metrics).await;
    assert_eq!(
        sample(&text, &series("DEADLINE_EXCEEDED")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, &series("OK")), None, "{text}");
    server.stop().await;
}

/// The exposition's `# TYPE` of every family, by name.
fn declared_types(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_once(' ').unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_declared_as_what_it_is() {
    let server = TestServer::start().await;
    let metrics = serve_metrics(&server).await;
    let mut request = caravan_request();
    request.explain = Some(pb::ExplainOptions {
        mode: pb::ExplainMode::Inline as i32,
        method: 0,
    });
    let decision = server.score_one(request).await;
    ExplanationServiceClient::new(server.channel().await)
        .get_explanation(pb::GetExplanationRequest {
            decision_id: decision.decision_id,
            ..Default::default()
        })
        .await
        .unwrap();

    let (status, head, text) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    // The format `# TYPE` lines and `_total` samples are written in.
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    // What only goes up is a counter; what goes up and down a gauge.
    let counters = [
        "candor_decisions",
        "candor_explanation_lookups",
        "candor_rpc_requests",
        "candor_shadow_dropped",
        "candor_retention_removed",
        "candor_retention_failures",
    ];
    let histograms = [
        "candor_rpc_duration_seconds",
        "candor_stage_duration_seconds",
    ];
    let gauges = [
        "candor_additivity_residual_max",
        "candor_explanation_backlog",
        "candor_explanation_cache_hit_ratio",
        "candor_fairness_disparate_impact",
        "candor_fairness_flagged",
        "candor_ledger_records",
        "candor_records_pending_commit",
        "candor_rpc_answers_unread",
        "candor_rpc_in_flight",
        "candor_sqlite_memory_bytes",
        "candor_database_bytes",
        "candor_database_wal_bytes",
    ];
    let mut want: BTreeMap<&str, &str> = counters.map(|n| (n, "counter")).into();
    want.extend(histograms.map(|n| (n, "histogram")));
    want.extend(gauges.map(|n| (n, "gauge")));
    let declared = declared_types(&text);
    // A family without members (the fairness gauges, before any audit
    // attribute) is left out of the exposition.
    for (family, kind) in &declared {
        assert_eq!(want.get(family), Some(kind), "{family}");
    }
    for family in counters {
        assert_eq!(declared.get(family), Some(&"counter"), "{family}");
    }
    // Every sample is named as its family's type requires: a counter's end
    // in `_total`, and only a counter's do.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let typed = declared.iter().any(|(family, kind)| match *kind {
            "counter" => name == format!("{family}_total"),
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name == format!("{family}{suffix}")),
            _ => name == *family,
        });
        assert!(typed, "{line}: no family declares this sample");
        // A bucket's bound reads as written, and the last finite one is
        // past the slowest call.
        if let Some(at) = line.find("le=\"") {
            let bound = line[at + 4..].split('"').next().unwrap();
            assert!(bound.len() <= 10, "{line}");
        }
    }
    assert!(
        text.contains("candor_rpc_duration_seconds_bucket{le=\"48.5\""),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"candor_explanation_lookups_total{answered_from="cache"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

/// Scores `caravan_request()` as `subject`; the decision id when answered.
async fn score_as(
    channel: tonic::transport::Channel,
    subject: String,
) -> Result<String, tonic::Status> {
    let mut request = caravan_request();
    request.subject_id = subject;
    ScoringServiceClient::new(channel)
        .score(request)
        .await
        .map(|r| r.into_inner().decision.unwrap().decision_id)
}

fn recorded(db: &rusqlite::Connection, id: &str) -> bool {
    db.query_row(
        "SELECT count(*) FROM decisions WHERE decision_id = ?1",
        [id],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_fails_calls_clearly_and_loses_nothing_acknowledged() {
    for durability in [Durability::Sync, Durability::Async] {
        let mut config = test_config();
        config.decisions.durability = durability;
        let database = config.database.clone();
        let server = TestServer::start_with(config).await;
        let channel = server.channel().await;
        score_as(channel.clone(), "warm".into()).await.unwrap();

        // Another process takes the write lock.
        let locker = write_lock(&database);
        let load: Vec<_> = (0..12)
            .map(|i| {
                let channel = channel.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(i * 50)).await;
                    score_as(channel, format!("s{i}")).await
                })
            })
            .collect();
        // Models are unaffected meanwhile.
        let models = ModelServiceClient::new(channel.clone())
            .list_models(pb::ListModelsRequest {})
            .await
            .unwrap();
        assert!(!models.into_inner().models.is_empty());
        tokio::time::sleep(Duration::from_secs(6)).await;
        locker.execute_batch("ROLLBACK").unwrap();

        let mut answered = Vec::new();
        let mut failed = 0;
        for call in load {
            match call.await.unwrap() {
                Ok(id) => answered.push(id),
                Err(s) => {
                    assert_eq!(s.code(), Code::Unavailable, "{durability:?}: {s:?}");
                    assert!(s.message().contains("busy"), "{s:?}");
                    failed += 1;
                }
            }
        }
        if durability == Durability::Sync {
            assert!(
                failed > 0,
                "a synchronous record waited for the lock and failed"
            );
        }
        // Everything answered is (or shortly will be) on disk.
        let db = rusqlite::Connection::open(&database).unwrap();
        for _ in 0..100 {
            if answered.iter().all(|id| recorded(&db, id)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for id in &answered {
            assert!(recorded(&db, id), "{durability:?}: answered {id} was lost");
        }
        // And the gateway serves again.
        score_as(channel, "after".into()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_is_resource_exhausted_and_other_calls_still_work() {
    let mut config = test_config();
    config.database_max_mb = Some(1);
    let database = config.database.clone();
    let server = TestServer::start_with(config).await;
    let metrics = serve_metrics(&server).await;
    let channel = server.channel().await;
    // A service whose status does not change is not told it again while
    // the writer's state flips.
    let mut reading = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: "candor.v1.ExplanationService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reading.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let mut answered = Vec::new();
    let full = loop {
        match score_as(channel.clone(), format!("s{}", answered.len())).await {
            Ok(id) => answered.push(id),
            Err(s) => break s,
        }
        assert!(answered.len() < 20_000, "the quota never filled");
    };
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    assert!(full.message().contains("database_max_mb"), "{full:?}");
    // The refused decision is not counted as one.
    let text = scrape(metrics).await;
    assert_eq!(
        sample(&text, r#"candor_decisions_total{tier="personalised"}"#),
        Some(answered.len() as f64),
        "{text}"
    );
    let models = ModelServiceClient::new(channel.clone())
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap();
    assert!(!models.into_inner().models.is_empty());
    // Health sends scoring elsewhere while nothing can be recorded; reading
    // explanations still serves.
    let health = HealthClient::new(channel.clone());
    let status = |service: &str| {
        let mut health = health.clone();
        let service = service.to_owned();
        async move {
            health
                .check(HealthCheckRequest { service })
                .await
                .unwrap()
                .into_inner()
                .status()
        }
    };
    // The health service follows the writer's state within a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while status("").await != ServingStatus::NotServing {
        assert!(Instant::now() < deadline, "health still SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status("candor.v1.ScoringService").await,
        ServingStatus::NotServing
    );
    assert_eq!(
        status("candor.v1.ExplanationService").await,
        ServingStatus::Serving
    );
    let repeated = tokio::time::timeout(Duration::from_millis(100), reading.message()).await;
    assert!(repeated.is_err(), "sent again: {repeated:?}");
    // A decision on record is still explained, although its attributions
    // cannot be kept now.
    let explained = ExplanationServiceClient::new(channel.clone())
        .get_explanation(pb::GetExplanationRequest {
            decision_id: answered[0].clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explained.served_from, "computed");
    let Some(pb::get_explanation_response::View::Consumer(view)) = explained.view else {
        panic!("a consumer view: {explained:?}");
    };
    assert!(!view.reasons.is_empty());
    let db = rusqlite::Connection::open(&database).unwrap();
    for id in &answered {
        assert!(recorded(&db, id), "answered {id} was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_model_is_skipped_and_a_removed_one_keeps_serving() {
    let mut config = test_config();
    let models = config.database.parent().unwrap().join("models");
    copy_package("caravan-lgbm/1.0.0", &models);
    let mlp = copy_package("caravan-mlp/1.0.0", &models);
    let logreg = copy_package("caravan-logreg/1.0.0", &models);
    std::fs::write(logreg.join("model.onnx"), b"not an onnx graph").unwrap();
    config.models_dir = models;
    let server = TestServer::start_with(config).await;
    let listed: Vec<String> = server
        .models()
        .await
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .models
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(listed, ["caravan-lgbm", "caravan-mlp"]);
    let mut scoring = server.scoring().await;
    let missing = scoring
        .score(pb::ScoreRequest {
            model: model_ref("caravan-logreg", ""),
            ..caravan_request()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // The MLP's package folder is removed while it serves.
    let mlp_request = || pb::ScoreRequest {
        model: model_ref("caravan-mlp", ""),
        subject_id: "rita".into(),
        ..caravan_request()
    };
    scoring.score(mlp_request()).await.unwrap();
    std::fs::remove_dir_all(&mlp).unwrap();
    let d = scoring
        .score(mlp_request())
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    // Its attributions are computed on request, from memory.
    assert!(engineer_attributions(&server, &d.decision_id).await);
    // A reload (the folder watch's, or ReloadModels) reports the folder gone
    // and moves no traffic: the MLP still serves.
    let reloaded = server.gateway.reload_models().await.unwrap();
    assert!(reloaded.unloaded.is_empty(), "{reloaded:?}");
    assert!(
        reloaded
            .refused
            .iter()
            .any(|r| r.contains("caravan-mlp 1.0.0 keeps serving as loaded")),
        "{reloaded:?}"
    );
    scoring.score(mlp_request()).await.unwrap();
    scoring.score(caravan_request()).await.unwrap();
}

/// A caller that opens calls and never sends their messages holds no
/// in-flight place: others are still served, and each silent call ends at
/// its deadline, saying what it waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_whose_message_never_comes_hold_no_place() {
    let mut config = test_config();
    config.limits.max_in_flight = 2;
    let server = TestServer::start_with(config).await;
    let sender = http2_connection(&server).await;
    type Silence = http_body_util::StreamBody<
        tokio_stream::Pending<Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>>,
    >;
    // Twice the in-flight limit, and a health check: a public call is not
    // held for ever either.
    let paths = [
        "/candor.v1.ScoringService/Score",
        "/candor.v1.ScoringService/Score",
        "/candor.v1.ScoringService/Score",
        "/candor.v1.ScoringService/Score",
        "/grpc.health.v1.Health/Check",
    ];
    let silent: Vec<_> = paths
        .into_iter()
        .map(|path| {
            let mut sender = sender.clone();
            let request = http::Request::builder()
                .method("POST")
                .uri(format!("{}{path}", server.url()))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("grpc-timeout", "1500m")
                .body::<Silence>(http_body_util::StreamBody::new(tokio_stream::pending()))
                .unwrap();
            tokio::spawn(async move { sender.send_request(request).await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Twice the in-flight limit is waiting for its messages; a call that
    // sends one is served.
    let mut client = ScoringServiceClient::new(server.channel().await);
    client.score(caravan_request()).await.unwrap();
    for call in silent {
        let response = call.await.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(
            status.message().starts_with("deadline: ")
                && status.message().contains("request message had not arrived"),
            "{status:?}"
        );
    }
    // A whole message on a stream that never ends: the wait is for its
    // end, and the answer says so.
    let whole = framed(&prost::Message::encode_to_vec(&caravan_request()));
    let body = http_body_util::StreamBody::new(tokio_stream::StreamExt::chain(
        tokio_stream::iter([Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
            bytes::Bytes::from(whole),
        ))]),
        tokio_stream::pending(),
    ));
    let status = raw_call_with(
        &server,
        "/candor.v1.ScoringService/Score",
        &[("grpc-timeout", "1500m")],
        body,
    )
    .await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status
            .message()
            .contains("its message had arrived whole, but its stream had not ended"),
        "{status:?}"
    );
    server.stop().await;
}

/// A Watch refused at once (here: its request does not decode) is a
/// trailers-only answer whose headers end the stream: a client that reads
/// the wire strictly (grpcio) otherwise saw a stream end without a status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_refused_at_once_ends_with_its_status() {
    use http_body::Body as _;
    let server = TestServer::start().await;
    let mut sender = http2_connection(&server).await;
    // Field 1 (service), a string of one byte that is not UTF-8.
    let message = [0x0a, 0x01, 0xff];
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("{}/grpc.health.v1.Health/Watch", server.url()))
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(bytes::Bytes::from(framed)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = tonic::Status::from_header_map(response.headers()).expect("a status");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        response.body().is_end_stream(),
        "the headers end the stream"
    );
    server.stop().await;
}

/// A request that is not gRPC is refused with HTTP 415 (405 if it is not
/// POST), so a plain HTTP client cannot mistake a gRPC error (HTTP 200) for
/// success; the gRPC content-types with a codec or parameters are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_is_not_grpc_is_unsupported_media_type() {
    use http_body_util::BodyExt;
    let server = TestServer::start().await;
    let sender = http2_connection(&server).await;
    let framed = {
        let message = prost::Message::encode_to_vec(&caravan_request());
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        bytes::Bytes::from(framed)
    };
    let send = |method: &str, content_type: Option<&str>| {
        let mut sender = sender.clone();
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}/candor.v1.ScoringService/Score", server.url()))
            .header("te", "trailers");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let request = request
            .body(http_body_util::Full::new(framed.clone()))
            .unwrap();
        async move { sender.send_request(request).await.unwrap() }
    };
    let post = |content_type| send("POST", content_type);
    for refused in [
        Some("application/json"),
        Some("application/grpcx"),
        Some("application/grpc+json"),
        Some("text/plain"),
        None,
    ] {
        let response = post(refused).await;
        assert_eq!(
            response.status(),
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{refused:?}"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("application/grpc"), "{refused:?}: {body}");
        match refused {
            Some(sent) => assert!(body.contains(sent), "{body}"),
            None => assert!(body.contains("no content-type"), "{body}"),
        }
    }
    for served in [
        "application/grpc",
        "application/grpc+proto",
        "application/grpc; charset=binary",
    ] {
        let response = post(Some(served)).await;
        assert_eq!(response.status(), http::StatusCode::OK, "{served}");
        let (_, body) = response.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let status = tonic::Status::from_header_map(&trailers).expect("a status");
        assert_eq!(status.code(), Code::Ok, "{served}: {status:?}");
    }
    // gRPC calls are POST (PROTOCOL-HTTP2.md): another method is 405.
    for method in ["GET", "PUT", "DELETE"] {
        let response = send(method, Some("application/grpc")).await;
        assert_eq!(
            response.status(),
            http::StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(response.headers()[http::header::ALLOW], "POST");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(&format!("method {method}")), "{body}");
    }
    // An answer to HEAD has no content.
    let response = send("HEAD", Some("application/grpc")).await;
    assert_eq!(response.status(), http::StatusCode::METHOD_NOT_ALLOWED);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty(), "{body:?}");
    server.stop().await;
}

/// Health Watch needs no credential and has no end, so its streams are
/// bounded; Check is never refused for them, and a closed stream frees
/// its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watch_streams_are_bounded() {
    let mut config = test_config();
    config.limits.max_health_watches = 2;
    let server = TestServer::start_with(config).await;
    let channel = server.channel().await;
    let watch = || {
        let mut client = HealthClient::new(channel.clone());
        async move {
            client
                .watch(HealthCheckRequest {
                    service: String::new(),
                })
                .await
        }
    };
    let first = watch().await.unwrap().into_inner();
    let mut second = watch().await.unwrap().into_inner();
    assert!(second.message().await.unwrap().is_some());
    let refused = watch().await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("limits.max_health_watches"),
        "{refused:?}"
    );
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(stream) = watch().await {
            again = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = again.expect("a closed stream frees its place").into_inner();
    // Shutdown does not wait for the watchers for ever: their streams end,
    // saying why.
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("shutdown ends the open Watch streams");
    let ended = loop {
        match again.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a Watch ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    drop(second);
}

/// Attribution work whose callers went away (cancelled, or past their
/// deadline) stops, so a call queued behind it is explained inline as if
/// that work had never been asked for. Three cancelled inline batches of
/// the sampled MLP hold seconds of work each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribution_work_stops_when_its_callers_go_away() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let g = golden(&repo_root().join("models/caravan-mlp/1.0.0"));
    let batch = pb::ScoreBatchRequest {
        model: model_ref("caravan-mlp", ""),
        context: us_adult(),
        rows: g
            .rows
            .iter()
            .cycle()
            .take(600)
            .map(|row| pb::BatchRow {
                features: pb::features(row.clone()),
                ..Default::default()
            })
            .collect(),
        explain: Some(pb::ExplainOptions {
            mode: pb::ExplainMode::Inline as i32,
            method: 0,
        }),
        ..Default::default()
    };
    for _ in 0..3 {
        let mut client = ScoringServiceClient::new(channel.clone());
        let gone = tokio::time::timeout(
            Duration::from_millis(300),
            client.score_batch(batch.clone()),
        )
        .await;
        assert!(
            gone.is_err(),
            "the batch was answered before it was cancelled"
        );
    }
    let mut request = caravan_request();
    request.explain = Some(pb::ExplainOptions {
        mode: pb::ExplainMode::Inline as i32,
        method: 0,
    });
    let mut request = Request::new(request);
    request.set_timeout(Duration::from_secs(5));
    let decision = ScoringServiceClient::new(channel)
        .score(request)
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(
        decision.explanation_status(),
        pb::ExplanationStatus::Inline,
        "{decision:?}"
    );
    server.stop().await;
}

/// A unary call's body is one whole gRPC message: one cut short, two, or
/// none is the caller's INVALID_ARGUMENT (tonic called a short one
/// INTERNAL), and a health check, which needs no credential, may not make
/// the gateway hold more than a few kilobytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_body_must_be_one_whole_message_of_its_size() {
    let server = TestServer::start().await;
    let score = "/candor.v1.ScoringService/Score";
    let message = prost::Message::encode_to_vec(&caravan_request());
    let mut short = framed(&message);
    short.truncate(short.len() - 10);
    let twice = [framed(&message), framed(&message)].concat();
    for (body, says) in [
        (short, "declares"),
        (twice, "one whole message"),
        (vec![0, 0], "not a whole gRPC message"),
    ] {
        let status = raw_call(&server, score, body).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with("request: "), "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }
    assert_eq!(
        raw_call(&server, score, framed(&message)).await.code(),
        Code::Ok
    );
    let check = "/grpc.health.v1.Health/Check";
    let padded = prost::Message::encode_to_vec(&HealthCheckRequest {
        service: "x".repeat(5000),
    });
    let status = raw_call(&server, check, framed(&padded)).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("4096 bytes"), "{status:?}");
    server.stop().await;
}

/// Request bytes held while messages arrive are bounded over all calls: a
/// call whose message would take the gateway past `limits.max_receiving_mb`
/// is refused, naming it, while another's is still coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_being_received_are_bounded() {
    let mut config = test_config();
    config.max_message_bytes = 1 << 20;
    config.limits.max_receiving_mb = 1;
    let server = TestServer::start_with(config).await;
    let path = "/candor.v1.ScoringService/ScoreBatch";
    // A call that sends 900 kB of a 1000 kB message and then waits.
    let (more, rest) = tokio::sync::mpsc::channel::<
        Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>,
    >(1);
    let mut head = vec![0u8];
    head.extend_from_slice(&1_000_000u32.to_be_bytes());
    head.extend_from_slice(&vec![0u8; 900_000]);
    more.send(Ok(http_body::Frame::data(head.into())))
        .await
        .unwrap();
    let mut sender = http2_connection(&server).await;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("{}{path}", server.url()))
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rest),
        ))
        .unwrap();
    let pending = tokio::spawn(async move { sender.send_request(request).await });
    let mut refused = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let status = raw_call(&server, path, framed(&vec![0u8; 200_000])).await;
        if status.code() == Code::ResourceExhausted {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("a call past the bound is refused");
    assert!(
        refused.message().contains("limits.max_receiving_mb"),
        "{refused:?}"
    );
    drop(more);
    pending.abort();
    server.stop().await;
}

/// Connections past `limits.max_connections` are closed as they are
/// accepted; a place frees when a connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed() {
    let mut config = test_config();
    config.limits.max_connections = 1;
    let server = TestServer::start_with(config).await;
    let check = |channel: tonic::transport::Channel| async move {
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
    };
    let endpoint = tonic::transport::Endpoint::from_shared(server.url()).unwrap();
    let connect = || endpoint.connect();
    let first = connect().await.unwrap();
    check(first.clone()).await.unwrap();
    // Closed before the handshake ends, or just after: the client reads
    // the closed connection as it will (UNAVAILABLE, CANCELLED, a broken
    // pipe), but no call is served on it.
    if let Ok(second) = connect().await {
        let refused = check(second).await;
        assert!(refused.is_err(), "{refused:?}");
    }
    drop(first);
    let mut served = false;
    for _ in 0..100 {
        if let Ok(channel) = connect().await
            && check(channel).await.is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a closed connection frees its place");
    server.stop().await;
}

/// A server that admits two calls at once, and a connection to it whose
/// client never reads an answer (its HTTP/2 window left shut).
async fn two_places_and_a_client_that_never_reads() -> (TestServer, tonic::transport::Channel) {
    let mut config = test_config();
    config.limits.max_in_flight = 2;
    let server = TestServer::start_with(config).await;
    let shut = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .initial_stream_window_size(Some(0))
        .connect()
        .await
        .unwrap();
    (server, shut)
}

/// An answer its client does not read (an HTTP/2 window left shut) waits in
/// memory, so it holds its place among `limits.max_in_flight` until it is
/// delivered or its stream ends: no client can make the gateway hold more
/// answers than it would compute at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_client_does_not_read_count_as_in_flight() {
    let (server, shut) = two_places_and_a_client_that_never_reads().await;
    let stall = || {
        let mut client = ScoringServiceClient::new(shut.clone());
        tokio::spawn(async move { client.score(caravan_request()).await })
    };
    let mut stalled: Vec<_> = (0..2).map(|_| stall()).collect();
    let mut reader = server.scoring().await;
    let mut shed = None;
    for _ in 0..200 {
        // A stalled call whose place the reader's call took is sent again.
        for call in &mut stalled {
            if call.is_finished() {
                *call = stall();
            }
        }
        match reader.score(caravan_request()).await {
            Err(s) if s.code() == Code::ResourceExhausted => {
                shed = Some(s);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    let shed = shed.expect("the unread answers never counted as in flight");
    assert!(shed.message().contains("limits.max_in_flight"), "{shed:?}");
    assert!(stalled.iter().all(|s| !s.is_finished()));
    // Once their streams end, their places are free.
    for call in stalled {
        call.abort();
    }
    drop(shut);
    let mut served = false;
    for _ in 0..200 {
        if reader.score(caravan_request()).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(served, "the places of the ended streams were not freed");
}

/// A client that never reads its answers cannot keep their places: once an
/// unread answer is past its call's deadline and the limit sheds a call,
/// the connection it waits on is cut, and the places come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_left_unread_past_their_deadline_lose_their_places() {
    let (server, shut) = two_places_and_a_client_that_never_reads().await;
    // The deadline goes to the server only: this client never gives up.
    let stalled: Vec<_> = (0..2)
        .map(|_| {
            let mut client = ScoringServiceClient::new(shut.clone());
            let mut request = tonic::Request::new(caravan_request());
            request
                .metadata_mut()
                .insert("grpc-timeout", "300m".parse().unwrap());
            tokio::spawn(async move { client.score(request).await })
        })
        .collect();
    let mut reader = server.scoring().await;
    let mut shed = false;
    let mut served_after = false;
    for _ in 0..400 {
        match reader.score(caravan_request()).await {
            Err(s) if s.code() == Code::ResourceExhausted => shed = true,
            Ok(_) if shed => {
                served_after = true;
                break;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(shed, "the unread answers never held the places");
    assert!(
        served_after,
        "the places of the overdue answers never came back"
    );
    for call in stalled {
        let ended = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the cut connection ends the stalled calls")
            .unwrap();
        assert!(ended.is_err(), "{ended:?}");
    }
    server.stop().await;
}

/// A gateway whose models folder holds no model that loads cannot score:
/// the scoring services and `/healthz` say so, so that a load balancer
/// sends scoring elsewhere, while consent and reads serve; a deployed
/// package ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_a_model_is_not_ready_to_score() {
    let models = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(candor::config::Config {
        models_dir: models.path().to_path_buf(),
        ..test_config()
    })
    .await;
    let metrics_addr = serve_metrics(&server).await;
    let channel = server.channel().await;
    // The health reporter follows readiness a moment after it changes.
    let settles_at = |service: &'static str, want: ServingStatus| {
        let channel = channel.clone();
        async move {
            let mut status = None;
            for _ in 0..100 {
                status = Some(
                    HealthClient::new(channel.clone())
                        .check(HealthCheckRequest {
                            service: service.into(),
                        })
                        .await
                        .unwrap()
                        .into_inner()
                        .status(),
                );
                if status == Some(want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("{service:?} is {status:?}, not {want:?}");
        }
    };
    for service in ["", "candor.v1.ScoringService"] {
        settles_at(service, ServingStatus::NotServing).await;
    }
    for service in ["candor.v1.ConsentService", "candor.v1.ModelService"] {
        settles_at(service, ServingStatus::Serving).await;
    }
    let (status, _, health) = http_get(metrics_addr, "/healthz").await;
    assert_eq!(status, 503);
    assert!(health.starts_with("no model loaded"), "{health}");

    copy_package("caravan-logreg/1.0.0", models.path());
    let reloaded = server.gateway.reload_models().await.unwrap();
    assert_eq!(reloaded.loaded.len(), 1, "{reloaded:?}");
    for service in ["", "candor.v1.ScoringService"] {
        settles_at(service, ServingStatus::Serving).await;
    }
    let (status, _, health) = http_get(metrics_addr, "/healthz").await;
    assert_eq!((status, health.trim()), (200, "ok"));
    server.stop().await;
}

/// The two keys differ in content, not only in file name: a hard link or
/// a copy of the subject key as the input key would make the pseudonyms'
/// key seal inputs too, and is refused, naming the setting.
#[test]
fn the_input_key_is_not_the_subject_key_under_another_name() {
    for same in [
        |from: &Path, to: &Path| std::fs::hard_link(from, to).unwrap(),
        |from: &Path, to: &Path| {
            std::fs::copy(from, to).unwrap();
        },
    ] {
        let config = test_config();
        let key = sha256_hex(b"one key for two uses");
        std::fs::write(&config.consent.subject_key_file, &key).unwrap();
        same(
            &config.consent.subject_key_file,
            &config.decisions.input_key_file,
        );
        let Err(e) = candor::gateway::Gateway::new(config) else {
            panic!("a gateway started with one key for both uses");
        };
        let e = e.to_string();
        assert!(e.starts_with("decisions.input_key_file"), "{e}");
        assert!(
            e.contains("the same key as consent.subject_key_file"),
            "{e}"
        );
    }
}
