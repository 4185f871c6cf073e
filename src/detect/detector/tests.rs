//! Unit tests of the detector: verdict states, canary versions, SRM, absence, self-baseline.

use super::*;
use crate::detect::Source;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn key(arm: Arm, version: &str) -> CohortKey {
    CohortKey {
        deployment: "svc".into(),
        model_version: version.into(),
        arm,
        segment: vec![],
    }
}

fn config() -> Config {
    let mut c = Config::default();
    c.detection.self_baseline.enabled = false;
    c
}

/// Feeds `n` pairs with the given canary/control refusal rates; returns the changes.
fn run(
    d: &mut Detector,
    n: u64,
    p_canary: f64,
    p_control: f64,
    seed: u64,
    version: &str,
    out: &mut Vec<Change>,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (kc, kk) = (key(Arm::Canary, version), key(Arm::Control, "base"));
    let ci = if version == "v1" { 0 } else { 2 };
    for i in 0..n {
        let t = i as i64 * 10;
        let r = |rng: &mut SmallRng, p: f64| f64::from(u8::from(rng.random_bool(p)));
        let canary = [r(&mut rng, p_canary), 0.0, 0.3, 0.0];
        let control = [r(&mut rng, p_control), 0.0, 0.3, 0.0];
        d.observe(ci, &kc, &canary, t, out);
        d.observe(1, &kk, &control, t + 5, out);
    }
}

