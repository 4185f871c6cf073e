//! Evidence survives a kill -9, against the real broker (tansu): one deployment's canary
//! refuses more from its first event on; the `driftd` binary is killed with SIGKILL after it
//! has applied part of the stream (some of it after its last snapshot) but before the verdict
//! fails, and started again on the same state directory. The canary-vs-control verdict then
//! fails at exactly the per-arm event counts of one uninterrupted pass of the same events
//! through the pipeline (what `driftd replay` runs): nothing of the evidence was lost or counted
//! twice. Also home of the drifting stream the containment-restart test uses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use driftd::config::Config;
use driftd::detect::{Change, Source, VerdictState};
use driftd::metrics::Metrics;
use driftd::pipeline::Pipeline;
use driftd::traffic::{Drift, DriftMetric, Generator, Sender, TrafficModel};
use serde_json::Value;

use super::stream;
use super::support::{self, Driftd};

/// One deployment named `deployment` whose canary refuses at `to` (instead of 5%) from its
/// first event on: (key, payload) in production order. Ten events per millisecond of event
/// time, ending now.
pub fn drifting(deployment: &str, events: u64, to: f64, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut g = Generator::new(
        TrafficModel {
            deployments: 1,
            drift: vec![Drift {
                metric: DriftMetric::Refusal,
                to,
                at: 0.0,
                deployments: 1,
            }],
            seed,
            ..TrafficModel::default()
        },
        Some(events),
    );
    let start = driftd::clock::wall_ms() - events as i64 / 10;
    (0..events)
        .map(|i| {
            let e = g.next_event(start + i as i64 / 10);
            // A name of this run's own: no alert or state of another test or run shares it.
            let mut v: Value = serde_json::from_slice(&e.payload).unwrap();
            v["deployment"] = deployment.into();
            (deployment.to_string(), serde_json::to_vec(&v).unwrap())
        })
        .collect()
}

/// Produces `messages` to `topic`, every one acknowledged.
pub fn produce(brokers: &str, topic: &str, messages: &[(String, Vec<u8>)]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut sender = Sender::new(brokers, topic, &[]).expect("producer");
        for (key, payload) in messages {
            sender.send(Some(key.as_bytes()), Some(payload), None).await;
        }
        sender.finish().await.expect("every message acknowledged");
    });
}

/// The first `fail` of the refusal metric's canary-vs-control test in one uninterrupted pass
/// through the pipeline: (index of the message that made it, n_canary, n_control), and the
/// evidence at the end of the stream.
pub fn reference(messages: &[(String, Vec<u8>)]) -> (Option<(usize, u64, u64)>, Vec<Value>) {
    let (mut p, _) = Pipeline::new(
        &Config::default(),
        Arc::new(Metrics::new(&Config::default())),
        false,
    );
    p.collect_changes(true);
    let mut fail = None;
    for (i, (_, payload)) in messages.iter().enumerate() {
        p.process(0, Some(payload));
        for change in p.take_changes() {
            if let Change::Verdict(v) = change {
                if fail.is_none()
                    && v.metric == "refusal"
                    && v.source == Source::CanaryVsControl
                    && v.state == VerdictState::Fail
                {
                    fail = Some((i, v.n_canary, v.n_control));
                }
            }
        }
    }
    // Through JSON text, as driftd's API serves it, so both sides read floats the same way.
    let end = p
        .publish()
        .deployments
        .iter()
        .map(|d| serde_json::from_str(&serde_json::to_string(d).unwrap()).unwrap())
        .collect();
    (fail, end)
}

/// The "verdict changed" log lines of the refusal metric's canary-vs-control test at `fail`.
pub fn logged_fails(d: &Driftd) -> Vec<Value> {
    d.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"] == "verdict changed"
                && v["metric"] == "refusal"
                && v["source"] == "canary_vs_control"
                && v["state"] == "fail"
        })
        .collect()
}

/// Events applied so far, by `/v1/cohorts`.
pub fn applied(d: &Driftd) -> u64 {
    d.get("/v1/cohorts")
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|c| support::cohort_counts(&c).values().sum())
        .unwrap_or(0)
}

