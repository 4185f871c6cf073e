//! The librdkafka client settings every Kafka client of driftd starts from, and the redaction
//! of their errors.
//!
//! Owns driftd's fixed client properties, the operator's pass-through properties with secrets
//! resolved, and the fingerprint that tells a rotated secret. It must never log a client config
//! or let a secret value into an error.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use super::IngestError;
use crate::config::Config;

/// The longest pause between two reconnection attempts to a broker (`reconnect.backoff.max.ms`)
/// unless `kafka.properties` sets it: librdkafka's default is 10 s.
pub const RECONNECT_BACKOFF_MAX_MS: &str = "1000";

/// A librdkafka client config with driftd's fixed settings and the operator's pass-through
/// properties (secrets resolved), and the [`Redact`] for errors of the clients made from it.
/// Never log the config.
pub fn client_config(config: &Config) -> Result<(ClientConfig, Redact), IngestError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.kafka.brokers);
    // librdkafka doubles the pause between reconnects up to 10 s and forgets the doubling only
    // after 10 s without an attempt, so a broker restarted twice within that (a rolling
    // restart, or one that refuses connections while it starts) was first retried up to 10 s
    // after it was back, and a guard is blind that long. Measured against tansu restarts:
    // consumption resumed after up to 10 s with the default, see tests/it/broker_faults.rs.
    // An operator's kafka.properties value wins.
    cc.set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS);
    let props: BTreeMap<String, String> = config.kafka.client_properties()?;
    for (k, v) in &props {
        cc.set(k, v);
    }
    let secrets = config
        .kafka
        .secrets
        .keys()
        .filter_map(|k| props.get(k))
        .filter(|v| !v.is_empty())
        .cloned()
        .collect();
    Ok((cc, Redact(secrets)))
}

/// A fingerprint of the values `kafka.secrets` resolves to now, to tell whether one changed
/// since the clients were made (a SIGHUP after a password rotation). The hash is keyed at
/// random per process and never leaves it, so it says nothing about a value.
pub fn credentials_fingerprint(config: &Config) -> Result<u64, IngestError> {
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let props = config.kafka.client_properties()?;
    let secrets: Vec<(&String, &String)> = config
        .kafka
        .secrets
        .keys()
        .filter_map(|k| props.get_key_value(k))
        .collect();
    Ok(std::hash::BuildHasher::hash_one(
        KEY.get_or_init(Default::default),
        &secrets,
    ))
}

/// Turns librdkafka errors into [`IngestError::Kafka`] with the secret values of the config
/// they came from replaced by `[redacted]`.
pub struct Redact(Vec<String>);

impl Redact {
    /// The error, safe to print.
    pub fn error(&self, e: rdkafka::error::KafkaError) -> IngestError {
        let mut message = e.to_string();
        // Longest first, so a secret that contains another is replaced whole.
        let mut secrets: Vec<&String> = self.0.iter().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in secrets {
            message = message.replace(s.as_str(), "[redacted]");
        }
        IngestError::Kafka { message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: with librdkafka's 10 s cap, consumption resumed up to 12 s after a restarted
    /// broker was ready (tests/it/broker_faults.rs measures it against tansu).
    #[test]
    fn reconnects_are_retried_within_a_second_unless_the_operator_says_otherwise() {
        let (cc, _) = client_config(&Config::default()).unwrap();
        assert_eq!(cc.get("reconnect.backoff.max.ms"), Some("1000"));
        let config =
            Config::parse("[kafka.properties]\n\"reconnect.backoff.max.ms\" = \"5000\"\n").unwrap();
        let (cc, _) = client_config(&config).unwrap();
        assert_eq!(cc.get("reconnect.backoff.max.ms"), Some("5000"));
    }

    /// librdkafka quotes a value it refuses; a secret must not reach the error that `main`
    /// prints and the log records.
    #[test]
    fn kafka_errors_have_secret_values_redacted() {
        let redact = Redact(vec!["hunter2".into(), "hunter2-long".into()]);
        let e = redact.error(rdkafka::error::KafkaError::ClientCreation(
            "Invalid value \"hunter2-long\" for configuration property \"x\"; also hunter2".into(),
        ));
        let shown = e.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"[redacted]\""), "{shown}");
    }
}
