//! End to end against the real broker (tansu): produce a mixed stream, run the `driftd` binary on
//! it, and check counting, rejection, dead-lettering, privacy, offsets and restart.

use std::collections::HashMap;
use std::time::Duration;

use driftd::traffic::{Generator, Sender, TrafficModel};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use serde_json::json;

use super::corpus;
use super::support::{self, Driftd};

const PARTITIONS: i32 = 3;

/// What was produced, so the test knows what driftd must report.
#[derive(Default)]
struct Expected {
    valid: u64,
    per_cohort: HashMap<(String, String), u64>,
    per_reason: HashMap<&'static str, u64>,
    pii: Vec<String>,
}

impl Expected {
    fn bad(&self) -> u64 {
        self.per_reason.values().sum()
    }
}

fn malformed(i: u64) -> (&'static str, Vec<u8>) {
    let at = driftd::event::format_rfc3339_ms(driftd::clock::wall_ms());
    let ok = |extra: &str, signals: &str, version: u32| {
        format!(
            "{{\"schema_version\":{version},\"event_id\":\"m{i}x\",\"emitted_at\":\"{at}\",\"deployment\":\"support-bot\",\"model_version\":\"m1\",\"arm\":\"control\",\"signals\":{signals}{extra}}}"
        )
    };
    let good_signals = "{\"tone\":0.1,\"escalated\":false,\"refused\":false}";
    match i % 6 {
        0 => (
            "invalid_json",
            b"{\"schema_version\": 1, \"event_id\": ".to_vec(),
        ),
        1 => (
            "schema_violation",
            ok("", "{\"tone\":0.1,\"escalated\":false}", 1).into_bytes(),
        ),
        2 => (
            "out_of_range",
            ok(
                "",
                "{\"tone\":3.0,\"escalated\":false,\"refused\":false}",
                1,
            )
            .into_bytes(),
        ),
        3 => (
            "too_large",
            ok(
                &format!(",\"pad\":\"{}\"", "z".repeat(70_000)),
                good_signals,
                1,
            )
            .into_bytes(),
        ),
        4 => (
            "unknown_field",
            ok(",\"prompt\":\"hello there\"", good_signals, 1).into_bytes(),
        ),
        _ => ("unsupported_version", ok("", good_signals, 2).into_bytes()),
    }
}

/// Produces `valid` generated events, `bad` malformed ones and `pii` PII-bearing ones,
/// interleaved, round-robin over the partitions.
async fn produce(
    brokers: &str,
    topic: &str,
    valid: u64,
    bad: u64,
    pii: u64,
    seed: u64,
    expected: &mut Expected,
) {
    let mut sender = Sender::new(brokers, topic, &[]).expect("producer");
    let mut generator = Generator::new(
        TrafficModel {
            deployments: 4,
            seed,
            ..TrafficModel::default()
        },
        None,
    );
    let pii_strings = corpus::pii_strings(seed, pii as usize);
    let total = valid + bad + pii;
    let (mut v, mut b, mut p) = (0u64, 0u64, 0u64);
    for i in 0..total {
        let partition = Some((i % PARTITIONS as u64) as i32);
        // Spread the bad and PII messages evenly through the stream.
        if b < bad && i * bad / total >= b {
            let (reason, payload) = malformed(b);
            *expected.per_reason.entry(reason).or_default() += 1;
            sender
                .send(Some(b"support-bot"), Some(&payload), partition)
                .await;
            b += 1;
        } else if p < pii && i * pii / total >= p {
            let s = &pii_strings[p as usize];
            let payload = serde_json::to_vec(&corpus::event_with(p as usize, s)).unwrap();
            *expected.per_reason.entry("pii_suspected").or_default() += 1;
            expected.pii.push(s.clone());
            sender
                .send(Some(b"support-bot"), Some(&payload), partition)
                .await;
            p += 1;
        } else {
            let g = generator.next_event(driftd::clock::wall_ms());
            let e: serde_json::Value = serde_json::from_slice(&g.payload).unwrap();
            let key = (
                e["deployment"].as_str().unwrap().to_string(),
                e["arm"].as_str().unwrap().to_string(),
            );
            *expected.per_cohort.entry(key).or_default() += 1;
            expected.valid += 1;
            sender
                .send(Some(g.key.as_bytes()), Some(&g.payload), partition)
                .await;
            v += 1;
        }
    }
    assert_eq!((v, b, p), (valid, bad, pii));
    sender.finish().await.expect("every message acknowledged");
}

fn config(brokers: &str, topic: &str, dlq: &str, group: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
group_id = "{group}"
dead_letter_topic = "{dlq}"
stats_interval = "500ms"
commit_interval = "500ms"

[ingest]
publish_interval = "200ms"

[log]
format = "json"
level = "info"
"#
    )
}

/// One dead-letter record as read back.
struct DeadLetterRecord {
    reason: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: String,
}

/// Reads every record of the dead-letter topic.
fn read_dead_letters(brokers: &str, dlq: &str, expect: usize) -> Vec<DeadLetterRecord> {
    let c = support::reader(brokers);
    c.subscribe(&[dlq]).unwrap();
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    while out.len() < expect && start.elapsed() < Duration::from_secs(60) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let mut reason = String::new();
            let mut all = String::new();
            if let Some(h) = m.headers() {
                for hdr in h.iter() {
                    let v = String::from_utf8_lossy(hdr.value.unwrap_or_default()).to_string();
                    if hdr.key == driftd::ingest::dead_letter::HEADER_REASON {
                        reason = v.clone();
                    }
                    all.push_str(&format!("{}={v};", hdr.key));
                }
            }
            out.push(DeadLetterRecord {
                reason,
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: all,
            });
        }
    }
    out
}

fn applied(m: &support::Metrics) -> u64 {
    m.sum("driftd_events_total", &[("outcome", "applied")]) as u64
}

fn rejected(m: &support::Metrics) -> u64 {
    m.sum("driftd_events_total", &[("outcome", "rejected")]) as u64
}

#[test]
fn every_valid_event_counted_once_bad_ones_counted_and_dead_lettered_no_pii_leaks() {
    let brokers = support::broker();
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

    let mut d = Driftd::start(&config(&brokers, &topic, &dlq, &group));
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
    let brokers = support::broker();
    let topic = support::unique("it-restart");
    let dlq = format!("{topic}.dlq");
    let group = support::unique("it-restart-group");
    support::create_topics(&brokers, &[(&topic, PARTITIONS), (&dlq, 1)]);
    let cfg = config(&brokers, &topic, &dlq, &group);
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
    // Let anything duplicated show up before stopping.
    std::thread::sleep(Duration::from_secs(1));
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
    println!("restart: run 1 applied {a1} rejected {r1}; run 2 applied {a2} rejected {r2}; produced {produced}; duplicates {duplicates}");
    assert!(a1 + a2 >= expected.valid, "no valid event lost");
    assert!(r1 + r2 >= expected.bad(), "no bad event lost");
    assert_eq!(
        duplicates, 0,
        "a drained shutdown commits everything it applied"
    );
    assert_eq!(
        support::committed_offsets(&brokers, &group, &topic, PARTITIONS),
        ends,
        "committed = end offsets"
    );
}
