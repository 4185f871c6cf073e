//! Broker faults against the real broker (tansu): unreachable at start, restarted mid-stream,
//! gone at shutdown, and a poison message at a partition's tail.
//!
//! Each test runs its own tansu process ([`Tansu`]) on its own port, with sqlite storage in its
//! own folder, so a restart on the same port keeps topics, messages and committed offsets, and
//! killing it disturbs no other test. The shared broker of `scripts/test.sh` is not used here;
//! only its cached tansu binary is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftd::traffic::{Generator, Sender, TrafficModel};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::stream::{self, applied, rejected, PARTITIONS};
use super::support::{self, Driftd};
use super::tansu::Tansu;

/// Topic, dead-letter topic, group and the driftd config consuming them from `addr`, with
/// `extra` appended (more TOML tables).
fn setup(addr: &str, name: &str, extra: &str) -> (String, String, String, String) {
    let topic = support::unique(name);
    let dlq = format!("{topic}.dlq");
    let group = support::unique(&format!("{name}-group"));
    let config = format!("{}{extra}", stream::config(addr, &topic, &dlq, &group));
    (topic, dlq, group, config)
}

fn consumed(m: &support::Metrics) -> u64 {
    applied(m) + rejected(m)
}

/// The lines of the log whose JSON message contains `needle`.
fn log_lines(d: &Driftd, needle: &str) -> Vec<serde_json::Value> {
    d.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"].as_str().is_some_and(|m| m.contains(needle)))
        .collect()
}

