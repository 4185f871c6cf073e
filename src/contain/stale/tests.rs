//! The stale-evidence rule against a real pipeline's verdicts and snapshots: what is held, when
//! fresh events confirm it, and when it is dropped without ever acting.

use std::sync::Arc;

use super::*;
use crate::config::Config;
use crate::detect::{Change, Signal};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::traffic::{Drift, DriftMetric, Generator, TrafficModel};

const MINUTE: i64 = 60_000;
const MAX_AGE: i64 = 15 * MINUTE;

fn drifting() -> Generator {
    Generator::new(
        TrafficModel {
            deployments: 1,
            drift: vec![Drift {
                metric: DriftMetric::Refusal,
                to: 0.3,
                at: 0.0,
                deployments: 1,
            }],
            seed: 7,
            ..TrafficModel::default()
        },
        None,
    )
}

/// A live pipeline (event age judged by the wall clock, as in the daemon).
fn pipeline() -> Pipeline {
    let (mut p, _) = Pipeline::new(
        &Config::default(),
        Arc::new(Metrics::new(&Config::default())),
        true,
    );
    p.collect_changes(true);
    p
}

/// Feeds `n` events from `g`, 10 ms apart from `start_ms`, rewriting the canary version to
/// `canary` when given; returns the changes.
fn feed(
    p: &mut Pipeline,
    g: &mut Generator,
    n: i64,
    start_ms: i64,
    canary: Option<&str>,
) -> Vec<Change> {
    for i in 0..n {
        let mut payload = String::from_utf8(g.next_event(start_ms + i * 10).payload).unwrap();
        if let Some(v) = canary {
            payload = payload.replace(crate::traffic::CANARY_VERSION, v);
        }
        assert!(matches!(
            p.process(0, Some(payload.as_bytes())),
            crate::pipeline::Outcome::Applied
        ));
    }
    p.take_changes()
}

fn first_fail(changes: &[Change]) -> Verdict {
    changes
        .iter()
        .find_map(|c| match c {
            Change::Verdict(v)
                if v.state == VerdictState::Fail && v.source == Source::CanaryVsControl =>
            {
                Some(v.clone())
            }
            _ => None,
        })
        .expect("the drifting canary fails")
}

#[test]
fn age_is_judged_by_the_verdicts_event_time_against_the_limit() {
    let now = parse_rfc3339_ms("2026-11-30T12:00:00.000Z").unwrap();
    assert_eq!(
        stale_by("2026-11-30T11:45:00.000Z", now, MAX_AGE),
        None,
        "at the limit: fresh"
    );
    assert_eq!(
        stale_by("2026-11-30T11:44:59.999Z", now, MAX_AGE),
        Some(MAX_AGE + 1)
    );
    assert_eq!(
        stale_by("2026-11-28T12:00:00.000Z", now, MAX_AGE),
        Some(2 * 24 * 60 * MINUTE)
    );
    assert_eq!(
        stale_by("2026-11-30T12:05:00.000Z", now, MAX_AGE),
        None,
        "ahead: fresh"
    );
}

/// A `telemetry_absent` whose silence began before a gap is judged by the silent arm's last
/// event (its `at` minus the silence), not by the fresh event that raised it; a silence caught
/// in time is fresh. (The detector itself raises none across a gap in both arms, since the
/// reporting arm must have kept sending: this is the second line.)
#[test]
fn a_telemetry_absent_raised_across_a_gap_is_stale_by_the_silent_arms_last_event() {
    let now = crate::clock::wall_ms();
    let (mut p, mut g) = (pipeline(), drifting());
    feed(&mut p, &mut g, 400, now - 2 * 24 * 60 * MINUTE, None);
    let changes = feed(&mut p, &mut g, 50, now - 1_000, None);
    assert!(
        !changes.iter().any(
            |c| matches!(c, Change::Signal(s) if s.kind == SignalKind::TelemetryAbsent && s.active)
        ),
        "no absence across a gap in both arms"
    );
    let across = Signal {
        kind: SignalKind::TelemetryAbsent,
        deployment: "support-bot".into(),
        model_version: "ft-1".into(),
        arm: Some(crate::event::Arm::Canary),
        active: true,
        at: crate::event::format_rfc3339_ms(now - 1_000),
        events_seen: 450,
        n_canary: 200,
        n_control: 200,
        expected_share: None,
        observed_share: None,
        statistic: (2 * 24 * 60 * MINUTE / 1000) as f64,
        threshold: 300.0,
    };
    assert_eq!(
        stale_by(&across.at, now, MAX_AGE),
        None,
        "raised at a fresh event"
    );
    let change = Change::Signal(across.clone());
    assert!(stale_change(&change, now, MAX_AGE).unwrap() > 47 * 60 * MINUTE);
    let caught = Signal {
        statistic: 300.0,
        ..across
    };
    assert_eq!(stale_change(&Change::Signal(caught), now, MAX_AGE), None);
}

