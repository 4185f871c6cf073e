//! The pipeline shared by `run`, `replay` and `demo`: message bytes in, cohort state updated,
//! outcomes counted, snapshots published.
//!
//! Owns the decoder, the [`CohortTable`] and the publication of [`Snapshot`]s. Every source
//! (Kafka, a file, the demo's in-process broker) feeds the same [`Pipeline::process`], so a
//! replay reproduces live decisions. It must not know where messages come from: offsets,
//! dead-lettering and acknowledgement belong to the source in `ingest/`.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use serde::Serialize;

use crate::config::Config;
use crate::detect::trajectory::{Trajectories, TrajectoryPart};
use crate::detect::{Change, DeploymentView, DetectPart, DetectPartError, Detector};
use crate::event::{Decoder, Reason, Rejection};
use crate::metrics::Metrics;
use crate::state::expiry::Evicted;
use crate::state::part::{CohortsPart, PartError};
use crate::state::watermark::Future;
use crate::state::{Applied, CohortTable, Snapshot};
use publisher::Publisher;

mod publisher;

/// What the hot path publishes for readers: cohort statistics and detection state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Published {
    /// Cohort statistics.
    pub cohorts: Snapshot,
    /// Verdicts, signals and history per deployment.
    pub deployments: Vec<DeploymentView>,
    /// The evidence over time, for the on-call page's charts.
    #[serde(skip)]
    pub trajectories: Trajectories,
}

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counted into cohort state.
    Applied,
    /// Counted into cohort state, though its message key is not its deployment (see
    /// [`Pipeline::process_keyed`]).
    Misrouted,
    /// Not counted; the source decides whether to dead-letter it.
    Rejected(Rejection),
}

/// Events applied and rejected: since start ([`Pipeline::totals`]) or over one run or replay
/// ([`Totals::since`]). The metrics carry the same numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Events applied to cohort state.
    pub applied: u64,
    /// Events rejected.
    pub rejected: u64,
}

impl Totals {
    /// What was counted after `start` was taken.
    pub fn since(self, start: Totals) -> Totals {
        Totals {
            applied: self.applied - start.applied,
            rejected: self.rejected - start.rejected,
        }
    }
}

/// Decoder + cohort state + detection + publication.
pub struct Pipeline {
    decoder: Decoder,
    table: CohortTable,
    detector: Detector,
    trajectories: Trajectories,
    changes: Vec<Change>,
    collect_changes: bool,
    change_sink: Option<tokio::sync::mpsc::UnboundedSender<Change>>,
    future: Future,
    metrics: Arc<Metrics>,
    publisher: Publisher,
    snapshots: watch::Sender<Arc<Published>>,
    totals: Totals,
    live: bool,
}

/// The state of one Kafka partition's deployments: what a state snapshot holds
/// (`crate::persist` frames and stores it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PartitionState {
    cohorts: CohortsPart,
    detect: DetectPart,
    /// Stored after the rest of the snapshot body by `crate::persist`, so snapshots written
    /// before trajectories existed still load.
    #[serde(skip)]
    trajectories: TrajectoryPart,
}

impl PartitionState {
    /// The trajectories of its deployments.
    pub fn trajectories(&self) -> &TrajectoryPart {
        &self.trajectories
    }

    /// Sets the trajectories (read from a snapshot).
    pub fn set_trajectories(&mut self, trajectories: TrajectoryPart) {
        self.trajectories = trajectories;
    }

    /// Number of cohorts held.
    pub fn cohorts(&self) -> usize {
        self.cohorts.len()
    }
}

