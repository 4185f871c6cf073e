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

use crate::config::Config;
use crate::event::{Decoder, Reason, Rejection};
use crate::metrics::Metrics;
use crate::state::{Applied, CohortTable, Snapshot};

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counted into cohort state.
    Applied,
    /// Not counted; the source decides whether to dead-letter it.
    Rejected(Rejection),
}

/// Totals since start, for summaries (the metrics carry the same numbers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Events applied to cohort state.
    pub applied: u64,
    /// Events rejected.
    pub rejected: u64,
}

/// Decoder + cohort state + publication.
pub struct Pipeline {
    decoder: Decoder,
    table: CohortTable,
    metrics: Arc<Metrics>,
    events_published: Vec<u64>,
    snapshots: watch::Sender<Arc<Snapshot>>,
    totals: Totals,
    live: bool,
}

impl Pipeline {
    /// A pipeline for a validated config. `live` enables wall-clock measurements (event age)
    /// that make no sense when replaying old events.
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        live: bool,
    ) -> (Pipeline, watch::Receiver<Arc<Snapshot>>) {
        let decoder = Decoder::new(config);
        let table = CohortTable::new(config, decoder.signals());
        let (snapshots, rx) = watch::channel(Arc::new(table.snapshot()));
        let pipeline = Pipeline {
            decoder,
            table,
            metrics,
            events_published: Vec::new(),
            snapshots,
            totals: Totals::default(),
            live,
        };
        (pipeline, rx)
    }

    /// Decodes, gates and applies one message payload.
    pub fn process(&mut self, payload: Option<&[u8]>) -> Outcome {
        let started = Instant::now();
        let outcome = match self.decoder.decode(payload) {
            Ok(event) => {
                let emitted_at_ms = event.emitted_at_ms;
                match self.table.apply(event) {
                    Ok(applied) => {
                        if matches!(applied, Applied::Overflow(_)) {
                            self.metrics.events_overflow.inc();
                        }
                        if self.live {
                            let age = crate::clock::wall_ms() - emitted_at_ms;
                            self.metrics
                                .event_age_seconds
                                .observe(age.max(0) as f64 / 1000.0);
                        }
                        Outcome::Applied
                    }
                    Err(_late) => Outcome::Rejected(Rejection {
                        reason: Reason::Late,
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

    /// Takes a snapshot of cohort state, hands it to readers and writes the per-cohort metrics.
    pub fn publish(&mut self) -> Arc<Snapshot> {
        let snapshot = Arc::new(self.table.snapshot());
        self.metrics
            .publish_snapshot(&snapshot, &mut self.events_published);
        self.snapshots.send_replace(snapshot.clone());
        snapshot
    }

    /// Applies the hot-reloadable part of a new, validated config.
    pub fn reload(&mut self, config: &Config) {
        self.decoder.set_max_bytes(config.ingest.max_message_bytes);
        self.table
            .set_allowed_lateness_ms(config.ingest.allowed_lateness.as_millis() as i64);
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
