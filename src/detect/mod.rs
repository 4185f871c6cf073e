//! Drift detection: verdicts with evidence, per deployment and metric.
//!
//! Owns the [`Detector`], fed by the pipeline after each event reaches cohort state. Two
//! sources of verdicts per (deployment, metric):
//! - **canary vs control** ([`sequential`]): an anytime-valid one-sided test of the difference
//!   between the deployment's current canary model_version and its control arm, counted from
//!   the moment that canary version first appeared. A new canary version starts a new test; the
//!   old verdicts go to the deployment's history.
//! - **self-baseline** ([`cusum`]): each cohort against the reference it learned in warm-up;
//!   catches drift without a control arm and drift that hits both arms.
//!
//! Plus cohort-level signals per deployment: sample-ratio mismatch against the configured canary
//! share ([`srm`]) and telemetry absent from one arm. Absent data is an alert, never a `fail`.
//!
//! **One error budget**: each metric's canary-vs-control test runs at its Bonferroni share
//! `αₘ` of `detection.alpha` (shares add up to at most α). Each test's always-valid p-value
//! crosses `αₘ` at any time with probability at most `αₘ`, so the probability that any metric of
//! a deployment's canary lifetime fails falsely is at most α, however often it is evaluated.
//! Self-baseline alarms are budgeted separately, as a rate (one per `false_alarm_period` per
//! cohort and metric).
//!
//! States: `insufficient` (fewer than `min_events` per arm — never `pass`), `pass`, `warn`
//! (evidence half-way: `Λ ≥ 1/√αₘ` with an effect beyond `min_effect`, or significant but below
//! `min_effect`; it ends only when `Λ` falls under `αₘ^(-1/4)` or the effect under half the
//! floor, so it does not flap), `fail` (always-valid `p ≤ αₘ` in the worse direction *and* estimate beyond
//! `min_effect`; latched for the canary version, as a sequential test's decision is final).
//!
//! Pure: no I/O, no wall clock; event time and counts come from the caller, so `replay`
//! reproduces the daemon's decisions exactly.

pub mod cusum;
pub mod sequential;
pub mod srm;

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::config::{AlarmState, Config, MetricKind, Worse};
use crate::event::{format_rfc3339_ms, Arm};
use crate::state::CohortKey;
use cusum::{Phase, SelfBaseline, Tuning};
use sequential::{evaluate, Arm as ArmStats, Evidence};

/// A verdict state. Ordered by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not enough events per arm to say anything.
    #[default]
    Insufficient,
    /// Enough events, no sign of harm.
    Pass,
    /// Evidence of harm building up, not conclusive.
    Warn,
    /// Significant harm beyond the effect floor.
    Fail,
}

impl State {
    /// All states, for metric labels.
    pub const ALL: [State; 4] = [State::Insufficient, State::Pass, State::Warn, State::Fail];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Insufficient => "insufficient",
            State::Pass => "pass",
            State::Warn => "warn",
            State::Fail => "fail",
        }
    }
}

/// Which detector produced a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The anytime-valid canary-vs-control test.
    CanaryVsControl,
    /// A cohort's CUSUM against its own warm-up reference.
    SelfBaseline,
}

impl Source {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::CanaryVsControl => "canary_vs_control",
            Source::SelfBaseline => "self_baseline",
        }
    }
}

/// A verdict with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Deployment.
    pub deployment: String,
    /// The canary model version under test.
    pub model_version: String,
    /// Metric name.
    pub metric: String,
    /// Which detector.
    pub source: Source,
    /// The state.
    pub state: State,
    /// Event time of the evaluation (RFC 3339).
    pub at: String,
    /// Events applied by the pipeline so far.
    pub events_seen: u64,
    /// Canary events in the test.
    pub n_canary: u64,
    /// Control events in the test.
    pub n_control: u64,
    /// Canary mean (rate or score).
    pub canary_value: Option<f64>,
    /// Control mean (rate or score).
    pub control_value: Option<f64>,
    /// Difference canary − control (canary vs control), or cohort mean since monitoring began
    /// (self-baseline).
    pub estimate: Option<f64>,
    /// Confidence-sequence lower bound of the difference.
    pub ci_low: Option<f64>,
    /// Confidence-sequence upper bound of the difference.
    pub ci_high: Option<f64>,
    /// Always-valid p-value (canary vs control).
    pub p_value: Option<f64>,
    /// Test statistic: `ln Λ⁺` or the CUSUM statistic.
    pub statistic: f64,
    /// The threshold the statistic is compared with: `ln(1/αₘ)` or the CUSUM `h`.
    pub threshold: f64,
    /// The effect floor.
    pub min_effect: f64,
    /// The metric's share of the error budget (canary vs control).
    pub alpha: Option<f64>,
    /// Self-baseline: the arm of the cohort that alarmed.
    pub arm: Option<Arm>,
    /// Self-baseline: the segment of the cohort that alarmed (`key=value,…`).
    pub segment: Option<String>,
    /// Self-baseline: the learned reference value.
    pub reference: Option<f64>,
}

