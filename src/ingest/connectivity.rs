//! What the operator's log says about the brokers' reachability.
//!
//! librdkafka reports a broker it cannot reach on every retry — several times a second while it
//! is down — through the error callback of each client, and the consumer hands the same error
//! to every receive. Logged as they come, a broker outage buries the log. This module turns them
//! into one warning when no broker can be reached (naming the brokers and saying driftd keeps
//! retrying), a reminder at most every [`REMIND_EVERY`] while that lasts, and one line when a
//! broker answers again; any other client error is logged at most once per error code per
//! [`REMIND_EVERY`]. Every repeat still goes to debug. A refused authentication is different:
//! retrying cannot fix it, so it is logged as an error naming `sasl.mechanism` and
//! `sasl.username` (never the password) with what to do, and `/readyz` says the same
//! (`driftd_kafka_blocked{reason="authentication"}`) until a broker accepts the credentials.
//! It only reports: librdkafka does the retrying, and readiness otherwise belongs to the
//! consumer's partition assignment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::metrics::Metrics;

/// The shortest time between two warnings about the same thing.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

/// What to log for one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Say {
    /// No broker can be reached, for the first time since the last one answered.
    Unreachable,
    /// Still none, for this long.
    StillUnreachable(Duration),
    /// A broker connection failed (not all of them), not logged within [`REMIND_EVERY`]:
    /// librdkafka reconnects by itself.
    Connection,
    /// The brokers refused the credentials, not logged within [`REMIND_EVERY`].
    Authentication,
    /// Another client error, not logged within [`REMIND_EVERY`].
    Error,
    /// A repeat: debug only.
    Repeat,
}

/// The state behind the rate limits, kept apart from the clock and the log so it can be tested
/// with made-up instants.
#[derive(Default)]
struct State {
    /// Since when no broker could be reached, and when that was last said.
    down: Option<(Instant, Instant)>,
    /// When each other error code (as librdkafka numbers them) was last logged.
    logged: HashMap<i32, Instant>,
}

impl State {
    fn error(&mut self, code: Option<RDKafkaErrorCode>, now: Instant) -> Say {
        let due = |last: Instant| now.saturating_duration_since(last) >= REMIND_EVERY;
        match code {
            Some(RDKafkaErrorCode::AllBrokersDown) => match &mut self.down {
                None => {
                    self.down = Some((now, now));
                    Say::Unreachable
                }
                Some((since, said)) if due(*said) => {
                    *said = now;
                    Say::StillUnreachable(now.saturating_duration_since(*since))
                }
                Some(_) => Say::Repeat,
            },
            // Anything else (one broker's connection failing, a refused authentication): worth
            // a line, not one per attempt.
            // While no broker answers, each failed connection is part of the outage already said.
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::Resolve)
                if self.down.is_some() =>
            {
                Say::Repeat
            }
            Some(code) => match self.logged.get(&(code as i32)) {
                Some(last) if !due(*last) => Say::Repeat,
                _ => {
                    self.logged.insert(code as i32, now);
                    match code {
                        RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::Resolve => {
                            Say::Connection
                        }
                        c if refused_credentials(c) => Say::Authentication,
                        _ => Say::Error,
                    }
                }
            },
            None => Say::Error,
        }
    }

    /// A broker answered: how long none could be reached, if that was the case.
    fn reachable(&mut self, now: Instant) -> Option<Duration> {
        let (since, _) = self.down.take()?;
        self.logged.clear();
        Some(now.saturating_duration_since(since))
    }
}

/// The error codes with which librdkafka reports credentials the brokers refused (SCRAM's
/// `invalid-proof` arrives as [`RDKafkaErrorCode::Authentication`]).
fn refused_credentials(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::UnsupportedSASLMechanism
    )
}

