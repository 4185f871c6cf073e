//! `driftd simulate`: the detection benchmark.
//!
//! Runs the real [`Detector`](crate::detect::Detector) (the code the daemon runs, with the config's detection settings)
//! over generated canary lifetimes and reports false-alarm rates (A/A) and detection delay
//! (drift), side by side with, on the same streams:
//! - **fixed window**: the way interval-based canary analysis (Kayenta, Argo Rollouts, Flagger)
//!   looks every `window` events per arm, made honest as a group-sequential test: a one-sided
//!   two-proportion z-test (rates) or Welch z-test (tone) on the cumulative data at each look,
//!   against O'Brien–Fleming boundaries whose overall level is the metric's αₘ;
//! - **naive threshold**: fail when the canary's last `naive_window` events are worse than
//!   control's by more than twice the metric's `min_effect`;
//! - **oracle**: for a drift from the start, the SPRT that knows the effect (likelihood ratio
//!   of the true effect against 0 in the same Gaussian approximation, threshold `1/αₘ`, from
//!   the same `min_events` floor; for a drift in one segment, restricted to that segment, whose
//!   arms must reach the floor); for a late drift, the CUSUM that knows the rate (or mean)
//!   before and after (not the onset), with the threshold whose exact in-control ARL
//!   ([`crate::detect::arl`]) is one late-drift chart's share of the deployment's budget. The
//!   physical limit the other rows are read against.
//!
//! Honesty rules ([`stats`]): delay counts from the onset; an alarm before it is an early false
//! alarm, never a detection; medians and p90 are over every lifetime, undetected ones as ∞.
//!
//! Each lifetime is one deployment with equally many events per arm (canary and control in
//! turn); in a scenario with segments each event's segment is drawn uniformly (its own seeded
//! stream), driftd runs with `cohorts.segment_keys = ["segment"]`, and the deployment-level
//! test alone (no segment keys) runs beside it on the same events; every event's signals are drawn by the same [`Sampler`](crate::traffic::Sampler) that
//! `driftd gen` and the demo produce from, with the default [`TrafficModel`] (refusal 5%,
//! escalation 2%, tone ~ N(0.3, 0.3) clamped to [-1, 1]); `tone_tail` = tone < −0.5. Lifetime
//! `r` uses seed `seed + r`: deterministic for a seed whatever the number of threads. This module
//! owns the benchmark only; it must not be used by the daemon.

mod lifetime;
mod report;
pub mod stats;

use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::traffic::{Drift, DriftMetric, TrafficModel};
use lifetime::{Lifetime, Plan};
pub use report::markdown;
use stats::{classify, summarise, DelaySummary};

/// Benchmark settings.
#[derive(Debug, Clone, Serialize)]
pub struct SimOptions {
    /// Canary lifetimes per drift scenario.
    pub runs: usize,
    /// Lifetimes of the A/A scenario (its family-wise rate near 0.01 needs many).
    pub aa_runs: usize,
    /// Events per arm in one lifetime.
    pub events_per_arm: u64,
    /// Event rate per arm (sets event time, which the self-baseline thresholds depend on).
    pub rate_per_arm: f64,
    /// Events per arm between two looks of the fixed-window test.
    pub window: u64,
    /// Events per arm in the naive rule's window.
    pub naive_window: u64,
    /// Seed of lifetime 0; lifetime `i` uses `seed + i`.
    pub seed: u64,
    /// Worker threads.
    pub threads: usize,
    /// Bootstrap resamples for the standard error of a median.
    pub bootstrap: usize,
    /// Only the scenarios whose name contains this (all when unset).
    pub only: Option<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            runs: 2000,
            aa_runs: 2000,
            events_per_arm: 50_000,
            rate_per_arm: 100.0,
            window: 6_000,
            naive_window: 1_000,
            seed: 1,
            threads: 2,
            bootstrap: 400,
            only: None,
        }
    }
}

/// The metrics of the synthetic model, in the default config's order.
const METRICS: [&str; 4] = ["refusal", "escalation", "tone", "tone_tail"];

/// A drift in the canary arm.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SimDrift {
    /// The metric that drifts.
    pub metric: DriftMetric,
    /// New rate, or the tone mean shift.
    pub to: f64,
    /// Fraction of the lifetime after which it starts.
    pub onset: f64,
}

/// A named benchmark case: the traffic of one canary lifetime, with or without a drift.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Name shown in the report.
    pub name: &'static str,
    /// `None` for A/A.
    pub drift: Option<SimDrift>,
    /// Equal segments the traffic is split into (0: none); a drift hits the first only.
    pub segments: usize,
}

