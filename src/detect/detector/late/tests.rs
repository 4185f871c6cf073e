use super::*;
use crate::config::Config;
use crate::detect::arl::{arl, Increments};
use crate::detect::detector::Detector;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The refusal metric's tuning under the default config (1 event per 10 ms per arm).
fn refusal() -> LateTuning {
    Detector::new(&Config::default()).rules[0].late
}

fn bern(rng: &mut SmallRng, p: f64) -> f64 {
    f64::from(u8::from(rng.random_bool(p)))
}

/// Feeds `n` canary/control pairs; returns the canary event (1-based) that alarmed.
fn feed(
    late: &mut Late,
    t: &LateTuning,
    control: &mut Moments,
    rng: &mut SmallRng,
    (p_canary, p_control): (f64, f64),
    n: u64,
) -> Option<u64> {
    for i in 0..n {
        control.push(bern(rng, p_control));
        let x = bern(rng, p_canary);
        if late.push(t, x, control).is_some() {
            return Some(i + 1);
        }
    }
    None
}

#[test]
fn charts_wait_for_control_then_calibrate_and_recalibrate_as_control_grows() {
    let t = refusal();
    let (mut late, mut control) = (Late::default(), Moments::default());
    let mut rng = SmallRng::seed_from_u64(1);
    assert_eq!(
        feed(&mut late, &t, &mut control, &mut rng, (0.05, 0.05), 999),
        None
    );
    assert!(late.charts.iter().all(|c| c.threshold.is_none()));
    feed(&mut late, &t, &mut control, &mut rng, (0.05, 0.05), 1);
    let first: Vec<Option<f64>> = late.charts.iter().map(|c| c.threshold).collect();
    // At 1,000 control events the margin (1.645 standard errors, 1.1 points) is more than half
    // the 2x chart's shift of 2 points: no threshold keeps its budget, it waits.
    assert_eq!(first[0], None, "{first:?}");
    let first = first[1].expect("the 5x chart starts");
    feed(&mut late, &t, &mut control, &mut rng, (0.05, 0.05), 15_000);
    let later: Vec<f64> = late.charts.iter().map(|c| c.threshold.unwrap()).collect();
    println!("thresholds after 1,000 control events {first:?}, after 16,000 {later:?}");
    // The margin for the reference's noise shrinks as control accumulates.
    assert!(later[1] < first, "{first:?} {later:?}");
    // Recalibrated at each half octave: 1,000, 1,415, 2,002, … the last at or below 16,000.
    let mut at = 1000u64;
    while (at as f64 * STEP).ceil() as u64 <= 16_000 {
        at = (at as f64 * STEP).ceil() as u64;
    }
    assert_eq!(late.calibrated_at, at);
}

#[test]
fn a_late_doubling_is_caught_and_nothing_before_it() {
    let t = refusal();
    let mut delays = Vec::new();
    for seed in 0..5 {
        let (mut late, mut control) = (Late::default(), Moments::default());
        let mut rng = SmallRng::seed_from_u64(seed);
        let before = feed(&mut late, &t, &mut control, &mut rng, (0.05, 0.05), 25_000);
        assert_eq!(before, None, "false alarm before the onset (seed {seed})");
        let after = feed(&mut late, &t, &mut control, &mut rng, (0.10, 0.05), 25_000);
        let n = after.expect("a doubling from half-way is caught");
        let (mean, run, statistic, threshold) = late.evidence().expect("evidence");
        assert!(
            statistic >= threshold && run > 0 && mean > 0.05,
            "{mean} {run}"
        );
        delays.push(n);
    }
    println!("delays after onset: {delays:?}");
    assert!(delays.iter().all(|&n| n < 2500), "{delays:?}");
}

#[test]
fn a_better_canary_or_a_worse_control_never_alarms() {
    let t = refusal();
    let (mut late, mut control) = (Late::default(), Moments::default());
    let mut rng = SmallRng::seed_from_u64(9);
    let p = (0.03, 0.08);
    assert_eq!(feed(&mut late, &t, &mut control, &mut rng, p, 30_000), None);
}

