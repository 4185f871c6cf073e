//! Authenticated brokers, for real: driftd against a tansu that requires SASL/SCRAM, with the
//! password from `kafka.secrets` (an environment variable, a file). It consumes, dead-letters
//! and commits; with a wrong password it is not ready and says why (mechanism and user, never
//! the password) once, and a corrected secret file plus SIGHUP brings it back without a restart,
//! its state kept: nothing is counted twice across the Kafka clients it rebuilds.
//!
//! Each test runs its own tansu ([`Tansu::authenticated`]) and takes the turn
//! ([`support::turn`]) for its whole length. TLS is not covered: tansu 0.6.0 refuses `--cert`
//! together with `--key`, and with `--cert` alone its listener still speaks plaintext.

use std::time::{Duration, Instant};

use super::stream::{self, applied, rejected, Expected, PARTITIONS};
use super::support::{self, Driftd, Props};
use super::tansu::{Tansu, User};

const USER: &str = "driftd-svc";
const PASSWORD: &str = "pw-Corr3ct-7d1f0c";
const WRONG: &str = "pw-Wr0ng-93be5a";

/// The test's own clients (producer, reader, admin) authenticate as `USER`.
fn props(mechanism: &'static str) -> [(&'static str, &'static str); 4] {
    [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", mechanism),
        ("sasl.username", USER),
        ("sasl.password", PASSWORD),
    ]
}

/// driftd's config for `topic` with the password from `secret` (a TOML secret reference).
fn config(addr: &str, topic: &str, group: &str, mechanism: &str, secret: &str) -> String {
    format!(
        "{}\n[persist]\ninterval = \"1s\"\n\n[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"{mechanism}\"\n\"sasl.username\" = \"{USER}\"\n\n[kafka.secrets]\n\"sasl.password\" = {secret}\n",
        stream::config(addr, topic, &format!("{topic}.dlq"), group)
    )
}

/// Produces a batch and waits until driftd has counted all of it (cumulative `expected`), the
/// dead letters are delivered and the group has committed the end offsets.
#[allow(clippy::too_many_arguments)]
fn consume_batch(
    d: &Driftd,
    addr: &str,
    props: Props<'_>,
    topic: &str,
    group: &str,
    (valid, bad): (u64, u64),
    seed: u64,
    expected: &mut Expected,
) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(stream::produce_as(
        addr,
        props,
        topic,
        (valid, bad, 0),
        seed,
        expected,
    ));
    d.wait_until(Duration::from_secs(60), "the batch consumed", || {
        let m = d.metrics();
        applied(&m) >= expected.valid
            && rejected(&m) >= expected.bad()
            && m.sum("driftd_dead_letters_total", &[("outcome", "delivered")]) as u64
                >= expected.bad()
    });
    let ends = support::end_offsets_as(addr, props, topic, PARTITIONS);
    d.wait_until(Duration::from_secs(30), "the end offsets committed", || {
        support::committed_offsets_as(addr, props, group, topic, PARTITIONS) == ends
    });
    let m = d.metrics();
    assert_eq!(applied(&m), expected.valid, "each valid event counted once");
    assert_eq!(rejected(&m), expected.bad(), "each bad event counted once");
    assert_eq!(
        m.sum("driftd_cohort_events_total", &[]) as u64,
        expected.valid
    );
}

/// SCRAM-SHA-512 with the password in an environment variable: consumed, dead-lettered (the
/// records read back), committed.
#[test]
fn scram_sha512_password_from_env_consumes_dead_letters_and_commits() {
    let _turn = support::turn();
    let started = Instant::now();
    let tansu = Tansu::authenticated(&[User {
        name: USER,
        password: PASSWORD,
        mechanism: "scram512",
    }]);
    let broker_up = started.elapsed();
    let props = props("SCRAM-SHA-512");
    let topic = support::unique("it-sasl-env");
    let dlq = format!("{topic}.dlq");
    let group = support::unique("it-sasl-env-group");
    support::create_topics_as(&tansu.addr, &props, &[(&topic, PARTITIONS), (&dlq, 1)]);
    let cfg = config(
        &tansu.addr,
        &topic,
        &group,
        "SCRAM-SHA-512",
        "{ env = \"DRIFTD_IT_KAFKA_PASSWORD\" }",
    );
    let d = Driftd::start_with_env(&cfg, &[("DRIFTD_IT_KAFKA_PASSWORD", PASSWORD)]);
    let mut expected = Expected::default();
    consume_batch(
        &d,
        &tansu.addr,
        &props,
        &topic,
        &group,
        (3_000, 60),
        41,
        &mut expected,
    );
    assert!(d.get("/readyz").is_some(), "ready");
    let dead = stream::read_dead_letters_as(&tansu.addr, &props, &dlq, expected.bad() as usize);
    assert_eq!(
        dead.len() as u64,
        expected.bad(),
        "every rejection dead-lettered"
    );
    assert_no_password(&d, &[PASSWORD]);
    println!(
        "sasl env: broker with users up in {broker_up:?}, whole test {:?}",
        started.elapsed()
    );
}

