//! Publication of the per-cohort and per-deployment series. The per-deployment (verdict)
//! series are written into the registry once per `ingest.publish_interval`. The per-cohort
//! families are not registered at all: each scrape renders them from the latest publication
//! (`Metrics::render_cohorts`), because at 10,000 cohorts they are about 240,000 series, which
//! as registered series cost about 1.4 s per scrape through the registry's gather and encoder,
//! memory per series, and a write per series per publication.
//!
//! Owns only the mapping from snapshots to label values and the per-cohort text; the other
//! series are registered in the parent module. A value that is not there (an empty window, a
//! test without data, an unbounded confidence bound) has no series rather than NaN. Never
//! called per event.

use std::fmt::Write;
use std::sync::{Arc, PoisonError};

use super::Metrics;
use crate::config::MetricKind;
use crate::detect::{DeploymentView, VerdictState};
use crate::event::Arm;
use crate::pipeline::Published;
use crate::state::CohortView;

/// The `q` label values of `driftd_cohort_window_quantile`. Not `quantile`: that label name
/// belongs to summaries, and these rolling-window values are gauges.
const QUANTILES: [&str; 3] = ["0.5", "0.9", "0.99"];

/// A per-cohort family: name, type and help.
type Spec = (&'static str, &'static str, &'static str);

const COHORT_EVENTS: Spec = (
    "driftd_cohort_events_total",
    "counter",
    "Events applied per cohort since start.",
);
const WINDOW_EVENTS: Spec = (
    "driftd_cohort_window_events",
    "gauge",
    "Events in the rolling window, per cohort and metric (window = span | recent); 0 when empty.",
);
const WINDOW_RATE: Spec = (
    "driftd_cohort_window_rate",
    "gauge",
    "Share of the window's events (0..1) flagged by a rate or tail metric, per cohort; absent while the window is empty.",
);
const WINDOW_MEAN: Spec = (
    "driftd_cohort_window_mean",
    "gauge",
    "Mean score of the window's events for a score metric, per cohort; absent while the window is empty.",
);
const WINDOW_QUANTILE: Spec = (
    "driftd_cohort_window_quantile",
    "gauge",
    "Score quantile (q = 0.5, 0.9, 0.99) over the cohort's full rolling window. Per cohort: quantiles of different cohorts cannot be averaged or summed; absent while the window is empty.",
);
const BASELINE_RATE: Spec = (
    "driftd_cohort_baseline_rate",
    "gauge",
    "Long-run exponentially weighted share (0..1) of a rate or tail metric, per cohort; absent before the first event.",
);
const BASELINE_MEAN: Spec = (
    "driftd_cohort_baseline_mean",
    "gauge",
    "Long-run exponentially weighted mean score of a score metric, per cohort; absent before the first event.",
);

const VERDICT_STATE: Spec = (
    "driftd_verdict_state",
    "gauge",
    "1 for the current state of each (deployment, metric, source), 0 for the others; source = canary_vs_control | self_baseline | combined.",
);
const VERDICT_DIFFERENCE: Spec = (
    "driftd_verdict_difference",
    "gauge",
    "Canary minus control of the current canary-vs-control test: the estimate and its confidence-sequence bounds, each one-sided at the metric's alpha from the test's own mixture (the harmful-side bound excludes 0 exactly when the test is significant, as every fail is); absent until both arms have min_events.",
);
const VERDICT_P_VALUE: Spec = (
    "driftd_verdict_p_value",
    "gauge",
    "Always-valid p-value of the canary-vs-control test in the worse direction; absent while the test has no data.",
);
const VERDICT_EVENTS: Spec = (
    "driftd_verdict_events",
    "gauge",
    "Events per arm in the current canary-vs-control test.",
);
const SAMPLE_RATIO_MISMATCH: Spec = (
    "driftd_sample_ratio_mismatch",
    "gauge",
    "1 when the current canary's traffic share differs from the configured one.",
);
const TELEMETRY_ABSENT: Spec = (
    "driftd_telemetry_absent",
    "gauge",
    "1 while an arm has sent nothing for detection.absent_after.",
);

/// Which metric kinds a value family holds.
#[derive(Clone, Copy)]
enum Kinds {
    Rates,
    Scores,
}

impl Kinds {
    fn holds(self, kind: MetricKind) -> bool {
        match self {
            Kinds::Rates => matches!(kind, MetricKind::Rate | MetricKind::Tail),
            Kinds::Scores => matches!(kind, MetricKind::Score),
        }
    }
}

/// A sample's value: a count, or a measurement that may be missing.
enum Value {
    Int(u64),
    Float(Option<f64>),
}

/// Appends `name="value"` (after a comma unless first), the value escaped as the text format
/// requires.
fn label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    pair(out, name, value);
}

