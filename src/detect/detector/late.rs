//! Late drift, canary against control: per (deployment, metric), a pair of one-sided CUSUMs
//! that compare each canary event with the control arm's running rate or mean.
//!
//! Owns [`Late`], the charts of one metric for the current canary version, and their
//! calibration. The sequential test weighs everything since the canary appeared, so a drift that
//! starts late is diluted by the good events before it; a CUSUM forgets them (it restarts at 0
//! whenever the evidence turns). The reference is the control arm (counted since the canary
//! appeared, as in the sequential test), not the canary's own warm-up, so a drift of both arms
//! is not evidence against the canary, and the reference keeps improving.
//!
//! Charts: log-likelihood-ratio CUSUMs tuned to `+2×` and `+5×` `min_effect` in the worse
//! direction (Bernoulli for rates, Gaussian with the control's sd for scores); the small shift is
//! the quick one for modest drift, the large one for a jump. Threshold: from the exact in-control
//! ARL (`arl`), at a budget of `arl0` canary events per false alarm per chart (the detector
//! splits the deployment's budget), **plus a margin for the still-noisy control reference**. The
//! chart compares the canary with `p̂`, the control's estimate, not with the true rate `p`; with
//! `p̂` below `p` (higher-is-worse) the chart's negative in-control drift moves towards zero and
//! its run length falls from exponential to polynomial in `h`. So the threshold is the exact one
//! for a canary whose true rate is `p̂ + Z·se` (the control `Z` standard errors better than it
//! really is, `se = √(p̂(1−p̂)/n_control)`, or `σ̂/√n_control` for scores), `Z` = 1.645: with
//! probability 95% over the control's sampling error the chart's conditional in-control ARL is at
//! least the budget (guaranteed conditional performance, as in Gandy & Kvaløy 2013, with the
//! normal approximation for the sampling distribution instead of a bootstrap). Averaging the
//! false-alarm *rate* over the sampling error instead is dominated by the few references that
//! are off by 3 standard errors or more and gives thresholds ten times Lorden's (`h ≈ 200` after
//! 1,000 control events): a chart that could never fire. The margin `h(p̂ + Z·se) − h(p̂)`
//! shrinks like `se ∝ 1/√n_control`: charts start once control has `min_control` events and are
//! recalibrated each time control's events double, each time with the standard error at the
//! calibration point (the largest until the next one); the reference itself is the running
//! estimate at every event. What this leaves of the budget is measured, not assumed (the
//! `late_false_alarms_per_week` test). Pure: no I/O, no clock.

use super::ab::{Subject, Test};
use super::Rule;
use crate::detect::arl::{self, Increments};
use crate::detect::verdict::{Source, Verdict, VerdictState};
use crate::event::{format_rfc3339_ms, Arm};
use crate::state::window::Moments;

/// The multiples of `min_effect` the two charts are tuned to.
pub(super) const MULTIPLES: [f64; 2] = [2.0, 5.0];

/// Standard errors the control reference is assumed off by, in the costly direction.
const Z: f64 = 1.645;

/// What a metric's charts need from config and the detector's budget split.
#[derive(Debug, Clone, Copy)]
pub(super) struct LateTuning {
    pub(super) binary: bool,
    pub(super) worse_up: bool,
    pub(super) min_effect: f64,
    /// Control events before the charts start.
    pub(super) min_control: u64,
    /// In-control run length per chart, in multiples of the canary's events per
    /// `false_alarm_period` (the detector's share of the deployment budget, see `detect`).
    pub(super) periods_per_alarm: f64,
    /// `false_alarm_period` in event-time milliseconds.
    pub(super) period_ms: f64,
}

/// One chart.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Chart {
    pub(super) statistic: f64,
    /// `None` until the first calibration.
    pub(super) threshold: Option<f64>,
    /// Canary values since the statistic last left 0 (the run the alarm is about).
    pub(super) run: Moments,
}

