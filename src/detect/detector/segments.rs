//! Canary-vs-control tests per segment value (a locale, a channel), folded into each metric's
//! deployment-level test so that a drift in one segment is not diluted in the totals, under the
//! metric's unchanged budget `αₘ`.
//!
//! Owns [`Segments`]: per deployment, the segment values tested (a slot each, on first
//! appearance, at most `detection.segments.max_tested` = K) and, per metric and slot, both arms'
//! moments and the segment's mixture likelihood ratio `Λ_k` (prior
//! [`SEGMENT_GRID`](crate::detect::sequential::SEGMENT_GRID)). A metric's evidence is
//! `E = (1 − s)·Λ_dep + (s/K)·Σ_k Λ_k` over all K slots (an empty slot, or one below
//! `min_events` per arm, counts `Λ_k = 1`): fixed weights summing to 1, so under the null `E`
//! is a nonnegative (super)martingale with mean at most 1 and Ville's inequality keeps
//! `P(sup E ≥ 1/αₘ) ≤ αₘ`. The hot path ([`next_state`]) and the verdict ([`verdict`]) read
//! it; the reported bounds invert `E` itself for the component that drives it. Must not do
//! I/O or read the clock.

use serde::{Deserialize, Serialize};

use super::ab::{ab_verdict, decide, Subject, Test};
use super::Rule;
use crate::detect::sequential::{self, GRID, SEGMENT_GRID};
use crate::detect::verdict::{SegmentsView, Verdict, VerdictState};
use crate::state::window::Moments;

/// One segment value's arms for one metric.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Arms {
    canary: Moments,
    control: Moments,
    /// `Λ_k`, 1 until both arms have `min_events` (no evidence yet); capped at `f64::MAX`.
    lr: f64,
}

impl Arms {
    const FRESH: Arms = Arms {
        canary: Moments {
            n: 0,
            sum: 0.0,
            sumsq: 0.0,
        },
        control: Moments {
            n: 0,
            sum: 0.0,
            sumsq: 0.0,
        },
        lr: 1.0,
    };

    fn looked(&self, rule: &Rule) -> bool {
        self.canary.n >= rule.min_events && self.control.n >= rule.min_events
    }
}

/// The moment of a metric's smallest combined p-value: which component drove `E` there, its
/// difference and variance, and the rest of `E` (the other components' weighted terms), which
/// the bound needs to invert `E` at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Strongest {
    /// `None`: the deployment-level test; `Some(k)`: slot `k`.
    component: Option<usize>,
    estimate: f64,
    variance: f64,
    rest: f64,
}

/// One deployment's segment tests for its current canary version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Segments {
    /// K: fixes the weights; never the number of values seen (weights that follow the data
    /// would break the martingale).
    max_tested: usize,
    /// `s`, the segments' share of the metric's budget.
    share: f64,
    /// The tested values' labels (as cohorts render them), in order of first appearance; kept
    /// across canary versions.
    labels: Vec<String>,
    /// Per metric, per slot.
    arms: Vec<Vec<Arms>>,
    /// Per metric.
    strongest: Vec<Option<Strongest>>,
    /// Events in the current test (canary, control) whose segment value has no slot.
    untested: [u64; 2],
}

impl Segments {
    /// No value tested yet, for `metrics` metrics.
    pub(super) fn new(max_tested: usize, share: f64, metrics: usize) -> Segments {
        Segments {
            max_tested,
            share,
            labels: Vec::new(),
            arms: vec![Vec::new(); metrics],
            strongest: vec![None; metrics],
            untested: [0; 2],
        }
    }

    /// True when these tests were made with this K, share and number of metrics.
    pub(super) fn fits(&self, max_tested: usize, share: f64, metrics: usize) -> bool {
        self.max_tested == max_tested
            && self.share == share
            && self.labels.len() <= max_tested
            && self.arms.len() == metrics
            && self.strongest.len() == metrics
            && self.arms.iter().all(|a| a.len() == self.labels.len())
    }

    /// The slot of segment value `label`, given one if it is new and a slot is free.
    pub(super) fn slot_of(&mut self, label: &str) -> Option<usize> {
        if let Some(k) = self.labels.iter().position(|l| l == label) {
            return Some(k);
        }
        if self.labels.len() >= self.max_tested {
            return None;
        }
        self.labels.push(label.to_string());
        for arms in &mut self.arms {
            arms.push(Arms::FRESH);
        }
        Some(self.labels.len() - 1)
    }

