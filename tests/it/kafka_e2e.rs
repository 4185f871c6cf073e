//! End to end against the real broker (tansu): produce a mixed stream, run the `driftd` binary on
//! it, and check counting, rejection, dead-lettering, privacy, offsets and restart.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use super::stream::{
    self, applied, produce, read_dead_letters, rejected, DeadLetterRecord, Expected, PARTITIONS,
};
use super::support::{self, Driftd};

#[test]
fn every_valid_event_counted_once_bad_ones_counted_and_dead_lettered_no_pii_leaks() {
    let broker = support::broker();
    let brokers = broker.addr.clone();
    let topic = support::unique("it-events");
    let dlq = format!("{topic}.dlq");
    let group = support::unique("it-group");
    support::create_topics(&brokers, &[(&topic, PARTITIONS), (&dlq, 1)]);
    let mut expected = Expected::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(produce(
        &brokers,
        &topic,
        100_000,
        1_000,
        100,
        11,
        &mut expected,
    ));
    let bad = expected.bad();
    assert_eq!(bad, 1_100);
    let ends = support::end_offsets(&brokers, &topic, PARTITIONS);
    assert_eq!(ends.iter().sum::<i64>(), 101_100);
    assert!(ends.iter().all(|&e| e > 0), "all partitions used: {ends:?}");

    let mut d = Driftd::start(&stream::config(&brokers, &topic, &dlq, &group));
    d.wait_until(
        Duration::from_secs(120),
        "every event consumed and published",
        || {
            let m = d.metrics();
            applied(&m) == 100_000
                && rejected(&m) == bad
                && m.sum("driftd_cohort_events_total", &[]) as u64 == 100_000
                && m.sum("driftd_dead_letters_total", &[("outcome", "delivered")]) as u64 == bad
        },
    );
    assert!(d.get("/readyz").is_some(), "ready while consuming");
    let m = d.metrics();
    for (reason, n) in &expected.per_reason {
        assert_eq!(
            m.sum("driftd_events_rejected_total", &[("reason", reason)]) as u64,
            *n,
            "reason {reason}"
        );
    }
    assert_eq!(m.sum("driftd_events_rejected_total", &[]) as u64, bad);
    for ((deployment, arm), n) in &expected.per_cohort {
        let labels = [("deployment", deployment.as_str()), ("arm", arm.as_str())];
        assert_eq!(
            m.sum("driftd_cohort_events_total", &labels) as u64,
            *n,
            "{deployment}/{arm} in /metrics"
        );
        assert_eq!(
            m.sum(
                "driftd_cohort_window_events",
                &[
                    labels[0],
                    labels[1],
                    ("metric", "refusal"),
                    ("window", "span")
                ]
            ) as u64,
            *n,
            "{deployment}/{arm} window count"
        );
    }
    let cohorts: serde_json::Value = serde_json::from_str(&d.get("/v1/cohorts").unwrap()).unwrap();
    let mut from_api: HashMap<(String, String), u64> = HashMap::new();
    for c in cohorts["cohorts"].as_array().unwrap() {
        let key = (
            c["deployment"].as_str().unwrap().to_string(),
            c["arm"].as_str().unwrap().to_string(),
        );
        *from_api.entry(key).or_default() += c["events_total"].as_u64().unwrap();
    }
    assert_eq!(
        from_api, expected.per_cohort,
        "/v1/cohorts counts every valid event exactly once"
    );

    let dead = read_dead_letters(&brokers, &dlq, bad as usize);
    assert_eq!(dead.len() as u64, bad, "every rejected event dead-lettered");
    let mut by_reason: HashMap<String, u64> = HashMap::new();
    for DeadLetterRecord {
        reason,
        key,
        payload,
        ..
    } in &dead
    {
        *by_reason.entry(reason.clone()).or_default() += 1;
        if reason == "pii_suspected" {
            assert!(key.is_none(), "PII dead-letter records carry no key");
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(v["source_topic"], json!(topic));
            assert_eq!(
                v.as_object().unwrap().len(),
                4,
                "only location and reason: {v}"
            );
        }
    }
    let expected_reasons: HashMap<String, u64> = expected
        .per_reason
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    assert_eq!(by_reason, expected_reasons);

    d.wait_until(
        Duration::from_secs(30),
        "consumer lag exported and drained",
        || {
            let m = d.metrics();
            m.text.matches("driftd_consumer_lag{").count() == PARTITIONS as usize
                && m.sum("driftd_consumer_lag", &[]) == 0.0
        },
    );
    let metrics_text = d.get("/metrics").unwrap();
    d.sigterm();
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "clean exit on SIGTERM:\n{}",
        d.log_text()
    );
    let logs = d.log_text();
    for s in &expected.pii {
        assert!(!logs.contains(s.as_str()), "PII string in logs");
        assert!(!metrics_text.contains(s.as_str()), "PII string in metrics");
        for DeadLetterRecord {
            key,
            payload,
            headers,
            ..
        } in &dead
        {
            let hay = [
                String::from_utf8_lossy(payload).to_string(),
                headers.clone(),
                key.as_deref()
                    .map(|k| String::from_utf8_lossy(k).to_string())
                    .unwrap_or_default(),
            ];
            assert!(
                hay.iter().all(|h| !h.contains(s.as_str())),
                "PII string in the dead-letter topic"
            );
        }
    }
    assert!(!logs.contains("hello there"), "payload text in logs");
    assert_eq!(
        support::committed_offsets(&brokers, &group, &topic, PARTITIONS),
        ends,
        "committed = end offsets"
    );
}

