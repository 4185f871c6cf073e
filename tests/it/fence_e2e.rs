//! Issue 9, items 2 and 3, against the real broker (tansu) and the real Alertmanager: with
//! `persist.latch_topic`, every replica answers the gate from the latches every owner writes
//! to the topic, a release sent to a replica that does not own the deployment is forwarded to
//! the owner, which applies and audits it once; and an owner paused until its partition moved
//! (a zombie) takes no action for it when it wakes. Prints the time from a change on the owner
//! to the other replica's gate showing it.

use std::process::Command;
use std::time::{Duration, Instant};

use super::contain_e2e::{am_alerts, audit, FLAGS};
use super::support::{self, Driftd};

mod views;

const TOKEN: &str = "s3cret-admin-token";

struct Setup {
    dir: tempfile::TempDir,
    brokers: String,
    _broker: support::Broker,
    topic: String,
    alertmanager: String,
}

fn setup(prefix: &str) -> Setup {
    let broker = support::broker();
    let brokers = broker.addr.clone();
    let alertmanager = std::env::var("DRIFTD_TEST_ALERTMANAGER")
        .ok()
        .filter(|s| !s.is_empty())
        .expect("DRIFTD_TEST_ALERTMANAGER is not set: run scripts/test.sh (it starts prometheus-alertmanager)");
    let topic = support::unique(prefix);
    // One partition: one owner at a time, the other replica idle — the case fencing is about.
    support::create_topics(&brokers, &[(&topic, 1)]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flags.json"), FLAGS).unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    Setup {
        dir,
        brokers,
        _broker: broker,
        topic,
        alertmanager,
    }
}

/// Replica `member`'s config; `membership` is `client.id` (dynamic) or `group.instance.id`
/// (static: a replacement under the same id takes the member's partitions at once).
fn config(s: &Setup, member: &str, membership: &str) -> String {
    let d = s.dir.path().display();
    format!(
        r#"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
group_id = "{topic}-group"
start_from = "earliest"

[kafka.properties]
"{membership}" = "{member}"
"session.timeout.ms" = "180000"
"heartbeat.interval.ms" = "500"

[persist]
latch_topic = "{topic}.latches"
latch_topic_partitions = 2

[detection.self_baseline]
enabled = false

[containment]
state_dir = "{d}/state-{member}"
admin_token = {{ file = "{d}/token" }}
alert_repeat = "1s"

[[containment.targets]]
kind = "alertmanager"
name = "am"
url = "{am}"

[[containment.targets]]
kind = "flagd"
name = "flag"
path = "{d}/flags.json"
flag = "support-bot-canary"
safe_variant = "off"

[[containment.policies]]
name = "hold"
deployments = ["search-assist"]
mode = "enforce"
alerts = ["am"]
contain = []

[[containment.policies]]
name = "canary-guard"
mode = "enforce"
alerts = ["am"]
contain = ["flag"]

[log]
format = "json"
"#,
        brokers = s.brokers,
        topic = s.topic,
        am = s.alertmanager,
    )
}

/// `driftd gen`: `count` events over `deployments` deployments; with `drift`, support-bot's
/// canary refuses 25% of the time from a fifth of the way in.
fn gen(s: &Setup, count: u32, deployments: u32, drift: bool) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftd"));
    cmd.args(["gen", "--brokers", &s.brokers, "--topic", &s.topic])
        .args(["--rate", "4000", "--count", &count.to_string()])
        .args(["--deployments", &deployments.to_string(), "--seed", "3"]);
    if drift {
        cmd.args(["--drift-metric", "refusal", "--drift-to", "0.25"])
            .args(["--drift-at", "0.2"]);
    }
    let status = cmd.stderr(std::process::Stdio::null()).status().unwrap();
    assert!(status.success(), "driftd gen");
}

fn gate(d: &Driftd, deployment: &str) -> u16 {
    d.request(
        reqwest::Method::GET,
        &format!("/v1/gate/{deployment}"),
        None,
        None,
    )
    .0
}

fn claimed(d: &Driftd) -> bool {
    d.log_text().contains("latch epoch claimed")
}

