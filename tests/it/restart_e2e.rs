//! Restart-safe state against the real broker (tansu): the `driftd` binary is killed with
//! SIGKILL at random points while it consumes a stream (several deployments, both arms, some
//! malformed), and started again on the same state directory each time. At the end every
//! cohort's count equals an offline count of what was produced (0 lost, 0 double-counted),
//! every malformed event was dead-lettered, and the canary-vs-control evidence equals that of
//! one uninterrupted pass of the same events through the pipeline (what `driftd replay` runs).
//!
//! Size: `DRIFTD_KILL_EVENTS` events and `DRIFTD_KILLS` kills, default 100,000 and 5 (the test
//! command's time budget: each restart waits for tansu's group coordinator); the figures are
//! printed. The consumers use static group membership (`group.instance.id`): tansu keeps a
//! killed member in the group, so a restart under a new member id would get no partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftd::config::Config;
use driftd::metrics::Metrics;
use driftd::pipeline::Pipeline;
use driftd::traffic::{Drift, DriftMetric, Generator, TrafficModel};
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::evidence_restart_e2e::produce;
use super::stream::{self, read_dead_letters};
use super::support::{self, Driftd};

const PARTITIONS: i32 = 3;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Stream {
    /// (key, payload), in production order.
    messages: Vec<(String, Vec<u8>)>,
    per_cohort: BTreeMap<(String, String), u64>,
    malformed: u64,
}

/// Six deployments; `support-bot`'s canary refuses more from 30% of the stream on; every
/// 1,000th message is not JSON.
fn generate(events: u64) -> Stream {
    let mut g = Generator::new(
        TrafficModel {
            deployments: 6,
            drift: vec![Drift {
                metric: DriftMetric::Refusal,
                to: 0.12,
                at: 0.3,
                deployments: 1,
            }],
            seed: 41,
            ..TrafficModel::default()
        },
        Some(events),
    );
    let start = driftd::clock::wall_ms() - events as i64 / 10;
    let mut s = Stream {
        messages: Vec::with_capacity(events as usize),
        per_cohort: BTreeMap::new(),
        malformed: 0,
    };
    for i in 0..events {
        let e = g.next_event(start + i as i64 / 10);
        if i % 1_000 == 999 {
            s.malformed += 1;
            s.messages
                .push((e.key, b"{\"schema_version\": 1, \"event_id\": ".to_vec()));
            continue;
        }
        s.messages.push((e.key, e.payload));
    }
    s.per_cohort = per_cohort(&s.messages);
    s
}

/// Events per (deployment, arm) of `messages`, the malformed ones left out.
fn per_cohort(messages: &[(String, Vec<u8>)]) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for (_, payload) in messages {
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            continue;
        };
        *counts
            .entry((
                v["deployment"].as_str().unwrap().to_string(),
                v["arm"].as_str().unwrap().to_string(),
            ))
            .or_insert(0) += 1;
    }
    counts
}

/// The canary-vs-control evidence of one uninterrupted pass of `messages` through the pipeline,
/// in production order, read through JSON text as driftd's API serves it.
fn one_pass(messages: &[(String, Vec<u8>)]) -> BTreeMap<(String, String), Value> {
    let config = Config::default();
    let (mut reference, _) = Pipeline::new(&config, Arc::new(Metrics::new(&config)), false);
    for (_, payload) in messages {
        reference.process(0, Some(payload));
    }
    support::evidence(
        &reference
            .publish()
            .deployments
            .iter()
            .map(|d| serde_json::from_str(&serde_json::to_string(d).unwrap()).unwrap())
            .collect::<Vec<Value>>(),
    )
}

/// driftd on `topic` as one static group member, its state under `state`, snapshotting every
/// 2 s.
fn config(brokers: &str, topic: &str, dlq: &str, group: &str, state: &Path) -> String {
    // A killed member stays in the group until its session times out (in tansu: for good), so
    // the restart rejoins as the same static member. A session that does time out is worse in
    // tansu 0.6.0: the rejoining static member waits for a leader that is its own old member id,
    // for good (seen in CI under load, and here after SIGSTOP). So the session is long: under
    // load tansu answers heartbeats late (10 s lost the assignment over and over, 30 s once).
    format!(
        "{}\n[kafka.properties]\n\"session.timeout.ms\" = \"180000\"\n\"group.instance.id\" = \"{group}-member\"\n\n[containment]\nstate_dir = \"{}\"\n\n[persist]\ninterval = \"2s\"\n",
        stream::config(brokers, topic, dlq, group),
        state.display()
    )
}