/// In control and with a known reference, each chart's run lengths (fixed seed) average its
/// exact ARL at the threshold it was calibrated to, within 15% (300 runs of a nearly geometric
/// run length: a relative sd of about 6%), and that ARL meets the budget.
#[test]
fn in_control_run_lengths_match_the_exact_arl() {
    let t = LateTuning {
        // A budget of 2,000 canary events per false alarm per chart.
        arl0: 2000.0,
        ..refusal()
    };
    let p = 0.05;
    // A control of 2²⁶ events at exactly p: the margin is negligible.
    let n = 1u64 << 26;
    let control = Moments {
        n,
        sum: p * (n as f64 + 1.0) - 0.5,
        sumsq: p * (n as f64 + 1.0) - 0.5,
    };
    let mut late = Late::default();
    for _ in 0..3 {
        late.push(&t, 0.0, &control);
    }
    let (reference, scale) = reference(&t, &control);
    let mut rng = SmallRng::seed_from_u64(11);
    for (i, chart) in late.charts.iter().enumerate() {
        let h = chart.threshold.expect("calibrated");
        let exact = arl(
            Increments::bernoulli(p, reference, reference + MULTIPLES[i] * t.min_effect),
            h,
        );
        let runs = 300;
        let mut total = 0u64;
        for _ in 0..runs {
            let mut s: f64 = 0.0;
            while s < h {
                total += 1;
                s = (s + increment(&t, i, bern(&mut rng, p), reference, scale)).max(0.0);
            }
        }
        let mc = total as f64 / f64::from(runs);
        println!("chart {i}: h {h:.3}, exact ARL {exact:.0}, simulated {mc:.0}");
        assert!(
            (mc / exact - 1.0).abs() < 0.15,
            "chart {i}: {mc} vs {exact}"
        );
        assert!(exact >= 2000.0, "chart {i}: ARL {exact} under the budget");
    }
}

/// One canary event's values of the default metrics at the default traffic model's rates
/// (refusal 5%, escalation 2%, tone ~ N(0.3, 0.3) clamped to [−1, 1], tone_tail = tone < −0.5),
/// refusal at `refusal` instead.
fn draw(rng: &mut SmallRng, refusal: f64) -> [f64; 4] {
    let tone: f64 = rand_distr::Distribution::sample(
        &rand_distr::Normal::new(0.3, 0.3).expect("valid normal"),
        rng,
    );
    let tone = tone.clamp(-1.0, 1.0);
    [
        bern(rng, refusal),
        bern(rng, 0.02),
        tone,
        f64::from(u8::from(tone < -0.5)),
    ]
}