/// Appends `name="value"`, the value escaped as the text format requires.
fn pair(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    if value.contains(['\\', '"', '\n']) {
        for ch in value.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
    } else {
        out.push_str(value);
    }
    out.push('"');
}

/// One family being rendered: its `# HELP` and `# TYPE` lines come with its first sample.
struct Family<'a> {
    out: &'a mut String,
    spec: Spec,
    started: bool,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, spec: Spec) -> Family<'a> {
        Family {
            out,
            spec,
            started: false,
        }
    }

    /// Appends a sample labelled `key` (exposition text, never empty) and `extra`; none for a
    /// missing or non-finite value.
    fn sample(&mut self, key: &str, extra: &[(&str, &str)], value: Value) {
        if let Value::Float(v) = value {
            if !v.is_some_and(f64::is_finite) {
                return;
            }
        }
        let (name, kind, help) = self.spec;
        if !self.started {
            self.started = true;
            let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        self.out.push_str(name);
        self.out.push('{');
        self.out.push_str(key);
        for (k, v) in extra {
            self.out.push(',');
            pair(self.out, k, v);
        }
        let _ = match value {
            Value::Int(n) => writeln!(self.out, "}} {n}"),
            Value::Float(v) => writeln!(self.out, "}} {}", v.unwrap_or_default()),
        };
    }
}

impl Metrics {
    /// The labels naming a cohort, as exposition text: deployment, model version, arm, then
    /// `segment_<key>` for each configured segment key (empty when the cohort's events do not
    /// carry it).
    fn cohort_key(&self, c: &CohortView) -> String {
        let segment = self.segment_keys.iter().map(|k| {
            c.segment
                .iter()
                .find(|(sk, _)| sk == k)
                .map_or("", |(_, v)| v.as_str())
        });
        let values = [
            c.deployment.as_str(),
            c.model_version.as_str(),
            c.arm.as_str(),
        ]
        .into_iter()
        .chain(segment);
        let mut key = String::new();
        for (name, value) in self.cohort_labels.iter().zip(values) {
            label(&mut key, name, value);
        }
        key
    }

    /// Takes a publication: its cohort count and watermark now, its cohorts' and deployments'
    /// series at each scrape ([`Metrics::render_published`]). Holding the publication is all
    /// it costs: nothing is written per series, so neither the publication thread nor memory
    /// grows with them, and an evicted cohort is simply absent from the next publication.
    pub fn publish(&self, published: Arc<Published>) {
        let snapshot = &published.cohorts;
        self.cohorts.set(snapshot.cohorts.len() as i64);
        if let Some(ms) = snapshot.watermark_ms {
            self.watermark.set(ms as f64 / 1000.0);
        }
        *self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(published);
    }

