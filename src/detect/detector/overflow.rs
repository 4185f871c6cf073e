//! The `cohort_overflow` signal: a deployment whose events are folded into the overflow cohort
//! because `cohorts.max_cohorts` was reached is not being judged for them, and on-call must
//! hear it — a new canary version must never go unjudged in silence.
//!
//! Raised on a deployment's first folded event, cleared when an event of that same cohort (a
//! new canary version, a new segment) fits a cohort of its own (idle cohorts were evicted).
//! The deployment's other cohorts go on as before and do not clear it. Like
//! `sample_ratio_mismatch` it alerts and never fails a canary. At most
//! [`MAX_OVERFLOW_SIGNALS`] deployments carry it at once: a producer inventing deployment names
//! cannot grow this set, and past the bound the overflow is still counted
//! (`driftd_events_overflow_total`). Not persisted: after a restart the next
//! folded event raises it again, and containment acts once per incident.

use crate::detect::verdict::{Change, Signal, SignalKind};
use crate::event::format_rfc3339_ms;
use crate::state::CohortKey;

use super::Detector;

/// Deployments that can carry the signal at once.
pub const MAX_OVERFLOW_SIGNALS: usize = 100;

impl Detector {
    /// An event of cohort `key` at `t_ms` was folded into the overflow cohort.
    pub fn overflowed(&mut self, key: &CohortKey, t_ms: i64, out: &mut Vec<Change>) {
        self.events_seen += 1;
        if self.overflowing.len() >= MAX_OVERFLOW_SIGNALS
            || self.overflowing.contains_key(&key.deployment)
        {
            return;
        }
        self.overflowing.insert(key.deployment.clone(), key.clone());
        out.push(Change::Signal(self.overflow_signal(key, true, t_ms)));
    }

    /// An event of `key` got a cohort of its own: clears its deployment's signal if it was
    /// raised for this cohort.
    pub(super) fn fits_again(&mut self, key: &CohortKey, t_ms: i64, out: &mut Vec<Change>) {
        if self.overflowing.get(&key.deployment) == Some(key) {
            self.overflowing.remove(&key.deployment);
            out.push(Change::Signal(self.overflow_signal(key, false, t_ms)));
        }
    }

    fn overflow_signal(&self, key: &CohortKey, active: bool, t_ms: i64) -> Signal {
        let dep = self
            .index
            .get(&key.deployment)
            .map(|&i| &self.deployments[i]);
        Signal {
            kind: SignalKind::CohortOverflow,
            deployment: key.deployment.clone(),
            model_version: key.model_version.clone(),
            arm: Some(key.arm),
            active,
            at: format_rfc3339_ms(t_ms),
            events_seen: self.events_seen,
            n_canary: dep.map_or(0, |d| d.tests[0].canary.n),
            n_control: dep.map_or(0, |d| d.tests[0].control.n),
            expected_share: None,
            observed_share: None,
            statistic: self.overflowing.len() as f64,
            threshold: self.max_cohorts as f64,
        }
    }
}
