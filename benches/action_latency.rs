//! Action latency: from a verdict change handed to containment to the first containment action
//! reaching its target, over many incidents.
//!
//! Runs the daemon's containment task (`contain::start`, one replica, as `driftd run` wires it
//! without `persist.latch_topic`) with three real targets on loopback: an Alertmanager-compatible
//! receiver and a webhook receiver (one small HTTP server on 127.0.0.1, on its own thread and
//! runtime as a separate process would be, answering 200 and timestamping each request when its
//! handler runs), and a flagd flag file. Every incident is a distinct deployment whose verdict
//! turns `fail` with fresh evidence under an enforcing policy (alert `am`, contain `hook` and
//! `flag`). For each one it records the time from the change being sent on containment's channel
//! to (a) the first request of the incident arriving at a receiver and (b) the flag file being
//! replaced (its inode changes; a thread polls it every 50 µs, so (b) is up to ~0.1 ms late).
//! Flag flips of one file are indistinguishable by content, so (b) pairs the n-th replacement with
//! the n-th change sent: exact for the steady scenario, where each incident completes before the
//! next, and the same multiset of latencies in a burst, whose changes are sent within microseconds.
//!
//! Scenarios, each on a fresh state directory: `steady` (incidents one every
//! `DRIFTD_BENCH_INTERVAL_MS`, 20 by default) and `burst` (bursts of `DRIFTD_BENCH_BURST`, 100 by
//! default, each sent at once once the previous one completed), `DRIFTD_BENCH_INCIDENTS` (1,000)
//! incidents each, first with the state and flag file on disk (`tempfile`'s directory, or
//! `DRIFTD_BENCH_DISK_DIR`), then on tmpfs (`/dev/shm`, where fsync costs nothing): the difference
//! is what the fsyncs of the latch journal, the audit log and the flag file cost.
//!
//! Run: `cargo bench --bench action_latency`. Prints p50 / p90 / p99 / max and a histogram per
//! scenario, then what persisting one latch change and a compaction of the latch journal cost.
//! Figures are recorded in the README.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use driftd::config::{Config, PolicyConfig, PolicyMode, SecretSource, TargetConfig, TriggerState};
use driftd::contain;
use driftd::detect::Change;
use driftd::metrics::Metrics;
use driftd::pipeline::Published;
use tokio::sync::watch;

#[path = "../tests/it/contain/fail.rs"]
mod fail;
use fail::fail_verdict;

/// The longest a scenario may take to see every incident's actions before the bench fails.
const DEADLINE: Duration = Duration::from_secs(300);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the receivers saw: per deployment, when its first request arrived and how many arrived,
/// and how many requests each path received.
#[derive(Default)]
struct Seen {
    first: HashMap<String, Instant>,
    per_deployment: HashMap<String, usize>,
    requests: HashMap<&'static str, usize>,
}

type Shared = Arc<Mutex<Seen>>;

fn note(seen: &Shared, path: &'static str, deployment: Option<&str>, at: Instant) {
    let mut s = seen.lock().unwrap();
    *s.requests.entry(path).or_default() += 1;
    if let Some(d) = deployment {
        s.first.entry(d.to_string()).or_insert(at);
        *s.per_deployment.entry(d.to_string()).or_default() += 1;
    }
}

async fn alerts(State(seen): State<Shared>, body: Bytes) -> &'static str {
    let at = Instant::now();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let d = v[0]["labels"]["deployment"].as_str();
    note(&seen, "alertmanager", d, at);
    "{}"
}

async fn hook(State(seen): State<Shared>, body: Bytes) -> &'static str {
    let at = Instant::now();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let d = v["incident"]["deployment"].as_str();
    note(&seen, "webhook", d, at);
    ""
}

/// Starts the receivers on their own thread and runtime; returns their address.
fn receivers(seen: Shared) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("receiver runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind the receivers");
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = Router::new()
                .route("/api/v2/alerts", post(alerts))
                .route("/hook", post(hook))
                .with_state(seen);
            axum::serve(listener, app).await.expect("receivers serve");
        });
    });
    rx.recv().expect("receiver address")
}