/// The broker (held for the test), and a new event topic of [`PARTITIONS`] partitions with its
/// dead-letter topic and a new group, named after `prefix`.
struct Setup {
    broker: support::Broker,
    topic: String,
    dlq: String,
    group: String,
}

impl Setup {
    fn new(prefix: &str) -> Setup {
        let broker = support::broker();
        let topic = support::unique(prefix);
        let dlq = format!("{topic}.dlq");
        let group = support::unique(&format!("{prefix}-group"));
        support::create_topics(&broker.addr, &[(&topic, PARTITIONS), (&dlq, 1)]);
        Setup {
            broker,
            topic,
            dlq,
            group,
        }
    }
}

fn counts(d: &Driftd) -> Option<BTreeMap<(String, String), u64>> {
    let cohorts: Value = serde_json::from_str(&d.get("/v1/cohorts")?).ok()?;
    Some(support::cohort_counts(&cohorts))
}

#[test]
fn kill_9_while_consuming_loses_no_event_counts_none_twice_and_keeps_the_evidence() {
    let events = env_or("DRIFTD_KILL_EVENTS", 100_000);
    let kills = env_or("DRIFTD_KILLS", 5);
    let Setup {
        broker,
        topic,
        dlq,
        group,
    } = Setup::new("it-kill");
    let brokers = broker.addr.clone();
    let stream = generate(events);
    let started = Instant::now();
    produce(&brokers, &topic, &stream.messages);
    println!(
        "produced {events} messages ({} malformed) in {:.1} s",
        stream.malformed,
        started.elapsed().as_secs_f64()
    );

    let want = one_pass(&stream.messages);
    assert_eq!(
        want[&("support-bot".to_string(), "refusal".to_string())]["state"],
        "fail",
        "the drifting canary fails"
    );

    let state = tempfile::tempdir().unwrap();
    let toml = config(&brokers, &topic, &dlq, &group, &state.path().join("state"));
    let total: u64 = stream.per_cohort.values().sum();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let consumed = Instant::now();
    // The conditions read the whole cohort table and `/metrics` of a debug build.
    let every = Duration::from_millis(250);
    for k in 0..kills {
        let d = Driftd::start(&toml);
        let start = Instant::now();
        // Kill at a random point of the k-th slice of the stream.
        let target = total * (k + 1) / (kills + 1) + rng.random_range(0..total / (kills + 1) / 2);
        let mut resumed = None;
        d.wait_until_every(
            Duration::from_secs(600),
            every,
            "progress before the kill",
            || {
                let n: u64 = counts(&d).map(|c| c.values().sum()).unwrap_or(0);
                let applied = d.metrics().sum("driftd_events_total", &[]);
                if resumed.is_none() && applied > 0.0 {
                    resumed = Some(start.elapsed());
                }
                n >= target
            },
        );
        let m = d.metrics();
        println!(
            "run {}: restored {} partitions, consuming again {:.1} s after start, skipped {} already restored, killed at {} of {total}",
            k + 1,
            m.sum("driftd_snapshot_restores_total", &[]),
            resumed.unwrap_or_default().as_secs_f64(),
            m.sum("driftd_events_skipped_total", &[]),
            counts(&d).map(|c| c.values().sum::<u64>()).unwrap_or(0)
        );
        for line in d.log_text().lines().filter(|l| l.contains("snapshot")) {
            println!("  {}", &line[..line.len().min(300)]);
        }
        // SIGKILL: Drop kills the child without a signal it could handle.
        drop(d);
    }
    let d = Driftd::start(&toml);
    d.wait_until_every(
        Duration::from_secs(600),
        every,
        "every event counted",
        || counts(&d).is_some_and(|c| c == stream.per_cohort),
    );
    println!(
        "{events} events, {kills} kills: every cohort's count exact after {:.1} s of consuming",
        consumed.elapsed().as_secs_f64()
    );
    let verdicts: Value = serde_json::from_str(&d.get("/v1/verdicts").unwrap()).unwrap();
    let got = support::evidence(verdicts["deployments"].as_array().unwrap());
    support::assert_same_evidence(&want, &got);
    drop(d);

    // Every malformed message dead-lettered at least once (a crash may repeat some).
    let records = support::end_offsets(&brokers, &dlq, 1)[0] as usize;
    let dead = read_dead_letters(&brokers, &dlq, records);
    let offsets: BTreeSet<String> = dead
        .iter()
        .filter_map(|r| {
            let p = r
                .headers
                .split("driftd-source-partition=")
                .nth(1)?
                .split(';')
                .next()?;
            let o = r
                .headers
                .split("driftd-source-offset=")
                .nth(1)?
                .split(';')
                .next()?;
            Some(format!("{p}/{o}"))
        })
        .collect();
    assert_eq!(
        offsets.len() as u64,
        stream.malformed,
        "each malformed message dead-lettered ({} records)",
        dead.len()
    );
}