/// Kinds of cohort-level signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// The arms' event split differs from the configured canary share.
    SampleRatioMismatch,
    /// One arm stopped sending while the other goes on.
    TelemetryAbsent,
}

/// A cohort-level signal (raised or cleared).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    /// Which signal.
    pub kind: SignalKind,
    /// Deployment.
    pub deployment: String,
    /// Current canary version.
    pub model_version: String,
    /// The silent arm (telemetry_absent).
    pub arm: Option<Arm>,
    /// Raised (true) or cleared (false).
    pub active: bool,
    /// Event time (RFC 3339).
    pub at: String,
    /// Events applied by the pipeline so far.
    pub events_seen: u64,
    /// Canary events in the current test.
    pub n_canary: u64,
    /// Control events in the current test.
    pub n_control: u64,
    /// Configured canary share (SRM).
    pub expected_share: Option<f64>,
    /// Observed canary share.
    pub observed_share: Option<f64>,
    /// SRM: `ln Λ`; absent: seconds of silence.
    pub statistic: f64,
    /// SRM: `ln(1/srm_alpha)`; absent: `absent_after` in seconds.
    pub threshold: f64,
}

/// A verdict change or a signal change, in the order they happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// A verdict changed state.
    Verdict(Verdict),
    /// A signal was raised or cleared.
    Signal(Signal),
}

/// A metric's detection rule, resolved from config.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    binary: bool,
    worse_up: bool,
    min_effect: f64,
    alpha: f64,
    min_events: u64,
    tau: f64,
    tuning: Tuning,
}

#[derive(Debug, Clone, Default)]
struct Test {
    canary: ArmStats,
    control: ArmStats,
    /// Running minimum of the always-valid p-value (over times with enough events).
    p_value: f64,
    state: State,
}

#[derive(Debug, Clone)]
struct Deployment {
    name: String,
    canary_version: Option<String>,
    retired: VecDeque<String>,
    tests: Vec<Test>,
    /// Latest self-baseline alarm per metric for the current canary version.
    alarms: Vec<Option<Verdict>>,
    canary_share: Option<f64>,
    srm_active: bool,
    srm_log_lr: f64,
    last_seen_ms: [i64; 2],
    absent: [bool; 2],
    history: VecDeque<Verdict>,
}

#[derive(Debug, Clone)]
struct CohortDetect {
    deployment: usize,
    arm: Arm,
    model_version: String,
    segment: String,
    baselines: Vec<SelfBaseline>,
}

/// All detection state of one pipeline.
#[derive(Debug, Clone)]
pub struct Detector {
    rules: Vec<Rule>,
    self_baseline: bool,
    on_alarm: State,
    srm_threshold: f64,
    absent_after_ms: i64,
    history: usize,
    index: HashMap<String, usize>,
    deployments: Vec<Deployment>,
    cohorts: Vec<CohortDetect>,
    config_shares: HashMap<String, f64>,
    default_share: Option<f64>,
    events_seen: u64,
    watermark_ms: i64,
}

fn arm_index(arm: Arm) -> usize {
    match arm {
        Arm::Canary => 0,
        Arm::Control => 1,
    }
}

