//! Soak harness: a long mixed workload against a `candor serve` process,
//! reporting each minute's calls, errors, latency and the server's memory.
//! Not run in CI: `SOAK_SECS=1800 cargo bench --bench soak` (see
//! `RELIABILITY.md`).
//!
//! The mix, paced at SOAK_RATE calls/s (open loop) over a pool of subjects:
//! Score with a TC string (EU) or as a US adult; ScoreBatch of 4 rows with
//! deferred attributions; GetExplanation (consumer, support, engineer) of a
//! recent decision; RecordConsent and WithdrawConsent; GetConsent and
//! ListDecisions; a what-if Explain. Every call must succeed: any error
//! fails the soak.
//!
//! Settings (environment): SOAK_SECS (default 120), SOAK_RATE (default
//! 200), SOAK_SUBJECTS (default 5000), SOAK_WARMUP_SECS (default 120, or a
//! quarter of SOAK_SECS when shorter): the RSS reference is taken when the
//! warm-up ends.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use candor::grpc::pb::{
    self, consent_service_client::ConsentServiceClient,
    explain_service_client::ExplainServiceClient,
    explanation_service_client::ExplanationServiceClient,
    scoring_service_client::ScoringServiceClient,
};
use tonic::transport::Channel;

mod common;
use common::{
    huge_pages_kib, percentile, rows, rss_kib, setting, spawn_gateway, tc_all, threads, us_adult,
};

#[derive(Default)]
struct Minute {
    latencies_us: Vec<u32>,
    calls: u64,
    errors: u64,
    first_error: Option<String>,
}

struct Mix {
    channel: Channel,
    rows: Vec<std::collections::BTreeMap<String, pb::FeatureValue>>,
    tc: String,
    subjects: u64,
    recent: Mutex<VecDeque<String>>,
}

impl Mix {
    fn model() -> Option<pb::ModelRef> {
        Some(pb::ModelRef {
            name: "caravan-lgbm".into(),
            version: String::new(),
        })
    }

    fn context(&self, n: u64) -> Option<pb::RequestContext> {
        if n.is_multiple_of(2) {
            Some(pb::RequestContext {
                jurisdiction_country: "DE".into(),
                age_status: pb::AgeStatus::Adult as i32,
                tc_string: self.tc.clone(),
                ..Default::default()
            })
        } else {
            us_adult()
        }
    }

    fn remember(&self, id: String) {
        let mut recent = self.recent.lock().unwrap();
        recent.push_back(id);
        if recent.len() > 1000 {
            recent.pop_front();
        }
    }

