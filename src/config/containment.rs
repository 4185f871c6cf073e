//! The `[containment]` section: latch state, audit log, action timing, policies and targets.
//!
//! Owns the section's schema and defaults, including the policy that applies when none is
//! configured ([`ContainmentConfig::effective_policies`]), and its validation (targets are
//! judged in [`super::targets`]). It must not climb the ladder or act: `contain` does that with
//! these settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, targets, ConfigError, SecretSource, TargetConfig};

/// Containment settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainmentConfig {
    /// Directory of the latch state (`containment.json`, `containment.journal`) and the audit
    /// log (`audit.log`).
    pub state_dir: PathBuf,
    /// The single shared bearer token of earlier versions, from `{ env = … }` or
    /// `{ file = … }`: one identity, `admin`, holding every role (see `admin.operators` for
    /// named ones). Unset and no operators: the routes that need an identity answer 403.
    pub admin_token: Option<SecretSource>,
    /// The audit log is rotated when it grows past this many bytes.
    pub audit_max_bytes: u64,
    /// Rotated audit files kept (`audit.log.1` … `audit.log.N`).
    pub audit_keep: usize,
    /// How often active Alertmanager alerts are re-sent.
    #[serde(with = "humantime_serde")]
    pub alert_repeat: Duration,
    /// Runbook link put into alerts.
    pub runbook_url: String,
    /// Base URL under which operators reach this driftd (links in alerts); default `http://`
    /// and the address the admin server is bound to (see [`super::Config::external_url`]).
    pub external_url: String,
    /// Timeout of one action attempt.
    #[serde(with = "humantime_serde")]
    pub action_timeout: Duration,
    /// Retries of one action stop after this long.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// A verdict or signal change whose event time (`at`) is further than this behind the wall
    /// clock when containment receives it is stale: recorded, audited, counted and shown, never
    /// acted on. A stale `warn`/`fail` is acted on once fresh events of the same canary version
    /// show it still stands (catching up after an outage).
    #[serde(with = "humantime_serde")]
    pub max_evidence_age: Duration,
    /// Policies, first match wins per deployment. None: a `fail` contains at the gate and
    /// alerts every alert target.
    pub policies: Vec<PolicyConfig>,
    /// Action targets, referred to by name from policies.
    pub targets: Vec<TargetConfig>,
}

impl Default for ContainmentConfig {
    fn default() -> Self {
        ContainmentConfig {
            state_dir: PathBuf::from("driftd-state"),
            admin_token: None,
            audit_max_bytes: 16 * 1024 * 1024,
            audit_keep: 5,
            alert_repeat: Duration::from_secs(60),
            runbook_url: String::new(),
            external_url: String::new(),
            action_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(60),
            max_evidence_age: Duration::from_secs(15 * 60),
            policies: Vec::new(),
            targets: Vec::new(),
        }
    }
}

/// Whether a policy acts or only says what it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyMode {
    /// Act.
    Enforce,
    /// Log, audit and count every would-be action; change nothing outside driftd.
    DryRun,
}

/// Verdict states a policy can react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerState {
    /// `warn`.
    Warn,
    /// `fail`.
    Fail,
}

/// What the promotion gate (`/v1/gate/{d}/promotion`) needs before it says promote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionMode {
    /// Every metric passes with enough evidence.
    #[default]
    Evidence,
    /// That, and an approver approved promoting this canary version.
    Approval,
}

/// One policy: which verdicts climb which rung of the ladder, for which deployments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Name, for the audit log.
    pub name: String,
    /// Deployments it covers; `"*"` matches all.
    #[serde(default = "all")]
    pub deployments: Vec<String>,
    /// Metrics whose verdicts it reacts to; `"*"` matches all.
    #[serde(default = "all")]
    pub metrics: Vec<String>,
    /// `enforce` or `dry-run`.
    #[serde(default = "enforce")]
    pub mode: PolicyMode,
    /// Verdict states that alert (rung 2).
    #[serde(default = "fail_only")]
    pub alert_on: Vec<TriggerState>,
    /// Verdict states that contain (rung 3): gate closed, containment targets acted on.
    #[serde(default = "fail_only")]
    pub contain_on: Vec<TriggerState>,
    /// Alert on sample-ratio mismatch and absent telemetry (never contains).
    #[serde(default = "yes")]
    pub alert_on_signals: bool,
    /// Alert targets (names).
    #[serde(default)]
    pub alerts: Vec<String>,
    /// Containment targets (names): flags, rollouts, webhooks.
    #[serde(default)]
    pub contain: Vec<String>,
    /// Distinct identities holding `approver` that must approve a release before it takes
    /// effect; until then the deployment stays contained. 1 (the default): one approver's
    /// release request releases at once.
    #[serde(default = "one")]
    pub release_approvals: u32,
    /// A pending release expires this long after it was requested; approvals count only while
    /// it is pending.
    #[serde(default = "hour", with = "humantime_serde")]
    pub approval_window: Duration,
    /// The identity that requested a release cannot approve it (its request is not counted
    /// as its approval).
    #[serde(default)]
    pub separate_requester: bool,
    /// `evidence` (default): the promotion gate opens on `pass`; `approval`: on `pass` and an
    /// approver's approval of the canary version.
    #[serde(default)]
    pub promotion: PromotionMode,
}

