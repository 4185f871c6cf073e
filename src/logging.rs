//! Log output: JSON lines for log shippers or human-readable lines for terminals.
//!
//! Owns subscriber set-up only. What may appear in logs is decided at each call site, and the
//! rule everywhere is the same: reason codes, cohort keys, partitions and offsets — never event
//! payloads, message keys of rejected events, or secrets.

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG` overrides the configured level. Logs go to stderr
/// so stdout stays free for command output (replay results, the demo's live view).
pub fn init(config: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}