    /// The `n`th call of the mix.
    async fn call(&self, n: u64) -> Result<(), tonic::Status> {
        let subject = format!("soak-{}", n.wrapping_mul(2_654_435_761) % self.subjects);
        let row = self.rows[n as usize % self.rows.len()].clone();
        let ch = self.channel.clone();
        match n % 100 {
            0..=59 => {
                let d = ScoringServiceClient::new(ch)
                    .score(pb::ScoreRequest {
                        model: Self::model(),
                        subject_id: subject,
                        features: pb::features(row),
                        context: self.context(n),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                self.remember(d.decision.unwrap().decision_id);
            }
            60..=67 => {
                let r = ScoringServiceClient::new(ch)
                    .score_batch(pb::ScoreBatchRequest {
                        model: Self::model(),
                        subject_id: subject,
                        context: self.context(n),
                        rows: (0..4)
                            .map(|i| pb::BatchRow {
                                features: pb::features(
                                    self.rows[(n as usize + i) % self.rows.len()].clone(),
                                ),
                                ..Default::default()
                            })
                            .collect(),
                        explain: Some(pb::ExplainOptions {
                            mode: pb::ExplainMode::Deferred as i32,
                            method: 0,
                        }),
                    })
                    .await?
                    .into_inner();
                if let Some(d) = r.decisions.into_iter().next() {
                    self.remember(d.decision_id);
                }
            }
            68..=83 => {
                let id = {
                    let recent = self.recent.lock().unwrap();
                    if recent.is_empty() {
                        return Ok(());
                    }
                    recent[n as usize % recent.len()].clone()
                };
                let audience = [
                    pb::Audience::Consumer,
                    pb::Audience::Support,
                    pb::Audience::Engineer,
                ][n as usize % 3];
                ExplanationServiceClient::new(ch)
                    .get_explanation(pb::GetExplanationRequest {
                        decision_id: id,
                        audience: audience as i32,
                        language: if n.is_multiple_of(2) { "en" } else { "nl" }.into(),
                    })
                    .await?;
            }
            84..=89 => {
                ConsentServiceClient::new(ch)
                    .record_consent(pb::RecordConsentRequest {
                        subject_id: subject,
                        purposes: (1..=4)
                            .map(|p| pb::PurposeChoice {
                                tcf_purpose: p,
                                granted: true,
                                ..Default::default()
                            })
                            .collect(),
                        jurisdiction: "DE".into(),
                        language: "en".into(),
                        ..Default::default()
                    })
                    .await?;
            }
            90..=91 => {
                ConsentServiceClient::new(ch)
                    .withdraw_consent(pb::WithdrawConsentRequest {
                        subject_id: subject,
                        tcf_purposes: vec![3, 4],
                        ..Default::default()
                    })
                    .await?;
            }
            92..=94 => {
                ConsentServiceClient::new(ch)
                    .get_consent(pb::GetConsentRequest {
                        subject_id: subject,
                    })
                    .await?;
            }
            95..=97 => {
                ExplanationServiceClient::new(ch)
                    .list_decisions(pb::ListDecisionsRequest {
                        subject_id: subject,
                        limit: 20,
                        ..Default::default()
                    })
                    .await?;
            }
            _ => {
                ExplainServiceClient::new(ch)
                    .explain(pb::ExplainRequest {
                        model: Self::model(),
                        features: pb::features(row),
                        ..Default::default()
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

fn main() {
    let secs = setting("SOAK_SECS", 120);
    let rate = setting("SOAK_RATE", 200) as f64;
    let warmup = setting("SOAK_WARMUP_SECS", 120.min(secs / 4));
    let data = tempfile::tempdir().unwrap();
    let mut gateway = spawn_gateway(data.path(), &[], None);
    let pid = gateway.child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let minute = Arc::new(Mutex::new(Minute::default()));
    let mut report = Vec::new();
    rt.block_on(async {
        let mix = Arc::new(Mix {
            channel: Channel::from_shared(gateway.grpc.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
            rows: rows(),
            tc: tc_all(),
            subjects: setting("SOAK_SUBJECTS", 5000),
            recent: Mutex::new(VecDeque::new()),
        });
        println!(
            "\nsoak: {secs} s at {rate:.0} calls/s (open loop), warm-up {warmup} s, {} cores",
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        println!(
            "| minute | calls | errors | p50 ms | p99 ms | server RSS MiB | of it SQLite MiB | of it huge pages MiB | server threads | database MiB |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let (mut sent, mut next_report) = (0u64, 60u64);
        let end = Duration::from_secs(secs);
        while start.elapsed() < end {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * rate) as u64;
            while sent < due {
                let (mix, minute) = (mix.clone(), minute.clone());
                let n = sent;
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let result = mix.call(n).await;
                    let mut m = minute.lock().unwrap();
                    m.calls += 1;
                    m.latencies_us.push(t0.elapsed().as_micros() as u32);
                    if let Err(e) = result {
                        m.errors += 1;
                        m.first_error.get_or_insert_with(|| format!("{e:?}"));
                    }
                });
                sent += 1;
            }
            let elapsed = start.elapsed().as_secs();
            if elapsed >= next_report || start.elapsed() >= end {
                let mut m = std::mem::take(&mut *minute.lock().unwrap());
                m.latencies_us.sort_unstable();
                let rss = rss_kib(pid) as f64 / 1024.0;
                let huge = huge_pages_kib(pid) as f64 / 1024.0;
                let sqlite = common::scrape(&gateway.metrics)
                    .lines()
                    .find_map(|l| l.strip_prefix("candor_sqlite_memory_bytes "))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
                    / (1024.0 * 1024.0);
                let db = std::fs::metadata(data.path().join("candor.db")).map_or(0, |m| m.len())
                    as f64
                    / (1024.0 * 1024.0);
                let (p50, p99) = (
                    percentile(&m.latencies_us, 0.5),
                    percentile(&m.latencies_us, 0.99),
                );
                println!(
                    "| {} | {} | {} | {p50:.2} | {p99:.2} | {rss:.1} | {sqlite:.1} | {huge:.1} | {} | {db:.1} |",
                    next_report / 60,
                    m.calls,
                    m.errors,
                    threads(pid)
                );
                if let Some(e) = &m.first_error {
                    println!("  first error: {e}");
                }
                report.push((elapsed, m.calls, m.errors, p99, rss));
                next_report += 60;
            }
        }
        // Let the last calls finish.
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let late = std::mem::take(&mut *minute.lock().unwrap());
    let errors: u64 = report.iter().map(|r| r.2).sum::<u64>() + late.errors;
    let after_warmup: Vec<_> = report.iter().filter(|r| r.0 > warmup).collect();
    let reference = after_warmup.first().map_or(f64::NAN, |r| r.4);
    let (lo, hi) = after_warmup
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| {
            (lo.min(r.4), hi.max(r.4))
        });
    let p99s: Vec<f64> = after_warmup.iter().map(|r| r.3).collect();
    println!(
        "\nerrors: {errors}; server RSS after warm-up {reference:.1} MiB, then {lo:.1}–{hi:.1} MiB ({:+.1}% / {:+.1}%); per-minute p99 after warm-up {:.2}–{:.2} ms",
        100.0 * (lo / reference - 1.0),
        100.0 * (hi / reference - 1.0),
        p99s.iter().copied().fold(f64::MAX, f64::min),
        p99s.iter().copied().fold(f64::MIN, f64::max),
    );
    assert!(
        gateway.child.try_wait().unwrap().is_none(),
        "the gateway is still up"
    );
    let _ = gateway.child.kill();
    assert_eq!(errors, 0, "the soak saw errors");
}
