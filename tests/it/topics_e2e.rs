//! Topics that are not there, against the real broker (tansu, one per test): a missing event or
//! dead-letter topic is one error and a `/readyz` that says which topic and what to do, not a
//! warning loop; once created, driftd is ready without a restart; with
//! `kafka.create_topics = true` the dead-letter topic is created at start and rejected events
//! reach it.

use std::time::{Duration, Instant};

use super::stream::{self, applied, rejected, Expected, PARTITIONS};
use super::support::{self, Driftd};
use super::tansu::Tansu;

fn warnings_and_errors(d: &Driftd) -> Vec<String> {
    d.log_text()
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .map(str::to_string)
        .collect()
}

#[test]
fn missing_topics_not_ready_saying_which_and_what_to_do_then_ready_once_created() {
    let _turn = support::turn();
    let started = Instant::now();
    let tansu = Tansu::started();
    let topic = support::unique("it-missing");
    let dlq = format!("{topic}.dlq");
    let group = support::unique("it-missing-group");
    let d = Driftd::start(&stream::config(&tansu.addr, &topic, &dlq, &group));
    d.wait_until(Duration::from_secs(20), "the missing topics said", || {
        d.request(reqwest::Method::GET, "/readyz", None, None)
            .1
            .contains("does not exist")
    });
    let said_after = started.elapsed();
    // Give librdkafka time to repeat itself.
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = d.request(reqwest::Method::GET, "/readyz", None, None);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("kafka.topic \"{topic}\" does not exist"))
            && body.contains(&format!("kafka.dead_letter_topic \"{dlq}\" does not exist"))
            && body.contains("kafka.create_topics = true"),
        "which topics and what to do: {body}"
    );
    let said = warnings_and_errors(&d);
    assert!(
        said.len() <= 2 && said.iter().filter(|l| l.contains(&dlq)).count() == 1,
        "one error naming the topics (and at most one librdkafka warning), not a loop: {said:#?}"
    );
    assert_eq!(
        d.metrics()
            .sum("driftd_kafka_blocked", &[("reason", "topic")]),
        1.0
    );

    support::create_topics(&tansu.addr, &[(&topic, PARTITIONS), (&dlq, 1)]);
    let created = Instant::now();
    d.wait_until(
        Duration::from_secs(30),
        "ready once the topics exist",
        || d.get("/readyz").is_some(),
    );
    println!(
        "missing topics: said {said_after:?} after the start ({} warning/error lines), ready {:?} after they were created, whole test {:?}",
        said.len(),
        created.elapsed(),
        started.elapsed()
    );
    assert!(d.log_event("the missing topics are there now").is_some());
}

#[test]
fn create_topics_creates_the_dead_letter_topic_and_rejected_events_reach_it() {
    let _turn = support::turn();
    let started = Instant::now();
    let tansu = Tansu::started();
    let topic = support::unique("it-create");
    let dlq = format!("{topic}.dlq");
    let group = support::unique("it-create-group");
    support::create_topics(&tansu.addr, &[(&topic, PARTITIONS)]);
    let config = stream::config(&tansu.addr, &topic, &dlq, &group).replace(
        "dead_letter_topic = ",
        "create_topics = true\ndead_letter_topic = ",
    );
    let d = Driftd::start(&config);
    let mut expected = Expected::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(stream::produce(
        &tansu.addr,
        &topic,
        1_000,
        30,
        0,
        61,
        &mut expected,
    ));
    d.wait_until(
        Duration::from_secs(60),
        "consumed and dead-lettered",
        || {
            let m = d.metrics();
            applied(&m) == expected.valid
                && rejected(&m) == expected.bad()
                && m.sum("driftd_dead_letters_total", &[("outcome", "delivered")]) as u64
                    == expected.bad()
        },
    );
    assert!(d.get("/readyz").is_some(), "ready");
    assert!(
        d.log_event("dead-letter topic created (kafka.create_topics)")
            .is_some(),
        "{}",
        d.log_text()
    );
    let dead = stream::read_dead_letters(&tansu.addr, &dlq, expected.bad() as usize);
    assert_eq!(dead.len() as u64, expected.bad());
    assert!(
        warnings_and_errors(&d).is_empty(),
        "{:#?}",
        warnings_and_errors(&d)
    );
    println!("create_topics: whole test {:?}", started.elapsed());
}