/// The late-drift charts of one metric for the current canary version.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Late {
    pub(super) charts: [Chart; 2],
    /// Control events at the last calibration (0: never).
    calibrated_at: u64,
    /// Event time of the first and latest canary event, for the canary's rate.
    first_ms: Option<i64>,
    last_ms: i64,
    canary_n: u64,
    /// The chart that alarmed (latched for the canary version).
    pub(super) alarmed: Option<usize>,
}

/// `log2(x)` in steps of `1/steps` octave, rounded by `round`.
fn quantise(x: f64, steps: f64, round: fn(f64) -> f64) -> i64 {
    round(x.max(1e-300).log2() * steps) as i64
}

fn dequantise(q: i64, steps: f64) -> f64 {
    (q as f64 / steps).exp2()
}

impl Late {
    /// Feeds one canary value at event time `t_ms`, `control` being the control arm's moments
    /// now. Returns the index of the chart when this value raised the alarm.
    pub(super) fn push(
        &mut self,
        t: &LateTuning,
        x: f64,
        control: &Moments,
        t_ms: i64,
    ) -> Option<usize> {
        self.first_ms = Some(self.first_ms.map_or(t_ms, |f| f.min(t_ms)));
        self.last_ms = self.last_ms.max(t_ms);
        self.canary_n += 1;
        if self.alarmed.is_some() || control.n < t.min_control.max(2) {
            return None;
        }
        if control.n >= 2 * self.calibrated_at.max(t.min_control.max(2) / 2) {
            self.calibrate(t, control);
        }
        let (reference, scale) = reference(t, control);
        for (i, chart) in self.charts.iter_mut().enumerate() {
            let Some(h) = chart.threshold else { continue };
            let inc = increment(t, i, x, reference, scale);
            chart.statistic = (chart.statistic + inc).max(0.0);
            if chart.statistic == 0.0 {
                chart.run = Moments::default();
            } else {
                chart.run.push(x);
            }
            if chart.statistic >= h {
                self.alarmed = Some(i);
                return Some(i);
            }
        }
        None
    }

    /// Sets both charts' thresholds for the control's current standard error and the canary's
    /// observed rate. Waits (keeps the old thresholds) while the canary's rate is unknown.
    fn calibrate(&mut self, t: &LateTuning, control: &Moments) {
        let Some(first) = self.first_ms else { return };
        let span = (self.last_ms - first) as f64;
        if span <= 0.0 || self.canary_n < 2 {
            return;
        }
        let rate_per_ms = (self.canary_n - 1) as f64 / span;
        let arl0 = rate_per_ms * t.period_ms * t.periods_per_alarm;
        // Quantised inputs (see `arl::memo`): the events down to a power of two (a larger
        // standard error), the budget up to a quarter octave (a longer ARL), the reference to a
        // 32nd of an octave (2%; not conservative either way, and far inside its own error).
        let n_key = quantise(control.n as f64, 1.0, f64::floor);
        let n = dequantise(n_key, 1.0);
        let arl_key = quantise(arl0, 4.0, f64::ceil);
        let arl0 = dequantise(arl_key, 4.0);
        let (reference, scale) = reference(t, control);
        for (i, chart) in self.charts.iter_mut().enumerate() {
            let shift = MULTIPLES[i] * t.min_effect;
            let h = if t.binary {
                let p_key = quantise(reference, 32.0, f64::round);
                let p = dequantise(p_key, 32.0).min(1.0 - 1e-6);
                let (signed, worse) = if t.worse_up {
                    (shift, 1.0)
                } else {
                    (-shift, -1.0)
                };
                let truth = (p + worse * Z * (p * (1.0 - p) / n).sqrt()).clamp(0.0, 1.0);
                let p1 = (p + signed).clamp(1e-6, 1.0 - 1e-6);
                let key = [0, p_key, signed.to_bits() as i64, n_key, arl_key, 0];
                arl::memo(key, || {
                    arl::threshold_for_arl(Increments::bernoulli(truth, p, p1), arl0)
                })
            } else {
                // In units of the control's sd the chart depends on the shift and n only.
                let d_key = quantise(shift / scale, 32.0, f64::round);
                let d = dequantise(d_key, 32.0);
                let key = [1, d_key, 0, n_key, arl_key, 0];
                arl::memo(key, || {
                    let inc = Increments::gaussian(Z / n.sqrt(), 1.0, 0.0, 1.0, d);
                    arl::threshold_for_arl(inc, arl0)
                })
            };
            chart.threshold = Some(h);
        }
        self.calibrated_at = control.n;
    }

