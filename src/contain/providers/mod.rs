//! Action providers: each target's real API, one request per action.
//!
//! | provider | trigger / contain | resolve |
//! |---|---|---|
//! | Alertmanager v2 | `POST /api/v2/alerts` to every instance ([`alertmanager`]), stable labels `alertname`, `deployment`, `metric`, `severity` | same labels with `endsAt` |
//! | PagerDuty Events v2 | `POST /v2/enqueue`, `event_action: trigger`, `dedup_key` = incident | `event_action: resolve` |
//! | Slack | incoming-webhook message with evidence and the release command | a "resolved" message |
//! | webhook | JSON body signed as Standard Webhooks specify ([`webhook`]) | same, `op: resolve` |
//! | flagd file | flag → `defaultVariant` = safe variant, targeting removed, atomic replace ([`flagd`]) | — |
//! | Unleash | `POST /api/admin/projects/{p}/features/{f}/environments/{e}/off` | — |
//! | LaunchDarkly | `PATCH /api/v2/flags/{p}/{f}`, semantic patch `turnFlagOff` | — |
//! | Argo Rollouts | merge-patch `{"status":{"abort":true}}` on the Rollout's status subresource | — |
//!
//! Every alert links to the deployment's on-call page (`{external_url}/ui/deployments/{d}`,
//! [`deployment_page`]): Alertmanager's `generatorURL` and a `page_url` annotation, PagerDuty's
//! first `links` entry, a line of the Slack message, `page_url` in the webhook body.
//!
//! Release resolves alerts; it does not turn flags back on or resume rollouts — that stays a
//! human decision in the flag or rollout tool. Errors say whether a retry can help (timeouts,
//! connection errors, 429, 5xx: see [`super::retry`]) or not (other 4xx, a flag file without the
//! flag), and carry the target's `Retry-After` (seconds or HTTP-date, against driftd's clock).
//! Secrets are resolved at start-up — except the Kubernetes token, re-read for every attempt
//! because projected service-account tokens rotate — and never appear in errors or logs.
//! Providers read the wall clock only through the `now` each attempt is given.

pub mod alertmanager;
pub mod flagd;
pub mod webhook;

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use super::ladder::Action;
use super::latch::{Op, Severity};
use super::retry::retryable_status;
use crate::config::{ConfigError, SecretSource, TargetConfig};
pub use alertmanager::alertmanager_alert;
pub use flagd::flip_flagd;
pub use webhook::webhook_signature;

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    /// A later attempt may succeed.
    pub retryable: bool,
    /// What happened (no secrets).
    pub message: String,
    /// The target asked not to be called again sooner (`Retry-After` on a 429 or 503); the
    /// retry loop waits at least this long.
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
    Alertmanager(alertmanager::Alertmanager),
    Pagerduty {
        url: String,
        routing_key: String,
    },
    Slack {
        url: String,
    },
    Webhook {
        url: String,
        key: Vec<u8>,
    },
    Flagd {
        path: std::path::PathBuf,
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
        /// Where the token is read from, for every attempt: the kubelet rewrites a projected
        /// service-account token about hourly, and the old one expires.
        token: SecretSource,
        /// `containment.targets.<name>`, for errors.
        property: String,
        client: reqwest::Client,
    },
}

/// Reads the secret `s` of the setting `property`.
fn secret(property: &str, s: &SecretSource) -> Result<String, ConfigError> {
    s.resolve().map_err(|reason| ConfigError::Secret {
        property: property.to_string(),
        reason,
    })
}

/// A CA bundle for an HTTPS client; `field` names the setting in errors.
fn read_ca(field: &str, path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| ConfigError::Invalid {
        field: field.to_string(),
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ConfigError::Invalid {
        field: field.to_string(),
        reason: format!("not a PEM certificate bundle: {e}"),
    })?;
    if certs.is_empty() {
        return Err(ConfigError::Invalid {
            field: field.to_string(),
            reason: format!("{} holds no PEM certificate", path.display()),
        });
    }
    Ok(certs)
}

/// Builds a target's own HTTP client; `field` names the target in errors.
fn build_client(
    field: &str,
    builder: reqwest::ClientBuilder,
) -> Result<reqwest::Client, ConfigError> {
    builder.build().map_err(|e| ConfigError::Invalid {
        field: field.to_string(),
        reason: format!("cannot build the HTTP client: {e}"),
    })
}

