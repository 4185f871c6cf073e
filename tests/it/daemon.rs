//! The daemon in process on librdkafka's mock cluster (the fast tier): `daemon::run` with a
//! port-0 admin listener, fed a mixed stream, checked through its own admin API, its dead-letter
//! topic, its committed offsets and the totals it returns — the same checks as `kafka_e2e`
//! against tansu, without installing anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use driftd::config::Config;
use driftd::metrics::Metrics;
use driftd::pipeline::{Pipeline, Totals};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::stream::{self, applied, produce, read_dead_letters, rejected, Expected, PARTITIONS};
use super::support;

pub(crate) const TOPIC: &str = "events";
const DLQ: &str = "events.dlq";

/// The mock cluster with the event and dead-letter topics.
pub(crate) fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = support::mock_cluster();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    cluster.create_topic(DLQ, 1, 1).unwrap();
    cluster
}

/// A driftd running in this process, as `driftd run` runs it.
pub(crate) struct InProcess {
    pub(crate) admin: String,
    stop: driftd::signals::ControlHandle,
    task: tokio::task::JoinHandle<Result<Totals, driftd::daemon::DaemonError>>,
    _dir: Option<tempfile::TempDir>,
}

impl InProcess {
    pub(crate) async fn start(brokers: &str, group: &str) -> InProcess {
        Self::start_with(brokers, group, "").await
    }

