//! Where a new consumer group starts (`kafka.start_from`), against the real broker (tansu): the
//! default lookback skips history older than three window spans by Kafka timestamp, `latest`
//! reads only what is produced after the assignment, and committed offsets win over both.

use std::time::Duration;

use driftd::traffic::{Generator, TrafficModel};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::stream::{applied, rejected};
use super::support::{self, Driftd};

const HOUR_MS: i64 = 3_600_000;

/// Produces `n` events to partition 0, each with Kafka timestamp and `emitted_at` `at_ms`.
fn produce(brokers: &str, topic: &str, n: u64, at_ms: i64, seed: u64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    let mut g = Generator::new(
        TrafficModel {
            deployments: 2,
            seed,
            ..TrafficModel::default()
        },
        None,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for _ in 0..n {
            let e = g.next_event(at_ms);
            producer
                .send(
                    FutureRecord::to(topic)
                        .partition(0)
                        .key(&e.key)
                        .payload(&e.payload)
                        .timestamp(at_ms),
                    Duration::from_secs(10),
                )
                .await
                .expect("delivered");
        }
    });
}

fn config(brokers: &str, topic: &str, group: &str, start_from: Option<&str>) -> String {
    let start = start_from.map_or(String::new(), |s| format!("start_from = \"{s}\"\n"));
    format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ngroup_id = \"{group}\"\ncommit_interval = \"500ms\"\n{start}\n[ingest]\npublish_interval = \"200ms\"\n\n[log]\nformat = \"json\"\n"
    )
}

fn consumed(d: &Driftd) -> u64 {
    let m = d.metrics();
    applied(&m) + rejected(&m)
}

fn ready(d: &Driftd) {
    d.wait_until(
        Duration::from_secs(60),
        "ready (partitions assigned)",
        || d.get("/readyz").is_some(),
    );
}

/// Waits until `n` events were consumed, then checks no more come within a second.
fn consumes_exactly(d: &Driftd, n: u64, what: &str) {
    d.wait_until(Duration::from_secs(60), what, || consumed(d) >= n);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(consumed(d), n, "{what}: no more than that");
}

#[test]
fn a_new_group_starts_at_the_lookback_or_latest_and_committed_offsets_win() {
    let broker = support::broker();
    let brokers = broker.addr.clone();
    let topic = support::unique("it-start");
    support::create_topics(&brokers, &[(&topic, 1)]);
    let now = driftd::clock::wall_ms();
    // Ten hours old (beyond the default lookback, three one-hour spans), then ten minutes old.
    produce(&brokers, &topic, 300, now - 10 * HOUR_MS, 1);
    produce(&brokers, &topic, 200, now - HOUR_MS / 6, 2);

    // The default: a lookback of three window spans.
    let group = support::unique("it-start-lookback");
    let mut d = Driftd::start(&config(&brokers, &topic, &group, None));
    consumes_exactly(&d, 200, "the 200 recent events");
    let line = d
        .log_event("no committed offset: starting at the first message of the lookback")
        .expect("the start position is logged");
    assert_eq!(line["offset"], "Offset(300)", "{line}");
    assert_eq!(line["lookback"], "3h", "{line}");
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(30)).success());

    // `latest`: nothing of the history, everything produced after the assignment.
    let latest = support::unique("it-start-latest");
    let d2 = Driftd::start(&config(&brokers, &topic, &latest, Some("latest")));
    ready(&d2);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(consumed(&d2), 0, "latest reads no history");
    produce(&brokers, &topic, 50, driftd::clock::wall_ms(), 3);
    consumes_exactly(&d2, 50, "the 50 events produced after the start");
    drop(d2);

    // Committed offsets win: the first group, restarted with `earliest`, goes on from its
    // commit (the end of the 200) and reads the 50 new ones only.
    let d3 = Driftd::start(&config(&brokers, &topic, &group, Some("earliest")));
    consumes_exactly(&d3, 50, "only what came after the group's commit");
    assert!(
        d3.log_event("no committed offset: starting at the first message of the lookback")
            .is_none(),
        "no lookback for a partition with a committed offset"
    );
}
