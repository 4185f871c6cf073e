//! The `[kafka]` section: brokers, topics, consumer group and pass-through client properties.
//!
//! Owns the section's schema, defaults and validation, and the resolution of `kafka.secrets`
//! into client properties. It must not create a Kafka client: `ingest` does that with what
//! [`KafkaConfig::client_properties`] returns.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, SecretSource};

/// Kafka connection, consumer group and dead-letter settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated `host:port`.
    pub brokers: String,
    /// Topic of generation events (contract v1).
    pub topic: String,
    /// Consumer group id; one group per driftd deployment.
    pub group_id: String,
    /// Topic that receives rejected events; empty disables dead-lettering (rejections are still
    /// counted).
    pub dead_letter_topic: String,
    /// How often librdkafka reports statistics (consumer lag is read from them).
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
    /// How often stored offsets are committed in the background.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Extra librdkafka properties passed through as-is (e.g. `security.protocol`,
    /// `sasl.mechanism`, `ssl.ca.location`). Secrets do not belong here: use `kafka.secrets`.
    pub properties: BTreeMap<String, String>,
    /// Create `dead_letter_topic` at start when it does not exist, with the brokers' default
    /// partitions and replication (needs create permission). The event topic is never
    /// created: a misspelt `topic` would become an empty topic driftd waits on forever. When
    /// false (the default), a missing topic makes `/readyz` 503 saying which and what to do.
    pub create_topics: bool,
    /// librdkafka properties whose values are secrets, read from a file or an environment
    /// variable at start-up and never logged, e.g. `"sasl.password" = { env = "KAFKA_PASSWORD" }`.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Where a partition without a committed offset in the group starts: `"earliest"`,
    /// `"latest"`, or a lookback such as `"3h"` (the first message at or after now minus the
    /// lookback, by Kafka timestamp). Committed offsets always win. Default: a lookback of
    /// three window spans ([`super::Config::start_from`]), so a new group neither replays days
    /// of history nor starts blind.
    pub start_from: Option<StartFrom>,
    /// A partition whose consumer lag grows while no message has been received from it for
    /// this long is reported as stalled (log, `driftd_partition_stalled`, `/readyz` detail).
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
}

/// Where a partition without a committed offset starts (`kafka.start_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest message the broker keeps.
    Earliest,
    /// Only messages produced after the partition is assigned.
    Latest,
    /// The first message with a Kafka timestamp at or after now minus this.
    Lookback(Duration),
}