fn refusal_states(changes: &[Change]) -> Vec<(VerdictState, u64)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Verdict(v) if v.metric == "refusal" && v.source == Source::CanaryVsControl => {
                Some((v.state, v.n_canary))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_real_rise_fails_after_the_minimum_and_stays_failed() {
    let mut d = Detector::new(&config());
    let mut out = Vec::new();
    run(&mut d, 20_000, 0.10, 0.05, 1, "v1", &mut out);
    let states = refusal_states(&out);
    let fail = states
        .iter()
        .find(|(s, _)| *s == VerdictState::Fail)
        .expect("fails");
    assert!(fail.1 >= 300, "not before min_events: {fail:?}");
    assert!(fail.1 < 3_000, "5% -> 10% is caught quickly: {fail:?}");
    assert_eq!(states.last().unwrap().0, VerdictState::Fail, "latched");
    // insufficient is never followed directly by fail before min_events
    assert_eq!(states[0].0, VerdictState::Insufficient);
}

#[test]
fn equal_arms_pass() {
    let mut d = Detector::new(&config());
    let mut out = Vec::new();
    run(&mut d, 20_000, 0.05, 0.05, 2, "v1", &mut out);
    let snap = d.snapshot();
    let refusal = &snap[0].metrics[0];
    assert_eq!(refusal.state, VerdictState::Pass);
    let v = &refusal.canary_vs_control;
    assert_eq!((v.n_canary, v.n_control), (20_000, 20_000));
    assert!(v.ci_low.unwrap() < 0.0 && v.ci_high.unwrap() > 0.0);
    assert!(v.p_value.unwrap() > 0.01);
}

#[test]
fn new_canary_version_starts_a_new_test_and_keeps_history() {
    let mut d = Detector::new(&config());
    let mut out = Vec::new();
    run(&mut d, 5_000, 0.15, 0.05, 3, "v1", &mut out);
    assert_eq!(d.snapshot()[0].metrics[0].state, VerdictState::Fail);
    out.clear();
    run(&mut d, 100, 0.05, 0.05, 4, "v2", &mut out);
    let snap = d.snapshot();
    assert_eq!(snap[0].canary_version.as_deref(), Some("v2"));
    assert_eq!(snap[0].metrics[0].state, VerdictState::Insufficient);
    assert!(snap[0].history.iter().any(|v| v.model_version == "v1"
        && v.metric == "refusal"
        && v.state == VerdictState::Fail));
    // late events of the old version are ignored by the new test
    let n_before = snap[0].metrics[0].canary_vs_control.n_canary;
    d.observe(
        0,
        &key(Arm::Canary, "v1"),
        &[1.0, 0.0, 0.3, 0.0],
        10_000_000,
        &mut out,
    );
    assert_eq!(
        d.snapshot()[0].metrics[0].canary_vs_control.n_canary,
        n_before
    );
}

#[test]
fn sample_ratio_mismatch_is_flagged() {
    let mut c = config();
    c.detection.canary_share = Some(0.5);
    let mut d = Detector::new(&c);
    let mut out = Vec::new();
    let (kc, kk) = (key(Arm::Canary, "v1"), key(Arm::Control, "base"));
    for i in 0..6_000i64 {
        // two control events for every canary event
        d.observe(0, &kc, &[0.0, 0.0, 0.3, 0.0], i * 10, &mut out);
        d.observe(1, &kk, &[0.0, 0.0, 0.3, 0.0], i * 10 + 3, &mut out);
        d.observe(1, &kk, &[0.0, 0.0, 0.3, 0.0], i * 10 + 6, &mut out);
    }
    assert!(out.iter().any(
        |c| matches!(c, Change::Signal(s) if s.kind == SignalKind::SampleRatioMismatch && s.active)
    ));
    assert!(d.snapshot()[0].sample_ratio_mismatch);
}

#[test]
fn silent_arm_is_reported_and_cleared_and_never_fails() {
    let mut d = Detector::new(&config());
    let mut out = Vec::new();
    run(&mut d, 1_000, 0.05, 0.05, 5, "v1", &mut out);
    let kk = key(Arm::Control, "base");
    // control keeps sending for 10 minutes of event time, canary is silent
    for i in 0..600i64 {
        let t = 10_000 + i * 1000;
        d.observe(1, &kk, &[0.0, 0.0, 0.3, 0.0], t, &mut out);
    }
    let raised = out.iter().any(|c| matches!(c, Change::Signal(s) if s.kind == SignalKind::TelemetryAbsent && s.active && s.arm == Some(Arm::Canary)));
    assert!(raised);
    assert!(d.snapshot()[0]
        .metrics
        .iter()
        .all(|m| m.state != VerdictState::Fail));
    d.observe(
        0,
        &key(Arm::Canary, "v1"),
        &[0.0, 0.0, 0.3, 0.0],
        700_000,
        &mut out,
    );
    assert!(d.snapshot()[0].telemetry_absent.is_empty());
}

/// Regression: the absence check after a canary's first event, with the control arm not yet
/// seen, overflowed `now − i64::MIN` and panicked the hot path.
#[test]
fn an_arm_never_seen_is_not_absent_and_does_not_overflow() {
    let mut d = Detector::new(&config());
    let mut out = Vec::new();
    for t in [1_000, 10_000_000, i64::MAX] {
        d.observe(
            0,
            &key(Arm::Canary, "v1"),
            &[0.0, 0.0, 0.3, 0.0],
            t,
            &mut out,
        );
    }
    assert!(
        !out.iter().any(|c| matches!(c, Change::Signal(_))),
        "a never-seen arm is not 'absent'"
    );
}

#[test]
fn self_baseline_catches_drift_in_both_arms() {
    let mut c = Config::default();
    c.detection.self_baseline.warmup_events = 6000;
    let mut d = Detector::new(&c);
    let mut out = Vec::new();
    let mut rng = SmallRng::seed_from_u64(9);
    let (kc, kk) = (key(Arm::Canary, "v1"), key(Arm::Control, "base"));
    for i in 0..40_000i64 {
        let p = if i < 20_000 { 0.05 } else { 0.12 };
        let t = i * 10;
        let mut r = || f64::from(u8::from(rng.random_bool(p)));
        let (a, b) = ([r(), 0.0, 0.3, 0.0], [r(), 0.0, 0.3, 0.0]);
        d.observe(0, &kc, &a, t, &mut out);
        d.observe(1, &kk, &b, t + 5, &mut out);
    }
    let snap = d.snapshot();
    let refusal = &snap[0].metrics[0];
    assert_ne!(
        refusal.canary_vs_control.state,
        VerdictState::Fail,
        "arms agree"
    );
    let alarm = refusal.self_baseline.as_ref().expect("self-baseline alarm");
    assert_eq!(alarm.state, VerdictState::Fail);
    assert_eq!(refusal.state, VerdictState::Fail);
    assert!((alarm.reference.unwrap() - 0.05).abs() < 0.02);
}

/// Another deployment's clock, however far ahead, never makes this deployment's arms silent:
/// absence is judged on the deployment's own events (its partition's producers).
#[test]
fn another_deployments_clock_running_ahead_raises_no_absence() {
    let mut d = Detector::new(&config());
    let mut out = Vec::new();
    run(&mut d, 1_000, 0.05, 0.05, 5, "v1", &mut out);
    let other = CohortKey {
        deployment: "other".into(),
        ..key(Arm::Control, "base")
    };
    // A producer of `other` whose clock is a day ahead.
    d.observe(2, &other, &[0.0, 0.0, 0.3, 0.0], 86_400_000, &mut out);
    d.observe(
        0,
        &key(Arm::Canary, "v1"),
        &[0.0, 0.0, 0.3, 0.0],
        20_000,
        &mut out,
    );
    assert!(
        !out.iter()
            .any(|c| matches!(c, Change::Signal(s) if s.kind == SignalKind::TelemetryAbsent)),
        "{out:?}"
    );
}

/// After a gap in the whole deployment's stream (both arms quiet, e.g. an outage upstream), the
/// first event of one arm does not raise `telemetry_absent` for the other.
#[test]
fn a_gap_in_both_arms_raises_no_absence() {
    let mut d = Detector::new(&config());
    let mut out = Vec::new();
    run(&mut d, 1_000, 0.05, 0.05, 5, "v1", &mut out);
    out.clear();
    let day = 86_400_000;
    d.observe(
        1,
        &key(Arm::Control, "base"),
        &[0.0, 0.0, 0.3, 0.0],
        day,
        &mut out,
    );
    d.observe(
        0,
        &key(Arm::Canary, "v1"),
        &[0.0, 0.0, 0.3, 0.0],
        day + 10,
        &mut out,
    );
    assert!(
        !out.iter()
            .any(|c| matches!(c, Change::Signal(s) if s.kind == SignalKind::TelemetryAbsent)),
        "{out:?}"
    );
}

/// A self-baseline verdict reports the recent level, the mean of the chart's current run (since
/// its statistic last left zero), not the mean since monitoring began (issue 14, item 8): known
/// values, 5% through warm-up and 4,000 monitored events, then 25% until the alarm.
#[test]
fn a_self_baseline_verdict_reports_the_level_of_the_run_that_alarmed() {
    let mut c = Config::default();
    c.detection.self_baseline.warmup_events = 6000;
    let mut d = Detector::new(&c);
    let mut out = Vec::new();
    let (kc, kk) = (key(Arm::Canary, "v1"), key(Arm::Control, "base"));
    let canary = |i: i64| {
        let every = if i <= 6_000 + 4_000 { 20 } else { 4 };
        f64::from(u8::from(i % every == 0))
    };
    let mut alarm = None;
    for i in 0..20_000i64 {
        let t = i * 10;
        d.observe(0, &kc, &[canary(i), 0.0, 0.3, 0.0], t, &mut out);
        d.observe(
            1,
            &kk,
            &[f64::from(u8::from(i % 20 == 0)), 0.0, 0.3, 0.0],
            t + 5,
            &mut out,
        );
        alarm = out.iter().find_map(|c| match c {
            Change::Verdict(v) if v.source == Source::SelfBaseline && v.metric == "refusal" => {
                Some((i, v.clone()))
            }
            _ => None,
        });
        if alarm.is_some() {
            break;
        }
        // The chart nearest its threshold is in the view once monitoring, still a pass.
        if i == 8_000 {
            let view = d.snapshot();
            let refusal = &view[0].metrics[0];
            let w = refusal
                .self_baseline_watch
                .as_ref()
                .expect("the canary's chart is watched");
            assert_eq!(
                (w.state, w.arm, w.source),
                (VerdictState::Pass, Some(Arm::Canary), Source::SelfBaseline)
            );
            assert!(w.statistic < w.threshold && w.threshold > 0.0, "{w:?}");
            assert!((w.reference.unwrap() - 0.05).abs() < 1e-3, "{w:?}");
        }
    }
    let (at, v) = alarm.expect("the rise to 25% alarms");
    let watched = d.snapshot()[0].metrics[0].self_baseline_watch.clone();
    let watched = watched.expect("still watched after the alarm");
    assert_eq!(watched.state, VerdictState::Fail, "the alarm's state");
    assert!(watched.statistic >= watched.threshold, "{watched:?}");
    assert_eq!(v.arm, Some(Arm::Canary));
    // Warm-up ends on the 6,000th event (i = 5,999); monitoring starts after it.
    let monitored: Vec<f64> = (6_000..=at).map(canary).collect();
    let since = monitored.iter().sum::<f64>() / monitored.len() as f64;
    let recent = (at - 99..=at).map(canary).sum::<f64>() / 100.0;
    println!(
        "alarm after {} monitored events: estimate {:?}, mean since monitoring {since:.6}, last 100 {recent:.4}",
        monitored.len(),
        v.estimate
    );
    assert!((since - recent).abs() > 0.05, "the two differ here");
    // Each 20-event cycle of the 5% pattern brings the statistic back to 0, so the run that
    // alarms starts at the rise (here: 257 events, estimate 0.253).
    let estimate = v.estimate.unwrap();
    assert!((estimate - recent).abs() < 0.03, "{v:?}");
    assert!((estimate - since).abs() > 0.05, "{v:?}");
    assert!((v.reference.unwrap() - 0.05).abs() < 1e-3, "{v:?}");
}

/// Regression (issue 14, item 2): a control cohort's self-baseline alarm failed the canary,
/// which here is relatively better. It is a warn ("control degraded"); the canary's own
/// alarm, when the canary drifts too, still fails it.
#[test]
fn a_degraded_control_warns_and_never_fails_the_canary() {
    let mut c = Config::default();
    c.detection.self_baseline.warmup_events = 6000;
    let mut d = Detector::new(&c);
    let mut out = Vec::new();
    let mut rng = SmallRng::seed_from_u64(11);
    let (kc, kk) = (key(Arm::Canary, "v1"), key(Arm::Control, "base"));
    let mut step = |d: &mut Detector, i: i64, p_canary: f64, p_control: f64| {
        let mut r = |p: f64| f64::from(u8::from(rng.random_bool(p)));
        let (a, b) = ([r(p_canary), 0.0, 0.3, 0.0], [r(p_control), 0.0, 0.3, 0.0]);
        d.observe(0, &kc, &a, i * 10, &mut out);
        d.observe(1, &kk, &b, i * 10 + 5, &mut out);
    };
    for i in 0..40_000i64 {
        step(&mut d, i, 0.05, if i < 20_000 { 0.05 } else { 0.15 });
    }
    let snap = d.snapshot();
    let refusal = &snap[0].metrics[0];
    let alarm = refusal.self_baseline.as_ref().expect("control's alarm");
    assert_eq!(
        (alarm.arm, alarm.state),
        (Some(Arm::Control), VerdictState::Warn)
    );
    assert!(
        alarm.headline().contains("control degraded"),
        "{}",
        alarm.headline()
    );
    assert_ne!(refusal.canary_vs_control.state, VerdictState::Fail);
    assert_eq!(
        refusal.state,
        VerdictState::Warn,
        "combined: a warning, not a fail"
    );
    // Now the canary degrades as well: its own alarm fails it and replaces control's.
    for i in 40_000..60_000i64 {
        step(&mut d, i, 0.15, 0.15);
    }
    let snap = d.snapshot();
    let refusal = &snap[0].metrics[0];
    let alarm = refusal.self_baseline.as_ref().expect("canary's alarm");
    assert_eq!(
        (alarm.arm, alarm.state),
        (Some(Arm::Canary), VerdictState::Fail)
    );
    assert_eq!(refusal.state, VerdictState::Fail);
}

/// Feeds pairs `from..to` (10 ms apart) with the given canary/control refusal rates.
fn run_from(
    d: &mut Detector,
    range: std::ops::Range<u64>,
    p: (f64, f64),
    seed: u64,
) -> Vec<Change> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (kc, kk) = (key(Arm::Canary, "v1"), key(Arm::Control, "base"));
    let mut out = Vec::new();
    for i in range {
        let t = i as i64 * 10;
        let r = |rng: &mut SmallRng, p: f64| f64::from(u8::from(rng.random_bool(p)));
        let canary = [r(&mut rng, p.0), 0.0, 0.3, 0.0];
        let control = [r(&mut rng, p.1), 0.0, 0.3, 0.0];
        d.observe(0, &kc, &canary, t, &mut out);
        d.observe(1, &kk, &control, t + 5, &mut out);
    }
    out
}

