//! The Alertmanager provider: one alert posted to every instance of a cluster.
//!
//! Like Prometheus with an HA Alertmanager, driftd posts each alert to every configured
//! instance (they deduplicate among themselves by gossip): the attempt succeeds when at least
//! one accepted it, and fails — retryable if any instance may yet accept — when none did.
//! Owns the alert's shape, the credentials (basic auth or a bearer token, read at start-up) and
//! the TLS client. It must not put a credential into an error or a log line.

use std::time::Duration;

use serde_json::{json, Value};

use super::{
    build_client, classify, deployment_page, metric_of, read_ca, release_command, secret,
    ActionError, Context,
};
use crate::config::{BasicAuth, ConfigError, SecretSource, TlsConfig};
use crate::contain::ladder::Action;
use crate::contain::latch::{Op, Severity};

/// How requests authenticate.
enum Auth {
    None,
    Basic { username: String, password: String },
    Bearer(String),
}

/// A resolved Alertmanager target.
pub(super) struct Alertmanager {
    /// Base URLs, without a trailing `/`.
    urls: Vec<String>,
    auth: Auth,
    client: reqwest::Client,
    /// `containment.targets.<name>`, for logs.
    property: String,
}

impl Alertmanager {
    /// Reads the credentials and the TLS files of the target `property`.
    pub(super) fn resolve<'a>(
        property: &str,
        urls: impl Iterator<Item = &'a String>,
        basic_auth: Option<&BasicAuth>,
        bearer_token: Option<&SecretSource>,
        tls: Option<&TlsConfig>,
        timeout: Duration,
    ) -> Result<Alertmanager, ConfigError> {
        let auth = match (basic_auth, bearer_token) {
            (Some(b), _) => Auth::Basic {
                username: b.username.clone(),
                password: secret(&format!("{property}.basic_auth.password"), &b.password)?,
            },
            (None, Some(t)) => Auth::Bearer(secret(&format!("{property}.bearer_token"), t)?),
            (None, None) => Auth::None,
        };
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(tls) = tls {
            if let Some(ca) = &tls.ca_file {
                for cert in read_ca(&format!("{property}.tls.ca_file"), ca)? {
                    builder = builder.add_root_certificate(cert);
                }
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                builder = builder.identity(identity(property, cert, key)?);
            }
            builder = builder.danger_accept_invalid_certs(tls.insecure_skip_verify);
        }
        Ok(Alertmanager {
            urls: urls.map(|u| u.trim_end_matches('/').to_string()).collect(),
            auth,
            client: build_client(property, builder)?,
            property: property.to_string(),
        })
    }

    /// Posts `alerts` to every instance at once; `now_ms` is the attempt's time.
    pub(super) async fn post(&self, alerts: &Value, now_ms: i64) -> Result<(), ActionError> {
        let results = futures::future::join_all(self.urls.iter().map(|url| {
            let mut request = self
                .client
                .post(format!("{url}/api/v2/alerts"))
                .json(alerts);
            request = match &self.auth {
                Auth::None => request,
                Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
                Auth::Bearer(token) => request.bearer_auth(token),
            };
            async move { classify(request.send().await, now_ms) }
        }))
        .await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 && failed < results.len() {
            // Delivered, but the cluster is degraded: say so before it becomes an outage.
            tracing::warn!(
                target_name = %self.property,
                failed,
                instances = results.len(),
                "alert delivered, but not to every Alertmanager instance"
            );
        }
        combine(results)
    }
}

/// The client certificate and key of `property.tls`, as one identity.
fn identity(
    property: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<reqwest::Identity, ConfigError> {
    let read = |field: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| ConfigError::Invalid {
            field: format!("{property}.tls.{field}"),
            reason: format!("cannot read {}: {e}", path.display()),
        })
    };
    let mut pem = read("cert_file", cert)?;
    pem.push(b'\n');
    pem.extend(read("key_file", key)?);
    reqwest::Identity::from_pem(&pem).map_err(|e| ConfigError::Invalid {
        field: format!("{property}.tls"),
        reason: format!(
            "cert_file and key_file are not a PEM certificate and its private key: {e}"
        ),
    })
}

/// One attempt's result from the results of its instances (in config order): success if one
/// accepted. A single instance's error is passed on as it is.
fn combine(results: Vec<Result<(), ActionError>>) -> Result<(), ActionError> {
    let n = results.len();
    let mut errors = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(()) => return Ok(()),
            Err(e) => errors.push((i, e)),
        }
    }
    if errors.len() == 1 {
        return Err(errors.remove(0).1);
    }
    let (last_index, last) = errors.last().expect("no instance accepted, so one failed");
    Err(ActionError {
        retryable: errors.iter().any(|(_, e)| e.retryable),
        message: format!(
            "all {n} Alertmanager instances failed; the last, urls[{last_index}]: {}",
            last.message
        ),
        retry_after: errors.iter().filter_map(|(_, e)| e.retry_after).max(),
    })
}

/// The Alertmanager alert for an action (also used for periodic re-sends).
pub fn alertmanager_alert(a: &Action, ctx: &Context, now: &str) -> Value {
    let d = &a.incident.deployment;
    let mut alert = json!({
        "labels": {
            "alertname": match (a.severity, metric_of(a).as_str()) {
                (_, "release_approval") => "DriftdReleasePending",
                (Severity::Critical, _) => "DriftdCanaryContained",
                (Severity::Warning, _) => "DriftdCanarySuspect",
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
            "page_url": deployment_page(&ctx.external_url, d),
        },
        "startsAt": a.incident.opened_at,
        "generatorURL": deployment_page(&ctx.external_url, d),
    });
    if a.op == Op::Resolve {
        alert["endsAt"] = now.into();
    }
    alert
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(message: &str, retryable: bool, retry_after: Option<u64>) -> Result<(), ActionError> {
        Err(ActionError {
            retryable,
            message: message.into(),
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    #[test]
    fn one_instance_that_accepts_is_enough() {
        assert_eq!(
            combine(vec![err("request failed: timeout", true, None), Ok(())]),
            Ok(())
        );
        assert_eq!(combine(vec![Ok(()), err("HTTP 500", true, None)]), Ok(()));
    }

    #[test]
    fn a_single_instance_fails_as_before() {
        assert_eq!(
            combine(vec![err("HTTP 400 Bad Request", false, None)]),
            err("HTTP 400 Bad Request", false, None)
        );
    }

    #[test]
    fn when_all_fail_the_error_counts_them_and_names_the_last() {
        let e = combine(vec![
            err("request failed: connection refused", true, None),
            err("HTTP 401 Unauthorized", false, None),
        ])
        .unwrap_err();
        assert_eq!(
            e.message,
            "all 2 Alertmanager instances failed; the last, urls[1]: HTTP 401 Unauthorized"
        );
        assert!(e.retryable, "the instance that was down may come back");
        let e = combine(vec![
            err("HTTP 401 Unauthorized", false, None),
            err("HTTP 403 Forbidden", false, None),
        ])
        .unwrap_err();
        assert!(!e.retryable, "no instance will accept these credentials");
        let e = combine(vec![
            err("HTTP 429", true, Some(3)),
            err("HTTP 503", true, Some(9)),
        ])
        .unwrap_err();
        assert_eq!(e.retry_after, Some(Duration::from_secs(9)));
    }
}