impl std::fmt::Display for StartFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFrom::Earliest => f.write_str("earliest"),
            StartFrom::Latest => f.write_str("latest"),
            StartFrom::Lookback(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

impl Serialize for StartFrom {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StartFrom {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "earliest" => Ok(StartFrom::Earliest),
            "latest" => Ok(StartFrom::Latest),
            other => humantime::parse_duration(other)
                .map(StartFrom::Lookback)
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{other}` is not \"earliest\", \"latest\" or a lookback duration such as \"3h\""
                    ))
                }),
        }
    }
}

/// librdkafka property names whose values are credentials: refused in `kafka.properties`.
const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
];

/// Besides the credentials, the one property `kafka.secrets` may also set: the username often
/// comes from the same secret store. Anything else is refused at load, so a secret never lands
/// in a property whose refused value librdkafka would quote in an error.
const SECRET_STORE_USERNAME: &str = "sasl.username";

/// Properties driftd sets itself because correctness depends on them.
const OWNED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.offset.store",
    "enable.auto.commit",
];

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "llm.generation.events".into(),
            group_id: "driftd".into(),
            dead_letter_topic: String::new(),
            stats_interval: Duration::from_secs(5),
            commit_interval: Duration::from_secs(5),
            properties: BTreeMap::new(),
            create_topics: false,
            secrets: BTreeMap::new(),
            start_from: None,
            stall_after: Duration::from_secs(300),
        }
    }
}

impl KafkaConfig {
    /// The pass-through properties with secrets resolved. The result holds secret values: hand
    /// it to librdkafka and drop it, never log it.
    pub fn client_properties(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut props = self.properties.clone();
        for (property, source) in &self.secrets {
            let value = source.resolve().map_err(|reason| ConfigError::Secret {
                property: format!("kafka.secrets.\"{property}\""),
                reason,
            })?;
            props.insert(property.clone(), value);
        }
        Ok(props)
    }

    /// The `[kafka]` rules, in the order [`super::Config::validate`] reports them.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must list at least one host:port"));
        }
        if self.topic.is_empty() || self.topic.len() > 249 {
            return Err(invalid("kafka.topic", "must be 1–249 characters"));
        }
        if self.group_id.is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if self.dead_letter_topic == self.topic {
            return Err(invalid(
                "kafka.dead_letter_topic",
                "must differ from kafka.topic, or rejected events would be consumed again",
            ));
        }
        if self.stats_interval < Duration::from_millis(100) {
            return Err(invalid("kafka.stats_interval", "must be at least 100ms"));
        }
        if self.commit_interval < Duration::from_millis(100) {
            return Err(invalid("kafka.commit_interval", "must be at least 100ms"));
        }
        if self.stall_after < 2 * self.stats_interval {
            return Err(invalid(
                "kafka.stall_after",
                "must be at least twice kafka.stats_interval: the lag is read from librdkafka's statistics",
            ));
        }
        if let Some(StartFrom::Lookback(d)) = self.start_from {
            if d < Duration::from_secs(1) {
                return Err(invalid(
                    "kafka.start_from",
                    "a lookback must be at least 1s (or use \"latest\")",
                ));
            }
        }
        for key in self.secrets.keys() {
            if !SECRET_PROPERTIES.contains(&key.as_str()) && key != SECRET_STORE_USERNAME {
                return Err(invalid(
                    format!("kafka.secrets.\"{key}\""),
                    format!(
                        "is not a credential property; kafka.secrets takes {} and {SECRET_STORE_USERNAME}, other settings go in kafka.properties",
                        SECRET_PROPERTIES.join(", ")
                    ),
                ));
            }
        }
        for key in self.properties.keys() {
            if SECRET_PROPERTIES.contains(&key.as_str()) {
                return Err(invalid(
                    format!("kafka.properties.\"{key}\""),
                    "is a credential: move it to [kafka.secrets] as { env = \"VAR\" } or { file = \"/path\" }",
                ));
            }
            if key == "auto.offset.reset" {
                return Err(invalid(
                    "kafka.properties.\"auto.offset.reset\"",
                    "is set by driftd from kafka.start_from: use start_from = \"earliest\", \"latest\" or a lookback such as \"3h\"",
                ));
            }
            if OWNED_PROPERTIES.contains(&key.as_str()) {
                return Err(invalid(
                    format!("kafka.properties.\"{key}\""),
                    "is set by driftd itself (use kafka.brokers / kafka.group_id; offset storage is fixed for at-least-once)",
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
    fn inline_secret_is_refused() {
        let err =
            Config::parse("[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("sasl.password") && msg.contains("kafka.secrets"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"));
    }

    #[test]
    fn secrets_resolve_from_env_and_file_without_leaking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut k = KafkaConfig::default();
        k.secrets
            .insert("sasl.password".into(), SecretSource::File(file.clone()));
        assert_eq!(k.client_properties().unwrap()["sasl.password"], "s3cret");
        k.secrets.insert(
            "ssl.key.password".into(),
            SecretSource::Env("DRIFTD_TEST_UNSET_VAR".into()),
        );
        let err = k.client_properties().unwrap_err().to_string();
        assert!(
            err.contains("`kafka.secrets.\"ssl.key.password\"`")
                && err.contains("DRIFTD_TEST_UNSET_VAR"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        assert!(format!("{:?}", k).contains("file:"));
    }

    /// A secret in a property that is not a credential would be quoted by librdkafka if it
    /// refused the value: refused at load, naming the key.
    #[test]
    fn secrets_only_for_credential_properties() {
        let mut k = KafkaConfig::default();
        k.secrets.insert(
            "sasl.mechanism".into(),
            SecretSource::Env("DRIFTD_TEST_NEVER_READ".into()),
        );
        let err = k.validate().unwrap_err().to_string();
        assert!(err.contains("kafka.secrets.\"sasl.mechanism\""), "{err}");
        k.secrets.clear();
        k.secrets.insert(
            "sasl.username".into(),
            SecretSource::Env("DRIFTD_TEST_NEVER_READ".into()),
        );
        assert!(k.validate().is_ok());
    }

    #[test]
    fn start_from_reads_earliest_latest_or_a_lookback_and_refuses_the_rest() {
        let parse = |v: &str| Config::parse(&format!("[kafka]\nstart_from = \"{v}\"\n"));
        assert_eq!(parse("earliest").unwrap().start_from(), StartFrom::Earliest);
        assert_eq!(parse("latest").unwrap().start_from(), StartFrom::Latest);
        assert_eq!(
            parse("90m").unwrap().start_from(),
            StartFrom::Lookback(Duration::from_secs(5400))
        );
        assert_eq!(
            Config::default().start_from(),
            StartFrom::Lookback(Duration::from_secs(3 * 3600)),
            "three window spans"
        );
        let e = parse("yesterday").unwrap_err().to_string();
        assert!(
            e.contains("line 2") && e.contains("`yesterday` is not"),
            "{e}"
        );
        let e = parse("0s").unwrap_err().to_string();
        assert!(e.contains("kafka.start_from"), "{e}");
        let e = Config::parse("[kafka.properties]\n\"auto.offset.reset\" = \"earliest\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("auto.offset.reset") && e.contains("start_from"),
            "{e}"
        );
        let round = parse("latest").unwrap();
        assert!(toml::to_string(&round)
            .unwrap()
            .contains("start_from = \"latest\""));
    }

    #[test]
    fn stall_after_must_cover_two_statistics_reports() {
        let mut k = KafkaConfig {
            stall_after: Duration::from_secs(9),
            ..KafkaConfig::default()
        };
        let e = k.validate().unwrap_err().to_string();
        assert!(e.contains("kafka.stall_after"), "{e}");
        k.stall_after = Duration::from_secs(10);
        assert!(k.validate().is_ok());
    }
}