#[test]
fn a_late_drift_fails_the_canary_the_same_with_or_without_a_snapshot_in_between() {
    let c = config();
    let mut whole = Detector::new(&c);
    let before = run_from(&mut whole, 0..20_000, (0.05, 0.05), 1);
    assert!(!before
        .iter()
        .any(|c| matches!(c, Change::Verdict(v) if v.state == VerdictState::Fail)));
    let mut restored = Detector::new(&c);
    let mut reported = Vec::new();
    restored
        .import(whole.export(&[0, 1]), &[Some(0), Some(1)], &mut reported)
        .unwrap();
    let a = run_from(&mut whole, 20_000..30_000, (0.10, 0.05), 2);
    let b = run_from(&mut restored, 20_000..30_000, (0.10, 0.05), 2);
    assert_eq!(
        a, b,
        "restored detection state decides as the uninterrupted one"
    );
    let alarm = a
        .iter()
        .find_map(|c| match c {
            Change::Verdict(v) if v.source == Source::LateDrift => Some(v.clone()),
            _ => None,
        })
        .expect("late drift caught");
    println!(
        "{}: statistic {} ≥ threshold {}",
        alarm.headline(),
        alarm.statistic,
        alarm.threshold
    );
    assert_eq!(
        (alarm.state, alarm.metric.as_str()),
        (VerdictState::Fail, "refusal")
    );
    assert!(alarm.statistic >= alarm.threshold && alarm.estimate.unwrap() > 0.0);
    assert!(
        alarm.n_canary > 20_000 && alarm.n_canary < 23_000,
        "{}",
        alarm.n_canary
    );
    let view = &whole.snapshot()[0].metrics[0];
    assert_eq!(view.state, VerdictState::Fail);
    assert_eq!(view.late_drift.as_ref(), Some(&alarm));
}
