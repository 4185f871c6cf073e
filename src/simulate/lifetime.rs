//! One simulated canary lifetime: the real [`Detector`] and the comparison methods on the same
//! streams, recording when each first fails each metric.
//!
//! Owns the comparison methods (the group-sequential fixed-window test, the naive threshold, the
//! oracle SPRT for a drift from the start and the oracle CUSUM for a late one) and the per-event
//! loop. Must not summarise: [`super::stats`] does.

use crate::config::{Config, MetricKind, Worse};
use crate::detect::arl::{threshold_for_arl, Increments};
use crate::detect::cusum::Reference;
use crate::detect::sequential::{mean, observation_variance};
use crate::detect::{Change, Detector, Source, VerdictState};
use crate::event::Arm;
use crate::state::window::Moments;
use crate::state::CohortKey;
use crate::traffic::Sampler;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{measured, Scenario, SimDrift, SimOptions, DEPLOYMENT_ALONE, METHODS, METRICS};

/// The oracle's index in [`METHODS`].
const ORACLE: usize = METHODS.len() - 1;

/// Per method (in [`METHODS`] order) and metric: events per arm when it first failed.
pub(super) type FirstAlarms = [[Option<u64>; 4]; METHODS.len()];

/// What one lifetime recorded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lifetime {
    /// When each method first failed each metric.
    pub(super) first: FirstAlarms,
    /// `fail` verdicts of driftd's charts (late drift and canary self-baseline) over the
    /// lifetime, every metric: in an A/A each is a false alarm.
    pub(super) chart_alarms: u32,
}

/// What a lifetime needs from the config, resolved once per scenario.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// Per metric: rate (0/1) or score.
    binary: [bool; 4],
    /// Per metric: higher is worse.
    worse_up: [bool; 4],
    /// Per metric: `min_effect`.
    min_effect: [f64; 4],
    /// Per metric: the O'Brien–Fleming constant of the fixed-window looks at its αₘ.
    obf: [f64; 4],
    /// Looks of the fixed-window test in a lifetime.
    looks: u64,
    /// Per metric: `ln(1/αₘ)`, the oracle's threshold.
    threshold: [f64; 4],
    /// Per metric: `min_events`, the floor the oracle shares with driftd's test.
    min_events: [u64; 4],
    /// The oracle's effect in the worse direction, for a drift from the start.
    oracle_effect: Option<f64>,
    /// For a late drift: the oracle CUSUM's chart, tuned from the known rate (or mean) before
    /// the drift to the known one after, and its exact-ARL threshold.
    late_oracle: Option<(Reference, f64)>,
    /// With segments: driftd's config with `segment_keys = ["segment"]`, and the config of the
    /// deployment-level test alone (no segment keys, no self-baseline: only its canary-vs-control
    /// fails are read).
    segmented: Option<(Config, Config)>,
}

impl Plan {
    /// The plan of `scenario` under `config`.
    pub(super) fn new(config: &Config, opts: &SimOptions, scenario: &Scenario) -> Plan {
        let alphas = config.metric_alphas();
        let looks = opts.events_per_arm / opts.window.max(1);
        let each = |f: &dyn Fn(usize) -> f64| -> [f64; 4] { std::array::from_fn(f) };
        let m = &config.metrics;
        // One boundary per distinct αₘ (by default all four share one).
        let mut obf = [0.0; 4];
        for i in 0..4 {
            obf[i] = match (0..i).find(|&j| alphas[j] == alphas[i]) {
                Some(j) => obf[j],
                None => super::stats::obrien_fleming(looks as usize, alphas[i]),
            };
        }
        Plan {
            binary: std::array::from_fn(|i| m[i].kind != MetricKind::Score),
            worse_up: std::array::from_fn(|i| m[i].worse == Worse::Up),
            min_effect: each(&|i| m[i].min_effect()),
            obf,
            looks,
            threshold: each(&|i| (1.0 / alphas[i]).ln()),
            min_events: std::array::from_fn(|i| {
                m[i].min_events.unwrap_or(config.detection.min_events)
            }),
            oracle_effect: scenario
                .drift
                .filter(|d| d.onset == 0.0)
                .map(|d| scenario.worse_effect(d)),
            late_oracle: scenario
                .drift
                .filter(|d| d.onset > 0.0)
                .map(|d| late_oracle(config, scenario, d)),
            segmented: (scenario.segments > 0).then(|| {
                let mut with = config.clone();
                with.cohorts.segment_keys = vec!["segment".into()];
                let mut alone = config.clone();
                alone.cohorts.segment_keys.clear();
                alone.detection.self_baseline.enabled = false;
                alone.detection.late_drift.enabled = false;
                (with, alone)
            }),
        }
    }

