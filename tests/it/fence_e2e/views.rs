//! Issue 9, item 3, for verdicts and the promotion gate, against the real broker (tansu): each
//! owner shares its deployments' verdict views through the latch topic, so every replica's
//! `/v1/verdicts` and `/v1/gate/{d}/decision` agree with the owner's and a passing canary's
//! promotion gate is open on every replica; a paused owner's views stop reading as `pass`
//! elsewhere once older than their bound. Prints the propagation time and the extra latch-topic
//! traffic.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{claimed, config, setup, time_until, Setup};
use crate::support::{self, Driftd};

/// What every replica must agree on about one deployment: the decision and, per metric, each
/// source's state and events per arm.
fn evidence_of(metrics: &serde_json::Value) -> Vec<String> {
    let sources = ["canary_vs_control", "self_baseline", "late_drift"];
    metrics
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| {
            sources.iter().filter_map(move |s| {
                let v = &m[s];
                (!v.is_null()).then(|| {
                    format!(
                        "{} {} {} {} n {}/{}",
                        m["metric"],
                        m["state"],
                        v["source"],
                        v["state"],
                        v["n_canary"],
                        v["n_control"]
                    )
                })
            })
        })
        .collect()
}

/// `d`'s `/v1/verdicts` entry of `deployment` (its evidence), and whether it came from another
/// owner's shared view.
fn verdicts_entry(d: &Driftd, deployment: &str) -> Option<(Vec<String>, bool)> {
    shown(d, deployment).map(|(evidence, age)| (evidence, age.is_some()))
}

/// `d`'s `/v1/verdicts` entry of `deployment` (its evidence) and, when it came from another
/// owner's shared view, that view's age when served (ms).
fn shown(d: &Driftd, deployment: &str) -> Option<(Vec<String>, Option<i64>)> {
    let body: serde_json::Value =
        serde_json::from_str(&d.get(&format!("/v1/verdicts?deployment={deployment}"))?).ok()?;
    let entry = body["deployments"].as_array()?.first()?.clone();
    let shared = &body["shared_views"][deployment];
    Some((
        evidence_of(&entry["metrics"]),
        (!shared.is_null()).then(|| shared["age_ms"].as_i64().expect("age_ms")),
    ))
}

/// `d`'s `/v1/gate/{deployment}/decision` body: the decision and its evidence.
fn decision_of(d: &Driftd, deployment: &str) -> (String, Vec<String>) {
    let (status, text) = d.request(
        reqwest::Method::GET,
        &format!("/v1/gate/{deployment}/decision"),
        None,
        None,
    );
    assert_eq!(status, 200, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    (body["decision"].to_string(), evidence_of(&body["metrics"]))
}

fn status_of(d: &Driftd, path: &str) -> u16 {
    d.request(reqwest::Method::GET, path, None, None).0
}

/// The `view/` records of the latch topic: (count, bytes of keys and values).
fn view_records(s: &Setup, partitions: i32) -> (usize, usize) {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    let topic = format!("{}.latches", s.topic);
    let ends = support::end_offsets(&s.brokers, &topic, partitions);
    let c = support::reader(&s.brokers);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let (mut read, mut views, mut bytes) = (0i64, 0, 0);
    let started = Instant::now();
    while read < ends.iter().sum::<i64>() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "latch topic read back"
        );
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("latch record read back");
        read += 1;
        if m.key().is_some_and(|k| k.starts_with(b"view/")) {
            views += 1;
            bytes += m.key_len() + m.payload_len();
        }
    }
    (views, bytes)
}