/// Alertmanager's active alerts of `deployment` raised by any of `replicas`.
fn alerts_of(s: &Setup, replicas: &[&Driftd], deployment: &str) -> usize {
    replicas
        .iter()
        .flat_map(|d| am_alerts(&s.alertmanager, &format!("{}/", d.admin)))
        .filter(|a| a["labels"]["deployment"] == deployment)
        .count()
}

fn count(records: &[serde_json::Value], pred: impl Fn(&serde_json::Value) -> bool) -> usize {
    records.iter().filter(|r| pred(r)).count()
}

/// Polls `cond` every 5 ms for up to `within`; returns how long it took.
fn time_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < within {
        if cond() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out after {within:?} waiting for {what}");
}

#[test]
fn a_release_sent_to_a_replica_that_does_not_own_the_deployment_opens_every_gate_once() {
    let s = setup("it-fence-release");
    let a = Driftd::start(&config(&s, "a", "client.id"));
    a.wait_until(
        Duration::from_secs(60),
        "replica a claimed the partition",
        || claimed(&a),
    );
    let b = Driftd::start(&config(&s, "b", "client.id"));
    let c = Driftd::start(&config(&s, "c", "client.id"));
    // b's and c's joining rebalance the group; whichever replica holds the partition after it
    // owns the deployment.
    std::thread::sleep(Duration::from_secs(4));
    gen(&s, 60_000, 1, true);
    let replicas = [&a, &b, &c];
    let owner = {
        let mut who = None;
        a.wait_until(
            Duration::from_secs(90),
            "one replica contained support-bot",
            || {
                who = replicas.into_iter().find(|d| gate(d, "support-bot") == 503);
                who.is_some()
            },
        );
        who.unwrap()
    };
    let others: Vec<&Driftd> = replicas
        .into_iter()
        .filter(|d| !std::ptr::eq(*d, owner))
        .collect();
    let shown = time_until(
        Duration::from_secs(10),
        "the other replicas' gates to close",
        || others.iter().all(|d| gate(d, "support-bot") == 503),
    );
    owner.wait_until(Duration::from_secs(30), "the alert", || {
        alerts_of(&s, &replicas, "support-bot") == 1
    });

    let body = serde_json::json!({"reason": "false alarm, verified by hand"});
    let (status, text) = others[0].request(
        reqwest::Method::POST,
        "/v1/deployments/support-bot/release",
        Some(TOKEN),
        Some(body),
    );
    let asked = Instant::now();
    assert_eq!(status, 202, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["outcome"], "forwarded", "{answer}");
    time_until(Duration::from_secs(10), "all three gates to open", || {
        replicas.iter().all(|d| gate(d, "support-bot") == 200)
    });
    let opened = asked.elapsed();
    owner.wait_until(Duration::from_secs(30), "the alert to resolve", || {
        alerts_of(&s, &replicas, "support-bot") == 0
    });
    println!(
        "latch topic: the owner's containment shown by the two other replicas' gates {:.0} ms \
         later; a release sent to a non-owner opened all three gates in {:.0} ms",
        shown.as_secs_f64() * 1e3,
        opened.as_secs_f64() * 1e3
    );
    // The owner applied and audited the release once; the replicas that did not own the
    // deployment (one of them received the request) neither applied nor acted.
    std::thread::sleep(Duration::from_secs(2));
    let by_owner = audit(owner);
    let released =
        |r: &serde_json::Value| r["event"] == "transition" && r["transition"]["to"] == "released";
    assert_eq!(count(&by_owner, released), 1, "{by_owner:#?}");
    assert_eq!(
        count(&by_owner, |r| r["op"] == "resolve"
            && r["result"] == "success"),
        1,
        "one resolve: {by_owner:#?}"
    );
    for other in &others {
        let records = audit(other);
        assert_eq!(count(&records, released), 0, "{records:#?}");
        assert_eq!(
            count(&records, |r| r["event"] == "action"),
            0,
            "{records:#?}"
        );
    }
}

