//! Segment tests: the combined evidence is a martingale under the null, a drift in one segment
//! fails and names it, the reported bound agrees with the decision, and a restored detector
//! decides as the one that never stopped.

use super::*;
use crate::config::Config;
use crate::detect::{Change, DetectPart, Detector, Source};
use crate::event::Arm;
use crate::state::CohortKey;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The default config with segment keys (`locale`) and without self-baseline.
fn config() -> Config {
    let mut c = Config::default();
    c.cohorts.segment_keys = vec!["locale".into()];
    c.detection.self_baseline.enabled = false;
    c
}

fn key(arm: Arm, locale: usize) -> CohortKey {
    CohortKey {
        deployment: "svc".into(),
        model_version: if arm == Arm::Canary { "v1" } else { "base" }.into(),
        arm,
        segment: vec![Some(format!("l{locale}"))],
    }
}

/// Feeds `pairs` event pairs over `locales` equal locales (drawn at random), the canary's
/// refusal rate `p(locale)`, control's 5%, continuing the cohort numbering in `cohorts`.
fn feed(
    d: &mut Detector,
    rng: &mut SmallRng,
    cohorts: &mut Vec<(Arm, usize)>,
    (from, pairs): (u64, u64),
    locales: usize,
    p: impl Fn(usize) -> f64,
    out: &mut Vec<Change>,
) {
    for i in from..from + pairs {
        for arm in [Arm::Canary, Arm::Control] {
            let g = rng.random_range(0..locales);
            let c = match cohorts.iter().position(|x| *x == (arm, g)) {
                Some(c) => c,
                None => {
                    cohorts.push((arm, g));
                    cohorts.len() - 1
                }
            };
            let rate = if arm == Arm::Canary { p(g) } else { 0.05 };
            let v = [f64::from(u8::from(rng.random_bool(rate))), 0.0, 0.3, 0.0];
            d.observe(c, &key(arm, g), &v, i as i64 * 10, out);
        }
    }
}

fn refusal_fail(out: &[Change]) -> Option<&Verdict> {
    out.iter().find_map(|c| match c {
        Change::Verdict(v)
            if v.metric == "refusal"
                && v.source == Source::CanaryVsControl
                && v.state == VerdictState::Fail =>
        {
            Some(v)
        }
        _ => None,
    })
}

/// Refusal 5% → 15% in one of 10 locales is a 1-point rise in the totals: the segment tests
/// fail it, name the locale, and report its estimate, counts and a bound past 0; the
/// deployment-level test alone, on the same events, has not failed by then.
#[test]
fn a_drift_in_one_segment_fails_and_names_it() {
    let (mut with, mut alone) = (Detector::new(&config()), {
        let mut c = config();
        c.cohorts.segment_keys.clear();
        Detector::new(&c)
    });
    let mut rng = SmallRng::seed_from_u64(7);
    let (mut cohorts, mut out) = (Vec::new(), Vec::new());
    let p = |g| if g == 3 { 0.15 } else { 0.05 };
    feed(
        &mut with,
        &mut rng,
        &mut cohorts,
        (0, 8_000),
        10,
        p,
        &mut out,
    );
    let v = refusal_fail(&out)
        .expect("the segment tests fail it")
        .clone();
    println!("{}", v.headline());
    assert_eq!(v.segment.as_deref(), Some("l3"));
    let d = v.estimate.expect("estimate");
    assert!(
        (d - 0.10).abs() < 0.05,
        "the segment's estimate, not the totals': {d}"
    );
    assert!(
        v.n_canary >= 300 && v.n_canary < 1_500,
        "the segment's count: {v:?}"
    );
    assert!(v.ci_low.expect("bound") >= 0.0 && v.ci_high.unwrap() > d);
    assert!(v.p_value.unwrap() <= v.alpha.unwrap());
    let at = v.events_seen;
    let mut rng = SmallRng::seed_from_u64(7);
    let (mut cohorts, mut out) = (Vec::new(), Vec::new());
    feed(
        &mut alone,
        &mut rng,
        &mut cohorts,
        (0, 8_000),
        10,
        p,
        &mut out,
    );
    let first = refusal_fail(&out).map(|v| v.events_seen);
    println!("segments fail at event {at}, the deployment-level test alone at {first:?}");
    assert!(first.is_none_or(|f| f > at));
    let view = &with.snapshot()[0];
    let seg = view.segments.as_ref().expect("shown");
    assert_eq!((seg.max_tested, seg.tested.len()), (16, 10));
    assert_eq!(
        view.metrics[0].canary_vs_control.segment.as_deref(),
        Some("l3")
    );
}

