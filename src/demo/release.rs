//! The end of the demo: what containment did (latches, gates, actions, flags, alerts received),
//! then the release, done the way on-call would — once with a wrong token, once with the right
//! one — printing as it goes.

use std::io::Write;
use std::time::Duration;

use super::setup::DemoFiles;
use super::DemoError;

/// GET `url` as JSON, with the bearer token when given: the status and body (status 0 and
/// `null` when the request fails).
async fn get_json(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = client.get(url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    match request.send().await {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// The containment part of the summary, then the release, done the way an operator would.
pub(super) async fn show_containment_and_release(
    out: &mut impl Write,
    client: &reqwest::Client,
    admin: &str,
    files: &DemoFiles,
    token: &str,
    received: &std::sync::Mutex<Vec<String>>,
) -> Result<(), DemoError> {
    // Actions run off the hot path; give them a moment to finish.
    for _ in 0..100 {
        let (_, audit) =
            get_json(client, &format!("{admin}/v1/audit?limit=1000"), Some(token)).await;
        let done = audit["records"].as_array().is_some_and(|a| {
            a.iter()
                .any(|r| r["target"] == "support-bot-flag" && r["result"] == "success")
                && a.iter()
                    .any(|r| r["target"] == "oncall-webhook" && r["result"] == "success")
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writeln!(out, "  containment (files in {}):", files.dir.display())?;
    let (_, latches) = get_json(client, &format!("{admin}/v1/deployments"), Some(token)).await;
    for dep in ["support-bot", "search-assist"] {
        let (status, _) = get_json(client, &format!("{admin}/v1/gate/{dep}"), None).await;
        let phase = latches[dep]["phase"].as_str().unwrap_or("healthy");
        writeln!(
            out,
            "    {dep:<14} {phase:<10} gate /v1/gate/{dep} -> {status}"
        )?;
        if let Some(reason) = latches[dep]["incident"]["reason"].as_str() {
            writeln!(out, "      why: {reason}")?;
        }
    }
    let (_, audit) = get_json(client, &format!("{admin}/v1/audit?limit=1000"), Some(token)).await;
    for r in audit["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["event"] == "action")
    {
        writeln!(
            out,
            "    action {:<20} {:<8} {:<8} after {} ms",
            r["target"].as_str().unwrap_or("?"),
            r["op"].as_str().unwrap_or("?"),
            r["result"].as_str().unwrap_or("?"),
            r["elapsed_ms"]
        )?;
    }
    let flags: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files.flags)?).unwrap_or_default();
    for flag in ["support-bot-canary", "search-assist-canary"] {
        writeln!(
            out,
            "    flagd {}: {flag} -> {}",
            files.flags.display(),
            flags["flags"][flag]["defaultVariant"]
                .as_str()
                .unwrap_or("?")
        )?;
    }
    for alert in received.lock().expect("receiver lock").iter() {
        writeln!(out, "    webhook receiver got: {alert}")?;
    }
    writeln!(
        out,
        "  on-call page (evidence over time, timeline, release form): {admin}{}",
        crate::admin::ui::deployment_path("support-bot")
    )?;
    writeln!(out, "  release (what on-call runs once they have looked):")?;
    writeln!(
        out,
        "    DRIFTD_ADMIN_TOKEN=$(cat {}) driftd release --admin-url {admin} --deployment support-bot --operator \"$USER\" --reason \"...\"",
        files.token.display()
    )?;
    let release = |t: String| {
        client
            .post(format!("{admin}/v1/deployments/support-bot/release"))
            .bearer_auth(t)
            .json(&serde_json::json!({"operator": "demo", "reason": "demo: drift confirmed, releasing to show the flow"}))
            .send()
    };
    let wrong = release("not-the-token".into())
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let right = release(token.to_string())
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let (gate, _) = get_json(client, &format!("{admin}/v1/gate/support-bot"), None).await;
    writeln!(out, "    release with a wrong token -> {wrong}; with the right token -> {right}; gate now -> {gate}")?;
    for _ in 0..50 {
        if received
            .lock()
            .expect("receiver lock")
            .iter()
            .any(|a| a.starts_with("resolve"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(resolved) = received
        .lock()
        .expect("receiver lock")
        .iter()
        .find(|a| a.starts_with("resolve"))
    {
        writeln!(out, "    webhook receiver got: {resolved}")?;
    }
    writeln!(
        out,
        "    (flags stay at their safe variant after a release: turning the canary back on is a decision for its owners)"
    )?;
    writeln!(
        out,
        "  audit log: {}",
        files.dir.join("state").join("audit.log").display()
    )?;
    out.flush()?;
    Ok(())
}
