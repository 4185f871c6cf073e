//! Issue 16: no action on stale evidence. A topic holding two days of drifting traffic (event
//! time two days old) read by a fresh group: no flag flip, no alert, no abort; the verdicts are
//! visible and marked stale. Then fresh drifting traffic: contained — although the canary's
//! test is latched at `fail` and brings no new verdict change. A canary replaced since its stale
//! fail never acts. In process, on librdkafka's mock cluster, with an Alertmanager stand-in and
//! a flagd file.
//!
//! A new group reads the topic from its start: the in-process config sets
//! `kafka.start_from = "earliest"` (`stream::config`), so the default lookback, which would skip
//! two-day-old traffic, does not turn this into a test of nothing.

use std::time::{Duration, Instant};

use driftd::traffic::{Drift, DriftMetric, Generator, Sender, TrafficModel, CANARY_VERSION};
use serde_json::Value;

use super::super::daemon::{self, InProcess};
use super::super::support;
use super::vendor::vendor;

const FLAGS: &str = r#"{"flags":{"support-bot-canary":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}}}"#;
const TOKEN: &str = "s3cret-admin-token";
const OLD_EVENTS: i64 = 24_000;
const FRESH_EVENTS: i64 = 4_000;
/// The version search-assist's canary is replaced by after its stale fail.
const REPLACEMENT: &str = "ft-2026-11-27";

/// `n` events over four deployments, the first `drifting` of them refusing far more on their
/// canary, 20 ms of event time apart from `start_ms`; search-assist's canary renamed to
/// `search_assist_canary` when given.
async fn produce(
    brokers: &str,
    n: i64,
    drifting: usize,
    start_ms: i64,
    seed: u64,
    search_assist_canary: Option<&str>,
) {
    let mut sender = Sender::new(brokers, daemon::TOPIC, &[]).expect("producer");
    let mut g = Generator::new(
        TrafficModel {
            deployments: 4,
            drift: vec![Drift {
                metric: DriftMetric::Refusal,
                to: 0.3,
                at: 0.0,
                deployments: drifting,
            }],
            seed,
            ..TrafficModel::default()
        },
        None,
    );
    for i in 0..n {
        let e = g.next_event(start_ms + i * 20);
        let mut payload = String::from_utf8(e.payload).unwrap();
        if let (Some(v), "search-assist") = (search_assist_canary, e.key.as_str()) {
            payload = payload.replace(CANARY_VERSION, v);
        }
        sender
            .send(Some(e.key.as_bytes()), Some(payload.as_bytes()), None)
            .await;
    }
    sender.finish().await.expect("every message acknowledged");
}

/// The config both in-process tests share: `detection` settings, self-baseline off, the admin
/// token from `dir/token` and the Alertmanager stand-in at `am` as target `am`.
fn containment_head(dir: &std::path::Path, am: std::net::SocketAddr, detection: &str) -> String {
    format!(
        r#"
[detection]
{detection}
[detection.self_baseline]
enabled = false

[containment]
admin_token = {{ file = "{d}/token" }}

[[containment.targets]]
kind = "alertmanager"
name = "am"
url = "http://{am}"
"#,
        d = dir.display(),
    )
}