    /// As [`InProcess::start`], with `containment` lines added to the config.
    pub(crate) async fn start_with(brokers: &str, group: &str, containment: &str) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Self::start_in(
            brokers,
            group,
            dir.path(),
            &format!("[containment]\n{containment}\n"),
        )
        .await;
        d._dir = Some(dir);
        d
    }

    /// A driftd whose state (containment and snapshots) lives in `state`, which outlives it:
    /// a later one started in the same place restores from it. `extra` is appended to the
    /// config (whole sections).
    pub(crate) async fn start_in(
        brokers: &str,
        group: &str,
        state: &std::path::Path,
        extra: &str,
    ) -> InProcess {
        let dir = state;
        // librdkafka's mock cluster keeps a closed member until its session times out (a plain
        // rdkafka consumer dropped and re-created waits the full 45 s default there too), so a
        // restart would wait that long for its partitions; 6 s keeps the restart test short.
        // Not for tansu: under load its heartbeats can take longer than that.
        let toml = format!(
            "{}\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\n{}\n",
            stream::config(brokers, TOPIC, DLQ, group),
            extra,
        );
        // `state_dir` goes into the `[containment]` table, whether `extra` has one or not.
        let toml = if toml.contains("[containment]\n") {
            toml.replacen(
                "[containment]\n",
                &format!(
                    "[containment]\nstate_dir = \"{}\"\n",
                    dir.join("state").display()
                ),
                1,
            )
        } else {
            format!(
                "{toml}\n[containment]\nstate_dir = \"{}\"\n",
                dir.join("state").display()
            )
        };
        let path = dir.join("driftd.toml");
        std::fs::write(&path, toml).unwrap();
        let config = Config::load(&path).expect("the test config is valid");
        let metrics = Arc::new(Metrics::new(&config));
        let pipeline = Pipeline::new(&config, metrics.clone(), true);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = format!("http://{}", listener.local_addr().unwrap());
        let (stop, controls) = driftd::signals::channel();
        let task = tokio::spawn(driftd::daemon::run(
            config, metrics, pipeline, listener, controls,
        ));
        InProcess {
            admin,
            stop,
            task,
            _dir: None,
        }
    }

    /// Ends the run abruptly, as a `kill -9` would for its state: no drain, no final commit,
    /// no final snapshot. (The containment and admin tasks it spawned are then asked to stop,
    /// so they do not outlive the test.)
    pub(crate) async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
        self.stop.shutdown();
    }

    pub(crate) async fn get(&self, path: &str) -> Option<String> {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.text().await.ok()
    }

    pub(crate) async fn metrics(&self) -> support::Metrics {
        support::Metrics::parse(&self.get("/metrics").await.unwrap_or_default())
    }

    /// Polls `/metrics` until `cond` holds; panics with the last scrape after `timeout`.
    pub(crate) async fn wait_metrics(
        &self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&support::Metrics) -> bool,
    ) {
        let start = tokio::time::Instant::now();
        loop {
            let m = self.metrics().await;
            if cond(&m) {
                return;
            }
            assert!(
                !self.task.is_finished(),
                "the daemon stopped while waiting for {what}"
            );
            if start.elapsed() > timeout {
                panic!("timed out waiting for {what}; last /metrics:\n{}", m.text);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks for a graceful stop and returns what the run applied and rejected.
    pub(crate) async fn stop(self) -> Totals {
        self.stop.shutdown();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the daemon stops within 30 s")
            .expect("the daemon task does not panic")
            .expect("a clean shutdown")
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_every_event_counted_once_bad_ones_dead_lettered_offsets_committed() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let mut expected = Expected::default();
    produce(&brokers, TOPIC, 6_000, 120, 30, 5, &mut expected).await;
    let bad = expected.bad();
    assert_eq!(bad, 150);
    let ends = {
        let b = brokers.clone();
        blocking(move || support::end_offsets(&b, TOPIC, PARTITIONS)).await
    };
    assert_eq!(ends.iter().sum::<i64>(), 6_150);

    let group = support::unique("inproc");
    let d = InProcess::start(&brokers, &group).await;
    d.wait_metrics(Duration::from_secs(60), "every event consumed", |m| {
        applied(m) == 6_000
            && rejected(m) == bad
            && m.sum("driftd_dead_letters_total", &[("outcome", "delivered")]) as u64 == bad
    })
    .await;
    assert!(d.get("/readyz").await.is_some(), "ready while consuming");
    // Regression: the gate answered only GET, so a Flagger webhook (a POST) always failed and
    // rolled every canary back.
    let flagger = reqwest::Client::new()
        .post(format!("{}/v1/gate/support-bot", d.admin))
        .json(&serde_json::json!({"name": "support-bot", "namespace": "prod", "phase": "Progressing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(flagger.status(), 200, "a Flagger webhook POST is answered");
    let body: serde_json::Value = flagger.json().await.unwrap();
    assert_eq!(body["open"], true);
    let m = d.metrics().await;
    assert_eq!(
        m.sum("driftd_events_misrouted_total", &[]),
        0.0,
        "every message is keyed by its deployment"
    );
    for (reason, n) in &expected.per_reason {
        assert_eq!(
            m.sum("driftd_events_rejected_total", &[("reason", reason)]) as u64,
            *n,
            "reason {reason}"
        );
    }
    d.wait_metrics(Duration::from_secs(30), "cohort counts published", |m| {
        m.sum("driftd_cohort_events_total", &[]) as u64 == 6_000
    })
    .await;
    let cohorts: serde_json::Value =
        serde_json::from_str(&d.get("/v1/cohorts").await.unwrap()).unwrap();
    let mut from_api: HashMap<(String, String), u64> = HashMap::new();
    for c in cohorts["cohorts"].as_array().unwrap() {
        let key = (
            c["deployment"].as_str().unwrap().to_string(),
            c["arm"].as_str().unwrap().to_string(),
        );
        *from_api.entry(key).or_default() += c["events_total"].as_u64().unwrap();
    }
    assert_eq!(from_api, expected.per_cohort, "each valid event once");

    let dead = {
        let b = brokers.clone();
        blocking(move || read_dead_letters(&b, DLQ, bad as usize)).await
    };
    let mut by_reason: HashMap<String, u64> = HashMap::new();
    for r in &dead {
        *by_reason.entry(r.reason.clone()).or_default() += 1;
        assert!(
            r.headers.contains("driftd-payload=original;")
                || r.headers.contains("driftd-payload=withheld;"),
            "every record says whether it carries the bytes: {}",
            r.headers
        );
        if r.reason == "pii_suspected" {
            assert!(r.headers.contains("driftd-payload=withheld;"));
            assert!(r.key.is_none(), "PII dead-letter records carry no key");
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            assert_eq!(v.as_object().unwrap().len(), 4, "only location and reason");
        }
        for s in &expected.pii {
            let hay = format!("{}{}", String::from_utf8_lossy(&r.payload), r.headers);
            assert!(!hay.contains(s.as_str()), "PII in the dead-letter topic");
        }
    }
    let want: HashMap<String, u64> = expected
        .per_reason
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    assert_eq!(by_reason, want, "every rejected event dead-lettered once");

    let totals = d.stop().await;
    assert_eq!(
        totals,
        Totals {
            applied: 6_000,
            rejected: bad
        }
    );
    let committed =
        blocking(move || support::committed_offsets(&brokers, &group, TOPIC, PARTITIONS)).await;
    assert_eq!(committed, ends, "committed = end offsets after the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_stop_part_way_and_restart_counts_each_event_once() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let group = support::unique("inproc-restart");
    let mut expected = Expected::default();
    produce(&brokers, TOPIC, 20_000, 200, 20, 21, &mut expected).await;

    let first = InProcess::start(&brokers, &group).await;
    first
        .wait_metrics(Duration::from_secs(60), "part of the stream applied", |m| {
            applied(m) >= 2_000
        })
        .await;
    let run1 = first.stop().await;
    produce(&brokers, TOPIC, 5_000, 50, 5, 22, &mut expected).await;
    let produced = expected.valid + expected.bad();
    assert!(
        run1.applied + run1.rejected < produced,
        "the first run stopped part-way"
    );

    let second = InProcess::start(&brokers, &group).await;
    let (valid, bad) = (expected.valid, expected.bad());
    second
        .wait_metrics(Duration::from_secs(60), "the rest consumed", |m| {
            run1.applied + applied(m) >= valid && run1.rejected + rejected(m) >= bad
        })
        .await;
    let ends = {
        let b = brokers.clone();
        blocking(move || support::end_offsets(&b, TOPIC, PARTITIONS)).await
    };
    let run2 = second.stop().await;
    assert_eq!(
        (run1.applied + run2.applied, run1.rejected + run2.rejected),
        (valid, bad),
        "each event applied or rejected exactly once across a graceful restart: {run1:?} then {run2:?}"
    );
    let committed =
        blocking(move || support::committed_offsets(&brokers, &group, TOPIC, PARTITIONS)).await;
    assert_eq!(committed, ends);
}

/// A producer that keys by something else, or not at all: every event is applied, and the ones
/// whose key is not their deployment are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_misrouted_and_keyless_events_are_applied_and_counted() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let mut sender = driftd::traffic::Sender::new(&brokers, TOPIC, &[]).expect("producer");
    let mut g = driftd::traffic::Generator::new(driftd::traffic::TrafficModel::default(), None);
    for i in 0..300u64 {
        let e = g.next_event(driftd::clock::wall_ms());
        let key: Option<&[u8]> = match i % 3 {
            0 => Some(e.key.as_bytes()),
            1 => Some(b"not-the-deployment"),
            _ => None,
        };
        sender.send(key, Some(&e.payload), None).await;
    }
    sender.finish().await.expect("every message acknowledged");
    let d = InProcess::start(&brokers, &support::unique("misrouted")).await;
    d.wait_metrics(Duration::from_secs(60), "every event applied", |m| {
        applied(m) == 300 && m.sum("driftd_events_misrouted_total", &[]) as u64 == 200
    })
    .await;
    assert_eq!(d.stop().await.applied, 300);
}

/// Issue 9, item 5: under cooperative-sticky assignment a second member takes some partitions
/// from the first by an incremental revoke; the first stays ready for the partitions it keeps,
/// and is never unready meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_revoke_leaves_the_member_ready_for_the_partitions_it_keeps() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let mut expected = Expected::default();
    produce(&brokers, TOPIC, 600, 0, 0, 3, &mut expected).await;
    let group = support::unique("coop");
    let cooperative = "\"partition.assignment.strategy\" = \"cooperative-sticky\"\n";
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = InProcess::start_in(&brokers, &group, dir1.path(), cooperative).await;
    first
        .wait_metrics(Duration::from_secs(60), "every event consumed", |m| {
            applied(m) == 600
        })
        .await;
    assert!(first.get("/readyz").await.is_some(), "ready alone");
    let watch = {
        let admin = first.admin.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut unready = 0;
            for _ in 0..150 {
                let status = client
                    .get(format!("{admin}/readyz"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                unready += u32::from(status != 200);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            unready
        })
    };
    let second = InProcess::start_in(&brokers, &group, dir2.path(), cooperative).await;
    let start = tokio::time::Instant::now();
    while second.get("/readyz").await.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the second member never got partitions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unready = watch.await.unwrap();
    println!("first member unready in {unready} of 150 probes while the second joined");
    assert_eq!(unready, 0, "the first member stayed ready for what it kept");
    second.stop().await;
    first.stop().await;
}
