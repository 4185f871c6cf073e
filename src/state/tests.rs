use super::*;
use crate::event::Decoder;

fn table(max: usize) -> CohortTable {
    let mut c = Config::default();
    c.cohorts.max_cohorts = max;
    c.ingest.allowed_lateness = std::time::Duration::from_secs(30);
    CohortTable::new(&c, Decoder::new(&c).signals())
}

fn event(dep: &str, arm: Arm, t: i64, refused: bool, tone: f64) -> Event {
    Event {
        emitted_at_ms: t,
        deployment: dep.into(),
        model_version: "v1".into(),
        arm,
        segment: vec![],
        signals: vec![f64::from(u8::from(refused)), 0.0, tone],
    }
}

#[test]
fn rates_means_and_tails_per_cohort() {
    let mut t = table(10);
    for i in 0..100 {
        t.apply(
            0,
            event(
                "a",
                Arm::Canary,
                1_000 + i,
                i % 4 == 0,
                if i % 10 == 0 { -0.8 } else { 0.5 },
            ),
        )
        .unwrap();
    }
    let s = t.snapshot();
    let c = &s.cohorts[0];
    assert_eq!(c.events_total, 100);
    let m = |name: &str| c.metrics.iter().find(|m| m.name == name).unwrap();
    assert_eq!(m("refusal").window.value, Some(0.25));
    assert_eq!(m("tone_tail").window.value, Some(0.1));
    assert!((m("tone").window.value.unwrap() - (0.9 * 0.5 - 0.1 * 0.8)).abs() < 1e-12);
    let q = m("tone").window.quantiles.unwrap();
    assert!((q.p50 - 0.5).abs() <= 0.02 && q.p99 <= 0.52);
}

#[test]
fn cap_folds_new_cohorts_into_overflow() {
    let mut t = table(2);
    assert_eq!(
        t.apply(0, event("a", Arm::Canary, 0, false, 0.0)),
        Ok(Applied::Cohort(0))
    );
    assert_eq!(
        t.apply(0, event("b", Arm::Canary, 0, false, 0.0)),
        Ok(Applied::Cohort(1))
    );
    assert_eq!(
        t.apply(0, event("c", Arm::Canary, 0, false, 0.0)),
        Ok(Applied::Overflow(2))
    );
    assert_eq!(
        t.apply(0, event("d", Arm::Control, 0, false, 0.0)),
        Ok(Applied::Overflow(2))
    );
    assert_eq!(
        t.apply(0, event("a", Arm::Canary, 0, false, 0.0)),
        Ok(Applied::Cohort(0))
    );
    let s = t.snapshot();
    assert_eq!(s.cohorts.len(), 3);
    assert!(s.cohorts[2].overflow);
    assert_eq!(s.cohorts[2].events_total, 2);
    assert_eq!(s.cohorts[2].deployment, OVERFLOW_DEPLOYMENT);
}

#[test]
fn late_events_within_lateness_land_later_ones_are_refused() {
    let mut t = table(10);
    t.apply(0, event("a", Arm::Canary, 100_000, false, 0.0))
        .unwrap();
    assert!(t
        .apply(0, event("a", Arm::Canary, 70_000, true, 0.0))
        .is_ok());
    assert_eq!(
        t.apply(0, event("a", Arm::Canary, 69_999, true, 0.0)),
        Err(Late)
    );
    let s = t.snapshot();
    assert_eq!(s.cohorts[0].events_total, 2);
    assert_eq!(s.cohorts[0].metrics[0].window.n, 2);
    assert_eq!(s.watermark_ms, Some(100_000));
}

#[test]
fn window_slides_with_event_time() {
    let mut t = table(10);
    t.apply(0, event("a", Arm::Canary, 0, true, 0.0)).unwrap();
    t.apply(0, event("a", Arm::Canary, 3_600_000, false, 0.0))
        .unwrap();
    let s = t.snapshot();
    let refusal = &s.cohorts[0].metrics[0];
    assert_eq!(refusal.window.n, 1, "the first event left the 1h window");
    assert_eq!(refusal.window.value, Some(0.0));
    assert_eq!(s.cohorts[0].events_total, 2);
    assert!(refusal.ewma.weight > 1.0, "the EWMA still remembers it");
}

