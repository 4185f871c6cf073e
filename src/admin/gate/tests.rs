use axum::http::StatusCode;

use super::*;
use crate::config::PromotionMode;
use crate::contain::latch::Severity;
use crate::detect::{Source, Verdict as Evidence};
use crate::event::Arm;

fn evidence(state: VerdictState, source: Source) -> Evidence {
    Evidence {
        deployment: "svc".into(),
        model_version: "ft-1".into(),
        metric: "refusal".into(),
        source,
        state,
        at: "2026-11-29T05:00:00.000Z".into(),
        events_seen: 2_000,
        n_canary: 1_000,
        n_control: 1_000,
        canary_value: Some(0.1),
        control_value: Some(0.05),
        estimate: Some(0.05),
        ci_low: Some(0.02),
        ci_high: Some(0.08),
        p_value: Some(0.001),
        statistic: 7.0,
        threshold: 6.9,
        min_effect: 0.02,
        alpha: Some(0.001),
        arm: None,
        segment: None,
        reference: None,
    }
}

fn metric(name: &str, state: VerdictState) -> MetricVerdicts {
    MetricVerdicts {
        metric: name.into(),
        state,
        canary_vs_control: Evidence {
            metric: name.into(),
            ..evidence(state, Source::CanaryVsControl)
        },
        self_baseline: None,
        self_baseline_watch: None,
        late_drift: None,
    }
}

fn view(states: &[VerdictState]) -> DeploymentView {
    DeploymentView {
        deployment: "svc".into(),
        canary_version: Some("ft-1".into()),
        metrics: states
            .iter()
            .enumerate()
            .map(|(i, s)| metric(&format!("m{i}"), *s))
            .collect(),
        sample_ratio_mismatch: false,
        srm: None,
        telemetry_absent: Vec::new(),
        history: Vec::new(),
        segments: None,
    }
}

fn incident(dry_run: bool, evidence: serde_json::Value) -> Incident {
    Incident {
        id: "svc:ft-1".into(),
        deployment: "svc".into(),
        model_version: "ft-1".into(),
        opened_at: "2026-11-29T05:00:00Z".into(),
        reason: "refusal canary_vs_control fail (n 1000/1000, estimate 0.0500, p 1.00e-3)".into(),
        evidence,
        policy: "default".into(),
        dry_run,
        severity: Severity::Critical,
    }
}

fn contained(dry_run: bool) -> Latch {
    Latch {
        phase: Phase::Contained,
        incident: Some(incident(dry_run, serde_json::json!({"metric": "refusal"}))),
        ..Latch::default()
    }
}

use crate::detect::VerdictState::{Fail, Insufficient, Pass, Warn};

#[test]
fn only_every_metric_passing_reads_as_pass() {
    let d = |states: &[VerdictState]| {
        decide(Some(&view(states)), None, PromotionMode::Evidence).decision
    };
    assert_eq!(d(&[Pass, Pass, Pass]), Decision::Pass);
    assert_eq!(d(&[Pass, Insufficient, Pass]), Decision::Insufficient);
    assert_eq!(d(&[Pass, Warn, Insufficient]), Decision::Warn);
    assert_eq!(d(&[Fail, Warn, Insufficient]), Decision::Fail);
    assert_eq!(d(&[]), Decision::Insufficient, "no metric evaluated");
    let pass = decide(Some(&view(&[Pass, Pass])), None, PromotionMode::Evidence);
    assert!(pass.reasons.is_empty());
    let warn = decide(Some(&view(&[Pass, Warn])), None, PromotionMode::Evidence);
    assert_eq!(warn.reasons.len(), 1);
    assert!(warn.reasons[0].starts_with("m1 canary_vs_control warn"));
}

#[test]
fn a_name_never_seen_is_unknown_not_a_pass() {
    let v = decide(None, None, PromotionMode::Evidence);
    assert_eq!(v.decision, Decision::Unknown);
    assert!(v.reasons[0].contains("check the name"));
    // Known to containment (a latch loaded at start-up) but no event applied yet.
    assert_eq!(
        decide(None, Some(&Latch::default()), PromotionMode::Evidence).decision,
        Decision::Insufficient
    );
}