/// Why a partition's saved state cannot be put back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    /// The cohort state does not fit.
    #[error(transparent)]
    Cohorts(#[from] PartError),
    /// The detection state does not fit.
    #[error(transparent)]
    Detect(#[from] DetectPartError),
}

impl Pipeline {
    /// A pipeline for a validated config. `live` (the daemon) judges `future` events by the
    /// wall clock and measures event age; otherwise (replay) event time is the only clock.
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        live: bool,
    ) -> (Pipeline, watch::Receiver<Arc<Published>>) {
        let decoder = Decoder::new(config);
        let table = CohortTable::new(config, decoder.signals());
        let detector = Detector::new(config);
        let (snapshots, rx) = watch::channel(Arc::new(Published {
            cohorts: table.snapshot(),
            deployments: detector.snapshot(),
            trajectories: Trajectories::default(),
        }));
        let publisher = Publisher::inline(metrics.clone());
        let pipeline = Pipeline {
            decoder,
            table,
            detector,
            trajectories: Trajectories::default(),
            changes: Vec::new(),
            collect_changes: false,
            change_sink: None,
            future: Future::new(config.ingest.max_future_skew.as_millis() as i64),
            metrics,
            publisher,
            snapshots,
            totals: Totals::default(),
            live,
        };
        (pipeline, rx)
    }

    /// Decodes, gates and applies one message payload, read from Kafka partition `partition`
    /// (`driftd replay` reads one stream: partition 0). The partition is remembered per cohort
    /// (a deployment's events share one: the message key is the deployment), so state can be
    /// snapshotted per partition.
    pub fn process(&mut self, partition: i32, payload: Option<&[u8]>) -> Outcome {
        self.process_inner(partition, None, payload)
    }

    /// As [`Pipeline::process`], for a Kafka message with key `key`: an event whose key is not
    /// its deployment (a null key included) is applied all the same, counted in
    /// `driftd_events_misrouted_total` and answered [`Outcome::Misrouted`]. Its deployment's
    /// events then arrive on more than one partition, which one consumer still applies in full,
    /// but which replicas would split.
    pub fn process_keyed(
        &mut self,
        partition: i32,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Outcome {
        self.process_inner(partition, Some(key), payload)
    }

    fn process_inner(
        &mut self,
        partition: i32,
        key: Option<Option<&[u8]>>,
        payload: Option<&[u8]>,
    ) -> Outcome {
        let started = Instant::now();
        let outcome = match self.decoder.decode(payload) {
            Ok(event) => {
                let emitted_at_ms = event.emitted_at_ms;
                let misrouted = key.is_some_and(|k| k != Some(event.deployment.as_bytes()));
                let now_ms = self.live.then(crate::clock::wall_ms);
                let admitted = match now_ms {
                    Some(now) => self.future.admit_live(emitted_at_ms, now),
                    None => self
                        .future
                        .admit_replay(emitted_at_ms, self.table.newest_ms()),
                };
                let applied = match admitted {
                    true => self.table.apply(partition, event).map_err(|_| Reason::Late),
                    false => Err(Reason::Future),
                };
                match applied {
                    Ok(applied) => {
                        if let Some(evicted) = self.table.take_evicted() {
                            self.evict(evicted);
                        }
                        match applied {
                            Applied::Overflow(_) => self.overflowed(emitted_at_ms),
                            Applied::Cohort(i) => self.detect(i, emitted_at_ms),
                        }
                        if let Some(now) = now_ms {
                            self.metrics
                                .event_age_seconds
                                .observe((now - emitted_at_ms).max(0) as f64 / 1000.0);
                        }
                        match misrouted {
                            true => Outcome::Misrouted,
                            false => Outcome::Applied,
                        }
                    }
                    Err(reason) => Outcome::Rejected(Rejection {
                        reason,
                        field: "emitted_at",
                        pii: None,
                    }),
                }
            }
            Err(rejection) => Outcome::Rejected(rejection),
        };
        match outcome {
            Outcome::Applied => {
                self.totals.applied += 1;
                self.metrics.events_applied.inc();
            }
            Outcome::Misrouted => {
                self.totals.applied += 1;
                self.metrics.events_applied.inc();
                self.metrics.events_misrouted.inc();
            }
            Outcome::Rejected(r) => {
                self.totals.rejected += 1;
                self.metrics.count_rejection(r.reason, r.pii);
            }
        }
        self.metrics
            .processing_seconds
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    fn detect(&mut self, cohort: usize, t_ms: i64) {
        let first_new = self.changes.len();
        let key = self.table.key(cohort);
        self.detector.observe(
            cohort,
            key,
            self.table.last_values(),
            t_ms,
            &mut self.changes,
        );
        // Event time, not the publication cadence, decides when evidence is sampled: a replay
        // builds the same trajectory.
        let due = self
            .trajectories
            .advance(&self.table.key(cohort).deployment, t_ms);
        self.trajectories.record_changes(&self.changes[first_new..]);
        if due {
            // The detector never forgets a deployment, so nothing is forgotten here: the
            // trajectories of one it does not hold can only come from a snapshot, and go on
            // import.
            let evidence = self
                .detector
                .evidence_where(|name| self.trajectories.moved(name));
            for (name, metrics) in &evidence {
                self.trajectories.sample_deployment(name, metrics);
            }
        }
        self.changed(first_new);
    }

    /// An event was folded into the overflow cohort: counted, and its deployment raises
    /// `cohort_overflow` (once).
    fn overflowed(&mut self, t_ms: i64) {
        if self.metrics.events_overflow.get() == 0 {
            tracing::warn!(
                "cohort table full: events of further cohorts are folded into the overflow cohort, counted, and their deployments raise cohort_overflow; raise cohorts.max_cohorts or shorten cohorts.idle_expiry"
            );
        }
        self.metrics.events_overflow.inc();
        let first_new = self.changes.len();
        if let Some(key) = self.table.overflowed() {
            self.detector.overflowed(key, t_ms, &mut self.changes);
        }
        self.changed(first_new);
    }

    /// Cohorts left the table (idle): their detection state goes too (their metric series
    /// with the next publication).
    fn evict(&mut self, evicted: Evicted) {
        self.detector.evict(&evicted.map);
        self.metrics
            .cohorts_evicted
            .inc_by(evicted.keys.len() as u64);
    }

    /// Counts, logs and hands on the changes from `first_new` on.
    fn changed(&mut self, first_new: usize) {
        for change in &self.changes[first_new..] {
            self.metrics.count_change(change);
            log_change(change);
            if let Some(sink) = &self.change_sink {
                // Containment runs on its own task; an unbounded send never blocks this path.
                let _ = sink.send(change.clone());
            }
        }
        if !self.collect_changes {
            self.changes.clear();
        }
    }

    /// Hands every verdict and signal change to containment.
    pub fn set_change_sink(&mut self, sink: tokio::sync::mpsc::UnboundedSender<Change>) {
        self.change_sink = Some(sink);
    }

    /// Keeps verdict and signal changes for [`Pipeline::take_changes`] (replay); otherwise they
    /// are only logged and counted.
    pub fn collect_changes(&mut self, on: bool) {
        self.collect_changes = on;
    }

    /// The changes collected since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Takes a snapshot of cohort and detection state, hands it to readers and writes the
    /// per-cohort and per-verdict metrics (before returning, unless
    /// [`Pipeline::publish_off_thread`]).
    pub fn publish(&mut self) -> Arc<Published> {
        let published = Arc::new(self.snapshot());
        // Readers first: a scrape showing a publication's counts implies the API shows them.
        self.snapshots.send_replace(published.clone());
        self.publisher.publish(published.clone());
        published
    }

    /// The snapshot [`Pipeline::publish`] hands out, without handing it out: what the
    /// consumer's thread pays for a publication once the metrics are written off it.
    pub fn snapshot(&self) -> Published {
        Published {
            cohorts: self.table.snapshot(),
            deployments: self.detector.snapshot(),
            trajectories: self.trajectories.clone(),
        }
    }

    /// Writes the metric series of publications and evictions on a thread of their own from
    /// now on (the daemon): at 10,000 cohorts that is most of a publication's time, which the
    /// consumer's thread then does not wait for. Scrapes see a publication's series shortly
    /// after it, in order.
    pub fn publish_off_thread(&mut self) {
        self.publisher.off_thread();
    }

    /// Applies the hot-reloadable part of a new, validated config.
    pub fn reload(&mut self, config: &Config) {
        self.decoder.set_max_bytes(config.ingest.max_message_bytes);
        self.table
            .set_allowed_lateness_ms(config.ingest.allowed_lateness.as_millis() as i64);
        self.future
            .set_skew_ms(config.ingest.max_future_skew.as_millis() as i64);
    }

    /// The largest payload the decoder accepts (`ingest.max_message_bytes`); sources that
    /// buffer input themselves (replay) read no more than one byte past it.
    pub fn max_message_bytes(&self) -> usize {
        self.decoder.max_bytes()
    }

    /// The state of every cohort read from `partition`, and of its deployments.
    pub fn export_partition(&self, partition: i32) -> PartitionState {
        let (cohorts, indices) = self.table.export(partition);
        let detect = self.detector.export(&indices);
        let trajectories = self.trajectories.export(
            indices
                .iter()
                .map(|&i| self.table.key(i).deployment.as_str()),
        );
        PartitionState {
            cohorts,
            detect,
            trajectories,
        }
    }

    /// Puts back the saved state of `partition` (read from a snapshot): its cohorts and
    /// deployments join those in memory (one already in memory is kept as it is), and every
    /// `warn`/`fail` verdict and raised signal it holds is handed to containment again, so a
    /// decision made before a crash is acted on. Nothing changes when it does not fit.
    pub fn import_partition(
        &mut self,
        partition: i32,
        mut state: PartitionState,
    ) -> Result<(), ImportError> {
        self.table.check(&mut state.cohorts)?;
        self.detector.check(&state.detect)?;
        let placed = self.table.import(partition, state.cohorts)?;
        let mut again = Vec::new();
        self.detector.import(state.detect, &placed, &mut again)?;
        self.trajectories.import(state.trajectories);
        self.trajectories.forget(|name| self.detector.knows(name));
        for change in again {
            if let Some(sink) = &self.change_sink {
                let _ = sink.send(change.clone());
            }
            if self.collect_changes {
                self.changes.push(change);
            }
        }
        Ok(())
    }

    /// Drops `partition`'s cohorts, their detection state and series. With a state topic the
    /// partition has moved to another replica, and its next owner (this one again, perhaps)
    /// restores the newest state from the topic: the copy held here would be stale.
    pub fn forget_partition(&mut self, partition: i32) {
        self.table.forget_partition(partition);
        if let Some(evicted) = self.table.take_evicted() {
            self.detector.evict(&evicted.map);
        }
    }

    /// Totals since start.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The cohort table (read-only), for summaries and tests.
    pub fn table(&self) -> &CohortTable {
        &self.table
    }
}

fn log_change(change: &Change) {
    match change {
        Change::Verdict(v) => tracing::info!(
            deployment = %v.deployment,
            model_version = %v.model_version,
            metric = %v.metric,
            source = v.source.as_str(),
            state = v.state.as_str(),
            at = %v.at,
            n_canary = v.n_canary,
            n_control = v.n_control,
            // NaN is written as `null` by the JSON log format: numbers and nulls, never the
            // debug text of an `Option`.
            estimate = v.estimate.unwrap_or(f64::NAN),
            ci_low = v.ci_low.unwrap_or(f64::NAN),
            ci_high = v.ci_high.unwrap_or(f64::NAN),
            p_value = v.p_value.unwrap_or(f64::NAN),
            statistic = v.statistic,
            threshold = v.threshold,
            "verdict changed"
        ),
        Change::Signal(s) => tracing::warn!(
            deployment = %s.deployment,
            kind = s.kind.as_str(),
            arm = s.arm.map(|a| a.as_str()),
            active = s.active,
            at = %s.at,
            n_canary = s.n_canary,
            n_control = s.n_control,
            statistic = s.statistic,
            threshold = s.threshold,
            "cohort signal"
        ),
    }
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
