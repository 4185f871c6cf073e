//! End to end: a drift injected with `driftd gen` into the real broker is detected by the
//! `driftd` binary, contained (flagd file, real Alertmanager, gate), released with the right
//! token only, and the audit log tells the story in order. The dry-run variant changes nothing.

use std::process::Command;
use std::time::Duration;

use super::contain::real::flagd_eval;
use super::support::{self, Driftd};

pub(crate) const FLAGS: &str = r#"{"$schema":"https://flagd.dev/schema/v0/flags.json","flags":{"support-bot-canary":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","targeting":{"if":[{"==":[{"var":"tier"},"beta"]},"on","on"]}}}}"#;

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
        .expect("DRIFTD_TEST_ALERTMANAGER is not set: run scripts/test.sh");
    let topic = support::unique(prefix);
    support::create_topics(&brokers, &[(&topic, 3)]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flags.json"), FLAGS).unwrap();
    std::fs::write(dir.path().join("token"), "s3cret-admin-token\n").unwrap();
    Setup {
        dir,
        brokers,
        _broker: broker,
        topic,
        alertmanager,
    }
}

fn config(s: &Setup, mode: &str) -> String {
    let d = s.dir.path().display();
    format!(
        r#"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
group_id = "{topic}-group"

[detection.self_baseline]
enabled = false

[containment]
state_dir = "{d}/state"
admin_token = {{ file = "{d}/token" }}
runbook_url = "https://runbooks.example/driftd"

{guard}
[log]
format = "json"
"#,
        brokers = s.brokers,
        topic = s.topic,
        guard = guard(s.dir.path(), &s.alertmanager, "support-bot-canary", mode),
    )
}

/// The containment the e2e tests run: the Alertmanager at `am` and the flagd file
/// `flags.json` under `dir` (its flag `flag`, safe variant `off`) as targets, and the
/// `canary-guard` policy in `mode` paging the one and flipping the other.
pub(crate) fn guard(dir: &std::path::Path, am: &str, flag: &str, mode: &str) -> String {
    let d = dir.display();
    format!(
        r#"
[[containment.targets]]
kind = "alertmanager"
name = "am"
url = "{am}"

[[containment.targets]]
kind = "flagd"
name = "flag"
path = "{d}/flags.json"
flag = "{flag}"
safe_variant = "off"

[[containment.policies]]
name = "canary-guard"
mode = "{mode}"
alerts = ["am"]
contain = ["flag"]
"#
    )
}

fn gen_drift(brokers: &str, topic: &str) {
    let status = Command::new(env!("CARGO_BIN_EXE_driftd"))
        .args([
            "gen",
            "--brokers",
            brokers,
            "--topic",
            topic,
            "--rate",
            "4000",
            "--count",
            "60000",
        ])
        .args([
            "--deployments",
            "1",
            "--drift-metric",
            "refusal",
            "--drift-to",
            "0.25",
            "--drift-at",
            "0.2",
            "--seed",
            "3",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "driftd gen");
}

pub(crate) fn am_alerts(am: &str, admin: &str) -> Vec<serde_json::Value> {
    let all: Vec<serde_json::Value> = reqwest::blocking::get(format!("{am}/api/v2/alerts"))
        .unwrap()
        .json()
        .unwrap();
    // This driftd's alerts link back to its own admin address.
    all.into_iter()
        .filter(|a| a["generatorURL"].as_str().unwrap_or("").starts_with(admin))
        .collect()
}

/// The whole audit log, read a page at a time as an operator would (bearer token required).
pub(crate) fn audit(d: &Driftd) -> Vec<serde_json::Value> {
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let (status, text) = d.request(
            reqwest::Method::GET,
            &format!("/v1/audit?after={after}&limit=50"),
            Some("s3cret-admin-token"),
            None,
        );
        assert_eq!(status, 200, "{text}");
        let page: serde_json::Value = serde_json::from_str(&text).unwrap();
        let got = page["records"].as_array().unwrap().clone();
        if got.is_empty() {
            return records;
        }
        after = page["next_after"].as_u64().unwrap();
        records.extend(got);
    }
}

