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
    /// of events, skipping what the snapshot already holds. With `latch_topic`, also how often an
    /// owner refreshes the verdict views it shares (a change is shared at once).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Where snapshots are written; unset: `snapshots/` under `containment.state_dir`.
    pub dir: Option<PathBuf>,
    /// A compacted Kafka topic every snapshot is also produced to, so that the next owner of a
    /// partition (another replica) restores its state from it; unset: local files only (one
    /// replica).
    pub topic: Option<String>,
    /// Partitions of `topic` when driftd creates it. Event partition `p` is stored in state
    /// partition `p % topic_partitions`.
    pub topic_partitions: i32,
    /// How long the first read of a partition's newest snapshot from `topic` may take at
    /// assignment; failed reads are tried again every second, each allowed twice as long as the
    /// one before, for up to `topic_restore_patience`.
    #[serde(with = "humantime_serde")]
    pub topic_read_timeout: Duration,
    /// How long a newly assigned partition waits (paused, the other partitions consumed
    /// meanwhile) for its state to be read from `topic`; past it the local snapshot is used,
    /// which for a partition that moved is older or missing, so the events since it are read
    /// again or, with no local copy, its state is lost (counted and logged). Long by default:
    /// waiting costs only that partition's lag.
    #[serde(with = "humantime_serde")]
    pub topic_restore_patience: Duration,
    /// A compacted Kafka topic every containment latch change, ownership epoch, owner's verdict
    /// view and forwarded operator request is produced to and every replica tails, so that all
    /// replicas answer the same (the gate and `/v1/verdicts` included) and only the current
    /// owner of a partition acts; unset: `containment.json` only (one replica).
    pub latch_topic: Option<String>,
    /// Partitions of `latch_topic` when driftd creates it. The records of event partition `p`
    /// go to latch partition `p % latch_topic_partitions`.
    pub latch_topic_partitions: i32,
    /// How long the check before an action may wait to read the latch topic to its end; past
    /// it the action is dropped (audited and counted), never taken unchecked.
    #[serde(with = "humantime_serde")]
    pub latch_read_timeout: Duration,
}

impl Default for PersistConfig {
    fn default() -> Self {
        PersistConfig {
            interval: Duration::from_secs(30),
            dir: None,
            topic: None,
            topic_partitions: 6,
            topic_read_timeout: Duration::from_secs(10),
            topic_restore_patience: Duration::from_secs(300),
            latch_topic: None,
            latch_topic_partitions: 3,
            latch_read_timeout: Duration::from_secs(5),
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
        let not_a_topic = |t: &String| {
            t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if self.topic.as_ref().is_some_and(not_a_topic) {
            return Err(invalid(
                "persist.topic",
                "must be a Kafka topic name ([a-zA-Z0-9._-]); leave it out for local snapshots only",
            ));
        }
        if self.latch_topic.as_ref().is_some_and(not_a_topic) {
            return Err(invalid(
                "persist.latch_topic",
                "must be a Kafka topic name ([a-zA-Z0-9._-]); leave it out for containment.json only",
            ));
        }
        if self.latch_topic.is_some() && self.latch_topic == self.topic {
            return Err(invalid(
                "persist.latch_topic",
                "must differ from persist.topic: snapshots and latches are keyed differently",
            ));
        }
        if !(1..=1000).contains(&self.latch_topic_partitions) {
            return Err(invalid(
                "persist.latch_topic_partitions",
                "must be between 1 and 1000",
            ));
        }
        if self.latch_read_timeout < Duration::from_millis(100)
            || self.latch_read_timeout > Duration::from_secs(60)
        {
            return Err(invalid(
                "persist.latch_read_timeout",
                "must be between 100ms and 1m",
            ));
        }
        if !(1..=1000).contains(&self.topic_partitions) {
            return Err(invalid(
                "persist.topic_partitions",
                "must be between 1 and 1000",
            ));
        }
        if self.topic_read_timeout < Duration::from_millis(100)
            || self.topic_read_timeout > Duration::from_secs(300)
        {
            return Err(invalid(
                "persist.topic_read_timeout",
                "must be between 100ms and 5m",
            ));
        }
        if self.topic_restore_patience < self.topic_read_timeout
            || self.topic_restore_patience > Duration::from_secs(24 * 3600)
        {
            return Err(invalid(
                "persist.topic_restore_patience",
                "must be at least persist.topic_read_timeout (one read) and at most 24h",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Assignment, Config};

    #[test]
    fn the_state_topic_is_off_by_default_and_must_be_a_topic_name_of_its_own() {
        let c = Config::default();
        assert_eq!(
            c.persist.topic, None,
            "single replica: local snapshots only"
        );
        let c = Config::parse("[persist]\ntopic = \"driftd.state\"\n").unwrap();
        assert_eq!(c.persist.topic.as_deref(), Some("driftd.state"));
        assert_eq!(c.persist.topic_partitions, 6);
        for bad in ["", "has space", "a/b"] {
            let e = Config::parse(&format!("[persist]\ntopic = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("persist.topic"), "{e}");
        }
        let e = Config::parse("[kafka]\ntopic = \"events\"\n[persist]\ntopic = \"events\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("persist.topic") && e.contains("differ"), "{e}");
        let e = Config::parse("[persist]\ntopic_read_timeout = \"10m\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("persist.topic_read_timeout"), "{e}");
        assert_eq!(c.persist.topic_restore_patience, Duration::from_secs(300));
        for bad in ["5s", "2d"] {
            let e = Config::parse(&format!(
                "[persist]\ntopic_read_timeout = \"10s\"\ntopic_restore_patience = \"{bad}\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains("persist.topic_restore_patience"), "{e}");
        }
    }

    #[test]
    fn the_latch_topic_is_off_by_default_and_a_topic_of_its_own() {
        assert_eq!(Config::default().persist.latch_topic, None);
        let c = Config::parse("[persist]\nlatch_topic = \"driftd.latches\"\n").unwrap();
        assert_eq!(c.persist.latch_topic.as_deref(), Some("driftd.latches"));
        for bad in [
            "[persist]\nlatch_topic = \"a b\"\n",
            "[persist]\ntopic = \"s\"\nlatch_topic = \"s\"\n",
            "[kafka]\ntopic = \"events\"\n[persist]\nlatch_topic = \"events\"\n",
            "[persist]\nlatch_topic_partitions = 0\n",
            "[persist]\nlatch_read_timeout = \"2m\"\n",
        ] {
            let e = Config::parse(bad).unwrap_err().to_string();
            assert!(e.contains("persist.latch"), "{bad}: {e}");
        }
    }

    #[test]
    fn assignment_is_eager_unless_cooperative_sticky_is_chosen() {
        assert_eq!(Config::default().ingest.assignment, Assignment::Eager);
        assert_eq!(Assignment::Eager.strategy(), "range,roundrobin");
        let c = Config::parse("[ingest]\nassignment = \"cooperative-sticky\"\n").unwrap();
        assert_eq!(c.ingest.assignment.strategy(), "cooperative-sticky");
        assert!(Config::parse("[ingest]\nassignment = \"sticky\"\n").is_err());
    }
}
