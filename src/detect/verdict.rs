//! The verdict types: what detection tells the rest of driftd.
//!
//! Owns the shared vocabulary of detection output — [`State`], [`Verdict`], [`Signal`],
//! [`Change`] and the per-deployment [`DeploymentView`] — consumed by the pipeline, metrics, the
//! admin API, containment and replay. Their serialized form is the replay output and the
//! `/v1/verdicts` body, so field names are part of the interface. Plain data: no detection logic.

use serde::{Deserialize, Serialize};

use crate::event::Arm;

/// A verdict state. Ordered by severity.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum VerdictState {
    /// Not enough events per arm to say anything.
    #[default]
    Insufficient,
    /// Enough events, no sign of harm.
    Pass,
    /// Evidence of harm building up, not conclusive.
    Warn,
    /// Significant harm beyond the effect floor.
    Fail,
}

impl VerdictState {
    /// All states, for metric labels.
    pub const ALL: [VerdictState; 4] = [
        VerdictState::Insufficient,
        VerdictState::Pass,
        VerdictState::Warn,
        VerdictState::Fail,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictState::Insufficient => "insufficient",
            VerdictState::Pass => "pass",
            VerdictState::Warn => "warn",
            VerdictState::Fail => "fail",
        }
    }
}

/// Which detector produced a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The anytime-valid canary-vs-control test.
    CanaryVsControl,
    /// A cohort's CUSUM against its own warm-up reference.
    SelfBaseline,
    /// The late-drift CUSUMs: each canary event against the control's running rate or mean.
    LateDrift,
}

impl Source {
    /// All sources, for metric labels.
    pub const ALL: [Source; 3] = [
        Source::CanaryVsControl,
        Source::SelfBaseline,
        Source::LateDrift,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::CanaryVsControl => "canary_vs_control",
            Source::SelfBaseline => "self_baseline",
            Source::LateDrift => "late_drift",
        }
    }
}

/// A verdict with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Deployment.
    pub deployment: String,
    /// The canary model version under test.
    pub model_version: String,
    /// Metric name.
    pub metric: String,
    /// Which detector.
    pub source: Source,
    /// The state.
    pub state: VerdictState,
    /// Event time of the evaluation (RFC 3339).
    pub at: String,
    /// Events applied by the pipeline so far.
    pub events_seen: u64,
    /// Canary events in the test.
    pub n_canary: u64,
    /// Control events in the test.
    pub n_control: u64,
    /// Canary mean (rate or score).
    pub canary_value: Option<f64>,
    /// Control mean (rate or score).
    pub control_value: Option<f64>,
    /// Difference canary − control (canary vs control; late drift: the canary's mean since the
    /// alarming chart last stood at 0 − the control's running mean), or the cohort's mean
    /// since its chart last stood at 0 (self-baseline; absent while it stands at 0).
    pub estimate: Option<f64>,
    /// Lower confidence-sequence bound of the difference, one-sided at `alpha` (canary vs
    /// control; absent until both arms have `min_events`). On the harmful side (higher is
    /// worse) it inverts the test that decides: it is ≥ 0 exactly when `p_value ≤ alpha`.
    pub ci_low: Option<f64>,
    /// Upper confidence-sequence bound of the difference, one-sided at `alpha`; the harmful
    /// side when lower is worse (≤ 0 exactly when `p_value ≤ alpha`).
    pub ci_high: Option<f64>,
    /// Always-valid p-value (canary vs control).
    pub p_value: Option<f64>,
    /// Test statistic: `ln Λ⁺` or the CUSUM statistic.
    pub statistic: f64,
    /// The threshold the statistic is compared with: `ln(1/αₘ)` or the CUSUM `h`.
    pub threshold: f64,
    /// The effect floor.
    pub min_effect: f64,
    /// The metric's share of the error budget (canary vs control).
    pub alpha: Option<f64>,
    /// Self-baseline: the arm of the cohort that alarmed.
    pub arm: Option<Arm>,
    /// Self-baseline: the segment of the cohort that alarmed. Canary vs control with segment
    /// tests on (`cohorts.segment_keys`): the tested segment value that drives the verdict,
    /// whose estimate, counts, means and bounds the fields above then are (none: the
    /// deployment's totals). Values as cohorts render them (comma-separated).
    pub segment: Option<String>,
    /// Self-baseline: the learned reference value; late drift: the control's running value.
    pub reference: Option<f64>,
}

