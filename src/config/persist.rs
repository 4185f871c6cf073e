//! The `[persist]` section: state snapshots.
//!
//! Owns when and where each Kafka partition's cohort and detection state is written. It must
//! not write anything: `crate::persist` does, with these settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// State snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistConfig {
    /// How often each partition's state is snapshotted (it is also snapshotted when the
    /// partition is revoked and at shutdown). A restart re-reads at most about two intervals
    /// of events, skipping what the snapshot already holds.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Where snapshots are written; unset: `snapshots/` under `containment.state_dir`.
    pub dir: Option<PathBuf>,
}

impl Default for PersistConfig {
    fn default() -> Self {
        PersistConfig {
            interval: Duration::from_secs(30),
            dir: None,
        }
    }
}

impl PersistConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.interval < Duration::from_secs(1) || self.interval > Duration::from_secs(3600) {
            return Err(invalid(
                "persist.interval",
                "must be between 1s and 1h (snapshots are written that often)",
            ));
        }
        if self.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(invalid(
                "persist.dir",
                "must not be empty; leave it out for snapshots/ under containment.state_dir",
            ));
        }
        Ok(())
    }
}
