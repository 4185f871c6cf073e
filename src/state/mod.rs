//! Cohort state: per cohort and metric, rolling windows, score distributions and a long-run
//! EWMA (reported as the cohort's `baseline`), all driven by event time.
//!
//! Owns the [`CohortTable`], the single piece of mutable state on the hot path. The ingest task
//! owns it outright (no locks); everyone else sees immutable [`Snapshot`]s that the owner
//! publishes. The clock is `emitted_at` — per Kafka partition ([`watermark`]) — never the wall
//! clock, so a replay of a recorded stream reproduces live state exactly.
//!
//! This module must not do I/O, read the wall clock, or know about Kafka, HTTP or metrics.
//!
//! Memory is bounded: at most `cohorts.max_cohorts` cohorts plus one overflow cohort (shared
//! by both arms), each of fixed size, allocated when the cohort first appears. With the default
//! windows and metrics that is about 19 KiB of cohort state: 360 buckets of one shared ring
//! ([`columns`]: bucket number and count, then a count per 0/1 metric and two sums for tone,
//! 40 bytes a bucket) plus 12 slabs × 100 bins for tone. The figure to size a host by is
//! measured, not computed: `tests/it/memory.rs` replays generated events over 32 and over 512
//! cohorts and divides the growth of `driftd replay`'s peak resident set by the extra cohorts.
//! That is about 23 KiB per cohort for the whole process (cohort state, detection state and
//! the published snapshot); the test fails above 40 KiB.

pub mod columns;
pub mod distribution;
pub mod ewma;
pub mod expiry;
pub mod part;
pub mod watermark;
pub mod window;
mod wire;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::config::{Config, MetricKind, Worse};
use crate::event::{format_rfc3339_ms, Arm, Event};
use columns::Columns;
use distribution::Bins;
use ewma::Ewma;
pub use watermark::Late;
use watermark::Watermarks;
use window::{Moments, Ring};

/// Deployment label of the cohort that absorbs events once `cohorts.max_cohorts` is reached.
/// Parentheses cannot appear in a real deployment name, so it never collides.
pub const OVERFLOW_DEPLOYMENT: &str = "(overflow)";

/// What identifies a cohort.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CohortKey {
    /// Deployment (service) name.
    pub deployment: String,
    /// Model version.
    pub model_version: String,
    /// Rollout arm.
    pub arm: Arm,
    /// Values of the allow-listed segment keys, in config order.
    pub segment: Vec<Option<String>>,
}

/// How a metric turns a signal value into the value it accumulates.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Transform {
    /// Booleans (0/1) and scores are accumulated as they are.
    Identity,
    /// 1.0 when the value is below the threshold, else 0.0.
    Below(f64),
    /// 1.0 when the value is above the threshold, else 0.0.
    Above(f64),
}

/// A configured metric, resolved against the decoder's signal order.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// Metric name.
    pub name: String,
    /// Rate, score or tail.
    pub kind: MetricKind,
    /// Harmful direction.
    pub worse: Worse,
    signal: usize,
    transform: Transform,
    range: Option<[f64; 2]>,
}

/// Window geometry in milliseconds and counts.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Geometry {
    bucket_ms: i64,
    buckets: usize,
    recent_buckets: usize,
    slab_ms: i64,
    slabs: usize,
    bins: usize,
    half_life_ms: i64,
    lateness_ms: i64,
}

#[derive(Debug, Clone)]
struct MetricState {
    distribution: Option<Ring<Bins>>,
    ewma: Ewma,
}

/// Serialised by the `wire` module, in the form of snapshot format 4.
#[derive(Debug, Clone)]
struct Cohort {
    key: CohortKey,
    /// The Kafka partition its events are read from (a snapshot is of one partition, so it
    /// is set on restore rather than saved).
    partition: i32,
    events: u64,
    last_event_ms: i64,
    /// Every metric's rolling window, one column per metric in config order.
    windows: Columns,
    metrics: Vec<MetricState>,
}

/// The outcome of applying one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Counted into its own cohort (index into the table).
    Cohort(usize),
    /// Counted into the overflow cohort because the table is full.
    Overflow(usize),
}