#[test]
fn no_canary_traffic_or_a_suspect_experiment_is_not_a_pass() {
    let mut v = view(&[Pass, Pass]);
    v.canary_version = None;
    assert_eq!(
        decide(Some(&v), None, PromotionMode::Evidence).decision,
        Decision::Insufficient
    );

    let mut v = view(&[Pass, Pass]);
    v.sample_ratio_mismatch = true;
    let srm = decide(Some(&v), None, PromotionMode::Evidence);
    assert_eq!(srm.decision, Decision::Warn);
    assert!(srm.reasons[0].contains("sample ratio mismatch"));

    let mut v = view(&[Pass, Pass]);
    v.telemetry_absent = vec![Arm::Canary];
    let absent = decide(Some(&v), None, PromotionMode::Evidence);
    assert_eq!(absent.decision, Decision::Warn);
    assert_eq!(absent.reasons, ["telemetry absent from the canary arm"]);
}

#[test]
fn containment_wins_and_a_dry_run_or_released_fail_stays_fail() {
    let closed = decide(
        Some(&view(&[Pass, Fail])),
        Some(&contained(false)),
        PromotionMode::Evidence,
    );
    assert_eq!(closed.decision, Decision::Contained);
    assert!(closed.reasons[0].starts_with("refusal canary_vs_control fail"));
    // Contained by hand before any event: still contained.
    assert_eq!(
        decide(None, Some(&contained(false)), PromotionMode::Evidence).decision,
        Decision::Contained
    );
    // Dry run: the gate stays open, the evidence still fails.
    assert_eq!(
        decide(
            Some(&view(&[Pass, Fail])),
            Some(&contained(true)),
            PromotionMode::Evidence
        )
        .decision,
        Decision::Fail
    );
    assert_eq!(
        decide(
            Some(&view(&[Pass, Pass])),
            Some(&contained(true)),
            PromotionMode::Evidence
        )
        .decision,
        Decision::Fail,
        "a dry-run incident stands even once the evidence reads pass"
    );
    let released = Latch {
        phase: Phase::Released,
        ..contained(false)
    };
    assert_eq!(
        decide(
            Some(&view(&[Pass, Fail])),
            Some(&released),
            PromotionMode::Evidence
        )
        .decision,
        Decision::Fail
    );
    assert_eq!(
        decide(
            Some(&view(&[Pass, Pass])),
            Some(&released),
            PromotionMode::Evidence
        )
        .decision,
        Decision::Pass
    );
}

#[test]
fn a_self_baseline_alarm_is_the_reason_when_it_is_the_worse_source() {
    let mut v = view(&[Pass]);
    v.metrics[0].state = Fail;
    v.metrics[0].self_baseline = Some(Evidence {
        metric: "m0".into(),
        ..evidence(Fail, Source::SelfBaseline)
    });
    let out = decide(Some(&v), None, PromotionMode::Evidence);
    assert_eq!(out.decision, Decision::Fail);
    assert!(out.reasons[0].starts_with("m0 self_baseline fail"));
}

#[test]
fn a_manual_containment_shows_no_operator_input() {
    let latch = Latch {
        phase: Phase::Contained,
        incident: Some(incident(
            false,
            serde_json::json!({"operator": "alice", "reason": "customer escalation #4711"}),
        )),
        ..Latch::default()
    };
    let out = decide(None, Some(&latch), PromotionMode::Evidence);
    assert_eq!(out.reasons, ["contained by hand"]);
}

