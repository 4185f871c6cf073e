//! The serialised form of a cohort in a state snapshot (format 4): per metric a ring of
//! [`Moments`], its score distribution and its EWMA — the in-memory layout of every driftd
//! before windows became [`Columns`]. Kept so that snapshots written by either restore into
//! the other: an upgrade loses no state, and a rollback none either.
//!
//! Owns only that translation; whether a restored cohort fits the config is
//! `CohortTable::check`'s to say.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::columns::Columns;
use super::distribution::Bins;
use super::ewma::Ewma;
use super::window::{Moments, Ring};
use super::{CohortKey, MetricState};

/// A cohort as written.
#[derive(Serialize)]
struct CohortOut<'a> {
    key: &'a CohortKey,
    events: u64,
    last_event_ms: i64,
    metrics: Vec<MetricOut<'a>>,
}

#[derive(Serialize)]
struct MetricOut<'a> {
    window: Ring<Moments>,
    distribution: &'a Option<Ring<Bins>>,
    ewma: &'a Ewma,
}

/// A cohort as read.
#[derive(Deserialize)]
struct CohortIn {
    key: CohortKey,
    events: u64,
    last_event_ms: i64,
    metrics: Vec<MetricIn>,
}

#[derive(Deserialize)]
struct MetricIn {
    window: Ring<Moments>,
    distribution: Option<Ring<Bins>>,
    ewma: Ewma,
}

impl Serialize for super::Cohort {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        CohortOut {
            key: &self.key,
            events: self.events,
            last_event_ms: self.last_event_ms,
            metrics: self
                .windows
                .to_rings()
                .into_iter()
                .zip(&self.metrics)
                .map(|(window, m)| MetricOut {
                    window,
                    distribution: &m.distribution,
                    ewma: &m.ewma,
                })
                .collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for super::Cohort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let c = CohortIn::deserialize(deserializer)?;
        let (rings, metrics): (Vec<_>, Vec<_>) = c
            .metrics
            .into_iter()
            .map(|m| {
                (
                    m.window,
                    MetricState {
                        distribution: m.distribution,
                        ewma: m.ewma,
                    },
                )
            })
            .unzip();
        Ok(super::Cohort {
            key: c.key,
            partition: 0,
            events: c.events,
            last_event_ms: c.last_event_ms,
            windows: Columns::from_rings(rings).map_err(serde::de::Error::custom)?,
            metrics,
        })
    }
}
