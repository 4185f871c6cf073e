//! The gate: what a rollout controller asking "may this canary go on?" is told.
//!
//! Owns the one rule that turns a deployment's detection view and containment latch into a
//! [`Decision`], and how each gate route spells it as an HTTP status — because the callers read
//! status codes in opposite ways: a Flagger webhook halts (and, for a `rollout` hook, eventually
//! rolls back) on any non-2xx, while an Argo Rollouts web metric treats a non-2xx as a
//! measurement *error* and wants a 2xx JSON body its `successCondition` can read. So there are
//! three routes over the same decision:
//!
//! - `/v1/gate/{d}` — "may it keep running?": non-2xx only when contained (503) or unknown (404);
//! - `/v1/gate/{d}/promotion` — "may it be promoted?": 2xx only on `pass`;
//! - `/v1/gate/{d}/decision` — always 200, the decision in the body, for Argo Rollouts.
//!
//! Under a policy with `promotion = "approval"`, `pass` also needs an approver's approval of
//! the canary version now seen (a new version needs a new one): passing evidence without it is
//! `awaiting_approval`, which keeps promotion waiting and lets the canary run on.
//!
//! Nothing that reads as a pass unless detection said pass: a deployment driftd has never seen
//! is `unknown`, one without enough evidence is `insufficient`. A verdict containment holds as
//! stale (too old to act on) keeps its decision and adds a `stale:` reason. The body is public (rollout
//! controllers cannot send a token), so it carries no operator name or reason. Pure: no I/O.

use axum::http::StatusCode;
use serde::Serialize;

use crate::config::PromotionMode;
use crate::contain::latch::{Incident, Latch, Phase};
use crate::detect::{DeploymentView, MetricVerdicts, VerdictState};

/// What the gate says about one deployment, worst first in precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Contained by an enforcing policy or by hand: the gate is closed.
    Contained,
    /// driftd has no events and no latch for this name (a typo, or traffic not reaching
    /// driftd's topic).
    Unknown,
    /// A metric failed, but nothing closed the gate: a dry-run policy, or a human released it.
    Fail,
    /// A metric warns, or the experiment itself is suspect (sample-ratio mismatch, an arm
    /// silent).
    Warn,
    /// Not enough events yet on some metric, or no canary traffic at all.
    Insufficient,
    /// Every metric passed with enough events and no signal is raised, but the policy asks an
    /// approver to approve promoting this canary version, and none has.
    AwaitingApproval,
    /// Every metric passed with enough events, no signal is raised (and, where the policy
    /// asks, an approver approved promoting this canary version).
    Pass,
}

impl Decision {
    /// The spelling in the body (the same as its serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Contained => "contained",
            Decision::Unknown => "unknown",
            Decision::Fail => "fail",
            Decision::Warn => "warn",
            Decision::Insufficient => "insufficient",
            Decision::AwaitingApproval => "awaiting_approval",
            Decision::Pass => "pass",
        }
    }
}

/// Which gate route is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v1/gate/{d}`: closed only on containment (and for a name never seen).
    Containment,
    /// `/v1/gate/{d}/promotion`: open only on `pass`.
    Promotion,
    /// `/v1/gate/{d}/decision`: always 200.
    Decision,
}

impl Route {
    /// The HTTP status this route answers `decision` with.
    pub fn status(self, decision: Decision) -> StatusCode {
        match (self, decision) {
            (Route::Decision, _) => StatusCode::OK,
            (_, Decision::Contained) => StatusCode::SERVICE_UNAVAILABLE,
            (_, Decision::Unknown) => StatusCode::NOT_FOUND,
            (Route::Containment, _) | (Route::Promotion, Decision::Pass) => StatusCode::OK,
            (Route::Promotion, _) => StatusCode::PRECONDITION_FAILED,
        }
    }
}

/// The decision and the reasons for it, in words for the person reading the response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The decision.
    pub decision: Decision,
    /// Why: one line per metric or signal that kept it from `pass` (empty on `pass`).
    pub reasons: Vec<String>,
}