impl Detector {
    /// A detector for a validated config.
    pub fn new(config: &Config) -> Detector {
        let d = &config.detection;
        let alphas = config.metric_alphas();
        let rules = config
            .metrics
            .iter()
            .zip(alphas)
            .map(|(m, alpha)| {
                let binary = m.kind != MetricKind::Score;
                let worse_up = m.worse == Worse::Up;
                Rule {
                    name: m.name.clone(),
                    binary,
                    worse_up,
                    min_effect: m.min_effect(),
                    alpha,
                    min_events: m.min_events.unwrap_or(d.min_events),
                    tau: m.mixture_scale(),
                    tuning: Tuning {
                        binary,
                        worse_up,
                        shift: m.self_baseline_shift(),
                        warmup_events: d.self_baseline.warmup_events,
                        warmup_ms: d.self_baseline.warmup.as_millis() as i64,
                        false_alarm_period_ms: d.self_baseline.false_alarm_period.as_millis()
                            as f64,
                    },
                }
            })
            .collect();
        Detector {
            rules,
            self_baseline: d.self_baseline.enabled,
            on_alarm: match d.self_baseline.on_alarm {
                AlarmState::Fail => State::Fail,
                AlarmState::Warn => State::Warn,
            },
            srm_threshold: (1.0 / d.srm_alpha).ln(),
            absent_after_ms: d.absent_after.as_millis() as i64,
            history: d.history,
            index: HashMap::new(),
            deployments: Vec::new(),
            cohorts: Vec::new(),
            config_shares: d
                .deployments
                .iter()
                .filter_map(|(k, v)| v.canary_share.map(|s| (k.clone(), s)))
                .collect(),
            default_share: d.canary_share,
            events_seen: 0,
            watermark_ms: i64::MIN,
        }
    }

    /// Feeds one event that was applied to cohort `cohort` (index in the cohort table) with
    /// per-metric values `values`, at event time `t_ms`. Changes are appended to `out`.
    pub fn observe(
        &mut self,
        cohort: usize,
        key: &CohortKey,
        values: &[f64],
        t_ms: i64,
        out: &mut Vec<Change>,
    ) {
        self.events_seen += 1;
        self.watermark_ms = self.watermark_ms.max(t_ms);
        while self.cohorts.len() <= cohort {
            // Cohort indices are dense and assigned in order, so this runs once per new cohort.
            let dep = self.deployment_index(&key.deployment);
            self.cohorts.push(CohortDetect {
                deployment: dep,
                arm: key.arm,
                model_version: key.model_version.clone(),
                segment: String::new(),
                baselines: self
                    .rules
                    .iter()
                    .map(|r| SelfBaseline::new(r.tuning))
                    .collect(),
            });
        }
        let c = &self.cohorts[cohort];
        let (dep_i, arm) = (c.deployment, c.arm);
        if arm == Arm::Canary {
            self.maybe_new_canary(dep_i, &key.model_version, t_ms, out);
        }
        let dep = &mut self.deployments[dep_i];
        dep.last_seen_ms[arm_index(arm)] = dep.last_seen_ms[arm_index(arm)].max(t_ms);
        if dep.absent[arm_index(arm)] {
            dep.absent[arm_index(arm)] = false;
            out.push(Change::Signal(absent_signal(
                dep,
                arm,
                false,
                0.0,
                self.absent_after_ms,
                t_ms,
                self.events_seen,
            )));
        }
        let current = dep.canary_version.as_deref();
        let in_test = current.is_some()
            && (arm == Arm::Control || current == Some(key.model_version.as_str()));
        if in_test {
            for (m, rule) in self.rules.iter().enumerate() {
                let subject = Subject(&dep.name, dep.canary_version.as_deref());
                let test = &mut dep.tests[m];
                match arm {
                    Arm::Canary => test.canary.push(values[m]),
                    Arm::Control => test.control.push(values[m]),
                }
                let state = next_state(rule, test);
                if state != test.state {
                    test.state = state;
                    // The confidence sequence is only needed for the evidence of a change.
                    let ev = evaluate(
                        &test.canary,
                        &test.control,
                        rule.binary,
                        rule.worse_up,
                        rule.tau,
                        rule.alpha,
                    );
                    out.push(Change::Verdict(ab_verdict(
                        subject,
                        rule,
                        test,
                        &ev,
                        t_ms,
                        self.events_seen,
                    )));
                }
            }
            self.check_srm(dep_i, t_ms, out);
        }
        if self.self_baseline {
            self.observe_baselines(cohort, key, values, t_ms, out);
        }
    }