/// A wrong password in a secret file: not ready, one error naming the mechanism and the user,
/// no password anywhere. The file corrected and SIGHUP: consumed, dead-lettered, committed.
/// Then the clients are rebuilt twice more with state held (wrong again, right again) and a
/// second batch is counted exactly once on top of the first.
#[test]
fn wrong_password_file_not_ready_then_corrected_file_and_sighup_recover_without_a_restart() {
    let _turn = support::turn();
    let started = Instant::now();
    let tansu = Tansu::authenticated(&[User {
        name: USER,
        password: PASSWORD,
        mechanism: "scram256",
    }]);
    let props = props("SCRAM-SHA-256");
    let topic = support::unique("it-sasl-file");
    let dlq = format!("{topic}.dlq");
    let group = support::unique("it-sasl-file-group");
    support::create_topics_as(&tansu.addr, &props, &[(&topic, PARTITIONS), (&dlq, 1)]);
    let (_secret_dir, secret) = support::temp_file("kafka-password", &format!("{WRONG}\n"));
    let cfg = config(
        &tansu.addr,
        &topic,
        &group,
        "SCRAM-SHA-256",
        &format!("{{ file = \"{}\" }}", secret.display()),
    );
    let d = Driftd::start(&cfg);
    let mut expected = Expected::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(stream::produce_as(
        &tansu.addr,
        &props,
        &topic,
        (2_000, 40, 0),
        51,
        &mut expected,
    ));
    d.wait_until(
        Duration::from_secs(20),
        "the refused credentials said",
        || !refusals(&d).is_empty(),
    );
    // librdkafka retries the login several times a second: give it time to repeat itself.
    std::thread::sleep(Duration::from_secs(3));
    let refused = refusals(&d);
    assert_eq!(refused.len(), 1, "said once; log:\n{}", d.log_text());
    let noisy = d
        .log_text()
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .count();
    assert_eq!(
        noisy,
        1,
        "that one line, no other warning; log:\n{}",
        d.log_text()
    );
    let line = &refused[0];
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["sasl_mechanism"], "SCRAM-SHA-256", "{line}");
    assert_eq!(line["sasl_username"], USER, "{line}");
    let message = line["message"].as_str().unwrap();
    assert!(
        message.contains("SIGHUP") && message.contains("kafka.secrets"),
        "says what to do: {message}"
    );
    let (status, body) = d.request(reqwest::Method::GET, "/readyz", None, None);
    assert_eq!(status, 503, "not ready with a wrong password: {body}");
    assert!(
        body.contains(USER) && body.contains("SCRAM-SHA-256") && body.contains("SIGHUP"),
        "/readyz says why and what to do: {body}"
    );
    let m = d.metrics();
    assert_eq!(
        m.sum("driftd_kafka_blocked", &[("reason", "authentication")]),
        1.0
    );
    assert_eq!(applied(&m), 0, "nothing consumed without credentials");
    assert_no_password(&d, &[WRONG, PASSWORD]);
    let refused_at = started.elapsed();

    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    let fixed = Instant::now();
    d.sighup();
    d.wait_until(Duration::from_secs(60), "consuming after SIGHUP", || {
        let m = d.metrics();
        applied(&m) >= expected.valid && rejected(&m) >= expected.bad()
    });
    let recovered = fixed.elapsed();
    let ends = support::end_offsets_as(&tansu.addr, &props, &topic, PARTITIONS);
    d.wait_until(Duration::from_secs(30), "the end offsets committed", || {
        support::committed_offsets_as(&tansu.addr, &props, &group, &topic, PARTITIONS) == ends
    });
    d.wait_until(Duration::from_secs(10), "ready", || {
        d.get("/readyz").is_some()
    });
    let m = d.metrics();
    assert_eq!(
        m.sum("driftd_kafka_blocked", &[("reason", "authentication")]),
        0.0
    );
    assert_eq!(applied(&m), expected.valid);
    let dead = stream::read_dead_letters_as(&tansu.addr, &props, &dlq, expected.bad() as usize);
    assert_eq!(
        dead.len() as u64,
        expected.bad(),
        "every rejection dead-lettered"
    );
    assert!(
        d.log_event("SIGHUP: kafka.secrets changed; Kafka clients rebuilt with them (state kept, consuming resumes from the committed offsets)").is_some(),
        "{}",
        d.log_text()
    );

    // Rebuilt with state held: a wrong password again (refused, not ready), then the right
    // one; the next batch is counted once on top of the first.
    std::fs::write(&secret, WRONG).unwrap();
    d.sighup();
    d.wait_until(Duration::from_secs(20), "not ready again", || {
        d.get("/readyz").is_none()
            && d.metrics()
                .sum("driftd_kafka_blocked", &[("reason", "authentication")])
                == 1.0
    });
    std::fs::write(&secret, PASSWORD).unwrap();
    d.sighup();
    consume_batch(
        &d,
        &tansu.addr,
        &props,
        &topic,
        &group,
        (2_000, 40),
        52,
        &mut expected,
    );
    d.wait_until(Duration::from_secs(10), "ready", || {
        d.get("/readyz").is_some()
    });
    assert_no_password(&d, &[WRONG, PASSWORD]);
    println!(
        "sasl file: refused and said after {refused_at:?}, consuming {recovered:?} after SIGHUP, whole test {:?}",
        started.elapsed()
    );
}

/// The log lines that say the brokers refused the credentials.
fn refusals(d: &Driftd) -> Vec<serde_json::Value> {
    d.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("refused the credentials"))
        })
        .collect()
}

/// No password in anything driftd shows: its stdout and stderr, `/metrics`, `/readyz`.
fn assert_no_password(d: &Driftd, passwords: &[&str]) {
    let (_, readyz) = d.request(reqwest::Method::GET, "/readyz", None, None);
    let shown = [
        ("stderr", d.log_text()),
        ("stdout", d.stdout_text()),
        ("/metrics", d.get("/metrics").unwrap_or_default()),
        ("/readyz", readyz),
    ];
    for (what, text) in &shown {
        for p in passwords {
            assert!(!text.contains(p), "a password in driftd's {what}");
        }
    }
}