/// Broker unreachable at start: alive but not ready, one clear log line naming the brokers and
/// saying driftd keeps retrying (not one per retry), then, once the broker starts, ready and
/// every event counted.
#[test]
fn unreachable_at_start_not_ready_and_said_once_then_consumes_when_the_broker_comes() {
    let _turn = support::turn();
    let started = Instant::now();
    let mut tansu = Tansu::reserve();
    let (topic, dlq, _group, config) = setup(&tansu.addr, "it-unreachable", "");
    let d = Driftd::start(&config);
    // librdkafka retries several times a second; give it time to repeat itself.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        d.get("/healthz").is_some(),
        "alive while the broker is away"
    );
    let (status, body) = d.request(reqwest::Method::GET, "/readyz", None, None);
    assert_eq!(status, 503, "not ready without a broker: {body}");
    let unreachable = log_lines(&d, "no Kafka broker reachable");
    assert_eq!(
        unreachable.len(),
        1,
        "said once, not once per retry; log:\n{}",
        d.log_text()
    );
    let line = &unreachable[0];
    assert_eq!(line["level"], "WARN");
    assert_eq!(
        line["brokers"],
        tansu.addr.as_str(),
        "names the brokers: {line}"
    );
    assert!(
        line["message"].as_str().unwrap().contains("retrying"),
        "says it keeps retrying: {line}"
    );
    let noisy = d
        .log_text()
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .count();
    assert!(
        noisy <= 2,
        "{noisy} warnings and errors in 5 s without a broker; log:\n{}",
        d.log_text()
    );

    tansu.start();
    let came = Instant::now();
    support::create_topics(&tansu.addr, &[(&topic, PARTITIONS), (&dlq, 1)]);
    let mut expected = stream::Expected::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(stream::produce(
        &tansu.addr,
        &topic,
        5_000,
        60,
        0,
        31,
        &mut expected,
    ));
    d.wait_until(Duration::from_secs(60), "every event consumed", || {
        let m = d.metrics();
        applied(&m) == expected.valid
            && rejected(&m) == expected.bad()
            && m.sum("driftd_cohort_events_total", &[]) as u64 == expected.valid
    });
    let ready = came.elapsed();
    assert!(d.get("/readyz").is_some(), "ready once the broker came");
    let m = d.metrics();
    for ((deployment, arm), n) in &expected.per_cohort {
        let labels = [("deployment", deployment.as_str()), ("arm", arm.as_str())];
        assert_eq!(
            m.sum("driftd_cohort_events_total", &labels) as u64,
            *n,
            "{deployment}/{arm}"
        );
    }
    assert_eq!(
        log_lines(&d, "Kafka broker reachable again").len(),
        1,
        "the recovery is logged once"
    );
    println!(
        "unreachable at start: broker up -> {} events consumed in {:.1} s; test {:.1} s",
        expected.valid + expected.bad(),
        ready.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Broker gone at shutdown: SIGTERM while the final commit cannot reach the broker. driftd exits
/// within `shutdown.deadline`, says the final commit could not be made, and exits 1 (README,
/// "Delivery guarantees").
#[test]
fn gone_at_shutdown_exits_within_the_deadline_saying_the_final_commit_failed() {
    let _turn = support::turn();
    let started = Instant::now();
    let mut tansu = Tansu::started();
    // No background commit happens in this test, so the final one has work to do.
    let extra = "\n[shutdown]\ndeadline = \"5s\"\n";
    let (topic, dlq, group, config) = setup(&tansu.addr, "it-gone", extra);
    let config = config.replace("commit_interval = \"500ms\"", "commit_interval = \"1h\"");
    support::create_topics(&tansu.addr, &[(&topic, PARTITIONS), (&dlq, 1)]);
    let mut expected = stream::Expected::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(stream::produce(
        &tansu.addr,
        &topic,
        3_000,
        30,
        0,
        41,
        &mut expected,
    ));
    let mut d = Driftd::start(&config);
    d.wait_until(Duration::from_secs(60), "every event consumed", || {
        let m = d.metrics();
        applied(&m) == expected.valid && rejected(&m) == expected.bad()
    });
    assert_eq!(
        support::committed_offsets(&tansu.addr, &group, &topic, PARTITIONS),
        vec![-1; PARTITIONS as usize],
        "nothing committed before shutdown"
    );
    tansu.kill();
    std::thread::sleep(Duration::from_secs(1));
    let asked = Instant::now();
    d.sigterm();
    let status = d.wait_exit(Duration::from_secs(15));
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "exit within the 5 s deadline (and the time to exit): {took:?}\n{}",
        d.log_text()
    );
    assert_eq!(
        status.code(),
        Some(1),
        "README: exit 1 when the deadline passes"
    );
    let said = log_lines(&d, "without a final commit");
    assert_eq!(
        said.len(),
        1,
        "says the final commit could not be made:\n{}",
        d.log_text()
    );
    assert_eq!(said[0]["level"], "ERROR");

    // README: the uncommitted events are re-consumed by the next run, which starts from the
    // committed offsets. (A next driftd in the same group is not started here: tansu, restarted,
    // keeps the killed member in the group and gave a new one no partitions for 40 s.)
    tansu.start();
    assert_eq!(
        support::committed_offsets(&tansu.addr, &group, &topic, PARTITIONS),
        vec![-1; PARTITIONS as usize],
        "nothing was committed, so the next run re-consumes everything"
    );
    println!(
        "gone at shutdown: exited with {status} {:.2} s after SIGTERM (deadline 5 s), nothing \
         committed; test {:.1} s",
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The dead-letter records of `dlq` (one partition): (reason, source partition, source offset).
fn dead_letters(addr: &str, dlq: &str) -> Vec<(String, String, String)> {
    let end = support::end_offsets(addr, dlq, 1)[0];
    let c = support::reader(addr);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(dlq, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    while (out.len() as i64) < end {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "dead letters read back"
        );
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("dead letter read back");
        let header = |key: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|x| x.key == key))
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).to_string())
                .unwrap_or_default()
        };
        use driftd::ingest::dead_letter as dl;
        out.push((
            header(dl::HEADER_REASON),
            header(dl::HEADER_SOURCE_PARTITION),
            header(dl::HEADER_SOURCE_OFFSET),
        ));
    }
    out
}