fn all() -> Vec<String> {
    vec!["*".into()]
}
fn enforce() -> PolicyMode {
    PolicyMode::Enforce
}
fn fail_only() -> Vec<TriggerState> {
    vec![TriggerState::Fail]
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn hour() -> Duration {
    Duration::from_secs(3600)
}

impl PolicyConfig {
    /// A policy with every field but its name at the default a config file gets by leaving the
    /// field out.
    pub fn named(name: &str) -> PolicyConfig {
        PolicyConfig {
            name: name.into(),
            deployments: all(),
            metrics: all(),
            mode: enforce(),
            alert_on: fail_only(),
            contain_on: fail_only(),
            alert_on_signals: yes(),
            alerts: Vec::new(),
            contain: Vec::new(),
            release_approvals: one(),
            approval_window: hour(),
            separate_requester: false,
            promotion: PromotionMode::default(),
        }
    }
}

impl ContainmentConfig {
    /// Names of the alert targets (Alertmanager, PagerDuty, Slack), in config order.
    pub fn alert_targets(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter(|t| t.is_alert())
            .map(|t| t.name().to_string())
            .collect()
    }

    /// The policies the ladder applies: the configured ones, or when there are none the safe
    /// default `default`, which covers every deployment and metric, contains at the gate on
    /// `fail` and alerts every alert target. Its settings are the per-field defaults above.
    pub fn effective_policies(&self) -> Vec<PolicyConfig> {
        if !self.policies.is_empty() {
            return self.policies.clone();
        }
        vec![PolicyConfig {
            alerts: self.alert_targets(),
            ..PolicyConfig::named("default")
        }]
    }

    /// The `[containment]` rules: limits and timing, then targets, then that every policy
    /// names existing targets on the right rung.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.state_dir.as_os_str().is_empty() {
            return Err(invalid("containment.state_dir", "must name a directory"));
        }
        if self.audit_max_bytes < 4096 {
            return Err(invalid(
                "containment.audit_max_bytes",
                "must be at least 4096",
            ));
        }
        if self.alert_repeat < Duration::from_secs(1) {
            return Err(invalid("containment.alert_repeat", "must be at least 1s"));
        }
        if self.action_timeout.is_zero() || self.retry_for < self.action_timeout {
            return Err(invalid(
                "containment.retry_for",
                "must be at least containment.action_timeout (and that longer than zero)",
            ));
        }
        if self.max_evidence_age < Duration::from_secs(1) {
            return Err(invalid(
                "containment.max_evidence_age",
                "must be at least 1s (events arrive some time after they happen; a shorter limit would call all evidence stale)",
            ));
        }
        targets::validate(&self.targets)?;
        for (n, p) in self.policies.iter().enumerate() {
            for (field, list, want_alert) in
                [("alerts", &p.alerts, true), ("contain", &p.contain, false)]
            {
                for name in list {
                    let Some(t) = self.targets.iter().find(|t| t.name() == name) else {
                        return Err(invalid(
                            format!("containment.policies[{n}].{field}"),
                            format!("no target named `{name}` in containment.targets"),
                        ));
                    };
                    if want_alert && !t.is_alert() && !matches!(t, TargetConfig::Webhook { .. }) {
                        return Err(invalid(
                            format!("containment.policies[{n}].alerts"),
                            format!("`{name}` is a {} target, not an alert target; list it under contain", t.provider()),
                        ));
                    }
                    if !want_alert && t.is_alert() {
                        return Err(invalid(
                            format!("containment.policies[{n}].contain"),
                            format!("`{name}` is an alert target; list it under alerts"),
                        ));
                    }
                }
            }
            if !(1..=10).contains(&p.release_approvals) {
                return Err(invalid(
                    format!("containment.policies[{n}].release_approvals"),
                    "must be between 1 and 10",
                ));
            }
            if p.approval_window < Duration::from_secs(1) {
                return Err(invalid(
                    format!("containment.policies[{n}].approval_window"),
                    "must be at least 1s",
                ));
            }
            if p.deployments.is_empty() || p.metrics.is_empty() {
                return Err(invalid(
                    format!("containment.policies[{n}]"),
                    "deployments and metrics must not be empty (use [\"*\"] for all)",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn default_policy_is_a_policy_with_every_field_default_alerting_all_alert_targets() {
        let c = Config::parse(
            r#"
[[containment.targets]]
kind = "alertmanager"
name = "am"
url = "http://alertmanager:9093"

[[containment.targets]]
kind = "webhook"
name = "hook"
url = "http://hooks.example.com"
secret = { env = "HOOK_SECRET" }
"#,
        )
        .unwrap();
        assert_eq!(c.containment.alert_targets(), ["am"]);
        let written: PolicyConfig =
            toml::from_str("name = \"default\"\nalerts = [\"am\"]\n").unwrap();
        assert_eq!(
            c.containment.effective_policies(),
            std::slice::from_ref(&written)
        );

        let mut configured = c.containment.clone();
        configured.policies = vec![PolicyConfig {
            mode: PolicyMode::DryRun,
            ..written
        }];
        assert_eq!(configured.effective_policies(), configured.policies);
    }
}
