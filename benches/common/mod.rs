//! What the load harnesses share: golden request rows, a pass-through codec
//! for pre-encoded requests, one raw unary call, percentiles, and a gateway
//! started as its own process (as `candor serve` runs in production), so
//! that its memory can be read apart from the load generator's.

#![allow(dead_code)] // each harness uses a different part

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use bytes::{Buf, BufMut};
use candor::grpc::pb::{self, feature_value::Kind};
use tonic::{
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::{Bytes, http::uri::PathAndQuery},
    transport::Channel,
};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A numeric setting from the environment.
pub fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Consent to every purpose for vendor 1000, from the policy fixtures.
pub fn tc_all() -> String {
    let path = repo_root().join("tests/fixtures/consent/policy_strings.json");
    let fixtures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("policy fixtures")).unwrap();
    fixtures["strings"]["tcf-all"]["string"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub fn ort_lib() -> PathBuf {
    std::env::var_os("CANDOR_ORT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".ort/libonnxruntime.so.1.31.1"))
}

/// A US adult with no opt-out: personalised, and nothing to look up.
pub fn us_adult() -> Option<pb::RequestContext> {
    Some(pb::RequestContext {
        jurisdiction_country: "US".into(),
        age_status: pb::AgeStatus::Adult as i32,
        ..Default::default()
    })
}

/// Golden rows of the default Caravan model, as request features.
pub fn rows() -> Vec<BTreeMap<String, pb::FeatureValue>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/caravan-lgbm/1.0.0/golden.csv");
    let mut reader = csv::Reader::from_path(path).expect("golden rows");
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            header
                .iter()
                .zip(r.iter())
                .filter(|(h, _)| *h != "score")
                .map(|(h, v)| {
                    (
                        h.clone(),
                        pb::FeatureValue {
                            kind: Some(Kind::Integer(v.parse::<f64>().unwrap() as i64)),
                        },
                    )
                })
                .collect()
        })
        .collect()
}

/// A codec that passes pre-encoded protobuf bytes through unchanged.
#[derive(Clone, Default)]
pub struct RawCodec;

pub struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

pub async fn call(
    channel: &Channel,
    path: &'static str,
    payload: Bytes,
) -> Result<Bytes, tonic::Status> {
    let mut grpc = Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let response = grpc
        .unary(
            tonic::Request::new(payload),
            PathAndQuery::from_static(path),
            RawCodec,
        )
        .await?;
    Ok(response.into_inner())
}

pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// A gateway process and where it listens.
pub struct Gateway {
    pub child: Child,
    /// `http://host:port` of the gRPC API.
    pub grpc: String,
    /// `host:port` of `/metrics` and `/healthz`.
    pub metrics: String,
}

/// `candor serve` as a child process with the bundled models, a fresh
/// database in `data`, and `env` on top, once its models are loaded. Its
/// log goes on to `log` (or nowhere).
pub fn spawn_gateway(data: &Path, env: &[(&str, &str)], log: Option<PathBuf>) -> Gateway {
    // GATEWAY_CPUS=0 pins the gateway to those cores (taskset), so that a
    // load generator pinned elsewhere does not take its CPU.
    let mut command = match std::env::var("GATEWAY_CPUS") {
        Ok(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpus, env!("CARGO_BIN_EXE_candor")]);
            c
        }
        Err(_) => Command::new(env!("CARGO_BIN_EXE_candor")),
    };
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--models-dir")
        .arg(repo_root().join("models"))
        .env("CANDOR_ORT_LIB", ort_lib())
        .env("CANDOR_DATABASE", data.join("candor.db"))
        .env("CANDOR_CONSENT__SUBJECT_KEY_FILE", data.join("subject.key"))
        .env("CANDOR_CONSENT__TCF_VENDOR_ID", "1000")
        .env("CANDOR_DECISIONS__INPUT_KEY_FILE", data.join("inputs.key"))
        .env("CANDOR_METRICS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("candor serve starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut addr, mut metrics) = (None, None);
    let field = |line: &str, name: &str| {
        line.find(name).map(|at| {
            line[at + name.len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        })
    };
    for line in lines.by_ref() {
        let line = line.unwrap();
        addr = addr.or_else(|| field(&line, " addr="));
        metrics = metrics.or_else(|| field(&line, " http="));
        if line.contains("models loaded") {
            break;
        }
    }
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut out = log.map(|p| std::fs::File::create(p).expect("log file"));
        for line in lines.map_while(Result::ok) {
            if let Some(f) = out.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
        }
    });
    Gateway {
        child,
        grpc: format!("http://{}", addr.expect("serve logs its address")),
        metrics: metrics.expect("serve logs its metrics address"),
    }
}

/// The Prometheus text at `http://{addr}/metrics`.
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: candor\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned())
}

/// The cumulative buckets `(le, count)` of the server's latency histogram
/// for one RPC.
fn buckets(text: &str, rpc: &str) -> Vec<(f64, f64)> {
    let prefix = "candor_rpc_duration_seconds_bucket{";
    let label = format!("rpc=\"{rpc}\"");
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&label))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The `q` quantile (in ms) of the calls to `rpc` the server admitted
/// between two scrapes, interpolated within its histogram bucket.
pub fn server_quantile(before: &str, after: &str, rpc: &str, q: f64) -> f64 {
    let (b, a) = (buckets(before, rpc), buckets(after, rpc));
    let count = |v: &[(f64, f64)], i: usize| v.get(i).map_or(0.0, |x| x.1);
    let total = count(&a, a.len().saturating_sub(1)) - count(&b, b.len().saturating_sub(1));
    let target = q * total;
    let mut lower = (0.0, 0.0);
    for (i, &(le, cum)) in a.iter().enumerate() {
        let cum = cum - count(&b, i);
        if cum >= target && total > 0.0 {
            if le.is_infinite() {
                return lower.0 * 1000.0;
            }
            let within = (target - lower.1) / (cum - lower.1).max(1.0);
            return (lower.0 + (le - lower.0) * within) * 1000.0;
        }
        lower = (le, cum);
    }
    f64::NAN
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_number(pid, "status", "VmRSS:")
}

/// The threads a process runs.
pub fn threads(pid: u32) -> u64 {
    proc_number(pid, "status", "Threads:")
}

/// The part of a process's anonymous memory mapped as transparent huge
/// pages: khugepaged fills these in behind the allocator's back.
pub fn huge_pages_kib(pid: u32) -> u64 {
    proc_number(pid, "smaps_rollup", "AnonHugePages:")
}

/// The number on one `<field> <n> [kB]` line of `/proc/<pid>/<file>`, 0
/// when absent.
fn proc_number(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One encoded `Score` request per golden row, for a US adult.
pub fn score_payloads() -> Vec<Bytes> {
    use prost::Message;
    rows()
        .into_iter()
        .map(|features| {
            pb::ScoreRequest {
                model: Some(pb::ModelRef {
                    name: "caravan-lgbm".into(),
                    version: String::new(),
                }),
                features: pb::features(features),
                context: us_adult(),
                ..Default::default()
            }
            .encode_to_vec()
            .into()
        })
        .collect()
}
