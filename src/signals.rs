//! Process signals: SIGTERM/SIGINT start a graceful shutdown (a second one exits at once),
//! SIGHUP reloads the config.
//!
//! Owns the signal thread and the [`Controls`] it feeds. A reload is loaded and validated here,
//! off the hot path; only a config that passed validation reaches the pipeline, so a bad file is
//! refused with the field that is wrong and the old config stays in force. This module must not
//! touch state or Kafka.

use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::{mpsc, watch};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;

/// What the running pipeline listens to.
pub struct Controls {
    /// Becomes `true` when shutdown is requested.
    pub shutdown: watch::Receiver<bool>,
    /// What each SIGHUP came to: a validated config to apply, or a refusal to record.
    pub reload: mpsc::UnboundedReceiver<Reload>,
}

/// What one SIGHUP came to, for the daemon to apply (or not) and to audit.
#[derive(Debug)]
pub enum Reload {
    /// The new file validated and changes only settings that reload: apply it.
    Apply(Box<Config>),
    /// Refused: the running config stays in force.
    Refused {
        /// `failure` (the file does not load or validate) or `restart_required`.
        outcome: &'static str,
        /// The refused file's hash, when it loaded.
        config_hash: Option<String>,
        /// Why, for the operator: the error, or the settings that take effect only on restart.
        detail: String,
    },
}

impl Reload {
    /// The `driftd_config_reloads_total` outcome label.
    pub fn outcome(&self) -> &'static str {
        match self {
            Reload::Apply(_) => "success",
            Reload::Refused { outcome, .. } => outcome,
        }
    }
}

/// Decides a reload: `loaded` is the re-read file, `running` the config in force. A file that
/// does not load is a `failure`; one that changes settings read only at start-up
/// ([`Config::restart_only_changes`]) is refused whole as `restart_required`, so the running
/// config is always exactly the one `driftd_config_info` names.
pub fn judge(running: &Config, loaded: Result<Config, ConfigError>) -> Reload {
    match loaded {
        Err(e) => Reload::Refused {
            outcome: "failure",
            config_hash: None,
            detail: crate::logging::chain(&e),
        },
        Ok(config) => {
            let restart = running.restart_only_changes(&config);
            if restart.is_empty() {
                Reload::Apply(Box::new(config))
            } else {
                Reload::Refused {
                    outcome: "restart_required",
                    config_hash: Some(config.hash()),
                    detail: format!(
                        "these settings take effect only on restart: {}",
                        restart.join(", ")
                    ),
                }
            }
        }
    }
}

/// The sending side of [`Controls`], for tests and for the demo, which stop by themselves.
#[derive(Clone)]
pub struct ControlHandle {
    shutdown: watch::Sender<bool>,
    reload: mpsc::UnboundedSender<Reload>,
}

impl ControlHandle {
    /// Requests a graceful shutdown.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Hands a reload's outcome to the daemon.
    pub fn reload(&self, reload: Reload) {
        let _ = self.reload.send(reload);
    }
}

/// A connected handle and controls.
pub fn channel() -> (ControlHandle, Controls) {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (reload_tx, reload_rx) = mpsc::unbounded_channel();
    (
        ControlHandle {
            shutdown: shutdown_tx,
            reload: reload_tx,
        },
        Controls {
            shutdown: shutdown_rx,
            reload: reload_rx,
        },
    )
}

/// Resolves once shutdown has been requested (or the sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Installs the signal handlers. `load` re-reads and validates the config on SIGHUP; [`judge`]
/// decides, the outcome is logged and counted here and handed to the daemon, which applies an
/// accepted config and audits every outcome. After the first stop signal a watchdog
/// ends the process with status 1 once `deadline` has passed, so a shutdown that hangs (a
/// commit to an unreachable broker) cannot outlive it.
pub fn install<F>(
    running: Config,
    load: F,
    metrics: Arc<Metrics>,
    deadline: Duration,
) -> std::io::Result<Controls>
where
    F: Fn() -> Result<Config, ConfigError> + Send + 'static,
{
    let mut running = running;
    let (handle, controls) = channel();
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("driftd-signals".into())
        .spawn(move || {
            let mut stopping = false;
            for signal in signals.forever() {
                match signal {
                    SIGHUP => {
                        let reload = judge(&running, load());
                        match &reload {
                            Reload::Apply(config) => {
                                tracing::info!(config_hash = %config.hash(), "SIGHUP: config reloaded and validated");
                                running = (**config).clone();
                            }
                            Reload::Refused { outcome: "restart_required", detail, .. } => {
                                tracing::error!(why = %detail, running_config_hash = %running.hash(), "SIGHUP: config refused: nothing was applied, restart driftd to apply it");
                            }
                            Reload::Refused { detail, .. } => {
                                tracing::error!(error = %detail, "SIGHUP: config refused, keeping the running config");
                            }
                        }
                        // Counted once logged: whoever sees the count finds the reason.
                        metrics
                            .config_reloads
                            .with_label_values(&[reload.outcome()])
                            .inc();
                        handle.reload(reload);
                    }
                    _ if stopping => {
                        tracing::warn!("second stop signal: exiting now without draining or committing");
                        std::process::exit(130);
                    }
                    _ => {
                        stopping = true;
                        tracing::info!("stop signal: draining in-flight work and committing offsets");
                        handle.shutdown();
                        std::thread::spawn(move || {
                            std::thread::sleep(deadline);
                            tracing::error!(?deadline, "shutdown deadline passed: exiting without a final commit; uncommitted events will be re-consumed");
                            std::process::exit(1);
                        });
                    }
                }
            }
        })?;
    Ok(controls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_is_applied_refused_for_a_restart_or_refused_as_a_failure() {
        let running = Config::parse("").unwrap();
        match judge(
            &running,
            Config::parse("[ingest]\nmax_message_bytes = 4096\n"),
        ) {
            Reload::Apply(c) => assert_eq!(c.ingest.max_message_bytes, 4096),
            other => panic!("applied: {other:?}"),
        }
        let detection = Config::parse("[detection]\nalpha = 0.02\n").unwrap();
        let hash = detection.hash();
        match judge(&running, Ok(detection)) {
            r @ Reload::Refused { .. } => {
                assert_eq!(r.outcome(), "restart_required");
                let Reload::Refused {
                    config_hash,
                    detail,
                    ..
                } = r
                else {
                    unreachable!()
                };
                assert_eq!(config_hash, Some(hash));
                assert!(detail.contains("detection"), "{detail}");
            }
            other => panic!("restart required: {other:?}"),
        }
        let bad = judge(
            &running,
            Config::parse("[ingest]\nmax_message_bytes = 12\n"),
        );
        assert_eq!(bad.outcome(), "failure");
        let Reload::Refused { detail, .. } = bad else {
            unreachable!()
        };
        assert!(detail.contains("ingest.max_message_bytes"), "{detail}");
    }
}
