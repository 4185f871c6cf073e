//! A minimal check of a broker's cooperative (incremental) rebalances, without driftd's
//! pipeline: two plain consumers with `partition.assignment.strategy=cooperative-sticky` (or
//! the strategy given) join one new group on a topic, the second 10 s after the first, and
//! each prints what it holds once a minute has passed. A broker that completes cooperative
//! rebalances leaves every partition with exactly one of them.
//!
//! `cargo run --example coop_rebalance -- BROKERS TOPIC [STRATEGY]` prints one JSON line and
//! exits 1 when some partition has no owner or two.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};

fn consumer(brokers: &str, group: &str, strategy: &str) -> anyhow::Result<StreamConsumer> {
    let mut config = driftd::config::Config::default();
    config.kafka.brokers = brokers.to_string();
    let (mut cc, _) = driftd::ingest::client_config(&config)?;
    cc.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", strategy);
    Ok(cc.create()?)
}

fn held(c: &StreamConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (brokers, topic, strategy) = match args.as_slice() {
        [b, t] => (b, t, "cooperative-sticky"),
        [b, t, s] => (b, t, s.as_str()),
        _ => anyhow::bail!("usage: coop_rebalance BROKERS TOPIC [STRATEGY]"),
    };
    let group = format!("coop-rebalance-{}", driftd::clock::wall_ms());
    let runtime = tokio::runtime::Runtime::new()?;
    let _in_runtime = runtime.enter();
    let first = consumer(brokers, &group, strategy)?;
    first.subscribe(&[topic.as_str()])?;
    let second = consumer(brokers, &group, strategy)?;
    let partitions = first
        .fetch_metadata(Some(topic), Duration::from_secs(10))?
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    let started = Instant::now();
    runtime.block_on(async {
        let mut joined = false;
        while started.elapsed() < Duration::from_secs(70) {
            if !joined && started.elapsed() > Duration::from_secs(10) {
                second.subscribe(&[topic.as_str()])?;
                joined = true;
            }
            // Polling both drives their rebalances (and their callbacks) forward.
            let tick = tokio::time::sleep(Duration::from_millis(100));
            tokio::select! {
                _ = first.recv() => {}
                _ = second.recv(), if joined => {}
                _ = tick => {}
            }
        }
        anyhow::Ok(())
    })?;
    let (a, b) = (held(&first), held(&second));
    let owned: BTreeSet<i32> = a.union(&b).copied().collect();
    let sound = owned.len() == partitions && a.is_disjoint(&b);
    println!(
        "{}",
        serde_json::json!({
            "strategy": strategy,
            "partitions": partitions,
            "first": a,
            "second": b,
            "every_partition_owned_once": sound,
        })
    );
    std::process::exit(if sound { 0 } else { 1 })
}