/// Values past `max_tested` get no test of their own: counted, and in the totals only.
#[test]
fn values_past_the_bound_are_counted_not_tested() {
    let mut c = config();
    c.detection.segments.max_tested = 3;
    let mut d = Detector::new(&c);
    let mut rng = SmallRng::seed_from_u64(8);
    let (mut cohorts, mut out) = (Vec::new(), Vec::new());
    feed(
        &mut d,
        &mut rng,
        &mut cohorts,
        (0, 2_000),
        6,
        |_| 0.05,
        &mut out,
    );
    let view = d.snapshot().remove(0);
    let seg = view.segments.expect("shown");
    assert_eq!(seg.tested.len(), 3);
    let [k, n0] = seg.untested_events;
    assert!(k > 500 && n0 > 500 && k + n0 < 4_000, "{k} {n0}");
    let v = &view.metrics[0].canary_vs_control;
    assert_eq!(
        (v.state, v.n_canary, v.segment.as_deref()),
        (VerdictState::Pass, 2_000, None)
    );
}

/// Under the null, `E = (1 − s)Λ_dep + (s/K)ΣΛ_k` as the detector computes it (plug-in
/// variances, the `min_events` floors, K = 4 slots of which 3 used, segments drawn at random)
/// has mean 1 at fixed looks within simulation noise, and the share of paths on which it ever
/// reaches `1/α` stays under α (Ville). Scores N(0, 1), effects 0.025–0.25 (mixture scale
/// 0.05): the segments' evidence moves, and no atom's likelihood ratio is so heavy-tailed at
/// these looks that a sample mean over 4,000 paths cannot see its mean. Fixed seed.
#[test]
fn the_combined_evidence_is_a_martingale_under_the_null() {
    let d = Detector::new(&config());
    let rule = Rule {
        binary: false,
        tau: 0.05,
        min_effect: 0.1,
        min_events: 30,
        alpha: 0.05,
        ..d.rules[0].clone()
    };
    let mut rng = SmallRng::seed_from_u64(14);
    let normal = rand_distr::Normal::new(0.0, 1.0).expect("unit normal");
    let (paths, looks) = (4_000, [100u64, 300]);
    let (mut sums, mut crossed) = ([0.0; 2], 0);
    for _ in 0..paths {
        let mut test = super::super::ab::fresh_tests(1).remove(0);
        let mut seg = Segments::new(4, 0.5, 1);
        let mut hit = false;
        for n in 1..=300u64 {
            for canary in [true, false] {
                let g = rng.random_range(0..3usize);
                let slot = seg.slot_of(&g.to_string());
                let x: f64 = rng.sample(normal);
                if canary {
                    test.canary.push(x);
                } else {
                    test.control.push(x);
                }
                seg.push(0, slot, canary, x);
                test.state = next_state(&rule, &mut test, &mut seg, 0, slot);
            }
            let e = if test.state == VerdictState::Insufficient {
                1.0
            } else {
                let (_, _, l) =
                    sequential::worse_log_lr(&test.canary, &test.control, false, true, 0.05);
                seg.evidence(0, &rule, l).0
            };
            hit |= e >= 1.0 / rule.alpha;
            if let Some(k) = looks.iter().position(|&l| l == n) {
                sums[k] += e;
            }
        }
        crossed += usize::from(hit);
    }
    for (n, sum) in looks.iter().zip(sums) {
        let m = sum / paths as f64;
        println!("E[E_{n}] ≈ {m:.4}");
        assert!((m - 1.0).abs() < 0.15, "E[E_{n}] = {m}");
    }
    let share = crossed as f64 / paths as f64;
    println!("P(sup E ≥ 1/α) ≈ {share:.4} (α = {})", rule.alpha);
    assert!(share <= rule.alpha, "{share}");
}

