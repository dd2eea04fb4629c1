//! Shared test harness: a real gateway on 127.0.0.1:0 with the bundled models,
//! reached through the generated gRPC client.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use candor::{
    Config, Gateway,
    grpc::inference,
    grpc::pb::{
        self, explanation_service_client::ExplanationServiceClient, feature_value::Kind,
        model_service_client::ModelServiceClient, scoring_service_client::ScoringServiceClient,
    },
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The ONNX Runtime library `make test` fetched.
pub fn ort_lib() -> PathBuf {
    std::env::var_os("CANDOR_ORT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".ort/libonnxruntime.so.1.31.1"))
}

/// The bundled models on port 0, with a fresh database and subject key in a
/// folder that outlives the server (restart tests reuse it). The folders
/// live under Cargo's `target/tmp`, not the system's `/tmp`: `make test`
/// clears the last run's, and `cargo clean` removes them with the build.
pub fn test_config() -> Config {
    let data = tempfile::Builder::new()
        .prefix("candor-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
        .keep();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        models_dir: repo_root().join("models"),
        ort_lib: ort_lib(),
        database: data.join("candor.db"),
        // The gate re-reads and re-checks every package (seconds per start
        // in a debug build, for dozens of servers); tests/rollout.rs holds
        // a restart to it, and tests/validate.rs covers its rules.
        gate_at_startup: false,
        ..Config::default()
    };
    config.consent.subject_key_file = data.join("subject.key");
    config.decisions.input_key_file = data.join("inputs.key");
    config.consent.tcf_vendor_id = Some(TEST_VENDOR_ID);
    config
}

/// The TCF vendor id the policy fixtures were encoded for.
pub const TEST_VENDOR_ID: u16 = 1000;

/// A US adult with no opt-out: the personalised tier with no ledger look-up.
pub fn us_adult() -> Option<pb::RequestContext> {
    Some(pb::RequestContext {
        jurisdiction_country: "US".into(),
        age_status: pb::AgeStatus::Adult as i32,
        ..Default::default()
    })
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), candor::ServeError>>>,
}

