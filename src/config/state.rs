//! The `[cohorts]`, `[windows]` and `[[metrics]]` sections: what cohort state keys, keeps and
//! computes.
//!
//! Owns their schema, defaults (including the four default metrics) and validation, and the
//! effective values of the optional metric settings. It must not hold any state itself: the
//! `state` module builds cohorts, windows and distributions from these settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, is_name, ConfigError};

/// Cohort keying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CohortConfig {
    /// At most this many cohorts are tracked; events of further cohorts are folded into one
    /// overflow cohort, counted, and raise the `cohort_overflow` signal for their deployment.
    pub max_cohorts: usize,
    /// `segment` keys that split cohorts (e.g. `["locale"]`); other segment keys are ignored.
    pub segment_keys: Vec<String>,
    /// A cohort with no event for this long (of its partition's event time) is evicted, with
    /// its metric series, making room for new ones. Default: twice `windows.span`
    /// ([`crate::config::Config::idle_expiry`]); at least `windows.span`.
    #[serde(with = "humantime_serde")]
    pub idle_expiry: Option<Duration>,
}

impl Default for CohortConfig {
    fn default() -> Self {
        CohortConfig {
            max_cohorts: 10_000,
            segment_keys: Vec::new(),
            idle_expiry: None,
        }
    }
}

/// Rolling-window geometry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// Width of one event-time bucket.
    #[serde(with = "humantime_serde")]
    pub bucket: Duration,
    /// Length of the rolling window; a whole multiple of `bucket`.
    #[serde(with = "humantime_serde")]
    pub span: Duration,
    /// A shorter window reported beside the full span (a whole multiple of `bucket`).
    #[serde(with = "humantime_serde")]
    pub recent: Duration,
    /// Number of slabs the score distributions are kept in over the span (quantiles have this
    /// time resolution).
    pub distribution_slabs: usize,
    /// Number of equal-width bins of each score distribution over the metric's range.
    pub distribution_bins: usize,
    /// Half-life, in event time, of the exponentially weighted long-run baseline.
    #[serde(with = "humantime_serde")]
    pub baseline_half_life: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            bucket: Duration::from_secs(10),
            span: Duration::from_secs(3600),
            recent: Duration::from_secs(60),
            distribution_slabs: 12,
            distribution_bins: 100,
            baseline_half_life: Duration::from_secs(6 * 3600),
        }
    }
}

impl WindowConfig {
    /// Number of buckets in the span.
    pub fn buckets(&self) -> usize {
        (self.span.as_millis() / self.bucket.as_millis().max(1)) as usize
    }
}

/// How a metric is computed from its signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Share of events whose boolean signal is true.
    Rate,
    /// Mean and distribution of a numeric signal within `range`.
    Score,
    /// Share of events whose numeric signal is below `below` (or above `above`).
    Tail,
}

/// Which direction of change is harmful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Worse {
    /// An increase is harmful.
    Up,
    /// A decrease is harmful.
    Down,
}

/// One metric tracked per cohort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// Metric name used in metrics labels and the API: 1–32 chars of `[a-z0-9_]`.
    pub name: String,
    /// Name of the event signal it reads (key of the event's `signals` object).
    pub signal: String,
    /// How the signal is turned into the metric.
    pub kind: MetricKind,
    /// Which direction is worse.
    pub worse: Worse,
    /// Declared `[low, high]` range of a numeric signal (required for `score` and `tail`); values
    /// outside it are rejected as `out_of_range`.
    #[serde(default)]
    pub range: Option<[f64; 2]>,
    /// For `tail`: count events whose signal is strictly below this value.
    #[serde(default)]
    pub below: Option<f64>,
    /// For `tail`: count events whose signal is strictly above this value.
    #[serde(default)]
    pub above: Option<f64>,
    /// Smallest worse-direction difference (canary − control, in the metric's units) that can
    /// fail a canary. Default: 0.01 for rates and tails, 2.5% of the range for scores.
    #[serde(default)]
    pub min_effect: Option<f64>,
    /// This metric's share of `detection.alpha` (Bonferroni). Default: `detection.alpha` divided
    /// equally among the metrics that do not set one. The shares may not exceed the budget.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Events per arm before a verdict other than `insufficient`. Default `detection.min_events`.
    #[serde(default)]
    pub min_events: Option<u64>,
    /// Scale `s` of the canary-vs-control test's mixture: its prior puts equal weight on
    /// worse-direction effects of ½, 1, 3⁄2 and 5⁄2 × `s`. Default: 2 × `min_effect` (effects of
    /// 1, 2, 3 and 5 × `min_effect`).
    #[serde(default)]
    pub mixture_scale: Option<f64>,
    /// Shift the self-baseline CUSUM is tuned to detect. Default: 3 × `min_effect`.
    #[serde(default)]
    pub self_baseline_shift: Option<f64>,
}

