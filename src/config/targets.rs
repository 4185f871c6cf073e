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
    /// Prometheus Alertmanager, API v2.
    Alertmanager {
        /// Name used by policies.
        name: String,
        /// Base URL, e.g. `http://alertmanager:9093`.
        url: String,
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
    /// Any HTTP endpoint: a JSON body signed with HMAC-SHA256 (`X-Driftd-Signature`).
    Webhook {
        /// Name used by policies.
        name: String,
        /// Endpoint.
        url: String,
        /// HMAC key.
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

/// The `containment.targets` rules: unique names, and HTTP(S) URLs where a target has one.
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
            TargetConfig::Alertmanager { url, .. }
            | TargetConfig::Pagerduty { url, .. }
            | TargetConfig::Webhook { url, .. }
            | TargetConfig::Unleash { url, .. }
            | TargetConfig::Launchdarkly { url, .. } => Some(url),
            TargetConfig::ArgoRollouts { api_url, .. } => Some(api_url),
            TargetConfig::Slack { .. } | TargetConfig::Flagd { .. } => None,
        };
        if let Some(u) = url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(invalid(
                    format!("containment.targets[{n}]"),
                    "URL must start with http:// or https://",
                ));
            }
        }
    }
    Ok(())
}