#[test]
fn every_replica_answers_the_owners_verdicts_and_promotion_gate() {
    let s = setup("it-fence-views");
    // Views refreshed every 2 s (the evidence figures elsewhere are at most that old once the
    // traffic stops); 30 s by default.
    let conf = |m: &str| {
        config(&s, m, "client.id").replace("[persist]\n", "[persist]\ninterval = \"2s\"\n")
    };
    let a = Driftd::start(&conf("a"));
    a.wait_until(
        Duration::from_secs(60),
        "replica a claimed the partition",
        || claimed(&a),
    );
    let b = Driftd::start(&conf("b"));
    let c = Driftd::start(&conf("c"));
    let all = [&a, &b, &c];
    for d in all {
        d.wait_until(Duration::from_secs(60), "ready", || {
            d.get("/readyz").is_some()
        });
    }
    // The joins rebalance the group; whichever replica holds the partition after it owns both
    // deployments.
    std::thread::sleep(Duration::from_secs(4));
    let started = Instant::now();
    let generator = std::thread::spawn({
        let (brokers, topic) = (s.brokers.clone(), s.topic.clone());
        move || {
            let status = Command::new(env!("CARGO_BIN_EXE_driftd"))
                .args(["gen", "--brokers", &brokers, "--topic", &topic])
                .args(["--rate", "4000", "--count", "40000", "--deployments", "2"])
                .args([
                    "--seed",
                    "3",
                    "--drift-metric",
                    "refusal",
                    "--drift-to",
                    "0.25",
                ])
                .args(["--drift-at", "0.2"])
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "driftd gen");
        }
    });
    // Propagation: from the owner's pipeline first showing support-bot's refusal failing to
    // every replica's /v1/verdicts showing it, as polled; and the age of the owner's view when
    // each other replica first served it failing (made on the snapshot the owner shows).
    let failing = |e: &[String]| e.iter().any(|l| l.starts_with("\"refusal\" \"fail\""));
    let (mut owner, mut failed_at) = (None, None);
    let mut first_age: [Option<i64>; 3] = [None; 3];
    let mut round;
    let propagated = loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "support-bot's failure on every replica: owner {owner:?}, failed {failed_at:?}"
        );
        let polled = Instant::now();
        let entries: Vec<_> = all.iter().map(|d| shown(d, "support-bot")).collect();
        round = polled.elapsed();
        for (i, e) in entries.iter().enumerate() {
            match e {
                Some((evidence, None)) => {
                    owner = Some(i);
                    if failed_at.is_none() && failing(evidence) {
                        failed_at = Some(Instant::now());
                    }
                }
                Some((evidence, Some(age))) if failing(evidence) => {
                    first_age[i] = first_age[i].or(Some(*age));
                }
                _ => {}
            }
        }
        let everywhere = entries
            .iter()
            .all(|e| e.as_ref().is_some_and(|(evidence, _)| failing(evidence)));
        if let (Some(at), true) = (failed_at, everywhere) {
            break at.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let view_age = first_age.iter().flatten().max().copied().unwrap_or(0);
    let owner = all[owner.expect("one replica owns support-bot")];
    assert_eq!(
        all.iter()
            .filter(|d| verdicts_entry(d, "support-bot").is_some_and(|(_, shared)| !shared))
            .count(),
        1,
        "exactly one replica serves support-bot from its own pipeline"
    );
    generator.join().unwrap();
    // The published cohort counts, not the ingest counter: the views and the gate are made
    // from the owner's publications, which follow its reads by up to a publication interval.
    owner.wait_until(
        Duration::from_secs(60),
        "the owner published every event",
        || owner.metrics().sum("driftd_cohort_events_total", &[]) >= 40_000.0,
    );
    let ended = Instant::now();

    // Once the owner read every event, every replica agrees with it within a refresh.
    time_until(
        Duration::from_secs(60),
        "every replica to agree with the owner",
        || {
            ["support-bot", "search-assist"].iter().all(|dep| {
                let want = decision_of(owner, dep);
                let entry = verdicts_entry(owner, dep);
                all.iter().all(|d| {
                    decision_of(d, dep) == want
                        && verdicts_entry(d, dep).map(|e| e.0) == entry.clone().map(|e| e.0)
                })
            })
        },
    );
    let agreed = ended.elapsed();
    for dep in ["support-bot", "search-assist"] {
        let want = decision_of(owner, dep);
        for d in all {
            assert_eq!(decision_of(d, dep), want, "{dep} on {}", d.admin);
        }
    }
    assert_eq!(decision_of(owner, "support-bot").0, "\"contained\"");
    assert_eq!(decision_of(owner, "search-assist").0, "\"pass\"");
    for d in all {
        assert_eq!(
            status_of(d, "/v1/gate/search-assist/promotion"),
            200,
            "{}",
            d.admin
        );
        assert_eq!(
            status_of(d, "/v1/gate/support-bot/promotion"),
            503,
            "{}",
            d.admin
        );
    }
    // The owner paused: its views age on the other replicas, and past the bound
    // (3 × 2 s + latch_read_timeout 5 s) none of them promotes on them.
    let others: Vec<&Driftd> = all
        .iter()
        .copied()
        .filter(|d| d.pid() != owner.pid())
        .collect();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &owner.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let paused = Instant::now();
    time_until(
        Duration::from_secs(30),
        "the paused owner's views to expire",
        || {
            others
                .iter()
                .all(|d| status_of(d, "/v1/gate/search-assist/promotion") == 412)
        },
    );
    let expired_after = paused.elapsed();
    for d in &others {
        let (status, text) = d.request(
            reqwest::Method::GET,
            "/v1/gate/search-assist/decision",
            None,
            None,
        );
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (status, body["decision"].as_str()),
            (200, Some("insufficient")),
            "{body}"
        );
        assert_eq!(body["shared_view"]["expired"], true, "{body}");
        assert_eq!(status_of(d, "/v1/gate/support-bot/promotion"), 503);
    }
    signal("-CONT");
    time_until(
        Duration::from_secs(30),
        "the woken owner's views to be fresh again",
        || {
            all.iter()
                .all(|d| status_of(d, "/v1/gate/search-assist/promotion") == 200)
        },
    );
    let (views, bytes) = view_records(&s, 2);
    let mean = bytes as f64 / views.max(1) as f64;
    println!(
        "views: support-bot's failure on the owner shown by every replica's /v1/verdicts {:.0} ms later \
         as polled (one poll round: {:.0} ms; the owner's view was at most {view_age} ms old when another replica first served it); \
         every replica agreed with the owner {:.1} s after the traffic ended; \
         {views} view records ({:.0} B each) for 2 deployments in {:.0} s at persist.interval 2 s; \
         at the default 30 s: {:.0} B/s per deployment once its state settles, plus one record per decision change; \
         the paused owner's passing view stopped reading as pass {:.1} s after the pause (bound 11 s)",
        propagated.as_secs_f64() * 1e3,
        round.as_secs_f64() * 1e3,
        agreed.as_secs_f64(),
        mean,
        started.elapsed().as_secs_f64(),
        mean / 30.0,
        expired_after.as_secs_f64()
    );
}
