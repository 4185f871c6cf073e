//! The on-call page in a real headless browser: a driftd in process on the mock cluster (the
//! same daemon and admin server as `driftd run`) sees support-bot's canary refuse far more from
//! 40% of a five-minute stream and contains it through a flagd file; Debian's `chromium`,
//! driven by Selenium through Debian's `chromium-driver` (`tests/it/ui/browser.py`), reads the
//! overview and the deployment's page, releases with a wrong token (refused, shown) and the
//! right one (the gate opens), and keeps screenshots in `target/ui-screenshots/`. Nothing the
//! page loads may come from another origin. Fails, never skips, without the browser.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use driftd::traffic::{Drift, DriftMetric, Generator, Sender, TrafficModel};
use serde_json::Value;

use super::daemon::{self, InProcess};
use super::support;

const TOKEN: &str = "ui-admin-token-for-tests-0042";
const FLAGS: &str = r#"{"flags":{"support-bot-canary":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}}}"#;

fn tool(var: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_string()));
    assert!(
        path.exists(),
        "{} not found ({var}): run scripts/test.sh, which installs Debian's chromium and chromium-driver",
        path.display()
    );
    path
}

/// Five minutes of traffic ending now (inside `containment.max_evidence_age`): support-bot's
/// canary refuses 35% from 40% of the events on, search-assist stays healthy.
async fn produce(brokers: &str) {
    let mut sender = Sender::new(brokers, daemon::TOPIC, &[]).expect("producer");
    let total = 12_000u64;
    let span_ms = 300_000i64;
    let mut generator = Generator::new(
        TrafficModel {
            deployments: 2,
            drift: vec![Drift {
                metric: DriftMetric::Refusal,
                to: 0.35,
                at: 0.4,
                deployments: 1,
            }],
            seed: 21,
            ..TrafficModel::default()
        },
        Some(total),
    );
    let start = driftd::clock::wall_ms() - span_ms;
    for i in 0..total {
        let g = generator.next_event(start + span_ms * i as i64 / total as i64);
        sender
            .send(Some(g.key.as_bytes()), Some(&g.payload), None)
            .await;
    }
    sender.finish().await.expect("every message acknowledged");
}

