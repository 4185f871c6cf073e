//! `driftd simulate`: the detection benchmark.
//!
//! Runs the real [`Detector`] (the code the daemon runs, with the config's detection settings)
//! over generated canary lifetimes and reports false-alarm rates (A/A) and detection delay
//! (drift), side by side with two ways canaries are commonly judged on the same streams:
//! - **fixed window**: a one-sided two-proportion z-test (rates) or Welch z-test (tone) on each
//!   non-overlapping window of `window` events per arm, the way interval-based canary analysis
//!   (Kayenta, Argo Rollouts, Flagger) re-queries the last interval, at the same per-metric α;
//! - **naive threshold**: fail when the canary's last `naive_window` events are worse than
//!   control's by more than twice the metric's `min_effect`.
//!
//! Each lifetime is one deployment with equally many events per arm (canary and control in
//! turn); every event's signals are drawn by the same [`Sampler`] that `driftd gen` and the demo
//! produce from, with the default [`TrafficModel`] (refusal 5%, escalation 2%, tone ~ N(0.3, 0.3)
//! clamped to [-1, 1]); `tone_tail` = tone < −0.5. Deterministic for a seed whatever the number
//! of threads. This module owns the benchmark only; it must not be used by the daemon.

use std::time::Instant;

use serde::Serialize;

use crate::config::{Config, Worse};
use crate::detect::{Change, Detector, Source, VerdictState};
use crate::event::Arm;
use crate::state::CohortKey;
use crate::traffic::{Drift, DriftMetric, Sampler, TrafficModel};

/// Benchmark settings.
#[derive(Debug, Clone, Serialize)]
pub struct SimOptions {
    /// Canary lifetimes per scenario.
    pub runs: usize,
    /// Events per arm in one lifetime.
    pub events_per_arm: u64,
    /// Event rate per arm (sets event time, which the self-baseline thresholds depend on).
    pub rate_per_arm: f64,
    /// Events per arm in one fixed-window test.
    pub window: u64,
    /// Events per arm in the naive rule's window.
    pub naive_window: u64,
    /// Seed of run 0; run `i` uses `seed + i`.
    pub seed: u64,
    /// Worker threads.
    pub threads: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            runs: 1000,
            events_per_arm: 50_000,
            rate_per_arm: 100.0,
            window: 6_000,
            naive_window: 1_000,
            seed: 1,
            threads: 2,
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
}

/// The scenarios of the README table.
pub fn scenarios() -> Vec<Scenario> {
    let d = |metric, to, onset| Some(SimDrift { metric, to, onset });
    vec![
        Scenario {
            name: "A/A (no drift)",
            drift: None,
        },
        Scenario {
            name: "refusal 5% -> 7%",
            drift: d(DriftMetric::Refusal, 0.07, 0.0),
        },
        Scenario {
            name: "refusal 5% -> 10%",
            drift: d(DriftMetric::Refusal, 0.10, 0.0),
        },
        Scenario {
            name: "escalation 2% -> 4%",
            drift: d(DriftMetric::Escalation, 0.04, 0.0),
        },
        Scenario {
            name: "tone mean -0.1 (sd 0.3)",
            drift: d(DriftMetric::Tone, -0.1, 0.0),
        },
        Scenario {
            name: "refusal 5% -> 10% from half-way",
            drift: d(DriftMetric::Refusal, 0.10, 0.5),
        },
    ]
}

/// The methods compared.
pub const METHODS: [&str; 5] = [
    "driftd (canary vs control)",
    "driftd (self-baseline)",
    "driftd (either)",
    "fixed window",
    "naive threshold",
];

/// For one lifetime: per method and metric, events per arm (after onset) at the first fail.
type FirstFails = [[Option<u64>; 4]; 5];

/// Results of one scenario and method.
#[derive(Debug, Clone, Serialize)]
pub struct MethodResult {
    /// Method name.
    pub method: &'static str,
    /// A/A: share of lifetimes with a false fail, per metric (config order).
    pub false_fail_rate: Option<[f64; 4]>,
    /// A/A: share of lifetimes with any false fail.
    pub familywise_false_fail_rate: Option<f64>,
    /// Drift: share of lifetimes in which the drifted metric failed.
    pub detection_rate: Option<f64>,
    /// Drift: median events per arm (after onset) to fail, over detected lifetimes.
    pub median_events: Option<u64>,
    /// Drift: 90th percentile of the same.
    pub p90_events: Option<u64>,
}

