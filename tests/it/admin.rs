//! The admin surface as an attacker on the scrape network and an operator see it: what needs
//! the token, what the public routes may show, paging the audit log, and every config reload in
//! the audit log whatever its outcome.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::daemon::{self, InProcess};
use super::support::{self, Driftd};

const TOKEN: &str = "admin-token-for-tests-0042";
const OPERATOR: &str = "alice.oncall";
const REASON: &str = "customer escalation 4711";

async fn call(
    d: &InProcess,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", d.admin))
        .timeout(Duration::from_secs(5));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Regression: `/v1/audit` and `/v1/deployments` showed operator names and reasons to anyone
/// who could reach the scrape port, and `/v1/audit` parsed the whole log on every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_input_is_shown_only_with_the_token_and_the_audit_log_reads_a_page_at_a_time() {
    let cluster = daemon::cluster();
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let d = InProcess::start_with(
        &cluster.bootstrap_servers(),
        &support::unique("admin"),
        &format!("admin_token = {{ file = \"{}\" }}", token.display()),
    )
    .await;
    let get = reqwest::Method::GET;
    let (status, body) = call(
        &d,
        reqwest::Method::POST,
        "/v1/deployments/support-bot/contain",
        Some(TOKEN),
        Some(serde_json::json!({"operator": OPERATOR, "reason": REASON})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The public routes: the gate says contained, without the operator's words.
    let (status, gate) = call(&d, get.clone(), "/v1/gate/support-bot", None, None).await;
    assert_eq!(status, 503);
    let gate_json: Value = serde_json::from_str(&gate).unwrap();
    assert_eq!(gate_json["decision"], "contained");
    assert_eq!(gate_json["reasons"][0], "contained by hand");
    for path in [
        "/v1/gate/support-bot",
        "/v1/gate/support-bot/decision",
        "/v1/gate/support-bot/promotion",
        "/v1/verdicts",
        "/v1/cohorts",
        "/metrics",
    ] {
        let (_, text) = call(&d, get.clone(), path, None, None).await;
        assert!(
            !text.contains(OPERATOR) && !text.contains("4711"),
            "{path} shows operator input without a token: {text}"
        );
    }

    // The reads that show operator input need the token.
    for path in ["/v1/deployments", "/v1/audit"] {
        assert_eq!(
            call(&d, get.clone(), path, None, None).await.0,
            401,
            "{path}"
        );
        assert_eq!(
            call(&d, get.clone(), path, Some("wrong-token-wrong-token"), None)
                .await
                .0,
            401,
            "{path}"
        );
        let (status, text) = call(&d, get.clone(), path, Some(TOKEN), None).await;
        assert_eq!(status, 200, "{path}: {text}");
        assert!(text.contains(OPERATOR), "{path} with the token: {text}");
    }

    // Paging: a release adds records; walk them back one at a time.
    let (status, _) = call(
        &d,
        reqwest::Method::POST,
        "/v1/deployments/support-bot/release",
        Some(TOKEN),
        Some(serde_json::json!({"operator": OPERATOR, "reason": "false alarm"})),
    )
    .await;
    assert_eq!(status, 200);
    let page = |q: String| {
        let get = get.clone();
        let d = &d;
        async move {
            let (status, text) = call(d, get, &format!("/v1/audit{q}"), Some(TOKEN), None).await;
            (status, serde_json::from_str::<Value>(&text).unwrap())
        }
    };
    let (_, all) = page(String::new()).await;
    let all = all["records"].as_array().unwrap().clone();
    assert!(all.len() >= 2, "{all:?}");
    let seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    let mut walked = Vec::new();
    let mut query = "?limit=1".to_string();
    loop {
        let (status, p) = page(query).await;
        assert_eq!(status, 200);
        let records = p["records"].as_array().unwrap();
        assert_eq!(records.len(), 1);
        walked.insert(0, records[0]["seq"].as_u64().unwrap());
        match p["prev_before"].as_u64() {
            Some(b) => query = format!("?limit=1&before={b}"),
            None => break,
        }
    }
    assert_eq!(walked, seqs);
    let (_, tail) = page(format!("?after={}", seqs[seqs.len() - 2])).await;
    assert_eq!(tail["records"].as_array().unwrap().len(), 1);
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?after=1&before=3",
        "?after=x",
        "?page=2",
    ] {
        assert_eq!(page(bad.to_string()).await.0, 400, "{bad}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_the_operator_reads_are_refused() {
    let cluster = daemon::cluster();
    let d = InProcess::start(&cluster.bootstrap_servers(), &support::unique("admin")).await;
    for path in ["/v1/deployments", "/v1/audit"] {
        let (status, text) = call(&d, reqwest::Method::GET, path, None, None).await;
        assert_eq!(status, 403, "{path}");
        assert!(text.contains("containment.admin_token"), "{text}");
    }
    d.stop().await;
}

/// Regression: SIGHUP changed `driftd_config_info` and logged, but left no trace in the audit
/// log, so the record of who changed what and when had gaps exactly where config changed.
#[test]
fn every_reload_is_audited_with_its_outcome_and_the_config_in_force() {
    let cluster = support::mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let topic = support::unique("it-reload-audit");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let d = Driftd::start(&format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\n\n[log]\nformat = \"json\"\n\n[containment]\nstate_dir = \"{s}\"\nadmin_token = {{ file = \"{t}\" }}\n",
        s = dir.path().join("state").display(),
        t = dir.path().join("token").display(),
    ));
    let config_path = d.log.with_file_name("driftd.toml");
    let original = std::fs::read_to_string(&config_path).unwrap();
    let reloads = || -> Vec<Value> {
        let (status, text) = d.request(reqwest::Method::GET, "/v1/audit", Some(TOKEN), None);
        assert_eq!(status, 200, "{text}");
        let page: Value = serde_json::from_str(&text).unwrap();
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["event"] == "config_reload")
            .cloned()
            .collect()
    };
    let start_hash = {
        let m = d.metrics().text;
        let line = m
            .lines()
            .find(|l| l.starts_with("driftd_config_info{"))
            .unwrap()
            .to_string();
        line.split("hash=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    let steps = [
        ("\n[ingest]\nmax_message_bytes = 12\n", "failure"),
        ("\n[detection]\nalpha = 0.02\n", "restart_required"),
        ("\n[ingest]\nmax_message_bytes = 4096\n", "success"),
    ];
    for (n, (extra, _)) in steps.iter().enumerate() {
        std::fs::write(&config_path, format!("{original}{extra}")).unwrap();
        assert!(Command::new("kill")
            .args(["-HUP", &d.pid().to_string()])
            .status()
            .unwrap()
            .success());
        d.wait_until(Duration::from_secs(10), "the reload audited", || {
            reloads().len() == n + 1
        });
    }
    let records = reloads();
    let outcomes: Vec<&str> = records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, steps.map(|(_, o)| o));
    assert!(records[0]["detail"]
        .as_str()
        .unwrap()
        .contains("ingest.max_message_bytes"));
    assert!(
        records[0]["loaded_hash"].is_null(),
        "a file that does not load has no hash"
    );
    assert!(records[1]["detail"].as_str().unwrap().contains("detection"));
    assert_eq!(
        records[1]["config_hash"],
        start_hash.as_str(),
        "refused: the old config stays"
    );
    assert_ne!(records[1]["loaded_hash"], start_hash.as_str());
    let applied = records[2]["loaded_hash"].as_str().unwrap();
    assert_ne!(applied, start_hash);
    assert_eq!(
        records[2]["config_hash"], applied,
        "applied: the new config is in force"
    );
    assert!(records[2]["detail"].is_null());
    assert!(
        d.metrics().text.contains(&format!("hash=\"{applied}\"")),
        "driftd_config_info names the same config"
    );
}
