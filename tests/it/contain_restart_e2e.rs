//! A contained deployment survives a kill -9, against the real broker (tansu), the real
//! Alertmanager and a flagd flag file: a canary drifting from its first event is failed and
//! contained by the `driftd` binary (flag at its safe variant, a critical alert firing, the gate
//! 503); driftd is killed with SIGKILL before it wrote any state snapshot, so the restart reads
//! the stream again and derives the same `fail` again. After the restart the deployment is still
//! contained and its gate 503 from the first answer on; the open alert is re-sent at start-up
//! (Alertmanager keeps it firing: the same alert, its update time moved on) — and nothing is
//! done twice: the flag file is not written again (same bytes, same inode, same mtime), the
//! audit log holds one flip and one page, and Alertmanager holds one alert.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use driftd::event::format_rfc3339_ms;
use driftd::traffic::CANARY_VERSION;
use serde_json::Value;

use super::contain::real::flagd_eval;
use super::evidence_restart_e2e::{applied, drifting, logged_fails, produce, reference};
use super::support::{self, Driftd};

const TOKEN: &str = "s3cret-admin-token";
const FLAG: &str = "guarded-canary";
const FLAGS: &str = r#"{"$schema":"https://flagd.dev/schema/v0/flags.json","flags":{"guarded-canary":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","targeting":{"if":[{"==":[{"var":"tier"},"beta"]},"on","on"]}}}}"#;

fn config(dir: &Path, brokers: &str, topic: &str, am: &str) -> String {
    let d = dir.display();
    let guard = super::contain_e2e::guard(dir, am, FLAG, "enforce");
    format!(
        r#"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
group_id = "{topic}-group"
commit_interval = "500ms"

[kafka.properties]
"session.timeout.ms" = "180000"
"group.instance.id" = "driftd-contain-restart-test"

[ingest]
publish_interval = "200ms"

[detection.self_baseline]
enabled = false

[persist]
interval = "1h"

[containment]
state_dir = "{d}/state"
admin_token = {{ file = "{d}/token" }}
runbook_url = "https://runbooks.example/driftd"
alert_repeat = "10m"

{guard}
[log]
format = "json"
"#
    )
}

/// This deployment's alerts in Alertmanager (active ones: a resolved alert is not listed).
fn am_alerts(am: &str, deployment: &str) -> Vec<Value> {
    let all: Vec<Value> = reqwest::blocking::get(format!("{am}/api/v2/alerts"))
        .unwrap()
        .json()
        .unwrap();
    all.into_iter()
        .filter(|a| a["labels"]["deployment"] == deployment)
        .collect()
}

