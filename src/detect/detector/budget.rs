//! The budget shares of the detector's charts (see `detect`): the deployment's chart budget in
//! canary events, late drift's weight in it, and each self-baseline chart's share by its
//! cohort's arm and rank. Pure arithmetic on config and counts; must not feed events.

use super::Deployment;
use crate::config::{AlarmState, Config};
use crate::detect::cusum::Budget;
use crate::event::Arm;
use crate::state::CohortKey;

/// How many cohorts of a deployment have self-baseline charts: control's ever, the current
/// canary version's since it appeared. The `k`-th gets the `k`-th share of [`rank_weight`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Ranks {
    canary_version: String,
    canary: u32,
    control: u32,
}

/// The share of its arm's self-baseline budget the `k`-th cohort's charts get (`k ≥ 1`):
/// `6/(π²k²)`, which add up to 1 over any number of cohorts (segments), so the budget holds
/// however many appear, deterministically, without knowing their number in advance; the
/// `k`-th pays `ln(π²k²/6)` more threshold than a lone cohort would.
pub(super) fn rank_weight(k: u32) -> f64 {
    6.0 / (std::f64::consts::PI.powi(2) * f64::from(k.max(1)).powi(2))
}

/// The self-baseline budgets: canary cohorts' charts spend from α (`Events`, the deployment's
/// budget in canary events per chart of a rank-1 cohort), control cohorts' from their own
/// rate (`Period`, one false warning per period per deployment).
#[derive(Debug, Clone, Copy)]
pub(super) struct Budgets {
    /// In-control ARL per chart of a rank-1 canary cohort, in events; `None`: canary cohorts'
    /// alarms cannot fail (`on_alarm = "warn"`) and are budgeted like control's.
    pub(super) canary_events: Option<f64>,
    /// `false_alarm_period` in milliseconds.
    pub(super) period_ms: f64,
    /// Metrics: each gets an equal part of an arm's budget.
    pub(super) metrics: f64,
}

/// The deployment's chart budget and late drift's weight in it. The charts that can fail a
/// canary share `α × chart_share`, set in canary events: together an in-control ARL of
/// `lifetime_events / (α × share)`. Late drift gets 80% of it when the canary's self-baseline
/// can fail too (all of it when not), over its `2 × metrics` charts; the canary self-baseline
/// the rest, an equal part per metric, then by cohort rank.
pub(super) fn chart_budget(config: &Config) -> (f64, f64) {
    let d = &config.detection;
    let sb = &d.self_baseline;
    let canary_sb_fails = sb.enabled && sb.on_alarm == AlarmState::Fail;
    let deployment_arl = d.lifetime_events as f64 / (d.alpha * d.charts_share()).max(1e-300);
    let late_weight = match (d.late_drift.enabled, canary_sb_fails) {
        (true, true) => 0.8,
        (true, false) => 1.0,
        (false, _) => 0.0,
    };
    (deployment_arl, late_weight)
}

/// The budget of each self-baseline chart of a new cohort `key` of deployment `dep`: its
/// arm's budget, an equal part per metric, the share of its rank ([`rank_weight`]).
pub(super) fn cohort_budget(d: &mut Deployment, b: Budgets, key: &CohortKey) -> Budget {
    let retired = d.retired.iter().any(|v| *v == key.model_version);
    let ranks = &mut d.ranks;
    let rank = match key.arm {
        Arm::Control => {
            ranks.control += 1;
            ranks.control
        }
        // A retired version's late cohort is not under test (its alarms are dropped): it
        // takes no rank, and its chart's budget is moot.
        Arm::Canary if retired => 1,
        Arm::Canary => {
            if ranks.canary_version != key.model_version {
                ranks.canary_version = key.model_version.clone();
                ranks.canary = 0;
            }
            ranks.canary += 1;
            ranks.canary
        }
    };
    let weight = rank_weight(rank) / b.metrics;
    match (key.arm, b.canary_events) {
        (Arm::Canary, Some(arl0)) => Budget::Events(arl0 / rank_weight(rank)),
        _ => Budget::Period {
            period_ms: b.period_ms,
            weight,
        },
    }
}