/// Measurement (release, a few minutes):
/// `cargo test --release --lib late_false_alarms_per_week -- --ignored --nocapture`.
/// 25 weeks of in-control traffic at 100 events/s per arm, as back-to-back canary lifetimes of
/// 50,000 events per arm, through the late-drift charts of the four default metrics with the
/// default config's budget (late drift's 80% of the charts' in-control ARL of
/// `lifetime_events / (α × chart_share)` = 6.25·10⁷ canary events: 0.77 false alarms per week
/// per deployment at 100 events/s). Prints the false alarms per week and fails above the
/// budget.
#[test]
#[ignore = "measurement: cargo test --release --lib late_false_alarms_per_week -- --ignored --nocapture"]
fn late_false_alarms_per_week() {
    let config = Config::default();
    let d = &config.detection;
    let budget = 6.048e7 * d.alpha * d.chart_share / d.lifetime_events as f64 * 0.8;
    let detector = Detector::new(&config);
    let tunings: Vec<LateTuning> = detector.rules.iter().map(|r| r.late).collect();
    let weeks = 25u64;
    let per_arm = 50_000u64;
    let lifetimes = weeks * 7 * 86_400 * 100 / per_arm;
    let alarms: Vec<[u64; 4]> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u64)
            .map(|w| {
                let tunings = &tunings;
                s.spawn(move || {
                    let mut alarms = [0u64; 4];
                    for life in (w..lifetimes).step_by(2) {
                        let mut rng = SmallRng::seed_from_u64(1_000_000 + life);
                        let mut late = vec![Late::default(); 4];
                        let mut control = [Moments::default(); 4];
                        for _ in 0..per_arm {
                            let (c, k) = (draw(&mut rng, 0.05), draw(&mut rng, 0.05));
                            for m in 0..4 {
                                control[m].push(k[m]);
                                if late[m].push(&tunings[m], c[m], &control[m]).is_some() {
                                    alarms[m] += 1;
                                }
                            }
                        }
                    }
                    alarms
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let per_metric: Vec<u64> = (0..4).map(|m| alarms.iter().map(|a| a[m]).sum()).collect();
    let total: u64 = per_metric.iter().sum();
    let per_week = total as f64 / weeks as f64;
    println!(
        "late drift, in control, {weeks} weeks at 100 ev/s per arm ({lifetimes} lifetimes of \
         {per_arm} events per arm): {total} false alarms (per metric {per_metric:?}), \
         {per_week:.3} per week per deployment (budget {budget:.3})"
    );
    assert!(per_week <= budget, "{per_week} false alarms per week");
}

/// Measurement (release, about a minute):
/// `cargo test --release --lib late_drift_delays -- --ignored --nocapture`.
/// The full detector with the default config; refusal 5% in both arms, the canary's rises at
/// half of a 50,000-events-per-arm lifetime. Prints the median events per arm after the onset
/// to the first canary-failing verdict (late drift or the sequential test), its standard error
/// (from the interquartile range), the share detected and the alarms before the onset.
#[test]
#[ignore = "measurement: cargo test --release --lib late_drift_delays -- --ignored --nocapture"]
fn late_drift_delays() {
    use crate::detect::verdict::{Change, Source, VerdictState};
    use crate::event::Arm;
    use crate::state::CohortKey;
    let config = Config::default();
    let runs = 1000u64;
    let (per_arm, onset) = (50_000u64, 25_000u64);
    for to in [0.10, 0.07] {
        let results: Vec<Result<Option<u64>, u64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2u64)
                .map(|w| {
                    let config = &config;
                    s.spawn(move || {
                        (w..runs)
                            .step_by(2)
                            .map(|r| {
                                let mut d = Detector::new(config);
                                let mut rng = SmallRng::seed_from_u64(50_000 + r);
                                let keys = [Arm::Canary, Arm::Control].map(|arm| CohortKey {
                                    deployment: "sim".into(),
                                    model_version: format!("{arm:?}"),
                                    arm,
                                    segment: vec![],
                                });
                                let mut out = Vec::new();
                                for i in 0..per_arm {
                                    let p = if i >= onset { to } else { 0.05 };
                                    let values = [draw(&mut rng, p), draw(&mut rng, 0.05)];
                                    for a in 0..2 {
                                        let t = (i * 10) as i64 + a as i64;
                                        d.observe(a, &keys[a], &values[a], t, &mut out);
                                    }
                                    let failed = out.drain(..).any(|c| {
                                        matches!(c, Change::Verdict(v) if v.state == VerdictState::Fail
                                            && matches!(v.source, Source::LateDrift | Source::CanaryVsControl))
                                    });
                                    if failed {
                                        return if i < onset { Err(i) } else { Ok(Some(i - onset + 1)) };
                                    }
                                }
                                Ok(None)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let early = results.iter().filter(|r| r.is_err()).count();
        let mut delays: Vec<u64> = results.iter().filter_map(|r| (*r).ok().flatten()).collect();
        delays.sort_unstable();
        let q = |f: f64| delays[((f * delays.len() as f64) as usize).min(delays.len() - 1)] as f64;
        let median = q(0.5);
        // Median's standard error ≈ 1.253·σ/√n with σ ≈ IQR/1.349.
        let se = 1.253 * (q(0.75) - q(0.25)) / 1.349 / (delays.len() as f64).sqrt();
        println!(
            "late 5% -> {:.0}% at half-way: median {median:.0} ± {se:.0} events per arm after \
             onset over {} detected of {runs} lifetimes; {early} alarms before the onset",
            to * 100.0,
            delays.len()
        );
    }
}