    /// The `min_events` floor of metric `m`.
    pub(super) fn floor(&self, m: usize) -> u64 {
        self.min_events[m]
    }
}

/// The late-drift oracle: a log-likelihood-ratio CUSUM on the canary's values that knows the
/// metric's mean before and after the drift (not when it starts), with the threshold whose exact
/// in-control ARL is one late-drift chart's share of the deployment's budget
/// ([`Detector::late_chart_arl`]), so it is read at the error cost driftd's charts pay.
fn late_oracle(config: &Config, scenario: &Scenario, d: SimDrift) -> (Reference, f64) {
    let (before, after, sd) = scenario.means(d);
    let arl0 = Detector::late_chart_arl(config);
    match sd {
        None => {
            let chart = Reference::Bernoulli {
                p0: before,
                p1: after,
            };
            (
                chart,
                threshold_for_arl(Increments::bernoulli(before, before, after), arl0),
            )
        }
        Some(sigma) => {
            let delta = after - before;
            let chart = Reference::Gaussian {
                mu0: before,
                sigma,
                delta,
            };
            let inc = Increments::gaussian(before, sigma, before, sigma, delta);
            (chart, threshold_for_arl(inc, arl0))
        }
    }
}

/// Running sums of one arm for a comparison method.
#[derive(Debug, Clone, Copy, Default)]
struct Win {
    n: u64,
    sum: f64,
    sumsq: f64,
}

impl Win {
    fn push(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sumsq += x * x;
    }
    fn mean(&self) -> f64 {
        self.sum / self.n.max(1) as f64
    }
    fn var(&self) -> f64 {
        let n = self.n.max(2) as f64;
        ((self.sumsq - self.sum * self.sum / n) / (n - 1.0)).max(1e-12)
    }
}

/// One-sided z-statistic that canary is worse than control: the pooled two-proportion test for
/// rates, Welch's for scores.
fn z_statistic(canary: &Win, control: &Win, binary: bool, worse_up: bool) -> f64 {
    let d = canary.mean() - control.mean();
    let (n1, n0) = (canary.n as f64, control.n as f64);
    let var = if binary {
        let p = (canary.sum + control.sum) / (n1 + n0);
        (p * (1.0 - p) * (1.0 / n1 + 1.0 / n0)).max(1e-12)
    } else {
        canary.var() / n1 + control.var() / n0
    };
    (if worse_up { d } else { -d }) / var.sqrt()
}

/// The oracle's log-likelihood ratio of effect `theta` against 0 on the arms' difference, in
/// the same Gaussian approximation as driftd's test (same estimate, same plug-in variance).
fn oracle_log_lr(
    canary: &Moments,
    control: &Moments,
    binary: bool,
    worse_up: bool,
    theta: f64,
) -> f64 {
    let v = observation_variance(canary, binary) / canary.n.max(1) as f64
        + observation_variance(control, binary) / control.n.max(1) as f64;
    let d = mean(canary) - mean(control);
    let d = if worse_up { d } else { -d };
    theta * d / v - theta * theta / (2.0 * v)
}

