//! Containment against the real Alertmanager (`DRIFTD_TEST_ALERTMANAGER`, started by
//! `scripts/test.sh`) and the real OpenFeature flagd provider (Python) reading the flag file
//! driftd writes. The `e2e` tier: a missing service fails the test.

use super::*;

fn alertmanager() -> String {
    match std::env::var("DRIFTD_TEST_ALERTMANAGER") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!("DRIFTD_TEST_ALERTMANAGER is not set: run scripts/test.sh, which installs and starts Alertmanager"),
    }
}

async fn am_alerts(am: &str, deployment: &str) -> Vec<serde_json::Value> {
    let all: Vec<serde_json::Value> = reqwest::get(format!("{am}/api/v2/alerts"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all.into_iter()
        .filter(|a| a["labels"]["deployment"] == deployment)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_alertmanager_gets_the_alert_and_its_resolution_and_flagd_evaluates_the_safe_variant()
{
    let am = alertmanager();
    let dir = tempfile::tempdir().unwrap();
    let deployment = format!("svc-{}", std::process::id());
    let flags = dir.path().join("flags.json");
    std::fs::write(
        &flags,
        r#"{"$schema":"https://flagd.dev/schema/v0/flags.json","flags":{"canary-model":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","targeting":{"if":[{"==":[{"var":"tier"},"beta"]},"on","on"]}}}}"#,
    )
    .unwrap();
    assert_eq!(
        flagd_eval(&flags, "canary-model"),
        "True on",
        "the canary is on before"
    );
    let mut config = Config::default();
    config.containment.state_dir = dir.path().join("state");
    config.containment.runbook_url = "https://runbooks.example/driftd".into();
    config.containment.targets = vec![
        TargetConfig::Alertmanager {
            name: "am".into(),
            url: Some(am.clone()),
            urls: vec![],
            basic_auth: None,
            bearer_token: None,
            tls: None,
        },
        TargetConfig::Flagd {
            name: "flag".into(),
            path: flags.clone(),
            flag: "canary-model".into(),
            safe_variant: "off".into(),
        },
    ];
    config.containment.policies = vec![enforce_policy(&["am"], &["flag"])];
    let r = Running::start(&config);
    r.changes.send(fail_verdict(&deployment, "ft-1")).unwrap();
    let mut alerts = Vec::new();
    for _ in 0..100 {
        alerts = am_alerts(&am, &deployment).await;
        if !alerts.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(alerts.len(), 1, "one alert in Alertmanager");
    let a = &alerts[0];
    assert_eq!(a["labels"]["alertname"], "DriftdCanaryContained");
    assert_eq!(a["labels"]["metric"], "refusal");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(
        a["annotations"]["runbook_url"],
        "https://runbooks.example/driftd"
    );
    assert!(a["annotations"]["evidence"]
        .as_str()
        .unwrap()
        .contains("p_value"));
    assert_eq!(a["status"]["state"], "active");
    assert_eq!(
        flagd_eval(&flags, "canary-model"),
        "False off",
        "the real flagd provider serves the safe variant"
    );

    r.handle
        .request(Request::Release {
            deployment: deployment.clone(),
            by: Requester::approver("ana"),
            reason: "checked".into(),
        })
        .await
        .unwrap();
    wait_for_async(|| {
        let am = am.clone();
        let d = deployment.clone();
        async move { am_alerts(&am, &d).await.is_empty() }
    })
    .await;
    // The same incident replayed: no second alert.
    r.changes.send(fail_verdict(&deployment, "ft-1")).unwrap();
    // A fixed wait to show that something does NOT happen: no alert may appear meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        am_alerts(&am, &deployment).await.is_empty(),
        "a replayed incident creates no second alert"
    );
    r.stop().await;
}

async fn wait_for_async<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for the alert to resolve");
}

/// Evaluates a flag with the real OpenFeature flagd provider (Python, in-process file mode),
/// for a context the targeting rule would have matched. Returns "<value> <variant>".
pub fn flagd_eval(path: &std::path::Path, flag: &str) -> String {
    let script = r#"
import sys
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
import time
api.set_provider(FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=sys.argv[1]))
client = api.get_client()
# The file provider loads asynchronously; until it is ready answers carry no variant.
for _ in range(100):
    d = client.get_boolean_details(sys.argv[2], True, EvaluationContext(attributes={"tier": "beta"}))
    if d.variant is not None:
        break
    time.sleep(0.1)
print(d.value, d.variant)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(flag)
        .output()
        .expect("python3 runs (scripts/test.sh installs the flagd provider)");
    assert!(
        out.status.success(),
        "flagd evaluation failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Verifies a request with the Standard Webhooks reference library for Python
/// (`standardwebhooks`, installed by `scripts/test.sh`); returns its error, if any.
fn standardwebhooks_verify(secret: &str, seen: &Seen) -> Result<(), String> {
    let script = r#"
import json, sys
from standardwebhooks import Webhook
body = open(sys.argv[3], "rb").read()
Webhook(sys.argv[1]).verify(body, json.loads(sys.argv[2]))
"#;
    let headers: serde_json::Map<String, serde_json::Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|h| (h.to_string(), seen.header(h).into()))
            .collect();
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), &seen.body).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", script, secret])
        .arg(serde_json::Value::Object(headers).to_string())
        .arg(body.path())
        .output()
        .expect("python3 runs (scripts/test.sh installs standardwebhooks)");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// Regression: the webhook signed only its body, so a captured request could be replayed. An
/// independent verifier (the Standard Webhooks reference library) accepts what driftd sent,
/// on the first attempt and on a retry under the same `webhook-id`, and refuses the same
/// request with another timestamp or body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_webhooks_reference_library_verifies_what_driftd_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (v, addr) = vendor().await;
    v.script("/hook", &[(503, 0)]);
    let mut config = Config::default();
    config.containment.state_dir = dir.path().join("state");
    config.containment.targets = vec![TargetConfig::Webhook {
        name: "hook".into(),
        url: format!("http://{addr}/hook"),
        secret: secret_file(dir.path(), "hook", &format!("{HOOK_SECRET}\n")),
    }];
    config.containment.policies = vec![enforce_policy(&[], &["hook"])];
    let r = Running::start(&config);
    r.changes.send(fail_verdict("support-bot", "ft-1")).unwrap();
    wait_for("a retry after the 503", || v.requests("/hook").len() == 2).await;
    r.stop().await;
    let sent = v.requests("/hook");
    for s in &sent {
        standardwebhooks_verify(HOOK_SECRET, s).expect("the reference library verifies it");
    }
    assert_eq!(
        sent[0].header("webhook-id"),
        sent[1].header("webhook-id"),
        "a retry keeps its id, so receivers can deduplicate"
    );
    let mut replayed = sent[1].clone();
    let later = sent[1].header("webhook-timestamp").parse::<i64>().unwrap() + 1;
    replayed
        .headers
        .insert("webhook-timestamp", later.to_string().parse().unwrap());
    let e = standardwebhooks_verify(HOOK_SECRET, &replayed).unwrap_err();
    assert!(e.contains("No matching signature"), "{e}");
    let mut altered = sent[1].clone();
    altered.body = br#"{"op":"resolve"}"#.to_vec();
    let e = standardwebhooks_verify(HOOK_SECRET, &altered).unwrap_err();
    assert!(e.contains("No matching signature"), "{e}");
}
