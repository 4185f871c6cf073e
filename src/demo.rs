//! `driftd demo`: the whole daemon on an in-process Kafka, with a drifting canary.
//!
//! Starts librdkafka's mock cluster (no network, no broker to install), produces synthetic
//! traffic for two deployments with canary and control arms plus a sprinkling of malformed and
//! PII-bearing messages, and runs the real daemon ([`crate::daemon::run`], the same consumer,
//! pipeline, dead-letter producer and admin server as `driftd run`) on it. Part-way through, the
//! first deployment's canary starts refusing more and sounding more hostile; the live view shows
//! the rates move and the verdicts change; driftd contains the canary — its flag in a flagd file
//! in a temporary folder goes to the safe variant, an HMAC-signed alert reaches a local webhook
//! receiver, the gate answers 503 — and the summary shows the evidence, the actions with their
//! latency, the exact release command, and then exercises it: refused with a wrong token,
//! accepted with the right one.
//!
//! Owns the demo scenario and its terminal output only.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;

use crate::admin;
use crate::config::{
    Config, LogFormat, PolicyConfig, PolicyMode, SecretSource, TargetConfig, TriggerState,
};
use crate::detect::State;
use crate::event::Arm;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::pipeline::Published;
use crate::state::{CohortView, Snapshot};
use crate::traffic::{Drift, DriftMetric, Generator, Sender, TrafficModel};

/// Demo settings (the CLI's flags).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long to produce traffic.
    pub duration: Duration,
    /// Events per second.
    pub rate: f64,
    /// Admin server address (port 0 picks a free one).
    pub admin_addr: SocketAddr,
    /// Fraction of the run after which the canary drifts.
    pub drift_at: f64,
    /// Random seed.
    pub seed: u64,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The in-process Kafka could not start.
    #[error("cannot start the in-process kafka mock cluster: {0}")]
    Mock(#[from] rdkafka::error::KafkaError),
    /// The admin port is taken.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// The producer failed.
    #[error(transparent)]
    Traffic(#[from] crate::traffic::TrafficError),
    /// The daemon failed.
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    /// Writing to the terminal failed.
    #[error("cannot write to stdout: {0}")]
    Output(#[from] std::io::Error),
    /// The daemon stopped before it was asked to.
    #[error("the daemon stopped unexpectedly; see the log above")]
    Stopped,
    /// The daemon did not consume everything in time.
    #[error("the pipeline consumed {consumed} of {produced} messages within the grace period")]
    Incomplete {
        /// Messages consumed.
        consumed: u64,
        /// Messages produced.
        produced: u64,
    },
}

const TOPIC: &str = "llm.generation.events";
const DEAD_LETTER_TOPIC: &str = "llm.generation.events.dlq";
/// Every `BAD_EVERY`-th message is malformed or carries personal data.
const BAD_EVERY: u64 = 250;

/// The config the demo runs with: defaults, short windows so a one-minute run shows movement.
/// Files of one demo run: flag file, admin token, containment state and audit log.
struct DemoFiles {
    dir: std::path::PathBuf,
    flags: std::path::PathBuf,
    token: std::path::PathBuf,
}

impl DemoFiles {
    fn create() -> std::io::Result<DemoFiles> {
        let dir = std::env::temp_dir().join(format!("driftd-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let flags = dir.join("flags.json");
        let flag = |name: &str| {
            serde_json::json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on",
                "targeting": {"if": [{"==": [{"var": "tier"}, "beta"]}, "on", "on"]}, "metadata": {"deployment": name}})
        };
        let doc = serde_json::json!({
            "$schema": "https://flagd.dev/schema/v0/flags.json",
            "flags": {"support-bot-canary": flag("support-bot"), "search-assist-canary": flag("search-assist")},
        });
        std::fs::write(
            &flags,
            serde_json::to_vec_pretty(&doc).expect("JSON serialises"),
        )?;
        let token = dir.join("admin-token");
        let secret: u128 = rand::random();
        std::fs::write(&token, format!("{secret:032x}\n"))?;
        Ok(DemoFiles { dir, flags, token })
    }
}

fn demo_config(
    brokers: String,
    admin_addr: SocketAddr,
    onset: Duration,
    files: &DemoFiles,
    receiver: SocketAddr,
) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = brokers;
    c.kafka.topic = TOPIC.into();
    c.kafka.group_id = "driftd-demo".into();
    c.kafka.dead_letter_topic = DEAD_LETTER_TOPIC.into();
    c.windows.bucket = Duration::from_secs(1);
    c.windows.span = Duration::from_secs(600);
    c.windows.recent = Duration::from_secs(10);
    c.windows.baseline_half_life = Duration::from_secs(600);
    c.ingest.allowed_lateness = Duration::from_secs(30);
    c.ingest.publish_interval = Duration::from_millis(500);
    c.admin.addr = admin_addr;
    c.detection.canary_share = Some(0.5);
    // Learn each cohort's own baseline before the drift starts.
    c.detection.self_baseline.warmup = onset.mul_f64(0.8).min(Duration::from_secs(10));
    c.detection.self_baseline.warmup_events = 300;
    c.log.format = LogFormat::Human;
    c.log.level = "error".into();
    let cc = &mut c.containment;
    cc.state_dir = files.dir.join("state");
    cc.admin_token = Some(SecretSource::File(files.token.clone()));
    cc.action_timeout = Duration::from_secs(2);
    cc.retry_for = Duration::from_secs(10);
    cc.targets.push(TargetConfig::Webhook {
        name: "oncall-webhook".into(),
        url: format!("http://{receiver}/alerts"),
        secret: SecretSource::File(files.token.clone()),
    });
    for dep in ["support-bot", "search-assist"] {
        cc.targets.push(TargetConfig::Flagd {
            name: format!("{dep}-flag"),
            path: files.flags.clone(),
            flag: format!("{dep}-canary"),
            safe_variant: "off".into(),
        });
        cc.policies.push(PolicyConfig {
            name: format!("{dep}-guard"),
            deployments: vec![dep.into()],
            metrics: vec!["*".into()],
            mode: PolicyMode::Enforce,
            alert_on: vec![TriggerState::Fail],
            contain_on: vec![TriggerState::Fail],
            alert_on_signals: true,
            alerts: vec!["oncall-webhook".into()],
            contain: vec![format!("{dep}-flag")],
        });
    }
    c
}

/// A local alert receiver that checks driftd's HMAC signature, as a real receiver would.
async fn start_receiver(
    key: Vec<u8>,
) -> std::io::Result<(SocketAddr, Arc<std::sync::Mutex<Vec<String>>>)> {
    use hmac::{Hmac, Mac};
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = received.clone();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (store, key) = (store.clone(), key.clone());
                async move {
                    let mut mac =
                        Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
                    mac.update(&body);
                    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                    let given = headers
                        .get("x-driftd-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    store.lock().expect("receiver lock").push(format!(
                        "{} {} for {} (signature {})",
                        v["op"].as_str().unwrap_or("?"),
                        v["severity"].as_str().unwrap_or("?"),
                        v["incident"]["deployment"].as_str().unwrap_or("?"),
                        if given == expected {
                            "verified"
                        } else {
                            "INVALID"
                        }
                    ));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, received))
}