/// Runs one lifetime of `scenario` with traffic seed `seed`.
pub(super) fn run(
    config: &Config,
    opts: &SimOptions,
    plan: &Plan,
    scenario: &Scenario,
    seed: u64,
) -> Lifetime {
    let mut sampler = Sampler::new(scenario.traffic(seed), Some(opts.events_per_arm));
    let (config, alone_config) = match &plan.segmented {
        Some((with, alone)) => (with, Some(alone)),
        None => (config, None),
    };
    let mut detector = Detector::new(config);
    let mut alone = alone_config
        .filter(|_| measured(scenario, DEPLOYMENT_ALONE))
        .map(Detector::new);
    let key = |arm, version: &str, segment: Vec<Option<String>>| CohortKey {
        deployment: "sim".into(),
        model_version: version.into(),
        arm,
        segment,
    };
    let pair = |segment: Vec<Option<String>>| {
        [
            key(Arm::Canary, "canary", segment.clone()),
            key(Arm::Control, "control", segment),
        ]
    };
    let plain = pair(vec![]);
    // Segment 0 is the one a drift hits. Cohort indices are dense in order of first appearance,
    // as the cohort table assigns them.
    let mut cohort_of: Vec<[Option<usize>; 2]> = vec![[None; 2]; scenario.segments.max(1)];
    let mut cohorts = 0;
    let keys: Vec<_> = match scenario.segments {
        0 => vec![plain.clone()],
        s => (0..s).map(|g| pair(vec![Some(format!("s{g}"))])).collect(),
    };
    let mut segment_rng = SmallRng::seed_from_u64(seed ^ 0x5e6_5e6);
    let step_ms = 1000.0 / opts.rate_per_arm;
    let mut first: FirstAlarms = [[None; 4]; METHODS.len()];
    let mut chart_alarms = 0;
    let mut cumulative = [[Win::default(); 4]; 2];
    let mut naive = [[Win::default(); 4]; 2];
    let mut oracle = [Moments::default(); 2];
    let mut late_cusum = 0.0f64;
    let mut changes = Vec::new();
    let mut alone_changes = Vec::new();
    let drifted = scenario.drifted_metric();
    for i in 0..opts.events_per_arm {
        let t = (i as f64 * step_ms) as i64;
        let mut values = [[0.0; 4]; 2];
        let mut segment = [0usize; 2];
        for a in 0..2 {
            let g = match scenario.segments {
                0 => 0,
                s => segment_rng.random_range(0..s),
            };
            segment[a] = g;
            let key = &keys[g][a];
            let (signals, _) = sampler.draw(g, key.arm, i);
            values[a] = [
                f64::from(u8::from(signals.refused)),
                f64::from(u8::from(signals.escalated)),
                signals.tone,
                f64::from(u8::from(signals.tone < -0.5)),
            ];
            let cohort = *cohort_of[g][a].get_or_insert_with(|| {
                cohorts += 1;
                cohorts - 1
            });
            detector.observe(cohort, key, &values[a], t + a as i64, &mut changes);
            if let Some(d) = alone.as_mut() {
                d.observe(a, &plain[a], &values[a], t + a as i64, &mut alone_changes);
            }
            for m in 0..4 {
                cumulative[a][m].push(values[a][m]);
                naive[a][m].push(values[a][m]);
            }
        }
        let n = i + 1;
        for c in changes.drain(..) {
            let Change::Verdict(v) = c else { continue };
            if v.state != VerdictState::Fail {
                continue;
            }
            let m = METRICS
                .iter()
                .position(|x| *x == v.metric)
                .expect("default metrics");
            let method = match v.source {
                Source::CanaryVsControl | Source::LateDrift => 0,
                Source::SelfBaseline => 1,
            };
            if v.source != Source::CanaryVsControl {
                chart_alarms += 1;
            }
            // Only fails count: a control cohort's self-baseline alarm is a warn (control
            // degraded), so drift in both arms is detected by the canary's own alarm.
            for k in [method, 2] {
                first[k][m].get_or_insert(n);
            }
        }
        for c in alone_changes.drain(..) {
            if let Change::Verdict(v) = c {
                if v.state == VerdictState::Fail && v.source == Source::CanaryVsControl {
                    let m = METRICS
                        .iter()
                        .position(|x| *x == v.metric)
                        .expect("default metrics");
                    first[DEPLOYMENT_ALONE][m].get_or_insert(n);
                }
            }
        }
        if n % opts.window == 0 && n / opts.window <= plan.looks {
            // O'Brien–Fleming: the boundary on the cumulative z falls as √(looks/k).
            let bound = (plan.looks as f64 / (n / opts.window) as f64).sqrt();
            for m in 0..4 {
                let z = z_statistic(
                    &cumulative[0][m],
                    &cumulative[1][m],
                    plan.binary[m],
                    plan.worse_up[m],
                );
                if z >= plan.obf[m] * bound {
                    first[3][m].get_or_insert(n);
                }
            }
        }
        if n % opts.naive_window == 0 {
            for m in 0..4 {
                let d = naive[0][m].mean() - naive[1][m].mean();
                if (if plan.worse_up[m] { d } else { -d }) > 2.0 * plan.min_effect[m] {
                    first[4][m].get_or_insert(n);
                }
                naive[0][m] = Win::default();
                naive[1][m] = Win::default();
            }
        }
        if let (Some(dm), Some(theta)) = (drifted, plan.oracle_effect) {
            // Restricted to the drifted segment (segment 0; the only one without segments).
            for (a, arm) in oracle.iter_mut().enumerate() {
                if segment[a] == 0 {
                    arm.push(values[a][dm]);
                }
            }
            if first[ORACLE][dm].is_none()
                && oracle.iter().all(|arm| arm.n >= plan.min_events[dm])
                && oracle_log_lr(
                    &oracle[0],
                    &oracle[1],
                    plan.binary[dm],
                    plan.worse_up[dm],
                    theta,
                ) >= plan.threshold[dm]
            {
                first[ORACLE][dm] = Some(n);
            }
        }
        if let (Some(dm), Some((chart, h))) = (drifted, plan.late_oracle) {
            late_cusum = (late_cusum + chart.increment(values[0][dm])).max(0.0);
            if late_cusum >= h {
                first[ORACLE][dm].get_or_insert(n);
            }
        }
        if let Some(dm) = drifted {
            let done = (0..METHODS.len())
                .filter(|&k| measured(scenario, k))
                .all(|k| first[k][dm].is_some());
            if done {
                break;
            }
        }
    }
    Lifetime {
        first,
        chart_alarms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::sequential::normal_cdf;

    fn window_p_value(canary: &Win, control: &Win, binary: bool, worse_up: bool) -> f64 {
        1.0 - normal_cdf(z_statistic(canary, control, binary, worse_up))
    }

    #[test]
    fn window_test_matches_a_hand_computed_z() {
        // 60/1000 vs 40/1000: pooled p = 0.05, se = sqrt(0.05·0.95·0.002) = 0.009747,
        // z = 0.02/0.009747 = 2.0520, one-sided p = 0.02008 (standard normal table).
        let mut a = Win::default();
        let mut b = Win::default();
        for i in 0..1000 {
            a.push(f64::from(u8::from(i < 60)));
            b.push(f64::from(u8::from(i < 40)));
        }
        assert!((window_p_value(&a, &b, true, true) - 0.02008).abs() < 2e-4);
    }

    /// The oracle's statistic by hand: 70/1000 vs 50/1000, θ = 0.02. Smoothed variances
    /// (70.5/1001)(930.5/1001) = 0.065469 and (50.5/1001)(950.5/1001) = 0.047906 over 1000
    /// each: V = 1.133736e-4; `ln Λ = 0.02·0.02/V − 0.0004/(2V) = 1.764079`.
    #[test]
    fn oracle_log_lr_by_hand() {
        let rate = |k: u64| Moments {
            n: 1000,
            sum: k as f64,
            sumsq: k as f64,
        };
        let l = oracle_log_lr(&rate(70), &rate(50), true, true, 0.02);
        assert!((l - 1.764_079).abs() < 1e-5, "{l}");
    }
}
