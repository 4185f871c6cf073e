//! Configuration: the TOML schema, its defaults and its validation.
//!
//! Owns every operator-facing setting, one file per section: each holds its structs, their
//! defaults (`Default` impls and serde default functions) and its own rules. Every default of a
//! setting is defined in this module, including those derived from other settings
//! ([`ContainmentConfig::effective_policies`], [`Config::external_url`]), so the rest of the
//! crate asks for them instead of restating them. [`Config::validate`] is the single entry point
//! that judges a config: it runs each section's rules in a fixed order, so `driftd
//! check-config`, start-up and SIGHUP reload all refuse the same mistakes with the same words.
//! This module must not open sockets, read Kafka or touch state: it only turns text into a
//! checked [`Config`] (secrets are resolved separately, by [`KafkaConfig::client_properties`]
//! and [`SecretSource::resolve`] at start-up, so that `check-config` on a laptop does not need
//! production secrets).

mod containment;
mod detection;
mod ingest;
mod kafka;
mod operators;
mod persist;
mod secret;
mod service;
mod state;
mod targets;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use containment::{ContainmentConfig, PolicyConfig, PolicyMode, PromotionMode, TriggerState};
pub use detection::{
    AlarmState, DeploymentDetection, DetectionConfig, LateDriftConfig, SegmentsConfig,
    SelfBaselineConfig,
};
pub use ingest::{Assignment, IngestConfig};
pub use kafka::{KafkaConfig, StartFrom};
pub use operators::{
    read_token, read_tokens, OperatorConfig, ResolvedOperator, Role, ADMIN_TOKEN_IDENTITY,
    MIN_ADMIN_TOKEN_LEN,
};
pub use persist::PersistConfig;
pub use secret::SecretSource;
pub use service::{AdminConfig, LogConfig, LogFormat, ShutdownConfig};
pub use state::{CohortConfig, MetricConfig, MetricKind, WindowConfig, Worse};
pub use targets::{BasicAuth, TargetConfig, TlsConfig};

/// Why a configuration was refused, or a secret it refers to could not be read. Every variant
/// names the field so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}; check the path and its permissions")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (syntax, unknown key, wrong type).
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file that was parsed.
        path: PathBuf,
        /// The parser's message, which names the offending key and line.
        message: String,
    },
    /// A field parsed but its value is not acceptable.
    #[error("config field `{field}` is invalid: {reason}")]
    Invalid {
        /// Dotted path of the field, e.g. `windows.bucket`.
        field: String,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// A secret the config refers to (in `kafka.secrets`, `containment.admin_token`, an
    /// operator's token in `admin.operators`, or a target's token or key) could not be read when it was needed, at start-up. Validation
    /// never reads secrets, so a config that passes `check-config` can still fail here on a
    /// host that lacks them.
    #[error(
        "cannot read the secret of `{property}`: {reason}; set that environment variable or make that file readable by driftd, then try again"
    )]
    Secret {
        /// The config key that refers to the secret: `kafka.secrets."<librdkafka property>"`,
        /// `containment.admin_token`, `admin.operators[N].token` or
        /// `containment.targets.<target name>`.
        property: String,
        /// Which variable or file could not be read, and why (never the secret itself).
        reason: String,
    },
    /// A secret was read but is too weak to guard what it guards (an admin or operator token
    /// releases contained canaries): too short, or the same value as another identity's.
    #[error(
        "the secret of `{property}` is refused: {reason}; use a random token of at least {min} characters, e.g. `openssl rand -hex 32`"
    )]
    WeakSecret {
        /// The config key that refers to the secret.
        property: String,
        /// What is wrong with it (never the secret itself).
        reason: String,
        /// The least length accepted.
        min: usize,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// True for 1–`max` chars of `[a-z0-9_]`: metric and signal names, used as metrics labels.
fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The whole daemon configuration. Every key is optional; see the README for an example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where events come from and where rejected ones go.
    pub kafka: KafkaConfig,
    /// Limits applied to each message before it reaches cohort state.
    pub ingest: IngestConfig,
    /// How events are grouped into cohorts.
    pub cohorts: CohortConfig,
    /// Rolling-window geometry shared by every cohort and metric.
    pub windows: WindowConfig,
    /// The metrics computed per cohort. Defaults to refusal, escalation, tone and tone_tail.
    pub metrics: Vec<MetricConfig>,
    /// Drift detection.
    pub detection: DetectionConfig,
    /// What happens when a canary fails: policies, action targets, latch, audit.
    pub containment: ContainmentConfig,
    /// The admin HTTP server (metrics, health, cohorts, gate) and the operators of its API.
    pub admin: AdminConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// Graceful shutdown behaviour.
    pub shutdown: ShutdownConfig,
    /// State snapshots, so a restart loses no evidence.
    pub persist: PersistConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            ingest: IngestConfig::default(),
            cohorts: CohortConfig::default(),
            windows: WindowConfig::default(),
            metrics: state::default_metrics(),
            detection: DetectionConfig::default(),
            containment: ContainmentConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            shutdown: ShutdownConfig::default(),
            persist: PersistConfig::default(),
        }
    }
}

