//! `containment.targets`: the external systems driftd acts on (alerting, flags, rollouts,
//! webhooks).
//!
//! Owns each provider's settings, their defaults (public API endpoints, the in-cluster
//! service-account token and CA) and their validation. It must not call a provider or read a
//! secret: `contain::providers` resolves targets into clients.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, SecretSource};

/// An external system driftd acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetConfig {
    /// Prometheus Alertmanager, API v2: one instance (`url`) or an HA cluster (`urls`), each
    /// alert posted to every instance, as Prometheus does.
    Alertmanager {
        /// Name used by policies.
        name: String,
        /// Base URL of a single instance, e.g. `http://alertmanager:9093`. Set this or `urls`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// Base URLs of every instance of an HA cluster; an alert is delivered when at least
        /// one of them accepted it. Set this or `url`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        urls: Vec<String>,
        /// HTTP basic authentication (Alertmanager's `--web.config.file` `basic_auth_users`).
        /// Not with `bearer_token`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        basic_auth: Option<BasicAuth>,
        /// `Authorization: Bearer` token, e.g. for an authenticating proxy. Not with
        /// `basic_auth`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bearer_token: Option<SecretSource>,
        /// TLS options for `https://` URLs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<TlsConfig>,
    },
    /// PagerDuty Events API v2.
    Pagerduty {
        /// Name used by policies.
        name: String,
        /// Events endpoint.
        #[serde(default = "pagerduty_url")]
        url: String,
        /// Integration (routing) key.
        routing_key: SecretSource,
    },
    /// Slack incoming webhook.
    Slack {
        /// Name used by policies.
        name: String,
        /// The webhook URL (a secret: it authorises posting).
        webhook_url: SecretSource,
    },
    /// Any HTTP endpoint: a JSON body signed as Standard Webhooks specify (`webhook-id`,
    /// `webhook-timestamp`, `webhook-signature`; see `docs/webhooks.md`).
    Webhook {
        /// Name used by policies.
        name: String,
        /// Endpoint.
        url: String,
        /// Signing secret in the Standard Webhooks form: `whsec_` and the base64 of a random
        /// key of at least 24 bytes. Read at start-up, which refuses any other form.
        secret: SecretSource,
    },
    /// An OpenFeature flagd flag-definition file: the flag is switched to its safe variant.
    Flagd {
        /// Name used by policies.
        name: String,
        /// The flag-definition JSON file flagd watches.
        path: PathBuf,
        /// Flag key.
        flag: String,
        /// Variant to serve while contained.
        safe_variant: String,
    },
    /// Unleash admin API: disable the feature in an environment.
    Unleash {
        /// Name used by policies.
        name: String,
        /// Base URL, e.g. `https://unleash.example.com`.
        url: String,
        /// Project id.
        #[serde(default = "default_project")]
        project: String,
        /// Feature name.
        feature: String,
        /// Environment.
        environment: String,
        /// Admin API token.
        token: SecretSource,
    },
    /// LaunchDarkly semantic patch: `turnFlagOff` in an environment.
    Launchdarkly {
        /// Name used by policies.
        name: String,
        /// API base URL.
        #[serde(default = "launchdarkly_url")]
        url: String,
        /// Project key.
        project: String,
        /// Flag key.
        flag: String,
        /// Environment key.
        environment: String,
        /// API access token.
        token: SecretSource,
    },
    /// Argo Rollouts: abort the Rollout through the Kubernetes API.
    ArgoRollouts {
        /// Name used by policies.
        name: String,
        /// Kubernetes API server.
        #[serde(default = "kubernetes_url")]
        api_url: String,
        /// Namespace of the Rollout.
        namespace: String,
        /// Rollout name.
        rollout: String,
        /// Bearer token; default: the in-cluster service-account token file.
        #[serde(default = "service_account_token")]
        token: SecretSource,
        /// CA bundle of the API server; default: the in-cluster service-account CA.
        #[serde(default = "service_account_ca")]
        ca_file: Option<PathBuf>,
    },
}

/// HTTP basic authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name (not a secret).
    pub username: String,
    /// Password.
    pub password: SecretSource,
}

/// TLS options of an HTTPS client.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM bundle of the CAs that may sign the server's certificate, in addition to the
    /// public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain), for servers that require mutual TLS. With `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. Only for a test bench: it lets anyone on the path read
    /// and forge the traffic.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}
