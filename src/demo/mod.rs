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
//! Owns the demo scenario and its terminal output only. This file is the orchestration (mock
//! cluster, daemon, producer, the live loop); `setup` writes the run's config and files,
//! `receiver` is the local webhook receiver, `render` formats the live view and the summary
//! (no I/O but the writer it is given), `release` shows what containment did and exercises the
//! release.

mod receiver;
mod release;
mod render;
mod setup;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;

use crate::admin;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Published};
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
    #[error("cannot start the in-process kafka mock cluster")]
    Mock(#[from] rdkafka::error::KafkaError),
    /// The admin port is taken.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// The producer failed.
    #[error(transparent)]
    Traffic(#[from] crate::traffic::TrafficError),
    /// The daemon failed.
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    /// Writing to the terminal failed.
    #[error("cannot write to stdout")]
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
    let files = setup::DemoFiles::create()?;
    let token = std::fs::read_to_string(&files.token)?.trim().to_string();
    let (receiver_addr, received) = receiver::start(files.hook_key.clone()).await?;
    let config = setup::demo_config(
        cluster.bootstrap_servers(),
        admin_addr,
        &files,
        receiver_addr,
    );
    let metrics = Arc::new(Metrics::new(&config));
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
    writeln!(
        out,
        "  on-call page: http://{admin_addr}/ (open it in a browser while the demo runs)"
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
        render::live(
            out,
            &snapshot.cohorts,
            elapsed,
            opts.duration,
            consumed,
            metrics.events_rejected.get(),
        )?;
        let gates = gate_words(&client, admin_addr, &snapshot).await;
        render::verdicts(out, &snapshot, &gates)?;
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
    render::summary(
        out,
        before.as_ref().map(|p| &p.cohorts),
        &after,
        &metrics,
        produced.unwrap_or(count),
    )?;
    let admin = format!("http://{admin_addr}");
    release::show_containment_and_release(out, &client, &admin, &files, &token, &received).await?;
    handle.shutdown();
    daemon.await.expect("daemon task does not panic")?;
    Ok(())
}

/// The gate of each published deployment as the live view shows it: `CONTAINED` when it answers
/// 503, `open` otherwise, `?` when the admin server does not answer.
async fn gate_words(
    client: &reqwest::Client,
    admin: SocketAddr,
    p: &Published,
) -> Vec<&'static str> {
    let mut words = Vec::with_capacity(p.deployments.len());
    for d in &p.deployments {
        words.push(
            match client
                .get(format!("http://{admin}/v1/gate/{}", d.deployment))
                .send()
                .await
            {
                Ok(r) if r.status().as_u16() == 503 => "CONTAINED",
                Ok(_) => "open",
                Err(_) => "?",
            },
        );
    }
    words
}

/// Produces `count` events at `rate`, every `BAD_EVERY`-th one malformed or carrying personal
/// data; returns how many were acknowledged.
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
