//! Action providers: each target's real API, one request per action.
//!
//! | provider | trigger / contain | resolve |
//! |---|---|---|
//! | Alertmanager v2 | `POST /api/v2/alerts`, stable labels `alertname`, `deployment`, `metric`, `severity` | same labels with `endsAt` |
//! | PagerDuty Events v2 | `POST /v2/enqueue`, `event_action: trigger`, `dedup_key` = incident | `event_action: resolve` |
//! | Slack | incoming-webhook message with evidence and the release command | a "resolved" message |
//! | webhook | JSON body, `X-Driftd-Signature:` [`webhook_signature`] of the body | same, `op: resolve` |
//! | flagd file | flag → `defaultVariant` = safe variant, targeting removed, atomic replace | — |
//! | Unleash | `POST /api/admin/projects/{p}/features/{f}/environments/{e}/off` | — |
//! | LaunchDarkly | `PATCH /api/v2/flags/{p}/{f}`, semantic patch `turnFlagOff` | — |
//! | Argo Rollouts | merge-patch `{"status":{"abort":true}}` on the Rollout's status subresource | — |
//!
//! Release resolves alerts; it does not turn flags back on or resume rollouts — that stays a
//! human decision in the flag or rollout tool. Errors say whether a retry can help (timeouts,
//! connection errors, 429, 5xx: see [`super::retry`]) or not (other 4xx, a flag file without the
//! flag). Secrets are resolved once at start-up and never appear in errors or logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::ladder::Action;
use super::latch::{Op, Severity};
use super::retry::retryable_status;
use super::store::atomic_write;
use crate::config::{ConfigError, TargetConfig};

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    /// A later attempt may succeed.
    pub retryable: bool,
    /// What happened (no secrets).
    pub message: String,
    /// The target asked not to be called again sooner (`Retry-After` in seconds on a 429 or
    /// 503); the retry loop waits at least this long.
    pub retry_after: Option<Duration>,
}