    /// The alarmed chart's evidence: the canary's mean over the run that crossed, the events in
    /// it, the statistic and the threshold.
    pub(super) fn evidence(&self) -> Option<(f64, u64, f64, f64)> {
        let chart = &self.charts[self.alarmed?];
        Some((
            chart.run.mean()?,
            chart.run.n,
            chart.statistic,
            chart.threshold?,
        ))
    }
}

/// The verdict of a late-drift alarm: the canary's mean over the run that crossed (since the
/// chart last stood at 0) against the control's running mean, both arms' events, the chart's
/// statistic and threshold. No confidence bound: a CUSUM has none that would match its decision.
pub(super) fn verdict(
    subject: Subject,
    rule: &Rule,
    test: &Test,
    late: &Late,
    t_ms: i64,
    events_seen: u64,
) -> Verdict {
    let control = test.control.mean();
    let (canary, _, statistic, threshold) = late.evidence().unwrap_or((0.0, 0, 0.0, 0.0));
    Verdict {
        deployment: subject.0.to_string(),
        model_version: subject.1.unwrap_or_default().to_string(),
        metric: rule.name.clone(),
        source: Source::LateDrift,
        // Evidence against the canary relative to control, within the deployment's budget.
        state: VerdictState::Fail,
        at: format_rfc3339_ms(t_ms),
        events_seen,
        n_canary: test.canary.n,
        n_control: test.control.n,
        canary_value: Some(canary),
        control_value: control,
        estimate: control.map(|c| canary - c),
        ci_low: None,
        ci_high: None,
        p_value: None,
        statistic,
        threshold,
        min_effect: rule.min_effect,
        alpha: None,
        arm: Some(Arm::Canary),
        segment: None,
        reference: control,
    }
}

/// The log-likelihood-ratio increment of canary value `x` for chart `i`, against the control's
/// `reference` rate or mean (and sd `scale`, scores).
pub(super) fn increment(t: &LateTuning, i: usize, x: f64, reference: f64, scale: f64) -> f64 {
    let shift = MULTIPLES[i] * t.min_effect * if t.worse_up { 1.0 } else { -1.0 };
    if t.binary {
        let p0 = reference;
        let p1 = (p0 + shift).clamp(1e-6, 1.0 - 1e-6);
        if x >= 0.5 {
            (p1 / p0).ln()
        } else {
            ((1.0 - p1) / (1.0 - p0)).ln()
        }
    } else {
        shift / (scale * scale) * (x - reference - shift / 2.0)
    }
}

/// The control's running rate (with the same half-event prior as the sequential test) or mean,
/// and its sd (scores; 1 for rates).
pub(super) fn reference(t: &LateTuning, control: &Moments) -> (f64, f64) {
    let n = control.n as f64;
    if t.binary {
        (
            ((control.sum + 0.5) / (n + 1.0)).clamp(1e-6, 1.0 - 1e-6),
            1.0,
        )
    } else {
        let mean = control.sum / n.max(1.0);
        let var = (control.sumsq - control.sum * mean) / (n - 1.0).max(1.0);
        (mean, var.max(1e-6).sqrt())
    }
}

#[cfg(test)]
mod tests;