/// Polls the flag file's inode (every replacement is a rename of a new file) and records when
/// each replacement was first seen.
struct FlagWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Instant>>>,
    thread: std::thread::JoinHandle<()>,
}

impl FlagWatch {
    fn start(path: PathBuf) -> FlagWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut last = std::fs::metadata(&path).unwrap().ino();
            while !stop2.load(Ordering::Relaxed) {
                if let Ok(m) = std::fs::metadata(&path) {
                    if m.ino() != last {
                        last = m.ino();
                        seen2.lock().unwrap().push(Instant::now());
                    }
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        });
        FlagWatch { stop, seen, thread }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn quiet_for(&self) -> Duration {
        self.seen
            .lock()
            .unwrap()
            .last()
            .map_or(Duration::ZERO, Instant::elapsed)
    }

    fn finish(self) -> Vec<Instant> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

fn config(dir: &Path, receivers: SocketAddr) -> Config {
    let flag_file = dir.join("flags.json");
    std::fs::write(
        &flag_file,
        r#"{"flags":{"canary":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}}}"#,
    )
    .unwrap();
    let secret = dir.join("hook-secret");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let mut c = Config::default();
    c.containment.state_dir = dir.join("state");
    c.containment.targets = vec![
        TargetConfig::Alertmanager {
            name: "am".into(),
            url: Some(format!("http://{receivers}")),
            urls: vec![],
            basic_auth: None,
            bearer_token: None,
            tls: None,
        },
        TargetConfig::Webhook {
            name: "hook".into(),
            url: format!("http://{receivers}/hook"),
            secret: SecretSource::File(secret),
        },
        TargetConfig::Flagd {
            name: "flag".into(),
            path: flag_file,
            flag: "canary".into(),
            safe_variant: "off".into(),
        },
    ];
    c.containment.policies = vec![PolicyConfig {
        name: "enforce".into(),
        deployments: vec!["*".into()],
        metrics: vec!["*".into()],
        mode: PolicyMode::Enforce,
        alert_on: vec![TriggerState::Fail],
        contain_on: vec![TriggerState::Fail],
        alerts: vec!["am".into()],
        contain: vec!["hook".into(), "flag".into()],
        ..PolicyConfig::named("")
    }];
    c.validate().expect("valid bench config");
    c
}

/// How the incidents are sent.
#[derive(Clone, Copy)]
enum Plan {
    /// One every interval.
    Steady(Duration),
    /// This many at once, the next burst once the previous one completed.
    Burst(usize),
}

/// Latencies of one scenario, in the order the changes were sent.
struct Measured {
    first_request: Vec<Duration>,
    flag_rewritten: Vec<Duration>,
    /// Flag file replacements seen (flips within one poll of each other count once).
    flips_seen: usize,
    wall: Duration,
}

/// Runs `n` incidents through a fresh containment task whose state and flag file live in
/// `base`.
fn scenario(
    base: &Path,
    seen: &Shared,
    receivers: SocketAddr,
    tag: &str,
    plan: Plan,
    n: usize,
) -> Measured {
    let dir = tempfile::Builder::new()
        .prefix("driftd-action-latency-")
        .tempdir_in(base)
        .expect("temp dir");
    let config = config(dir.path(), receivers);
    // The daemon's runtime: multi-threaded, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let flags = FlagWatch::start(dir.path().join("flags.json"));
    let deployments: Vec<String> = (0..n).map(|i| format!("{tag}-{i:05}")).collect();
    let mut sent = Vec::with_capacity(n);
    // (changes sent, flag replacements seen) of each step: a burst, or the whole steady run.
    let mut groups = Vec::new();
    let started = Instant::now();
    rt.block_on(async {
        let (stop, shutdown) = watch::channel(false);
        let (_snapshots, snapshots_rx) = watch::channel(Arc::new(Published::default()));
        let (_handle, changes, task) = contain::start(
            &config,
            config.admin.addr,
            Arc::new(Metrics::new(&config)),
            snapshots_rx,
            shutdown,
        )
        .expect("containment starts");
        // Flips on tmpfs can follow each other within one poll: the flag side is done when
        // every flip was seen, or the file stayed unchanged for 100 ms.
        let done = |upto: usize, flips_before: usize| {
            let s = seen.lock().unwrap();
            let flips = flags.count();
            // Both requests of each incident: its alert and its webhook.
            deployments[..upto]
                .iter()
                .all(|d| s.per_deployment.get(d).is_some_and(|n| *n >= 2))
                && (flips >= upto
                    || (flips > flips_before && flags.quiet_for() > Duration::from_millis(100)))
        };
        let wait_done = |upto: usize, flips_before: usize| async move {
            let until = Instant::now() + DEADLINE;
            while !done(upto, flips_before) {
                assert!(
                    Instant::now() < until,
                    "{tag}: incidents not all acted on within {DEADLINE:?}"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        match plan {
            Plan::Steady(every) => {
                let t0 = tokio::time::Instant::now();
                for (i, d) in deployments.iter().enumerate() {
                    tokio::time::sleep_until(t0 + every * i as u32).await;
                    let change = fail_verdict(d, "ft-1");
                    sent.push(Instant::now());
                    changes.send(change).unwrap();
                }
                wait_done(n, 0).await;
                groups.push((0..n, 0..flags.count()));
            }
            Plan::Burst(size) => {
                for chunk in deployments.chunks(size) {
                    let burst: Vec<Change> =
                        chunk.iter().map(|d| fail_verdict(d, "ft-1")).collect();
                    let (first, flips_before) = (sent.len(), flags.count());
                    for change in burst {
                        sent.push(Instant::now());
                        changes.send(change).unwrap();
                    }
                    wait_done(sent.len(), flips_before).await;
                    groups.push((first..sent.len(), flips_before..flags.count()));
                    // Let the reports of the burst's actions settle before the next one.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        stop.send_replace(true);
        task.await.unwrap();
    });
    let wall = started.elapsed();
    let rewrites = flags.finish();
    let s = seen.lock().unwrap();
    let first_request = deployments
        .iter()
        .zip(&sent)
        .map(|(d, at)| s.first[d].duration_since(*at))
        .collect();
    let flag_rewritten = groups
        .into_iter()
        .flat_map(
            |(sends, flips): (std::ops::Range<usize>, std::ops::Range<usize>)| {
                rewrites[flips]
                    .iter()
                    .zip(&sent[sends])
                    .map(|(r, at)| r.saturating_duration_since(*at))
                    .collect::<Vec<_>>()
            },
        )
        .collect();
    Measured {
        first_request,
        flag_rewritten,
        flips_seen: rewrites.len(),
        wall,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(label: &str, values: &[Duration]) {
    let mut sorted = values.to_vec();
    sorted.sort();
    println!(
        "  {label:<22} n={:<5} p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        sorted.len(),
        ms(percentile(&sorted, 50.0)),
        ms(percentile(&sorted, 90.0)),
        ms(percentile(&sorted, 99.0)),
        ms(*sorted.last().unwrap()),
    );
    let bounds = [
        1.0,
        2.0,
        5.0,
        10.0,
        20.0,
        50.0,
        100.0,
        200.0,
        500.0,
        1000.0,
        f64::INFINITY,
    ];
    let mut lower = 0.0;
    for upper in bounds {
        let count = sorted
            .iter()
            .filter(|d| ms(**d) > lower && ms(**d) <= upper)
            .count();
        if count > 0 {
            let bar = "#".repeat((count * 50).div_ceil(sorted.len()));
            let range = if upper.is_finite() {
                format!("{lower:>5}–{upper:<5} ms")
            } else {
                format!("> {lower:<9} ms")
            };
            println!("      {range} {count:>5} {bar}");
        }
        lower = upper;
    }
}

/// With `n` contained deployments: the cost of persisting one latch change (a journal append
/// and its fdatasync) and of a compaction (`containment.json` rewritten whole, fsynced).
fn latch_write_cost(base: &Path, n: usize) -> (Duration, Duration) {
    use driftd::contain::latch::{Incident, Latch, Phase, Severity};
    use driftd::contain::store::LatchStore;
    let dir = tempfile::tempdir_in(base).unwrap();
    let mut store = LatchStore::open(dir.path()).unwrap();
    store.load().unwrap();
    let evidence = match fail_verdict("x", "ft-1") {
        Change::Verdict(v) => serde_json::to_value(&v).unwrap(),
        Change::Signal(_) => unreachable!(),
    };
    let latches: std::collections::BTreeMap<String, Latch> = (0..n)
        .map(|i| {
            let d = format!("dep-{i:05}");
            let latch = Latch {
                phase: Phase::Contained,
                incident: Some(Incident {
                    id: format!("{d}:ft-1"),
                    deployment: d.clone(),
                    model_version: "ft-1".into(),
                    opened_at: "2026-11-30T17:00:00.000Z".into(),
                    reason: "refusal fail".into(),
                    evidence: evidence.clone(),
                    policy: "enforce".into(),
                    dry_run: false,
                    severity: Severity::Critical,
                }),
                done: ["am/trigger-critical", "hook/contain", "flag/contain"]
                    .iter()
                    .map(|k| format!("{d}:ft-1/{k}"))
                    .collect(),
                ..Latch::default()
            };
            (d, latch)
        })
        .collect();
    let rounds = 20;
    let t = Instant::now();
    for _ in 0..rounds {
        store.compact(&latches).unwrap();
    }
    let compaction = t.elapsed() / rounds;
    let one = std::collections::BTreeSet::from([format!("dep-{:05}", n / 2)]);
    let t = Instant::now();
    for _ in 0..rounds {
        store.save(&one, &latches).unwrap();
    }
    (t.elapsed() / rounds, compaction)
}

fn main() {
    let n = env_usize("DRIFTD_BENCH_INCIDENTS", 1000);
    let every = Duration::from_millis(env_usize("DRIFTD_BENCH_INTERVAL_MS", 20) as u64);
    let burst = env_usize("DRIFTD_BENCH_BURST", 100);
    let disk = std::env::var_os("DRIFTD_BENCH_DISK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let storages = [("disk", disk), ("tmpfs", PathBuf::from("/dev/shm"))];
    let seen: Shared = Arc::default();
    let addr = receivers(seen.clone());
    println!(
        "action latency: {n} incidents per scenario, steady = one every {every:?}, burst = {burst} at once; receivers on {addr}"
    );
    for (storage, base) in &storages {
        for (name, plan) in [
            ("steady", Plan::Steady(every)),
            ("burst", Plan::Burst(burst)),
        ] {
            let tag = format!("{storage}-{name}");
            let m = scenario(base, &seen, addr, &tag, plan, n);
            println!(
                "{tag} (state in {}, {:.1} s):",
                base.display(),
                m.wall.as_secs_f64()
            );
            report("first request", &m.first_request);
            report("flag file replaced", &m.flag_rewritten);
            if m.flips_seen != n {
                println!(
                    "  ({} of {n} flag file replacements seen: the others followed one within a poll)",
                    m.flips_seen
                );
            }
            let tenth = n / 10;
            if tenth > 0 {
                let p50 = |v: &[Duration]| {
                    let mut v = v.to_vec();
                    v.sort();
                    ms(percentile(&v, 50.0))
                };
                println!(
                    "  first request p50: first {tenth} incidents {:.2} ms, last {tenth} {:.2} ms (latches held grow 0 → {n})",
                    p50(&m.first_request[..tenth]),
                    p50(&m.first_request[n - tenth..]),
                );
            }
        }
    }
    let s = seen.lock().unwrap();
    let runs = storages.len() * 2 * n;
    for path in ["alertmanager", "webhook"] {
        assert_eq!(
            s.requests.get(path).copied().unwrap_or(0),
            runs,
            "{path}: one request per incident expected"
        );
    }
    drop(s);
    for (storage, base) in &storages {
        for latches in [1, 100, 1000] {
            let (change, compaction) = latch_write_cost(base, latches);
            println!(
                "with {latches:>4} contained deployments ({storage}): one latch change persisted {:.2} ms, a compaction {:.2} ms",
                ms(change),
                ms(compaction)
            );
        }
    }
}