/// Results of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// The scenario.
    pub scenario: Scenario,
    /// One entry per method.
    pub methods: Vec<MethodResult>,
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
    /// Per scenario.
    pub scenarios: Vec<ScenarioResult>,
}

/// Running sums of one arm of one window-based comparison method.
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

/// One-sided z-test p-value that canary is worse than control on one window.
fn window_p_value(canary: &Win, control: &Win, binary: bool, worse_up: bool) -> f64 {
    let d = canary.mean() - control.mean();
    let (n1, n0) = (canary.n as f64, control.n as f64);
    let var = if binary {
        let p = (canary.sum + control.sum) / (n1 + n0);
        (p * (1.0 - p) * (1.0 / n1 + 1.0 / n0)).max(1e-12)
    } else {
        canary.var() / n1 + control.var() / n0
    };
    let z = if worse_up { d } else { -d } / var.sqrt();
    1.0 - crate::detect::sequential::normal_cdf(z)
}

fn run_lifetime(config: &Config, opts: &SimOptions, scenario: &Scenario, seed: u64) -> FirstFails {
    let mut sampler = Sampler::new(scenario.traffic(seed), Some(opts.events_per_arm));
    let mut detector = Detector::new(config);
    let keys = [
        CohortKey {
            deployment: "sim".into(),
            model_version: "canary".into(),
            arm: Arm::Canary,
            segment: vec![],
        },
        CohortKey {
            deployment: "sim".into(),
            model_version: "control".into(),
            arm: Arm::Control,
            segment: vec![],
        },
    ];
    let alphas = config.metric_alphas();
    let rules: Vec<(bool, bool, f64)> = config
        .metrics
        .iter()
        .map(|m| {
            (
                m.kind != crate::config::MetricKind::Score,
                m.worse == Worse::Up,
                m.min_effect(),
            )
        })
        .collect();
    // The sampler counts events per arm, so a drift starts at the same index in both.
    let onset = sampler.drift_from().unwrap_or(u64::MAX);
    let step_ms = 1000.0 / opts.rate_per_arm;
    let mut first: FirstFails = [[None; 4]; 5];
    let mut fixed = [[Win::default(); 4]; 2];
    let mut naive = [[Win::default(); 4]; 2];
    let mut changes = Vec::new();
    let drifted = scenario.drifted_metric();
    for i in 0..opts.events_per_arm {
        let after = i.checked_sub(onset).map(|a| a + 1);
        let t = (i as f64 * step_ms) as i64;
        for (a, key) in keys.iter().enumerate() {
            let (signals, _) = sampler.draw(0, key.arm, i);
            let values = [
                f64::from(u8::from(signals.refused)),
                f64::from(u8::from(signals.escalated)),
                signals.tone,
                f64::from(u8::from(signals.tone < -0.5)),
            ];
            detector.observe(a, key, &values, t + a as i64, &mut changes);
            for m in 0..4 {
                fixed[a][m].push(values[m]);
                naive[a][m].push(values[m]);
            }
        }
        let n = i + 1;
        let at = after.unwrap_or(n);
        for c in changes.drain(..) {
            if let Change::Verdict(v) = c {
                if v.state != VerdictState::Fail {
                    continue;
                }
                let m = METRICS
                    .iter()
                    .position(|x| *x == v.metric)
                    .expect("default metrics");
                let method = match v.source {
                    Source::CanaryVsControl => 0,
                    Source::SelfBaseline => 1,
                };
                // Only fails count: a control cohort's self-baseline alarm is a warn (control
                // degraded), so drift in both arms is detected by the canary's own alarm.
                for k in [method, 2] {
                    first[k][m].get_or_insert(at);
                }
            }
        }
        if n % opts.window == 0 {
            for m in 0..4 {
                let (binary, worse_up, _) = rules[m];
                if window_p_value(&fixed[0][m], &fixed[1][m], binary, worse_up) < alphas[m] {
                    first[3][m].get_or_insert(at);
                }
                fixed[0][m] = Win::default();
                fixed[1][m] = Win::default();
            }
        }
        if n % opts.naive_window == 0 {
            for m in 0..4 {
                let (_, worse_up, min_effect) = rules[m];
                let d = naive[0][m].mean() - naive[1][m].mean();
                if (if worse_up { d } else { -d }) > 2.0 * min_effect {
                    first[4][m].get_or_insert(at);
                }
                naive[0][m] = Win::default();
                naive[1][m] = Win::default();
            }
        }
        if let Some(dm) = drifted {
            if after.is_some() && first.iter().all(|f| f[dm].is_some()) {
                break;
            }
        }
    }
    first
}

fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

/// Runs one scenario.
pub fn run_scenario(config: &Config, opts: &SimOptions, scenario: &Scenario) -> ScenarioResult {
    let started = Instant::now();
    let threads = opts.threads.max(1);
    let mut all: Vec<(usize, FirstFails)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                s.spawn(move || {
                    (w..opts.runs)
                        .step_by(threads)
                        .map(|r| {
                            (
                                r,
                                run_lifetime(config, opts, scenario, opts.seed + r as u64),
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
    let runs = all.len().max(1) as f64;
    let methods = METHODS
        .iter()
        .enumerate()
        .map(|(k, method)| match scenario.drifted_metric() {
            None => {
                let mut per_metric = [0.0; 4];
                for (m, rate) in per_metric.iter_mut().enumerate() {
                    *rate = all.iter().filter(|(_, f)| f[k][m].is_some()).count() as f64 / runs;
                }
                let any = all
                    .iter()
                    .filter(|(_, f)| f[k].iter().any(Option::is_some))
                    .count() as f64
                    / runs;
                MethodResult {
                    method,
                    false_fail_rate: Some(per_metric),
                    familywise_false_fail_rate: Some(any),
                    detection_rate: None,
                    median_events: None,
                    p90_events: None,
                }
            }
            Some(m) => {
                let mut delays: Vec<u64> = all.iter().filter_map(|(_, f)| f[k][m]).collect();
                delays.sort_unstable();
                MethodResult {
                    method,
                    false_fail_rate: None,
                    familywise_false_fail_rate: None,
                    detection_rate: Some(delays.len() as f64 / runs),
                    median_events: percentile(&delays, 0.5),
                    p90_events: percentile(&delays, 0.9),
                }
            }
        })
        .collect();
    ScenarioResult {
        scenario: scenario.clone(),
        methods,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Runs every scenario.
pub fn run(config: &Config, opts: &SimOptions) -> Report {
    Report {
        options: opts.clone(),
        alpha: config.detection.alpha,
        scenarios: scenarios()
            .iter()
            .map(|s| run_scenario(config, opts, s))
            .collect(),
    }
}

/// The report as a Markdown table.
pub fn markdown(report: &Report) -> String {
    let o = &report.options;
    let mut out = format!(
        "{} lifetimes of {} events per arm per scenario, {} events/s per arm, seed {}, family-wise alpha {}\n\n",
        o.runs, o.events_per_arm, o.rate_per_arm, o.seed, report.alpha
    );
    for s in &report.scenarios {
        out.push_str(&format!("**{}** ({:.0} s)\n\n", s.scenario.name, s.seconds));
        if s.scenario.drift.is_none() {
            out.push_str("| method | refusal | escalation | tone | tone_tail | family-wise |\n|---|---|---|---|---|---|\n");
            for m in &s.methods {
                let r = m.false_fail_rate.unwrap_or_default();
                out.push_str(&format!(
                    "| {} | {:.3} | {:.3} | {:.3} | {:.3} | **{:.3}** |\n",
                    m.method,
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    m.familywise_false_fail_rate.unwrap_or_default()
                ));
            }
        } else {
            out.push_str(
                "| method | detected | median events/arm | p90 events/arm |\n|---|---|---|---|\n",
            );
            for m in &s.methods {
                let f = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
                out.push_str(&format!(
                    "| {} | {:.1}% | {} | {} |\n",
                    m.method,
                    m.detection_rate.unwrap_or_default() * 100.0,
                    f(m.median_events),
                    f(m.p90_events)
                ));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn small_simulation_is_deterministic_and_detects_a_large_drift() {
        let config = Config::default();
        let opts = SimOptions {
            runs: 6,
            events_per_arm: 4000,
            ..SimOptions::default()
        };
        let s = Scenario {
            name: "t",
            drift: Some(SimDrift {
                metric: DriftMetric::Refusal,
                to: 0.15,
                onset: 0.0,
            }),
        };
        let a = run_scenario(&config, &opts, &s);
        let b = run_scenario(
            &config,
            &SimOptions {
                threads: 1,
                ..opts.clone()
            },
            &s,
        );
        assert_eq!(a.methods[0].median_events, b.methods[0].median_events);
        assert_eq!(a.methods[0].detection_rate, Some(1.0));
    }
}