fn launchdarkly_url() -> String {
    "https://app.launchdarkly.com".into()
}
fn kubernetes_url() -> String {
    "https://kubernetes.default.svc".into()
}
fn default_project() -> String {
    "default".into()
}
fn service_account_token() -> SecretSource {
    SecretSource::File("/var/run/secrets/kubernetes.io/serviceaccount/token".into())
}
fn service_account_ca() -> Option<PathBuf> {
    Some("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".into())
}

impl TargetConfig {
    /// The target's name.
    pub fn name(&self) -> &str {
        match self {
            TargetConfig::Alertmanager { name, .. }
            | TargetConfig::Pagerduty { name, .. }
            | TargetConfig::Slack { name, .. }
            | TargetConfig::Webhook { name, .. }
            | TargetConfig::Flagd { name, .. }
            | TargetConfig::Unleash { name, .. }
            | TargetConfig::Launchdarkly { name, .. }
            | TargetConfig::ArgoRollouts { name, .. } => name,
        }
    }

    /// The provider, as a metrics label.
    pub fn provider(&self) -> &'static str {
        match self {
            TargetConfig::Alertmanager { .. } => "alertmanager",
            TargetConfig::Pagerduty { .. } => "pagerduty",
            TargetConfig::Slack { .. } => "slack",
            TargetConfig::Webhook { .. } => "webhook",
            TargetConfig::Flagd { .. } => "flagd",
            TargetConfig::Unleash { .. } => "unleash",
            TargetConfig::Launchdarkly { .. } => "launchdarkly",
            TargetConfig::ArgoRollouts { .. } => "argo_rollouts",
        }
    }

    /// True for targets that notify people (alert rung) rather than change traffic.
    pub fn is_alert(&self) -> bool {
        matches!(
            self,
            TargetConfig::Alertmanager { .. }
                | TargetConfig::Pagerduty { .. }
                | TargetConfig::Slack { .. }
        )
    }
}

/// The `containment.targets` rules: unique names, HTTP(S) URLs where a target has one, and
/// each Alertmanager's URLs, credentials and TLS options consistent.
pub(super) fn validate(targets: &[TargetConfig]) -> Result<(), ConfigError> {
    let mut names: Vec<&str> = Vec::new();
    for (n, t) in targets.iter().enumerate() {
        let name = t.name();
        if name.is_empty() || names.contains(&name) {
            return Err(invalid(
                format!("containment.targets[{n}].name"),
                "must be non-empty and unique",
            ));
        }
        names.push(name);
        let url = match t {
            TargetConfig::Alertmanager {
                url,
                urls,
                basic_auth,
                bearer_token,
                tls,
                ..
            } => {
                validate_alertmanager(n, url.as_deref(), urls, basic_auth, bearer_token, tls)?;
                url.as_ref()
            }
            TargetConfig::Pagerduty { url, .. }
            | TargetConfig::Webhook { url, .. }
            | TargetConfig::Unleash { url, .. }
            | TargetConfig::Launchdarkly { url, .. } => Some(url),
            TargetConfig::ArgoRollouts { api_url, .. } => Some(api_url),
            TargetConfig::Slack { .. } | TargetConfig::Flagd { .. } => None,
        };
        if let Some(u) = url {
            if !is_http(u) {
                return Err(invalid(
                    format!("containment.targets[{n}]"),
                    "URL must start with http:// or https://",
                ));
            }
        }
    }
    Ok(())
}

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