#[test]
fn a_canary_killed_before_it_fails_fails_at_the_same_per_arm_counts_after_the_restart() {
    let broker = support::broker();
    let brokers = broker.addr.clone();
    let topic = support::unique("it-evidence");
    let dlq = format!("{topic}.dlq");
    let group = support::unique("it-evidence-group");
    let deployment = support::unique("evidence-bot");
    support::create_topics(&brokers, &[(&topic, 1), (&dlq, 1)]);
    let messages = drifting(&deployment, 12_000, 0.09, 5);
    let (fail, want_end) = reference(&messages);
    let (at, want_canary, want_control) =
        fail.expect("the drifting canary fails in an uninterrupted pass");
    // Killed well before the fail: phase A is in a snapshot, phase B is applied after it.
    let (a, b) = (at * 2 / 5, at / 5);
    assert!(a > 0 && b > 0, "the fail comes after {at} events");
    let started = Instant::now();

    let state = tempfile::tempdir().unwrap();
    // Static membership, as in restart_e2e.rs: tansu keeps a killed member in the group, and a
    // static member whose session timed out never gets its partitions back.
    let toml = format!(
        "{}\n[kafka.properties]\n\"session.timeout.ms\" = \"180000\"\n\"group.instance.id\" = \"driftd-evidence-test\"\n\n[containment]\nstate_dir = \"{}\"\n\n[persist]\ninterval = \"3s\"\n",
        stream::config(&brokers, &topic, &dlq, &group),
        state.path().join("state").display()
    );
    produce(&brokers, &topic, &messages[..a]);
    let d = Driftd::start(&toml);
    let every = Duration::from_millis(100);
    d.wait_until_every(Duration::from_secs(60), every, "phase A applied", || {
        applied(&d) == a as u64
    });
    // The committed offset is never ahead of a snapshot: once it reaches A, one holds phase A.
    d.wait_until_every(
        Duration::from_secs(60),
        every,
        "phase A committed (so snapshotted)",
        || support::committed_offsets(&brokers, &group, &topic, 1)[0] == a as i64,
    );
    produce(&brokers, &topic, &messages[a..a + b]);
    d.wait_until_every(Duration::from_secs(60), every, "phase B applied", || {
        applied(&d) == (a + b) as u64
    });
    let snapshots = d.metrics().sum("driftd_snapshots_written_total", &[]);
    // SIGKILL: Drop kills the child without a signal it could handle.
    let before = logged_fails(&d);
    drop(d);
    assert!(before.is_empty(), "killed before the fail: {before:?}");
    println!(
        "killed after {} of {} events ({snapshots} snapshots written; {} applied since the one that holds {a})",
        a + b,
        messages.len(),
        b
    );

    produce(&brokers, &topic, &messages[a + b..]);
    let d = Driftd::start(&toml);
    d.wait_until_every(
        Duration::from_secs(60),
        every,
        "the verdict to fail after the restart",
        || !logged_fails(&d).is_empty(),
    );
    d.wait_until_every(
        Duration::from_secs(60),
        every,
        "every event applied",
        || applied(&d) == messages.len() as u64,
    );
    let got = logged_fails(&d);
    let m = d.metrics();
    println!(
        "fail at n_canary/n_control: reference {want_canary}/{want_control} (after {} events), after the kill -9 and restart {}/{}; restored {} partition(s), re-applied {} events after the snapshot; {:.1} s",
        at + 1,
        got[0]["n_canary"],
        got[0]["n_control"],
        m.sum("driftd_snapshot_restores_total", &[]),
        m.sum("driftd_events_total", &[]) as i64 - (messages.len() - a - b) as i64,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(got.len(), 1, "one fail: {got:?}");
    assert_eq!(
        (got[0]["n_canary"].as_u64(), got[0]["n_control"].as_u64()),
        (Some(want_canary), Some(want_control)),
        "the fail comes at the per-arm counts of an uninterrupted pass"
    );
    assert_eq!(
        m.sum("driftd_snapshot_restores_total", &[]),
        1.0,
        "the partition's state was restored from its snapshot, not rebuilt from the start"
    );
    let verdicts: Value = serde_json::from_str(&d.get("/v1/verdicts").unwrap()).unwrap();
    let got_end = support::evidence(verdicts["deployments"].as_array().unwrap());
    assert_eq!(
        got_end,
        support::evidence(&want_end),
        "the evidence at the end of the stream equals that of an uninterrupted pass"
    );
    drop(broker);
}
