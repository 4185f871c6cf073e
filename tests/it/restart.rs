//! Restart-safe state, in process on librdkafka's mock cluster: a driftd crashed part-way
//! (no drain, no final commit, no final snapshot) and started again on the same state
//! directory ends with every cohort counted exactly once and the canary-vs-control evidence of
//! an uninterrupted run — the crash resets nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use driftd::traffic::{Drift, DriftMetric, Generator, Sender, TrafficModel};
use serde_json::Value;

use super::daemon::{self, InProcess};
use super::support;

/// Small enough for the mock cluster, which drops a partition's oldest messages past a few
/// megabytes.
const EVENTS: u64 = 24_000;
const PERSIST: &str = "[persist]\ninterval = \"1s\"\n";

type Events = Vec<(String, Vec<u8>)>;

/// `support-bot`'s canary refuses more from a quarter of the stream on; three healthy others.
/// Returns the events (key, payload) and the valid events per deployment and arm.
fn generate() -> (Events, BTreeMap<(String, String), u64>) {
    let mut generator = Generator::new(
        TrafficModel {
            deployments: 4,
            drift: vec![Drift {
                metric: DriftMetric::Refusal,
                to: 0.12,
                at: 0.25,
                deployments: 1,
            }],
            seed: 23,
            ..TrafficModel::default()
        },
        Some(EVENTS),
    );
    let mut expected = BTreeMap::new();
    let start = driftd::clock::wall_ms() - EVENTS as i64;
    let events = (0..EVENTS)
        .map(|i| {
            let g = generator.next_event(start + i as i64);
            let e: Value = serde_json::from_slice(&g.payload).unwrap();
            *expected
                .entry((
                    e["deployment"].as_str().unwrap().to_string(),
                    e["arm"].as_str().unwrap().to_string(),
                ))
                .or_insert(0) += 1;
            (g.key, g.payload)
        })
        .collect();
    (events, expected)
}

async fn produce(brokers: &str, events: &[(String, Vec<u8>)]) {
    let mut sender = Sender::new(brokers, daemon::TOPIC, &[]).expect("producer");
    for (key, payload) in events {
        sender.send(Some(key.as_bytes()), Some(payload), None).await;
    }
    sender.finish().await.expect("every message acknowledged");
}

async fn counts(d: &InProcess) -> BTreeMap<(String, String), u64> {
    support::cohort_counts(&serde_json::from_str(&d.get("/v1/cohorts").await.unwrap()).unwrap())
}

async fn evidence(d: &InProcess) -> BTreeMap<(String, String), Value> {
    let verdicts: Value = serde_json::from_str(&d.get("/v1/verdicts").await.unwrap()).unwrap();
    support::evidence(verdicts["deployments"].as_array().unwrap())
}

