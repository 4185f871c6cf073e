//! Publication of the per-cohort and per-deployment series: what the hot path's published
//! snapshot writes into the registry once per `ingest.publish_interval`, and what an evicted
//! cohort takes away with it.
//!
//! Owns only the mapping from snapshots to label values; the series themselves are registered
//! in the parent module. Never called per event.

use super::Metrics;
use crate::detect::{DeploymentView, VerdictState};
use crate::event::Arm;
use crate::state::expiry::CohortLabels;
use crate::state::{MetricSpec, Snapshot};

impl Metrics {
    /// Writes a published snapshot into the per-cohort series. `events_published[i]` is the
    /// cohort count already added to `driftd_cohort_events_total` and is advanced here.
    pub fn publish_snapshot(&self, snapshot: &Snapshot, events_published: &mut Vec<u64>) {
        self.cohorts.set(snapshot.cohorts.len() as i64);
        if let Some(ms) = snapshot.watermark_ms {
            self.watermark.set(ms as f64 / 1000.0);
        }
        events_published.resize(snapshot.cohorts.len(), 0);
        for (c, published) in snapshot.cohorts.iter().zip(events_published.iter_mut()) {
            let segment = c.segment_label();
            let key = [
                c.deployment.as_str(),
                c.model_version.as_str(),
                c.arm.as_str(),
                segment.as_str(),
            ];
            self.cohort_events
                .with_label_values(&key)
                .inc_by(c.events_total - *published);
            *published = c.events_total;
            for m in &c.metrics {
                for (window, stats) in [("span", &m.window), ("recent", &m.recent)] {
                    let labels = [&key[..], &[m.name.as_str(), window]].concat();
                    self.cohort_window_events
                        .with_label_values(&labels)
                        .set(stats.n as i64);
                    let value = self.cohort_window_value.with_label_values(&labels);
                    value.set(stats.value.unwrap_or(f64::NAN));
                }
                if let Some(q) = m.window.quantiles {
                    for (name, v) in [("0.5", q.p50), ("0.9", q.p90), ("0.99", q.p99)] {
                        let labels = [&key[..], &[m.name.as_str(), name]].concat();
                        self.cohort_window_quantile
                            .with_label_values(&labels)
                            .set(v);
                    }
                }
                let labels = [&key[..], &[m.name.as_str()]].concat();
                self.cohort_baseline_value
                    .with_label_values(&labels)
                    .set(m.ewma.value.unwrap_or(f64::NAN));
            }
        }
    }

    /// Drops every series of an evicted cohort, so the exposition does not grow with cohorts
    /// that came and went.
    pub fn forget_cohort(&self, c: &CohortLabels, specs: &[MetricSpec]) {
        let key = [
            c.deployment.as_str(),
            c.model_version.as_str(),
            c.arm.as_str(),
            c.segment.as_str(),
        ];
        // A series never written (a metric without quantiles) is simply absent.
        let _ = self.cohort_events.remove_label_values(&key);
        for m in specs {
            let name = m.name.as_str();
            for window in ["span", "recent"] {
                let labels = [&key[..], &[name, window]].concat();
                let _ = self.cohort_window_events.remove_label_values(&labels);
                let _ = self.cohort_window_value.remove_label_values(&labels);
            }
            for q in ["0.5", "0.9", "0.99"] {
                let labels = [&key[..], &[name, q]].concat();
                let _ = self.cohort_window_quantile.remove_label_values(&labels);
            }
            let labels = [&key[..], &[name]].concat();
            let _ = self.cohort_baseline_value.remove_label_values(&labels);
        }
    }

    /// Writes the published detection state into the verdict series.
    pub fn publish_verdicts(&self, deployments: &[DeploymentView]) {
        for d in deployments {
            let dep = d.deployment.as_str();
            for m in &d.metrics {
                let metric = m.metric.as_str();
                let sources = [
                    ("canary_vs_control", Some(m.canary_vs_control.state)),
                    (
                        "self_baseline",
                        Some(
                            m.self_baseline
                                .as_ref()
                                .map_or(VerdictState::Pass, |v| v.state),
                        ),
                    ),
                    ("combined", Some(m.state)),
                ];
                for (source, current) in sources {
                    for state in VerdictState::ALL {
                        self.verdict_state
                            .with_label_values(&[dep, metric, source, state.as_str()])
                            .set(i64::from(current == Some(state)));
                    }
                }
                let v = &m.canary_vs_control;
                for (bound, value) in [
                    ("estimate", v.estimate),
                    ("ci_low", v.ci_low),
                    ("ci_high", v.ci_high),
                ] {
                    self.verdict_difference
                        .with_label_values(&[dep, metric, bound])
                        .set(value.unwrap_or(f64::NAN));
                }
                self.verdict_p_value
                    .with_label_values(&[dep, metric])
                    .set(v.p_value.unwrap_or(f64::NAN));
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