    fn deployment_index(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let share = self.config_shares.get(name).copied().or(self.default_share);
        self.deployments.push(Deployment {
            name: name.to_string(),
            canary_version: None,
            retired: VecDeque::new(),
            tests: vec![
                Test {
                    p_value: 1.0,
                    ..Test::default()
                };
                self.rules.len()
            ],
            alarms: vec![None; self.rules.len()],
            canary_share: share,
            srm_active: false,
            srm_log_lr: 0.0,
            last_seen_ms: [i64::MIN; 2],
            absent: [false; 2],
            history: VecDeque::new(),
        });
        self.index
            .insert(name.to_string(), self.deployments.len() - 1);
        self.deployments.len() - 1
    }

    fn maybe_new_canary(&mut self, dep_i: usize, version: &str, t_ms: i64, out: &mut Vec<Change>) {
        let dep = &mut self.deployments[dep_i];
        if dep.canary_version.as_deref() == Some(version)
            || dep.retired.iter().any(|v| v == version)
        {
            return;
        }
        // A new canary version: archive the old test's verdicts, start afresh.
        if let Some(old) = dep.canary_version.take() {
            for (rule, test) in self.rules.iter().zip(&dep.tests) {
                let ev = evaluate(
                    &test.canary,
                    &test.control,
                    rule.binary,
                    rule.worse_up,
                    rule.tau,
                    rule.alpha,
                );
                let v = ab_verdict(
                    Subject(&dep.name, Some(&old)),
                    rule,
                    test,
                    &ev,
                    t_ms,
                    self.events_seen,
                );
                dep.history.push_back(v);
            }
            for alarm in dep.alarms.iter_mut().filter_map(Option::take) {
                dep.history.push_back(alarm);
            }
            while dep.history.len() > self.history * self.rules.len() {
                dep.history.pop_front();
            }
            dep.retired.push_back(old);
            while dep.retired.len() > self.history.max(1) {
                dep.retired.pop_front();
            }
        }
        dep.canary_version = Some(version.to_string());
        dep.tests = vec![
            Test {
                p_value: 1.0,
                ..Test::default()
            };
            self.rules.len()
        ];
        dep.srm_active = false;
        dep.srm_log_lr = 0.0;
        for (rule, test) in self.rules.iter().zip(&dep.tests) {
            let ev = evaluate(
                &test.canary,
                &test.control,
                rule.binary,
                rule.worse_up,
                rule.tau,
                rule.alpha,
            );
            out.push(Change::Verdict(ab_verdict(
                Subject(&dep.name, Some(version)),
                rule,
                test,
                &ev,
                t_ms,
                self.events_seen,
            )));
        }
    }

    fn check_srm(&mut self, dep_i: usize, t_ms: i64, out: &mut Vec<Change>) {
        let dep = &mut self.deployments[dep_i];
        let Some(share) = dep.canary_share else {
            return;
        };
        let (k, n0) = (dep.tests[0].canary.n, dep.tests[0].control.n);
        // The statistic moves slowly; evaluating every 64 events keeps lgamma off most events.
        if dep.srm_active || (k + n0) % 64 != 0 {
            return;
        }
        dep.srm_log_lr = srm::log_lr(k, k + n0, share);
        if dep.srm_log_lr >= self.srm_threshold {
            dep.srm_active = true;
            out.push(Change::Signal(srm_signal(
                dep,
                self.srm_threshold,
                t_ms,
                self.events_seen,
            )));
        }
    }