fn validate_alertmanager(
    n: usize,
    url: Option<&str>,
    urls: &[String],
    basic_auth: &Option<BasicAuth>,
    bearer_token: &Option<SecretSource>,
    tls: &Option<TlsConfig>,
) -> Result<(), ConfigError> {
    let field = |f: &str| format!("containment.targets[{n}].{f}");
    match (url, urls.is_empty()) {
        (Some(_), false) => {
            return Err(invalid(
                field("urls"),
                "set `url` (one instance) or `urls` (every instance of an HA cluster), not both",
            ))
        }
        (None, true) => {
            return Err(invalid(
                field("urls"),
                "an Alertmanager target needs `url` or `urls`",
            ))
        }
        _ => {}
    }
    for (i, u) in urls.iter().enumerate() {
        if !is_http(u) {
            return Err(invalid(
                field(&format!("urls[{i}]")),
                "URL must start with http:// or https://",
            ));
        }
        if urls[..i].contains(u) {
            return Err(invalid(
                field(&format!("urls[{i}]")),
                "is listed twice; list each instance once",
            ));
        }
    }
    if basic_auth.is_some() && bearer_token.is_some() {
        return Err(invalid(
            field("bearer_token"),
            "set `basic_auth` or `bearer_token`, not both",
        ));
    }
    if basic_auth.as_ref().is_some_and(|b| b.username.is_empty()) {
        return Err(invalid(field("basic_auth.username"), "must not be empty"));
    }
    if let Some(tls) = tls {
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            let missing = if tls.cert_file.is_some() {
                "key_file"
            } else {
                "cert_file"
            };
            return Err(invalid(
                field(&format!("tls.{missing}")),
                "a client certificate needs both `cert_file` and `key_file`; set both or neither",
            ));
        }
        if !url
            .into_iter()
            .chain(urls.iter().map(String::as_str))
            .any(|u| u.starts_with("https://"))
        {
            return Err(invalid(
                field("tls"),
                "no URL of this target uses https://, so the TLS options would be ignored",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn parse(target: &str) -> Result<Config, String> {
        Config::parse(&format!(
            "[[containment.targets]]\nkind = \"alertmanager\"\nname = \"am\"\n{target}"
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn one_url_still_loads_and_hashes_as_before() {
        let c = parse("url = \"http://am:9093\"").unwrap();
        // The serialised form (and so the config hash) of a one-URL target is unchanged.
        assert_eq!(
            serde_json::to_value(&c.containment.targets[0]).unwrap(),
            serde_json::json!({"kind": "alertmanager", "name": "am", "url": "http://am:9093"})
        );
    }

    #[test]
    fn an_ha_pair_with_auth_and_tls_loads() {
        parse(
            r#"urls = ["https://am-0:9093", "https://am-1:9093"]
basic_auth = { username = "driftd", password = { file = "/run/secrets/am" } }
tls = { ca_file = "/etc/ca.pem", cert_file = "/etc/c.pem", key_file = "/etc/k.pem" }"#,
        )
        .unwrap();
        parse("urls = [\"http://am-0:9093\"]\nbearer_token = { env = \"AM_TOKEN\" }").unwrap();
    }

    #[test]
    fn inconsistent_alertmanager_settings_are_refused_with_their_field() {
        for (target, field, why) in [
            ("", "containment.targets[0].urls", "needs `url` or `urls`"),
            (
                "url = \"http://a:9093\"\nurls = [\"http://b:9093\"]",
                "containment.targets[0].urls",
                "not both",
            ),
            (
                "urls = [\"http://a:9093\", \"am:9093\"]",
                "containment.targets[0].urls[1]",
                "http:// or https://",
            ),
            (
                "urls = [\"http://a:9093\", \"http://a:9093\"]",
                "containment.targets[0].urls[1]",
                "listed twice",
            ),
            (
                "url = \"http://a:9093\"\nbasic_auth = { username = \"u\", password = { env = \"P\" } }\nbearer_token = { env = \"T\" }",
                "containment.targets[0].bearer_token",
                "not both",
            ),
            (
                "url = \"http://a:9093\"\nbasic_auth = { username = \"\", password = { env = \"P\" } }",
                "containment.targets[0].basic_auth.username",
                "must not be empty",
            ),
            (
                "url = \"https://a:9093\"\ntls = { cert_file = \"/c.pem\" }",
                "containment.targets[0].tls.key_file",
                "set both or neither",
            ),
            (
                "url = \"https://a:9093\"\ntls = { key_file = \"/k.pem\" }",
                "containment.targets[0].tls.cert_file",
                "set both or neither",
            ),
            (
                "url = \"http://a:9093\"\ntls = { insecure_skip_verify = true }",
                "containment.targets[0].tls",
                "no URL of this target uses https://",
            ),
        ] {
            let e = parse(target).unwrap_err();
            assert!(
                e.contains(&format!("`{field}`")) && e.contains(why),
                "{target}: {e}"
            );
        }
    }
}