    /// Appends the per-cohort and per-deployment families of the latest publication to an
    /// exposition, in the text format: each family's samples together, label values escaped, a
    /// family without samples left out (as the registry does).
    pub(super) fn render_published(&self, out: &mut String) {
        let Some(published) = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return;
        };
        let cohorts = &published.cohorts.cohorts;
        let keys: Vec<String> = cohorts.iter().map(|c| self.cohort_key(c)).collect();
        // About 5 KB per cohort with the default metrics and two segment keys: growing the
        // text by doubling would copy it over and over.
        out.reserve(cohorts.len() * 5_000);
        let mut f = Family::new(out, COHORT_EVENTS);
        for (c, key) in cohorts.iter().zip(&keys) {
            f.sample(key, &[], Value::Int(c.events_total));
        }
        let mut f = Family::new(out, WINDOW_EVENTS);
        for (c, key) in cohorts.iter().zip(&keys) {
            for m in &c.metrics {
                for (window, stats) in [("span", &m.window), ("recent", &m.recent)] {
                    let labels = [("metric", m.name.as_str()), ("window", window)];
                    f.sample(key, &labels, Value::Int(stats.n));
                }
            }
        }
        for (family, kind) in [(WINDOW_RATE, Kinds::Rates), (WINDOW_MEAN, Kinds::Scores)] {
            let mut f = Family::new(out, family);
            for (c, key) in cohorts.iter().zip(&keys) {
                for m in c.metrics.iter().filter(|m| kind.holds(m.kind)) {
                    for (window, stats) in [("span", &m.window), ("recent", &m.recent)] {
                        let labels = [("metric", m.name.as_str()), ("window", window)];
                        f.sample(key, &labels, Value::Float(stats.value));
                    }
                }
            }
        }
        let mut f = Family::new(out, WINDOW_QUANTILE);
        for (c, key) in cohorts.iter().zip(&keys) {
            for m in &c.metrics {
                let Some(q) = m.window.quantiles else {
                    continue;
                };
                for (name, v) in QUANTILES.into_iter().zip([q.p50, q.p90, q.p99]) {
                    let labels = [("metric", m.name.as_str()), ("q", name)];
                    f.sample(key, &labels, Value::Float(Some(v)));
                }
            }
        }
        for (family, kind) in [
            (BASELINE_RATE, Kinds::Rates),
            (BASELINE_MEAN, Kinds::Scores),
        ] {
            let mut f = Family::new(out, family);
            for (c, key) in cohorts.iter().zip(&keys) {
                for m in c.metrics.iter().filter(|m| kind.holds(m.kind)) {
                    let labels = [("metric", m.name.as_str())];
                    f.sample(key, &labels, Value::Float(m.ewma.value));
                }
            }
        }
        Metrics::render_verdicts(out, &published.deployments);
    }

    /// Appends the per-deployment verdict families of the latest publication: per deployment
    /// and metric, about the canary version under test now (a new canary version's test
    /// replaces the retired one's values); a deployment no longer published has none.
    fn render_verdicts(out: &mut String, deployments: &[DeploymentView]) {
        let keys: Vec<String> = deployments
            .iter()
            .map(|d| {
                let mut key = String::new();
                pair(&mut key, "deployment", &d.deployment);
                key
            })
            .collect();
        let mut f = Family::new(out, VERDICT_STATE);
        for (d, key) in deployments.iter().zip(&keys) {
            for m in &d.metrics {
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
                        let labels = [
                            ("metric", m.metric.as_str()),
                            ("source", source),
                            ("state", state.as_str()),
                        ];
                        f.sample(key, &labels, Value::Int(u64::from(current == state)));
                    }
                }
            }
        }
        let mut f = Family::new(out, VERDICT_DIFFERENCE);
        for (d, key) in deployments.iter().zip(&keys) {
            for m in &d.metrics {
                let v = &m.canary_vs_control;
                for (bound, value) in [
                    ("estimate", v.estimate),
                    ("ci_low", v.ci_low),
                    ("ci_high", v.ci_high),
                ] {
                    let labels = [("metric", m.metric.as_str()), ("bound", bound)];
                    f.sample(key, &labels, Value::Float(value));
                }
            }
        }
        let mut f = Family::new(out, VERDICT_P_VALUE);
        for (d, key) in deployments.iter().zip(&keys) {
            for m in &d.metrics {
                let labels = [("metric", m.metric.as_str())];
                f.sample(key, &labels, Value::Float(m.canary_vs_control.p_value));
            }
        }
        let mut f = Family::new(out, VERDICT_EVENTS);
        for (d, key) in deployments.iter().zip(&keys) {
            for m in &d.metrics {
                let v = &m.canary_vs_control;
                for (arm, n) in [("canary", v.n_canary), ("control", v.n_control)] {
                    let labels = [("metric", m.metric.as_str()), ("arm", arm)];
                    f.sample(key, &labels, Value::Int(n));
                }
            }
        }
        let mut f = Family::new(out, SAMPLE_RATIO_MISMATCH);
        for (d, key) in deployments.iter().zip(&keys) {
            f.sample(key, &[], Value::Int(u64::from(d.sample_ratio_mismatch)));
        }
        let mut f = Family::new(out, TELEMETRY_ABSENT);
        for (d, key) in deployments.iter().zip(&keys) {
            for arm in [Arm::Canary, Arm::Control] {
                let absent = d.telemetry_absent.contains(&arm);
                f.sample(key, &[("arm", arm.as_str())], Value::Int(u64::from(absent)));
            }
        }
    }
}
