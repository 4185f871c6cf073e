//! Issue 9, item 1, against the real broker (tansu): with `persist.topic` set, a partition's
//! state follows the partition to whichever replica of the consumer group is assigned it — on a
//! replica joining part way, and on one being killed with its `state_dir` gone — with every
//! cohort's count equal to an offline count of the topic (0 lost, 0 double). Prints the
//! handover time and the bytes produced to the state topic per 1,000 events.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use driftd::traffic::{Generator, Sender, TrafficModel};

use super::support::{self, cohort_counts, Driftd};

/// Partitions of the event topic.
const PARTITIONS: i32 = 6;

type Counts = BTreeMap<(String, String), u64>;

/// Produces `n` generated events over `deployments` deployments, each deployment's events on
/// one partition (keyed by deployment, as the contract asks), and adds them to `expected`.
async fn produce(
    brokers: &str,
    topic: &str,
    n: u64,
    deployments: usize,
    seed: u64,
    expected: &mut Counts,
) {
    let mut sender = Sender::new(brokers, topic, &[]).expect("producer");
    let mut generator = Generator::new(
        TrafficModel {
            deployments,
            seed,
            ..TrafficModel::default()
        },
        None,
    );
    for _ in 0..n {
        let g = generator.next_event(driftd::clock::wall_ms());
        let e: serde_json::Value = serde_json::from_slice(&g.payload).unwrap();
        let deployment = e["deployment"].as_str().unwrap().to_string();
        let partition = deployment.bytes().map(u32::from).sum::<u32>() as i32 % PARTITIONS;
        *expected
            .entry((deployment, e["arm"].as_str().unwrap().to_string()))
            .or_default() += 1;
        sender
            .send(Some(g.key.as_bytes()), Some(&g.payload), Some(partition))
            .await;
    }
    sender.finish().await.expect("every message acknowledged");
}

fn config(brokers: &str, topic: &str, group: &str, state_topic: &str, instance: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
group_id = "{group}"
stats_interval = "500ms"
commit_interval = "500ms"
start_from = "earliest"

[kafka.properties]
"client.id" = "{instance}"
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[ingest]
publish_interval = "200ms"

[persist]
interval = "1s"
topic = "{state_topic}"
topic_partitions = 3

[log]
format = "json"
level = "info"
"#
    )
}

fn counts(d: &Driftd) -> Counts {
    d.get("/v1/cohorts")
        .map(|b| cohort_counts(&serde_json::from_str(&b).unwrap()))
        .unwrap_or_default()
}

/// The cohorts of both replicas together; `None` while a cohort is on both (two owners: only
/// ever seen between one replica's revoke and its next publication).
fn union(a: &Counts, b: &Counts) -> Option<Counts> {
    let mut out = a.clone();
    for (k, v) in b {
        if out.insert(k.clone(), *v).is_some() {
            return None;
        }
    }
    Some(out)
}

fn bytes_produced(ds: &[&Driftd]) -> f64 {
    ds.iter()
        .map(|d| d.metrics().sum("driftd_state_topic_bytes_total", &[]))
        .sum()
}

