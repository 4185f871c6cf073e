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

use prometheus::GaugeVec;

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
    /// The ends of sample lines after the cohort's labels (the extra labels and the closing
    /// brace), by their label values: the same few for every cohort, so made once.
    ends: Vec<(Vec<String>, String)>,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, spec: Spec) -> Family<'a> {
        Family {
            out,
            spec,
            started: false,
            ends: Vec::new(),
        }
    }

    /// Appends a sample of the cohort labelled `key` with `extra` labels; none for a missing
    /// or non-finite value.
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
        let found = self.ends.iter().position(|(values, _)| {
            values.len() == extra.len() && values.iter().zip(extra).all(|(a, (_, b))| a == b)
        });
        let at = found.unwrap_or_else(|| {
            let mut end = String::new();
            for (k, v) in extra {
                end.push(',');
                pair(&mut end, k, v);
            }
            end.push_str("} ");
            let values = extra.iter().map(|(_, v)| v.to_string()).collect();
            self.ends.push((values, end));
            self.ends.len() - 1
        });
        self.out.push_str(name);
        self.out.push('{');
        self.out.push_str(key);
        self.out.push_str(&self.ends[at].1);
        let _ = match value {
            Value::Int(n) => writeln!(self.out, "{n}"),
            Value::Float(v) => writeln!(self.out, "{}", v.unwrap_or_default()),
        };
    }
}

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

    /// Takes a publication: its cohort count and watermark now, its cohorts' series at each
    /// scrape ([`Metrics::render_cohorts`]). Holding the publication is all it costs: nothing
    /// is written per cohort, so neither the publication thread nor memory grows with the
    /// series, and an evicted cohort is simply absent from the next publication.
    pub fn publish_cohorts(&self, published: Arc<Published>) {
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

    /// Appends the per-cohort families of the latest publication to an exposition, in the
    /// text format: each family's samples together, label values escaped, a family without
    /// samples left out (as the registry does).
    pub(super) fn render_cohorts(&self, out: &mut String) {
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
