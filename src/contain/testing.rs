//! What the containment task's own tests share: a fresh `fail`, a config with one webhook
//! target, a receiver on loopback, and the task started and stopped around them. Test code
//! only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use tokio::sync::{mpsc, watch};

use super::Replication;
use crate::config::{Config, PolicyConfig, PolicyMode, SecretSource, TargetConfig, TriggerState};
use crate::detect::{Change, Verdict};
use crate::metrics::Metrics;
use crate::pipeline::Published;

/// A fresh `fail` of `deployment`'s refusal, canary against control.
pub(super) fn fail(deployment: &str) -> Change {
    Change::Verdict(Verdict {
        deployment: deployment.into(),
        at: crate::event::format_rfc3339_ms(crate::clock::wall_ms()),
        ..Verdict::example()
    })
}

/// Containment in `state` with one webhook target at `url` (its secret under `dir`) that an
/// enforcing policy calls on every `fail`.
pub(super) fn hooked(dir: &Path, state: PathBuf, url: &str) -> Config {
    let secret = dir.join("secret");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let mut config = Config::default();
    config.containment.state_dir = state;
    config.containment.targets = vec![TargetConfig::Webhook {
        name: "hook".into(),
        url: url.to_string(),
        secret: SecretSource::File(secret),
    }];
    config.containment.policies = vec![PolicyConfig {
        name: "enforce".into(),
        deployments: vec!["*".into()],
        metrics: vec!["*".into()],
        mode: PolicyMode::Enforce,
        alert_on: vec![],
        contain_on: vec![TriggerState::Fail],
        contain: vec!["hook".into()],
        ..PolicyConfig::named("")
    }];
    config.validate().unwrap();
    config
}

/// Serves `app` on a loopback port of its own, for as long as the test runs.
pub(super) async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The containment task running on `config`, fed by `changes`, with no published snapshot.
pub(super) struct Running {
    pub(super) changes: mpsc::UnboundedSender<Change>,
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
    _handle: super::ContainHandle,
    _snapshots: watch::Sender<Arc<Published>>,
}

impl Running {
    /// Starts the task, as one of several replicas when `replication` is given.
    pub(super) fn start(config: &Config, replication: Option<Replication>) -> Running {
        let (stop, shutdown) = watch::channel(false);
        let (snapshots_tx, snapshots) = watch::channel(Arc::new(Published::default()));
        let (handle, changes, task) = super::start_replicated(
            config,
            config.admin.addr,
            Arc::new(Metrics::new(config)),
            snapshots,
            shutdown,
            replication,
        )
        .unwrap();
        Running {
            changes,
            task,
            stop,
            _handle: handle,
            _snapshots: snapshots_tx,
        }
    }

    /// Stops the task and waits for it to end.
    pub(super) async fn stop(self) {
        self.stop.send_replace(true);
        self.task.await.unwrap();
    }
}