    fn observe_baselines(
        &mut self,
        cohort: usize,
        key: &CohortKey,
        values: &[f64],
        t_ms: i64,
        out: &mut Vec<Change>,
    ) {
        let c = &mut self.cohorts[cohort];
        let dep = &mut self.deployments[c.deployment];
        let current = dep.canary_version.as_deref();
        // Old canary versions are no longer under test; their cohorts stay quiet.
        let relevant = c.arm == Arm::Control || current == Some(c.model_version.as_str());
        for (m, rule) in self.rules.iter().enumerate() {
            if !c.baselines[m].push(values[m], t_ms) || !relevant {
                continue;
            }
            let Phase::Monitoring {
                reference,
                threshold,
                statistic,
                seen,
                ..
            } = c.baselines[m].phase()
            else {
                continue;
            };
            if c.segment.is_empty() {
                c.segment = key
                    .segment
                    .iter()
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",");
            }
            let test = &dep.tests[m];
            let v = Verdict {
                deployment: dep.name.clone(),
                model_version: current.unwrap_or(&c.model_version).to_string(),
                metric: rule.name.clone(),
                source: Source::SelfBaseline,
                state: self.on_alarm,
                at: format_rfc3339_ms(t_ms),
                events_seen: self.events_seen,
                n_canary: test.canary.n,
                n_control: test.control.n,
                canary_value: None,
                control_value: None,
                estimate: Some(seen.mean()),
                ci_low: None,
                ci_high: None,
                p_value: None,
                statistic: *statistic,
                threshold: *threshold,
                min_effect: rule.min_effect,
                alpha: None,
                arm: Some(c.arm),
                segment: Some(c.segment.clone()),
                reference: Some(reference.value()),
            };
            if dep.alarms[m].is_none() {
                out.push(Change::Verdict(v.clone()));
                dep.alarms[m] = Some(v);
            }
        }
    }

    /// Checks for silent arms at event time `now_ms` (call when the watermark moves).
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Change>) {
        self.watermark_ms = self.watermark_ms.max(now_ms);
        for dep in &mut self.deployments {
            if dep.canary_version.is_none() {
                continue;
            }
            for arm in [Arm::Canary, Arm::Control] {
                let (me, other) = (arm_index(arm), 1 - arm_index(arm));
                // `i64::MIN` marks an arm never seen: saturate rather than overflow.
                let silent = now_ms.saturating_sub(dep.last_seen_ms[me]);
                let other_alive =
                    now_ms.saturating_sub(dep.last_seen_ms[other]) < self.absent_after_ms;
                if !dep.absent[me]
                    && dep.last_seen_ms[me] != i64::MIN
                    && silent >= self.absent_after_ms
                    && other_alive
                {
                    dep.absent[me] = true;
                    out.push(Change::Signal(absent_signal(
                        dep,
                        arm,
                        true,
                        silent as f64 / 1000.0,
                        self.absent_after_ms,
                        now_ms,
                        self.events_seen,
                    )));
                }
            }
        }
    }

    /// Every deployment's current verdicts, signals and history.
    pub fn snapshot(&self) -> Vec<DeploymentView> {
        let t = self.watermark_ms.max(0);
        self.deployments
            .iter()
            .map(|dep| {
                let metrics = self
                    .rules
                    .iter()
                    .zip(&dep.tests)
                    .zip(&dep.alarms)
                    .map(|((rule, test), alarm)| {
                        let ev = evaluate(
                            &test.canary,
                            &test.control,
                            rule.binary,
                            rule.worse_up,
                            rule.tau,
                            rule.alpha,
                        );
                        let ab = ab_verdict(
                            Subject(&dep.name, dep.canary_version.as_deref()),
                            rule,
                            test,
                            &ev,
                            t,
                            self.events_seen,
                        );
                        MetricVerdicts {
                            metric: rule.name.clone(),
                            state: alarm.as_ref().map_or(ab.state, |a| a.state.max(ab.state)),
                            canary_vs_control: ab,
                            self_baseline: alarm.clone(),
                        }
                    })
                    .collect();
                DeploymentView {
                    deployment: dep.name.clone(),
                    canary_version: dep.canary_version.clone(),
                    metrics,
                    sample_ratio_mismatch: dep.srm_active,
                    srm: dep
                        .canary_share
                        .map(|_| srm_signal(dep, self.srm_threshold, t, self.events_seen)),
                    telemetry_absent: [Arm::Canary, Arm::Control]
                        .into_iter()
                        .filter(|a| dep.absent[arm_index(*a)])
                        .collect(),
                    history: dep.history.iter().cloned().collect(),
                }
            })
            .collect()
    }
}