impl Scenario {
    /// The traffic of one lifetime: one deployment, the default rates, the drift (if any) on
    /// its canary.
    fn traffic(&self, seed: u64) -> TrafficModel {
        TrafficModel {
            deployments: 1,
            drift: self
                .drift
                .iter()
                .map(|d| Drift {
                    metric: d.metric,
                    to: d.to,
                    at: d.onset,
                    deployments: 1,
                })
                .collect(),
            seed,
            ..TrafficModel::default()
        }
    }

    /// The column of the drifted metric in [`METRICS`].
    fn drifted_metric(&self) -> Option<usize> {
        self.drift.map(|d| match d.metric {
            DriftMetric::Refusal => 0,
            DriftMetric::Escalation => 1,
            DriftMetric::Tone => 2,
        })
    }

    /// The drifted metric's mean before and after the drift, and its per-event standard
    /// deviation for a score (`None` for a rate). Tone's clamping to [-1, 1] is ignored (it
    /// moves the mean by under 1% of the shift).
    fn means(&self, d: SimDrift) -> (f64, f64, Option<f64>) {
        let m = TrafficModel::default();
        match d.metric {
            DriftMetric::Refusal => (m.refusal, d.to, None),
            DriftMetric::Escalation => (m.escalation, d.to, None),
            DriftMetric::Tone => (m.tone_mean, m.tone_mean + d.to, Some(m.tone_sd)),
        }
    }

    /// The drift's effect in the worse direction (every default metric: up is worse, tone down).
    fn worse_effect(&self, d: SimDrift) -> f64 {
        let (before, after, _) = self.means(d);
        (after - before).abs()
    }
}

/// The scenarios of the README tables. Tone's shift is 1.5 × its `min_effect` (0.05): at 2×
/// (−0.1) the `min_events` floor of 300 decided most lifetimes.
pub fn scenarios() -> Vec<Scenario> {
    let d = |metric, to, onset| Some(SimDrift { metric, to, onset });
    let s = |name, drift| Scenario {
        name,
        drift,
        segments: 0,
    };
    let seg = |name, drift| Scenario {
        name,
        drift,
        segments: 10,
    };
    vec![
        s("A/A (no drift)", None),
        s(
            "refusal 5% -> 6.5% (off-grid)",
            d(DriftMetric::Refusal, 0.065, 0.0),
        ),
        s("refusal 5% -> 7%", d(DriftMetric::Refusal, 0.07, 0.0)),
        s(
            "refusal 5% -> 8% (off-grid)",
            d(DriftMetric::Refusal, 0.08, 0.0),
        ),
        s("refusal 5% -> 10%", d(DriftMetric::Refusal, 0.10, 0.0)),
        s("escalation 2% -> 4%", d(DriftMetric::Escalation, 0.04, 0.0)),
        s(
            "tone mean -0.075 (sd 0.3)",
            d(DriftMetric::Tone, -0.075, 0.0),
        ),
        s(
            "refusal 5% -> 10% from half-way",
            d(DriftMetric::Refusal, 0.10, 0.5),
        ),
        s(
            "refusal 5% -> 7% from half-way",
            d(DriftMetric::Refusal, 0.07, 0.5),
        ),
        seg("A/A, 10 segments", None),
        seg(
            "refusal 5% -> 15% in 1 of 10 segments",
            d(DriftMetric::Refusal, 0.15, 0.0),
        ),
    ]
}

/// The methods compared; the last is the oracle (an SPRT from the start, a CUSUM for late
/// drift). [`DEPLOYMENT_ALONE`] runs in drift scenarios with segments only.
pub const METHODS: [&str; 7] = [
    "driftd (canary vs control)",
    "driftd (self-baseline)",
    "driftd (either)",
    "fixed window (O'Brien-Fleming looks)",
    "naive threshold",
    "driftd, deployment-level test alone (no segment_keys)",
    "oracle",
];

/// The index in [`METHODS`] of the deployment-level test without segment tests.
pub const DEPLOYMENT_ALONE: usize = 5;

/// True when method `k` runs in `scenario`. The deployment-level test alone runs beside a
/// drift in segments; in an A/A it is the first A/A's driftd row (the same test on the same
/// kind of stream), so the A/A with segments does not pay for it again.
fn measured(scenario: &Scenario, k: usize) -> bool {
    k != DEPLOYMENT_ALONE || (scenario.segments > 0 && scenario.drift.is_some())
}

/// Results of one scenario and method.
#[derive(Debug, Clone, Serialize)]
pub struct MethodResult {
    /// Method name.
    pub method: &'static str,
    /// A/A: share of lifetimes with a false fail, per metric (config order).
    pub false_fail_rate: Option<[f64; 4]>,
    /// A/A: share of lifetimes with any false fail.
    pub familywise_false_fail_rate: Option<f64>,
    /// A/A: the binomial standard error of `familywise_false_fail_rate`.
    pub familywise_se: Option<f64>,
    /// Drift: delays on the drifted metric (`None` for a row not yet measured).
    pub delay: Option<DelaySummary>,
}

