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

#[tokio::test]
async fn serve_drains_in_flight_calls_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_candor"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--models-dir",
            repo_root().join("models").to_str().unwrap(),
        ])
        .env("CANDOR_ORT_LIB", ort_lib())
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    while let Some(Ok(line)) = stderr.next() {
        if let Some(at) = line.find("addr=") {
            addr = Some(line[at + 5..].split_whitespace().next().unwrap().to_owned());
        }
        if line.contains("models loaded") {
            break;
        }
    }
    let addr = format!("http://{}", addr.expect("serve logs its address"));
    // Keep draining the log so the server never blocks on a full pipe.
    let rest = std::thread::spawn(move || stderr.map_while(Result::ok).collect::<Vec<String>>());
    let channel = tonic::transport::Channel::from_shared(addr)
        .unwrap()
        .connect()
        .await
        .unwrap();

    // A large batch keeps the server busy while SIGTERM arrives.
    let row = caravan_request().features;
    let batch = candor::grpc::pb::ScoreBatchRequest {
        context: common::us_adult(),
        model: model_ref("caravan-lgbm", ""),
        rows: (0..1024)
            .map(|_| candor::grpc::pb::BatchRow {
                features: row.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
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
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let rest = rest.join().unwrap();
    assert!(
        rest.iter().any(|l| l.contains("draining in-flight calls")),
        "{rest:?}"
    );
}
