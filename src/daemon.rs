//! The `run` command: wires config, metrics, the admin server, signals and the Kafka source.
//!
//! Owns start-up order and shutdown sequencing, nothing else: start the admin server first (so
//! `/healthz` answers while Kafka connects), then consume until a stop signal, then drain,
//! commit and stop the admin server. Takes the outside world as arguments (config, a bound
//! listener, controls) so tests can run it in-process.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::ingest::kafka::{KafkaSource, RunSummary};
use crate::ingest::IngestError;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Published};
use crate::signals::Controls;

/// Runs the daemon (containment included) until `controls` asks it to stop. The pipeline (and its snapshot receiver)
/// is made by the caller with [`Pipeline::new`], so the demo can watch the same snapshots.
pub async fn run(
    config: Config,
    metrics: Arc<Metrics>,
    (mut pipeline, snapshots): (Pipeline, watch::Receiver<Arc<Published>>),
    listener: TcpListener,
    controls: Controls,
) -> Result<RunSummary, IngestError> {
    let stop_admin = controls.shutdown.clone();
    let (contain, changes, contain_task) =
        crate::contain::start(&config, metrics.clone(), controls.shutdown.clone())?;
    pipeline.set_change_sink(changes);
    let token = match &config.containment.admin_token {
        Some(source) => Some(Arc::new(source.resolve().map_err(|reason| {
            crate::config::ConfigError::Secret {
                property: "containment.admin_token".into(),
                reason,
            }
        })?)),
        None => None,
    };
    let admin_state = AdminState {
        metrics: metrics.clone(),
        snapshots,
        contain: Some(contain),
        token,
    };
    let admin = tokio::spawn(async move {
        let mut stop = stop_admin;
        let shutdown = async move { crate::signals::stopped(&mut stop).await };
        if let Err(e) = admin::serve(listener, admin_state, shutdown).await {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    tracing::info!(
        brokers = %config.kafka.brokers,
        topic = %config.kafka.topic,
        group = %config.kafka.group_id,
        config_hash = %config.hash(),
        "driftd starting"
    );
    let source = KafkaSource::new(&config, metrics.clone())?;
    let result = source.run(&mut pipeline, controls).await;
    metrics.ready.set(0);
    let _ = admin.await;
    let _ = contain_task.await;
    let totals = pipeline.totals();
    match &result {
        Ok(s) => tracing::info!(
            applied = s.applied,
            rejected = s.rejected,
            cohorts = pipeline.table().len(),
            "shutdown complete; offsets committed"
        ),
        Err(e) => {
            tracing::error!(error = %e, applied = totals.applied, rejected = totals.rejected, "shutdown incomplete")
        }
    }
    result
}
