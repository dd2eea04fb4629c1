//! Operations against a real server: the metrics endpoint moves with
//! traffic, overload is shed with RESOURCE_EXHAUSTED, and faults (a locked
//! or full database, a corrupt model, a package removed while serving) get
//! clear errors while everything else keeps serving and nothing
//! acknowledged is lost.

mod common;

use std::time::Duration;

use candor::{
    decisions::Durability,
    grpc::pb::{
        self, explanation_service_client::ExplanationServiceClient,
        model_service_client::ModelServiceClient, scoring_service_client::ScoringServiceClient,
    },
};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// `GET path` over plain HTTP/1.1: (status code, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
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
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    tokio::spawn(candor::metrics::serve(
        listener,
        server.gateway.clone(),
        std::future::pending(),
    ));
    let (status, health) = http_get(metrics_addr, "/healthz").await;
    assert_eq!((status, health.trim()), (200, "ok"));
    let (_, before) = http_get(metrics_addr, "/metrics").await;

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

    let (status, after) = http_get(metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
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
    // Exact TreeSHAP: additive to rounding.
    let residual = sample(&after, "candor_additivity_residual_max").unwrap();
    assert!((0.0..1e-9).contains(&residual), "{residual}");
    assert!(
        sample(&after, "candor_ledger_records").unwrap()
            > sample(&before, "candor_ledger_records").unwrap()
    );
    assert!(sample(&after, "candor_sqlite_memory_bytes").unwrap() > 0.0);
    for series in [
        "candor_explanation_backlog",
        "candor_records_pending_commit",
        "candor_rpc_in_flight",
        r#"candor_explanation_lookups{answered_from="cache"}"#,
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
    let features = caravan_request().features;
    // Slow calls (256 rows with inline attributions) from many clients.
    let calls: Vec<_> = (0..48)
        .map(|_| {
            let mut client = ScoringServiceClient::new(channel.clone());
            let request = pb::ScoreBatchRequest {
                model: model_ref("caravan-lgbm", ""),
                subject_id: String::new(),
                context: us_adult(),
                rows: (0..256)
                    .map(|_| pb::BatchRow {
                        features: features.clone(),
                        ..Default::default()
                    })
                    .collect(),
                explain: Some(pb::ExplainOptions {
                    mode: pb::ExplainMode::Inline as i32,
                    method: 0,
                }),
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
        let locker = rusqlite::Connection::open(&database).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
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
    let channel = server.channel().await;
    let mut answered = Vec::new();
    let full = loop {
        match score_as(channel.clone(), format!("s{}", answered.len())).await {
            Ok(id) => answered.push(id),
            Err(s) => break s,
        }
        assert!(answered.len() < 20_000, "the quota never filled");
    };
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    assert!(full.message().contains("disk full"), "{full:?}");
    let models = ModelServiceClient::new(channel.clone())
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap();
    assert!(!models.into_inner().models.is_empty());
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
    let explained = ExplanationServiceClient::new(server.channel().await)
        .get_explanation(pb::GetExplanationRequest {
            decision_id: d.decision_id,
            audience: pb::Audience::Engineer as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        explained.view,
        Some(pb::get_explanation_response::View::Engineer(
            pb::EngineerView {
                attribution: Some(_),
                ..
            }
        ))
    ));
    scoring.score(caravan_request()).await.unwrap();
}