/// The malformed or PII-bearing message number `i` (cycling through the reasons).
fn bad_message(i: u64, now_ms: i64) -> Vec<u8> {
    let at = crate::event::format_rfc3339_ms(now_ms);
    let text = match (i / BAD_EVERY) % 5 {
        0 => "{\"schema_version\": 1, \"event_id\": ".to_string(),
        1 => format!("{{\"schema_version\":1,\"event_id\":\"bad{i}\",\"emitted_at\":\"{at}\",\"deployment\":\"support-bot\",\"model_version\":\"m1\",\"arm\":\"canary\",\"signals\":{{\"tone\":0.1,\"escalated\":false,\"refused\":false}},\"prompt\":\"tell me\"}}"),
        2 => format!("{{\"schema_version\":1,\"event_id\":\"bad{i}\",\"emitted_at\":\"{at}\",\"deployment\":\"support-bot\",\"model_version\":\"m1\",\"arm\":\"canary\",\"signals\":{{\"tone\":7.5,\"escalated\":false,\"refused\":false}}}}"),
        3 => format!("{{\"schema_version\":1,\"event_id\":\"bad{i}\",\"emitted_at\":\"{at}\",\"deployment\":\"support-bot\",\"model_version\":\"m1\",\"arm\":\"canary\",\"segment\":{{\"locale\":\"jane.doe@example.com\"}},\"signals\":{{\"tone\":0.1,\"escalated\":false,\"refused\":false}}}}"),
        _ => format!("{{\"schema_version\":2,\"event_id\":\"bad{i}\"}}"),
    };
    text.into_bytes()
}