fn next_state(rule: &Rule, test: &mut Test) -> State {
    // A decided test and one without enough events need no arithmetic: most events of a
    // failed canary, and the first of every canary, cost nothing here.
    if test.state == State::Fail {
        return State::Fail;
    }
    if test.canary.n < rule.min_events || test.control.n < rule.min_events {
        return State::Insufficient;
    }
    let (estimate, log_lr) = sequential::worse_log_lr(
        &test.canary,
        &test.control,
        rule.binary,
        rule.worse_up,
        rule.tau,
    );
    test.p_value = test.p_value.min((-log_lr).exp().min(1.0));
    let worse = if rule.worse_up { estimate } else { -estimate };
    let threshold = (1.0 / rule.alpha).ln();
    if test.p_value <= rule.alpha && worse >= rule.min_effect {
        State::Fail
    } else if (log_lr >= threshold / 2.0 && worse >= rule.min_effect) || test.p_value <= rule.alpha
    {
        State::Warn
    } else if test.state == State::Warn
        && log_lr >= threshold / 4.0
        && worse >= rule.min_effect / 2.0
    {
        // Hysteresis: a warning ends when the evidence has clearly fallen back, not on the
        // first event that dips under the line (that would flap alerts).
        State::Warn
    } else {
        State::Pass
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Where a verdict belongs: deployment name and canary version.
struct Subject<'a>(&'a str, Option<&'a str>);

fn ab_verdict(
    subject: Subject<'_>,
    rule: &Rule,
    test: &Test,
    ev: &Evidence,
    t_ms: i64,
    events_seen: u64,
) -> Verdict {
    let mean = |a: &ArmStats| (a.n > 0).then(|| a.mean());
    Verdict {
        deployment: subject.0.to_string(),
        model_version: subject.1.unwrap_or_default().to_string(),
        metric: rule.name.clone(),
        source: Source::CanaryVsControl,
        state: test.state,
        at: format_rfc3339_ms(t_ms),
        events_seen,
        n_canary: test.canary.n,
        n_control: test.control.n,
        canary_value: mean(&test.canary),
        control_value: mean(&test.control),
        estimate: (test.canary.n > 0 && test.control.n > 0).then_some(ev.estimate),
        ci_low: finite(ev.ci_low),
        ci_high: finite(ev.ci_high),
        p_value: Some(test.p_value),
        statistic: ev.log_lr,
        threshold: (1.0 / rule.alpha).ln(),
        min_effect: rule.min_effect,
        alpha: Some(rule.alpha),
        arm: None,
        segment: None,
        reference: None,
    }
}

fn srm_signal(dep: &Deployment, threshold: f64, t_ms: i64, events_seen: u64) -> Signal {
    let (k, n0) = (dep.tests[0].canary.n, dep.tests[0].control.n);
    Signal {
        kind: SignalKind::SampleRatioMismatch,
        deployment: dep.name.clone(),
        model_version: dep.canary_version.clone().unwrap_or_default(),
        arm: None,
        active: dep.srm_active,
        at: format_rfc3339_ms(t_ms),
        events_seen,
        n_canary: k,
        n_control: n0,
        expected_share: dep.canary_share,
        observed_share: (k + n0 > 0).then(|| k as f64 / (k + n0) as f64),
        statistic: dep.srm_log_lr,
        threshold,
    }
}

fn absent_signal(
    dep: &Deployment,
    arm: Arm,
    active: bool,
    silent_s: f64,
    after_ms: i64,
    t_ms: i64,
    events_seen: u64,
) -> Signal {
    Signal {
        kind: SignalKind::TelemetryAbsent,
        deployment: dep.name.clone(),
        model_version: dep.canary_version.clone().unwrap_or_default(),
        arm: Some(arm),
        active,
        at: format_rfc3339_ms(t_ms),
        events_seen,
        n_canary: dep.tests[0].canary.n,
        n_control: dep.tests[0].control.n,
        expected_share: dep.canary_share,
        observed_share: None,
        statistic: silent_s,
        threshold: after_ms as f64 / 1000.0,
    }
}

/// One deployment's detection state, for the admin API and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentView {
    /// Deployment.
    pub deployment: String,
    /// The canary version under test.
    pub canary_version: Option<String>,
    /// Per metric.
    pub metrics: Vec<MetricVerdicts>,
    /// True once the arms' split was found to differ from the configured share.
    pub sample_ratio_mismatch: bool,
    /// The SRM evidence, when a canary share is configured.
    pub srm: Option<Signal>,
    /// Arms currently silent.
    pub telemetry_absent: Vec<Arm>,
    /// Verdicts of earlier canary versions.
    pub history: Vec<Verdict>,
}

/// One metric's verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct MetricVerdicts {
    /// Metric name.
    pub metric: String,
    /// The worse of the two sources.
    pub state: State,
    /// The canary-vs-control test.
    pub canary_vs_control: Verdict,
    /// The latest self-baseline alarm for the current canary version, if any.
    pub self_baseline: Option<Verdict>,
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn refusal_states(changes: &[Change]) -> Vec<(State, u64)> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::Verdict(v)
                    if v.metric == "refusal" && v.source == Source::CanaryVsControl =>
                {
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
            .find(|(s, _)| *s == State::Fail)
            .expect("fails");
        assert!(fail.1 >= 300, "not before min_events: {fail:?}");
        assert!(fail.1 < 3_000, "5% -> 10% is caught quickly: {fail:?}");
        assert_eq!(states.last().unwrap().0, State::Fail, "latched");
        // insufficient is never followed directly by fail before min_events
        assert_eq!(states[0].0, State::Insufficient);
    }

    #[test]
    fn equal_arms_pass() {
        let mut d = Detector::new(&config());
        let mut out = Vec::new();
        run(&mut d, 20_000, 0.05, 0.05, 2, "v1", &mut out);
        let snap = d.snapshot();
        let refusal = &snap[0].metrics[0];
        assert_eq!(refusal.state, State::Pass);
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
        assert_eq!(d.snapshot()[0].metrics[0].state, State::Fail);
        out.clear();
        run(&mut d, 100, 0.05, 0.05, 4, "v2", &mut out);
        let snap = d.snapshot();
        assert_eq!(snap[0].canary_version.as_deref(), Some("v2"));
        assert_eq!(snap[0].metrics[0].state, State::Insufficient);
        assert!(snap[0]
            .history
            .iter()
            .any(|v| v.model_version == "v1" && v.metric == "refusal" && v.state == State::Fail));
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
        assert!(out.iter().any(|c| matches!(c, Change::Signal(s) if s.kind == SignalKind::SampleRatioMismatch && s.active)));
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
            d.tick(t, &mut out);
        }
        let raised = out.iter().any(|c| matches!(c, Change::Signal(s) if s.kind == SignalKind::TelemetryAbsent && s.active && s.arm == Some(Arm::Canary)));
        assert!(raised);
        assert!(d.snapshot()[0]
            .metrics
            .iter()
            .all(|m| m.state != State::Fail));
        d.observe(
            0,
            &key(Arm::Canary, "v1"),
            &[0.0, 0.0, 0.3, 0.0],
            700_000,
            &mut out,
        );
        assert!(d.snapshot()[0].telemetry_absent.is_empty());
    }

    /// Regression: the first tick after a canary's first event, with the control arm not yet
    /// seen, overflowed `now − i64::MIN` and panicked the hot path.
    #[test]
    fn tick_before_the_other_arm_is_seen_does_not_overflow() {
        let mut d = Detector::new(&config());
        let mut out = Vec::new();
        d.observe(
            0,
            &key(Arm::Canary, "v1"),
            &[0.0, 0.0, 0.3, 0.0],
            1_000,
            &mut out,
        );
        d.tick(1_000, &mut out);
        d.tick(10_000_000, &mut out);
        assert!(
            !out.iter().any(|c| matches!(c, Change::Signal(_))),
            "a never-seen arm is not 'absent'"
        );
    }

    #[test]
    fn self_baseline_catches_drift_in_both_arms() {
        let mut c = Config::default();
        c.detection.self_baseline.warmup = std::time::Duration::from_secs(60);
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
        assert_ne!(refusal.canary_vs_control.state, State::Fail, "arms agree");
        let alarm = refusal.self_baseline.as_ref().expect("self-baseline alarm");
        assert_eq!(alarm.state, State::Fail);
        assert_eq!(refusal.state, State::Fail);
        assert!((alarm.reference.unwrap() - 0.05).abs() < 0.02);
    }
}
