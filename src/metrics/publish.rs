//! Publication of the per-cohort and per-deployment series: what the hot path's published
//! snapshot writes into the registry once per `ingest.publish_interval`, and what an evicted
//! cohort takes away with it.
//!
//! Owns only the mapping from snapshots to label values; the series themselves are registered
//! in the parent module. A value that is not there (an empty window, a test without data, an
//! unbounded confidence bound) removes its series rather than writing NaN. Never called per
//! event.

use prometheus::GaugeVec;

use super::Metrics;
use crate::config::MetricKind;
use crate::detect::{DeploymentView, VerdictState};
use crate::event::Arm;
use crate::state::expiry::CohortLabels;
use crate::state::{MetricSpec, Snapshot};

/// The `q` label values of `driftd_cohort_window_quantile`. Not `quantile`: that label name
/// belongs to summaries, and these rolling-window values are gauges.
const QUANTILES: [&str; 3] = ["0.5", "0.9", "0.99"];

/// Sets the series of `labels` to `value`, or removes it when there is no finite value.
fn set_or_remove<V: AsRef<str> + std::fmt::Debug>(
    vec: &GaugeVec,
    labels: &[V],
    value: Option<f64>,
) {
    match value.filter(|v| v.is_finite()) {
        Some(v) => vec.with_label_values(labels).set(v),
        // Absent already when it never had a value.
        None => {
            let _ = vec.remove_label_values(labels);
        }
    }
}

impl Metrics {
    /// The label values naming a cohort: deployment, model version, arm, then the value of
    /// each configured segment key (empty when the cohort's events do not carry it).
    fn cohort_key(
        &self,
        deployment: &str,
        model_version: &str,
        arm: Arm,
        segment: &[(String, String)],
    ) -> Vec<String> {
        [deployment, model_version, arm.as_str()]
            .into_iter()
            .map(str::to_string)
            .chain(self.segment_keys.iter().map(|key| {
                segment
                    .iter()
                    .find(|(k, _)| k == key)
                    .map_or_else(String::new, |(_, v)| v.clone())
            }))
            .collect()
    }

    /// The window and baseline families of a metric kind: rates, or score means.
    fn value_families(&self, kind: MetricKind) -> (&GaugeVec, &GaugeVec) {
        match kind {
            MetricKind::Rate | MetricKind::Tail => {
                (&self.cohort_window_rate, &self.cohort_baseline_rate)
            }
            MetricKind::Score => (&self.cohort_window_mean, &self.cohort_baseline_mean),
        }
    }

    /// Writes a published snapshot into the per-cohort series. `events_published[i]` is the
    /// cohort count already added to `driftd_cohort_events_total` and is advanced here.
    pub fn publish_snapshot(&self, snapshot: &Snapshot, events_published: &mut Vec<u64>) {
        self.cohorts.set(snapshot.cohorts.len() as i64);
        if let Some(ms) = snapshot.watermark_ms {
            self.watermark.set(ms as f64 / 1000.0);
        }
        events_published.resize(snapshot.cohorts.len(), 0);
        for (c, published) in snapshot.cohorts.iter().zip(events_published.iter_mut()) {
            let key = self.cohort_key(&c.deployment, &c.model_version, c.arm, &c.segment);
            let with = |extra: &[&str]| -> Vec<String> {
                key.iter()
                    .cloned()
                    .chain(extra.iter().map(|s| s.to_string()))
                    .collect()
            };
            self.cohort_events
                .with_label_values(&key)
                .inc_by(c.events_total - *published);
            *published = c.events_total;
            for m in &c.metrics {
                let (window_family, baseline_family) = self.value_families(m.kind);
                for (window, stats) in [("span", &m.window), ("recent", &m.recent)] {
                    let labels = with(&[m.name.as_str(), window]);
                    self.cohort_window_events
                        .with_label_values(&labels)
                        .set(stats.n as i64);
                    set_or_remove(window_family, &labels, stats.value);
                }
                let q = m.window.quantiles;
                for (name, v) in QUANTILES.into_iter().zip([
                    q.map(|q| q.p50),
                    q.map(|q| q.p90),
                    q.map(|q| q.p99),
                ]) {
                    set_or_remove(
                        &self.cohort_window_quantile,
                        &with(&[m.name.as_str(), name]),
                        v,
                    );
                }
                set_or_remove(baseline_family, &with(&[m.name.as_str()]), m.ewma.value);
            }
        }
    }

    /// Drops every series of an evicted cohort, so the exposition does not grow with cohorts
    /// that came and went.
    pub fn forget_cohort(&self, c: &CohortLabels, specs: &[MetricSpec]) {
        let key = self.cohort_key(&c.deployment, &c.model_version, c.arm, &c.segment);
        let with = |extra: &[&str]| -> Vec<String> {
            key.iter()
                .cloned()
                .chain(extra.iter().map(|s| s.to_string()))
                .collect()
        };
        // A series never written (a metric without quantiles, an empty window) is simply
        // absent.
        let _ = self.cohort_events.remove_label_values(&key);
        for m in specs {
            let name = m.name.as_str();
            let (window_family, baseline_family) = self.value_families(m.kind);
            for window in ["span", "recent"] {
                let labels = with(&[name, window]);
                let _ = self.cohort_window_events.remove_label_values(&labels);
                let _ = window_family.remove_label_values(&labels);
            }
            for q in QUANTILES {
                let _ = self
                    .cohort_window_quantile
                    .remove_label_values(&with(&[name, q]));
            }
            let _ = baseline_family.remove_label_values(&with(&[name]));
        }
    }

    /// Writes the published detection state into the verdict series. They are per deployment
    /// and metric, about the canary version under test now: a new canary version's test
    /// replaces the retired one's values, and removes them until it has its own.
    pub fn publish_verdicts(&self, deployments: &[DeploymentView]) {
        for d in deployments {
            let dep = d.deployment.as_str();
            for m in &d.metrics {
                let metric = m.metric.as_str();
                let sources = [
                    ("canary_vs_control", m.canary_vs_control.state),
                    (
                        "self_baseline",
                        m.self_baseline
                            .as_ref()
                            .map_or(VerdictState::Pass, |v| v.state),
                    ),
                    (
                        "late_drift",
                        m.late_drift
                            .as_ref()
                            .map_or(VerdictState::Pass, |v| v.state),
                    ),
                    ("combined", m.state),
                ];
                for (source, current) in sources {
                    for state in VerdictState::ALL {
                        self.verdict_state
                            .with_label_values(&[dep, metric, source, state.as_str()])
                            .set(i64::from(current == state));
                    }
                }
                let v = &m.canary_vs_control;
                for (bound, value) in [
                    ("estimate", v.estimate),
                    ("ci_low", v.ci_low),
                    ("ci_high", v.ci_high),
                ] {
                    set_or_remove(&self.verdict_difference, &[dep, metric, bound], value);
                }
                set_or_remove(&self.verdict_p_value, &[dep, metric], v.p_value);
                for (arm, n) in [("canary", v.n_canary), ("control", v.n_control)] {
                    self.verdict_events
                        .with_label_values(&[dep, metric, arm])
                        .set(n as i64);
                }
            }
            self.sample_ratio_mismatch
                .with_label_values(&[dep])
                .set(i64::from(d.sample_ratio_mismatch));
            for arm in [Arm::Canary, Arm::Control] {
                self.telemetry_absent
                    .with_label_values(&[dep, arm.as_str()])
                    .set(i64::from(d.telemetry_absent.contains(&arm)));
            }
        }
    }
}
