//! Making the Kafka source's clients, at start and again when `kafka.secrets` changed
//! ([`KafkaSource::reconnect`]: a corrected or rotated password takes effect on SIGHUP, without
//! a restart and without losing state or counting anything twice).
//!
//! Owns client creation and the swap of one set of clients for another; receiving and
//! acknowledging stay in the parent module.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};

use super::{commit, Connectivity, DeadLetter, IngestContext, IngestError, KafkaSource, Notes};
use crate::config::{Config, StartFrom};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

impl KafkaSource {
    /// Replaces the consumer and the dead-letter producer with ones made from `config` (its
    /// secrets read again: a rotated or corrected password), keeping the pipeline's state and
    /// the partitions' progress. As at a revoke, dead-letter deliveries in flight are waited
    /// for (at most `within`; if some are still in flight the running clients stay and this
    /// returns [`IngestError::ReconnectBusy`]), the partitions are snapshotted and the offsets
    /// committed before the old consumer leaves the group; the new one starts from the
    /// committed offsets and skips what the state already holds. The daemon's [`Inbox`] must
    /// be dropped first, so the old consumer really closes.
    pub async fn reconnect(
        &mut self,
        config: &Config,
        pipeline: &mut Pipeline,
        within: Duration,
    ) -> Result<(), IngestError> {
        self.rebalanced(pipeline).await;
        if self.await_dead_letters(within).await.is_err() {
            return Err(IngestError::ReconnectBusy(self.tracker.len()));
        }
        let connectivity = self.consumer.context().connectivity.clone();
        let (consumer, dead_letter, redact) =
            clients(config, &self.metrics, &self.notes, connectivity)?;
        self.persist(pipeline);
        self.finish_writes(true).await;
        self.persist(pipeline);
        self.finish_writes(true).await;
        commit(&*self.consumer, &self.metrics, "reconnect");
        for p in self.progress.known() {
            self.revoked(p, pipeline);
        }
        if let Some(dl) = &self.dead_letter {
            dl.flush(Duration::from_secs(1));
        }
        self.dead_letter = dead_letter;
        let old = std::mem::replace(&mut self.consumer, Arc::new(consumer));
        // Leaving the group polls the old consumer (its revoke callback commits): blocking.
        let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        self.metrics.ready.set(0);
        self.consumer
            .subscribe(&[self.topic.as_str()])
            .map_err(|e| redact.error(e))
    }
}

/// The consumer (not yet subscribed) and the dead-letter producer made from `config`, and the
/// [`crate::ingest::Redact`] for their errors.
pub(super) fn clients(
    config: &Config,
    metrics: &Arc<Metrics>,
    notes: &Arc<Notes>,
    connectivity: Arc<Connectivity>,
) -> Result<
    (
        StreamConsumer<IngestContext>,
        Option<DeadLetter>,
        crate::ingest::Redact,
    ),
    IngestError,
> {
    let k = &config.kafka;
    let (mut cc, redact) = crate::ingest::client_config(config)?;
    cc.set("group.id", &k.group_id)
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            k.commit_interval.as_millis().to_string(),
        )
        .set(
            "statistics.interval.ms",
            k.stats_interval.as_millis().to_string(),
        )
        .set("enable.partition.eof", "false");
    if cc.get("partition.assignment.strategy").is_none() {
        cc.set(
            "partition.assignment.strategy",
            config.ingest.assignment.strategy(),
        );
    }
    // A lookback is resolved at assignment; when that fails, `latest` (see `start`).
    let start_from = config.start_from();
    cc.set(
        "auto.offset.reset",
        match start_from {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest | StartFrom::Lookback(_) => "latest",
        },
    );
    let consumer: StreamConsumer<IngestContext> = cc
        .create_with_context(IngestContext {
            metrics: metrics.clone(),
            notes: notes.clone(),
            connectivity: connectivity.clone(),
            start_from,
            topic: k.topic.clone(),
            lags: Mutex::new(None),
            ownership: Default::default(),
        })
        .map_err(|e| redact.error(e))?;
    let dead_letter = DeadLetter::new(config, connectivity)?;
    Ok((consumer, dead_letter, redact))
}