/// The one rule. `view` is the deployment's detection state (absent if no event of it was
/// applied), `latch` its containment latch (absent if containment never saw it), `promotion`
/// what its policy asks before a promotion.
pub fn decide(
    view: Option<&DeploymentView>,
    latch: Option<&Latch>,
    promotion: PromotionMode,
) -> Verdict {
    if let Some(l) = latch.filter(|l| l.gate_closed()) {
        let reason = l
            .incident
            .as_ref()
            .map_or_else(|| "contained".to_string(), public_reason);
        return Verdict {
            decision: Decision::Contained,
            reasons: vec![reason],
        };
    }
    let Some(view) = view else {
        return Verdict {
            decision: if latch.is_some() {
                Decision::Insufficient
            } else {
                Decision::Unknown
            },
            reasons: vec![if latch.is_some() {
                "no events of this deployment applied since driftd started".into()
            } else {
                "driftd has seen no event of this deployment: check the name and that its traffic reaches driftd's topic".into()
            }],
        };
    };
    let mut worst = Decision::Pass;
    let mut reasons = Vec::new();
    let mut note = |decision: Decision, reason: String, worst: &mut Decision| {
        if rank(decision) < rank(*worst) {
            *worst = decision;
        }
        reasons.push(reason);
    };
    if view.canary_version.is_none() {
        note(
            Decision::Insufficient,
            "no canary traffic seen".into(),
            &mut worst,
        );
    }
    if view.metrics.is_empty() {
        note(
            Decision::Insufficient,
            "no metric evaluated yet".into(),
            &mut worst,
        );
    }
    for m in &view.metrics {
        if let Some((decision, reason)) = metric_reason(m) {
            note(decision, reason, &mut worst);
        }
    }
    if view.sample_ratio_mismatch {
        note(
            Decision::Warn,
            "sample ratio mismatch: the arms' split differs from the configured canary share"
                .into(),
            &mut worst,
        );
    }
    for arm in &view.telemetry_absent {
        note(
            Decision::Warn,
            format!("telemetry absent from the {} arm", arm.as_str()),
            &mut worst,
        );
    }
    if latch.is_some_and(|l| l.phase == Phase::Contained) && worst == Decision::Pass {
        // A dry-run containment with passing evidence now: the incident still stands.
        note(
            Decision::Fail,
            "contained by a dry-run policy".into(),
            &mut worst,
        );
    }
    if worst == Decision::Pass && promotion == PromotionMode::Approval {
        let approved = latch
            .and_then(|l| l.promotion_approval.as_ref())
            .is_some_and(|a| Some(&a.model_version) == view.canary_version.as_ref());
        if !approved {
            note(
                Decision::AwaitingApproval,
                format!(
                    "every metric passes; promoting canary version {} awaits an approver (driftd approve --promotion)",
                    view.canary_version.as_deref().unwrap_or("?")
                ),
                &mut worst,
            );
        }
    }
    for held in latch.iter().flat_map(|l| l.stale.values()) {
        // Says why a failing canary is not contained; the decision stays what detection says.
        reasons.push(format!(
            "stale: {} {} {} of {} at event time {} ({:.0}s behind the wall clock when received) is not acted on until fresh events of {} confirm it",
            held.metric,
            held.source.as_str(),
            held.state.as_str(),
            held.model_version,
            held.at,
            held.age_seconds,
            held.model_version
        ));
    }
    Verdict {
        decision: worst,
        reasons,
    }
}

/// The gate on evidence another replica shared that is older than its bound
/// (`crate::contain::views`), `age_ms` old: promoting on it is worse than waiting, so `pass`
/// and `awaiting_approval` become `insufficient`; a worse decision stands. The age is said
/// either way.
pub fn expire(verdict: Verdict, age_ms: i64) -> Verdict {
    let mut reasons = verdict.reasons;
    reasons.push(format!(
        "the owning replica's evidence is {:.0}s old: not trusted for promotion until it shares a fresh view (check that replica and persist.latch_topic)",
        age_ms as f64 / 1e3
    ));
    let decision = if rank(verdict.decision) > rank(Decision::Insufficient) {
        Decision::Insufficient
    } else {
        verdict.decision
    };
    Verdict { decision, reasons }
}

fn rank(d: Decision) -> u8 {
    match d {
        Decision::Contained => 0,
        Decision::Unknown => 1,
        Decision::Fail => 2,
        Decision::Warn => 3,
        Decision::Insufficient => 4,
        Decision::AwaitingApproval => 5,
        Decision::Pass => 6,
    }
}

fn metric_reason(m: &MetricVerdicts) -> Option<(Decision, String)> {
    let decision = match m.state {
        VerdictState::Pass => return None,
        VerdictState::Insufficient => Decision::Insufficient,
        VerdictState::Warn => Decision::Warn,
        VerdictState::Fail => Decision::Fail,
    };
    // The worse alarm when it is at least as bad as the test (late drift first on a tie).
    let alarm = [&m.late_drift, &m.self_baseline]
        .into_iter()
        .flatten()
        .reduce(|a, b| if b.state > a.state { b } else { a });
    let evidence = match alarm {
        Some(alarm) if alarm.state >= m.canary_vs_control.state => alarm.headline(),
        _ => m.canary_vs_control.headline(),
    };
    Some((decision, evidence))
}

/// The incident's reason as the public body may show it: a manual containment's reason is
/// operator input, so only the fact is shown.
pub fn public_reason(incident: &Incident) -> String {
    if incident.evidence.get("operator").is_some() {
        "contained by hand".into()
    } else {
        incident.reason.clone()
    }
}

#[cfg(test)]
mod tests;
