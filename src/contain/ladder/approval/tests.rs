//! Approvals, one rule per test: counting distinct approvers, the window, the requester, and
//! promotion approvals tied to a canary version.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::config::{ContainmentConfig, TargetConfig};

const T0: i64 = 1_795_000_000_000;

fn ladder(edit: impl FnOnce(&mut PolicyConfig)) -> Ladder {
    let mut policy = PolicyConfig {
        alerts: vec!["am".into()],
        ..PolicyConfig::named("p")
    };
    edit(&mut policy);
    let config = ContainmentConfig {
        targets: vec![TargetConfig::Alertmanager {
            name: "am".into(),
            url: Some("http://x".into()),
            urls: vec![],
            basic_auth: None,
            bearer_token: None,
            tls: None,
        }],
        policies: vec![policy],
        ..ContainmentConfig::default()
    };
    let mut l = Ladder::new(&config, BTreeMap::new());
    l.contain("svc", &Requester::approver("ana"), "looks off", "t0")
        .unwrap();
    l
}

fn steps(out: &Outcome) -> Vec<ApprovalStep> {
    out.notes.iter().map(|n| n.step).collect()
}

fn contained(l: &Ladder) -> bool {
    l.latch("svc").unwrap().phase == Phase::Contained
}

#[test]
fn two_approvers_release_and_the_same_one_twice_counts_once() {
    let mut l = ladder(|p| p.release_approvals = 2);
    let alice = Requester::approver("alice");
    let out = l.request_release("svc", &alice, "checked", T0).unwrap();
    assert_eq!(steps(&out), [ApprovalStep::Requested]);
    assert_eq!(
        out.notes[0].approved_by,
        ["alice"],
        "the request is alice's approval"
    );
    assert_eq!(out.decision.actions.len(), 1, "the request alerts");
    assert_eq!(out.decision.actions[0].op, Op::Trigger);
    assert_eq!(
        out.decision.actions[0].incident.evidence["metric"],
        "release_approval"
    );
    assert!(contained(&l), "pending 1/2 stays contained");
    let pending = l.latch("svc").unwrap().pending_release.clone().unwrap();
    assert!(
        pending
            .summary()
            .starts_with("release pending 1/2, approved by alice, expires at "),
        "{}",
        pending.summary()
    );
    for a in &out.decision.actions {
        l.mark_done("svc", &a.key);
    }

    for again in [
        l.request_release("svc", &alice, "again", T0 + 1).unwrap(),
        l.approve_release("svc", &alice, "again", T0 + 2).unwrap(),
    ] {
        assert_eq!(steps(&again), [ApprovalStep::Unchanged]);
        assert!(again.decision.actions.is_empty());
        assert!(contained(&l));
    }

    let out = l
        .approve_release("svc", &Requester::approver("bob"), "agreed", T0 + 3)
        .unwrap();
    assert_eq!(
        steps(&out),
        [ApprovalStep::Approved, ApprovalStep::Released]
    );
    let latch = l.latch("svc").unwrap();
    assert_eq!(latch.phase, Phase::Released);
    assert!(latch.pending_release.is_none());
    let release = latch.last_release.as_ref().unwrap();
    assert_eq!(
        (release.operator.as_str(), release.reason.as_str()),
        ("alice", "checked"),
        "released as requested"
    );
    assert_eq!(release.approved_by, ["alice", "bob"]);
    let resolved: Vec<&str> = out
        .decision
        .actions
        .iter()
        .filter(|a| a.op == Op::Resolve)
        .map(|a| a.incident.id.as_str())
        .collect();
    assert!(
        resolved.iter().any(|id| id.contains(":release-request:")),
        "the request's alert is resolved: {resolved:?}"
    );
    assert_eq!(out.decision.transitions[0].to, Phase::Released);
}

#[test]
fn a_lapsed_request_takes_its_approvals_with_it() {
    let mut l = ladder(|p| {
        p.release_approvals = 2;
        p.approval_window = Duration::from_secs(60);
    });
    let alice = Requester::approver("alice");
    let bob = Requester::approver("bob");
    l.request_release("svc", &alice, "checked", T0).unwrap();
    assert!(l.expire_releases(T0 + 59_999).notes.is_empty());
    let out = l.expire_releases(T0 + 60_000);
    assert_eq!(steps(&out), [ApprovalStep::Expired]);
    assert_eq!(
        out.decision.actions[0].op,
        Op::Resolve,
        "its alert resolved"
    );
    assert!(l.latch("svc").unwrap().pending_release.is_none());
    assert_eq!(
        l.approve_release("svc", &bob, "late", T0 + 61_000),
        Err(LadderError::NothingPending("svc".into()))
    );
    let out = l.request_release("svc", &bob, "late", T0 + 62_000).unwrap();
    assert_eq!(out.notes[0].approved_by, ["bob"], "alice's approval lapsed");
    assert!(contained(&l));
    // Lapsing is also checked when a request arrives, whatever the tick did.
    let out = l
        .approve_release("svc", &alice, "again", T0 + 62_000 + 60_000)
        .unwrap_err();
    assert_eq!(out, LadderError::NothingPending("svc".into()));
}

