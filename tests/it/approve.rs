//! Human oversight as operators meet it, on a driftd running in process: named identities and
//! their roles, a release that needs two approvers (across a restart, and lapsing), and every
//! record naming the authenticated identity, not the name a request body gives.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::daemon::{self, InProcess};
use super::support;

pub(crate) const ALICE: &str = "alice-approver-token-0001";
pub(crate) const BOB: &str = "bob-approver-token-000002";
pub(crate) const OLGA: &str = "olga-operator-token-00003";
pub(crate) const VERA: &str = "vera-viewer-token-0000004";

/// Token files and `[[admin.operators]]`: alice and bob approve (alice also views), olga
/// operates, vera views.
pub(crate) fn operators(dir: &Path) -> String {
    let mut toml = String::new();
    for (name, token, roles) in [
        ("alice", ALICE, r#"["approver", "viewer"]"#),
        ("bob", BOB, r#"["approver"]"#),
        ("olga", OLGA, r#"["operator"]"#),
        ("vera", VERA, r#"["viewer"]"#),
    ] {
        let path = dir.join(format!("{name}.token"));
        std::fs::write(&path, format!("{token}\n")).unwrap();
        toml.push_str(&format!(
            "[[admin.operators]]\nname = \"{name}\"\ntoken = {{ file = \"{}\" }}\nroles = {roles}\n\n",
            path.display()
        ));
    }
    toml
}

pub(crate) async fn call(
    admin: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{admin}{path}"))
        .timeout(Duration::from_secs(5));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post(d: &InProcess, path: &str, token: &str, body: Value) -> (u16, Value) {
    call(
        &d.admin,
        reqwest::Method::POST,
        path,
        Some(token),
        Some(body),
    )
    .await
}

async fn get(d: &InProcess, path: &str, token: Option<&str>) -> (u16, Value) {
    call(&d.admin, reqwest::Method::GET, path, token, None).await
}

async fn audit(d: &InProcess) -> Vec<Value> {
    let (status, page) = get(d, "/v1/audit?limit=1000", Some(VERA)).await;
    assert_eq!(status, 200, "{page}");
    page["records"].as_array().unwrap().clone()
}

async fn start(cluster_brokers: &str, state: &Path, window: &str) -> InProcess {
    let extra = format!(
        "[containment]\n[[containment.policies]]\nname = \"two-approvers\"\nrelease_approvals = 2\napproval_window = \"{window}\"\n\n{}",
        operators(state)
    );
    InProcess::start_in(cluster_brokers, &support::unique("approve"), state, &extra).await
}

async fn phase(d: &InProcess) -> String {
    let (_, latches) = get(d, "/v1/deployments", Some(VERA)).await;
    latches["support-bot"]["phase"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvers_release_and_the_first_approval_survives_a_restart() {
    let cluster = daemon::cluster();
    let brokers = cluster.bootstrap_servers();
    let state = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let d = start(&brokers, state.path(), "1h").await;
    let (status, body) = post(
        &d,
        "/v1/deployments/support-bot/contain",
        OLGA,
        json!({"reason": "refusals up on the dashboard"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (status, latch) = post(
        &d,
        "/v1/deployments/support-bot/release",
        ALICE,
        json!({"reason": "false alarm, checked the samples"}),
    )
    .await;
    assert_eq!(status, 200, "{latch}");
    assert_eq!(latch["phase"], "contained", "pending 1/2 stays contained");
    assert_eq!(
        latch["pending_release"]["approvals"][0]["identity"],
        "alice"
    );
    for shown in [
        get(&d, "/v1/approvals", Some(VERA)).await.1["deployments"]["support-bot"]["release"]
            ["summary"]
            .clone(),
        get(&d, "/v1/gate/support-bot", None).await.1["release_pending"]["summary"].clone(),
    ] {
        let shown = shown.as_str().unwrap().to_string();
        assert!(shown.starts_with("release pending 1/2, "), "{shown}");
        assert!(shown.contains("expires at "), "{shown}");
    }
    let (status, gate) = get(&d, "/v1/gate/support-bot", None).await;
    assert_eq!(status, 503, "still contained: {gate}");
    assert!(
        !gate.to_string().contains("alice"),
        "the public gate shows the count, not who: {gate}"
    );
    let summary = get(&d, "/v1/approvals", Some(VERA)).await.1["deployments"]["support-bot"]
        ["release"]["summary"]
        .clone();
    assert!(
        summary.as_str().unwrap().contains("approved by alice"),
        "{summary}"
    );

    // The same identity again, by either route, changes nothing.
    for path in ["release", "release/approve"] {
        let (status, latch) = post(
            &d,
            &format!("/v1/deployments/support-bot/{path}"),
            ALICE,
            json!({"reason": "really"}),
        )
        .await;
        assert_eq!(status, 200, "{latch}");
        assert_eq!(latch["phase"], "contained");
        assert_eq!(
            latch["pending_release"]["approvals"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
    d.stop().await;

    // A restart between the two approvals: the first one is still there.
    let d = start(&brokers, state.path(), "1h").await;
    assert_eq!(phase(&d).await, "contained");
    let (status, latch) = post(
        &d,
        "/v1/deployments/support-bot/release/approve",
        BOB,
        json!({"reason": "agreed"}),
    )
    .await;
    assert_eq!(status, 200, "{latch}");
    assert_eq!(latch["phase"], "released", "{latch}");
    assert_eq!(
        latch["last_release"]["approved_by"],
        json!(["alice", "bob"])
    );
    assert_eq!(latch["last_release"]["operator"], "alice");
    let (status, _) = get(&d, "/v1/gate/support-bot", None).await;
    assert_eq!(status, 200, "released: the gate is open");
    let records = audit(&d).await;
    let steps: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["event"] == "approval")
        .map(|r| {
            (
                r["identity"].as_str().unwrap().to_string(),
                r["step"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        ("alice", "requested"),
        ("alice", "unchanged"),
        ("alice", "unchanged"),
        ("bob", "approved"),
        ("bob", "released"),
    ];
    assert_eq!(
        steps,
        expect.map(|(i, s)| (i.to_string(), s.to_string())),
        "{records:?}"
    );
    let transition = records
        .iter()
        .rev()
        .find(|r| r["event"] == "transition")
        .unwrap();
    assert_eq!(transition["transition"]["to"], "released");
    assert_eq!(
        transition["release"]["approved_by"],
        json!(["alice", "bob"])
    );
    d.stop().await;
    println!(
        "two approvers across a restart: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_lapsed_does_not_count() {
    let cluster = daemon::cluster();
    let state = tempfile::tempdir().unwrap();
    let d = start(&cluster.bootstrap_servers(), state.path(), "2s").await;
    post(
        &d,
        "/v1/deployments/support-bot/contain",
        OLGA,
        json!({"reason": "r"}),
    )
    .await;
    let (status, _) = post(
        &d,
        "/v1/deployments/support-bot/release",
        ALICE,
        json!({"reason": "ok"}),
    )
    .await;
    assert_eq!(status, 200);
    let start = std::time::Instant::now();
    loop {
        let records = audit(&d).await;
        if records
            .iter()
            .any(|r| r["event"] == "approval" && r["step"] == "expired")
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{records:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "lapsed after {:.1} s (window 2 s)",
        start.elapsed().as_secs_f64()
    );
    let (status, body) = post(
        &d,
        "/v1/deployments/support-bot/release/approve",
        BOB,
        json!({"reason": "late"}),
    )
    .await;
    assert_eq!(status, 409, "nothing pending any more: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("no release"),
        "{body}"
    );
    let (_, latch) = post(
        &d,
        "/v1/deployments/support-bot/release",
        BOB,
        json!({"reason": "late"}),
    )
    .await;
    assert_eq!(
        latch["phase"], "contained",
        "alice's lapsed approval does not count"
    );
    assert_eq!(
        latch["pending_release"]["approvals"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(phase(&d).await, "contained");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_who_may_do_what_and_the_audit_names_who_did_it() {
    let cluster = daemon::cluster();
    let state = tempfile::tempdir().unwrap();
    let d = start(&cluster.bootstrap_servers(), state.path(), "1h").await;
    let body = json!({"operator": "mallory", "reason": "test"});
    for (path, token, want) in [
        ("contain", VERA, 403),
        ("contain", ALICE, 403),
        ("contain", "not-a-known-token-0000000", 401),
        ("release/approve", OLGA, 403),
        ("promotion/approve", OLGA, 403),
    ] {
        let (status, answer) = post(
            &d,
            &format!("/v1/deployments/support-bot/{path}"),
            token,
            body.clone(),
        )
        .await;
        assert_eq!(status, want, "{path} as {token}: {answer}");
    }
    for path in ["/v1/deployments", "/v1/audit", "/v1/approvals"] {
        assert_eq!(get(&d, path, None).await.0, 401, "{path}");
        assert_eq!(get(&d, path, Some(OLGA)).await.0, 403, "{path}");
        assert_eq!(get(&d, path, Some(VERA)).await.0, 200, "{path}");
    }
    let (status, who) = get(&d, "/v1/whoami", Some(OLGA)).await;
    assert_eq!(
        (status, who),
        (200, json!({"name": "olga", "roles": ["operator"]}))
    );

    // The CLI: whoami, and approve needing to say what it approves.
    let (admin, token_file) = (d.admin.clone(), state.path().join("olga.token"));
    let cli = move |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftd"))
            .args(args)
            .args(["--admin-url", &admin, "--token-file"])
            .arg(&token_file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(&["whoami"])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("\"olga\"") && !text.contains(OLGA), "{text}");
    let (code, text) = tokio::task::spawn_blocking(move || {
        cli(&["approve", "--deployment", "support-bot", "--reason", "r"])
    })
    .await
    .unwrap();
    assert_eq!(
        code,
        Some(2),
        "--release or --promotion is required: {text}"
    );

    // olga contains, writing someone else's name into the body: recorded as a comment.
    let (status, latch) = post(
        &d,
        "/v1/deployments/support-bot/contain",
        OLGA,
        body.clone(),
    )
    .await;
    assert_eq!(status, 200, "{latch}");
    let (status, _) = post(
        &d,
        "/v1/deployments/support-bot/release",
        VERA,
        body.clone(),
    )
    .await;
    assert_eq!(status, 403, "a viewer cannot release");
    // An operator's release request waits for an approver.
    let (_, latch) = post(
        &d,
        "/v1/deployments/support-bot/release",
        OLGA,
        body.clone(),
    )
    .await;
    assert_eq!(latch["phase"], "contained");
    assert_eq!(latch["pending_release"]["requested"]["identity"], "olga");
    assert_eq!(
        latch["pending_release"]["requested"]["stated_operator"],
        "mallory"
    );
    let records = audit(&d).await;
    let contained = records
        .iter()
        .find(|r| r["event"] == "transition" && r["transition"]["to"] == "contained")
        .unwrap();
    assert_eq!(contained["transition"]["operator"], "olga");
    assert_eq!(contained["transition"]["stated_operator"], "mallory");
    let requested = records
        .iter()
        .find(|r| r["event"] == "approval" && r["step"] == "requested")
        .unwrap();
    assert_eq!(requested["identity"], "olga");
    assert!(records.iter().all(|r| r["operator"] != "mallory"
        && r["identity"] != "mallory"
        && r["transition"]["operator"] != "mallory"));

    // The post-incident report from the admin API: a viewer may read it, an operator may not.
    let report = |token: &str, format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftd"))
            .args(["report", "--deployment", "support-bot", "--format", format])
            .args(["--admin-url", &d.admin, "--token-file"])
            .arg(state.path().join(format!("{token}.token")))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, md, err) = tokio::task::block_in_place(|| report("vera", "md"));
    assert_eq!(code, Some(0), "{err}");
    for shown in [
        "incident report: support-bot",
        "decision: healthy → contained | olga |",
        "release approval: requested | olga |",
        "No test evidence: a manual decision by olga, reason: test (the request named mallory)",
        "Not released as of the last record",
        "driftd release --admin-url",
    ] {
        assert!(md.contains(shown), "report lacks `{shown}`:\n{md}");
    }
    assert!(
        !md.contains("mallory |"),
        "a stated name is never who acted: {md}"
    );
    let (code, html, _) = tokio::task::block_in_place(|| report("vera", "html"));
    assert_eq!(code, Some(0));
    assert!(
        html.starts_with("<!doctype html>") && html.contains("<td>olga</td>"),
        "{html}"
    );
    let (code, _, err) = tokio::task::block_in_place(|| report("olga", "md"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("HTTP 403") && err.contains("viewer role"),
        "{err}"
    );
    d.stop().await;
}

/// No token value reaches the log (at debug level), `/metrics`, the audit log on disk or any
/// HTTP answer — right tokens, wrong ones and tokens of the wrong role alike.
#[test]
fn no_token_value_is_logged_exported_audited_or_answered() {
    let cluster = support::mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let topic = support::unique("it-approve-tokens");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin_token = "the-shared-admin-token-0005";
    std::fs::write(dir.path().join("admin.token"), admin_token).unwrap();
    let d = support::Driftd::start(&format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\n[containment]\nstate_dir = \"{s}\"\nadmin_token = {{ file = \"{t}\" }}\n\n[[containment.policies]]\nname = \"p\"\nrelease_approvals = 2\n\n{ops}",
        s = dir.path().join("state").display(),
        t = dir.path().join("admin.token").display(),
        ops = operators(dir.path()),
    ));
    let wrong = "wrong-token-but-long-enough-06";
    let tokens = [ALICE, BOB, OLGA, VERA, admin_token, wrong];
    let mut answers = Vec::new();
    let post = reqwest::Method::POST;
    let body = || Some(json!({"reason": "tokens test", "operator": "it"}));
    for (method, path, token) in [
        (post.clone(), "/v1/deployments/support-bot/contain", OLGA),
        (post.clone(), "/v1/deployments/support-bot/contain", wrong),
        (post.clone(), "/v1/deployments/support-bot/release", VERA),
        (post.clone(), "/v1/deployments/support-bot/release", ALICE),
        (
            post.clone(),
            "/v1/deployments/support-bot/release/approve",
            admin_token,
        ),
        (
            post.clone(),
            "/v1/deployments/support-bot/promotion/approve",
            BOB,
        ),
    ] {
        answers.push((path, d.request(method, path, Some(token), body())));
    }
    for path in [
        "/v1/whoami",
        "/v1/deployments",
        "/v1/approvals",
        "/v1/audit",
        "/v1/gate/support-bot",
    ] {
        for token in [VERA, wrong] {
            answers.push((
                path,
                d.request(reqwest::Method::GET, path, Some(token), None),
            ));
        }
    }
    assert_eq!(answers[0].1 .0, 200, "{answers:?}");
    assert_eq!(answers[1].1 .0, 401, "{answers:?}");
    assert_eq!(
        answers[4].1 .0, 200,
        "the admin token approves: {answers:?}"
    );
    assert!(
        answers[4].1 .1.contains("\"released\""),
        "alice and admin released it: {answers:?}"
    );
    let audit = std::fs::read_to_string(dir.path().join("state/audit.log")).unwrap();
    assert!(audit.contains("\"identity\":\"alice\""), "{audit}");
    let places = [
        ("the log", d.log_text()),
        ("/metrics", d.metrics().text),
        ("the audit log", audit),
        (
            "the latch state",
            ["containment.json", "containment.journal"]
                .iter()
                .map(|f| std::fs::read_to_string(dir.path().join("state").join(f)).unwrap())
                .collect::<String>(),
        ),
    ];
    for token in tokens {
        for (place, text) in &places {
            assert!(!text.contains(token), "{place} shows a token");
        }
        for (path, (_, text)) in &answers {
            assert!(!text.contains(token), "{path} answers with a token");
        }
    }
}