/// A run with segments, saved after `cut` pairs and restored into a fresh detector (through
/// postcard, as a snapshot stores it: JSON would round a chart's statistic by an ulp), decides
/// exactly as the run that never stopped.
#[test]
fn restored_segment_tests_decide_as_the_whole_run() {
    let p = |g| if g == 1 { 0.12 } else { 0.05 };
    let total = 6_000;
    let run = |cut: u64, restore: bool| {
        let mut d = Detector::new(&config());
        let mut rng = SmallRng::seed_from_u64(21);
        let (mut cohorts, mut out) = (Vec::new(), Vec::new());
        feed(&mut d, &mut rng, &mut cohorts, (0, cut), 5, p, &mut out);
        if restore {
            let all: Vec<usize> = (0..cohorts.len()).collect();
            let bytes = postcard::to_stdvec(&d.export(&all)).expect("serialisable");
            let part: DetectPart = postcard::from_bytes(&bytes).expect("readable");
            let mut fresh = Detector::new(&config());
            let placed: Vec<Option<usize>> = all.iter().map(|&i| Some(i)).collect();
            fresh.import(part, &placed, &mut Vec::new()).expect("fits");
            d = fresh;
        }
        out.clear();
        feed(
            &mut d,
            &mut rng,
            &mut cohorts,
            (cut, total - cut),
            5,
            p,
            &mut out,
        );
        (
            serde_json::to_string(&out).expect("serialisable"),
            serde_json::to_string(&d.snapshot()).expect("serialisable"),
        )
    };
    for cut in [700, 2_500] {
        let (whole, chunked) = (run(cut, false), run(cut, true));
        assert!(
            whole.0.contains(r#""state":"fail""#) || cut == 2_500,
            "{}",
            whole.0
        );
        assert_eq!(chunked, whole, "restored at {cut}");
    }
}

fn rate(n: u64, p: f64) -> Moments {
    let k = (n as f64 * p).round();
    Moments {
        n,
        sum: k,
        sumsq: k,
    }
}

proptest! {
    /// Over random looks at random segments (rates, counts, both orientations), the reported
    /// harmful-side bound and the state of the combined test never contradict each other: the
    /// bound is ≥ 0 exactly when `p ≤ αₘ`, a `fail` always carries one past 0, a `pass` never.
    #[test]
    fn bounds_agree_with_the_decision(
        worse_up in any::<bool>(),
        looks in proptest::collection::vec((0usize..4, 50u64..3_000, 50u64..3_000, 0.0f64..0.3, 0.0f64..0.3), 1..8),
    ) {
        let d = Detector::new(&config());
        let rule = Rule { worse_up, ..d.rules[0].clone() };
        let mut test = super::super::ab::fresh_tests(1).remove(0);
        let mut seg = Segments::new(4, 0.5, 1);
        for (g, n1, n0, p1, p0) in looks {
            let slot = seg.slot_of(&g.to_string());
            let (c, k) = (rate(n1, p1), rate(n0, p0));
            for (arm, add) in [(true, c), (false, k)] {
                let a = &mut seg.arms[0][slot.expect("free")];
                let m = if arm { &mut a.canary } else { &mut a.control };
                m.n += add.n;
                m.sum += add.sum;
                m.sumsq += add.sumsq;
                let t = if arm { &mut test.canary } else { &mut test.control };
                t.n += add.n;
                t.sum += add.sum;
                t.sumsq += add.sumsq;
            }
            test.state = next_state(&rule, &mut test, &mut seg, 0, slot);
            let v = verdict(Subject("svc", Some("v1")), &rule, &test, Some((&seg, 0)), 0, 0);
            if v.state == VerdictState::Insufficient {
                prop_assert!(v.ci_low.is_none() && v.ci_high.is_none());
                continue;
            }
            let h = if worse_up { v.ci_low.unwrap() } else { -v.ci_high.unwrap() };
            let significant = test.p_value <= rule.alpha;
            prop_assert_eq!(h >= 0.0, significant, "bound {} p {}: {:?}", h, test.p_value, v);
            match v.state {
                VerdictState::Fail => prop_assert!(h >= 0.0),
                VerdictState::Pass => prop_assert!(h < 0.0),
                _ => {}
            }
            let (lo, hi) = (v.ci_low.unwrap(), v.ci_high.unwrap());
            prop_assert!(lo.is_finite() && hi.is_finite() && lo <= hi, "{:?}", v);
            prop_assert!(v.statistic.is_finite() || significant);
        }
    }
}
