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
    // Recalibrated at each eighth of an octave: 1,000, 1,091, 1,190, … the last at or below
    // 16,000.
    let mut at = 1000u64;
    while (at as f64 * STEP).ceil() as u64 <= 16_000 {
        at = (at as f64 * STEP).ceil() as u64;
    }
    assert_eq!(late.calibrated_at, at);
}

/// The margin is `z` standard errors up to `until` control events, then `z·√(until/n)`.
#[test]
fn the_margin_shrinks_like_one_over_n_after_until() {
    let m = Margin {
        z: 1.6,
        until: 4000.0,
    };
    assert_eq!(m.at(1000.0), 1.6);
    assert_eq!(m.at(4000.0), 1.6);
    assert!((m.at(16_000.0) - 0.8).abs() < 1e-12);
    let constant = Margin {
        z: 1.6,
        until: f64::INFINITY,
    };
    assert_eq!(constant.at(1e9), 1.6);
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

/// False alarms of the late-drift charts of the four default metrics with tunings `tunings`, in
/// control, over `lifetimes` back-to-back canary lifetimes of `per_arm` events per arm (lifetime
/// `l` drawn with seed `1,000,000 + l`), on two threads. Per metric.
fn in_control_alarms(tunings: &[LateTuning], lifetimes: u64, per_arm: u64) -> [u64; 4] {
    let alarms: Vec<[u64; 4]> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u64)
            .map(|w| {
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
    std::array::from_fn(|m| alarms.iter().map(|a| a[m]).sum())
}

/// Lifetimes of 50,000 events per arm in `weeks` weeks at 100 events/s per arm.
fn lifetimes_in(weeks: u64) -> u64 {
    weeks * 7 * 86_400 * 100 / 50_000
}

/// The late-drift share of the budget in false alarms per week per deployment at 100 events/s
/// per arm: 80% of the charts' `6.048·10⁷ × α × chart_share / lifetime_events`.
fn late_weekly_budget(config: &Config) -> f64 {
    let d = &config.detection;
    6.048e7 * d.alpha * d.chart_share / d.lifetime_events as f64 * 0.8
}

/// Measurement (release, about nine minutes on 2 free cores):
/// `cargo test --release --lib late_false_alarms_per_week -- --ignored --nocapture`.
/// 25 weeks of in-control traffic at 100 events/s per arm, as back-to-back canary lifetimes of
/// 50,000 events per arm, through the late-drift charts of the four default metrics with the
/// default config's budget (late drift's 80% of the charts' in-control ARL of
/// `lifetime_events / (α × chart_share)` = 6.25·10⁷ canary events: 0.77 false alarms per week
/// per deployment at 100 events/s). Prints the false alarms per week with a Poisson standard
/// error and fails above the budget.
#[test]
#[ignore = "measurement: cargo test --release --lib late_false_alarms_per_week -- --ignored --nocapture"]
fn late_false_alarms_per_week() {
    let config = Config::default();
    let budget = late_weekly_budget(&config);
    let detector = Detector::new(&config);
    let tunings: Vec<LateTuning> = detector.rules.iter().map(|r| r.late).collect();
    let weeks = 25u64;
    let lifetimes = lifetimes_in(weeks);
    let per_metric = in_control_alarms(&tunings, lifetimes, 50_000);
    let total: u64 = per_metric.iter().sum();
    let per_week = total as f64 / weeks as f64;
    println!(
        "late drift, in control, {weeks} weeks at 100 ev/s per arm ({lifetimes} lifetimes of \
         50000 events per arm): {total} false alarms (per metric {per_metric:?}), \
         {per_week:.3} ± {:.3} per week per deployment (budget {budget:.3})",
        (total as f64).sqrt() / weeks as f64
    );
    assert!(per_week <= budget, "{per_week} false alarms per week");
}

/// The late-drift charts alone (refusal, tuning `t`), canary and control at 5%, the canary's
/// rate rising to `to` at event 25,000 of 50,000 per arm, `runs` lifetimes (seed `70,000 + r`):
/// the median events per arm after the onset to the alarm (an early alarm or none counting as
/// ∞) and the lifetimes with an alarm before the onset.
fn chart_delays(t: &LateTuning, to: f64, runs: u64) -> (u64, usize) {
    let onset = 25_000u64;
    let mut delays: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u64)
            .map(|w| {
                s.spawn(move || {
                    (w..runs)
                        .step_by(2)
                        .map(|r| {
                            let mut rng = SmallRng::seed_from_u64(70_000 + r);
                            let (mut late, mut control) = (Late::default(), Moments::default());
                            for i in 0..2 * onset {
                                control.push(bern(&mut rng, 0.05));
                                let p = if i >= onset { to } else { 0.05 };
                                if late.push(t, bern(&mut rng, p), &control).is_some() {
                                    return if i < onset {
                                        u64::MAX - 1
                                    } else {
                                        i - onset + 1
                                    };
                                }
                            }
                            u64::MAX
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
    delays.sort_unstable();
    let early = delays.iter().filter(|&&d| d == u64::MAX - 1).count();
    (delays[delays.len() / 2], early)
}

/// Measurement (release; a minute per candidate and screening week on 2 free cores):
/// `LATE_SWEEP="1.645:inf,1.645:4000" LATE_SWEEP_WEEKS=2 cargo test --release --lib
/// late_margin_sweep -- --ignored --nocapture`. For each candidate margin (`z:until`, see
/// [`Margin`]; by default the default margin): the late-drift charts' false alarms per week per
/// deployment (in control, `LATE_SWEEP_WEEKS` weeks, default 25) and the charts' median delay
/// after a late 5% → 10% and 5% → 7% (1,000 lifetimes each). How the default margin was chosen:
/// candidates screened on a few weeks, the choice measured on 25.
#[test]
#[ignore = "measurement: cargo test --release --lib late_margin_sweep -- --ignored --nocapture"]
fn late_margin_sweep() {
    let config = Config::default();
    let detector = Detector::new(&config);
    let weeks: u64 = std::env::var("LATE_SWEEP_WEEKS").map_or(25, |w| w.parse().expect("weeks"));
    let candidates: Vec<Margin> = std::env::var("LATE_SWEEP").map_or(vec![MARGIN], |c| {
        c.split(',')
            .map(|m| {
                let (z, until) = m.split_once(':').expect("z:until");
                Margin {
                    z: z.parse().expect("z"),
                    until: until.parse().expect("until"),
                }
            })
            .collect()
    });
    println!("budget {:.3} per week", late_weekly_budget(&config));
    for margin in candidates {
        let tunings: Vec<LateTuning> = detector
            .rules
            .iter()
            .map(|r| LateTuning { margin, ..r.late })
            .collect();
        let ten = chart_delays(&tunings[0], 0.10, 1000);
        let seven = chart_delays(&tunings[0], 0.07, 1000);
        let started = std::time::Instant::now();
        let alarms = in_control_alarms(&tunings, lifetimes_in(weeks), 50_000);
        let total: u64 = alarms.iter().sum();
        println!(
            "{margin:?}: late 5->10% median {} ({} early), 5->7% median {} ({} early); \
             {total} false alarms {alarms:?} in {weeks} weeks: {:.3} ± {:.3} per week ({:.0} s)",
            ten.0,
            ten.1,
            seven.0,
            seven.1,
            total as f64 / weeks as f64,
            (total as f64).sqrt() / weeks as f64,
            started.elapsed().as_secs_f64()
        );
    }
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
