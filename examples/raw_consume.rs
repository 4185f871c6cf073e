//! The floor driftd's end-to-end figures are read against (`scripts/bench-e2e.sh`): a consumer
//! made with driftd's client settings (the same `client_config`, group and fetch settings, and
//! the same async `StreamConsumer`) that only counts messages.
//!
//! `cargo run --release --example raw_consume -- BROKERS TOPIC GROUP COUNT` prints one JSON line
//! once COUNT messages were received: wall and CPU seconds (utime + stime of the process) from the
//! first message to the last, so the consumer-group join is left out as it is for driftd.

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here; USER_HZ is 100 on Linux.
    (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / 100.0
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, group, count] = args.as_slice() else {
        anyhow::bail!("usage: raw_consume BROKERS TOPIC GROUP COUNT");
    };
    let count: u64 = count.parse()?;
    let mut config = driftd::config::Config::default();
    config.kafka.brokers = brokers.clone();
    let (mut cc, _) = driftd::ingest::client_config(&config)?;
    cc.set("group.id", group)
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // A StreamConsumer is made inside the runtime it is polled on.
    let _in_runtime = runtime.enter();
    let consumer: StreamConsumer = cc.create()?;
    consumer.subscribe(&[topic.as_str()])?;
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut first: Option<(Instant, f64)> = None;
    runtime.block_on(async {
        while n < count {
            match tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await {
                Ok(Ok(m)) => {
                    first.get_or_insert_with(|| (Instant::now(), cpu_seconds()));
                    n += 1;
                    bytes += m.payload().map_or(0, |p| p.len() as u64);
                }
                Ok(Err(e)) => eprintln!("raw_consume: {e}"),
                Err(_) => anyhow::bail!("no message for 60 s after {n} of {count}"),
            }
        }
        anyhow::Ok(())
    })?;
    let (t0, cpu0) = first.unwrap_or((Instant::now(), cpu_seconds()));
    println!(
        "{}",
        serde_json::json!({
            "messages": n,
            "bytes": bytes,
            "wall_s": t0.elapsed().as_secs_f64(),
            "cpu_s": cpu_seconds() - cpu0,
        })
    );
    Ok(())
}
