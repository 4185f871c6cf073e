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

/// An error and its causes as one line, `outer: cause: root` — what `{:#}` prints for an
/// `anyhow::Error`, for logging the library's own error types. Their messages never quote their
/// source, so each cause appears once.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write state; check the disk")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_names_each_cause_once_in_order() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(chain(&e), "cannot write state; check the disk: disk full");
        assert_eq!(
            chain(&e),
            format!(
                "{:#}",
                anyhow::Error::from(Outer(std::io::Error::other("disk full")))
            )
        );
    }
}