/// An operator restores `state_dir` from a backup older than what the group committed since:
/// the restored snapshots end before the committed offsets. The consumer is sent to each
/// snapshot's offset and reads the messages in between again, so every count ends exact and
/// the evidence equals one pass; without that the counts stay at the backup's.
#[test]
fn a_state_dir_restored_from_an_older_backup_reads_again_what_it_does_not_hold() {
    let events = env_or("DRIFTD_BACKUP_EVENTS", 20_000);
    let Setup {
        broker,
        topic,
        dlq,
        group,
    } = Setup::new("it-backup");
    let brokers = broker.addr.clone();
    let stream = generate(events);
    let (first, second) = stream.messages.split_at(stream.messages.len() / 2);
    let state = tempfile::tempdir().unwrap();
    let toml = config(&brokers, &topic, &dlq, &group, &state.path().join("state"));
    let snapshots = state.path().join("state").join("snapshots");
    let backup = state.path().join("backup");
    let every = Duration::from_millis(250);
    let run_until = |want: &BTreeMap<(String, String), u64>, what: &str| {
        let mut d = Driftd::start(&toml);
        d.wait_until_every(Duration::from_secs(300), every, what, || {
            counts(&d).is_some_and(|c| &c == want)
        });
        d.sigterm();
        assert!(
            d.wait_exit(Duration::from_secs(60)).success(),
            "{what}: clean exit"
        );
    };

    produce(&brokers, &topic, first);
    run_until(&per_cohort(first), "the first half counted");
    copy_dir(&snapshots, &backup);
    produce(&brokers, &topic, second);
    run_until(&stream.per_cohort, "the second half counted");
    let committed = support::committed_offsets(&brokers, &group, &topic, PARTITIONS);
    std::fs::remove_dir_all(&snapshots).unwrap();
    copy_dir(&backup, &snapshots);

    let mut d = Driftd::start(&toml);
    d.wait_until_every(
        Duration::from_secs(300),
        every,
        "every event counted after the backup was restored",
        || counts(&d).is_some_and(|c| c == stream.per_cohort),
    );
    // The scenario: restored snapshots that end before the group's committed offsets.
    let restored: BTreeMap<usize, i64> = d
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"] == "state restored from snapshot; consumption resumes at next_offset"
        })
        .map(|v| {
            (
                v["partition"].as_u64().unwrap() as usize,
                v["next_offset"].as_i64().unwrap(),
            )
        })
        .collect();
    let behind = restored.iter().filter(|(&p, &n)| n < committed[p]).count();
    println!(
        "backup restored under commits {committed:?}: snapshots at {restored:?}, {behind} partitions behind, every count exact"
    );
    assert!(behind > 0, "the backup's snapshots end before the commits");
    let verdicts: Value = serde_json::from_str(&d.get("/v1/verdicts").unwrap()).unwrap();
    let got = support::evidence(verdicts["deployments"].as_array().unwrap());
    support::assert_same_evidence(&one_pass(&stream.messages), &got);
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