#[test]
fn a_second_replica_joining_part_way_continues_each_moved_cohort_at_its_count() {
    let broker = support::broker();
    let brokers = broker.addr.clone();
    let topic = support::unique("it-state");
    let state_topic = format!("{topic}.state");
    let group = support::unique("it-state-group");
    support::create_topics(&brokers, &[(&topic, PARTITIONS)]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut expected = Counts::new();
    rt.block_on(produce(&brokers, &topic, 6_000, 24, 81, &mut expected));

    let a = Driftd::start(&config(&brokers, &topic, &group, &state_topic, "a"));
    a.wait_until(Duration::from_secs(90), "replica a caught up", || {
        counts(&a) == expected
    });
    // Let a snapshot of the final state reach the topic.
    std::thread::sleep(Duration::from_secs(2));
    let before = counts(&a);

    let joined = Instant::now();
    let b = Driftd::start(&config(&brokers, &topic, &group, &state_topic, "b"));
    let mut revoked_at = None;
    b.wait_until(
        Duration::from_secs(90),
        "partitions moved to replica b, state with them",
        || {
            if revoked_at.is_none() && a.log_text().contains("partitions revoked") {
                revoked_at = Some(Instant::now());
            }
            let (ca, cb) = (counts(&a), counts(&b));
            !cb.is_empty() && union(&ca, &cb).as_ref() == Some(&before)
        },
    );
    let caught_up = Instant::now();
    let moved = counts(&b);
    // Each moved cohort continues at the count it had on the old owner, not at 0.
    for (k, n) in &moved {
        assert_eq!(Some(n), before.get(k), "cohort {k:?} on the new owner");
    }
    assert!(
        b.metrics()
            .sum("driftd_state_topic_restores_total", &[("from", "topic")])
            >= 1.0,
        "{}",
        b.log_text()
    );
    println!(
        "handover: {} of {} cohorts moved; join to caught up {:.1} s, revoke to caught up {:.1} s",
        moved.len(),
        before.len(),
        (caught_up - joined).as_secs_f64(),
        revoked_at.map_or(f64::NAN, |r| (caught_up - r).as_secs_f64()),
    );

    // Events keep flowing to both replicas.
    rt.block_on(produce(&brokers, &topic, 6_000, 24, 82, &mut expected));
    b.wait_until(Duration::from_secs(90), "both replicas caught up", || {
        union(&counts(&a), &counts(&b)).as_ref() == Some(&expected)
    });
    let events: u64 = expected.values().sum();
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "state topic: {:.0} bytes per 1,000 events ({} events, persist.interval 1s)",
        bytes_produced(&[&a, &b]) * 1_000.0 / events as f64,
        events
    );
    assert!(!counts(&a).is_empty() && !counts(&b).is_empty());
}

/// Tansu 0.6.0 never expires a killed member's session, so the survivor of a kill -9 is not
/// handed the dead member's partitions there (real Kafka does, after `session.timeout.ms`).
/// What the state topic must make possible is tested the way a StatefulSet reschedules a pod
/// onto a node without its disk: a replacement under the killed member's `group.instance.id`
/// and with an empty `state_dir` takes its partitions and restores them from the topic.
#[test]
fn a_killed_replica_without_its_state_dir_is_taken_over_from_the_state_topic() {
    let broker = support::broker();
    let brokers = broker.addr.clone();
    let topic = support::unique("it-state-kill");
    let state_topic = format!("{topic}.state");
    let group = support::unique("it-state-kill-group");
    support::create_topics(&brokers, &[(&topic, PARTITIONS)]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut expected = Counts::new();
    rt.block_on(produce(&brokers, &topic, 6_000, 24, 91, &mut expected));
    let static_member = |id: &str| {
        config(&brokers, &topic, &group, &state_topic, id)
            .replace("\"client.id\"", "\"group.instance.id\"")
            .replace(
                "\"session.timeout.ms\" = \"6000\"",
                "\"session.timeout.ms\" = \"180000\"",
            )
    };

    let a = Driftd::start(&static_member("a"));
    let b = Driftd::start(&static_member("b"));
    b.wait_until(
        Duration::from_secs(90),
        "both replicas consumed everything",
        || {
            let (ca, cb) = (counts(&a), counts(&b));
            !ca.is_empty() && !cb.is_empty() && union(&ca, &cb).as_ref() == Some(&expected)
        },
    );
    // The final state in the topic, then kill -9: dropping the handle kills the process and
    // deletes its folder, state_dir included.
    std::thread::sleep(Duration::from_secs(3));
    let held_by_a = counts(&a);
    assert!(!held_by_a.is_empty());
    drop(a);
    let killed = Instant::now();
    rt.block_on(produce(&brokers, &topic, 3_000, 24, 92, &mut expected));
    let a2 = Driftd::start(&static_member("a"));
    b.wait_until(
        Duration::from_secs(120),
        "the replacement took over from the state topic",
        || union(&counts(&a2), &counts(&b)).as_ref() == Some(&expected),
    );
    println!(
        "kill -9 takeover: {} cohorts restored from the state topic by a replacement with an empty state_dir, caught up {:.1} s after the kill",
        held_by_a.len(),
        killed.elapsed().as_secs_f64()
    );
    let m = a2.metrics();
    assert!(
        m.sum("driftd_state_topic_restores_total", &[("from", "topic")]) >= 1.0,
        "{}",
        a2.log_text()
    );
    assert_eq!(
        m.sum("driftd_state_topic_restores_total", &[("from", "local")]),
        0.0
    );
}