/// The brokers' reachability as reported by every Kafka client of one driftd (the consumer and
/// the dead-letter producer share one, so an outage is said once).
pub struct Connectivity {
    brokers: String,
    /// `sasl.mechanism` as configured (librdkafka's default when unset).
    mechanism: String,
    /// `sasl.username` when it is in `kafka.properties`; one read from `kafka.secrets` is only
    /// referred to.
    username: String,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

impl Connectivity {
    /// For the clients made from `kafka` (its brokers are named in every line); a refused
    /// authentication is shown on `/readyz` through `metrics`.
    pub fn new(kafka: &KafkaConfig, metrics: Arc<Metrics>) -> Connectivity {
        let property = |k: &str| kafka.properties.get(k).cloned();
        let mechanism = property("sasl.mechanism")
            .or_else(|| property("sasl.mechanisms"))
            .unwrap_or_else(|| "GSSAPI".into());
        let username = match property("sasl.username") {
            Some(u) => u,
            None if kafka.secrets.contains_key("sasl.username") => {
                "(read from kafka.secrets.\"sasl.username\")".into()
            }
            None => "(none set)".into(),
        };
        Connectivity {
            brokers: kafka.brokers.clone(),
            mechanism,
            username,
            metrics,
            state: Mutex::new(State::default()),
        }
    }

    /// What `/readyz` and the log say when the brokers refuse the credentials.
    fn refused(&self) -> String {
        format!(
            "the Kafka brokers refused the credentials of sasl.username {} with sasl.mechanism {}: correct the password in the file or variable kafka.secrets.\"sasl.password\" names (or the user on the cluster), then send SIGHUP to driftd, which re-reads the secret and reconnects without a restart",
            self.username, self.mechanism
        )
    }

    /// An error from a client's error callback or from a receive. `client` names the client
    /// (`consumer`, `dead-letter producer`), `detail` is librdkafka's reason, if any.
    pub fn error(&self, client: &'static str, error: &KafkaError, detail: &str) {
        let code = error.rdkafka_error_code();
        if code.is_some_and(refused_credentials) {
            self.metrics
                .kafka_block("authentication", Some(self.refused()));
        } else if code == Some(RDKafkaErrorCode::AllBrokersDown)
            && self.metrics.kafka_blocked("authentication")
        {
            // The brokers answer but refuse the login: saying none is reachable would mislead.
            tracing::debug!(brokers = %self.brokers, client, error = %error, "kafka client error");
            return;
        }
        let say = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .error(error.rdkafka_error_code(), Instant::now());
        let brokers = self.brokers.as_str();
        match say {
            Say::Unreachable => tracing::warn!(
                brokers,
                client,
                error = %error,
                "no Kafka broker reachable; retrying in the background until one answers (consumption waits, nothing is skipped)"
            ),
            Say::StillUnreachable(down) => tracing::warn!(
                brokers,
                client,
                down_for_s = down.as_secs(),
                "still no Kafka broker reachable; retrying"
            ),
            Say::Connection => tracing::info!(
                brokers,
                client,
                error = %error,
                detail,
                "kafka broker connection failed; librdkafka reconnects (repeats are logged at debug for a minute)"
            ),
            Say::Authentication => tracing::error!(
                brokers,
                client,
                sasl_mechanism = %self.mechanism,
                sasl_username = %self.username,
                error = %error,
                detail,
                "{}; driftd is not ready until then (repeats are logged at debug for a minute)",
                self.refused()
            ),
            Say::Error => tracing::warn!(
                brokers,
                client,
                error = %error,
                detail,
                "kafka client error; librdkafka retries (repeats are logged at debug for a minute)"
            ),
            Say::Repeat => {
                tracing::debug!(brokers, client, error = %error, detail, "kafka client error")
            }
        }
    }