/// A malformed message as the last message of a partition: nothing comes after it to carry its
/// offset along, yet its offset is committed (the committed offset reaches the end offset) and
/// exactly one dead-letter record exists for it, also after driftd restarts.
#[test]
fn poison_message_at_a_partitions_tail_is_committed_and_dead_lettered_once() {
    let _turn = support::turn();
    let started = Instant::now();
    let tansu = Tansu::started();
    let (topic, dlq, group, config) = setup(&tansu.addr, "it-poison", "");
    support::create_topics(&tansu.addr, &[(&topic, PARTITIONS), (&dlq, 1)]);
    let mut expected = stream::Expected::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(stream::produce(
        &tansu.addr,
        &topic,
        300,
        0,
        0,
        61,
        &mut expected,
    ));
    let mut d = Driftd::start(&config);
    d.wait_until(Duration::from_secs(60), "the valid events applied", || {
        applied(&d.metrics()) == 300
    });
    // The poison arrives while driftd is idle, as the last message of partition 1.
    rt.block_on(async {
        let mut sender = Sender::new(&tansu.addr, &topic, &[]).unwrap();
        sender
            .send(
                Some(b"support-bot"),
                Some(b"{\"schema_version\": 1,"),
                Some(1),
            )
            .await;
        sender.finish().await.expect("poison acknowledged");
    });
    let ends = support::end_offsets(&tansu.addr, &topic, PARTITIONS);
    d.wait_until(Duration::from_secs(30), "committed = end offsets", || {
        support::committed_offsets(&tansu.addr, &group, &topic, PARTITIONS) == ends
    });
    let committed_in = started.elapsed();
    let m = d.metrics();
    assert_eq!(rejected(&m), 1);
    assert_eq!(
        m.sum("driftd_dead_letters_total", &[("outcome", "delivered")]),
        1.0
    );
    let records = dead_letters(&tansu.addr, &dlq);
    let tail = (ends[1] - 1).to_string();
    assert_eq!(
        records,
        vec![("invalid_json".to_string(), "1".to_string(), tail.clone())],
        "exactly one dead-letter record, for partition 1 offset {tail}"
    );

    // A restart re-reads nothing: the poison is behind the commit.
    d.sigterm();
    assert!(
        d.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        d.log_text()
    );
    let again = Driftd::start(&config);
    again.wait_until(Duration::from_secs(30), "ready again", || {
        again.get("/readyz").is_some()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(consumed(&again.metrics()), 0, "nothing re-consumed");
    assert_eq!(dead_letters(&tansu.addr, &dlq).len(), 1, "still one record");
    println!(
        "poison at a partition's tail: committed to the end offsets {ends:?} {:.1} s into the \
         test, one dead-letter record; test {:.1} s",
        committed_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Events of the restart test, and how many restarts happen while they are produced. The issue
/// asks for 5 restarts during 500,000 events; driftd (a debug build) consumes about 3,800
/// events/s from tansu on this 2-core machine while nothing else runs, about 2,000/s while the
/// producer shares the cores, so 500,000 would take over 4 minutes: 100,000 at 2,000/s keeps the
/// test near 75 s. `DRIFTD_RESTART_EVENTS` runs it at the size.
fn restart_events() -> u64 {
    std::env::var("DRIFTD_RESTART_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}
const RESTARTS: u64 = 5;
/// Production rate: below what driftd (a debug build) consumes from tansu here, so the consumer
/// is at the head of the stream when the broker goes and "caught up" has a meaning.
const RESTART_RATE: f64 = 2_000.0;
/// How long the broker stays down each time.
const DOWN_FOR: Duration = Duration::from_secs(1);
/// The median time from the broker being ready again to consumption resuming must stay below
/// this. Measured: 0.8–5 s, medians 1.6 and 2.6 s; with librdkafka's default
/// `reconnect.backoff.max.ms` (10 s) 2.6–9.2 s, median 4.6 s, which a unit test of the client
/// config pins; with a 100 ms pause per receive error, assignments came 5 s late.
const RESUME_MEDIAN_WITHIN: Duration = Duration::from_secs(5);
/// Events produced by a new producer right after each restart.
const MARKER: u64 = 100;
/// One malformed message in this many, so held-back dead-letter offsets cross the restarts too.
const BAD_EVERY: u64 = 500;

/// The restart test's producers: idempotent, so a send retried across a restart is not written
/// twice, and retrying a restarted broker within a second, like driftd.
const PRODUCER: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("reconnect.backoff.max.ms", "1000"),
];

/// The producer thread of the restart test: paced, keyed by deployment, counting what it has
/// handed to librdkafka (which retries across the restarts).
fn spawn_producer(
    addr: String,
    topic: String,
    enqueued: Arc<AtomicU64>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let mut sender = Sender::new(&addr, &topic, PRODUCER).expect("producer");
            let mut generator = Generator::new(
                TrafficModel {
                    deployments: 4,
                    seed: 51,
                    ..TrafficModel::default()
                },
                None,
            );
            let started = Instant::now();
            for i in 0..restart_events() {
                if i % 64 == 0 {
                    let due = Duration::from_secs_f64(i as f64 / RESTART_RATE);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                if i % BAD_EVERY == BAD_EVERY - 1 {
                    sender
                        .send(Some(b"support-bot"), Some(b"{\"schema_version\": 1,"), None)
                        .await;
                } else {
                    let g = generator.next_event(driftd::clock::wall_ms());
                    sender
                        .send(Some(g.key.as_bytes()), Some(&g.payload), None)
                        .await;
                }
                enqueued.store(i + 1, Ordering::Relaxed);
            }
            sender.finish().await.expect("every message acknowledged")
        })
    })
}

/// What the topic holds, read back: per (deployment, arm) counts of valid events, and the
/// number of messages that are not JSON.
fn count_topic(addr: &str, topic: &str, total: i64) -> (HashMap<(String, String), u64>, u64) {
    let c = support::reader(addr);
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let (mut cohorts, mut bad, mut read) = (HashMap::new(), 0u64, 0i64);
    let start = Instant::now();
    while read < total {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "read back {read} of {total}"
        );
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("read back");
        read += 1;
        match serde_json::from_slice::<serde_json::Value>(m.payload().unwrap_or_default()) {
            Ok(e) => {
                let key = (
                    e["deployment"].as_str().unwrap().to_string(),
                    e["arm"].as_str().unwrap().to_string(),
                );
                *cohorts.entry(key).or_default() += 1;
            }
            Err(_) => bad += 1,
        }
    }
    (cohorts, bad)
}

/// Produces `n` events at once with a new producer (no reconnect backoff carried over from
/// before a restart), so the time until driftd counts them measures driftd's own resumption.
fn produce_marker(addr: &str, topic: &str, n: u64, seed: u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut sender = Sender::new(addr, topic, PRODUCER).unwrap();
        let mut generator = Generator::new(
            TrafficModel {
                deployments: 4,
                seed,
                ..TrafficModel::default()
            },
            None,
        );
        for _ in 0..n {
            let g = generator.next_event(driftd::clock::wall_ms());
            sender
                .send(Some(g.key.as_bytes()), Some(&g.payload), None)
                .await;
        }
        sender.finish().await.expect("marker acknowledged");
    });
}

