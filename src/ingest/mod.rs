//! Sources of events: the Kafka consumer (with offsets and dead-lettering) and the replay file
//! source beside it.
//!
//! Owns how messages arrive and how their consumption is acknowledged. Both sources hand bytes
//! to the shared [`crate::pipeline::Pipeline`]; neither knows about detection or actions.

#[cfg(feature = "kafka")]
mod client;
#[cfg(feature = "kafka")]
pub mod connectivity;
#[cfg(feature = "kafka")]
pub mod dead_letter;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kafka")]
pub mod offsets;
pub mod replay;
#[cfg(feature = "kafka")]
pub mod resume;
#[cfg(feature = "kafka")]
pub mod stall;
#[cfg(feature = "kafka")]
mod start;
#[cfg(feature = "kafka")]
pub mod topics;

#[cfg(feature = "kafka")]
pub use client::{client_config, credentials_fingerprint, Redact, RECONNECT_BACKOFF_MAX_MS};

use crate::config::ConfigError;

/// Why a source could not run.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A secret or setting could not be resolved.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// librdkafka refused the client configuration or could not subscribe. librdkafka quotes
    /// the values it refuses, so the message has every secret value replaced by `[redacted]`.
    #[error("kafka client setup failed: {message}; check kafka.brokers, kafka.properties and kafka.secrets")]
    Kafka {
        /// librdkafka's message, secrets redacted.
        message: String,
    },
    /// Reading the replay input failed.
    #[error("cannot read replay input")]
    Input(#[from] std::io::Error),
    /// Dead-letter deliveries still in flight at shutdown did not finish in time.
    #[error(
        "dead-letter deliveries did not finish within {0:?} of the shutdown; offsets after the last commit will be re-consumed"
    )]
    DrainTimeout(std::time::Duration),
    /// Dead-letter deliveries were still in flight when the clients were to be rebuilt.
    #[error(
        "the Kafka clients were not rebuilt: {0} dead-letter deliveries still in flight; the running clients stay, send SIGHUP again to retry"
    )]
    ReconnectBusy(usize),
    /// The state topic (`persist.topic`) is not usable: not compacted, or missing and not
    /// creatable.
    #[cfg(feature = "kafka")]
    #[error(transparent)]
    StateTopic(#[from] crate::persist::topic::TopicError),
}