impl TestServer {
    /// Starts serving with `config`; the models are not loaded yet.
    pub async fn start_unloaded(config: Config) -> Self {
        let listener = TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gateway = Arc::new(Gateway::new(config).expect("the gateway opens its database"));
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(candor::serve(listener, gateway.clone(), async {
            let _ = rx.await;
        }));
        Self {
            addr,
            gateway,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Starts serving with `config` and loads its models.
    pub async fn start_with(config: Config) -> Self {
        let server = Self::start_unloaded(config).await;
        server
            .gateway
            .load_models()
            .await
            .expect("bundled models load");
        server
    }

    /// Starts serving the bundled models.
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn scoring(&self) -> ScoringServiceClient<Channel> {
        ScoringServiceClient::new(self.channel().await)
    }

    /// Scores one request that must succeed, and returns its decision.
    pub async fn score_one(
        &self,
        request: impl tonic::IntoRequest<pb::ScoreRequest>,
    ) -> pb::Decision {
        self.scoring()
            .await
            .score(request)
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap()
    }

    pub async fn models(&self) -> ModelServiceClient<Channel> {
        ModelServiceClient::new(self.channel().await)
    }

    /// Stops accepting calls, drains in-flight ones and waits for the server.
    pub async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap().unwrap();
    }
}

/// Whether the engineer view of `decision_id` carries attributions: those
/// owed are computed when asked for.
pub async fn engineer_attributions(server: &TestServer, decision_id: &str) -> bool {
    let answer = ExplanationServiceClient::new(server.channel().await)
        .get_explanation(pb::GetExplanationRequest {
            decision_id: decision_id.into(),
            audience: pb::Audience::Engineer as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    matches!(
        answer.view,
        Some(pb::get_explanation_response::View::Engineer(
            pb::EngineerView {
                attribution: Some(_),
                ..
            }
        ))
    )
}

/// A golden file: feature rows by name and the scores Python onnxruntime gave.
pub struct Golden {
    /// Feature names in the model's column order.
    pub columns: Vec<String>,
    pub rows: Vec<BTreeMap<String, pb::FeatureValue>>,
    pub scores: Vec<f64>,
}

impl Golden {
    /// The rows as positional values in column order.
    pub fn positional(&self) -> Vec<Vec<f64>> {
        self.rows
            .iter()
            .map(|row| {
                self.columns
                    .iter()
                    .map(|c| match row[c].kind {
                        Some(Kind::Integer(v)) => v as f64,
                        ref other => panic!("golden values are integers, got {other:?}"),
                    })
                    .collect()
            })
            .collect()
    }
}

pub fn golden(package: &Path) -> Golden {
    let mut reader = csv::Reader::from_path(package.join("golden.csv")).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let (mut rows, mut scores) = (vec![], vec![]);
    for record in reader.records() {
        let record = record.unwrap();
        let mut row = BTreeMap::new();
        for (name, cell) in header.iter().zip(record.iter()) {
            if name == "score" {
                scores.push(cell.parse().unwrap());
            } else {
                row.insert(name.clone(), integer(cell.parse::<f64>().unwrap() as i64));
            }
        }
        rows.push(row);
    }
    let columns = header.into_iter().filter(|h| h != "score").collect();
    Golden {
        columns,
        rows,
        scores,
    }
}

/// A package folder's model name and version (`models/<name>/<version>`).
pub fn name_and_version(package: &Path) -> (String, String) {
    let part = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_owned();
    (part(package.parent().unwrap()), part(package))
}

/// Every bundled package folder (`models/<name>/<version>`).
pub fn bundled_packages() -> Vec<PathBuf> {
    let mut dirs = vec![];
    for name in std::fs::read_dir(repo_root().join("models")).unwrap() {
        let name = name.unwrap().path();
        if name.is_dir() {
            for version in std::fs::read_dir(&name).unwrap() {
                let version = version.unwrap().path();
                if version.join("manifest.toml").is_file() {
                    dirs.push(version);
                }
            }
        }
    }
    dirs.sort();
    assert!(dirs.len() >= 3, "the bundled models are missing");
    dirs
}

pub fn integer(v: i64) -> pb::FeatureValue {
    pb::FeatureValue {
        kind: Some(Kind::Integer(v)),
    }
}

pub fn model_ref(name: &str, version: &str) -> Option<pb::ModelRef> {
    Some(pb::ModelRef {
        name: name.into(),
        version: version.into(),
    })
}

/// The first golden row of caravan-lgbm 1.0.0, in column order.
pub fn caravan_values() -> Vec<f64> {
    golden(&repo_root().join("models/caravan-lgbm/1.0.0")).positional()[0].clone()
}

/// A string request parameter of the Open Inference Protocol.
pub fn oip_text(s: &str) -> inference::InferParameter {
    inference::InferParameter {
        parameter_choice: Some(inference::infer_parameter::ParameterChoice::StringParam(
            s.into(),
        )),
    }
}

/// A valid OIP ModelInfer request for caravan-lgbm 1.0.0: `rows` copies of
/// the first golden row, sent raw as FP32 (as tritonclient sends it), for
/// `subject`, a US adult.
pub fn oip_request(rows: usize, subject: &str) -> inference::ModelInferRequest {
    let row = caravan_values();
    let raw = row
        .iter()
        .cycle()
        .take(row.len() * rows)
        .flat_map(|&v| (v as f32).to_le_bytes())
        .collect();
    inference::ModelInferRequest {
        model_name: "caravan-lgbm".into(),
        model_version: "1.0.0".into(),
        parameters: [
            ("subject_id", subject),
            ("jurisdiction_country", "US"),
            ("age_status", "adult"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), oip_text(v)))
        .collect(),
        inputs: vec![inference::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, row.len() as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![raw],
        ..Default::default()
    }
}

/// A valid Score request for the default Caravan LightGBM model.
pub fn caravan_request() -> pb::ScoreRequest {
    let g = golden(&repo_root().join("models/caravan-lgbm/1.0.0"));
    pb::ScoreRequest {
        model: model_ref("caravan-lgbm", ""),
        subject_id: "subject-1".into(),
        features: pb::features(g.rows[0].clone()),
        context: us_adult(),
        values: vec![],
        explain: None,
    }
}

/// A ScoreBatch request of `rows` copies of [`caravan_request`]'s row,
/// anonymous and in its context; callers change what their test needs.
pub fn caravan_batch(rows: usize) -> pb::ScoreBatchRequest {
    let request = caravan_request();
    pb::ScoreBatchRequest {
        model: request.model,
        context: request.context,
        rows: (0..rows)
            .map(|_| pb::BatchRow {
                features: request.features.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A named consent string from the policy fixtures (`tests/consent_vectors/policy.mjs`).
pub fn policy_string(name: &str) -> String {
    let path = repo_root().join("tests/fixtures/consent/policy_strings.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["strings"][name]["string"]
        .as_str()
        .unwrap_or_else(|| panic!("no policy string {name}"))
        .to_owned()
}

/// Copies the bundled package `models/<package>` (e.g. "caravan-mlp/1.0.0")
/// into `<models>/<package>` and returns that folder.
pub fn copy_package(package: &str, models: &Path) -> PathBuf {
    let dst = models.join(package);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(repo_root().join("models").join(package)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    dst
}

/// Runs the `candor` binary with the test's ONNX Runtime.
pub fn candor(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_candor"))
        .args(args)
        .env("CANDOR_ORT_LIB", ort_lib())
        .output()
        .unwrap()
}

/// Calls `/candor.v1.ScoringService/Nope`, a method the gateway does not
/// have, and returns the status it gets.
pub async fn call_a_missing_method(channel: Channel) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary::<_, (), _>(
        tonic::Request::new(()),
        http::uri::PathAndQuery::from_static("/candor.v1.ScoringService/Nope"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .unwrap_err()
}

/// Gives the package's first golden row a score its model does not produce.
pub fn break_first_golden(package: &Path) {
    let path = package.join("golden.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let cut = lines[1].rfind(',').unwrap();
    lines[1] = format!("{},0.999", &lines[1][..cut]);
    std::fs::write(&path, lines.join("\n")).unwrap();
}

/// Replaces the first `from` in the file at `path` with `to`.
pub fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// An API key entry for `secret`, as the configuration stores it.
pub fn api_key(role: candor::config::Role, secret: &str) -> candor::config::ApiKey {
    candor::config::ApiKey {
        name: format!("{role:?}"),
        role,
        sha256: sha256_hex(secret.as_bytes()),
        expires: None,
    }
}

/// A consumer token for the publisher's `subject_id`, issued `age` ago
/// and valid for `ttl` from then.
pub fn subject_token(
    gateway: &Gateway,
    subject_id: &str,
    age: std::time::Duration,
    ttl: std::time::Duration,
) -> String {
    let subject_ref = gateway.consents().ledger().pseudonymise(subject_id);
    gateway
        .access()
        .tokens()
        .issue(
            &subject_ref,
            candor::access::tokens::now_secs() - age.as_secs(),
            ttl,
        )
        .unwrap()
}

/// `refused` has `code`, and its message begins with `begins`.
pub fn assert_refused(refused: &tonic::Status, code: tonic::Code, begins: &str) {
    assert_eq!(refused.code(), code, "{refused:?}");
    assert!(refused.message().starts_with(begins), "{refused:?}");
}

/// A bare HTTP/2 connection to the server, sending bodies of type `B`.
pub async fn http2_connection<B>(server: &TestServer) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io =
        hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// POSTs `body` as a gRPC call to `path` over a raw HTTP/2 connection and
/// reads the status of the answer from its headers (a refusal is
/// trailers-only) or, failing that, its trailers.
pub async fn raw_call(server: &TestServer, path: &str, body: Vec<u8>) -> tonic::Status {
    raw_call_with(
        server,
        path,
        &[],
        http_body_util::Full::new(bytes::Bytes::from(body)),
    )
    .await
}

/// [`raw_call`] with `headers` beside gRPC's own, and a body of any kind
/// (one that stays open, say).
pub async fn raw_call_with<B>(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: B,
) -> tonic::Status
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("{}{path}", server.url()))
        .header("te", "trailers")
        .header("content-type", "application/grpc");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = http2_connection(server)
        .await
        .send_request(request.body(body).unwrap())
        .await
        .unwrap();
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let collected = response.into_body().collect().await.unwrap();
    tonic::Status::from_header_map(&collected.trailers().cloned().unwrap_or_default())
        .expect("a status in the trailers")
}

/// `message` in gRPC's length-prefixed framing, uncompressed.
pub fn framed(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}