/// Broker restarted mid-stream, several times, with storage kept: every event is counted exactly
/// once (driftd re-reads from its commit after a reconnect, so a double count would show), and
/// the time from each restart to consumption resuming and the lag clearing is printed.
#[test]
fn broker_restarted_mid_stream_every_event_counted_exactly_once_and_consumption_resumes() {
    let _turn = support::turn();
    let started = Instant::now();
    let mut tansu = Tansu::started();
    let (topic, dlq, group, config) = setup(&tansu.addr, "it-restart", "");
    support::create_topics(&tansu.addr, &[(&topic, PARTITIONS), (&dlq, 1)]);
    let d = Driftd::start(&config);
    let enqueued = Arc::new(AtomicU64::new(0));
    let producer = spawn_producer(tansu.addr.clone(), topic.clone(), enqueued.clone());
    let mut worst = Duration::ZERO;
    let mut resumes = Vec::new();
    for k in 1..=RESTARTS {
        let at = restart_events() * k / (RESTARTS + 1);
        while enqueued.load(Ordering::Relaxed) < at {
            std::thread::sleep(Duration::from_millis(20));
        }
        let before = consumed(&d.metrics());
        tansu.kill();
        std::thread::sleep(DOWN_FOR);
        tansu.start();
        let back = Instant::now();
        let at_back = consumed(&d.metrics());
        produce_marker(&tansu.addr, &topic, MARKER, 600 + k);
        // Everything the topic held once the broker was back and the marker written: the lag
        // to clear (the paced producer adds more meanwhile).
        let target: i64 = support::end_offsets(&tansu.addr, &topic, PARTITIONS)
            .iter()
            .sum();
        let (mut resumed, mut caught_up) = (None, None);
        while caught_up.is_none() {
            let now = consumed(&d.metrics());
            assert!(
                back.elapsed() < Duration::from_secs(60),
                "restart {k}: driftd consumed {now} of the {target} messages in the topic \
                 60 s after the broker came back; driftd log:\n{}",
                d.log_text()
            );
            if resumed.is_none() && now > at_back {
                resumed = Some(back.elapsed());
            }
            if now >= target as u64 {
                caught_up = Some(back.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (resumed, caught_up) = (resumed.unwrap_or_default(), caught_up.unwrap());
        worst = worst.max(caught_up);
        assert!(
            resumed < Duration::from_secs(20),
            "restart {k}: consumption resumed only {resumed:?} after the broker was ready"
        );
        resumes.push(resumed);
        println!(
            "restart {k}/{RESTARTS}: broker killed with {before} messages consumed, down {:.1} s \
             (+ its start); consumption resumed {:.2} s after it was back, lag cleared \
             ({target} messages) after {:.2} s",
            DOWN_FOR.as_secs_f64(),
            resumed.as_secs_f64(),
            caught_up.as_secs_f64()
        );
    }
    resumes.sort();
    let median = resumes[resumes.len() / 2];
    assert!(
        median < RESUME_MEDIAN_WITHIN,
        "consumption resumed after {resumes:?} (median {median:?}) from the broker being ready"
    );
    let produced = producer.join().expect("producer thread") + MARKER * RESTARTS;
    let ends = support::end_offsets(&tansu.addr, &topic, PARTITIONS);
    let in_topic: i64 = ends.iter().sum();
    let (cohorts, bad) = count_topic(&tansu.addr, &topic, in_topic);
    let valid: u64 = cohorts.values().sum();
    d.wait_until(
        Duration::from_secs(120),
        "every message consumed and committed",
        || {
            let m = d.metrics();
            consumed(&m) >= in_topic as u64
                && support::committed_offsets(&tansu.addr, &group, &topic, PARTITIONS) == ends
        },
    );
    // Anything re-read after a reconnect would be counted again: give it time to show.
    std::thread::sleep(Duration::from_secs(2));
    let m = d.metrics();
    println!(
        "restart test: {produced} produced, {in_topic} in the topic ({valid} valid, {bad} \
         malformed); driftd applied {} and rejected {}; {RESTARTS} restarts, slowest lag \
         recovery {:.2} s, median resumption {:.2} s; test {:.1} s",
        applied(&m),
        rejected(&m),
        worst.as_secs_f64(),
        median.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        in_topic as u64, produced,
        "the broker holds every produced message once (a broker or producer fault, not driftd's)"
    );
    assert_eq!(applied(&m), valid, "every valid event applied exactly once");
    assert_eq!(
        rejected(&m),
        bad,
        "every malformed message rejected exactly once"
    );
    assert_eq!(
        m.sum("driftd_cohort_events_total", &[]) as u64,
        valid,
        "cohort counts"
    );
    for ((deployment, arm), n) in &cohorts {
        let labels = [("deployment", deployment.as_str()), ("arm", arm.as_str())];
        assert_eq!(
            m.sum("driftd_cohort_events_total", &labels) as u64,
            *n,
            "{deployment}/{arm} counted exactly once"
        );
    }
}