/// Runs the demo; returns once everything produced has been consumed and the daemon stopped.
pub async fn run(opts: DemoOptions, out: &mut impl Write) -> Result<(), DemoError> {
    let cluster = MockCluster::new(1)?;
    cluster.create_topic(TOPIC, 3, 1)?;
    cluster.create_topic(DEAD_LETTER_TOPIC, 1, 1)?;
    let listener = admin::bind(opts.admin_addr).await?;
    let admin_addr = listener.local_addr()?;
    let onset = opts.duration.mul_f64(opts.drift_at);
    let files = DemoFiles::create()?;
    let token = std::fs::read_to_string(&files.token)?.trim().to_string();
    let (receiver, received) = start_receiver(token.clone().into_bytes()).await?;
    let config = demo_config(
        cluster.bootstrap_servers(),
        admin_addr,
        onset,
        &files,
        receiver,
    );
    let metrics = Arc::new(Metrics::new(&config.hash()));
    let (pipeline, snapshots) = Pipeline::new(&config, metrics.clone(), true);
    let (handle, controls) = crate::signals::channel();
    let daemon = tokio::spawn(crate::daemon::run(
        config.clone(),
        metrics.clone(),
        (pipeline, snapshots.clone()),
        listener,
        controls,
    ));

    let count = (opts.rate * opts.duration.as_secs_f64()).round().max(1.0) as u64;
    let traffic = TrafficModel {
        deployments: 2,
        canary_share: 0.5,
        drift: vec![
            Drift {
                metric: DriftMetric::Refusal,
                to: 0.15,
                at: opts.drift_at,
                deployments: 1,
            },
            Drift {
                metric: DriftMetric::Tone,
                to: -0.35,
                at: opts.drift_at,
                deployments: 1,
            },
        ],
        seed: opts.seed,
        ..TrafficModel::default()
    };
    writeln!(
        out,
        "driftd demo: in-process Kafka at {}, topic {TOPIC} (3 partitions)",
        cluster.bootstrap_servers()
    )?;
    writeln!(out, "  metrics:  curl http://{admin_addr}/metrics")?;
    writeln!(out, "  cohorts:  curl http://{admin_addr}/v1/cohorts")?;
    writeln!(
        out,
        "  traffic:  {count} events over {:?} ({} ev/s), 2 deployments, canary/control 50/50, 1 in {BAD_EVERY} malformed or carrying PII",
        opts.duration, opts.rate
    )?;
    writeln!(
        out,
        "  drift:    from {:.0}% of the run, support-bot's canary refusal 5% -> 15% and tone mean -0.35\n",
        opts.drift_at * 100.0
    )?;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let started = Instant::now();
    let mut producer = Some(tokio::spawn(produce(
        traffic,
        count,
        opts.rate,
        cluster.bootstrap_servers(),
    )));
    let mut before: Option<Arc<Published>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let grace = opts.duration + Duration::from_secs(60);
    let mut produced = None;
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        let snapshot = snapshots.borrow().clone();
        if elapsed < onset {
            before = Some(snapshot.clone());
        }
        let consumed = metrics.events_applied.get() + metrics.events_rejected.get();
        if daemon.is_finished() {
            // The daemon stops only when asked; finishing early means it failed.
            daemon.await.expect("daemon task does not panic")?;
            return Err(DemoError::Stopped);
        }
        if let Some(task) = producer.take_if(|t| t.is_finished()) {
            produced = Some(task.await.expect("producer task does not panic")?);
        }
        render_live(
            out,
            &snapshot.cohorts,
            elapsed,
            opts.duration,
            consumed,
            metrics.events_rejected.get(),
        )?;
        render_verdicts(out, &snapshot, &client, admin_addr).await?;
        if let Some(p) = produced {
            if consumed >= p {
                break;
            }
        }
        if elapsed > grace {
            handle.shutdown();
            let _ = daemon.await;
            return Err(DemoError::Incomplete {
                consumed,
                produced: produced.unwrap_or(count),
            });
        }
    }
    // One more publish interval so the final snapshot holds the last events.
    tokio::time::sleep(config.ingest.publish_interval * 2).await;
    let after = snapshots.borrow().clone();
    render_summary(
        out,
        before.as_ref().map(|p| &p.cohorts),
        &after,
        &metrics,
        produced.unwrap_or(count),
    )?;
    let admin = format!("http://{admin_addr}");
    render_containment(out, &client, &admin, &files, &token, &received).await?;
    handle.shutdown();
    daemon.await.expect("daemon task does not panic")?;
    Ok(())
}

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    match client.get(url).send().await {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// The containment part of the summary, then the release, done the way an operator would.
async fn render_containment(
    out: &mut impl Write,
    client: &reqwest::Client,
    admin: &str,
    files: &DemoFiles,
    token: &str,
    received: &std::sync::Mutex<Vec<String>>,
) -> Result<(), DemoError> {
    // Actions run off the hot path; give them a moment to finish.
    for _ in 0..100 {
        let (_, audit) = get_json(client, &format!("{admin}/v1/audit")).await;
        let done = audit.as_array().is_some_and(|a| {
            a.iter()
                .any(|r| r["target"] == "support-bot-flag" && r["result"] == "success")
                && a.iter()
                    .any(|r| r["target"] == "oncall-webhook" && r["result"] == "success")
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writeln!(out, "  containment (files in {}):", files.dir.display())?;
    let (_, latches) = get_json(client, &format!("{admin}/v1/deployments")).await;
    for dep in ["support-bot", "search-assist"] {
        let (status, _) = get_json(client, &format!("{admin}/v1/gate/{dep}")).await;
        let phase = latches[dep]["phase"].as_str().unwrap_or("healthy");
        writeln!(
            out,
            "    {dep:<14} {phase:<10} gate /v1/gate/{dep} -> {status}"
        )?;
        if let Some(reason) = latches[dep]["incident"]["reason"].as_str() {
            writeln!(out, "      why: {reason}")?;
        }
    }
    let (_, audit) = get_json(client, &format!("{admin}/v1/audit")).await;
    for r in audit
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["event"] == "action")
    {
        writeln!(
            out,
            "    action {:<20} {:<8} {:<8} after {} ms",
            r["target"].as_str().unwrap_or("?"),
            r["op"].as_str().unwrap_or("?"),
            r["result"].as_str().unwrap_or("?"),
            r["elapsed_ms"]
        )?;
    }
    let flags: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files.flags)?).unwrap_or_default();
    for flag in ["support-bot-canary", "search-assist-canary"] {
        writeln!(
            out,
            "    flagd {}: {flag} -> {}",
            files.flags.display(),
            flags["flags"][flag]["defaultVariant"]
                .as_str()
                .unwrap_or("?")
        )?;
    }
    for alert in received.lock().expect("receiver lock").iter() {
        writeln!(out, "    webhook receiver got: {alert}")?;
    }
    writeln!(out, "  release (what on-call runs once they have looked):")?;
    writeln!(
        out,
        "    DRIFTD_ADMIN_TOKEN=$(cat {}) driftd release --admin-url {admin} --deployment support-bot --operator \"$USER\" --reason \"...\"",
        files.token.display()
    )?;
    let release = |t: String| {
        client
            .post(format!("{admin}/v1/deployments/support-bot/release"))
            .bearer_auth(t)
            .json(&serde_json::json!({"operator": "demo", "reason": "demo: drift confirmed, releasing to show the flow"}))
            .send()
    };
    let wrong = release("not-the-token".into())
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let right = release(token.to_string())
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let (gate, _) = get_json(client, &format!("{admin}/v1/gate/support-bot")).await;
    writeln!(out, "    release with a wrong token -> {wrong}; with the right token -> {right}; gate now -> {gate}")?;
    for _ in 0..50 {
        if received
            .lock()
            .expect("receiver lock")
            .iter()
            .any(|a| a.starts_with("resolve"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(resolved) = received
        .lock()
        .expect("receiver lock")
        .iter()
        .find(|a| a.starts_with("resolve"))
    {
        writeln!(out, "    webhook receiver got: {resolved}")?;
    }
    writeln!(
        out,
        "    (flags stay at their safe variant after a release: turning the canary back on is a decision for its owners)"
    )?;
    writeln!(
        out,
        "  audit log: {}",
        files.dir.join("state").join("audit.log").display()
    )?;
    out.flush()?;
    Ok(())
}

fn state_word(state: State) -> String {
    match state {
        State::Fail => "FAIL".into(),
        s => s.as_str().into(),
    }
}

/// One line per deployment: each metric's combined verdict and the gate.
async fn render_verdicts(
    out: &mut impl Write,
    p: &Published,
    client: &reqwest::Client,
    admin: SocketAddr,
) -> std::io::Result<()> {
    for d in &p.deployments {
        let gate = match client
            .get(format!("http://{admin}/v1/gate/{}", d.deployment))
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 503 => "CONTAINED",
            Ok(_) => "open",
            Err(_) => "?",
        };
        let metrics: Vec<String> = d
            .metrics
            .iter()
            .map(|m| format!("{} {}", m.metric, state_word(m.state)))
            .collect();
        let mut flags = String::new();
        if d.sample_ratio_mismatch {
            flags.push_str("  SAMPLE RATIO MISMATCH");
        }
        for arm in &d.telemetry_absent {
            flags.push_str(&format!("  {} SILENT", arm.as_str()));
        }
        writeln!(
            out,
            "    verdicts {:<14} {} gate {gate}: {}{flags}",
            d.deployment,
            d.canary_version.as_deref().unwrap_or("-"),
            metrics.join(", ")
        )?;
    }
    Ok(())
}

async fn produce(
    traffic: TrafficModel,
    count: u64,
    rate: f64,
    brokers: String,
) -> Result<u64, DemoError> {
    let mut sender = Sender::new(&brokers, TOPIC, &[])?;
    let mut generator = Generator::new(traffic, Some(count));
    let started = Instant::now();
    let mut sent = 0u64;
    for i in 0..count {
        if i % 64 == 0 {
            let due = Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let now = crate::clock::wall_ms();
        if i % BAD_EVERY == BAD_EVERY - 1 {
            sender
                .send(Some(b"support-bot"), Some(&bad_message(i, now)), None)
                .await;
        } else {
            let g = generator.next_event(now);
            sender
                .send(Some(g.key.as_bytes()), Some(&g.payload), None)
                .await;
        }
        sent += 1;
    }
    sender.finish().await?;
    Ok(sent)
}

fn metric<'a>(c: &'a CohortView, name: &str) -> Option<&'a crate::state::MetricView> {
    c.metrics.iter().find(|m| m.name == name)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("    -".into(), |v| format!("{:5.1}%", v * 100.0))
}

fn render_live(
    out: &mut impl Write,
    s: &Snapshot,
    elapsed: Duration,
    total: Duration,
    consumed: u64,
    rejected: u64,
) -> std::io::Result<()> {
    let frac = (elapsed.as_secs_f64() / total.as_secs_f64()).min(1.0);
    let filled = (frac * 20.0) as usize;
    writeln!(
        out,
        "[{}{}] {:3.0}% {:>4}s  consumed {consumed:>7}  rejected {rejected:>4}  watermark {}",
        "#".repeat(filled),
        ".".repeat(20 - filled),
        frac * 100.0,
        elapsed.as_secs(),
        s.watermark.as_deref().unwrap_or("-")
    )?;
    let mut cohorts: Vec<&CohortView> = s.cohorts.iter().filter(|c| !c.overflow).collect();
    cohorts.sort_by(|a, b| (&a.deployment, a.arm).cmp(&(&b.deployment, b.arm)));
    for c in cohorts {
        let m = |name: &str| metric(c, name).map(|m| m.recent.clone());
        let tone = m("tone").and_then(|w| w.value);
        writeln!(
            out,
            "    {:<14} {:<7} last {}s: n {:>5}  refusal {}  escalation {}  tone {}  tone<-0.5 {}",
            c.deployment,
            c.arm.as_str(),
            s.recent_seconds,
            m("refusal").map_or(0, |w| w.n),
            pct(m("refusal").and_then(|w| w.value)),
            pct(m("escalation").and_then(|w| w.value)),
            tone.map_or("    -".into(), |t| format!("{t:+.2}")),
            pct(m("tone_tail").and_then(|w| w.value)),
        )?;
    }
    out.flush()
}

fn recent(s: &Snapshot, deployment: &str, arm: Arm, name: &str) -> Option<f64> {
    let c = s
        .cohorts
        .iter()
        .find(|c| c.deployment == deployment && c.arm == arm)?;
    metric(c, name)?.recent.value
}

fn render_summary(
    out: &mut impl Write,
    before: Option<&Snapshot>,
    published: &Published,
    metrics: &Metrics,
    produced: u64,
) -> std::io::Result<()> {
    use crate::event::Reason;
    let after = &published.cohorts;
    let applied = metrics.events_applied.get();
    let rejected = metrics.events_rejected.get();
    writeln!(out, "\ndriftd demo summary")?;
    writeln!(
        out,
        "  produced {produced}, applied {applied}, rejected {rejected}"
    )?;
    let reasons: Vec<String> = Reason::ALL
        .iter()
        .filter(|r| metrics.rejected(**r) > 0)
        .map(|r| format!("{} {}", r.as_str(), metrics.rejected(*r)))
        .collect();
    writeln!(out, "  rejected by reason: {}", reasons.join(", "))?;
    writeln!(
        out,
        "  dead-lettered: {} (PII rejections carry only topic/partition/offset and reason)",
        metrics.dead_letters_delivered.get()
    )?;
    let cohort_total: u64 = after.cohorts.iter().map(|c| c.events_total).sum();
    writeln!(
        out,
        "  cohorts: {}, events in cohort state: {cohort_total}",
        after.cohorts.len()
    )?;
    writeln!(
        out,
        "  last {}s, before the drift onset -> at the end:",
        after.recent_seconds
    )?;
    let mut visible = true;
    for dep in ["support-bot", "search-assist"] {
        for name in ["refusal", "tone"] {
            let fmt = |v: Option<f64>| match (name, v) {
                (_, None) => "-".to_string(),
                ("tone", Some(v)) => format!("{v:+.2}"),
                (_, Some(v)) => format!("{:.1}%", v * 100.0),
            };
            let b = before.and_then(|s| recent(s, dep, Arm::Canary, name));
            let a = recent(after, dep, Arm::Canary, name);
            let ctl = recent(after, dep, Arm::Control, name);
            writeln!(
                out,
                "    {dep:<14} {name:<8} canary {:>7} -> {:>7}   control {:>7}",
                fmt(b),
                fmt(a),
                fmt(ctl)
            )?;
        }
    }
    let canary_refusal = recent(after, "support-bot", Arm::Canary, "refusal");
    let control_refusal = recent(after, "support-bot", Arm::Control, "refusal");
    let canary_tone = recent(after, "support-bot", Arm::Canary, "tone");
    let control_tone = recent(after, "support-bot", Arm::Control, "tone");
    match (canary_refusal, control_refusal, canary_tone, control_tone) {
        (Some(cr), Some(kr), Some(ct), Some(kt)) => visible &= cr > kr * 1.5 && ct < kt - 0.15,
        _ => visible = false,
    }
    let all_counted = applied + rejected == produced && cohort_total == applied;
    writeln!(
        out,
        "  result: drift {} in support-bot's canary; every message {}",
        if visible { "visible" } else { "NOT visible" },
        if all_counted {
            "accounted for"
        } else {
            "NOT accounted for"
        }
    )?;
    writeln!(
        out,
        "  verdicts (canary vs control, with evidence; self-baseline alarms):"
    )?;
    for d in &published.deployments {
        for m in &d.metrics {
            let v = &m.canary_vs_control;
            let pct_or_score = |x: f64| {
                if m.metric == "tone" {
                    format!("{x:+.3}")
                } else {
                    format!("{:+.2}pt", x * 100.0)
                }
            };
            write!(
                out,
                "    {:<14} {:<10} {:<12} n {}/{}",
                d.deployment,
                m.metric,
                state_word(m.state),
                v.n_canary,
                v.n_control
            )?;
            if let (Some(e), Some(lo), Some(hi)) = (v.estimate, v.ci_low, v.ci_high) {
                write!(
                    out,
                    "  diff {} [{}, {}]  p {:.2e}",
                    pct_or_score(e),
                    pct_or_score(lo),
                    pct_or_score(hi),
                    v.p_value.unwrap_or(1.0)
                )?;
            }
            if let Some(a) = &m.self_baseline {
                write!(
                    out,
                    "  self-baseline {} on {} (reference {:.3}, CUSUM {:.1} >= {:.1})",
                    state_word(a.state),
                    a.arm.map_or("-", Arm::as_str),
                    a.reference.unwrap_or(f64::NAN),
                    a.statistic,
                    a.threshold
                )?;
            }
            writeln!(out)?;
        }
    }
    let failed = |dep: &str| {
        published
            .deployments
            .iter()
            .find(|d| d.deployment == dep)
            .is_some_and(|d| {
                d.metrics
                    .iter()
                    .any(|m| m.metric == "refusal" && m.state == State::Fail)
            })
    };
    writeln!(
        out,
        "  detection: support-bot {}, search-assist {}",
        if failed("support-bot") {
            "FAILED on refusal"
        } else {
            "did NOT fail on refusal"
        },
        if failed("search-assist") {
            "FAILED on refusal"
        } else {
            "did not fail"
        }
    )?;
    out.flush()
}
