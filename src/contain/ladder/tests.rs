//! The ladder's transitions, one scenario per test: what each input decides, and what the latch
//! remembers across inputs and restarts.

use super::*;
use crate::config::TargetConfig;
use crate::detect::Verdict;

fn verdict(state: VerdictState, version: &str) -> Change {
    Change::Verdict(Verdict {
        model_version: version.into(),
        state,
        ..Verdict::example()
    })
}

fn config(mode: PolicyMode) -> ContainmentConfig {
    ContainmentConfig {
        targets: vec![
            TargetConfig::Alertmanager {
                name: "am".into(),
                url: Some("http://x".into()),
                urls: vec![],
                basic_auth: None,
                bearer_token: None,
                tls: None,
            },
            TargetConfig::Flagd {
                name: "flag".into(),
                path: "/tmp/f.json".into(),
                flag: "f".into(),
                safe_variant: "off".into(),
            },
        ],
        policies: vec![PolicyConfig {
            name: "p".into(),
            deployments: vec!["*".into()],
            metrics: vec!["*".into()],
            mode,
            alert_on: vec![TriggerState::Warn, TriggerState::Fail],
            contain_on: vec![TriggerState::Fail],
            alert_on_signals: true,
            alerts: vec!["am".into()],
            contain: vec!["flag".into()],
            ..PolicyConfig::named("")
        }],
        ..ContainmentConfig::default()
    }
}

#[test]
fn fail_contains_once_and_release_resolves_and_latches() {
    let mut l = Ladder::new(&config(PolicyMode::Enforce), BTreeMap::new());
    let out = l.on_change(&verdict(VerdictState::Fail, "v1"), "t1");
    let keys: Vec<&str> = out.actions.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["svc:v1/flag/contain", "svc:v1/am/trigger-critical"]);
    assert!(l.gate_closed("svc"));
    for a in &out.actions {
        l.mark_done("svc", &a.key);
    }
    // More evidence: nothing new.
    assert!(l
        .on_change(&verdict(VerdictState::Fail, "v1"), "t2")
        .actions
        .is_empty());
    assert!(l
        .on_change(&verdict(VerdictState::Pass, "v1"), "t2")
        .actions
        .is_empty());
    assert!(l.gate_closed("svc"), "latched");
    let out = l.release("svc", "ana", "false alarm", "t3").unwrap();
    assert_eq!(out.actions.len(), 1);
    assert_eq!(out.actions[0].op, Op::Resolve);
    assert!(!l.gate_closed("svc"));
    // The same incident replayed does not re-open.
    let out = l.on_change(&verdict(VerdictState::Fail, "v1"), "t4");
    assert!(out.actions.is_empty() && !out.ignored.is_empty());
    // A new canary version is a new incident.
    assert!(!l
        .on_change(&verdict(VerdictState::Fail, "v2"), "t5")
        .actions
        .is_empty());
    assert_eq!(
        l.release("nope", "a", "b", "t"),
        Err(LadderError::NotContained("nope".into()))
    );
}

#[test]
fn warn_alerts_without_containing_and_calms_down() {
    let mut l = Ladder::new(&config(PolicyMode::Enforce), BTreeMap::new());
    let out = l.on_change(&verdict(VerdictState::Warn, "v1"), "t1");
    assert_eq!(out.actions.len(), 1);
    assert_eq!(
        (out.actions[0].op, out.actions[0].severity),
        (Op::Trigger, Severity::Warning)
    );
    assert_eq!(l.latch("svc").unwrap().phase, Phase::Suspect);
    assert!(!l.gate_closed("svc"));
    l.mark_done("svc", &out.actions[0].key);
    let out = l.on_change(&verdict(VerdictState::Pass, "v1"), "t2");
    assert_eq!(out.actions[0].op, Op::Resolve);
    assert_eq!(l.latch("svc").unwrap().phase, Phase::Healthy);
}

/// Regression: a warning that calmed down recorded its resolve as done, so the release of
/// the containment that followed for the same canary never resolved the critical alert.
#[test]
fn warn_then_pass_then_fail_then_release_resolves_the_critical_alert() {
    let mut l = Ladder::new(&config(PolicyMode::Enforce), BTreeMap::new());
    for (state, t) in [
        (VerdictState::Warn, "t1"),
        (VerdictState::Pass, "t2"),
        (VerdictState::Warn, "t3"),
        (VerdictState::Fail, "t4"),
    ] {
        for a in l.on_change(&verdict(state, "v1"), t).actions {
            l.mark_done("svc", &a.key);
        }
    }
    let out = l.release("svc", "ana", "ok", "t5").unwrap();
    let keys: Vec<&str> = out.actions.iter().map(|a| a.key.as_str()).collect();
    assert!(keys.contains(&"svc:v1/am/resolve-critical"), "{keys:?}");
}