/// Two days of drifting traffic: the fail is held; fresh events of the same, still failing
/// canary confirm it (dated by the fresh events); the snapshot of the old traffic does not.
#[test]
fn a_stale_fail_is_held_and_confirmed_by_fresh_events_of_the_same_canary() {
    let now = crate::clock::wall_ms();
    let old = now - 2 * 24 * 60 * MINUTE;
    let (mut p, mut g) = (pipeline(), drifting());
    let fail = first_fail(&feed(&mut p, &mut g, 6000, old, None));
    let age = stale_by(&fail.at, now, MAX_AGE).expect("two-day-old evidence is stale");
    assert!(age > 47 * 60 * MINUTE);

    let mut latch = Latch::default();
    assert!(hold(&mut latch, &fail, age, "t"));
    let held = latch.stale.values().next().unwrap().clone();
    assert_eq!(
        (held.state, held.metric.as_str()),
        (VerdictState::Fail, fail.metric.as_str())
    );
    assert_eq!(held.at, fail.at);

    let published = p.publish();
    assert_eq!(
        confirm(&held, "support-bot", &published, now, MAX_AGE),
        Confirm::Wait
    );

    // The test is latched at fail: fresh drifting traffic brings no new verdict change.
    let fresh = feed(&mut p, &mut g, 200, now - 5_000, None);
    assert!(
        !fresh.iter().any(|c| matches!(c, Change::Verdict(v) if v.metric == fail.metric && v.source == Source::CanaryVsControl)),
        "{fresh:?}"
    );
    let Confirm::Act(v) = confirm(&held, "support-bot", &p.publish(), now, MAX_AGE) else {
        panic!("fresh events of the failing canary confirm the held fail");
    };
    assert_eq!(
        (v.state, v.model_version.as_str()),
        (VerdictState::Fail, held.model_version.as_str())
    );
    assert_eq!(
        stale_by(&v.at, now, MAX_AGE),
        None,
        "dated by the fresh events: {}",
        v.at
    );
}