async fn call(d: &InProcess, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .get(format!("{}{path}", d.admin))
        .timeout(Duration::from_secs(5));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_call_page_shows_the_containment_and_releases_only_with_the_right_token() {
    let started = Instant::now();
    let chromium = tool("DRIFTD_TEST_CHROMIUM", "/usr/bin/chromium");
    let driver = tool("DRIFTD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
    let selenium = std::process::Command::new("python3")
        .args(["-c", "import selenium"])
        .status()
        .expect("python3");
    assert!(
        selenium.success(),
        "python3 cannot import selenium: run scripts/test.sh, which installs it"
    );
    let dir = tempfile::tempdir().unwrap();
    let (token, flags) = (dir.path().join("token"), dir.path().join("flags.json"));
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::write(&flags, FLAGS).unwrap();
    let cluster = daemon::cluster();
    let brokers = cluster.bootstrap_servers();
    produce(&brokers).await;
    let d = InProcess::start_with(
        &brokers,
        &support::unique("ui"),
        &format!(
            r#"admin_token = {{ file = "{}" }}

[[containment.targets]]
kind = "flagd"
name = "flag"
path = "{}"
flag = "support-bot-canary"
safe_variant = "off"

[[containment.policies]]
name = "guard"
mode = "enforce"
contain = ["flag"]
"#,
            token.display(),
            flags.display()
        ),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let evidence = loop {
        let (_, latches) = call(&d, "/v1/deployments", Some(TOKEN)).await;
        let (_, audit) = call(&d, "/v1/audit?limit=1000", Some(TOKEN)).await;
        let flipped =
            audit["records"].as_array().into_iter().flatten().any(|r| {
                r["event"] == "action" && r["target"] == "flag" && r["result"] == "success"
            });
        if latches["support-bot"]["phase"] == "contained" && flipped {
            break latches["support-bot"]["incident"]["evidence"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "support-bot not contained (flag flipped) in 40 s: {latches}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let contained_after = started.elapsed();

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/ui/browser.py");
    let args: Vec<String> = vec![
        script.display().to_string(),
        d.admin.clone(),
        "support-bot".into(),
        "not-the-token-at-all-0000".into(),
        TOKEN.into(),
        shots.display().to_string(),
        chromium.display().to_string(),
        driver.display().to_string(),
    ];
    let browsing = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(&args)
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    let browsed = browsing.elapsed();
    assert!(
        out.status.success(),
        "the browser script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });

    // The overview: contained first, the metric states as text.
    let rows = seen["overview"].as_array().unwrap();
    assert_eq!(rows[0]["deployment"], "support-bot", "{rows:?}");
    assert_eq!(rows[0]["phase"], "contained");
    assert!(rows[0]["phase_text"]
        .as_str()
        .unwrap()
        .contains("contained"));
    assert!(rows[0]["metrics"]["refusal"]
        .as_str()
        .unwrap()
        .contains("fail"));
    let other = rows
        .iter()
        .find(|r| r["deployment"] == "search-assist")
        .unwrap();
    assert_eq!(other["phase"], "healthy");
    assert!(
        other["metrics"]["refusal"]
            .as_str()
            .unwrap()
            .contains("pass"),
        "{other}"
    );
    assert_eq!(
        seen["phone_labels"], "\"Phase: \"",
        "the phone layout labels each cell"
    );

    // The deployment's page, reached by its link.
    assert!(seen["url"]
        .as_str()
        .unwrap()
        .ends_with("/ui/deployments/support-bot"));
    assert!(seen["phase"].as_str().unwrap().contains("contained"));
    assert!(seen["gate"].as_str().unwrap().contains("closed"));
    assert_eq!(seen["metrics"]["refusal"], "fail");
    // The charts mark where each verdict changed. The one that opened the incident is there at
    // its event time; the canary-vs-control chart shows pass, then fail inside the plot after
    // its start, with the bound past zero and the estimate past min_effect (refusal: higher is
    // worse) where it turned.
    let crossings = seen["crossings"].as_array().unwrap();
    let refusal = |source: &str, state: &str| -> Vec<&Value> {
        crossings
            .iter()
            .filter(|c| c["metric"] == "refusal" && c["source"] == source && c["state"] == state)
            .collect()
    };
    let opened = refusal(evidence["source"].as_str().unwrap(), "fail");
    assert_eq!(opened.len(), 1, "{crossings:?}");
    assert_eq!(opened[0]["t"], evidence["at"], "evidence: {evidence}");
    assert_eq!(
        refusal("canary_vs_control", "pass").len(),
        1,
        "{crossings:?}"
    );
    let fail = refusal("canary_vs_control", "fail");
    assert_eq!(fail.len(), 1, "{crossings:?}");
    let c = fail[0];
    assert_eq!(c["displayed"], true);
    let (x, left, right) = (
        c["x"].as_f64().unwrap(),
        c["plot_left"].as_f64().unwrap(),
        c["plot_right"].as_f64().unwrap(),
    );
    assert!(left + (right - left) * 0.2 < x && x <= right, "{c}");
    assert!(c["ci_low"].as_f64().unwrap() >= 0.0, "{c}");
    let (_, verdicts) = call(&d, "/v1/verdicts?deployment=support-bot", None).await;
    let min_effect = verdicts["deployments"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "refusal")
        .unwrap()["canary_vs_control"]["min_effect"]
        .as_f64()
        .unwrap();
    assert!(c["estimate"].as_f64().unwrap() >= min_effect, "{c}");
    let timeline: Vec<(&str, &str)> = seen["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["text"].as_str().unwrap()))
        .collect();
    let contained = timeline
        .iter()
        .position(|(k, t)| *k == "transition" && t.contains("→ contained"))
        .unwrap_or_else(|| panic!("{timeline:?}"));
    let action = timeline
        .iter()
        .position(|(k, t)| {
            *k == "action"
                && t.contains("contain on flag (flagd): success")
                && t.contains("ms after the decision")
        })
        .unwrap_or_else(|| panic!("{timeline:?}"));
    assert!(contained < action, "{timeline:?}");
    assert!(seen["release_command"]
        .as_str()
        .unwrap()
        .contains("driftd release"));

    // The release: refused with the wrong token, shown; accepted with the right one, by
    // keyboard; the gate opens; nothing kept in the browser.
    assert_eq!(seen["wrong"]["kind"], "error", "{}", seen["wrong"]);
    assert!(seen["wrong"]["text"]
        .as_str()
        .unwrap()
        .contains("refused (HTTP 401)"));
    assert_eq!(seen["right"]["kind"], "ok", "{}", seen["right"]);
    assert!(seen["right"]["text"].as_str().unwrap().contains("HTTP 200"));
    assert_eq!(seen["focused_by_keyboard"], "release");
    assert_eq!(seen["stored"], serde_json::json!(["", 0, 0]));
    let (status, gate) = call(&d, "/v1/gate/support-bot", None).await;
    assert_eq!(status, 200, "{gate}");
    assert_eq!(gate["open"], true);

    // Every request of the page stayed on driftd's origin; the policy refused nothing.
    let origin = seen["origin"].as_str().unwrap();
    let loaded: Vec<&str> = seen["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        loaded.iter().any(|r| r.ends_with("/ui/assets/ui.js")),
        "{loaded:?}"
    );
    assert!(
        loaded.iter().any(|r| r.ends_with("/ui/assets/ui.css")),
        "{loaded:?}"
    );
    for r in &loaded {
        assert!(r.starts_with(&format!("{origin}/")), "{r} leaves {origin}");
    }
    for m in seen["console"].as_array().unwrap() {
        assert!(
            !m.as_str().unwrap().contains("Content Security Policy"),
            "{m}"
        );
    }
    for s in seen["screenshots"].as_array().unwrap() {
        let path = s.as_str().unwrap();
        assert!(std::fs::metadata(path).unwrap().len() > 1000, "{path}");
        println!("screenshot: {path}");
    }
    println!(
        "ui_e2e: contained after {:.1} s, browser {:.1} s, total {:.1} s",
        contained_after.as_secs_f64(),
        browsed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    d.stop().await;
}
