//! The detection and containment series: verdict and signal changes, stale changes, the
//! contained gauge, and each action's outcome and duration.
//!
//! Owns the label values and the duration buckets; containment decides what happened. Must
//! not call providers.

use std::time::Duration;

use super::Metrics;
use crate::config::ContainmentConfig;
use crate::contain::latch::Op;
use crate::detect::Change;

/// The first bucket of `driftd_action_duration_seconds`: a local flagd file flip.
const FIRST_BUCKET: f64 = 0.01;

/// The fewest buckets, enough for the default `retry_for` plus one attempt's timeout.
const MIN_BUCKETS: usize = 14;

/// The buckets of `driftd_action_duration_seconds`: doubling from 10 ms until the top bucket
/// holds an action whose last attempt starts just before `retry_for` ends and runs for
/// `action_timeout`. Every config shares the same ladder (only its length differs), so
/// instances with different settings still aggregate bucket by bucket.
pub(super) fn action_buckets(c: &ContainmentConfig) -> Vec<f64> {
    let longest = (c.retry_for + c.action_timeout).max(Duration::from_millis(10));
    let mut count = MIN_BUCKETS;
    while FIRST_BUCKET * 2f64.powi(count as i32 - 1) < longest.as_secs_f64() {
        count += 1;
    }
    prometheus::exponential_buckets(FIRST_BUCKET, 2.0, count).expect("valid buckets")
}

impl Metrics {
    /// Counts a verdict or signal change.
    pub fn count_change(&self, change: &Change) {
        match change {
            Change::Verdict(v) => self
                .verdict_changes
                .with_label_values(&[v.source.as_str(), v.state.as_str()])
                .inc(),
            Change::Signal(s) if s.active => self
                .signals_raised
                .with_label_values(&[s.kind.as_str()])
                .inc(),
            Change::Signal(_) => {}
        }
    }

    /// Sets whether a deployment is contained.
    pub fn set_contained(&self, deployment: &str, contained: bool) {
        self.contained
            .with_label_values(&[deployment])
            .set(i64::from(contained));
    }

    /// Counts a change not acted on because its evidence was stale; `kind` is `verdict` or
    /// `signal`.
    pub fn count_stale(&self, kind: &'static str) {
        self.stale_changes.with_label_values(&[kind]).inc();
    }

    /// Counts an action dropped by fencing (`reason`: a [`crate::contain::fence::FenceReason`]
    /// label).
    pub fn count_fenced(&self, reason: &str) {
        self.actions_fenced.with_label_values(&[reason]).inc();
    }

    /// Counts an action outcome (one of [`super::ACTION_OUTCOMES`]) and, when given, its
    /// duration under its provider and op.
    pub fn count_action(&self, provider: &str, op: Op, outcome: &str, elapsed: Option<Duration>) {
        self.actions.with_label_values(&[provider, outcome]).inc();
        if let Some(e) = elapsed {
            self.action_duration
                .with_label_values(&[provider, op.as_str()])
                .observe(e.as_secs_f64());
        }
    }
}