/// The whole audit log (it lives in the state directory, so it spans both runs).
fn audit(d: &Driftd) -> Vec<Value> {
    let (status, text) = d.request(
        reqwest::Method::GET,
        "/v1/audit?after=0&limit=1000",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{text}");
    let page: Value = serde_json::from_str(&text).unwrap();
    page["records"].as_array().unwrap().clone()
}

fn count(records: &[Value], pred: impl Fn(&Value) -> bool) -> usize {
    records.iter().filter(|r| pred(r)).count()
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

/// The flag file as it is on disk: bytes, inode, mtime (ns). An atomic rewrite changes the
/// inode even when it writes the same bytes.
fn file_state(path: &Path) -> (Vec<u8>, u64, i64) {
    let m = std::fs::metadata(path).unwrap();
    (
        std::fs::read(path).unwrap(),
        m.ino(),
        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
    )
}

#[test]
fn a_contained_deployment_stays_contained_across_kill_9_without_a_second_flip_or_page() {
    let broker = support::broker();
    let brokers = broker.addr.clone();
    let am = std::env::var("DRIFTD_TEST_ALERTMANAGER")
        .ok()
        .filter(|s| !s.is_empty())
        .expect("DRIFTD_TEST_ALERTMANAGER is not set: run scripts/test.sh, which starts Alertmanager and sets it");
    let topic = support::unique("it-contain-restart");
    let deployment = support::unique("guarded-bot");
    support::create_topics(&brokers, &[(&topic, 1)]);
    let messages = drifting(&deployment, 3_000, 0.3, 11);
    let (fail, _) = reference(&messages);
    let (at, _, _) = fail.expect("the drifting canary fails in an uninterrupted pass");
    let dir = tempfile::tempdir().unwrap();
    let flags = dir.path().join("flags.json");
    std::fs::write(&flags, FLAGS).unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let toml = config(dir.path(), &brokers, &topic, &am);
    produce(&brokers, &topic, &messages);
    let started = Instant::now();

    let d = Driftd::start(&toml);
    d.wait_until(Duration::from_secs(60), "the gate to close", || {
        gate(&d, &deployment) == 503
    });
    let contained_after = started.elapsed();
    let flip = format!("{deployment}:{CANARY_VERSION}/flag/contain");
    let page = format!("{deployment}:{CANARY_VERSION}/am/trigger-critical");
    // Recorded done in the latch state: what a restart reads.
    let state_dir = dir.path().join("state");
    d.wait_until(
        Duration::from_secs(30),
        "the flip and the page recorded done",
        || {
            let state = driftd::contain::store::LatchStore::open(&state_dir)
                .and_then(|mut s| s.load())
                .unwrap_or_default();
            state
                .get(&deployment)
                .is_some_and(|l| l.done.contains(&flip) && l.done.contains(&page))
        },
    );
    let alerts = am_alerts(&am, &deployment);
    assert_eq!(alerts.len(), 1, "one alert: {alerts:?}");
    let alert = alerts[0].clone();
    assert_eq!(alert["labels"]["severity"], "critical");
    let generator = alert["generatorURL"].as_str().unwrap();
    assert_eq!(
        generator,
        format!("{}/ui/deployments/{deployment}", d.admin),
        "the real Alertmanager keeps the link to the deployment's page"
    );
    let flag_before = file_state(&flags);
    // `/v1/cohorts` is published every `publish_interval`: the gate can close before the
    // events behind the fail show there.
    d.wait_until(
        Duration::from_secs(10),
        "the applied events published",
        || applied(&d) > at as u64,
    );
    assert_eq!(logged_fails(&d).len(), 1, "the fail came from the stream");
    let first_admin = d.admin.clone();
    // SIGKILL: Drop kills the child without a signal it could handle. No snapshot was written
    // (`persist.interval` is an hour), so nothing was committed either: the restart reads the
    // whole stream again.
    drop(d);
    let killed_at = format_rfc3339_ms(driftd::clock::wall_ms());
    let restarted = Instant::now();

    let d = Driftd::start(&toml);
    assert_eq!(
        gate(&d, &deployment),
        503,
        "closed from the first answer on"
    );
    let mut resent = Value::Null;
    d.wait_until(
        Duration::from_secs(20),
        "the open alert re-sent at start-up",
        || {
            let now = am_alerts(&am, &deployment);
            let fresh = now.len() == 1
                && now[0]["updatedAt"].as_str().unwrap_or("") > killed_at.as_str()
                && now[0]["generatorURL"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(&d.admin);
            if fresh {
                resent = now[0].clone();
            }
            fresh
        },
    );
    let resent_after = restarted.elapsed();
    d.wait_until(Duration::from_secs(60), "ready", || {
        d.get("/readyz").is_some()
    });
    let ready_after = restarted.elapsed();
    assert_eq!(gate(&d, &deployment), 503, "closed right after ready");
    assert_ne!(
        d.admin, first_admin,
        "a new admin address tells the runs apart"
    );
    for field in ["fingerprint", "startsAt", "labels"] {
        assert_eq!(resent[field], alert[field], "the same alert: {field}");
    }
    assert_eq!(resent["status"]["state"], "active");
    assert!(
        resent["endsAt"].as_str() > alert["endsAt"].as_str(),
        "kept firing longer: {} → {}",
        alert["endsAt"],
        resent["endsAt"]
    );
    // The restart derives the same fail again from the same events, and all of them are read.
    d.wait_until(Duration::from_secs(60), "the fail derived again", || {
        logged_fails(&d).len() == 1 && applied(&d) == messages.len() as u64
    });
    // A fixed wait to show that something does NOT happen: the containment task has the
    // repeated fail by now, and no action may follow it.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        file_state(&flags),
        flag_before,
        "the flag file was not written again"
    );
    assert_eq!(
        flagd_eval(&flags, FLAG),
        "False off",
        "still at the safe variant"
    );
    let m = d.metrics();
    assert_eq!(
        m.sum("driftd_actions_total", &[]),
        0.0,
        "no action after the restart:\n{}",
        m.text
    );
    assert_eq!(
        m.sum("driftd_contained", &[("deployment", &deployment)]),
        1.0
    );
    let records = audit(&d);
    assert_eq!(
        count(&records, |r| r["key"] == flip.as_str()),
        1,
        "one flip in the audit log: {records:#?}"
    );
    assert_eq!(
        count(&records, |r| r["key"] == page.as_str()),
        1,
        "one page in the audit log: {records:#?}"
    );
    assert_eq!(
        count(&records, |r| r["event"] == "transition"),
        1,
        "one transition, to contained: {records:#?}"
    );
    assert_eq!(
        count(&records, |r| r["event"] == "resume"),
        0,
        "nothing pending to resume"
    );
    let (status, latches) = d.request(reqwest::Method::GET, "/v1/deployments", Some(TOKEN), None);
    assert_eq!(status, 200);
    let latches: Value = serde_json::from_str(&latches).unwrap();
    assert_eq!(latches[&deployment]["phase"], "contained");
    let alerts = am_alerts(&am, &deployment);
    assert_eq!(alerts.len(), 1, "still one alert: {alerts:?}");
    assert_eq!(alerts[0]["fingerprint"], alert["fingerprint"]);
    println!(
        "contained {:.1} s after start (fail after {} of {} events); after the kill -9: ready in {:.1} s, alert re-sent (seen) after {:.1} s; flag file untouched, 1 flip, 1 page, 1 alert",
        contained_after.as_secs_f64(),
        at + 1,
        messages.len(),
        ready_after.as_secs_f64(),
        resent_after.as_secs_f64()
    );

    // Released by hand after the restart: the page resolves, once.
    let (status, text) = d.request(
        reqwest::Method::POST,
        &format!("/v1/deployments/{deployment}/release"),
        Some(TOKEN),
        Some(serde_json::json!({"operator": "ana", "reason": "verified after the restart"})),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(gate(&d, &deployment), 200);
    d.wait_until(Duration::from_secs(30), "the alert to resolve", || {
        am_alerts(&am, &deployment).is_empty()
    });
    let records = audit(&d);
    assert_eq!(
        count(&records, |r| r["op"] == "resolve"
            && r["result"] == "success"),
        1,
        "{records:#?}"
    );
    drop(d);
    drop(broker);
}