#[test]
fn signal_alerts_are_raised_once_resolved_and_can_come_back() {
    use crate::detect::{Signal, SignalKind};
    let signal = |active: bool| {
        Change::Signal(Signal {
            kind: SignalKind::TelemetryAbsent,
            deployment: "svc".into(),
            model_version: "v1".into(),
            arm: None,
            active,
            at: "t".into(),
            events_seen: 1,
            n_canary: 1,
            n_control: 1,
            expected_share: None,
            observed_share: None,
            statistic: 400.0,
            threshold: 300.0,
        })
    };
    let mut l = Ladder::new(&config(PolicyMode::Enforce), BTreeMap::new());
    let up = l.on_change(&signal(true), "t1");
    assert_eq!(up.actions.len(), 1);
    l.mark_done("svc", &up.actions[0].key);
    assert!(
        l.on_change(&signal(true), "t2").actions.is_empty(),
        "raised once"
    );
    assert!(l
        .latch("svc")
        .unwrap()
        .signal_alerts
        .contains_key("svc:v1:telemetry_absent"));
    let down = l.on_change(&signal(false), "t3");
    assert_eq!(down.actions[0].op, Op::Resolve);
    assert_eq!(
        down.actions[0].incident.opened_at, "t1",
        "resolved as raised"
    );
    let again = l.on_change(&signal(true), "t4");
    assert_eq!(again.actions.len(), 1, "a new episode alerts again");
    assert!(!l.gate_closed("svc"), "signals never contain");
}

#[test]
fn dry_run_marks_actions_and_leaves_the_gate_open() {
    let mut l = Ladder::new(&config(PolicyMode::DryRun), BTreeMap::new());
    let out = l.on_change(&verdict(VerdictState::Fail, "v1"), "t1");
    assert!(out.actions.iter().all(|a| a.dry_run));
    assert_eq!(l.latch("svc").unwrap().phase, Phase::Contained);
    assert!(!l.gate_closed("svc"));
}

#[test]
fn persisted_latch_survives_and_pending_actions_are_redone() {
    let mut l = Ladder::new(&config(PolicyMode::Enforce), BTreeMap::new());
    let out = l.on_change(&verdict(VerdictState::Fail, "v1"), "t1");
    l.mark_done("svc", &out.actions[0].key);
    let restored = Ladder::new(&config(PolicyMode::Enforce), l.latches().clone());
    assert!(restored.gate_closed("svc"));
    let pending: Vec<String> = restored.pending().into_iter().map(|a| a.key).collect();
    assert_eq!(pending, ["svc:v1/am/trigger-critical"]);
}

#[test]
fn no_policy_contains_at_the_gate_and_alerts_every_alert_target() {
    let mut c = config(PolicyMode::Enforce);
    c.policies.clear();
    let mut l = Ladder::new(&c, BTreeMap::new());
    let out = l.on_change(&verdict(VerdictState::Fail, "v1"), "t1");
    assert!(l.gate_closed("svc"));
    let keys: Vec<&str> = out.actions.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        ["svc:v1/am/trigger-critical"],
        "no flag flipped without a policy naming it"
    );
}

#[test]
fn manual_contain_and_double_contain() {
    let mut l = Ladder::new(&config(PolicyMode::DryRun), BTreeMap::new());
    let out = l
        .contain("svc", &Requester::approver("ana"), "looks off", "t1")
        .unwrap();
    assert!(
        l.gate_closed("svc"),
        "a human's containment is never dry-run"
    );
    assert!(out.actions.iter().all(|a| !a.dry_run));
    assert_eq!(
        l.contain("svc", &Requester::approver("ana"), "again", "t2"),
        Err(LadderError::AlreadyContained("svc".into()))
    );
}