#[test]
fn an_owner_paused_until_its_partition_moved_takes_no_action_when_it_wakes() {
    let s = setup("it-fence-zombie");
    let a = Driftd::start(&config(&s, "a", "group.instance.id"));
    a.wait_until(
        Duration::from_secs(60),
        "replica a claimed the partition",
        || claimed(&a),
    );
    // Healthy traffic of two deployments, then search-assist contained by hand on its owner:
    // an open alert the owner keeps re-sending every `alert_repeat`.
    gen(&s, 2_000, 2, false);
    a.wait_until(Duration::from_secs(30), "a saw search-assist", || {
        gate(&a, "search-assist") == 200
    });
    let (status, text) = a.request(
        reqwest::Method::POST,
        "/v1/deployments/search-assist/contain",
        Some(TOKEN),
        Some(serde_json::json!({"reason": "hold while we look"})),
    );
    assert_eq!(status, 200, "{text}");
    a.wait_until(
        Duration::from_secs(30),
        "search-assist's alert, recorded done",
        || {
            alerts_of(&s, &[&a], "search-assist") == 1
                && count(&audit(&a), |r| {
                    r["op"] == "trigger" && r["result"] == "success"
                }) == 1
        },
    );
    // The action is audited, then recorded done in the latch topic: a pause between the two
    // is the one window in which a new owner would page again (see the README).
    std::thread::sleep(Duration::from_millis(500));

    // Paused; a replacement under the same static member id takes the partition over.
    let stop = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &a.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    stop("-STOP");
    // Its own state_dir (and audit log): another pod, the same member id.
    let a2 =
        Driftd::start(&config(&s, "a", "group.instance.id").replace("/state-a\"", "/state-a2\""));
    a2.wait_until(
        Duration::from_secs(60),
        "the replacement claimed the partition",
        || claimed(&a2),
    );
    assert_eq!(
        gate(&a2, "search-assist"),
        503,
        "taken over from the latch topic"
    );
    gen(&s, 60_000, 1, true);
    a2.wait_until(
        Duration::from_secs(90),
        "the new owner contained support-bot",
        || {
            let records = audit(&a2);
            gate(&a2, "support-bot") == 503
                && count(&records, |r| {
                    r["provider"] == "flagd" && r["result"] == "success"
                }) == 1
                && alerts_of(&s, &[&a, &a2], "support-bot") == 1
        },
    );
    let flags = std::fs::read_to_string(s.dir.path().join("flags.json")).unwrap();
    assert_ne!(flags, FLAGS, "the flag was flipped");

    stop("-CONT");
    // Woken on a loaded machine, its first checks may not read the latch topic to its end in
    // time (dropped as `unchecked`, never acted on); the re-sends after them meet the epoch.
    a.wait_until(
        Duration::from_secs(30),
        "the woken owner's action dropped for the newer epoch",
        || {
            a.metrics()
                .sum("driftd_actions_fenced_total", &[("reason", "epoch")])
                > 0.0
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let zombie = audit(&a);
    let woke = zombie
        .iter()
        .position(|r| r["event"] == "action_dropped")
        .expect("the dropped action is audited");
    for dropped in zombie[woke..]
        .iter()
        .filter(|r| r["event"] == "action_dropped")
    {
        assert!(
            dropped["reason"] == "epoch" || dropped["reason"] == "unchecked",
            "{dropped:#}"
        );
    }
    assert_eq!(
        count(&zombie[woke..], |r| r["event"] == "action"
            && r["result"] == "success"),
        0,
        "no action after waking: {zombie:#?}"
    );
    let new_owner = audit(&a2);
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join("flags.json")).unwrap(),
        flags,
        "the flag file is as the new owner left it"
    );
    assert_eq!(
        alerts_of(&s, &[&a, &a2], "support-bot"),
        1,
        "no second alert"
    );
    assert_eq!(
        count(&new_owner, |r| r["event"] == "action"
            && r["op"] == "trigger"
            && r["incident"]
                .as_str()
                .is_some_and(|i| i.starts_with("search-assist"))
            && r["result"] == "success"),
        0,
        "the new owner did not page search-assist again: {new_owner:#?}"
    );
    println!(
        "zombie: {} action(s) dropped by the woken owner ({})",
        a.metrics().sum("driftd_actions_fenced_total", &[]),
        zombie[woke]["key"]
    );
}