impl MetricConfig {
    fn defaults(name: &str, signal: &str, kind: MetricKind, worse: Worse) -> MetricConfig {
        MetricConfig {
            name: name.into(),
            signal: signal.into(),
            kind,
            worse,
            range: None,
            below: None,
            above: None,
            min_effect: None,
            alpha: None,
            min_events: None,
            mixture_scale: None,
            self_baseline_shift: None,
        }
    }

    /// The effective `min_effect`.
    pub fn min_effect(&self) -> f64 {
        self.min_effect.unwrap_or(match (self.kind, self.range) {
            (MetricKind::Score, Some([lo, hi])) => 0.025 * (hi - lo),
            _ => 0.01,
        })
    }

    /// The effective mixture scale.
    pub fn mixture_scale(&self) -> f64 {
        self.mixture_scale.unwrap_or(2.0 * self.min_effect())
    }

    /// The effective self-baseline shift.
    pub fn self_baseline_shift(&self) -> f64 {
        self.self_baseline_shift.unwrap_or(3.0 * self.min_effect())
    }
}

/// The metrics used when the config defines none: refusal, escalation, tone and tone_tail.
pub(super) fn default_metrics() -> Vec<MetricConfig> {
    vec![
        MetricConfig::defaults("refusal", "refused", MetricKind::Rate, Worse::Up),
        MetricConfig::defaults("escalation", "escalated", MetricKind::Rate, Worse::Up),
        MetricConfig {
            range: Some([-1.0, 1.0]),
            ..MetricConfig::defaults("tone", "tone", MetricKind::Score, Worse::Down)
        },
        MetricConfig {
            range: Some([-1.0, 1.0]),
            below: Some(-0.5),
            min_effect: Some(0.02),
            ..MetricConfig::defaults("tone_tail", "tone", MetricKind::Tail, Worse::Up)
        },
    ]
}

impl CohortConfig {
    /// The `[cohorts]` rules.
    pub(super) fn validate(&self, windows: &WindowConfig) -> Result<(), ConfigError> {
        if self.max_cohorts == 0 {
            return Err(invalid("cohorts.max_cohorts", "must be at least 1"));
        }
        if self.idle_expiry.is_some_and(|e| e < windows.span) {
            return Err(invalid(
                "cohorts.idle_expiry",
                "must be at least windows.span: a cohort whose window still holds events must stay",
            ));
        }
        for (n, key) in self.segment_keys.iter().enumerate() {
            if key.is_empty() || key.len() > 64 {
                return Err(invalid(
                    format!("cohorts.segment_keys[{n}]"),
                    "must be 1–64 characters",
                ));
            }
            if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(invalid(
                    format!("cohorts.segment_keys[{n}]"),
                    format!("`{key}` must be letters, digits and `_` only: it becomes the Prometheus label `segment_{key}`"),
                ));
            }
            if self.segment_keys[..n].contains(key) {
                return Err(invalid(
                    format!("cohorts.segment_keys[{n}]"),
                    format!("`{key}` is listed twice"),
                ));
            }
        }
        Ok(())
    }
}