async fn run_to_end(what: &str, d: &InProcess, expected: &BTreeMap<(String, String), u64>) {
    let start = tokio::time::Instant::now();
    while counts(d).await != *expected {
        if start.elapsed() > Duration::from_secs(90) {
            let m = d.metrics().await;
            panic!(
                "{what}: cohort counts after 90 s: {:?}, expected {expected:?}; metrics:\n{}",
                counts(d).await,
                m.text
                    .lines()
                    .filter(|l| l.starts_with("driftd_events")
                        || l.starts_with("driftd_snapshot")
                        || l.starts_with("driftd_consumer_lag")
                        || l.starts_with("driftd_offset"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_part_way_loses_no_event_counts_none_twice_and_keeps_the_evidence() {
    let cluster = daemon::cluster();
    let brokers = cluster.bootstrap_servers();
    let (events, expected) = generate();
    let half = events.len() / 2;
    produce(&brokers, &events[..half]).await;

    // Crashed part-way through the second half, after snapshots of the first, then started
    // again on the same state.
    let state = tempfile::tempdir().unwrap();
    let group = support::unique("crash");
    let first = InProcess::start_in(&brokers, &group, state.path(), PERSIST).await;
    first
        .wait_metrics(
            Duration::from_secs(60),
            "the first half applied and snapshotted",
            |m| {
                m.sum("driftd_events_total", &[("outcome", "applied")]) >= half as f64
                    && m.sum("driftd_snapshots_written_total", &[]) >= 1.0
            },
        )
        .await;
    produce(&brokers, &events[half..]).await;
    first
        .wait_metrics(
            Duration::from_secs(60),
            "part of the second half applied",
            |m| m.sum("driftd_events_total", &[("outcome", "applied")]) > half as f64,
        )
        .await;
    let applied_before = first
        .metrics()
        .await
        .sum("driftd_events_total", &[("outcome", "applied")]);
    first.crash().await;

    // The reference: one uninterrupted run.
    let clean = tempfile::tempdir().unwrap();
    let whole =
        InProcess::start_in(&brokers, &support::unique("whole"), clean.path(), PERSIST).await;
    run_to_end("uninterrupted", &whole, &expected).await;
    let want = evidence(&whole).await;
    assert_eq!(
        want[&("support-bot".to_string(), "refusal".to_string())]["state"],
        "fail",
        "the drifting canary fails: {want:?}"
    );
    whole.stop().await;

    let second = InProcess::start_in(&brokers, &group, state.path(), PERSIST).await;
    run_to_end("after the crash", &second, &expected).await;
    let m = second.metrics().await;
    assert!(
        m.sum("driftd_snapshot_restores_total", &[]) >= 1.0,
        "state restored from a snapshot:\n{}",
        m.text
    );
    let applied_after = m.sum("driftd_events_total", &[("outcome", "applied")]);
    println!(
        "crash after {applied_before} applied events; the restart applied {applied_after} and skipped {} already in its restored state",
        m.sum("driftd_events_skipped_total", &[])
    );
    assert!(
        applied_after < EVENTS as f64,
        "the restart did not start from scratch ({applied_after} applied)"
    );
    assert_eq!(
        evidence(&second).await,
        want,
        "the evidence of an uninterrupted run"
    );
    second.stop().await;
}

/// A snapshot directory that cannot be written (here: its parent is a regular file, which
/// fails like a read-only or full disk does): counted, logged, `/readyz` 503 — and driftd goes
/// on consuming, and a contained deployment's gate stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_that_cannot_be_written_make_driftd_unready_but_it_keeps_consuming_and_containing(
) {
    let cluster = daemon::cluster();
    let brokers = cluster.bootstrap_servers();
    let (events, _) = generate();
    produce(&brokers, &events[..2_000]).await;
    let state = tempfile::tempdir().unwrap();
    let blocker = state.path().join("not-a-directory");
    std::fs::write(&blocker, b"x").unwrap();
    let token = state.path().join("token");
    std::fs::write(&token, "admin-token-for-tests-0099\n").unwrap();
    let d = InProcess::start_in(
        &brokers,
        &support::unique("nodisk"),
        state.path(),
        &format!(
            "[persist]\ninterval = \"1s\"\ndir = \"{}\"\n\n[containment]\nadmin_token = {{ file = \"{}\" }}\n",
            blocker.join("snapshots").display(),
            token.display()
        ),
    )
    .await;
    d.wait_metrics(Duration::from_secs(60), "a failed snapshot write", |m| {
        m.sum("driftd_snapshot_failures_total", &[("reason", "write")]) >= 1.0
            && m.sum("driftd_snapshot_write_failing", &[]) == 1.0
    })
    .await;
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("{}/readyz", d.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready
        .text()
        .await
        .unwrap()
        .contains("snapshots cannot be written"));

    let contained = client
        .post(format!("{}/v1/deployments/support-bot/contain", d.admin))
        .bearer_auth("admin-token-for-tests-0099")
        .json(&serde_json::json!({"operator": "it", "reason": "disk test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(contained.status(), 200);
    produce(&brokers, &events[2_000..4_000]).await;
    d.wait_metrics(Duration::from_secs(60), "consuming goes on", |m| {
        m.sum("driftd_events_total", &[("outcome", "applied")]) >= 4_000.0
    })
    .await;
    let gate = client
        .get(format!("{}/v1/gate/support-bot", d.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(
        gate.status(),
        503,
        "the gate of a contained deployment stays closed"
    );
    d.stop().await;
}