async fn get(d: &InProcess, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", d.admin))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn wait(d: &InProcess, what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}; verdicts: {}",
            get(d, "/v1/verdicts").await.1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn flag_variant(flags: &std::path::Path) -> String {
    let f: Value = serde_json::from_str(&std::fs::read_to_string(flags).unwrap()).unwrap();
    f["flags"]["support-bot-canary"]["defaultVariant"]
        .as_str()
        .unwrap()
        .to_string()
}

fn state(verdicts: &Value, deployment: &str) -> Vec<String> {
    verdicts["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["deployment"] == deployment)
        .flat_map(|d| d["metrics"].as_array().unwrap().iter())
        .map(|m| m["state"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_days_of_drifting_history_are_shown_stale_not_acted_on_then_fresh_drift_is_contained() {
    let started = Instant::now();
    let cluster = daemon::cluster();
    let brokers = cluster.bootstrap_servers();
    let (am, am_addr) = vendor().await;
    let dir = tempfile::tempdir().unwrap();
    let flags = dir.path().join("flags.json");
    std::fs::write(&flags, FLAGS).unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();

    let two_days_ago = driftd::clock::wall_ms() - 2 * 24 * 3600 * 1000;
    produce(&brokers, OLD_EVENTS, 2, two_days_ago, 21, None).await;
    let extra = format!(
        r#"{head}
[[containment.targets]]
kind = "flagd"
name = "flag"
path = "{flags}"
flag = "support-bot-canary"
safe_variant = "off"

[[containment.policies]]
name = "canary-guard"
alerts = ["am"]
contain = ["flag"]
"#,
        head = containment_head(dir.path(), am_addr, ""),
        flags = flags.display(),
    );
    let d = InProcess::start_in(&brokers, &support::unique("stale"), dir.path(), &extra).await;
    d.wait_metrics(Duration::from_secs(60), "the old traffic applied", |m| {
        m.sum("driftd_events_total", &[("outcome", "applied")]) == OLD_EVENTS as f64
    })
    .await;
    wait(
        &d,
        "both drifting deployments failing, held stale",
        Duration::from_secs(30),
        async || {
            let (_, v) = get(&d, "/v1/verdicts").await;
            ["support-bot", "search-assist"].iter().all(|dep| {
                state(&v, dep).iter().any(|s| s == "fail")
                    && v["stale"][dep].as_array().is_some_and(|a| !a.is_empty())
            })
        },
    )
    .await;
    let caught_up = started.elapsed();

    // Visible, marked stale, and nothing done.
    let (status, gate) = get(&d, "/v1/gate/support-bot").await;
    assert_eq!(
        (status, gate["decision"].as_str()),
        (200, Some("fail")),
        "{gate}"
    );
    assert!(gate["open"].as_bool().unwrap());
    assert_eq!(gate["stale"][0]["state"], "fail", "{gate}");
    assert!(
        gate["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("stale: ")),
        "{gate}"
    );
    let (_, latches) = get(&d, "/v1/deployments").await;
    assert_eq!(latches["support-bot"]["phase"], "healthy", "{latches}");
    let held = latches["support-bot"]["stale"].as_object().unwrap();
    assert!(
        held.values()
            .all(|s| s["age_seconds"].as_f64().unwrap() > 47.0 * 3600.0),
        "{latches}"
    );
    let (_, audit) = get(&d, "/v1/audit?limit=500").await;
    let records = audit["records"]
        .as_array()
        .unwrap_or_else(|| panic!("{audit}"));
    let stale: Vec<&Value> = records.iter().filter(|r| r["event"] == "stale").collect();
    for dep in ["support-bot", "search-assist"] {
        assert!(
            stale
                .iter()
                .any(|r| r["deployment"] == dep && r["held"] == true && r["kind"] == "verdict"),
            "{audit}"
        );
    }
    assert!(
        !records
            .iter()
            .any(|r| r["event"] == "transition" || r["event"] == "action"),
        "{audit}"
    );
    let m = d.metrics().await;
    assert!(
        m.sum("driftd_stale_changes_total", &[("kind", "verdict")]) >= 2.0,
        "{}",
        m.text
    );
    assert_eq!(m.sum("driftd_contained", &[]), 0.0);
    assert_eq!(m.sum("driftd_actions_total", &[]), 0.0);
    assert!(am.seen.lock().unwrap().is_empty(), "no alert");
    assert_eq!(
        std::fs::read_to_string(&flags).unwrap(),
        FLAGS,
        "no flag flip"
    );

    // Fresh traffic: support-bot's canary still drifts (the same version, whose test is latched
    // at fail); search-assist runs a new canary that does not.
    let fresh_from = Instant::now();
    produce(
        &brokers,
        FRESH_EVENTS,
        1,
        driftd::clock::wall_ms() - FRESH_EVENTS * 20,
        22,
        Some(REPLACEMENT),
    )
    .await;
    wait(
        &d,
        "support-bot contained",
        Duration::from_secs(30),
        async || get(&d, "/v1/gate/support-bot").await.0 == 503,
    )
    .await;
    let contained_after = fresh_from.elapsed();
    wait(
        &d,
        "the flag flipped and the page sent",
        Duration::from_secs(10),
        async || flag_variant(&flags) == "off" && !am.requests("/api/v2/alerts").is_empty(),
    )
    .await;
    d.wait_metrics(Duration::from_secs(30), "the fresh traffic applied", |m| {
        m.sum("driftd_events_total", &[("outcome", "applied")])
            == (OLD_EVENTS + FRESH_EVENTS) as f64
    })
    .await;
    wait(
        &d,
        "search-assist's stale fail dropped",
        Duration::from_secs(10),
        async || {
            let (_, latches) = get(&d, "/v1/deployments").await;
            latches["search-assist"]["stale"].is_null()
        },
    )
    .await;
    // A pause to show that nothing else follows.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let alerts = am.requests("/api/v2/alerts");
    let labels: Vec<Value> = alerts
        .iter()
        .map(|a| a.json()[0]["labels"].clone())
        .collect();
    assert_eq!(alerts.len(), 1, "one page, nothing else: {labels:?}");
    assert_eq!(alerts[0].json()[0]["labels"]["deployment"], "support-bot");
    assert_eq!(get(&d, "/v1/gate/search-assist").await.0, 200);
    let (_, latches) = get(&d, "/v1/deployments").await;
    assert!(latches["support-bot"]["stale"].is_null(), "{latches}");
    assert_ne!(latches["search-assist"]["phase"], "contained", "{latches}");
    let (_, audit) = get(&d, "/v1/audit?limit=500").await;
    let why: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["event"] == "ignored")
        .map(|r| r["why"].as_str().unwrap())
        .collect();
    assert!(
        why.iter().any(|w| w.contains("search-assist")
            && w.contains("never acted on")
            && w.contains(REPLACEMENT)),
        "{why:?}"
    );
    let m = d.metrics().await;
    assert_eq!(
        m.sum("driftd_contained", &[("deployment", "support-bot")]),
        1.0
    );
    assert_eq!(m.sum("driftd_contained", &[]), 1.0);
    println!(
        "stale evidence: {OLD_EVENTS} two-day-old events read and held in {caught_up:?}; \
         {FRESH_EVENTS} fresh events produced and support-bot contained {contained_after:?} later; \
         total {:?}",
        started.elapsed()
    );
    d.stop().await;
}

/// Stale signals: a sample-ratio mismatch raised in two-day-old traffic is held (shown under
/// `stale_signals`, no alert); fresh traffic with the same skew confirms it and the alert goes
/// out once — although a raised signal brings no new change. In process, on the mock cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_sample_ratio_mismatch_alerts_once_fresh_traffic_shows_it_still_stands() {
    let cluster = daemon::cluster();
    let brokers = cluster.bootstrap_servers();
    let (am, am_addr) = vendor().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let skewed = |start_ms: i64, n: i64, seed: u64| {
        let brokers = brokers.clone();
        async move {
            let mut sender = Sender::new(&brokers, daemon::TOPIC, &[]).expect("producer");
            let mut g = Generator::new(
                TrafficModel {
                    deployments: 1,
                    canary_share: 0.2,
                    seed,
                    ..TrafficModel::default()
                },
                None,
            );
            for i in 0..n {
                let e = g.next_event(start_ms + i * 100);
                sender
                    .send(Some(e.key.as_bytes()), Some(&e.payload), None)
                    .await;
            }
            sender.finish().await.expect("every message acknowledged");
        }
    };
    skewed(driftd::clock::wall_ms() - 2 * 24 * 3600 * 1000, 3_000, 31).await;
    let extra = format!(
        r#"{head}
[[containment.policies]]
name = "signals"
alerts = ["am"]
alert_on_signals = true
"#,
        head = containment_head(dir.path(), am_addr, "canary_share = 0.5\n"),
    );
    let d = InProcess::start_in(&brokers, &support::unique("stale-srm"), dir.path(), &extra).await;
    wait(
        &d,
        "the mismatch held stale",
        Duration::from_secs(60),
        async || {
            let (_, latches) = get(&d, "/v1/deployments").await;
            latches["support-bot"]["stale_signals"]
                .as_object()
                .is_some_and(|s| s.keys().any(|k| k.ends_with("/sample_ratio_mismatch")))
        },
    )
    .await;
    assert!(
        am.requests("/api/v2/alerts").is_empty(),
        "no alert on old evidence"
    );

    skewed(driftd::clock::wall_ms() - 300 * 100, 300, 32).await;
    wait(&d, "the alert", Duration::from_secs(30), async || {
        !am.requests("/api/v2/alerts").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let alerts = am.requests("/api/v2/alerts");
    assert_eq!(alerts.len(), 1, "one alert");
    let alert = &alerts[0].json()[0];
    assert_eq!(alert["labels"]["deployment"], "support-bot", "{alert}");
    assert!(
        alert.to_string().contains("sample_ratio_mismatch"),
        "{alert}"
    );
    let (_, latches) = get(&d, "/v1/deployments").await;
    assert!(
        latches["support-bot"]["stale_signals"].is_null(),
        "{latches}"
    );
    d.stop().await;
}

/// A stale *clear* of a signal whose alert is open resolves that alert: driftd raised absent
/// canary telemetry on fresh events, then (e.g. after an outage) learns from old events that
/// it cleared. Standing down on old evidence pages no one; holding it back would leave the
/// alert firing for good. The stale clear is still audited as stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_clear_resolves_the_open_signal_alert() {
    use driftd::config::Config;
    use driftd::detect::{Change, Signal, SignalKind};

    let dir = tempfile::tempdir().unwrap();
    let (am, addr) = vendor().await;
    let mut config = Config::default();
    config.containment.state_dir = dir.path().join("state");
    config.containment.targets = vec![super::alertmanager(addr)];
    config.containment.policies = vec![super::enforce_policy(&["am"], &[])];
    let r = super::Running::start(&config);
    let now = driftd::clock::wall_ms();
    let absent = |active: bool, at_ms: i64| {
        Change::Signal(Signal {
            kind: SignalKind::TelemetryAbsent,
            deployment: "support-bot".into(),
            model_version: "ft-1".into(),
            arm: Some(driftd::event::Arm::Canary),
            active,
            at: driftd::event::format_rfc3339_ms(at_ms),
            events_seen: 9000,
            n_canary: 2000,
            n_control: 4000,
            expected_share: None,
            observed_share: None,
            statistic: 400.0,
            threshold: 300.0,
        })
    };
    r.changes.send(absent(true, now - 1_000)).unwrap();
    super::wait_for("the alert", || am.requests("/api/v2/alerts").len() == 1).await;
    assert!(am.requests("/api/v2/alerts")[0].json()[0]["endsAt"].is_null());

    r.changes.send(absent(false, now - 3_600_000)).unwrap();
    super::wait_for("the resolve", || am.requests("/api/v2/alerts").len() == 2).await;
    let resolved = am.requests("/api/v2/alerts")[1].json();
    assert!(resolved[0]["endsAt"].is_string(), "{resolved}");
    assert_eq!(resolved[0]["labels"]["deployment"], "support-bot");
    assert!(r.handle.latches()["support-bot"].signal_alerts.is_empty());
    r.stop().await;
}
