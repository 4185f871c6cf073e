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
    /// and every detector that can fail a canary, however often the tests are looked at.
    pub alpha: f64,
    /// Share of `alpha` spent by the CUSUM charts that can fail a canary (late drift and the
    /// canary cohorts' self-baseline); the canary-vs-control tests split the rest. Ignored (the
    /// tests get all of `alpha`) when no chart can fail a canary.
    pub chart_share: f64,
    /// Canary events of the lifetime the charts' share is set for: the deployment's charts
    /// together have an in-control run length of `lifetime_events / (alpha × chart_share)`
    /// canary events. A longer lifetime spends proportionally more.
    pub lifetime_events: u64,
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
    /// Late drift: CUSUMs of the canary against the control's running rate or mean.
    pub late_drift: LateDriftConfig,
    /// Canary-vs-control tests per segment value (with `cohorts.segment_keys` set).
    pub segments: SegmentsConfig,
    /// Per-deployment overrides, keyed by deployment name.
    pub deployments: BTreeMap<String, DeploymentDetection>,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            alpha: 0.01,
            chart_share: 0.08,
            lifetime_events: 50_000,
            min_events: 300,
            canary_share: None,
            srm_alpha: 0.001,
            absent_after: Duration::from_secs(300),
            history: 20,
            self_baseline: SelfBaselineConfig::default(),
            late_drift: LateDriftConfig::default(),
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
    /// Removed: the warm-up is set in events only (`warmup_events`), so that it cannot learn
    /// from drifted data; a config that still sets it is refused.
    #[serde(skip_serializing)]
    pub warmup: Option<serde::de::IgnoredAny>,
    /// Events a cohort's reference is learned from before monitoring starts.
    pub warmup_events: u64,
    /// Expected time between false "control degraded" warnings per deployment, across its
    /// control cohorts and metrics (each chart's share at the cohort's warm-up event rate).
    /// Control alarms never fail a canary, so they are budgeted apart from `alpha`; canary
    /// cohorts' charts spend from `alpha` (`chart_share`).
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
            warmup: None,
            warmup_events: 5000,
            false_alarm_period: Duration::from_secs(7 * 86_400),
            on_alarm: AlarmState::Fail,
        }
    }
}

/// Late-drift settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LateDriftConfig {
    /// Run the late-drift CUSUMs (two per metric, tuned to 2× and 5× `min_effect`); an alarm
    /// fails the canary.
    pub enabled: bool,
    /// Control events (since the canary appeared) before the charts start; their thresholds
    /// carry a margin for the control reference's noise that shrinks as control accumulates.
    pub min_control_events: u64,
}

impl Default for LateDriftConfig {
    fn default() -> Self {
        LateDriftConfig {
            enabled: true,
            min_control_events: 1000,
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
    /// The share of `alpha` the charts spend: `chart_share` when a chart can fail a canary
    /// (late drift on, or the self-baseline on with `on_alarm = "fail"`), else 0.
    pub fn charts_share(&self) -> f64 {
        let sb = &self.self_baseline;
        let fails = self.late_drift.enabled || (sb.enabled && sb.on_alarm == AlarmState::Fail);
        if fails {
            self.chart_share
        } else {
            0.0
        }
    }

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
        if !prob(self.chart_share) {
            return Err(invalid(
                "detection.chart_share",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if self.lifetime_events < 1000 {
            return Err(invalid(
                "detection.lifetime_events",
                "must be at least 1000 canary events",
            ));
        }
        let sb = &self.self_baseline;
        if sb.warmup.is_some() {
            return Err(invalid(
                "detection.self_baseline.warmup",
                "was removed: the warm-up is set in events only, so it cannot learn from drifted data; set detection.self_baseline.warmup_events instead",
            ));
        }
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
        if self.late_drift.min_control_events < 100 {
            return Err(invalid(
                "detection.late_drift.min_control_events",
                "must be at least 100 (below that the reference is too noisy to chart against)",
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
        let tests = self.alpha * (1.0 - self.charts_share());
        if explicit > tests * (1.0 + 1e-9) || (implicit > 0 && explicit >= tests) {
            return Err(invalid(
                "metrics[].alpha",
                format!(
                    "the per-metric alphas add up to {explicit}, more than the {tests} the canary-vs-control tests have of detection.alpha = {} (detection.chart_share = {} goes to the charts)",
                    self.alpha, self.chart_share
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
        // The charts spend `chart_share` of α; the tests split the rest.
        assert!((alphas.iter().sum::<f64>() - 0.01 * 0.92).abs() < 1e-12);
        let err = Config::parse(
            "[detection]\nalpha = 0.01\n[[metrics]]\nname = \"r\"\nsignal = \"refused\"\nkind = \"rate\"\nworse = \"up\"\nalpha = 0.02\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("metrics[].alpha"), "{err}");
        let mut c = Config::default();
        c.detection.late_drift.enabled = false;
        c.detection.self_baseline.on_alarm = super::AlarmState::Warn;
        let sum: f64 = c.metric_alphas().iter().sum();
        assert!(
            (sum - 0.01).abs() < 1e-12,
            "no chart can fail: the tests get all of α"
        );
    }

    #[test]
    fn removed_warmup_is_refused_naming_its_replacement() {
        let err = Config::parse("[detection.self_baseline]\nwarmup = \"2m\"\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("detection.self_baseline.warmup") && text.contains("warmup_events"),
            "{text}"
        );
    }
}