/// All cohorts of one pipeline.
#[derive(Debug, Clone)]
pub struct CohortTable {
    geometry: Geometry,
    specs: Vec<MetricSpec>,
    segment_keys: Vec<String>,
    index: HashMap<CohortKey, usize>,
    cohorts: Vec<Cohort>,
    max_cohorts: usize,
    overflow: Option<usize>,
    watermarks: Watermarks,
    idle_expiry_ms: i64,
    evicted: Option<expiry::Evicted>,
    /// The key of the last event folded into the overflow cohort.
    overflowed: Option<CohortKey>,
    /// Per-metric values of the last applied event (what the detectors consume).
    last_values: Vec<f64>,
}

impl CohortTable {
    /// An empty table for a validated config. `signals` is the decoder's signal order.
    pub fn new(config: &Config, signals: &[crate::event::SignalSpec]) -> CohortTable {
        let w = &config.windows;
        let bucket_ms = w.bucket.as_millis() as i64;
        let buckets = w.buckets();
        let span_ms = bucket_ms * buckets as i64;
        let specs = config
            .metrics
            .iter()
            .map(|m| MetricSpec {
                name: m.name.clone(),
                kind: m.kind,
                worse: m.worse,
                signal: signals
                    .iter()
                    .position(|s| s.name == m.signal)
                    .expect("decoder signals are derived from the same metrics"),
                transform: match (m.below, m.above) {
                    (Some(t), _) => Transform::Below(t),
                    (None, Some(t)) => Transform::Above(t),
                    (None, None) => Transform::Identity,
                },
                range: m.range,
            })
            .collect();
        CohortTable {
            geometry: Geometry {
                bucket_ms,
                buckets,
                recent_buckets: (w.recent.as_millis() as i64 / bucket_ms) as usize,
                slab_ms: (span_ms / w.distribution_slabs as i64).max(1),
                slabs: w.distribution_slabs,
                bins: w.distribution_bins,
                half_life_ms: w.baseline_half_life.as_millis() as i64,
                lateness_ms: config.ingest.allowed_lateness.as_millis() as i64,
            },
            specs,
            segment_keys: config.cohorts.segment_keys.clone(),
            index: HashMap::new(),
            cohorts: Vec::new(),
            max_cohorts: config.cohorts.max_cohorts,
            overflow: None,
            watermarks: Watermarks::new(span_ms),
            idle_expiry_ms: config.idle_expiry().as_millis() as i64,
            evicted: None,
            overflowed: None,
            last_values: Vec::new(),
        }
    }

    /// The key of cohort `i`.
    pub fn key(&self, i: usize) -> &CohortKey {
        &self.cohorts[i].key
    }

    /// The cohort the last event folded into the overflow cohort would have had.
    pub fn overflowed(&self) -> Option<&CohortKey> {
        self.overflowed.as_ref()
    }

    /// The per-metric values (after the metric's transform) of the last applied event.
    pub fn last_values(&self) -> &[f64] {
        &self.last_values
    }

    /// Changes the allowed lateness (hot-reloadable; window geometry is not).
    pub fn set_allowed_lateness_ms(&mut self, ms: i64) {
        self.geometry.lateness_ms = ms;
    }

    /// The metric definitions, in config order.
    pub fn specs(&self) -> &[MetricSpec] {
        &self.specs
    }

    /// The stream's event-time clock: the oldest clock among the active partitions
    /// ([`watermark`]).
    pub fn watermark_ms(&self) -> Option<i64> {
        self.watermarks.stream()
    }

    /// The newest event time applied from any partition.
    pub fn newest_ms(&self) -> Option<i64> {
        self.watermarks.newest()
    }

    /// The Kafka partition cohort `i` is read from.
    pub fn partition(&self, i: usize) -> i32 {
        self.cohorts[i].partition
    }

    /// Number of cohorts, the overflow cohort included.
    pub fn len(&self) -> usize {
        self.cohorts.len()
    }

    /// True before the first event.
    pub fn is_empty(&self) -> bool {
        self.cohorts.is_empty()
    }

