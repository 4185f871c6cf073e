//! The `[detection]` section: canary-vs-control tests, self-baseline change detection and the
//! cohort signals (sample-ratio mismatch, absent telemetry).
//!
//! Owns the section's schema, defaults and validation, including the per-metric detection
//! settings of `[[metrics]]` and the alpha budget they share. It must not run a test: `detect`
//! does that with these settings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, MetricConfig, MetricKind, WindowConfig};

/// Drift detection: canary-vs-control tests, self-baseline change detection, cohort signals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    /// Family-wise false-`fail` budget of one deployment's canary lifetime, across all metrics
    /// and however often the tests are looked at.
    pub alpha: f64,
    /// Events per arm before a metric's verdict leaves `insufficient` (per-metric override:
    /// `metrics[].min_events`).
    pub min_events: u64,
    /// Expected share of a deployment's events on the canary arm, for the sample-ratio-mismatch
    /// check; unset disables the check (per-deployment override under `deployments`).
    pub canary_share: Option<f64>,
    /// Significance of the sample-ratio-mismatch test (anytime-valid).
    pub srm_alpha: f64,
    /// An arm with no event for this long (in event time, while the other arm keeps sending) is
    /// reported as `telemetry_absent`. Absent data never fails a canary by itself.
    #[serde(with = "humantime_serde")]
    pub absent_after: Duration,
    /// Verdicts of earlier canary versions kept per deployment for the audit trail.
    pub history: usize,
    /// Self-baseline change detection (CUSUM per cohort and metric).
    pub self_baseline: SelfBaselineConfig,
    /// Canary-vs-control tests per segment value (with `cohorts.segment_keys` set).
    pub segments: SegmentsConfig,
    /// Per-deployment overrides, keyed by deployment name.
    pub deployments: BTreeMap<String, DeploymentDetection>,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            alpha: 0.01,
            min_events: 300,
            canary_share: None,
            srm_alpha: 0.001,
            absent_after: Duration::from_secs(300),
            history: 20,
            self_baseline: SelfBaselineConfig::default(),
            segments: SegmentsConfig::default(),
            deployments: BTreeMap::new(),
        }
    }
}

/// Self-baseline settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfBaselineConfig {
    /// Run CUSUM change detection on every cohort.
    pub enabled: bool,
    /// Event time a cohort's reference is learned over before monitoring starts...
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// ...and the events it needs at least.
    pub warmup_events: u64,
    /// Expected time between false alarms per cohort and metric; with the cohort's observed
    /// event rate it sets the CUSUM threshold (`h = ln(rate × period)`).
    #[serde(with = "humantime_serde")]
    pub false_alarm_period: Duration,
    /// Verdict state an alarm of a canary cohort raises: `fail` (contain) or `warn` (look). A
    /// control cohort's alarm is always a `warn` (control degraded): it never fails a canary.
    pub on_alarm: AlarmState,
}

impl Default for SelfBaselineConfig {
    fn default() -> Self {
        SelfBaselineConfig {
            enabled: true,
            warmup: Duration::from_secs(120),
            warmup_events: 1000,
            false_alarm_period: Duration::from_secs(7 * 86_400),
            on_alarm: AlarmState::Fail,
        }
    }
}

/// The `[detection.segments]` settings: with `cohorts.segment_keys` set, each metric's
/// canary-vs-control test also compares the arms within each segment value (a locale, a
/// channel), inside the metric's share of the budget (`detect` explains how).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentsConfig {
    /// Segment values (combinations, with several keys) tested separately per deployment, in
    /// order of first appearance; later ones are counted, not tested alone (the totals still
    /// include them). It fixes the budget's split, so it must not follow the data. 0 turns
    /// segment tests off.
    pub max_tested: usize,
    /// Share `s` of each metric's budget spent on the segment tests (`1 − s` stays with the
    /// deployment-level test).
    pub share: f64,
}

impl Default for SegmentsConfig {
    fn default() -> Self {
        SegmentsConfig {
            max_tested: 16,
            share: 0.5,
        }
    }
}

