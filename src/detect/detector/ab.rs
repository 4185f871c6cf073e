//! One metric's canary-vs-control test: its state, the per-event decision and the verdict with
//! the confidence bounds of the statistic that made the decision.
//!
//! Owns [`Test`] (the moments of both arms, the running always-valid p-value and where it was
//! reached) and the two functions that read it: [`next_state`] on the hot path (no confidence
//! bounds, no root finding) and [`ab_verdict`] when a verdict is published. Must not do I/O or
//! read the clock.

use super::super::sequential::{self, evaluate};
use super::super::verdict::{Source, Verdict, VerdictState};
use super::Rule;
use crate::event::format_rfc3339_ms;
use crate::state::window::Moments;

/// The difference and its variance at one moment of a test.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Point {
    /// `mean(canary) − mean(control)`.
    pub(super) estimate: f64,
    /// Its plug-in variance.
    pub(super) variance: f64,
}

/// One metric's canary-vs-control test for the current canary version.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Test {
    pub(super) canary: Moments,
    pub(super) control: Moments,
    /// Running minimum of the always-valid p-value (over times with enough events).
    pub(super) p_value: f64,
    /// Where `p_value` was reached: the harmful-side confidence bound there excludes 0 exactly
    /// when `p_value ≤ αₘ`, so the reported bound always agrees with the decision.
    pub(super) strongest: Option<Point>,
    pub(super) state: VerdictState,
}

/// One test per metric, none with any evidence yet (p-value 1).
pub(super) fn fresh_tests(metrics: usize) -> Vec<Test> {
    let fresh = Test {
        p_value: 1.0,
        ..Test::default()
    };
    vec![fresh; metrics]
}

/// The state of `test` when it needs no arithmetic: failed already (latched), or without
/// `min_events` on either arm. Most events of a failed canary, and the first of every canary,
/// cost nothing then.
pub(super) fn settled(rule: &Rule, test: &Test) -> Option<VerdictState> {
    if test.state == VerdictState::Fail {
        return Some(VerdictState::Fail);
    }
    if test.canary.n < rule.min_events || test.control.n < rule.min_events {
        return Some(VerdictState::Insufficient);
    }
    None
}

/// The state of `test` after its latest event, updating its running p-value: the hot path's
/// decision, without the confidence bounds.
pub(super) fn next_state(rule: &Rule, test: &mut Test) -> VerdictState {
    if let Some(state) = settled(rule, test) {
        return state;
    }
    let (estimate, variance, log_lr) = sequential::worse_log_lr(
        &test.canary,
        &test.control,
        rule.binary,
        rule.worse_up,
        rule.tau,
    );
    let p = (-log_lr).exp().min(1.0);
    if p < test.p_value {
        test.p_value = p;
        test.strongest = Some(Point { estimate, variance });
    }
    let worse = if rule.worse_up { estimate } else { -estimate };
    decide(rule, test, log_lr, worse)
}

/// The state from the running p-value of `test`, the current `ln` evidence `log_lr` and the
/// worse-direction estimate `worse` that the `min_effect` rule reads: one rule for the
/// deployment-level test and the combined one with segments.
pub(super) fn decide(rule: &Rule, test: &Test, log_lr: f64, worse: f64) -> VerdictState {
    let threshold = (1.0 / rule.alpha).ln();
    if test.p_value <= rule.alpha && worse >= rule.min_effect {
        VerdictState::Fail
    } else if (log_lr >= threshold / 2.0 && worse >= rule.min_effect) || test.p_value <= rule.alpha
    {
        VerdictState::Warn
    } else if test.state == VerdictState::Warn
        && log_lr >= threshold / 4.0
        && worse >= rule.min_effect / 2.0
    {
        // Hysteresis: a warning ends when the evidence has clearly fallen back, not on the
        // first event that dips under the line (that would flap alerts).
        VerdictState::Warn
    } else {
        VerdictState::Pass
    }
}

/// Where a verdict belongs: deployment name and canary version.
pub(super) struct Subject<'a>(pub(super) &'a str, pub(super) Option<&'a str>);

/// The reported bounds `(ci_low, ci_high)` of the difference: both one-sided at `αₘ` from the
/// test's discrete mixture, the harmful one the inversion of the test itself. It is the tighter of
/// now and the moment of the smallest p-value (a time-uniform sequence may be intersected over
/// time), so it excludes 0 exactly when `p ≤ αₘ`; where rounding at the critical value could
/// put it on the other side of 0, the test's own comparison decides. The other side is the
/// mirror-image mixture's bound (together at least `1 − 2αₘ` coverage). None before the test has
/// looked (`min_events` per arm): a bound there would speak where the verdict does not.
fn bounds(rule: &Rule, test: &Test, ev: &sequential::Evidence) -> (Option<f64>, Option<f64>) {
    if test.state == VerdictState::Insufficient || !ev.variance.is_finite() {
        return (None, None);
    }
    let sign = if rule.worse_up { 1.0 } else { -1.0 };
    let now = sign * ev.estimate - (ev.ci_high - ev.estimate);
    let then = test.strongest.map_or(f64::NEG_INFINITY, |p| {
        sign * p.estimate - sequential::critical_value(p.variance, rule.tau, rule.alpha)
    });
    let mut harmful = now.max(then);
    if test.p_value <= rule.alpha {
        harmful = harmful.max(0.0);
    } else if harmful >= 0.0 {
        harmful = -f64::MIN_POSITIVE;
    }
    // The other side is the current bound, widened (so still valid) to the harmful one in the
    // rare case they cross: an earlier strong effect that has since reversed, which no constant
    // difference fits.
    if rule.worse_up {
        (Some(harmful), Some(ev.ci_high.max(harmful)))
    } else {
        (Some(ev.ci_low.min(-harmful)), Some(-harmful))
    }
}

/// The canary-vs-control verdict of `test` with its full evidence, confidence bounds included:
/// the one place the test is evaluated for a verdict (the hot path decides with the cheaper
/// [`next_state`] and calls this only when the state changes).
pub(super) fn ab_verdict(
    subject: Subject<'_>,
    rule: &Rule,
    test: &Test,
    t_ms: i64,
    events_seen: u64,
) -> Verdict {
    let ev = evaluate(
        &test.canary,
        &test.control,
        rule.binary,
        rule.worse_up,
        rule.tau,
        rule.alpha,
    );
    let (ci_low, ci_high) = bounds(rule, test, &ev);
    Verdict {
        deployment: subject.0.to_string(),
        model_version: subject.1.unwrap_or_default().to_string(),
        metric: rule.name.clone(),
        source: Source::CanaryVsControl,
        state: test.state,
        at: format_rfc3339_ms(t_ms),
        events_seen,
        n_canary: test.canary.n,
        n_control: test.control.n,
        canary_value: test.canary.mean(),
        control_value: test.control.mean(),
        estimate: (test.canary.n > 0 && test.control.n > 0).then_some(ev.estimate),
        ci_low,
        ci_high,
        p_value: Some(test.p_value),
        statistic: ev.log_lr,
        threshold: (1.0 / rule.alpha).ln(),
        min_effect: rule.min_effect,
        alpha: Some(rule.alpha),
        arm: None,
        segment: None,
        reference: None,
    }
}

#[cfg(test)]
mod tests;
