//! The `run` command: start-up order, the control loop and shutdown sequencing.
//!
//! Owns how the parts are wired and driven, nothing else: create the Kafka clients (a bad client
//! config fails here, before anything runs), start containment and the admin server (so
//! `/healthz` answers while Kafka connects), then run the control loop — stop signal,
//! config reload (applied, and audited whatever its outcome), publication tick, state
//! snapshot tick, next message — until asked to stop, then drain, commit and
//! stop the admin server. The Kafka source only receives and acknowledges; the pipeline only
//! processes; this loop decides when each runs. Takes the outside world as arguments (config, a
//! bound listener, controls) so tests and the demo run it in-process.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::config::{Config, ConfigError};
use crate::contain::{ContainError, ContainHandle};
use crate::ingest::kafka::KafkaSource;
use crate::ingest::IngestError;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Published, Totals};
use crate::signals::{Controls, Reload};

/// Why the daemon could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A secret the daemon itself needs (the admin or an operator token) could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Containment could not start (state directory, latch file, target secrets).
    #[error("containment cannot start")]
    Contain(#[from] ContainError),
    /// The Kafka source could not start or did not drain.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// `persist.latch_topic` could not be checked, created or tailed.
    #[error(transparent)]
    LatchTopic(#[from] crate::persist::topic::TopicError),
    /// The admin listener handed in has no local address.
    #[error("the admin listener has no local address")]
    Listener(#[source] std::io::Error),
}

/// Runs the daemon (containment included) until `controls` asks it to stop, and returns what
/// this run applied and rejected. The pipeline (and its snapshot receiver) is made by the caller
/// with [`Pipeline::new`], so the demo can watch the same snapshots.
pub async fn run(
    config: Config,
    metrics: Arc<Metrics>,
    (mut pipeline, snapshots): (Pipeline, watch::Receiver<Arc<Published>>),
    listener: TcpListener,
    mut controls: Controls,
) -> Result<Totals, DaemonError> {
    // Creating the clients checks their config and fails at once on a bad one, before anything
    // is started that would need stopping; connecting to the brokers happens in the background,
    // so `/healthz` still answers while Kafka connects.
    let source = KafkaSource::new(&config, metrics.clone())?;
    // A missing topic is said once and shown on /readyz; it never ends the run.
    tokio::spawn(crate::ingest::topics::watch(
        config.clone(),
        metrics.clone(),
        controls.shutdown.clone(),
    ));
    // Tokens are read (and judged) before anything is started that would need stopping.
    let identities = Arc::new(admin::auth::Identities::from_config(&config)?);
    // Alerts and release commands link to the address the admin server really listens on.
    let admin_bound = listener.local_addr().map_err(DaemonError::Listener)?;
    let replication = latch_topic(&config, &source, &metrics)?;
    let (contain, changes, contain_task) = crate::contain::start_replicated(
        &config,
        admin_bound,
        metrics.clone(),
        snapshots.clone(),
        controls.shutdown.clone(),
        replication,
    )?;
    pipeline.set_change_sink(changes);
    let admin_state = AdminState {
        metrics: metrics.clone(),
        snapshots,
        contain: Some(contain.clone()),
        identities,
    };
    let contain_task = supervise(
        "containment",
        contain_task,
        metrics.clone(),
        controls.shutdown.clone(),
    );
    let mut stop_admin = controls.shutdown.clone();
    let admin = tokio::spawn(async move {
        let shutdown = async move { crate::signals::stopped(&mut stop_admin).await };
        if let Err(e) = admin::serve(listener, admin_state, shutdown).await {
            tracing::error!(error = %crate::logging::chain(&e), "admin server failed");
        }
    });
    let admin = supervise("admin", admin, metrics.clone(), controls.shutdown.clone());
    tracing::info!(
        brokers = %config.kafka.brokers,
        topic = %config.kafka.topic,
        group = %config.kafka.group_id,
        config_hash = %config.hash(),
        "driftd starting"
    );
    let start = pipeline.totals();
    let result = consume(
        &config,
        &metrics,
        &contain,
        source,
        &mut pipeline,
        &mut controls,
    )
    .await;
    metrics.ready.set(0);
    let _ = admin.await;
    let _ = contain_task.await;
    let run = pipeline.totals().since(start);
    match &result {
        Ok(()) => tracing::info!(
            applied = run.applied,
            rejected = run.rejected,
            cohorts = pipeline.table().len(),
            "shutdown complete; offsets committed"
        ),
        Err(e) => {
            tracing::error!(error = %crate::logging::chain(e), applied = run.applied, rejected = run.rejected, "shutdown incomplete")
        }
    }
    result?;
    Ok(run)
}

/// With `persist.latch_topic`: the topic's clients and its tail (which checks or creates the
/// topic in the background; containment waits for it), and what the consumer holds, for
/// containment to run as one of several replicas.
fn latch_topic(
    config: &Config,
    source: &KafkaSource,
    metrics: &Arc<Metrics>,
) -> Result<Option<crate::contain::Replication>, DaemonError> {
    let Some(name) = &config.persist.latch_topic else {
        return Ok(None);
    };
    let (cc, _) = crate::ingest::client_config(config)?;
    let topic = crate::persist::latch_topic::LatchTopic::start(
        &cc,
        name,
        config.persist.latch_topic_partitions,
        config.persist.latch_read_timeout,
        metrics.clone(),
    )?;
    Ok(Some(crate::contain::Replication {
        journal: Arc::new(topic),
        ownership: source.ownership(),
    }))
}

/// Watches a background task: if it ends before shutdown was asked for (a panic, or an error
/// it logged), that is counted in `driftd_task_failures_total{task}` and logged, and readiness
/// stays 503 from then on — a dead containment task must not go unnoticed while events keep
/// flowing.
pub fn supervise(
    task: &'static str,
    handle: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ended = handle.await;
        if *shutdown.borrow() {
            return;
        }
        metrics.task_failures.with_label_values(&[task]).inc();
        metrics.ready.set(0);
        match ended {
            Err(e) if e.is_panic() => {
                tracing::error!(
                    task,
                    "background task panicked; driftd is not ready until restarted"
                )
            }
            _ => tracing::error!(
                task,
                "background task stopped before shutdown; driftd is not ready until restarted"
            ),
        }
    })
}