impl Verdict {
    /// One line for people (incident reasons, alerts): metric, source, state, events per arm,
    /// the estimate to four decimals and the p-value in scientific notation; `n/a` where the
    /// detector has none; a control cohort's self-baseline alarm says "control degraded".
    pub fn headline(&self) -> String {
        let estimate = self
            .estimate
            .map_or_else(|| "n/a".to_string(), |e| format!("{e:.4}"));
        let p = self
            .p_value
            .map_or_else(|| "n/a".to_string(), |p| format!("{p:.2e}"));
        let control = if self.source == Source::SelfBaseline && self.arm == Some(Arm::Control) {
            ", control degraded"
        } else {
            ""
        };
        format!(
            "{} {} {}{control} (n {}/{}, estimate {estimate}, p {p})",
            self.metric,
            self.source.as_str(),
            self.state.as_str(),
            self.n_canary,
            self.n_control,
        )
    }
}

/// Kinds of cohort-level signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// The arms' event split differs from the configured canary share.
    SampleRatioMismatch,
    /// One arm stopped sending while the other goes on.
    TelemetryAbsent,
    /// Events of the deployment are folded into the overflow cohort (`cohorts.max_cohorts`
    /// reached): they are counted but not judged.
    CohortOverflow,
}

impl SignalKind {
    /// All kinds, for metric labels.
    pub const ALL: [SignalKind; 3] = [
        SignalKind::SampleRatioMismatch,
        SignalKind::TelemetryAbsent,
        SignalKind::CohortOverflow,
    ];

    /// The label value, as in metrics, audit records and incident ids.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::SampleRatioMismatch => "sample_ratio_mismatch",
            SignalKind::TelemetryAbsent => "telemetry_absent",
            SignalKind::CohortOverflow => "cohort_overflow",
        }
    }
}

/// A cohort-level signal (raised or cleared).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Which signal.
    pub kind: SignalKind,
    /// Deployment.
    pub deployment: String,
    /// Current canary version.
    pub model_version: String,
    /// The silent arm (telemetry_absent); the arm of the folded event (cohort_overflow).
    pub arm: Option<Arm>,
    /// Raised (true) or cleared (false).
    pub active: bool,
    /// Event time (RFC 3339).
    pub at: String,
    /// Events applied by the pipeline so far.
    pub events_seen: u64,
    /// Canary events in the current test.
    pub n_canary: u64,
    /// Control events in the current test.
    pub n_control: u64,
    /// Configured canary share (SRM).
    pub expected_share: Option<f64>,
    /// Observed canary share.
    pub observed_share: Option<f64>,
    /// SRM: `ln Λ`; absent: seconds of silence; overflow: deployments with the signal raised.
    pub statistic: f64,
    /// SRM: `ln(1/srm_alpha)`; absent: `absent_after` in seconds; overflow: `max_cohorts`.
    pub threshold: f64,
}

/// A verdict change or a signal change, in the order they happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// A verdict changed state.
    Verdict(Verdict),
    /// A signal was raised or cleared.
    Signal(Signal),
}

/// One deployment's detection state, for the admin API and metrics; also what an owner shares
/// with the other replicas through the latch topic (hence `Deserialize`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentView {
    /// Deployment.
    pub deployment: String,
    /// The canary version under test.
    pub canary_version: Option<String>,
    /// Per metric.
    pub metrics: Vec<MetricVerdicts>,
    /// True once the arms' split was found to differ from the configured share.
    pub sample_ratio_mismatch: bool,
    /// The SRM evidence, when a canary share is configured.
    pub srm: Option<Signal>,
    /// Arms currently silent.
    pub telemetry_absent: Vec<Arm>,
    /// Verdicts of earlier canary versions.
    pub history: Vec<Verdict>,
    /// The segment values tested separately, when segment tests are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<SegmentsView>,
}

/// Which segment values a deployment's canary-vs-control tests compare separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentsView {
    /// `detection.segments.max_tested`.
    pub max_tested: usize,
    /// The values with a test of their own, in order of first appearance.
    pub tested: Vec<String>,
    /// Events of the current test (canary, control) of values past `max_tested`: in the
    /// deployment's totals, not tested alone.
    pub untested_events: [u64; 2],
}