/// Resolves the configured targets (reads secrets, loads CA bundles and client certificates).
pub fn resolve(targets: &[TargetConfig], timeout: Duration) -> Result<Vec<Target>, ConfigError> {
    targets
        .iter()
        .map(|t| {
            let name = t.name().to_string();
            let property = format!("containment.targets.{name}");
            let kind = match t {
                TargetConfig::Alertmanager { url, urls, basic_auth, bearer_token, tls, .. } => {
                    Kind::Alertmanager(alertmanager::Alertmanager::resolve(
                        &property,
                        url.iter().chain(urls),
                        basic_auth.as_ref(),
                        bearer_token.as_ref(),
                        tls.as_ref(),
                        timeout,
                    )?)
                }
                TargetConfig::Pagerduty { url, routing_key, .. } => Kind::Pagerduty { url: url.clone(), routing_key: secret(&property, routing_key)? },
                TargetConfig::Slack { webhook_url, .. } => Kind::Slack { url: secret(&property, webhook_url)? },
                TargetConfig::Webhook { url, secret: s, .. } => Kind::Webhook {
                    url: url.clone(),
                    key: webhook::signing_key(&secret(&property, s)?).map_err(|reason| ConfigError::Invalid {
                        field: format!("{property}.secret"),
                        reason,
                    })?,
                },
                TargetConfig::Flagd { path, flag, safe_variant, .. } => Kind::Flagd { path: path.clone(), flag: flag.clone(), safe_variant: safe_variant.clone() },
                TargetConfig::Unleash { url, project, feature, environment, token, .. } => Kind::Unleash {
                    url: url.trim_end_matches('/').into(),
                    project: project.clone(),
                    feature: feature.clone(),
                    environment: environment.clone(),
                    token: secret(&property, token)?,
                },
                TargetConfig::Launchdarkly { url, project, flag, environment, token, .. } => Kind::Launchdarkly {
                    url: url.trim_end_matches('/').into(),
                    project: project.clone(),
                    flag: flag.clone(),
                    environment: environment.clone(),
                    token: secret(&property, token)?,
                },
                TargetConfig::ArgoRollouts { api_url, namespace, rollout, token, ca_file, .. } => {
                    let mut builder = reqwest::Client::builder().timeout(timeout);
                    if let Some(ca) = ca_file.as_ref().filter(|_| api_url.starts_with("https://")) {
                        for cert in read_ca(&format!("{property}.ca_file"), ca)? {
                            builder = builder.add_root_certificate(cert);
                        }
                    }
                    // Read now too, so a missing token stops start-up instead of every action.
                    secret(&property, token)?;
                    Kind::Argo {
                        url: format!(
                            "{}/apis/argoproj.io/v1alpha1/namespaces/{namespace}/rollouts/{rollout}/status",
                            api_url.trim_end_matches('/')
                        ),
                        token: token.clone(),
                        client: build_client(&property, builder)?,
                        property,
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

/// The on-call page of this deployment on driftd's admin server at `external_url`: every alert
/// links here, so the person paged lands on the evidence, the timeline and the release form.
pub fn deployment_page(external_url: &str, deployment: &str) -> String {
    let mut path = String::with_capacity(deployment.len());
    for b in deployment.bytes() {
        // Event deployments are already URL-safe; a name given to `contain` need not be.
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            path.push(b as char);
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{external_url}/ui/deployments/{path}")
}

/// The command that releases this deployment, for driftd's admin server at `external_url`.
pub fn release_command(external_url: &str, deployment: &str) -> String {
    format!(
        "driftd release --admin-url {external_url} --deployment {deployment} --operator \"$USER\" --reason \"...\""
    )
}

/// The wait a `Retry-After` value asks for at `now_ms` (Unix milliseconds, driftd's clock):
/// delta-seconds, or an HTTP-date (IMF-fixdate, and the obsolete forms HTTP still accepts)
/// less now — zero when that date has passed. `None` for anything else.
fn retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = i64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
    Some(Duration::from_millis(
        u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0),
    ))
}

/// One response (or the failure to get one) as an attempt's result; `now_ms` is when the
/// attempt was made, for a `Retry-After` date.
fn classify(
    result: Result<reqwest::Response, reqwest::Error>,
    now_ms: i64,
) -> Result<(), ActionError> {
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
                let retry_after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, now_ms));
                Err(ActionError {
                    retryable: retryable_status(status.as_u16()),
                    message: format!("HTTP {status}"),
                    retry_after,
                })
            }
        }
    }
}