#[test]
fn sigterm_part_way_then_restart_applies_every_event_and_commits_to_the_end() {
    let broker = support::broker();
    let brokers = broker.addr.clone();
    let topic = support::unique("it-restart");
    let dlq = format!("{topic}.dlq");
    let group = support::unique("it-restart-group");
    support::create_topics(&brokers, &[(&topic, PARTITIONS), (&dlq, 1)]);
    let cfg = stream::config(&brokers, &topic, &dlq, &group);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut expected = Expected::default();
    // Phase 1: most of the stream is there when driftd starts; it is stopped mid-consumption.
    rt.block_on(produce(
        &brokers,
        &topic,
        60_000,
        600,
        60,
        21,
        &mut expected,
    ));
    let mut first = Driftd::start(&cfg);
    first.wait_until(
        Duration::from_secs(120),
        "part of the stream applied",
        || applied(&first.metrics()) >= 10_000,
    );
    first.sigterm();
    assert!(
        first.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        first.log_text()
    );
    let done = first
        .log_event("shutdown complete; offsets committed")
        .expect("shutdown summary logged");
    let (a1, r1) = (
        done["applied"].as_u64().unwrap(),
        done["rejected"].as_u64().unwrap(),
    );
    // Phase 2: the rest arrives while driftd is down.
    rt.block_on(produce(
        &brokers,
        &topic,
        40_000,
        400,
        40,
        22,
        &mut expected,
    ));
    let ends = support::end_offsets(&brokers, &topic, PARTITIONS);
    let produced = expected.valid + expected.bad();
    assert_eq!(ends.iter().sum::<i64>() as u64, produced);
    assert!(a1 + r1 < produced, "the first run stopped part-way");

    let mut second = Driftd::start(&cfg);
    second.wait_until(
        Duration::from_secs(120),
        "the rest of the stream consumed",
        || {
            let m = second.metrics();
            a1 + applied(&m) >= expected.valid && r1 + rejected(&m) >= expected.bad()
        },
    );
    // The group commits only what was processed: once it has committed the end offsets,
    // everything (duplicates included) has been counted.
    second.wait_until(Duration::from_secs(60), "the end offsets committed", || {
        support::committed_offsets(&brokers, &group, &topic, PARTITIONS) == ends
    });
    second.sigterm();
    assert!(
        second.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        second.log_text()
    );
    let done = second
        .log_event("shutdown complete; offsets committed")
        .expect("shutdown summary logged");
    let (a2, r2) = (
        done["applied"].as_u64().unwrap(),
        done["rejected"].as_u64().unwrap(),
    );
    let duplicates = (a1 + a2 + r1 + r2) as i64 - produced as i64;
    assert!(a1 + a2 >= expected.valid, "no valid event lost");
    assert!(r1 + r2 >= expected.bad(), "no bad event lost");
    assert_eq!(
        duplicates, 0,
        "a drained shutdown commits everything it applied: run 1 applied {a1} rejected {r1}, run 2 applied {a2} rejected {r2}, produced {produced}"
    );
    assert_eq!(
        support::committed_offsets(&brokers, &group, &topic, PARTITIONS),
        ends,
        "committed = end offsets"
    );
}