#[test]
fn one_approver_releases_at_once_as_releases_always_did() {
    let mut l = ladder(|_| {});
    let out = l
        .request_release("svc", &Requester::approver("admin"), "ok", T0)
        .unwrap();
    assert_eq!(steps(&out), [ApprovalStep::Released]);
    assert_eq!(l.latch("svc").unwrap().phase, Phase::Released);
    assert_eq!(
        l.latch("svc")
            .unwrap()
            .last_release
            .as_ref()
            .unwrap()
            .approved_by,
        ["admin"]
    );
}

#[test]
fn an_operator_asks_and_an_approver_decides() {
    let mut l = ladder(|_| {});
    let out = l
        .request_release("svc", &Requester::operator("olga"), "fixed", T0)
        .unwrap();
    assert_eq!(steps(&out), [ApprovalStep::Requested]);
    assert!(out.notes[0].approved_by.is_empty());
    assert!(contained(&l), "an operator cannot release alone");
    assert_eq!(
        l.approve_release("svc", &Requester::operator("olga"), "me", T0),
        Err(LadderError::NotApprover("olga".into()))
    );
    let out = l
        .approve_release("svc", &Requester::approver("alice"), "ok", T0 + 1)
        .unwrap();
    assert_eq!(
        steps(&out),
        [ApprovalStep::Approved, ApprovalStep::Released]
    );
    let release = l.latch("svc").unwrap().last_release.clone().unwrap();
    assert_eq!(release.operator, "olga");
    assert_eq!(release.approved_by, ["alice"]);
}

#[test]
fn with_separate_requester_the_requester_cannot_approve() {
    let mut l = ladder(|p| p.separate_requester = true);
    let alice = Requester::approver("alice");
    let out = l.request_release("svc", &alice, "checked", T0).unwrap();
    assert!(out.notes[0].approved_by.is_empty(), "not counted");
    assert!(contained(&l));
    assert!(matches!(
        l.approve_release("svc", &alice, "me", T0 + 1),
        Err(LadderError::OwnRequest { .. })
    ));
    l.approve_release("svc", &Requester::approver("bob"), "ok", T0 + 2)
        .unwrap();
    assert_eq!(l.latch("svc").unwrap().phase, Phase::Released);
}

#[test]
fn nothing_to_release_is_refused_as_before() {
    let mut l = ladder(|_| {});
    l.request_release("svc", &Requester::approver("a"), "ok", T0)
        .unwrap();
    assert_eq!(
        l.request_release("svc", &Requester::approver("a"), "ok", T0),
        Err(LadderError::NotContained("svc".into()))
    );
}

#[test]
fn a_promotion_approval_names_one_version_and_only_where_the_policy_asks() {
    let mut l = ladder(|_| {});
    let alice = Requester::approver("alice");
    assert_eq!(
        l.approve_promotion("svc", &alice, "ok", "v1", T0),
        Err(LadderError::PromotionByEvidence("svc".into()))
    );
    let mut l = ladder(|p| p.promotion = PromotionMode::Approval);
    assert_eq!(
        l.approve_promotion("svc", &Requester::operator("olga"), "ok", "v1", T0),
        Err(LadderError::NotApprover("olga".into()))
    );
    let n = l.approve_promotion("svc", &alice, "ok", "v1", T0).unwrap();
    assert_eq!((n.step, n.subject.as_str()), (ApprovalStep::Approved, "v1"));
    let n = l
        .approve_promotion("svc", &Requester::approver("bob"), "ok", "v1", T0)
        .unwrap();
    assert_eq!(n.step, ApprovalStep::Unchanged);
    assert_eq!(
        n.approved_by,
        ["alice"],
        "the first approval of a version stands"
    );
    l.approve_promotion("svc", &alice, "ok", "v2", T0).unwrap();
    let a = l.latch("svc").unwrap().promotion_approval.clone().unwrap();
    assert_eq!(a.model_version, "v2", "a new version replaces it");
}

#[test]
fn pending_state_is_part_of_the_state_file_and_reads_back() {
    let mut l = ladder(|p| p.release_approvals = 2);
    l.request_release("svc", &Requester::approver("alice"), "checked", T0)
        .unwrap();
    let written = serde_json::to_string(l.latches()).unwrap();
    let read: BTreeMap<String, Latch> = serde_json::from_str(&written).unwrap();
    assert_eq!(&read, l.latches());
    let mut again = Ladder {
        latches: crate::contain::latch::Latches::loaded(read),
        ..l.clone()
    };
    again
        .approve_release("svc", &Requester::approver("bob"), "ok", T0 + 1)
        .unwrap();
    assert_eq!(again.latch("svc").unwrap().phase, Phase::Released);
}