#[test]
fn drift_is_contained_released_only_with_the_right_token_and_audited_in_order() {
    let s = setup("it-contain");
    let mut d = Driftd::start(&config(&s, "enforce"));
    let gen = std::thread::spawn({
        let (brokers, topic) = (s.brokers.clone(), s.topic.clone());
        move || gen_drift(&brokers, &topic)
    });
    d.wait_until(Duration::from_secs(120), "the gate to close", || {
        d.request(reqwest::Method::GET, "/v1/gate/support-bot", None, None)
            .0
            == 503
    });
    let (_, gate) = d.request(reqwest::Method::GET, "/v1/gate/support-bot", None, None);
    let gate: serde_json::Value = serde_json::from_str(&gate).unwrap();
    assert_eq!(gate["open"], false);
    assert!(gate["release_command"]
        .as_str()
        .unwrap()
        .contains("driftd release"));
    d.wait_until(
        Duration::from_secs(30),
        "the flag flip and the alert",
        || {
            let a = audit(&d);
            ["flagd", "alertmanager"].iter().all(|p| {
                a.iter()
                    .any(|r| r["provider"] == *p && r["result"] == "success")
            })
        },
    );
    let records = audit(&d);
    // Healthy targets take each action on its first attempt (latency is the benchmark's job).
    let done: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "action" && r["result"] == "success")
        .collect();
    assert!(!done.is_empty(), "actions recorded: {records:?}");
    for r in &done {
        assert_eq!(r["attempt"], 1, "first attempt: {r}");
    }
    assert_eq!(
        flagd_eval(&s.dir.path().join("flags.json"), "support-bot-canary"),
        "False off"
    );
    let alerts = am_alerts(&s.alertmanager, &d.admin);
    assert_eq!(alerts.len(), 1, "one alert: {alerts:?}");
    assert_eq!(alerts[0]["labels"]["deployment"], "support-bot");
    assert_eq!(alerts[0]["labels"]["severity"], "critical");

    // Wrong tokens are refused, by the API and by the CLI.
    let body = serde_json::json!({"operator": "mallory", "reason": "let me in"});
    assert_eq!(
        d.request(
            reqwest::Method::POST,
            "/v1/deployments/support-bot/release",
            Some("wrong"),
            Some(body.clone())
        )
        .0,
        401
    );
    assert_eq!(
        d.request(
            reqwest::Method::POST,
            "/v1/deployments/support-bot/release",
            None,
            Some(body)
        )
        .0,
        401
    );
    let wrong = s.dir.path().join("wrong-token");
    std::fs::write(&wrong, "nope").unwrap();
    let release = |token: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_driftd"))
            .args([
                "release",
                "--admin-url",
                &d.admin,
                "--deployment",
                "support-bot",
                "--operator",
                "ana",
                "--reason",
                "false alarm, verified by hand",
                "--token-file",
            ])
            .arg(token)
            .output()
            .unwrap()
    };
    assert!(!release(&wrong).status.success());
    assert_eq!(
        d.request(reqwest::Method::GET, "/v1/gate/support-bot", None, None)
            .0,
        503,
        "still contained"
    );
    let ok = release(&s.dir.path().join("token"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        d.request(reqwest::Method::GET, "/v1/gate/support-bot", None, None)
            .0,
        200
    );
    d.wait_until(Duration::from_secs(30), "the alert to resolve", || {
        am_alerts(&s.alertmanager, &d.admin).is_empty()
    });
    gen.join().unwrap();

    // The audit log tells the story in order.
    let records = audit(&d);
    let position = |pred: &dyn Fn(&serde_json::Value) -> bool, what: &str| {
        records
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("{what} missing from the audit log: {records:#?}"))
    };
    let contained = position(
        &|r| r["event"] == "transition" && r["transition"]["to"] == "contained",
        "containment",
    );
    let flipped = position(
        &|r| r["provider"] == "flagd" && r["result"] == "success",
        "flag flip",
    );
    let alerted = position(
        &|r| r["provider"] == "alertmanager" && r["op"] == "trigger" && r["result"] == "success",
        "alert",
    );
    let released = position(
        &|r| r["event"] == "transition" && r["transition"]["to"] == "released",
        "release",
    );
    let resolved = position(
        &|r| r["provider"] == "alertmanager" && r["op"] == "resolve" && r["result"] == "success",
        "resolve",
    );
    assert!(
        contained < flipped
            && contained < alerted
            && flipped < released
            && alerted < released
            && released < resolved
    );
    // The release is the authenticated identity's (`containment.admin_token` is `admin`);
    // the `--operator` given on the command line is only a comment beside it.
    let rel = &records[released];
    assert_eq!(rel["release"]["operator"], "admin");
    assert_eq!(rel["release"]["approved_by"], serde_json::json!(["admin"]));
    assert_eq!(rel["release"]["reason"], "false alarm, verified by hand");
    assert!(
        records.iter().any(|r| r["event"] == "approval"
            && r["step"] == "released"
            && r["identity"] == "admin"
            && r["stated_operator"] == "ana"),
        "the approval record names the identity, with the stated operator as a comment"
    );
    // The evidence is the verdict that made the decision, and agrees with it: the
    // canary-vs-control test's p-value within its alpha, or a late-drift chart past its
    // threshold (either may decide first on a drift from the start).
    let evidence = &records[contained]["evidence"];
    let num = |k: &str| {
        evidence[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k}: {evidence}"))
    };
    match evidence["source"].as_str() {
        Some("canary_vs_control") => assert!(num("p_value") <= num("alpha"), "{evidence}"),
        Some("late_drift") => assert!(num("statistic") >= num("threshold"), "{evidence}"),
        other => panic!("evidence from {other:?}: {evidence}"),
    }
    assert!(records.iter().all(|r| r["config_hash"].is_string()));

    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(30)).success());
}

#[test]
fn dry_run_detects_and_audits_but_changes_nothing() {
    let s = setup("it-dryrun");
    let mut d = Driftd::start(&config(&s, "dry-run"));
    gen_drift(&s.brokers, &s.topic);
    d.wait_until(Duration::from_secs(120), "would-be actions audited", || {
        audit(&d)
            .iter()
            .filter(|r| r["result"] == "dry_run")
            .count()
            >= 2
    });
    assert_eq!(
        d.request(reqwest::Method::GET, "/v1/gate/support-bot", None, None)
            .0,
        200,
        "gate stays open"
    );
    assert_eq!(
        flagd_eval(&s.dir.path().join("flags.json"), "support-bot-canary"),
        "True on",
        "flag untouched"
    );
    assert!(
        am_alerts(&s.alertmanager, &d.admin).is_empty(),
        "no alert sent"
    );
    let m = d.metrics();
    assert!(m.sum("driftd_actions_total", &[("outcome", "dry_run")]) >= 2.0);
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(30)).success());
}
