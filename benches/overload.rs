//! Overload harness: what happens to a gateway offered four times the load
//! it can serve.
//!
//! A `candor serve` process (release build, bundled models, decisions
//! recorded `sync`) is driven over loopback by an open-loop generator: calls
//! leave at a fixed rate whether or not earlier ones have returned, as real
//! ad traffic does. In one run, side by side:
//! 1. capacity: closed-loop `Score` with OVERLOAD_CLIENTS concurrent calls;
//! 2. unloaded: open loop at half that capacity, the reference p99;
//! 3. overload: open loop at 4× capacity for OVERLOAD_SECS;
//! 4. recovery: half capacity again.
//!
//! For each phase it prints the offered and admitted rates, how many calls
//! were shed with RESOURCE_EXHAUSTED, any other error, the p50/p99 of the
//! admitted calls, and the server's resident memory.
//!
//! Settings (environment): OVERLOAD_SECS (default 10), OVERLOAD_CLIENTS
//! (default 32), GATEWAY_CPUS (pin the gateway with taskset, e.g. `0`, and
//! run the harness itself with `taskset -c 1`), and any `CANDOR_*` variable
//! for the server, e.g. `CANDOR_LIMITS__MAX_IN_FLIGHT`. Run with
//! `cargo bench --bench overload`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tonic::{Code, codegen::Bytes, transport::Channel};

mod common;
use common::{
    call, percentile, rss_kib, score_payloads, scrape, server_quantile, setting, spawn_gateway,
};

const SCORE: &str = "/candor.v1.ScoringService/Score";

#[derive(Default)]
struct Tally {
    admitted_us: Vec<u32>,
    shed: u64,
    other_errors: u64,
    first_other: Option<String>,
}

impl Tally {
    fn record(&mut self, started: Instant, result: Result<Bytes, tonic::Status>) {
        match result {
            Ok(_) => self.admitted_us.push(started.elapsed().as_micros() as u32),
            Err(s) if s.code() == Code::ResourceExhausted => self.shed += 1,
            Err(s) => {
                self.other_errors += 1;
                self.first_other.get_or_insert_with(|| format!("{s:?}"));
            }
        }
    }
}

/// Closed loop: `clients` calls always in flight for `secs`; calls/s.
async fn capacity(
    channels: &[Channel],
    payloads: &Arc<Vec<Bytes>>,
    clients: usize,
    secs: u64,
) -> f64 {
    let stop = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let channel = channels[c % channels.len()].clone();
            let payloads = payloads.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < stop {
                    if call(
                        &channel,
                        SCORE,
                        payloads[done as usize % payloads.len()].clone(),
                    )
                    .await
                    .is_ok()
                    {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / secs as f64
}

/// Open loop: calls leave at `rate` per second for `secs`, each on its own
/// task, whatever became of the earlier ones.
async fn open_loop(
    channels: &[Channel],
    payloads: &Arc<Vec<Bytes>>,
    rate: f64,
    secs: u64,
) -> (Tally, f64) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let channel = channels[sent as usize % channels.len()].clone();
            let payload = payloads[sent as usize % payloads.len()].clone();
            let tally = tally.clone();
            inflight.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let result = call(&channel, SCORE, payload).await;
                tally.lock().unwrap().record(t0, result);
            }));
            sent += 1;
        }
    }
    let offered = sent as f64 / start.elapsed().as_secs_f64();
    for t in inflight {
        t.await.unwrap();
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    (tally, offered)
}

fn main() {
    let secs = setting("OVERLOAD_SECS", 10);
    // Capacity is measured with no more calls in flight than the gateway
    // admits: a closed loop beyond its limit measures shedding instead.
    let clients = (setting("OVERLOAD_CLIENTS", 32) as usize)
        .min(setting("CANDOR_LIMITS__MAX_IN_FLIGHT", u64::MAX) as usize);
    let data = tempfile::tempdir().unwrap();
    let mut gateway = spawn_gateway(data.path(), &[], None);
    let pid = gateway.child.id();
    let addr = gateway.grpc.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let payloads = Arc::new(score_payloads());
    rt.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(
                Channel::from_shared(addr.clone())
                    .unwrap()
                    .connect()
                    .await
                    .unwrap(),
            );
        }
        capacity(&channels, &payloads, clients, 2).await; // warm-up
        let cap = capacity(&channels, &payloads, clients, secs).await;
        println!(
            "\noverload harness: capacity {cap:.0} Score/s closed-loop with {clients} clients, {} cores",
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        println!(
            "| phase | offered/s | admitted/s | shed (RESOURCE_EXHAUSTED) | other errors | admitted p50 / p99 ms, server | admitted p50 / p99 ms, client | server RSS MiB |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let (mut unloaded_server, mut unloaded_client) = (f64::NAN, f64::NAN);
        for (phase, factor) in [
            ("unloaded (0.5× capacity)", 0.5),
            ("overload (4× capacity)", 4.0),
            ("recovery (0.5× capacity)", 0.5),
        ] {
            let before = scrape(&gateway.metrics);
            let (mut tally, offered) = open_loop(&channels, &payloads, cap * factor, secs).await;
            let after = scrape(&gateway.metrics);
            tally.admitted_us.sort_unstable();
            // The server's own view (admission to response) and the
            // client's (which also waits for a free HTTP/2 stream and for
            // the CPU the generator shares with the server).
            let server = |q| server_quantile(&before, &after, SCORE, q);
            let (server_p99, client_p99) = (server(0.99), percentile(&tally.admitted_us, 0.99));
            if factor < 1.0 && unloaded_server.is_nan() {
                (unloaded_server, unloaded_client) = (server_p99, client_p99);
            }
            println!(
                "| {phase} | {offered:.0} | {:.0} | {} ({:.1}%) | {} | {:.2} / {server_p99:.2} ({:.2}× unloaded) | {:.2} / {client_p99:.2} ({:.2}× unloaded) | {:.0} |",
                tally.admitted_us.len() as f64 / secs as f64,
                tally.shed,
                100.0 * tally.shed as f64 / (offered * secs as f64),
                tally.other_errors,
                server(0.5),
                server_p99 / unloaded_server,
                percentile(&tally.admitted_us, 0.50),
                client_p99 / unloaded_client,
                rss_kib(pid) as f64 / 1024.0,
            );
            if let Some(e) = tally.first_other {
                println!("  first other error: {e}");
            }
        }
        assert!(
            gateway.child.try_wait().unwrap().is_none(),
            "the gateway survived the overload"
        );
    });
    let _ = gateway.child.kill();
}