/// The parser's message with the line and column it points at, without the parser's excerpt
/// of the offending line: that line may hold a secret written where it does not belong (a
/// misspelt `admin_token`, a value where a `{ file = ... }` reference goes).
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("TOML parse error at line {line}, column {column}: {message}")
        }
        None => format!("TOML parse error: {message}"),
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: parse_message(text, &e),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule, section by section. The single place where a config is judged; the
    /// order is fixed because the first failure is the one reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.ingest.validate(&self.windows)?;
        self.cohorts.validate(&self.windows)?;
        self.windows.validate()?;
        state::validate_metrics(&self.metrics)?;
        self.detection.validate(&self.windows, &self.metrics)?;
        self.containment.validate()?;
        self.admin.validate(self.containment.admin_token.as_ref())?;
        self.validate_approvers()?;
        self.shutdown.validate()?;
        self.log.validate()?;
        self.persist.validate()?;
        if self
            .persist
            .topic
            .as_deref()
            .is_some_and(|t| t == self.kafka.topic || t == self.kafka.dead_letter_topic)
        {
            return Err(invalid(
                "persist.topic",
                "must differ from kafka.topic and kafka.dead_letter_topic: it holds state snapshots",
            ));
        }
        if self
            .persist
            .latch_topic
            .as_deref()
            .is_some_and(|t| t == self.kafka.topic || t == self.kafka.dead_letter_topic)
        {
            return Err(invalid(
                "persist.latch_topic",
                "must differ from kafka.topic and kafka.dead_letter_topic: it holds containment latches",
            ));
        }
        Ok(())
    }

    /// A policy asking more distinct approvers than the config has could never release: refused
    /// here rather than found out during an incident. (Without any identity no release can be
    /// asked for at all, which the API says with 403.)
    fn validate_approvers(&self) -> Result<(), ConfigError> {
        let approvers = usize::from(self.containment.admin_token.is_some())
            + self
                .admin
                .operators
                .iter()
                .filter(|o| o.roles().contains(&Role::Approver))
                .count();
        let has_identities =
            self.containment.admin_token.is_some() || !self.admin.operators.is_empty();
        for (n, p) in self.containment.policies.iter().enumerate() {
            if has_identities && p.release_approvals as usize > approvers {
                return Err(invalid(
                    format!("containment.policies[{n}].release_approvals"),
                    format!(
                        "asks {} distinct approvers, but only {approvers} identities hold the approver role (admin.operators, containment.admin_token)",
                        p.release_approvals
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Each metric's share of the family-wise budget, in config order (Bonferroni: they add up
    /// to at most `detection.alpha`).
    pub fn metric_alphas(&self) -> Vec<f64> {
        let explicit: f64 = self.metrics.iter().filter_map(|m| m.alpha).sum();
        let implicit = self
            .metrics
            .iter()
            .filter(|m| m.alpha.is_none())
            .count()
            .max(1);
        let tests = self.detection.alpha * (1.0 - self.detection.charts_share());
        let share = (tests - explicit) / implicit as f64;
        self.metrics
            .iter()
            .map(|m| m.alpha.unwrap_or(share))
            .collect()
    }

    /// Where a partition without a committed offset starts (`kafka.start_from`, default a
    /// lookback of three window spans).
    pub fn start_from(&self) -> StartFrom {
        self.kafka
            .start_from
            .unwrap_or(StartFrom::Lookback(3 * self.windows.span))
    }

    /// How long a cohort may go without an event before it is evicted (`cohorts.idle_expiry`,
    /// default twice the window span).
    pub fn idle_expiry(&self) -> std::time::Duration {
        self.cohorts.idle_expiry.unwrap_or(2 * self.windows.span)
    }

    /// The expected canary share of a deployment, if the SRM check applies to it.
    pub fn canary_share(&self, deployment: &str) -> Option<f64> {
        self.detection
            .deployments
            .get(deployment)
            .and_then(|o| o.canary_share)
            .or(self.detection.canary_share)
    }

    /// A short, stable hash of the effective config, exported as a metric so operators can see
    /// which config each instance runs. Secrets are references here, never values.
    pub fn hash(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Names of settings that differ from `new` and only take effect on restart. Everything
    /// but `ingest.max_message_bytes`, `ingest.allowed_lateness` and `ingest.max_future_skew`
    /// (which the running pipeline applies) is read once at start-up; a reload that changes any of these is refused whole,
    /// so what runs is always exactly one config.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.ingest.publish_interval != new.ingest.publish_interval {
            changed.push("ingest.publish_interval");
        }
        if self.ingest.max_dead_letters_in_flight != new.ingest.max_dead_letters_in_flight {
            changed.push("ingest.max_dead_letters_in_flight");
        }
        if self.ingest.assignment != new.ingest.assignment {
            changed.push("ingest.assignment");
        }
        if self.kafka != new.kafka {
            changed.push("kafka");
        }
        if self.cohorts != new.cohorts {
            changed.push("cohorts");
        }
        if self.windows != new.windows {
            changed.push("windows");
        }
        if self.metrics != new.metrics {
            changed.push("metrics");
        }
        if self.detection != new.detection {
            changed.push("detection");
        }
        if self.containment != new.containment {
            changed.push("containment");
        }
        if self.admin != new.admin {
            changed.push("admin");
        }
        if self.log.format != new.log.format {
            changed.push("log.format");
        }
        if self.log.level != new.log.level {
            changed.push("log.level");
        }
        if self.shutdown != new.shutdown {
            changed.push("shutdown");
        }
        if self.persist != new.persist {
            changed.push("persist");
        }
        changed
    }

    /// Where state snapshots go: `persist.dir`, or `snapshots/` under
    /// `containment.state_dir`.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.persist
            .dir
            .clone()
            .unwrap_or_else(|| self.containment.state_dir.join("snapshots"))
    }

    /// A short hash of the settings that decide the shape and meaning of cohort and detection
    /// state (cohorts, windows, metrics, detection): a state snapshot written under another
    /// value is not restored.
    pub fn state_fingerprint(&self) -> String {
        let canonical =
            serde_json::to_vec(&(&self.cohorts, &self.windows, &self.metrics, &self.detection))
                .unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The base URL under which operators reach this driftd (links in alerts, release
    /// commands): `containment.external_url` without a trailing `/`, or, when unset,
    /// `http://` and the address the admin server is bound to — which differs from
    /// `admin.addr` when that asks for port 0.
    pub fn external_url(&self, admin_bound: std::net::SocketAddr) -> String {
        let url = &self.containment.external_url;
        if url.is_empty() {
            format!("http://{admin_bound}")
        } else {
            url.trim_end_matches('/').to_string()
        }
    }
}

#[cfg(test)]
mod tests;