    /// A new canary version: every test starts afresh (the slots stay).
    pub(super) fn restart(&mut self) {
        for arms in &mut self.arms {
            arms.fill(Arms::FRESH);
        }
        self.strongest.fill(None);
        self.untested = [0; 2];
    }

    /// Adds one event's value of metric `m` to slot `slot` (none: counted as untested, once per
    /// event at metric 0) on the canary (`canary`) or control arm.
    pub(super) fn push(&mut self, m: usize, slot: Option<usize>, canary: bool, value: f64) {
        match slot {
            Some(k) => {
                let a = &mut self.arms[m][k];
                if canary {
                    a.canary.push(value);
                } else {
                    a.control.push(value);
                }
            }
            None if m == 0 => self.untested[usize::from(!canary)] += 1,
            None => {}
        }
    }

    /// What the deployment's view shows of them.
    pub(super) fn view(&self) -> SegmentsView {
        SegmentsView {
            max_tested: self.max_tested,
            tested: self.labels.clone(),
            untested_events: self.untested,
        }
    }

    /// The weights of the deployment-level test and of each slot.
    fn weights(&self) -> (f64, f64) {
        (1.0 - self.share, self.share / self.max_tested as f64)
    }

    /// `E` and its driver, the looked-at component with the largest weighted term (the
    /// deployment on ties), with that term; `dep_log_lr` is the deployment-level `ln Λ`. No
    /// allocation: the hot path calls it after every event.
    fn evidence(&self, m: usize, rule: &Rule, dep_log_lr: f64) -> (f64, (Option<usize>, f64)) {
        let (w_dep, w_seg) = self.weights();
        let dep = w_dep * dep_log_lr.exp().min(f64::MAX);
        let (mut e, mut driver) = (dep, (None, dep));
        for (k, a) in self.arms[m].iter().enumerate() {
            let term = w_seg * a.lr;
            e += term;
            if a.looked(rule) && term > driver.1 {
                driver = (Some(k), term);
            }
        }
        e += w_seg * (self.max_tested - self.arms[m].len()) as f64;
        (e, driver)
    }
}

/// The worse-direction value of a difference.
fn worse(rule: &Rule, d: f64) -> f64 {
    if rule.worse_up {
        d
    } else {
        -d
    }
}

/// A component's arms: the deployment's test or slot `k`'s.
fn arms_of<'a>(
    test: &'a Test,
    seg: &'a Segments,
    m: usize,
    c: Option<usize>,
) -> (&'a Moments, &'a Moments) {
    match c {
        None => (&test.canary, &test.control),
        Some(k) => (&seg.arms[m][k].canary, &seg.arms[m][k].control),
    }
}

/// The state of metric `m`'s combined test after an event of slot `slot` (none: a value not
/// tested alone) was added to `test` and `seg`: [`super::ab::next_state`] with `E` in place
/// of the deployment's `Λ`, and the `min_effect` rule read on the component that drives `E`.
pub(super) fn next_state(
    rule: &Rule,
    test: &mut Test,
    seg: &mut Segments,
    m: usize,
    slot: Option<usize>,
) -> VerdictState {
    if let Some(state) = super::ab::settled(rule, test) {
        return state;
    }
    let (_, _, dep_log_lr) = sequential::worse_log_lr(
        &test.canary,
        &test.control,
        rule.binary,
        rule.worse_up,
        rule.tau,
    );
    if let Some(a) = slot.map(|k| &mut seg.arms[m][k]) {
        if a.looked(rule) {
            let (_, _, l) = sequential::worse_log_lr_on(
                SEGMENT_GRID,
                &a.canary,
                &a.control,
                rule.binary,
                rule.worse_up,
                rule.tau,
            );
            a.lr = l.exp().min(f64::MAX);
        }
    }
    let (e, (component, term)) = seg.evidence(m, rule, dep_log_lr);
    let (canary, control) = arms_of(test, seg, m, component);
    let (estimate, variance) = sequential::estimate_and_variance(canary, control, rule.binary);
    let p = (1.0 / e).min(1.0);
    if p < test.p_value {
        test.p_value = p;
        seg.strongest[m] = Some(Strongest {
            component,
            estimate,
            variance,
            rest: (e - term).max(0.0),
        });
    }
    decide(rule, test, e.ln(), worse(rule, estimate))
}

