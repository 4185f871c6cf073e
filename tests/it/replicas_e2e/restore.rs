//! Issue 9's restore phase against the real broker (tansu): while one partition's large
//! snapshot is still being read from the state topic, the partitions whose state is already
//! restored are consumed (the restoring one is paused, its fetched messages held back), and in
//! the end every cohort is counted exactly once. Prints the read time and what was applied
//! meanwhile.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{counts, generate, produce_to, Counts, Group};

/// Per cohort (deployment, arm): the events of `messages`.
fn tally(messages: &[(String, Vec<u8>)], into: &mut Counts) {
    for (_, payload) in messages {
        let v: Value = serde_json::from_slice(payload).unwrap();
        *into
            .entry((
                v["deployment"].as_str().unwrap().to_string(),
                v["arm"].as_str().unwrap().to_string(),
            ))
            .or_insert(0) += 1;
    }
}

#[test]
fn partitions_already_restored_are_consumed_while_a_large_one_still_restores() {
    let g = Group::new("it-restore-flow", 2);
    // Partition 0: about 1,000 cohorts (a state-topic snapshot of about 39 MiB); partition 1:
    // the two deployments the small stream has, which the large one leaves out.
    let small = generate(3_000, 2, 62);
    let mine: Vec<String> = small.per_cohort.keys().map(|(d, _)| d.clone()).collect();
    let large: Vec<(String, Vec<u8>)> = generate(20_000, 502, 61)
        .messages
        .into_iter()
        .filter(|(key, _)| !mine.contains(key))
        .collect();
    let (first, backlog) = small.messages.split_at(1_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    produce_to(&rt, &g.brokers, &g.topic, 0, &large);
    produce_to(&rt, &g.brokers, &g.topic, 1, first);
    let mut before = Counts::new();
    tally(&large, &mut before);
    let restored = before.len();
    tally(first, &mut before);
    assert!(restored >= 990, "{restored} cohorts");

    let dynamic = r#""session.timeout.ms" = "10000""#;
    let mut a = g.start_as(dynamic, "a", "30s");
    a.wait_until(Duration::from_secs(300), "every event counted", || {
        counts(&a) == before
    });
    // The final snapshots of both partitions go to the state topic at the shutdown.
    a.sigterm();
    assert!(
        a.wait_exit(Duration::from_secs(90)).success(),
        "{}",
        a.log_text()
    );
    produce_to(&rt, &g.brokers, &g.topic, 1, backlog);
    let mut all = before.clone();
    tally(backlog, &mut all);

    // A replica with an empty state_dir: both partitions come from the state topic.
    let b = g.start_as(dynamic, "b", "30s");
    let started = Instant::now();
    let (mut restoring_seen, mut applied_meanwhile) = (false, 0.0f64);
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the restore did not end: {}",
            b.log_text()
        );
        let m = b.metrics();
        let restoring = m.sum("driftd_state_topic_restoring", &[]);
        let applied = m.sum("driftd_events_total", &[("outcome", "applied")]);
        if restoring >= 1.0 {
            restoring_seen = true;
            applied_meanwhile = applied_meanwhile.max(applied);
        } else if restoring_seen {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let restore = started.elapsed();
    b.wait_until(Duration::from_secs(120), "every event counted once", || {
        counts(&b) == all
    });
    let m = b.metrics();
    let read = m.sum("driftd_state_topic_read_seconds_sum", &[]);
    println!(
        "restore: {} cohorts on partition 0 read from the state topic in {:.1} s (both reads together; {:.1} s from the start to the end of the restore phase); {applied_meanwhile} of partition 1's {} events after the shutdown applied meanwhile",
        restored,
        read,
        restore.as_secs_f64(),
        backlog.len()
    );
    assert_eq!(
        m.sum("driftd_state_topic_restores_total", &[("from", "topic")]),
        2.0,
        "both partitions restored from the state topic: {}",
        b.log_text()
    );
    assert!(
        applied_meanwhile > 0.0,
        "partition 1 was consumed while partition 0 restored ({:.1} s of reading)",
        read
    );
}