/// Regression: releasing a contained latch that has no incident panicked and ended the
/// containment task; it is an error the operator can act on.
#[test]
fn release_of_a_contained_latch_without_incident_is_an_error_not_a_panic() {
    let mut latches = BTreeMap::new();
    latches.insert(
        "svc".to_string(),
        Latch {
            phase: Phase::Contained,
            ..Latch::default()
        },
    );
    let mut l = Ladder::new(&config(PolicyMode::Enforce), latches);
    assert_eq!(
        l.release("svc", "ana", "checked", "t"),
        Err(LadderError::NoIncident("svc".into()))
    );
}

/// Regression: actions redone at start-up were sent as critical even when the deployment was
/// contained on a warning (a policy with `contain_on = ["warn"]`): a different alert, and a
/// key that never matched what was done.
#[test]
fn actions_redone_after_a_restart_keep_the_severity_they_were_taken_with() {
    let mut c = config(PolicyMode::Enforce);
    c.policies[0].contain_on = vec![TriggerState::Warn, TriggerState::Fail];
    let mut l = Ladder::new(&c, BTreeMap::new());
    let out = l.on_change(&verdict(VerdictState::Warn, "v1"), "t1");
    assert!(l.gate_closed("svc"), "contained on a warning");
    let keys: Vec<&str> = out.actions.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["svc:v1/flag/contain", "svc:v1/am/trigger-warning"]);
    l.mark_done("svc", "svc:v1/flag/contain");
    let saved = serde_json::to_string(l.latches()).unwrap();
    let restored = Ladder::new(&c, serde_json::from_str(&saved).unwrap());
    let pending = restored.pending();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].key, "svc:v1/am/trigger-warning");
    assert_eq!(pending[0].severity, Severity::Warning);
}

/// Regression: a signal alert raised for a canary version that was then replaced never
/// cleared and was re-sent forever. The first change about the new version resolves it.
#[test]
fn signal_alerts_of_a_replaced_canary_version_are_resolved() {
    use crate::detect::{Signal, SignalKind};
    let mut l = Ladder::new(&config(PolicyMode::Enforce), BTreeMap::new());
    let up = l.on_change(
        &Change::Signal(Signal {
            kind: SignalKind::SampleRatioMismatch,
            deployment: "svc".into(),
            model_version: "v1".into(),
            arm: None,
            active: true,
            at: "t".into(),
            events_seen: 1,
            n_canary: 1,
            n_control: 1,
            expected_share: Some(0.5),
            observed_share: Some(0.3),
            statistic: 400.0,
            threshold: 300.0,
        }),
        "t1",
    );
    l.mark_done("svc", &up.actions[0].key);
    let next = l.on_change(&verdict(VerdictState::Pass, "v2"), "t2");
    assert_eq!(next.actions.len(), 1);
    let resolve = &next.actions[0];
    assert_eq!(resolve.op, Op::Resolve);
    assert_eq!(resolve.incident.id, "svc:v1:sample_ratio_mismatch");
    assert_eq!(resolve.incident.opened_at, "t1", "resolved as raised");
    assert!(l.latch("svc").unwrap().signal_alerts.is_empty());
    assert!(
        l.on_change(&verdict(VerdictState::Pass, "v2"), "t3")
            .actions
            .is_empty(),
        "resolved once"
    );
}

/// Regression: a `pass` on one metric returned a warned deployment to healthy (and resolved
/// its warning) while another metric still warned.
#[test]
fn a_pass_on_one_metric_does_not_calm_a_warning_on_another() {
    let on = |metric: &str, state: VerdictState| {
        let Change::Verdict(mut v) = verdict(state, "v1") else {
            unreachable!()
        };
        v.metric = metric.into();
        Change::Verdict(v)
    };
    let mut l = Ladder::new(&config(PolicyMode::Enforce), BTreeMap::new());
    l.on_change(&on("refusal", VerdictState::Warn), "t1");
    l.on_change(&on("tone", VerdictState::Warn), "t2");
    assert_eq!(l.latch("svc").unwrap().phase, Phase::Suspect);
    let out = l.on_change(&on("refusal", VerdictState::Pass), "t3");
    assert_eq!(
        l.latch("svc").unwrap().phase,
        Phase::Suspect,
        "tone still warns"
    );
    assert!(out.actions.is_empty(), "the warning stays open");
    let out = l.on_change(&on("tone", VerdictState::Pass), "t4");
    assert_eq!(l.latch("svc").unwrap().phase, Phase::Healthy);
    assert_eq!(out.actions.len(), 1);
    assert_eq!(out.actions[0].op, Op::Resolve);
}