/// The critical value of a component's mixture for the target `ln Λ` `target`.
fn critical(rule: &Rule, component: Option<usize>, variance: f64, target: f64) -> f64 {
    match component {
        None => sequential::critical_value_on(GRID, variance, rule.tau, target),
        Some(_) => sequential::critical_value_on(SEGMENT_GRID, variance, rule.tau, target),
    }
}

/// The harmful-side bound (worse direction) of a component with weight `weight`, difference
/// `estimate` and variance `variance` when the other components sum to `rest`: the effects `θ₀`
/// it cannot have for `E` (with its null shifted to `θ₀`) to stay below `1/αₘ`. It is ≥ 0
/// exactly when `E ≥ 1/αₘ`. −∞ when the rest alone reaches `1/αₘ` (the component's effect
/// then is not what the decision rests on).
fn bound(
    rule: &Rule,
    c: Option<usize>,
    weight: f64,
    (estimate, variance): (f64, f64),
    rest: f64,
) -> f64 {
    let budget = 1.0 / rule.alpha - rest;
    if budget.is_nan() || budget <= 0.0 || !variance.is_finite() {
        return f64::NEG_INFINITY;
    }
    worse(rule, estimate) - critical(rule, c, variance, (budget / weight).ln())
}

/// Metric `m`'s canary-vs-control verdict with segments: the deployment-level verdict, its
/// state and p-value those of `E`, `statistic` `ln E`, and the estimate, counts, means and
/// bounds of the component that drives it — the one that made the decision once `p ≤ αₘ`,
/// the largest now in a `warn`, the deployment's totals otherwise — with `segment` naming it
/// (none: the totals). The harmful-side bound inverts `E` for that component, the tighter of
/// now and the moment of the smallest p-value, so it excludes 0 exactly when `p ≤ αₘ` (where
/// rounding at the critical value could disagree, the test's comparison decides). It is a bound on that
/// component's effect at `αₘ` when the other components have none; the other side is the
/// component's mirror-image mixture at its own weight's share of `αₘ`.
pub(super) fn verdict(
    subject: Subject<'_>,
    rule: &Rule,
    test: &Test,
    seg: Option<(&Segments, usize)>,
    t_ms: i64,
    events_seen: u64,
) -> Verdict {
    let mut v = ab_verdict(subject, rule, test, t_ms, events_seen);
    let Some((seg, m)) = seg else {
        return v;
    };
    if test.state == VerdictState::Insufficient {
        return v;
    }
    let (e, (driver, driver_term)) = seg.evidence(m, rule, v.statistic);
    let significant = test.p_value <= rule.alpha;
    let strongest = seg.strongest[m];
    let c = match strongest {
        Some(s) if significant => s.component,
        _ if test.state == VerdictState::Warn => driver,
        _ => None,
    };
    let (w_dep, w_seg) = seg.weights();
    let weight = if c.is_none() { w_dep } else { w_seg };
    let (canary, control) = arms_of(test, seg, m, c);
    let now = sequential::estimate_and_variance(canary, control, rule.binary);
    let term = match c {
        _ if c == driver => driver_term,
        None => w_dep * v.statistic.exp().min(f64::MAX),
        Some(k) => w_seg * seg.arms[m][k].lr,
    };
    let mut harmful = bound(rule, c, weight, now, (e - term).max(0.0));
    if let Some(s) = strongest.filter(|s| s.component == c) {
        harmful = harmful.max(bound(rule, c, weight, (s.estimate, s.variance), s.rest));
    }
    if significant {
        harmful = harmful.max(0.0);
    } else if harmful >= 0.0 {
        harmful = -f64::MIN_POSITIVE;
    }
    let other = critical(rule, c, now.1, (1.0 / (rule.alpha * weight)).ln());
    let (estimate, _) = now;
    (v.ci_low, v.ci_high) = if rule.worse_up {
        (Some(harmful), Some((estimate + other).max(harmful)))
    } else {
        (Some((estimate - other).min(-harmful)), Some(-harmful))
    };
    v.estimate = Some(estimate);
    v.n_canary = canary.n;
    v.n_control = control.n;
    v.canary_value = canary.mean();
    v.control_value = control.mean();
    v.statistic = e.ln();
    v.segment = c.map(|k| seg.labels[k].clone());
    v
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