/// Issue 7, item 5: cohorts that come and go.
mod expiry {
    use super::*;

    const HOUR: i64 = 3_600_000;

    /// Default windows: 1 h span, so idle expiry is 2 h.
    fn idle_table(max: usize) -> CohortTable {
        let mut c = Config::default();
        c.cohorts.max_cohorts = max;
        CohortTable::new(&c, Decoder::new(&c).signals())
    }

    fn keys(t: &CohortTable) -> Vec<String> {
        t.snapshot()
            .cohorts
            .iter()
            .map(|c| format!("{}/{}", c.deployment, c.arm.as_str()))
            .collect()
    }

    #[test]
    fn an_idle_cohort_leaves_when_its_partitions_clock_moves_on_and_makes_room() {
        let mut t = idle_table(3);
        t.apply(0, event("old", Arm::Canary, 0, false, 0.1))
            .unwrap();
        t.apply(1, event("elsewhere", Arm::Canary, 0, false, 0.1))
            .unwrap();
        t.apply(0, event("live", Arm::Canary, 0, false, 0.1))
            .unwrap();
        t.apply(0, event("live", Arm::Canary, HOUR, false, 0.1))
            .unwrap();
        assert_eq!(t.take_evicted(), None, "one hour idle is not two");
        // Partition 0's clock passes 2 h after `old`'s last event (and `live`'s first).
        let applied = t
            .apply(0, event("live", Arm::Canary, 2 * HOUR + 10_000, true, 0.1))
            .unwrap();
        let evicted = t.take_evicted().expect("evicted");
        assert_eq!(evicted.map, [None, Some(0), Some(1)]);
        assert_eq!(evicted.keys.len(), 1);
        assert_eq!(evicted.keys[0].deployment, "old");
        assert_eq!(applied, Applied::Cohort(1), "the index after the eviction");
        assert_eq!(keys(&t), ["elsewhere/canary", "live/canary"]);
        let live = &t.snapshot().cohorts[1];
        assert_eq!(live.events_total, 3, "the live cohort kept its state");
        // Partition 1's idle cohort waits for partition 1's own clock.
        assert_eq!(t.partition(0), 1);
        // Room again: a new cohort fits instead of overflowing.
        assert_eq!(
            t.apply(0, event("new", Arm::Canary, 2 * HOUR + 10_000, false, 0.1)),
            Ok(Applied::Cohort(2))
        );
        assert!(t.overflowed().is_none());
        assert!(t.take_evicted().is_none());
        // Partition 1's clock moves: its idle cohort leaves before the event is placed, so the
        // full table has room for it.
        assert_eq!(
            t.apply(1, event("other", Arm::Canary, 3 * HOUR, false, 0.1)),
            Ok(Applied::Cohort(2))
        );
        assert_eq!(keys(&t), ["live/canary", "new/canary", "other/canary"]);
        assert_eq!(
            t.take_evicted().map(|e| e.map),
            Some(vec![None, Some(0), Some(1)])
        );
    }

    #[test]
    fn the_overflow_cohort_stays_and_the_folded_key_is_named() {
        let mut t = idle_table(1);
        t.apply(0, event("a", Arm::Canary, 0, false, 0.1)).unwrap();
        assert_eq!(
            t.apply(0, event("b", Arm::Control, 0, false, 0.1)),
            Ok(Applied::Overflow(1))
        );
        assert_eq!(t.overflowed().unwrap().deployment, "b");
        t.apply(0, event("a", Arm::Canary, 5 * HOUR, false, 0.1))
            .unwrap();
        // `a` was idle for 5 h when its event came: it left first and starts afresh; the
        // overflow cohort never leaves.
        let evicted = t.take_evicted().expect("evicted");
        assert_eq!(evicted.map, [None, Some(0)]);
        assert_eq!(keys(&t), ["(overflow)/control", "a/canary"]);
        assert_eq!(t.snapshot().cohorts[1].events_total, 1);
    }
}