    /// A broker answered (the consumer's statistics show one up): it also accepted the
    /// credentials, since librdkafka counts a broker up only once authenticated.
    pub fn reachable(&self) {
        self.metrics.kafka_block("authentication", None);
        let was_down = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .reachable(Instant::now());
        if let Some(down) = was_down {
            tracing::info!(
                brokers = %self.brokers,
                down_for_ms = down.as_millis() as u64,
                "Kafka broker reachable again"
            );
        }
    }
}

/// librdkafka's own log lines, as rdkafka logs them by default, except connection failures
/// (`FAIL`), which also reach [`Connectivity::error`] and would otherwise repeat on every retry.
pub fn librdkafka_log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        _ if facility == "FAIL" => {
            tracing::debug!(target: "librdkafka", "librdkafka: {facility} {message}")
        }
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", "librdkafka: {facility} {message}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", "librdkafka: {facility} {message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "librdkafka: {facility} {message}")
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", "librdkafka: {facility} {message}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOWN: Option<RDKafkaErrorCode> = Some(RDKafkaErrorCode::AllBrokersDown);
    const TRANSPORT: Option<RDKafkaErrorCode> = Some(RDKafkaErrorCode::BrokerTransportFailure);

    /// Regression: with the broker away at start, driftd logged two warnings every 100 ms
    /// (the error callback and the receive, both once per librdkafka retry).
    #[test]
    fn an_outage_is_said_once_then_reminded_once_a_minute_then_its_end_is_said() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = State::default();
        assert_eq!(s.error(DOWN, at(0)), Say::Unreachable);
        for ms in (100..60_000).step_by(100) {
            assert_eq!(s.error(DOWN, at(ms)), Say::Repeat, "at {ms} ms");
        }
        assert_eq!(
            s.error(DOWN, at(60_000)),
            Say::StillUnreachable(Duration::from_secs(60))
        );
        assert_eq!(s.error(DOWN, at(60_100)), Say::Repeat);
        assert_eq!(s.reachable(at(61_000)), Some(Duration::from_secs(61)));
        assert_eq!(s.reachable(at(62_000)), None, "the end is said once");
        assert_eq!(s.error(DOWN, at(63_000)), Say::Unreachable, "a new outage");
    }

    #[test]
    fn other_errors_are_logged_once_a_minute_per_code_and_again_after_a_recovery() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = State::default();
        assert_eq!(s.error(TRANSPORT, at(0)), Say::Connection);
        assert_eq!(s.error(TRANSPORT, at(500)), Say::Repeat);
        assert_eq!(
            s.error(Some(RDKafkaErrorCode::Authentication), at(600)),
            Say::Authentication,
            "another code is news, and refused credentials are said as such"
        );
        assert_eq!(
            s.error(Some(RDKafkaErrorCode::Authentication), at(650)),
            Say::Repeat
        );
        assert_eq!(s.error(None, at(700)), Say::Error, "no code: always said");
        assert_eq!(s.error(TRANSPORT, at(60_000)), Say::Connection);
        assert_eq!(s.error(DOWN, at(60_100)), Say::Unreachable);
        assert_eq!(
            s.error(TRANSPORT, at(200_000)),
            Say::Repeat,
            "part of the outage already said"
        );
        assert!(s.reachable(at(201_000)).is_some());
        assert_eq!(s.error(TRANSPORT, at(201_100)), Say::Connection);
    }

    /// Refused credentials block readiness with an instruction naming the mechanism and the
    /// user, until a broker is up (authenticated) again.
    #[test]
    fn refused_credentials_block_readiness_naming_mechanism_and_user_until_a_broker_is_up() {
        let mut kafka = KafkaConfig::default();
        kafka
            .properties
            .insert("sasl.mechanism".into(), "SCRAM-SHA-512".into());
        kafka
            .properties
            .insert("sasl.username".into(), "svc-driftd".into());
        let metrics = Arc::new(Metrics::new(&crate::config::Config::default()));
        let c = Connectivity::new(&kafka, metrics.clone());
        c.error(
            "consumer",
            &KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error",
        );
        assert!(metrics.kafka_blocked("authentication"));
        let said = metrics.kafka_blocks().join("");
        assert!(
            said.contains("svc-driftd")
                && said.contains("SCRAM-SHA-512")
                && said.contains("SIGHUP"),
            "{said}"
        );
        c.reachable();
        assert!(!metrics.kafka_blocked("authentication"));
        assert!(metrics.kafka_blocks().is_empty());
    }
}