/// One metric's verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricVerdicts {
    /// Metric name.
    pub metric: String,
    /// The worst of the sources.
    pub state: VerdictState,
    /// The canary-vs-control test.
    pub canary_vs_control: Verdict,
    /// The latest self-baseline alarm for the current canary version, if any.
    pub self_baseline: Option<Verdict>,
    /// The self-baseline CUSUM of the canary's cohorts that stands nearest its threshold now
    /// (statistic, threshold, the cohort's mean and reference; state `pass` until it alarms),
    /// once one has learned its reference: what the on-call page draws over time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_baseline_watch: Option<Verdict>,
    /// The late-drift alarm for the current canary version, if any (always a `fail`).
    pub late_drift: Option<Verdict>,
}

/// The verdict and view the tests of every module start from, changing what they test.
#[cfg(test)]
impl Verdict {
    /// `svc`'s refusal at canary version `v1`, failed canary against control: 5 events per
    /// arm, estimate 0.05 at p 0.001, statistic 7 past threshold 6.
    pub(crate) fn example() -> Verdict {
        Verdict {
            deployment: "svc".into(),
            model_version: "v1".into(),
            metric: "refusal".into(),
            source: Source::CanaryVsControl,
            state: VerdictState::Fail,
            at: "2026-11-29T05:00:00.000Z".into(),
            events_seen: 10,
            n_canary: 5,
            n_control: 5,
            canary_value: None,
            control_value: None,
            estimate: Some(0.05),
            ci_low: None,
            ci_high: None,
            p_value: Some(0.001),
            statistic: 7.0,
            threshold: 6.0,
            min_effect: 0.01,
            alpha: Some(0.0025),
            arm: None,
            segment: None,
            reference: None,
        }
    }
}

#[cfg(test)]
impl DeploymentView {
    /// The view of `v`'s deployment and canary version with `v` as its one metric's
    /// canary-vs-control verdict, and nothing else raised.
    pub(crate) fn of(v: Verdict) -> DeploymentView {
        DeploymentView {
            deployment: v.deployment.clone(),
            canary_version: Some(v.model_version.clone()),
            metrics: vec![MetricVerdicts {
                metric: v.metric.clone(),
                state: v.state,
                canary_vs_control: v,
                self_baseline: None,
                self_baseline_watch: None,
                late_drift: None,
            }],
            sample_ratio_mismatch: false,
            srm: None,
            telemetry_absent: Vec::new(),
            history: Vec::new(),
            segments: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(estimate: Option<f64>, p_value: Option<f64>) -> Verdict {
        Verdict {
            deployment: "svc".into(),
            model_version: "v1".into(),
            metric: "tone".into(),
            source: Source::SelfBaseline,
            state: VerdictState::Fail,
            at: "2026-11-29T05:00:00.000Z".into(),
            events_seen: 24_000,
            n_canary: 11_965,
            n_control: 12_180,
            canary_value: None,
            control_value: None,
            estimate,
            ci_low: None,
            ci_high: None,
            p_value,
            statistic: 19.7,
            threshold: 19.5,
            min_effect: 0.05,
            alpha: None,
            arm: None,
            segment: None,
            reference: None,
        }
    }

    /// Regression: incident reasons (shown in alerts and the demo) printed `Some(0.2987…)` and
    /// `None`, the debug forms of the evidence.
    #[test]
    fn headline_reads_as_text_not_debug_forms() {
        assert_eq!(
            verdict(Some(0.298_728_536_897_484_13), None).headline(),
            "tone self_baseline fail (n 11965/12180, estimate 0.2987, p n/a)"
        );
        assert_eq!(
            verdict(Some(-0.0606), Some(0.002_4)).headline(),
            "tone self_baseline fail (n 11965/12180, estimate -0.0606, p 2.40e-3)"
        );
    }

    #[test]
    fn a_control_alarm_reads_as_control_degraded() {
        let v = Verdict {
            state: VerdictState::Warn,
            arm: Some(Arm::Control),
            ..verdict(Some(0.12), None)
        };
        assert_eq!(
            v.headline(),
            "tone self_baseline warn, control degraded (n 11965/12180, estimate 0.1200, p n/a)"
        );
    }
}