impl WindowConfig {
    /// The `[windows]` rules.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bucket = self.bucket.as_millis();
        if bucket < 100 {
            return Err(invalid("windows.bucket", "must be at least 100ms"));
        }
        for (field, d) in [("windows.span", self.span), ("windows.recent", self.recent)] {
            if d.as_millis() % bucket != 0 || d.as_millis() < bucket {
                return Err(invalid(
                    field,
                    "must be a whole, non-zero multiple of windows.bucket",
                ));
            }
        }
        if self.buckets() > 100_000 {
            return Err(invalid(
                "windows.span",
                "holds more than 100000 buckets; widen windows.bucket",
            ));
        }
        if self.recent > self.span {
            return Err(invalid("windows.recent", "must not exceed windows.span"));
        }
        if self.distribution_slabs == 0 || self.distribution_slabs > self.buckets() {
            return Err(invalid(
                "windows.distribution_slabs",
                "must be between 1 and the number of buckets in the span",
            ));
        }
        if !(2..=10_000).contains(&self.distribution_bins) {
            return Err(invalid(
                "windows.distribution_bins",
                "must be between 2 and 10000",
            ));
        }
        if self.baseline_half_life < self.bucket {
            return Err(invalid(
                "windows.baseline_half_life",
                "must be at least one windows.bucket",
            ));
        }
        Ok(())
    }
}

/// The `[[metrics]]` rules: names, kinds, ranges, and agreement between metrics that read the
/// same signal. Detection settings of each metric are judged with `[detection]`.
pub(super) fn validate_metrics(metrics: &[MetricConfig]) -> Result<(), ConfigError> {
    if metrics.is_empty() {
        return Err(invalid("metrics", "must define at least one metric"));
    }
    if metrics.len() > 32 {
        return Err(invalid("metrics", "at most 32 metrics are supported"));
    }
    for (n, m) in metrics.iter().enumerate() {
        let field = |f: &str| format!("metrics[{n}].{f}");
        if !is_name(&m.name, 32) {
            return Err(invalid(field("name"), "must be 1–32 chars of [a-z0-9_]"));
        }
        if metrics[..n].iter().any(|o| o.name == m.name) {
            return Err(invalid(
                field("name"),
                format!("`{}` is defined twice", m.name),
            ));
        }
        if !is_name(&m.signal, 64) {
            return Err(invalid(field("signal"), "must be 1–64 chars of [a-z0-9_]"));
        }
        match m.kind {
            MetricKind::Rate => {
                if m.range.is_some() || m.below.is_some() || m.above.is_some() {
                    return Err(invalid(
                        field("kind"),
                        "a `rate` reads a boolean signal and takes no range, below or above",
                    ));
                }
            }
            MetricKind::Score | MetricKind::Tail => {
                let Some([lo, hi]) = m.range else {
                    return Err(invalid(
                        field("range"),
                        "is required for score and tail metrics, e.g. [-1.0, 1.0]",
                    ));
                };
                if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                    return Err(invalid(
                        field("range"),
                        "must be [low, high] with low < high",
                    ));
                }
                if m.kind == MetricKind::Score && (m.below.is_some() || m.above.is_some()) {
                    return Err(invalid(
                        field("kind"),
                        "a `score` takes no below/above; use kind = \"tail\" for a tail rate",
                    ));
                }
                if m.kind == MetricKind::Tail {
                    match (m.below, m.above) {
                        (Some(t), None) | (None, Some(t)) if t.is_finite() => {}
                        _ => {
                            return Err(invalid(
                                field("below"),
                                "a tail metric needs exactly one finite `below` or `above`",
                            ))
                        }
                    }
                }
            }
        }
        for other in &metrics[..n] {
            if other.signal != m.signal {
                continue;
            }
            let numeric = |k: MetricKind| k != MetricKind::Rate;
            if numeric(other.kind) != numeric(m.kind) {
                return Err(invalid(
                    field("signal"),
                    format!(
                        "`{}` is read as boolean by one metric and as number by another",
                        m.signal
                    ),
                ));
            }
            if numeric(m.kind) && other.range != m.range {
                return Err(invalid(
                    field("range"),
                    format!(
                        "differs from metric `{}` on the same signal `{}`",
                        other.name, m.signal
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn span_must_be_multiple_of_bucket() {
        let err = Config::parse("[windows]\nbucket = \"7s\"\nspan = \"1h\"\n").unwrap_err();
        assert!(err.to_string().contains("windows.span"), "{err}");
    }

    #[test]
    fn tail_metric_needs_a_threshold() {
        let toml = r#"
[[metrics]]
name = "t"
signal = "tone"
kind = "tail"
worse = "up"
range = [-1.0, 1.0]
"#;
        let err = Config::parse(toml).unwrap_err();
        assert!(err.to_string().contains("metrics[0].below"), "{err}");
    }
}