#[test]
fn each_route_spells_each_decision_as_its_callers_read_status_codes() {
    use Decision::*;
    let all = [Contained, Unknown, Fail, Warn, Insufficient, Pass];
    let codes = |route: Route| all.map(|d| route.status(d).as_u16());
    // Flagger `rollout`/`pre-rollout` hooks: non-2xx only when contained or misnamed.
    assert_eq!(codes(Route::Containment), [503, 404, 200, 200, 200, 200]);
    // Flagger `confirm-promotion`: 2xx only on evidence of a pass.
    assert_eq!(codes(Route::Promotion), [503, 404, 412, 412, 412, 200]);
    // Argo Rollouts web metric: always 2xx, the decision in the body.
    assert_eq!(codes(Route::Decision), [200; 6]);
    assert_eq!(Route::Promotion.status(Pass), StatusCode::OK);
    for d in all {
        assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
    }
}

/// `promotion = "approval"`: passing evidence alone keeps promotion waiting; the approval of
/// this canary version opens it; a new version needs a new approval; a `fail` after the
/// approval withholds promotion.
#[test]
fn promotion_needs_evidence_and_an_approval_of_this_version() {
    use crate::contain::latch::{Approval, PromotionApproval};
    let approved = |version: &str| Latch {
        promotion_approval: Some(PromotionApproval {
            model_version: version.into(),
            approval: Approval {
                identity: "alice".into(),
                at: "2026-11-29T05:00:00.000Z".into(),
                reason: "dashboards look fine".into(),
                stated_operator: None,
            },
        }),
        ..Latch::default()
    };
    let mode = PromotionMode::Approval;
    let waiting = decide(Some(&view(&[Pass, Pass])), None, mode);
    assert_eq!(waiting.decision, Decision::AwaitingApproval);
    assert!(waiting.reasons[0].contains("ft-1"), "{:?}", waiting.reasons);
    assert_eq!(
        Route::Promotion.status(waiting.decision),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(Route::Containment.status(waiting.decision), StatusCode::OK);
    assert_eq!(Route::Decision.status(waiting.decision), StatusCode::OK);
    assert_eq!(waiting.decision.as_str(), "awaiting_approval");

    let pass = decide(Some(&view(&[Pass, Pass])), Some(&approved("ft-1")), mode);
    assert_eq!(pass.decision, Decision::Pass);
    assert_eq!(Route::Promotion.status(pass.decision), StatusCode::OK);

    let mut next = view(&[Pass, Pass]);
    next.canary_version = Some("ft-2".into());
    assert_eq!(
        decide(Some(&next), Some(&approved("ft-1")), mode).decision,
        Decision::AwaitingApproval,
        "a new canary version needs its own approval"
    );
    for states in [[Pass, Fail], [Pass, Warn], [Pass, Insufficient]] {
        let v = decide(Some(&view(&states)), Some(&approved("ft-1")), mode);
        assert_ne!(v.decision, Decision::Pass, "{states:?}");
        assert_ne!(Route::Promotion.status(v.decision), StatusCode::OK);
    }
    assert_eq!(
        decide(Some(&view(&[Pass, Pass])), None, PromotionMode::Evidence).decision,
        Decision::Pass,
        "the default promotes on evidence, as before"
    );
}

#[test]
fn expired_shared_evidence_never_reads_as_pass_and_worse_decisions_stand() {
    let expired = |states: &[VerdictState], promotion| {
        expire(decide(Some(&view(states)), None, promotion), 120_000)
    };
    let pass = expired(&[Pass, Pass], PromotionMode::Evidence);
    assert_eq!(pass.decision, Decision::Insufficient);
    assert!(
        pass.reasons.iter().any(|r| r.contains("120s old")),
        "{pass:?}"
    );
    assert_eq!(
        Route::Promotion.status(pass.decision),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        expired(&[Pass], PromotionMode::Approval).decision,
        Decision::Insufficient,
        "nor awaiting an approval"
    );
    assert_eq!(
        expired(&[Fail, Pass], PromotionMode::Evidence).decision,
        Decision::Fail
    );
    assert_eq!(
        expired(&[Warn], PromotionMode::Evidence).decision,
        Decision::Warn
    );
    let closed = expire(
        decide(
            Some(&view(&[Pass])),
            Some(&contained(false)),
            PromotionMode::Evidence,
        ),
        120_000,
    );
    assert_eq!(closed.decision, Decision::Contained);
}