/// The control loop. Shutdown wins over everything (biased), then reloads and publication
/// ticks, so a busy topic cannot starve them; a message is processed in the branch body, never
/// cancelled half-way. A reload after which `kafka.secrets` resolves to other values (a
/// corrected or rotated password file; the config text itself may be unchanged) rebuilds the
/// Kafka clients, keeping the pipeline's state ([`KafkaSource::reconnect`]).
async fn consume(
    config: &Config,
    metrics: &Metrics,
    contain: &ContainHandle,
    mut source: KafkaSource,
    pipeline: &mut Pipeline,
    controls: &mut Controls,
) -> Result<(), IngestError> {
    // Read just after the clients were made from them; a change in between only costs one
    // needless rebuild at the next SIGHUP.
    let mut credentials = crate::ingest::credentials_fingerprint(config)?;
    let mut inbox = source.inbox();
    pipeline.publish_off_thread();
    let mut publish = tokio::time::interval(config.ingest.publish_interval);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut persist = tokio::time::interval(config.persist.interval);
    persist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    persist.tick().await;
    loop {
        let mut reconnect = None;
        tokio::select! {
            biased;
            _ = crate::signals::stopped(&mut controls.shutdown) => break,
            Some(reload) = controls.reload.recv() => match reload {
                Reload::Apply(config) => {
                    pipeline.reload(&config);
                    metrics.set_config_hash(&config.hash());
                    contain.config_reload("success", Some(config.hash()), None);
                    match crate::ingest::credentials_fingerprint(&config) {
                        Ok(now) if now != credentials => reconnect = Some((config, now)),
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %crate::logging::chain(&e), "SIGHUP: kafka.secrets cannot be read; the Kafka clients keep the credentials they started with"),
                    }
                }
                Reload::Refused { outcome, config_hash, detail } => {
                    contain.config_reload(outcome, config_hash, Some(detail));
                }
            },
            _ = publish.tick() => {
                pipeline.publish();
                source.tick(pipeline).await;
            }
            _ = persist.tick() => source.persist(pipeline),
            received = inbox.recv() => source.accept(pipeline, received).await,
        }
        if let Some((config, now)) = reconnect {
            // The old consumer closes only once no one holds it.
            drop(inbox);
            match source
                .reconnect(&config, pipeline, config.shutdown.deadline / 2)
                .await
            {
                Ok(()) => {
                    credentials = now;
                    tracing::info!("SIGHUP: kafka.secrets changed; Kafka clients rebuilt with them (state kept, consuming resumes from the committed offsets)");
                }
                Err(e) => {
                    tracing::error!(error = %crate::logging::chain(&e), "SIGHUP: kafka.secrets changed but the Kafka clients were not rebuilt");
                }
            }
            inbox = source.inbox();
        }
    }
    // Half the deadline for dead-letter deliveries leaves the rest for the commit; the signal
    // watchdog ends the process if the whole deadline passes.
    drop(inbox);
    source.drain(pipeline, config.shutdown.deadline / 2).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a panic in the containment task ended it silently while events kept
    /// flowing and `/readyz` said 200.
    #[tokio::test]
    async fn a_task_that_dies_before_shutdown_is_counted_and_readiness_drops() {
        let metrics = Arc::new(Metrics::new(&Config::default()));
        metrics.ready.set(1);
        let (stop, shutdown) = watch::channel(false);
        let dying = tokio::spawn(async { panic!("injected") });
        supervise("containment", dying, metrics.clone(), shutdown.clone())
            .await
            .unwrap();
        assert_eq!(
            metrics
                .task_failures
                .with_label_values(&["containment"])
                .get(),
            1
        );
        assert_eq!(metrics.ready.get(), 0);

        // Ending because shutdown was asked for is not a failure.
        let metrics = Arc::new(Metrics::new(&Config::default()));
        stop.send_replace(true);
        supervise("admin", tokio::spawn(async {}), metrics.clone(), shutdown)
            .await
            .unwrap();
        assert_eq!(metrics.task_failures_total(), 0);
    }
}
