//! The `[admin]`, `[log]` and `[shutdown]` sections: how the daemon serves, logs and stops.
//!
//! Owns their schema, defaults and validation (the operators of `[admin]` in
//! [`super::operators`]). It must not bind a socket or install a
//! subscriber: `admin`, `logging` and `signals` do that with these settings.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, operators, ConfigError, OperatorConfig, SecretSource};

/// Admin HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address of `/metrics`, `/healthz`, `/readyz` and `/v1/*`.
    pub addr: SocketAddr,
    /// Named identities of the admin API, each with its own token and roles (`viewer`,
    /// `operator`, `approver`). `containment.admin_token`, when set, is one more identity,
    /// `admin`, holding every role. None of either: the routes that need an identity answer 403.
    pub operators: Vec<OperatorConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8787)),
            operators: Vec::new(),
        }
    }
}

impl AdminConfig {
    /// The `[admin]` rules; `admin_token` is `containment.admin_token`, the other identity.
    pub(super) fn validate(&self, admin_token: Option<&SecretSource>) -> Result<(), ConfigError> {
        operators::validate(&self.operators, admin_token)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable lines, for terminals.
    Human,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` or `human`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `driftd=debug,rdkafka=warn`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After SIGTERM/SIGINT, the time allowed to finish in-flight work and commit before exit.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            deadline: Duration::from_secs(10),
        }
    }
}

impl LogConfig {
    /// The `[log]` rules: the level must parse as the filter it will be installed as.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err(invalid(
                "log.level",
                "is not a tracing filter (try `info` or `driftd=debug,warn`)",
            ));
        }
        Ok(())
    }
}

impl ShutdownConfig {
    /// The `[shutdown]` rules.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.deadline.is_zero() {
            return Err(invalid("shutdown.deadline", "must be longer than zero"));
        }
        Ok(())
    }
}