#[test]
fn a_stale_fail_of_a_replaced_canary_is_dropped_never_confirmed() {
    let now = crate::clock::wall_ms();
    let old = now - 2 * 24 * 60 * MINUTE;
    let (mut p, mut g) = (pipeline(), drifting());
    let fail = first_fail(&feed(&mut p, &mut g, 6000, old, None));
    let mut latch = Latch::default();
    assert!(hold(&mut latch, &fail, 1, "t"));
    let held = latch.stale.values().next().unwrap().clone();
    // A later canary version, fresh and drifting as well: the old version's verdict never acts.
    let changes = feed(&mut p, &mut g, 6000, now - 60_000, Some("ft-2026-11-27"));
    let Confirm::Drop(why) = confirm(&held, "support-bot", &p.publish(), now, MAX_AGE) else {
        panic!("a replaced canary's stale fail is dropped");
    };
    assert!(why.contains("replaced by ft-2026-11-27"), "{why}");
    // The new version's own verdicts forget what was held for the old one.
    let new = changes
        .iter()
        .find_map(|c| match c {
            Change::Verdict(v) if v.model_version == "ft-2026-11-27" => Some(v.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(forget(&mut latch, &new).len(), 1);
    assert!(latch.stale.is_empty());
}

/// Fresh control events alone (a promoted canary, its arm silent) confirm nothing; a snapshot
/// taken before the verdict overrules nothing.
#[test]
fn only_the_canary_arms_fresh_events_confirm_and_older_snapshots_decide_nothing() {
    let now = crate::clock::wall_ms();
    let old = now - 2 * 24 * 60 * MINUTE;
    let (mut p, mut g) = (pipeline(), drifting());
    let before = p.publish();
    let fail = first_fail(&feed(&mut p, &mut g, 6000, old, None));
    let mut latch = Latch::default();
    hold(&mut latch, &fail, 1, "t");
    let held = latch.stale.values().next().unwrap().clone();
    assert_eq!(
        confirm(&held, "support-bot", &before, now, MAX_AGE),
        Confirm::Wait
    );
    let mut control_only = String::new();
    for i in 0..400 {
        let e = String::from_utf8(g.next_event(now - 5_000 + i).payload).unwrap();
        if e.contains("\"arm\":\"control\"") {
            control_only = e;
            p.process(0, Some(control_only.as_bytes()));
        }
    }
    assert!(!control_only.is_empty());
    assert_eq!(
        confirm(&held, "support-bot", &p.publish(), now, MAX_AGE),
        Confirm::Wait
    );
}

#[test]
fn only_actionable_warn_and_fail_are_held_and_a_later_pass_forgets() {
    let now = crate::clock::wall_ms();
    let (mut p, mut g) = (pipeline(), drifting());
    let fail = first_fail(&feed(
        &mut p,
        &mut g,
        6000,
        now - 2 * 24 * 60 * MINUTE,
        None,
    ));
    let contained = Latch {
        phase: Phase::Contained,
        ..Latch::default()
    };
    let released = Latch {
        phase: Phase::Released,
        closed: vec![format!("{}:{}", fail.deployment, fail.model_version)],
        ..Latch::default()
    };
    for mut latch in [contained, released] {
        assert!(!hold(&mut latch, &fail, 1, "t"), "{:?}", latch.phase);
        assert!(latch.stale.is_empty());
    }
    let mut latch = Latch::default();
    let warn = Verdict {
        state: VerdictState::Warn,
        ..fail.clone()
    };
    assert!(hold(&mut latch, &warn, 1, "t"));
    let pass = Verdict {
        state: VerdictState::Pass,
        ..fail
    };
    assert!(!hold(&mut latch, &pass, 1, "t"));
    assert!(
        latch.stale.is_empty(),
        "the stale pass supersedes the stale warn"
    );
}

/// A live pipeline whose config expects an even split, with `TrafficModel::canary_share`
/// traffic from `g`.
fn srm_pipeline() -> Pipeline {
    let config = Config::parse("[detection]\ncanary_share = 0.5\n").unwrap();
    let (mut p, _) = Pipeline::new(&config, Arc::new(Metrics::new(&config)), true);
    p.collect_changes(true);
    p
}

fn raised(changes: &[Change], kind: SignalKind) -> Signal {
    changes
        .iter()
        .find_map(|c| match c {
            Change::Signal(s) if s.kind == kind && s.active => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{} raised: {changes:?}", kind.as_str()))
}

/// Feeds `n` events of `g`, 100 ms apart from `start_ms`, leaving out those of `skip`.
fn feed_arm(
    p: &mut Pipeline,
    g: &mut Generator,
    n: i64,
    start_ms: i64,
    skip: Option<Arm>,
) -> Vec<Change> {
    let skip = skip.map(|a| format!("\"arm\":\"{}\"", a.as_str()));
    for i in 0..n {
        let payload = String::from_utf8(g.next_event(start_ms + i * 100).payload).unwrap();
        if !skip.as_ref().is_some_and(|s| payload.contains(s.as_str())) {
            p.process(0, Some(payload.as_bytes()));
        }
    }
    p.take_changes()
}

/// A sample-ratio mismatch raised in two-day-old traffic is held, not alerted on; the
/// snapshot of that traffic confirms nothing; fresh, still skewed traffic of the same canary
/// confirms it, dated by the fresh events (so the ladder alerts on it as fresh).
#[test]
fn a_stale_sample_ratio_mismatch_is_held_and_confirmed_by_fresh_events() {
    let now = crate::clock::wall_ms();
    let old = now - 2 * 24 * 60 * MINUTE;
    let mut p = srm_pipeline();
    let mut g = Generator::new(
        TrafficModel {
            deployments: 1,
            canary_share: 0.2,
            seed: 3,
            ..TrafficModel::default()
        },
        None,
    );
    let srm = raised(
        &feed(&mut p, &mut g, 3000, old, None),
        SignalKind::SampleRatioMismatch,
    );
    let age = stale_change(&Change::Signal(srm.clone()), now, MAX_AGE).expect("stale");

    let mut latch = Latch::default();
    assert!(hold_signal(&mut latch, &srm, age, "t"));
    let held = latch.stale_signals.values().next().unwrap().clone();
    assert_eq!(held.kind, SignalKind::SampleRatioMismatch);
    assert_eq!(
        confirm_signal(&held, "support-bot", &p.publish(), now, MAX_AGE),
        ConfirmSignal::Wait,
        "old traffic confirms nothing"
    );

    let fresh = feed(&mut p, &mut g, 200, now - 5_000, None);
    assert!(
        !fresh
            .iter()
            .any(|c| matches!(c, Change::Signal(s) if s.kind == SignalKind::SampleRatioMismatch)),
        "a raised signal brings no new change: {fresh:?}"
    );
    let ConfirmSignal::Act(s) = confirm_signal(&held, "support-bot", &p.publish(), now, MAX_AGE)
    else {
        panic!("fresh skewed traffic confirms the held mismatch");
    };
    assert!(s.active);
    assert_eq!(s.model_version, held.model_version);
    assert_eq!(
        stale_change(&Change::Signal(*s.clone()), now, MAX_AGE),
        None,
        "{}",
        s.at
    );
    assert!(s.observed_share.unwrap() < 0.3, "{s:?}");

    // A fresh change of the same signal (here its clear) supersedes what was held.
    let clear = Signal {
        active: false,
        ..srm.clone()
    };
    assert_eq!(forget_signal(&mut latch, &clear).len(), 1);
    assert!(latch.stale_signals.is_empty());
}

/// Absent canary telemetry raised in old traffic: held; fresh control events while the canary
/// stays silent confirm it (its silence measured up to them); once the canary sends again it is
/// dropped instead. A stale clear and cohort overflow are never held.
#[test]
fn a_stale_absence_is_confirmed_while_the_arm_stays_silent_and_dropped_when_it_sends() {
    let now = crate::clock::wall_ms();
    let old = now - 2 * 24 * 60 * MINUTE;
    let (mut p, mut g) = (pipeline(), drifting());
    feed_arm(&mut p, &mut g, 600, old, None);
    let silent = feed_arm(&mut p, &mut g, 6000, old + 60_000, Some(Arm::Canary));
    let absent = raised(&silent, SignalKind::TelemetryAbsent);
    assert_eq!(absent.arm, Some(Arm::Canary));
    let age = stale_change(&Change::Signal(absent.clone()), now, MAX_AGE).expect("stale");

    let mut latch = Latch::default();
    assert!(hold_signal(&mut latch, &absent, age, "t"));
    let held = latch.stale_signals.values().next().unwrap().clone();
    assert_eq!(
        confirm_signal(&held, "support-bot", &p.publish(), now, MAX_AGE),
        ConfirmSignal::Wait
    );

    feed_arm(&mut p, &mut g, 100, now - 20_000, Some(Arm::Canary));
    let ConfirmSignal::Act(s) = confirm_signal(&held, "support-bot", &p.publish(), now, MAX_AGE)
    else {
        panic!("fresh control events with a silent canary confirm the absence");
    };
    assert_eq!((s.arm, s.active), (Some(Arm::Canary), true));
    assert!(
        s.statistic > 47.0 * 3600.0,
        "silent for two days: {}",
        s.statistic
    );
    assert_eq!(stale_by(&s.at, now, MAX_AGE), None);

    feed_arm(&mut p, &mut g, 100, now - 5_000, None);
    assert!(matches!(
        confirm_signal(&held, "support-bot", &p.publish(), now, MAX_AGE),
        ConfirmSignal::Drop(why) if why.contains("canary arm sends again")
    ));

    let mut latch = Latch::default();
    let cleared = Signal {
        active: false,
        ..absent.clone()
    };
    assert!(!hold_signal(&mut latch, &cleared, age, "t"));
    let overflow = Signal {
        kind: SignalKind::CohortOverflow,
        ..absent
    };
    assert!(!hold_signal(&mut latch, &overflow, age, "t"));
    assert!(latch.stale_signals.is_empty());
}