    /// Applies one validated event, read from Kafka partition `partition`, to its cohort.
    pub fn apply(&mut self, partition: i32, event: Event) -> Result<Applied, Late> {
        let t = event.emitted_at_ms;
        let before = self.watermarks.get(partition);
        self.watermarks
            .admit(partition, t, self.geometry.lateness_ms)?;
        let bucket = |t: i64| t.div_euclid(self.geometry.bucket_ms);
        if before.is_some_and(|b| bucket(b) < bucket(t)) {
            self.expire(partition);
        }
        let signals = event.signals;
        let key = CohortKey {
            deployment: event.deployment,
            model_version: event.model_version,
            arm: event.arm,
            segment: event.segment,
        };
        let applied = match self.index.get(&key) {
            Some(&i) => Applied::Cohort(i),
            None if self.index.len() < self.max_cohorts => {
                let i = self.push_cohort(key.clone(), partition);
                self.index.insert(key, i);
                Applied::Cohort(i)
            }
            None => {
                let i = match self.overflow {
                    Some(i) => i,
                    None => {
                        let i = self.push_cohort(
                            CohortKey {
                                deployment: OVERFLOW_DEPLOYMENT.into(),
                                model_version: OVERFLOW_DEPLOYMENT.into(),
                                arm: key.arm,
                                segment: vec![None; self.segment_keys.len()],
                            },
                            partition,
                        );
                        self.overflow = Some(i);
                        i
                    }
                };
                self.overflowed = Some(key);
                Applied::Overflow(i)
            }
        };
        let (Applied::Cohort(i) | Applied::Overflow(i)) = applied;
        let cohort = &mut self.cohorts[i];
        cohort.events += 1;
        cohort.last_event_ms = cohort.last_event_ms.max(t);
        self.last_values.clear();
        for (spec, state) in self.specs.iter().zip(cohort.metrics.iter_mut()) {
            let raw = signals[spec.signal];
            let x = match spec.transform {
                Transform::Identity => raw,
                Transform::Below(th) => f64::from(u8::from(raw < th)),
                Transform::Above(th) => f64::from(u8::from(raw > th)),
            };
            self.last_values.push(x);
            if let Some(d) = state.distribution.as_mut() {
                d.with_bucket(t, |b| b.push(raw));
            }
            state.ewma.push(t.div_euclid(self.geometry.bucket_ms), x);
        }
        cohort.windows.push(t, &self.last_values);
        Ok(applied)
    }

    fn push_cohort(&mut self, key: CohortKey, partition: i32) -> usize {
        let g = self.geometry;
        let metrics = self
            .specs
            .iter()
            .map(|spec| MetricState {
                distribution: match (spec.kind, spec.range) {
                    (MetricKind::Score, Some([lo, hi])) => {
                        Some(Ring::new(g.slab_ms, g.slabs, Bins::new(lo, hi, g.bins)))
                    }
                    _ => None,
                },
                ewma: Ewma::new(g.bucket_ms, g.half_life_ms),
            })
            .collect();
        self.cohorts.push(Cohort {
            key,
            partition,
            events: 0,
            last_event_ms: i64::MIN,
            windows: Columns::new(g.bucket_ms, g.buckets, self.flags()),
            metrics,
        });
        self.cohorts.len() - 1
    }

    /// Per metric, in config order, whether its values are 0 or 1 (a rate reads a boolean, a
    /// tail a threshold's side), so its window keeps a count rather than sums.
    fn flags(&self) -> Vec<bool> {
        self.specs
            .iter()
            .map(|s| s.kind != MetricKind::Score)
            .collect()
    }

