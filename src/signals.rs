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
    /// Validated configs to apply.
    pub reload: mpsc::UnboundedReceiver<Config>,
}

/// The sending side of [`Controls`], for tests and for the demo, which stop by themselves.
#[derive(Clone)]
pub struct ControlHandle {
    shutdown: watch::Sender<bool>,
    reload: mpsc::UnboundedSender<Config>,
}

impl ControlHandle {
    /// Requests a graceful shutdown.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Hands a validated config to the pipeline.
    pub fn reload(&self, config: Config) {
        let _ = self.reload.send(config);
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

/// Installs the signal handlers. `load` re-reads and validates the config on SIGHUP; a config
/// that changes settings read only at start-up ([`Config::restart_only_changes`]) is refused
/// whole, logged with those settings and counted as `restart_required`, so the running config
/// is always exactly the one `driftd_config_info` names. After the first stop signal a watchdog
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
                    SIGHUP => match load() {
                        Ok(config) => {
                            let restart = running.restart_only_changes(&config);
                            if restart.is_empty() {
                                tracing::info!(config_hash = %config.hash(), "SIGHUP: config reloaded and validated");
                                metrics.config_reloads.with_label_values(&["success"]).inc();
                                running = config.clone();
                                handle.reload(config);
                            } else {
                                tracing::error!(settings = %restart.join(", "), running_config_hash = %running.hash(), "SIGHUP: config refused: these settings take effect only on restart; nothing was applied, restart driftd to apply them");
                                metrics.config_reloads.with_label_values(&["restart_required"]).inc();
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %crate::logging::chain(&e), "SIGHUP: config refused, keeping the running config");
                            metrics.config_reloads.with_label_values(&["failure"]).inc();
                        }
                    },
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