/// Results of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// The scenario.
    pub scenario: Scenario,
    /// Lifetimes run.
    pub lifetimes: usize,
    /// One entry per method.
    pub methods: Vec<MethodResult>,
    /// The drifted metric's αₘ.
    pub metric_alpha: Option<f64>,
    /// Events per arm a fixed-horizon test at one-sided αₘ and 90% power needs.
    pub fixed_horizon_n: Option<u64>,
    /// A/A: driftd's chart alarms (late drift and canary self-baseline `fail`s, every
    /// metric) per week of traffic at `rate_per_arm` per deployment, and its Poisson standard
    /// error; each lifetime is `events_per_arm / rate_per_arm` seconds of traffic.
    pub chart_alarms_per_week: Option<(f64, f64)>,
    /// A/A: weeks of traffic the lifetimes add up to.
    pub weeks: f64,
    /// Wall-clock seconds the scenario took.
    pub seconds: f64,
}

/// The whole benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Settings.
    pub options: SimOptions,
    /// Family-wise alpha of the config.
    pub alpha: f64,
    /// Looks of the fixed-window test per lifetime.
    pub looks: u64,
    /// Per scenario.
    pub scenarios: Vec<ScenarioResult>,
}

/// Every lifetime of `scenario`, in lifetime order whatever the thread count.
fn lifetimes(
    config: &Config,
    opts: &SimOptions,
    plan: &Plan,
    scenario: &Scenario,
    runs: usize,
) -> Vec<Lifetime> {
    let threads = opts.threads.max(1);
    let mut all: Vec<(usize, Lifetime)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                s.spawn(move || {
                    (w..runs)
                        .step_by(threads)
                        .map(|r| {
                            (
                                r,
                                lifetime::run(config, opts, plan, scenario, opts.seed + r as u64),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("simulation thread does not panic"))
            .collect()
    });
    all.sort_by_key(|(r, _)| *r);
    all.into_iter().map(|(_, f)| f).collect()
}

/// Runs one scenario.
pub fn run_scenario(config: &Config, opts: &SimOptions, scenario: &Scenario) -> ScenarioResult {
    let started = Instant::now();
    let plan = Plan::new(config, opts, scenario);
    let runs = if scenario.drift.is_some() {
        opts.runs
    } else {
        opts.aa_runs
    };
    let all = lifetimes(config, opts, &plan, scenario, runs);
    let n = all.len().max(1) as f64;
    let alphas = config.metric_alphas();
    let onset = scenario
        .drift
        .map(|d| (d.onset.clamp(0.0, 1.0) * opts.events_per_arm as f64) as u64);
    let methods = METHODS
        .iter()
        .enumerate()
        .map(|(k, &method)| match (scenario.drifted_metric(), onset) {
            _ if !measured(scenario, k) => MethodResult {
                method,
                false_fail_rate: None,
                familywise_false_fail_rate: None,
                familywise_se: None,
                delay: None,
            },
            (Some(m), Some(onset)) => MethodResult {
                method,
                false_fail_rate: None,
                familywise_false_fail_rate: None,
                familywise_se: None,
                delay: Some({
                    let outcomes: Vec<_> =
                        all.iter().map(|f| classify(f.first[k][m], onset)).collect();
                    summarise(&outcomes, plan.floor(m), opts.bootstrap)
                }),
            },
            _ => {
                let familywise = (k + 1 < METHODS.len()).then(|| {
                    all.iter()
                        .filter(|f| f.first[k].iter().any(Option::is_some))
                        .count() as f64
                        / n
                });
                MethodResult {
                    method,
                    false_fail_rate: (k + 1 < METHODS.len()).then(|| {
                        std::array::from_fn(|m| {
                            all.iter().filter(|f| f.first[k][m].is_some()).count() as f64 / n
                        })
                    }),
                    familywise_false_fail_rate: familywise,
                    familywise_se: familywise.map(|p| (p * (1.0 - p) / n).sqrt()),
                    delay: None,
                }
            }
        })
        .collect();
    let weeks = all.len() as f64 * opts.events_per_arm as f64
        / opts.rate_per_arm.max(1e-9)
        / (7.0 * 86_400.0);
    let chart_alarms: u64 = all.iter().map(|f| u64::from(f.chart_alarms)).sum();
    ScenarioResult {
        scenario: scenario.clone(),
        lifetimes: all.len(),
        methods,
        metric_alpha: scenario.drifted_metric().map(|m| alphas[m]),
        fixed_horizon_n: scenario.drift.zip(scenario.drifted_metric()).map(|(d, m)| {
            let (before, after, sd) = scenario.means(d);
            stats::fixed_horizon_n(before, after, sd, alphas[m], 0.9)
        }),
        chart_alarms_per_week: (scenario.drift.is_none() && weeks > 0.0).then(|| {
            let a = chart_alarms as f64;
            (a / weeks, a.sqrt() / weeks)
        }),
        weeks,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Runs every scenario with lifetimes to run: `--runs 0` leaves out the drifts and `--aa-runs 0`
/// the A/A.
pub fn run(config: &Config, opts: &SimOptions) -> Report {
    Report {
        options: opts.clone(),
        alpha: config.detection.alpha,
        looks: opts.events_per_arm / opts.window.max(1),
        scenarios: scenarios()
            .iter()
            .filter(|s| match s.drift {
                None => opts.aa_runs > 0,
                Some(_) => opts.runs > 0,
            })
            .filter(|s| {
                opts.only
                    .as_ref()
                    .is_none_or(|o| s.name.contains(o.as_str()))
            })
            .map(|s| run_scenario(config, opts, s))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(runs: usize, threads: usize) -> SimOptions {
        SimOptions {
            runs,
            aa_runs: runs,
            events_per_arm: 4000,
            window: 1000,
            threads,
            bootstrap: 50,
            ..SimOptions::default()
        }
    }

    #[test]
    fn small_simulation_is_deterministic_and_detects_a_large_drift() {
        let config = Config::default();
        let s = Scenario {
            name: "t",
            drift: Some(SimDrift {
                metric: DriftMetric::Refusal,
                to: 0.15,
                onset: 0.0,
            }),
            segments: 0,
        };
        let a = run_scenario(&config, &small(6, 2), &s);
        let b = run_scenario(&config, &small(6, 1), &s);
        let (da, db) = (a.methods[0].delay.clone(), b.methods[0].delay.clone());
        assert_eq!(da, db);
        assert_eq!(da.expect("measured").detected, 1.0);
        let oracle = a.methods[METHODS.len() - 1]
            .delay
            .clone()
            .expect("an oracle from the start");
        assert_eq!(oracle.detected, 1.0);
        assert!(a.fixed_horizon_n.is_some_and(|n| n > 0));
    }

    /// An A/A reports its family-wise rate with a binomial standard error and the charts'
    /// false alarms per week of the traffic it simulated (6 lifetimes of 4,000 events per arm
    /// at 100 events/s: 240 s, 240/604,800 of a week); a drift reports neither.
    #[test]
    fn aa_reports_standard_errors_and_chart_alarms_per_week() {
        let config = Config::default();
        let aa = Scenario {
            name: "aa",
            drift: None,
            segments: 0,
        };
        let r = run_scenario(&config, &small(6, 2), &aa);
        assert!((r.weeks - 240.0 / 604_800.0).abs() < 1e-12, "{}", r.weeks);
        let (rate, se) = r.chart_alarms_per_week.expect("an A/A counts chart alarms");
        assert!(rate >= 0.0 && (rate == 0.0) == (se == 0.0), "{rate} {se}");
        let driftd = &r.methods[2];
        let p = driftd.familywise_false_fail_rate.expect("an A/A rate");
        let se = driftd.familywise_se.expect("its standard error");
        assert!((se - (p * (1.0 - p) / 6.0).sqrt()).abs() < 1e-12);
        let drift = Scenario {
            name: "drift",
            drift: Some(SimDrift {
                metric: DriftMetric::Refusal,
                to: 0.15,
                onset: 0.0,
            }),
            segments: 0,
        };
        assert_eq!(
            run_scenario(&config, &small(2, 1), &drift).chart_alarms_per_week,
            None
        );
    }

    /// A drift half-way: every alarm the comparison methods raise in the first half is early,
    /// not a detection, and the late oracle (a CUSUM that knows both rates) detects after it.
    #[test]
    fn late_drift_counts_alarms_before_the_onset_as_early() {
        let config = Config::default();
        let s = Scenario {
            name: "late",
            drift: Some(SimDrift {
                metric: DriftMetric::Refusal,
                to: 0.30,
                onset: 0.5,
            }),
            segments: 0,
        };
        let r = run_scenario(&config, &small(8, 2), &s);
        let oracle = r.methods[METHODS.len() - 1]
            .delay
            .clone()
            .expect("measured");
        assert_eq!(oracle.detected, 1.0, "{oracle:?}");
        assert!(
            oracle.median.is_some_and(|m| m <= 400),
            "a CUSUM that knows 5% -> 30% needs few events after the onset: {oracle:?}"
        );
        let ab = r.methods[0].delay.clone().expect("measured");
        assert!(ab.detected + ab.early > 0.99, "{ab:?}");
        assert!(
            ab.median.is_some_and(|m| m <= 2000),
            "delay from the onset: {ab:?}"
        );
    }
}