    /// An immutable view of every cohort, each at its partition's clock (the overflow cohort,
    /// which mixes partitions, at the newest).
    pub fn snapshot(&self) -> Snapshot {
        let g = &self.geometry;
        let newest = self.watermarks.newest().unwrap_or(0);
        let cohorts = self
            .cohorts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    c,
                    match Some(i) == self.overflow {
                        true => newest,
                        false => self.watermarks.get(c.partition).unwrap_or(newest),
                    },
                )
            })
            .map(|(c, now)| CohortView {
                deployment: c.key.deployment.clone(),
                model_version: c.key.model_version.clone(),
                arm: c.key.arm,
                segment: self
                    .segment_keys
                    .iter()
                    .zip(&c.key.segment)
                    .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
                    .collect(),
                overflow: c.key.deployment == OVERFLOW_DEPLOYMENT,
                events_total: c.events,
                last_event_at: format_rfc3339_ms(c.last_event_ms),
                metrics: self
                    .specs
                    .iter()
                    .zip(&c.metrics)
                    .enumerate()
                    .map(|(column, (spec, st))| {
                        let window = c.windows.fold_last(now, g.buckets, column);
                        let recent = c.windows.fold_last(now, g.recent_buckets, column);
                        let quantiles = st.distribution.as_ref().and_then(|d| {
                            let mut bins = match spec.range {
                                Some([lo, hi]) => Bins::new(lo, hi, g.bins),
                                None => return None,
                            };
                            d.fold_last(now, g.slabs, &mut bins);
                            Some(Quantiles {
                                p50: bins.quantile(0.5)?,
                                p90: bins.quantile(0.9)?,
                                p99: bins.quantile(0.99)?,
                            })
                        });
                        MetricView {
                            name: spec.name.clone(),
                            kind: spec.kind,
                            window: WindowStats::from_moments(&window, quantiles),
                            recent: WindowStats::from_moments(&recent, None),
                            ewma: EwmaStats {
                                value: st.ewma.mean(),
                                stddev: st.ewma.stddev(),
                                weight: st.ewma.weight(),
                            },
                        }
                    })
                    .collect(),
            })
            .collect();
        let watermark_ms = self.watermarks.stream();
        Snapshot {
            watermark: watermark_ms.map(format_rfc3339_ms),
            watermark_ms,
            window_seconds: (g.bucket_ms * g.buckets as i64) / 1000,
            recent_seconds: (g.bucket_ms * g.recent_buckets as i64) / 1000,
            cohorts,
        }
    }
}

/// Everything the admin API and metrics know about cohort state, at one watermark.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// The event-time clock, RFC 3339.
    pub watermark: Option<String>,
    /// The event-time clock, Unix milliseconds.
    pub watermark_ms: Option<i64>,
    /// Length of the full rolling window.
    pub window_seconds: i64,
    /// Length of the recent window.
    pub recent_seconds: i64,
    /// Every cohort, in creation order.
    pub cohorts: Vec<CohortView>,
}

/// One cohort's statistics.
#[derive(Debug, Clone, Serialize)]
pub struct CohortView {
    /// Deployment, or [`OVERFLOW_DEPLOYMENT`].
    pub deployment: String,
    /// Model version.
    pub model_version: String,
    /// Arm.
    pub arm: Arm,
    /// Allow-listed segment values present on this cohort's events.
    pub segment: Vec<(String, String)>,
    /// True for the cohort that absorbs events beyond the cap.
    pub overflow: bool,
    /// Events applied to this cohort since start (not windowed).
    pub events_total: u64,
    /// Latest event time seen for this cohort.
    pub last_event_at: String,
    /// Per-metric statistics, in config order.
    pub metrics: Vec<MetricView>,
}

/// One metric of one cohort.
#[derive(Debug, Clone, Serialize)]
pub struct MetricView {
    /// Metric name.
    pub name: String,
    /// Rate, score or tail.
    pub kind: MetricKind,
    /// Over the full span.
    pub window: WindowStats,
    /// Over the recent window.
    pub recent: WindowStats,
    /// The long-run exponentially weighted mean (reported as `baseline`; detection does not
    /// test it).
    #[serde(rename = "baseline")]
    pub ewma: EwmaStats,
}

/// Statistics of one window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowStats {
    /// Number of events.
    pub n: u64,
    /// Rate (share of true) or mean score; `None` when empty.
    pub value: Option<f64>,
    /// Sample standard deviation.
    pub stddev: Option<f64>,
    /// Score quantiles (score metrics, full window only).
    pub quantiles: Option<Quantiles>,
}

impl WindowStats {
    fn from_moments(m: &Moments, quantiles: Option<Quantiles>) -> WindowStats {
        WindowStats {
            n: m.n,
            value: m.mean(),
            stddev: m.stddev(),
            quantiles,
        }
    }
}

/// Score quantiles.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The long-run EWMA of a metric.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EwmaStats {
    /// Weighted mean (rate or score).
    pub value: Option<f64>,
    /// Weighted standard deviation.
    pub stddev: Option<f64>,
    /// Effective number of events behind it.
    pub weight: f64,
}

#[cfg(test)]
mod tests;