/// The verdict a self-baseline alarm raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    /// Fail the metric (containment-worthy).
    Fail,
    /// Warn only.
    Warn,
}

/// Per-deployment detection overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploymentDetection {
    /// Expected canary share for this deployment.
    pub canary_share: Option<f64>,
}

impl DetectionConfig {
    /// The `[detection]` rules, then each metric's detection settings and the alpha budget they
    /// share. The absence timeout is judged against the bucket width, so it needs `windows`.
    pub(super) fn validate(
        &self,
        windows: &WindowConfig,
        metrics: &[MetricConfig],
    ) -> Result<(), ConfigError> {
        let prob = |x: f64| x > 0.0 && x < 1.0;
        if !prob(self.alpha) {
            return Err(invalid(
                "detection.alpha",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if !prob(self.srm_alpha) {
            return Err(invalid(
                "detection.srm_alpha",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if self.min_events < 10 {
            return Err(invalid(
                "detection.min_events",
                "must be at least 10 (the tests rely on the CLT)",
            ));
        }
        let share_ok = |s: Option<f64>| s.is_none_or(prob);
        if !share_ok(self.canary_share) {
            return Err(invalid(
                "detection.canary_share",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        for (name, o) in &self.deployments {
            if !share_ok(o.canary_share) {
                return Err(invalid(
                    format!("detection.deployments.{name}.canary_share"),
                    "must be between 0 and 1 (exclusive)",
                ));
            }
        }
        if self.absent_after < windows.bucket {
            return Err(invalid(
                "detection.absent_after",
                "must be at least one windows.bucket",
            ));
        }
        let sb = &self.self_baseline;
        if sb.warmup_events < 30 {
            return Err(invalid(
                "detection.self_baseline.warmup_events",
                "must be at least 30",
            ));
        }
        if sb.false_alarm_period < Duration::from_secs(60) {
            return Err(invalid(
                "detection.self_baseline.false_alarm_period",
                "must be at least 1m",
            ));
        }
        if self.segments.max_tested > 1024 {
            return Err(invalid(
                "detection.segments.max_tested",
                "must be at most 1024 (each tested value keeps a test per metric per deployment)",
            ));
        }
        if !prob(self.segments.share) {
            return Err(invalid(
                "detection.segments.share",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        let mut explicit = 0.0;
        for (n, m) in metrics.iter().enumerate() {
            let field = |f: &str| format!("metrics[{n}].{f}");
            if let Some(a) = m.alpha {
                if !prob(a) {
                    return Err(invalid(
                        field("alpha"),
                        "must be between 0 and 1 (exclusive)",
                    ));
                }
                explicit += a;
            }
            for (f, v) in [
                ("min_effect", m.min_effect),
                ("mixture_scale", m.mixture_scale),
                ("self_baseline_shift", m.self_baseline_shift),
            ] {
                if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                    return Err(invalid(field(f), "must be a positive number"));
                }
            }
            if m.kind != MetricKind::Score && m.min_effect() >= 1.0 {
                return Err(invalid(
                    field("min_effect"),
                    "a rate difference must be below 1",
                ));
            }
            if m.min_events.is_some_and(|e| e < 10) {
                return Err(invalid(field("min_events"), "must be at least 10"));
            }
        }
        let implicit = metrics.iter().filter(|m| m.alpha.is_none()).count();
        if explicit > self.alpha * (1.0 + 1e-9) || (implicit > 0 && explicit >= self.alpha) {
            return Err(invalid(
                "metrics[].alpha",
                format!(
                    "the per-metric alphas add up to {explicit}, leaving nothing of detection.alpha = {} for the rest",
                    self.alpha
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn alpha_budget_is_split_and_checked() {
        let c = Config::default();
        let alphas = c.metric_alphas();
        assert_eq!(alphas.len(), 4);
        assert!((alphas.iter().sum::<f64>() - 0.01).abs() < 1e-12);
        let err = Config::parse(
            "[detection]\nalpha = 0.01\n[[metrics]]\nname = \"r\"\nsignal = \"refused\"\nkind = \"rate\"\nworse = \"up\"\nalpha = 0.02\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("metrics[].alpha"), "{err}");
    }
}