/// Carries out one attempt of `a` on `t`; `now` is the attempt's time (RFC 3339, driftd's
/// clock).
pub async fn execute(t: &Target, a: &Action, ctx: &Context, now: &str) -> Result<(), ActionError> {
    // `now` comes from `format_rfc3339_ms`, so it always parses back.
    let now_ms = crate::event::parse_rfc3339_ms(now).unwrap_or_else(crate::clock::wall_ms);
    let d = &a.incident.deployment;
    let http = &ctx.client;
    match &t.kind {
        Kind::Alertmanager(am) => am.post(&json!([alertmanager_alert(a, ctx, now)]), now_ms).await,
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
                body["links"] = json!([
                    { "href": deployment_page(&ctx.external_url, d), "text": "driftd: evidence and release" },
                    { "href": format!("{}/v1/verdicts?deployment={d}", ctx.external_url), "text": "driftd verdicts (JSON)" },
                ]);
            }
            classify(http.post(url).json(&body).send().await, now_ms)
        }
        Kind::Slack { url } => {
            let text = if a.op == Op::Resolve {
                format!(":white_check_mark: driftd: {d} released (incident {})", a.incident.id)
            } else {
                format!(
                    ":rotating_light: driftd: canary *{}* of *{d}* {} — {}\nEvidence: `{}`\nPage: <{}|evidence and release>\nRelease: `{}`",
                    a.incident.model_version,
                    if a.severity == Severity::Critical { "contained" } else { "suspect" },
                    a.incident.reason,
                    a.incident.evidence,
                    deployment_page(&ctx.external_url, d),
                    release_command(&ctx.external_url, d)
                )
            };
            classify(http.post(url).json(&json!({ "text": text })).send().await, now_ms)
        }
        Kind::Webhook { url, key } => {
            let body = serde_json::to_vec(&json!({
                "source": "driftd",
                "op": a.op.as_str(),
                "severity": a.severity.as_str(),
                "idempotency_key": a.key,
                "incident": a.incident,
                "page_url": deployment_page(&ctx.external_url, d),
            }))
            .expect("JSON value serialises");
            let mut request = http
                .post(url)
                .header("Content-Type", "application/json")
                .header("Idempotency-Key", &a.key);
            for (name, value) in webhook::headers(key, &a.key, now_ms.div_euclid(1000), &body) {
                request = request.header(name, value);
            }
            classify(request.body(body).send().await, now_ms)
        }
        Kind::Flagd { path, flag, safe_variant } => {
            // A read, a rewrite and two fsyncs: on the blocking pool, not on a runtime worker,
            // which the other actions' requests and the containment task need meanwhile.
            let (path, flag, safe_variant) = (path.clone(), flag.clone(), safe_variant.clone());
            tokio::task::spawn_blocking(move || flip_flagd(&path, &flag, &safe_variant))
                .await
                .unwrap_or_else(|e| Err(ActionError::retryable(format!("the flag flip did not finish: {e}"))))
        }
        Kind::Unleash { url, project, feature, environment, token } => classify(
            http.post(format!("{url}/api/admin/projects/{project}/features/{feature}/environments/{environment}/off"))
                .header("Authorization", token)
                .send()
                .await,
            now_ms,
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
            now_ms,
        ),
        Kind::Argo { url, token, property, client } => {
            // A rotated token may be briefly unreadable while the kubelet swaps it: retry.
            let token = token.resolve().map_err(|reason| {
                ActionError::retryable(format!("cannot read the token of `{property}`: {reason}"))
            })?;
            classify(
                client
                    .patch(url)
                    .bearer_auth(token)
                    .header("Content-Type", "application/merge-patch+json")
                    .body(r#"{"status":{"abort":true}}"#)
                    .send()
                    .await,
                now_ms,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, retry_after: Option<&str>, now_ms: i64) -> Result<(), ActionError> {
        let mut b = axum::http::Response::builder().status(status);
        if let Some(v) = retry_after {
            b = b.header("retry-after", v);
        }
        classify(Ok(reqwest::Response::from(b.body("").unwrap())), now_ms)
    }

    #[test]
    fn the_page_link_escapes_what_a_url_path_cannot_hold() {
        assert_eq!(
            deployment_page("https://driftd.example.com", "support-bot.v2"),
            "https://driftd.example.com/ui/deployments/support-bot.v2"
        );
        assert_eq!(
            deployment_page("http://h:1", "a b/c?d"),
            "http://h:1/ui/deployments/a%20b%2Fc%3Fd"
        );
    }

    #[test]
    fn retry_after_is_read_from_a_refusal() {
        // 2026-10-21T07:27:00Z, a minute before the date below.
        let now_ms = crate::event::parse_rfc3339_ms("2026-10-21T07:27:00Z").unwrap();
        let e = answer(429, Some("7"), now_ms).unwrap_err();
        assert!(e.retryable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        let e = answer(503, Some("Wed, 21 Oct 2026 07:28:00 GMT"), now_ms).unwrap_err();
        assert_eq!(
            e.retry_after,
            Some(Duration::from_secs(60)),
            "the date form is a wait until that date, on driftd's clock"
        );
        assert_eq!(answer(404, None, now_ms).unwrap_err().retry_after, None);
        assert!(answer(200, Some("7"), now_ms).is_ok());
    }

    /// Regression: `Retry-After` in its HTTP-date form was ignored, so a target that named the
    /// time to come back was called again within the backoff.
    #[test]
    fn retry_after_as_an_http_date() {
        let now_ms = crate::event::parse_rfc3339_ms("1994-11-06T08:49:00.500Z").unwrap();
        let wait = |v: &str| answer(429, Some(v), now_ms).unwrap_err().retry_after;
        assert_eq!(
            wait("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::from_millis(36_500))
        );
        // The obsolete forms a recipient must still accept (RFC 9110, 5.6.7).
        assert_eq!(
            wait("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(Duration::from_millis(36_500))
        );
        assert_eq!(
            wait("Sun Nov  6 08:49:37 1994"),
            Some(Duration::from_millis(36_500))
        );
        assert_eq!(
            wait("Sun, 06 Nov 1994 08:48:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past: no extra wait"
        );
        assert_eq!(wait("soon"), None);
        assert_eq!(wait("-5"), None);
    }
}
