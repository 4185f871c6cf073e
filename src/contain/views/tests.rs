use super::*;
use crate::detect::{Source, Verdict};

fn verdict(source: Source, state: VerdictState, n: u64) -> Verdict {
    Verdict {
        model_version: "v2".into(),
        source,
        state,
        events_seen: 2 * n,
        n_canary: n,
        n_control: n,
        ..Verdict::example()
    }
}

fn view(state: VerdictState, n: u64) -> DeploymentView {
    DeploymentView::of(verdict(Source::CanaryVsControl, state, n))
}

#[test]
fn a_view_is_shared_at_once_on_a_decision_change_and_otherwise_once_per_interval() {
    let (tx, _rx) = watch::channel(Remote::default());
    let mut s = Sharing::new(Duration::from_secs(30), tx);
    assert!(s.due(&view(VerdictState::Pass, 100), 1, 0), "first view");
    assert!(
        !s.due(&view(VerdictState::Pass, 5_000), 1, 29_999),
        "new figures alone wait for the refresh"
    );
    assert!(
        s.due(&view(VerdictState::Pass, 6_000), 1, 30_000),
        "refreshed once per persist.interval"
    );
    assert!(
        s.due(&view(VerdictState::Fail, 6_001), 1, 30_001),
        "a state change goes at once"
    );
    assert!(!s.due(&view(VerdictState::Fail, 6_002), 1, 30_002));
    assert!(
        s.due(&view(VerdictState::Fail, 6_002), 2, 30_003),
        "a new claim shares at once"
    );
    let mut late = view(VerdictState::Fail, 6_003);
    late.metrics[0].late_drift = Some(verdict(Source::LateDrift, VerdictState::Fail, 10));
    assert!(s.due(&late, 2, 30_004), "a source alarming goes at once");
    let mut absent = late.clone();
    absent.telemetry_absent.push(Arm::Canary);
    assert!(s.due(&absent, 2, 30_005), "a raised signal goes at once");
    s.forget("svc");
    assert!(s.due(&absent, 2, 30_006), "forgotten: shared again");
}

#[test]
fn a_view_older_than_three_intervals_and_the_read_timeout_is_expired() {
    let persist = PersistConfig::default();
    let b = bound(&persist);
    assert_eq!(b, Duration::from_secs(3 * 30 + 5));
    assert_eq!(expired(1_000, 1_000 + 95_000, b), (false, 95_000));
    assert_eq!(expired(1_000, 1_000 + 95_001, b), (true, 95_001));
    assert_eq!(
        expired(10_000, 9_000, b),
        (false, 0),
        "a writer's clock ahead of ours reads as fresh, not negative"
    );
}
