//! Sources of events: the Kafka consumer (with offsets and dead-lettering) and the replay file
//! source beside it.
//!
//! Owns how messages arrive and how their consumption is acknowledged. Both sources hand bytes
//! to the shared [`crate::pipeline::Pipeline`]; neither knows about detection or actions.

pub mod dead_letter;
pub mod kafka;
pub mod offsets;
pub mod replay;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use crate::config::{Config, ConfigError};

/// Why a source could not run.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A secret or setting could not be resolved.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// librdkafka refused the client configuration or could not subscribe.
    #[error("kafka client setup failed; check kafka.brokers and kafka.properties")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Reading the replay input failed.
    #[error("cannot read replay input")]
    Input(#[from] std::io::Error),
    /// Dead-letter deliveries still in flight at shutdown did not finish in time.
    #[error(
        "dead-letter deliveries did not finish within {0:?} of the shutdown; offsets after the last commit will be re-consumed"
    )]
    DrainTimeout(std::time::Duration),
}

/// A librdkafka client config with driftd's fixed settings and the operator's pass-through
/// properties (secrets resolved). Never log the result.
pub fn client_config(config: &Config) -> Result<ClientConfig, IngestError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.kafka.brokers);
    let props: BTreeMap<String, String> = config.kafka.client_properties()?;
    for (k, v) in &props {
        cc.set(k, v);
    }
    Ok(cc)
}