impl ActionError {
    /// A failure a later attempt may fix.
    pub fn retryable(message: impl Into<String>) -> ActionError {
        ActionError {
            retryable: true,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A failure no later attempt will fix.
    pub fn permanent(message: impl Into<String>) -> ActionError {
        ActionError {
            retryable: false,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// A target with its secrets resolved.
pub struct Target {
    /// Name from config.
    pub name: String,
    /// Provider label.
    pub provider: &'static str,
    kind: Kind,
}

enum Kind {
    Alertmanager {
        url: String,
    },
    Pagerduty {
        url: String,
        routing_key: String,
    },
    Slack {
        url: String,
    },
    Webhook {
        url: String,
        secret: String,
    },
    Flagd {
        path: PathBuf,
        flag: String,
        safe_variant: String,
    },
    Unleash {
        url: String,
        project: String,
        feature: String,
        environment: String,
        token: String,
    },
    Launchdarkly {
        url: String,
        project: String,
        flag: String,
        environment: String,
        token: String,
    },
    Argo {
        url: String,
        token: String,
        client: reqwest::Client,
    },
}

fn secret(name: &str, s: &crate::config::SecretSource) -> Result<String, ConfigError> {
    s.resolve().map_err(|reason| ConfigError::Secret {
        property: format!("containment.targets.{name}"),
        reason,
    })
}

/// Resolves the configured targets (reads secrets, loads CA bundles).
pub fn resolve(targets: &[TargetConfig], timeout: Duration) -> Result<Vec<Target>, ConfigError> {
    targets
        .iter()
        .map(|t| {
            let name = t.name().to_string();
            let kind = match t {
                TargetConfig::Alertmanager { url, .. } => Kind::Alertmanager { url: url.trim_end_matches('/').into() },
                TargetConfig::Pagerduty { url, routing_key, .. } => Kind::Pagerduty { url: url.clone(), routing_key: secret(&name, routing_key)? },
                TargetConfig::Slack { webhook_url, .. } => Kind::Slack { url: secret(&name, webhook_url)? },
                TargetConfig::Webhook { url, secret: s, .. } => Kind::Webhook { url: url.clone(), secret: secret(&name, s)? },
                TargetConfig::Flagd { path, flag, safe_variant, .. } => Kind::Flagd { path: path.clone(), flag: flag.clone(), safe_variant: safe_variant.clone() },
                TargetConfig::Unleash { url, project, feature, environment, token, .. } => Kind::Unleash {
                    url: url.trim_end_matches('/').into(),
                    project: project.clone(),
                    feature: feature.clone(),
                    environment: environment.clone(),
                    token: secret(&name, token)?,
                },
                TargetConfig::Launchdarkly { url, project, flag, environment, token, .. } => Kind::Launchdarkly {
                    url: url.trim_end_matches('/').into(),
                    project: project.clone(),
                    flag: flag.clone(),
                    environment: environment.clone(),
                    token: secret(&name, token)?,
                },
                TargetConfig::ArgoRollouts { api_url, namespace, rollout, token, ca_file, .. } => {
                    let mut builder = reqwest::Client::builder().timeout(timeout);
                    if let Some(ca) = ca_file.as_ref().filter(|_| api_url.starts_with("https://")) {
                        let pem = std::fs::read(ca).map_err(|e| ConfigError::Invalid {
                            field: format!("containment.targets.{name}.ca_file"),
                            reason: format!("cannot read {}: {e}", ca.display()),
                        })?;
                        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| ConfigError::Invalid {
                            field: format!("containment.targets.{name}.ca_file"),
                            reason: format!("not a PEM certificate: {e}"),
                        })?;
                        builder = builder.add_root_certificate(cert);
                    }
                    Kind::Argo {
                        url: format!(
                            "{}/apis/argoproj.io/v1alpha1/namespaces/{namespace}/rollouts/{rollout}/status",
                            api_url.trim_end_matches('/')
                        ),
                        token: secret(&name, token)?,
                        client: builder.build().map_err(|e| ConfigError::Invalid {
                            field: format!("containment.targets.{name}"),
                            reason: format!("cannot build the HTTP client: {e}"),
                        })?,
                    }
                }
            };
            Ok(Target { name, provider: t.provider(), kind })
        })
        .collect()
}

/// What every request needs besides the target.
pub struct Context {
    /// Shared HTTP client (timeouts set).
    pub client: reqwest::Client,
    /// Base URL of this driftd, for links.
    pub external_url: String,
    /// Runbook link.
    pub runbook_url: String,
}

fn metric_of(a: &Action) -> String {
    a.incident
        .evidence
        .get("metric")
        .and_then(Value::as_str)
        .or_else(|| a.incident.evidence.get("kind").and_then(Value::as_str))
        .unwrap_or("manual")
        .to_string()
}

/// The command that releases this deployment, for driftd's admin server at `external_url`.
pub fn release_command(external_url: &str, deployment: &str) -> String {
    format!(
        "driftd release --admin-url {external_url} --deployment {deployment} --operator \"$USER\" --reason \"...\""
    )
}

/// The `X-Driftd-Signature` header value of a webhook body: `sha256=` and the hex
/// HMAC-SHA256 of the body under the target's secret. Receivers recompute it to check that the
/// body came from driftd unaltered.
pub fn webhook_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The Alertmanager alert for an action (also used for periodic re-sends).
pub fn alertmanager_alert(a: &Action, ctx: &Context, now: &str) -> Value {
    let d = &a.incident.deployment;
    let mut alert = json!({
        "labels": {
            "alertname": match a.severity {
                Severity::Critical => "DriftdCanaryContained",
                Severity::Warning => "DriftdCanarySuspect",
            },
            "deployment": d,
            "metric": metric_of(a),
            "severity": a.severity.as_str(),
            "source": "driftd",
        },
        "annotations": {
            "summary": format!("driftd: canary {} of {d}: {}", a.incident.model_version, a.incident.reason),
            "incident": a.incident.id,
            "evidence": a.incident.evidence.to_string(),
            "runbook_url": ctx.runbook_url,
            "release_command": release_command(&ctx.external_url, d),
        },
        "startsAt": a.incident.opened_at,
        "generatorURL": format!("{}/v1/verdicts?deployment={d}", ctx.external_url),
    });
    if a.op == Op::Resolve {
        alert["endsAt"] = now.into();
    }
    alert
}

fn classify(result: Result<reqwest::Response, reqwest::Error>) -> Result<(), ActionError> {
    match result {
        Err(e) => Err(ActionError {
            retryable: e.is_timeout() || e.is_connect() || e.is_request(),
            message: format!(
                "request failed: {}",
                if e.is_timeout() {
                    "timeout".to_string()
                } else {
                    e.without_url().to_string()
                }
            ),
            retry_after: None,
        }),
        Ok(r) => {
            let status = r.status();
            if status.is_success() {
                Ok(())
            } else {
                // Only the delta-seconds form; an HTTP-date is rare from APIs and ignored.
                let retry_after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Err(ActionError {
                    retryable: retryable_status(status.as_u16()),
                    message: format!("HTTP {status}"),
                    retry_after,
                })
            }
        }
    }
}

/// Carries out one attempt of `a` on `t`.
pub async fn execute(t: &Target, a: &Action, ctx: &Context, now: &str) -> Result<(), ActionError> {
    let d = &a.incident.deployment;
    let http = &ctx.client;
    match &t.kind {
        Kind::Alertmanager { url } => {
            let body = json!([alertmanager_alert(a, ctx, now)]);
            classify(http.post(format!("{url}/api/v2/alerts")).json(&body).send().await)
        }
        Kind::Pagerduty { url, routing_key } => {
            let action = if a.op == Op::Resolve { "resolve" } else { "trigger" };
            let mut body = json!({
                "routing_key": routing_key,
                "event_action": action,
                "dedup_key": format!("driftd:{}", a.incident.id),
            });
            if a.op != Op::Resolve {
                body["payload"] = json!({
                    "summary": format!("driftd: canary {} of {d}: {}", a.incident.model_version, a.incident.reason),
                    "source": "driftd",
                    "severity": a.severity.as_str(),
                    "component": d,
                    "group": a.incident.model_version,
                    "class": metric_of(a),
                    "custom_details": {
                        "evidence": a.incident.evidence,
                        "release_command": release_command(&ctx.external_url, d),
                        "runbook_url": ctx.runbook_url,
                    },
                });
                body["links"] = json!([{ "href": format!("{}/v1/verdicts?deployment={d}", ctx.external_url), "text": "driftd verdicts" }]);
            }
            classify(http.post(url).json(&body).send().await)
        }
        Kind::Slack { url } => {
            let text = if a.op == Op::Resolve {
                format!(":white_check_mark: driftd: {d} released (incident {})", a.incident.id)
            } else {
                format!(
                    ":rotating_light: driftd: canary *{}* of *{d}* {} — {}\nEvidence: `{}`\nRelease: `{}`",
                    a.incident.model_version,
                    if a.severity == Severity::Critical { "contained" } else { "suspect" },
                    a.incident.reason,
                    a.incident.evidence,
                    release_command(&ctx.external_url, d)
                )
            };
            classify(http.post(url).json(&json!({ "text": text })).send().await)
        }
        Kind::Webhook { url, secret } => {
            let body = serde_json::to_vec(&json!({
                "source": "driftd",
                "op": a.op.as_str(),
                "severity": a.severity.as_str(),
                "idempotency_key": a.key,
                "incident": a.incident,
            }))
            .expect("JSON value serialises");
            let signature = webhook_signature(secret.as_bytes(), &body);
            classify(
                http.post(url)
                    .header("Content-Type", "application/json")
                    .header("X-Driftd-Signature", signature)
                    .header("Idempotency-Key", &a.key)
                    .body(body)
                    .send()
                    .await,
            )
        }
        Kind::Flagd { path, flag, safe_variant } => flip_flagd(path, flag, safe_variant),
        Kind::Unleash { url, project, feature, environment, token } => classify(
            http.post(format!("{url}/api/admin/projects/{project}/features/{feature}/environments/{environment}/off"))
                .header("Authorization", token)
                .send()
                .await,
        ),
        Kind::Launchdarkly { url, project, flag, environment, token } => classify(
            http.patch(format!("{url}/api/v2/flags/{project}/{flag}"))
                .header("Authorization", token)
                .header("Content-Type", "application/json; domain-model=launchdarkly.semanticpatch")
                .body(
                    json!({
                        "environmentKey": environment,
                        "comment": format!("driftd contained {d}: {}", a.incident.reason),
                        "instructions": [{ "kind": "turnFlagOff" }],
                    })
                    .to_string(),
                )
                .send()
                .await,
        ),
        Kind::Argo { url, token, client } => classify(
            client
                .patch(url)
                .bearer_auth(token)
                .header("Content-Type", "application/merge-patch+json")
                .body(r#"{"status":{"abort":true}}"#)
                .send()
                .await,
        ),
    }
}

/// The lock of one flag file. Every flip of a file is a read-edit-write of the whole file, so
/// two flips of the same file (two flags, or two deployments contained at once) must take turns
/// or one of them is lost while recorded as done.
fn flag_file_lock(path: &Path) -> Arc<Mutex<()>> {
    static LOCKS: Mutex<BTreeMap<PathBuf, Arc<Mutex<()>>>> = Mutex::new(BTreeMap::new());
    // Two targets may name the same file by different paths.
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    LOCKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_default()
        .clone()
}

/// Switches `flag` in a flagd flag-definition file to `safe_variant` for everyone: sets
/// `defaultVariant`, removes `targeting` (which would override it), enables the flag, and keeps
/// every other flag and field. Atomic, so flagd never reads a torn file; serialised per file
/// within driftd; and verified by reading the file back, so a flip that another writer undid is
/// retried instead of recorded as done.
pub fn flip_flagd(path: &Path, flag: &str, safe_variant: &str) -> Result<(), ActionError> {
    let lock = flag_file_lock(path);
    let _turn = lock.lock().unwrap_or_else(PoisonError::into_inner);
    write_safe_variant(path, flag, safe_variant)?;
    let back = std::fs::read(path)
        .ok()
        .and_then(|t| serde_json::from_slice::<Value>(&t).ok());
    let flipped = back
        .as_ref()
        .and_then(|doc| doc.get("flags")?.get(flag))
        .is_some_and(|f| {
            f.get("defaultVariant").and_then(Value::as_str) == Some(safe_variant)
                && f.get("targeting").is_none()
                && f.get("state").and_then(Value::as_str) == Some("ENABLED")
        });
    if !flipped {
        return Err(ActionError::retryable(format!(
                "flag `{flag}` in {} is not at `{safe_variant}` after writing it; another writer changed the file",
                path.display()
            )));
    }
    Ok(())
}

fn write_safe_variant(path: &Path, flag: &str, safe_variant: &str) -> Result<(), ActionError> {
    let text = std::fs::read(path).map_err(|e| {
        ActionError::retryable(format!("cannot read flag file {}: {e}", path.display()))
    })?;
    let mut doc: Value = serde_json::from_slice(&text).map_err(|e| {
        ActionError::permanent(format!("flag file {} is not JSON: {e}", path.display()))
    })?;
    let f = doc
        .get_mut("flags")
        .and_then(|flags| flags.get_mut(flag))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| {
            ActionError::permanent(format!("flag `{flag}` is not in {}", path.display()))
        })?;
    if f.get("variants")
        .and_then(|v| v.get(safe_variant))
        .is_none()
    {
        return Err(ActionError::permanent(format!(
            "flag `{flag}` has no variant `{safe_variant}`"
        )));
    }
    f.insert("defaultVariant".into(), safe_variant.into());
    f.insert("state".into(), "ENABLED".into());
    f.remove("targeting");
    let bytes = serde_json::to_vec_pretty(&doc).expect("JSON value serialises");
    atomic_write(path, &bytes).map_err(|e| ActionError::retryable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagd_flip_sets_safe_variant_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        std::fs::write(
            &path,
            r#"{"$schema":"https://flagd.dev/schema/v0/flags.json","flags":{"canary":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","targeting":{"if":[true,"on"]}},"other":{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a"}}}"#,
        )
        .unwrap();
        flip_flagd(&path, "canary", "off").unwrap();
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["flags"]["canary"]["defaultVariant"], "off");
        assert!(doc["flags"]["canary"].get("targeting").is_none());
        assert_eq!(doc["flags"]["other"]["defaultVariant"], "a");
        assert_eq!(doc["$schema"], "https://flagd.dev/schema/v0/flags.json");
        flip_flagd(&path, "canary", "off").unwrap();
        assert!(!flip_flagd(&path, "missing", "off").unwrap_err().retryable);
        assert!(!flip_flagd(&path, "canary", "nope").unwrap_err().retryable);
    }

    /// RFC 4231, test case 2: the signature is plain HMAC-SHA256, so any receiver can check it.
    #[test]
    fn webhook_signature_is_hmac_sha256_in_hex() {
        assert_eq!(
            webhook_signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// Regression: flips of one file by several targets at once raced (read, edit, rewrite
    /// through one temp name per process) and lost flips that were recorded as done.
    #[test]
    fn concurrent_flips_of_one_file_all_land() {
        const N: usize = 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        for round in 0..10 {
            let flags: serde_json::Map<String, Value> = (0..N)
                .map(|i| {
                    (
                        format!("f{i}"),
                        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}),
                    )
                })
                .collect();
            std::fs::write(&path, json!({ "flags": flags }).to_string()).unwrap();
            let start = std::sync::Arc::new(std::sync::Barrier::new(N));
            let flips: Vec<_> = (0..N)
                .map(|i| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        flip_flagd(&path, &format!("f{i}"), "off")
                    })
                })
                .collect();
            for f in flips {
                f.join().unwrap().expect("each flip reports success");
            }
            let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            for i in 0..N {
                assert_eq!(
                    doc["flags"][format!("f{i}")]["defaultVariant"],
                    "off",
                    "round {round}: flag f{i} lost its flip"
                );
            }
        }
    }

    #[test]
    fn retry_after_is_read_from_a_refusal() {
        let answer = |status: u16, retry_after: Option<&str>| {
            let mut b = axum::http::Response::builder().status(status);
            if let Some(v) = retry_after {
                b = b.header("retry-after", v);
            }
            classify(Ok(reqwest::Response::from(b.body("").unwrap())))
        };
        let e = answer(429, Some("7")).unwrap_err();
        assert!(e.retryable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        let e = answer(503, Some("Wed, 21 Oct 2026 07:28:00 GMT")).unwrap_err();
        assert_eq!(e.retry_after, None, "the date form is ignored");
        assert_eq!(answer(404, None).unwrap_err().retry_after, None);
        assert!(answer(200, Some("7")).is_ok());
    }
}
