//! The self-baseline verdict of one cohort's CUSUM, for an alarm and for the page's view of
//! the chart nearest its threshold: one builder, so both carry the same evidence.

use super::{CohortDetect, Deployment, Rule};
use crate::detect::cusum::CusumPhase;
use crate::detect::verdict::{Source, Verdict, VerdictState};
use crate::event::format_rfc3339_ms;

/// Where one monitoring CUSUM stands.
pub(super) struct Watch {
    /// The verdict state to report.
    pub(super) state: VerdictState,
    /// The reference learned in warm-up (rate or mean).
    pub(super) reference: f64,
    /// Alarm threshold.
    pub(super) threshold: f64,
    /// CUSUM statistic.
    pub(super) statistic: f64,
    /// The mean of the chart's current run (since its statistic last left zero): the recent
    /// level the statistic is accumulating evidence about; `None` while the statistic is zero.
    pub(super) mean: Option<f64>,
}

impl Watch {
    /// Where a chart in `phase` stands, reported as `state`; `None` while it learns.
    pub(super) fn of(phase: &CusumPhase, state: VerdictState) -> Option<Watch> {
        match phase {
            CusumPhase::Monitoring {
                reference,
                threshold,
                statistic,
                seen,
                ..
            } => Some(Watch {
                state,
                reference: reference.value(),
                threshold: *threshold,
                statistic: *statistic,
                mean: seen.mean(),
            }),
            _ => None,
        }
    }
}

/// The verdict of cohort `c` (of deployment `dep`) for metric `m` (`rule`), standing at `w`.
pub(super) fn baseline_verdict(
    dep: &Deployment,
    c: &CohortDetect,
    (m, rule): (usize, &Rule),
    w: Watch,
    t_ms: i64,
    events_seen: u64,
) -> Verdict {
    let test = &dep.tests[m];
    Verdict {
        deployment: dep.name.clone(),
        model_version: dep
            .canary_version
            .clone()
            .unwrap_or_else(|| c.model_version.clone()),
        metric: rule.name.clone(),
        source: Source::SelfBaseline,
        state: w.state,
        at: format_rfc3339_ms(t_ms),
        events_seen,
        n_canary: test.canary.n,
        n_control: test.control.n,
        canary_value: None,
        control_value: None,
        estimate: w.mean,
        ci_low: None,
        ci_high: None,
        p_value: None,
        statistic: w.statistic,
        threshold: w.threshold,
        min_effect: rule.min_effect,
        alpha: None,
        arm: Some(c.arm),
        segment: Some(c.segment.clone()),
        reference: Some(w.reference),
    }
}
