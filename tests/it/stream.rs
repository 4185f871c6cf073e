//! A mixed event stream for the Kafka tests of both tiers: valid generated events, malformed
//! ones of every reason and PII-bearing ones, produced round-robin over the partitions; what
//! driftd must report for it; the driftd config that consumes it; the dead-letter topic read back.

use std::collections::HashMap;
use std::time::Duration;

use driftd::traffic::{Generator, Sender, TrafficModel};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};

use super::corpus;
use super::support;

/// Partitions of the event topic.
pub const PARTITIONS: i32 = 3;

/// What was produced, so the test knows what driftd must report.
#[derive(Default)]
pub struct Expected {
    pub valid: u64,
    pub per_cohort: HashMap<(String, String), u64>,
    pub per_reason: HashMap<&'static str, u64>,
    pub pii: Vec<String>,
}

impl Expected {
    pub fn bad(&self) -> u64 {
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
pub async fn produce(
    brokers: &str,
    topic: &str,
    valid: u64,
    bad: u64,
    pii: u64,
    seed: u64,
    expected: &mut Expected,
) {
    produce_as(brokers, &[], topic, (valid, bad, pii), seed, expected).await
}

/// [`produce`] with the producer properties `props`; `(valid, bad, pii)` as there.
pub async fn produce_as(
    brokers: &str,
    props: support::Props<'_>,
    topic: &str,
    (valid, bad, pii): (u64, u64, u64),
    seed: u64,
    expected: &mut Expected,
) {
    let mut sender = Sender::new(brokers, topic, props).expect("producer");
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

/// The driftd config that consumes the stream, dead-letters to `dlq` and logs JSON.
pub fn config(brokers: &str, topic: &str, dlq: &str, group: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
group_id = "{group}"
dead_letter_topic = "{dlq}"
stats_interval = "500ms"
commit_interval = "500ms"
# These tests count every event of the topic from its first message (the default, a lookback,
# is tested on its own in `start_from`).
start_from = "earliest"

[ingest]
publish_interval = "200ms"

[log]
format = "json"
level = "info"
"#
    )
}

/// One dead-letter record as read back.
pub struct DeadLetterRecord {
    pub reason: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: String,
}

/// Reads every record of the dead-letter topic.
pub fn read_dead_letters(brokers: &str, dlq: &str, expect: usize) -> Vec<DeadLetterRecord> {
    read_dead_letters_as(brokers, &[], dlq, expect)
}

/// [`read_dead_letters`] with the client properties `props`.
pub fn read_dead_letters_as(
    brokers: &str,
    props: support::Props<'_>,
    dlq: &str,
    expect: usize,
) -> Vec<DeadLetterRecord> {
    let c = support::reader_as(brokers, props);
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

pub fn applied(m: &support::Metrics) -> u64 {
    m.sum("driftd_events_total", &[("outcome", "applied")]) as u64
}

pub fn rejected(m: &support::Metrics) -> u64 {
    m.sum("driftd_events_total", &[("outcome", "rejected")]) as u64
}
