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
//! splits the deployment's budget, in events: no rate estimate), **plus a margin for the
//! still-noisy control reference** (`cusum::noisy_reference_threshold`). The
//! chart compares the canary with `p̂`, the control's estimate, not with the true rate `p`; with
//! `p̂` below `p` (higher-is-worse) the chart's negative in-control drift moves towards zero and
//! its run length falls from exponential to polynomial in `h`. So the threshold is the exact one
//! for a canary whose true rate is `p̂ + z·se` (the control `z` standard errors better than it
//! really is, `se = √(p̂(1−p̂)/n_control)`, or `σ̂/√n_control` for scores). While control is short
//! (up to 8,000 events) `z` = 1.645: with probability 95% over the control's sampling error the
//! chart's conditional in-control ARL is at least the budget (guaranteed conditional
//! performance, as in Gandy & Kvaløy 2013, with the normal approximation for the sampling
//! distribution instead of a bootstrap). Averaging the false-alarm *rate* over the sampling
//! error instead is dominated by the few references that are off by 3 standard errors or more
//! and gives thresholds ten times Lorden's (`h ≈ 200` after 1,000 control events): a chart that
//! could never fire. Past 8,000 control events `z` shrinks as `1.645·√(8000/n)` ([`Margin`]), so
//! the margin itself shrinks like `1/n` instead of `1/√n`. That is a choice, not a bound: a late
//! drift is where the margin costs most (at 25,000 control events the 1.645 margin adds 28% to
//! the 2× chart's threshold, and 40% to its delay on a late 5% → 7%), while the in-control
//! charts spent little of their budget (0.28 false alarms a week per deployment of late drift's
//! 0.77 at 100 events/s with a constant 1.645). The price is paid from the late-drift share of
//! the budget and measured, not assumed: 0.72 ± 0.17 a week over 25 weeks with this margin
//! (the `late_false_alarms_per_week` test; `late_margin_sweep`: shrinking from 4,000 events
//! instead cost 1.00 ± 0.20, over the share). Charts start once control has
//! `min_control` events and are recalibrated each time control's events grow by an eighth of an
//! octave (×1.09), each time with the standard error at the calibration point (the largest until
//! the next one); a chart whose margin reaches half its shift (the 2× chart at 1,000 control
//! events) waits for the next step. The reference itself is the running estimate at every
//! event. Pure: no I/O, no clock.

use super::ab::{Subject, Test};
use super::Rule;
use crate::detect::cusum::{noisy_reference_threshold, Z};
use crate::detect::verdict::{Source, Verdict, VerdictState};
use crate::event::{format_rfc3339_ms, Arm};
use crate::state::window::Moments;

/// The multiples of `min_effect` the two charts are tuned to.
pub(super) const MULTIPLES: [f64; 2] = [2.0, 5.0];

/// What a metric's charts need from config and the detector's budget split.
#[derive(Debug, Clone, Copy)]
pub(super) struct LateTuning {
    pub(super) binary: bool,
    pub(super) worse_up: bool,
    pub(super) min_effect: f64,
    /// Control events before the charts start.
    pub(super) min_control: u64,
    /// In-control run length per chart, in canary events: the chart's share of the
    /// deployment's chart budget (see `detect`).
    pub(super) arl0: f64,
    /// The margin for control's noise.
    pub(super) margin: Margin,
}

/// The margin for the control reference's noise, in its standard errors, at `n` control
/// events: `z` up to `until` events, then `z·√(until/n)`, so the margin itself shrinks like
/// `1/n` rather than the standard error's `1/√n`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Margin {
    pub(super) z: f64,
    pub(super) until: f64,
}

impl Margin {
    /// Standard errors at `n` control events.
    pub(super) fn at(&self, n: f64) -> f64 {
        self.z * (self.until / n.max(1.0)).min(1.0).sqrt()
    }
}

/// The default margin: `Z` = 1.645 standard errors up to 8,000 control events, then shrinking
/// (see the module doc and `late_margin_sweep` for why 8,000).
pub(super) const MARGIN: Margin = Margin {
    z: Z,
    until: 8000.0,
};

/// One chart.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Chart {
    pub(super) statistic: f64,
    /// `None` until the first calibration that keeps the budget.
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
    /// The chart that alarmed (latched for the canary version).
    pub(super) alarmed: Option<usize>,
}

/// Recalibration steps: each time control's events grow by this factor (`2^(1/8)`, the grid
/// `noisy_reference_threshold` rounds counts down to), so the margin follows the standard error
/// closely without a calibration per event.
const STEP: f64 = 1.090_507_732_665_258;

impl Late {
    /// Feeds one canary value, `control` being the control arm's moments now. Returns the
    /// index of the chart when this value raised the alarm.
    pub(super) fn push(&mut self, t: &LateTuning, x: f64, control: &Moments) -> Option<usize> {
        if self.alarmed.is_some() || control.n < t.min_control.max(2) {
            return None;
        }
        if self.calibrated_at == 0 || control.n as f64 >= STEP * self.calibrated_at as f64 {
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

    /// Sets both charts' thresholds for the control's current standard error. A chart whose
    /// margin leaves no threshold that keeps the budget (the 2× chart while control is short)
    /// keeps waiting, or keeps its previous threshold.
    fn calibrate(&mut self, t: &LateTuning, control: &Moments) {
        let (reference, scale) = reference(t, control);
        for (i, chart) in self.charts.iter_mut().enumerate() {
            let shift = MULTIPLES[i] * t.min_effect;
            let shift = if t.binary { shift } else { shift / scale };
            let z = |n: f64| t.margin.at(n);
            let h = noisy_reference_threshold(
                t.binary,
                t.worse_up,
                reference,
                shift,
                (control.n, &z),
                t.arl0,
            );
            if h.is_some() {
                chart.threshold = h;
            }
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
