//! The gate as its callers read it: the Argo Rollouts AnalysisTemplates and the Flagger Canary
//! in `deploy/rollouts/` are run, the way Argo and Flagger run them, against a driftd consuming a
//! stream with one deployment of each kind — contained, passing, short of evidence, and a name
//! it has never seen — and each must come out as the docs say.
//!
//! Argo's side follows its web metric provider and `evaluate.EvaluateResult`: a non-2xx is a
//! measurement error; otherwise the `jsonPath` is read from the body and the failure condition
//! wins over the success condition, neither true being inconclusive. The conditions are parsed
//! here for the two forms the docs use (`result == "x"`, `result in ["x", …]`); a template using
//! anything else fails this test rather than being misread. Flagger's side: a POST with its
//! webhook payload, where only a 2xx lets the canary go on.

use std::time::Duration;

use driftd::traffic::{Drift, DriftMetric, Generator, Sender, TrafficModel};
use serde::Deserialize;
use serde_json::{json, Value};

use super::daemon::{self, InProcess};
use super::support;

const DOCS_HOST: &str = "http://driftd.driftd.svc.cluster.local:8787";

/// The YAML documents of a file under `deploy/rollouts/`, as JSON values.
fn documents(file: &str) -> Vec<Value> {
    let path = format!("{}/deploy/rollouts/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let v = serde_norway::Value::deserialize(doc).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measurement {
    Successful,
    Failed,
    Inconclusive,
    Error,
}

/// `result == "x"` or `result in ["x", "y"]`, evaluated for a string result.
fn condition(expr: &str, result: &str) -> bool {
    let expr = expr.trim();
    if let Some(rhs) = expr.strip_prefix("result == ") {
        let want: String =
            serde_json::from_str(rhs).unwrap_or_else(|_| panic!("unsupported condition {expr:?}"));
        return result == want;
    }
    if let Some(rhs) = expr.strip_prefix("result in ") {
        let set: Vec<String> =
            serde_json::from_str(rhs).unwrap_or_else(|_| panic!("unsupported condition {expr:?}"));
        return set.iter().any(|s| s == result);
    }
    panic!("unsupported condition {expr:?}: extend this evaluator with care")
}

/// One measurement of an AnalysisTemplate metric, as Argo Rollouts' web provider takes it.
async fn argo_measure(template: &Value, metric: &Value, args: &[(&str, &str)]) -> Measurement {
    let web = &metric["provider"]["web"];
    assert!(
        web["method"].is_null() || web["method"] == "GET",
        "the docs use GET"
    );
    let mut url = web["url"].as_str().unwrap().to_string();
    for a in template["spec"]["args"].as_array().unwrap() {
        let name = a["name"].as_str().unwrap();
        let value = args
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
            .or_else(|| a["value"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("argument {name} has no value"));
        url = url.replace(&format!("{{{{args.{name}}}}}"), &value);
    }
    assert!(!url.contains("{{"), "every placeholder resolved: {url}");
    let resp = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    if !resp.status().is_success() {
        return Measurement::Error;
    }
    let body: Value = resp.json().await.unwrap();
    let path = web["jsonPath"].as_str().unwrap();
    let field = path
        .strip_prefix("{$.")
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or_else(|| panic!("unsupported jsonPath {path}"));
    let value = field.split('.').fold(&body, |v, k| &v[k]);
    let result = value
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string: {body}"));
    let success = metric["successCondition"].as_str();
    let failure = metric["failureCondition"].as_str();
    let failed = match (success, failure) {
        (_, Some(f)) => condition(f, result),
        (Some(s), None) => !condition(s, result),
        (None, None) => false,
    };
    let succeeded = match success {
        Some(s) => condition(s, result),
        None => !failed,
    };
    if failed {
        Measurement::Failed
    } else if succeeded {
        Measurement::Successful
    } else {
        Measurement::Inconclusive
    }
}

/// Whether Flagger lets the canary go on after calling `hook` for `deployment`.
async fn flagger_passes(hook: &Value, admin: &str, deployment: &str) -> bool {
    let url = hook["url"]
        .as_str()
        .unwrap()
        .replace(DOCS_HOST, admin)
        .replace("/support-bot", &format!("/{deployment}"));
    let status = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({
            "name": deployment,
            "namespace": "prod",
            "phase": "Progressing",
            "checksum": "6b8c5f1e",
            "metadata": {},
        }))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap()
        .status();
    // Flagger's docs ask a 2xx of most hooks but HTTP 200 of confirm-promotion (and
    // confirm-traffic-increase): the gate lets a canary through with 200 and nothing else.
    assert!(
        !status.is_success() || status == reqwest::StatusCode::OK,
        "{url}: {status}"
    );
    status.is_success()
}

/// `support-bot` refuses far more on its canary (contained), `search-assist` is healthy with
/// plenty of events (pass), `docs-qa` has a few dozen events (insufficient).
async fn produce(brokers: &str) {
    let mut sender = Sender::new(brokers, daemon::TOPIC, &[]).expect("producer");
    let total = 8_000;
    let mut generator = Generator::new(
        TrafficModel {
            deployments: 2,
            drift: vec![Drift {
                metric: DriftMetric::Refusal,
                to: 0.4,
                at: 0.0,
                deployments: 1,
            }],
            seed: 17,
            ..TrafficModel::default()
        },
        Some(total),
    );
    for _ in 0..total {
        let g = generator.next_event(driftd::clock::wall_ms());
        sender
            .send(Some(g.key.as_bytes()), Some(&g.payload), None)
            .await;
    }
    let mut few = Generator::new(
        TrafficModel {
            deployments: 1,
            seed: 18,
            ..TrafficModel::default()
        },
        None,
    );
    for _ in 0..40 {
        let g = few.next_event(driftd::clock::wall_ms());
        let payload = String::from_utf8(g.payload)
            .unwrap()
            .replace("\"support-bot\"", "\"docs-qa\"");
        sender
            .send(Some(b"docs-qa"), Some(payload.as_bytes()), None)
            .await;
    }
    sender.finish().await.expect("every message acknowledged");
}

async fn decision(d: &InProcess, deployment: &str) -> String {
    let body: Value = reqwest::get(format!("{}/v1/gate/{deployment}/decision", d.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["decision"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_argo_and_flagger_wiring_reads_every_decision_as_documented() {
    let cluster = daemon::cluster();
    let brokers = cluster.bootstrap_servers();
    produce(&brokers).await;
    let d = InProcess::start(&brokers, &support::unique("gate")).await;
    let want = [
        ("support-bot", "contained"),
        ("search-assist", "pass"),
        ("docs-qa", "insufficient"),
        ("never-seen", "unknown"),
    ];
    let start = std::time::Instant::now();
    loop {
        let mut now = Vec::new();
        for (dep, _) in want {
            now.push((dep, decision(&d, dep).await));
        }
        if now.iter().zip(want).all(|((_, got), (_, w))| got == w) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "decisions after 60 s: {now:?}; verdicts: {}",
            reqwest::get(format!("{}/v1/verdicts", d.admin))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    use Measurement::*;
    let templates = documents("argo-analysis-templates.yaml");
    let named = |name: &str| {
        templates
            .iter()
            .find(|t| t["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("template {name}"))
            .clone()
    };
    let (background, promotion) = (named("driftd"), named("driftd-promotion"));
    for t in [&background, &promotion] {
        assert_eq!(t["apiVersion"], "argoproj.io/v1alpha1");
        assert_eq!(t["kind"], "AnalysisTemplate");
        assert_eq!(t["spec"]["metrics"].as_array().unwrap().len(), 1);
    }
    let canary = documents("flagger-canary.yaml").remove(0);
    assert_eq!(canary["apiVersion"], "flagger.app/v1beta1");
    assert_eq!(canary["kind"], "Canary");
    let hooks = canary["spec"]["analysis"]["webhooks"].as_array().unwrap();
    let mut kinds: Vec<&str> = hooks.iter().map(|h| h["type"].as_str().unwrap()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["confirm-promotion", "pre-rollout", "rollout"],
        "every hook of the Canary is one this test calls, once"
    );
    let hook = |kind: &str| {
        hooks
            .iter()
            .find(|h| h["type"] == kind)
            .unwrap_or_else(|| panic!("a {kind} webhook"))
    };
    // (deployment, background analysis, promotion analysis, Flagger pre-rollout, rollout,
    // confirm-promotion): what the comments in deploy/rollouts/ promise.
    let table = [
        ("support-bot", Failed, Failed, false, false, false),
        ("search-assist", Successful, Successful, true, true, true),
        ("docs-qa", Successful, Inconclusive, true, true, false),
        ("never-seen", Failed, Failed, false, false, false),
    ];
    for (dep, bg, promo, pre, rollout, confirm) in table {
        let args = [("deployment", dep), ("driftd-url", d.admin.as_str())];
        let measure = |t: &Value| {
            let t = t.clone();
            async move { argo_measure(&t, &t["spec"]["metrics"][0], &args).await }
        };
        assert_eq!(measure(&background).await, bg, "{dep}: background analysis");
        assert_eq!(
            measure(&promotion).await,
            promo,
            "{dep}: promotion analysis"
        );
        let got = (
            flagger_passes(hook("pre-rollout"), &d.admin, dep).await,
            flagger_passes(hook("rollout"), &d.admin, dep).await,
            flagger_passes(hook("confirm-promotion"), &d.admin, dep).await,
        );
        assert_eq!(got, (pre, rollout, confirm), "{dep}: Flagger hooks");
    }
    d.stop().await;
}

/// `promotion = "approval"` through the same documented wiring: passing evidence alone keeps
/// Flagger's confirm-promotion and Argo's promotion analysis waiting (the canary keeps
/// running); an approver's approval of the canary version lets them through; a new canary
/// version needs a new approval. (A `fail` after the approval: `admin::gate` unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_promotion_approval_the_documented_wiring_waits_for_an_approver() {
    use super::approve::{call, operators, ALICE, OLGA, VERA};
    let cluster = daemon::cluster();
    let brokers = cluster.bootstrap_servers();
    produce(&brokers).await;
    let tokens = tempfile::tempdir().unwrap();
    let d = InProcess::start_with(
        &brokers,
        &support::unique("gate-approval"),
        &format!(
            "[[containment.policies]]\nname = \"approved-promotions\"\ndeployments = [\"search-assist\"]\npromotion = \"approval\"\n\n[[containment.policies]]\nname = \"rest\"\n\n{}",
            operators(tokens.path())
        ),
    )
    .await;
    let start = std::time::Instant::now();
    while decision(&d, "search-assist").await != "awaiting_approval" {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "search-assist: {}",
            decision(&d, "search-assist").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "passing evidence after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let templates = documents("argo-analysis-templates.yaml");
    let named = |name: &str| {
        templates
            .iter()
            .find(|t| t["metadata"]["name"] == name)
            .unwrap()
            .clone()
    };
    let (background, promotion) = (named("driftd"), named("driftd-promotion"));
    let canary = documents("flagger-canary.yaml").remove(0);
    let hooks = canary["spec"]["analysis"]["webhooks"]
        .as_array()
        .unwrap()
        .clone();
    let hook = |kind: &str| hooks.iter().find(|h| h["type"] == kind).unwrap().clone();
    let args = [
        ("deployment", "search-assist"),
        ("driftd-url", d.admin.as_str()),
    ];
    let wiring = || async {
        (
            argo_measure(&background, &background["spec"]["metrics"][0], &args).await,
            argo_measure(&promotion, &promotion["spec"]["metrics"][0], &args).await,
            flagger_passes(&hook("rollout"), &d.admin, "search-assist").await,
            flagger_passes(&hook("confirm-promotion"), &d.admin, "search-assist").await,
        )
    };
    use Measurement::*;
    assert_eq!(
        wiring().await,
        (Successful, Inconclusive, true, false),
        "evidence alone: the canary runs on, promotion waits"
    );

    let post = |token: &'static str, body: Value| {
        let admin = d.admin.clone();
        async move {
            call(
                &admin,
                reqwest::Method::POST,
                "/v1/deployments/search-assist/promotion/approve",
                Some(token),
                Some(body),
            )
            .await
        }
    };
    assert_eq!(
        post(OLGA, json!({"reason": "lgtm"})).await.0,
        403,
        "an operator cannot approve"
    );
    let (status, body) = post(ALICE, json!({"reason": "lgtm", "model_version": "ft-0"})).await;
    assert_eq!(status, 409, "not the version driftd sees: {body}");
    let (status, body) = post(
        ALICE,
        json!({"reason": "dashboards and samples look right"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["promotion_approval"]["model_version"],
        driftd::traffic::CANARY_VERSION
    );
    assert_eq!(decision(&d, "search-assist").await, "pass");
    assert_eq!(
        wiring().await,
        (Successful, Successful, true, true),
        "evidence and an approval: promote"
    );
    assert_eq!(
        decision(&d, "support-bot").await,
        "contained",
        "the other policy is untouched"
    );

    // A new canary version: its own evidence, its own approval.
    let mut sender = Sender::new(&brokers, daemon::TOPIC, &[]).expect("producer");
    let mut next = Generator::new(
        TrafficModel {
            deployments: 2,
            seed: 19,
            ..TrafficModel::default()
        },
        None,
    );
    let mut sent = 0;
    while sent < 200 {
        let g = next.next_event(driftd::clock::wall_ms());
        if g.key != "search-assist" {
            continue;
        }
        let payload = String::from_utf8(g.payload)
            .unwrap()
            .replace(driftd::traffic::CANARY_VERSION, "ft-2026-12-01");
        sender
            .send(Some(g.key.as_bytes()), Some(payload.as_bytes()), None)
            .await;
        sent += 1;
    }
    sender.finish().await.expect("every message acknowledged");
    let start = std::time::Instant::now();
    loop {
        let (_, approvals) = call(
            &d.admin,
            reqwest::Method::GET,
            "/v1/approvals",
            Some(VERA),
            None,
        )
        .await;
        let promotion = &approvals["deployments"]["search-assist"]["promotion"];
        if promotion["canary_version"] == "ft-2026-12-01" {
            assert_eq!(promotion["approved"], false, "{promotion}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{approvals}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(decision(&d, "search-assist").await, "pass");
    assert!(!flagger_passes(&hook("confirm-promotion"), &d.admin, "search-assist").await);
    d.stop().await;
}
