//! The [`Detector`]: per-deployment canary-vs-control tests and late-drift CUSUMs
//! ([`late`]), per-cohort self-baseline CUSUMs and the SRM and absence signals, turned into
//! [`Change`]s as events arrive.
//!
//! Owns all mutable detection state of one pipeline; the rest of driftd sees it only through
//! the changes it appends and its [`Detector::snapshot`]. Must not do I/O or read the clock.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::cusum::{Budget, CusumPhase, SelfBaseline, Tuning};
use super::srm;
use super::verdict::{
    Change, DeploymentView, MetricVerdicts, Signal, SignalKind, Verdict, VerdictState,
};
use crate::config::{AlarmState, Config, MetricKind, Worse};
use crate::event::{format_rfc3339_ms, Arm};
use crate::state::CohortKey;
use ab::{fresh_tests, next_state, Subject, Test};
use baseline::{baseline_verdict, Watch};
use budget::{chart_budget, cohort_budget, Budgets, Ranks};
use late::{Late, LateTuning};
use segments::{verdict, Segments};

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
    late: LateTuning,
}

/// One deployment: its current canary version's tests, its alarms and signals, its history.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Deployment {
    name: String,
    canary_version: Option<String>,
    retired: VecDeque<String>,
    tests: Vec<Test>,
    /// Latest self-baseline alarm per metric for the current canary version.
    alarms: Vec<Option<Verdict>>,
    /// Late-drift charts per metric for the current canary version.
    late: Vec<Late>,
    /// Late-drift alarm per metric for the current canary version (latched).
    late_alarms: Vec<Option<Verdict>>,
    /// Self-baseline charts handed out so far, for their budget shares ([`Budgets`]).
    #[serde(default)]
    ranks: Ranks,
    canary_share: Option<f64>,
    srm_active: bool,
    srm_log_lr: f64,
    last_seen_ms: [i64; 2],
    absent: [bool; 2],
    history: VecDeque<Verdict>,
    /// Per-segment tests, when on (`segments`). Always written: snapshots are postcard, which
    /// cannot skip a field.
    segments: Option<Segments>,
}

/// One cohort's self-baseline CUSUMs (one per metric) and what its alarms are labelled with.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct CohortDetect {
    deployment: usize,
    arm: Arm,
    model_version: String,
    segment: String,
    baselines: Vec<SelfBaseline>,
    /// The deployment's segment-test slot of this cohort's segment value, if it has one.
    slot: Option<usize>,
}

/// One deployment's name and, per metric, its canary-vs-control verdict and the self-baseline
/// chart nearest its threshold ([`Detector::evidence_where`]).
pub type Evidence<'a> = (&'a str, Vec<(Verdict, Option<Verdict>)>);

/// All detection state of one pipeline.
#[derive(Debug, Clone)]
pub struct Detector {
    rules: Vec<Rule>,
    self_baseline: bool,
    late_drift: bool,
    on_alarm: VerdictState,
    srm_threshold: f64,
    absent_after_ms: i64,
    history: usize,
    budgets: Budgets,
    index: HashMap<String, usize>,
    deployments: Vec<Deployment>,
    cohorts: Vec<CohortDetect>,
    config_shares: HashMap<String, f64>,
    default_share: Option<f64>,
    events_seen: u64,
    watermark_ms: i64,
    /// Deployments with a raised `cohort_overflow` signal ([`overflow`]).
    overflowing: BTreeMap<String, CohortKey>,
    max_cohorts: usize,
    /// Segment tests: `(max_tested, share)`, none when off (no `segment_keys`, or K = 0).
    segments: Option<(usize, f64)>,
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
        let sb = &d.self_baseline;
        let canary_sb_fails = sb.enabled && sb.on_alarm == AlarmState::Fail;
        let (deployment_arl, late_weight) = chart_budget(config);
        let metrics = config.metrics.len().max(1) as f64;
        let budgets = Budgets {
            canary_events: canary_sb_fails.then(|| deployment_arl * metrics / (1.0 - late_weight)),
            period_ms: sb.false_alarm_period.as_millis() as f64,
            metrics,
        };
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
                        // Set per cohort by its arm and rank (`Detector::tuning`).
                        budget: Budget::Events(f64::INFINITY),
                    },
                    late: LateTuning {
                        binary,
                        worse_up,
                        min_effect: m.min_effect(),
                        min_control: d.late_drift.min_control_events,
                        arl0: Detector::late_chart_arl(config),
                        margin: late::MARGIN,
                    },
                }
            })
            .collect();
        Detector {
            rules,
            budgets,
            self_baseline: d.self_baseline.enabled,
            late_drift: d.late_drift.enabled,
            on_alarm: match d.self_baseline.on_alarm {
                AlarmState::Fail => VerdictState::Fail,
                AlarmState::Warn => VerdictState::Warn,
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
            overflowing: BTreeMap::new(),
            max_cohorts: config.cohorts.max_cohorts,
            segments: (!config.cohorts.segment_keys.is_empty() && d.segments.max_tested > 0)
                .then_some((d.segments.max_tested, d.segments.share)),
        }
    }

    /// The in-control run length, in canary events, each late-drift chart is calibrated to:
    /// its share of the deployment's chart budget (see `detect`). `driftd simulate` reads its
    /// late-drift oracle at the same cost.
    pub fn late_chart_arl(config: &Config) -> f64 {
        let (deployment_arl, late_weight) = chart_budget(config);
        let late_charts = (late::MULTIPLES.len() * config.metrics.len().max(1)) as f64;
        deployment_arl * late_charts / late_weight.max(1e-12)
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
        if !self.overflowing.is_empty() {
            self.fits_again(key, t_ms, out);
        }
        while self.cohorts.len() <= cohort {
            // Cohort indices are dense and assigned in order, so this runs once per new cohort.
            let dep = self.deployment_index(&key.deployment);
            let budget = cohort_budget(&mut self.deployments[dep], self.budgets, key);
            let segment = key
                .segment
                .iter()
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
                .join(",");
            let slot = self.deployments[dep]
                .segments
                .as_mut()
                .and_then(|s| s.slot_of(&segment));
            self.cohorts.push(CohortDetect {
                deployment: dep,
                arm: key.arm,
                model_version: key.model_version.clone(),
                segment,
                baselines: self
                    .rules
                    .iter()
                    .map(|r| SelfBaseline::new(Tuning { budget, ..r.tuning }))
                    .collect(),
                slot,
            });
        }
        let c = &self.cohorts[cohort];
        let (dep_i, arm, slot) = (c.deployment, c.arm, c.slot);
        if arm == Arm::Canary {
            self.maybe_new_canary(dep_i, &key.model_version, t_ms, out);
        }
        let dep = &mut self.deployments[dep_i];
        let previous = dep.last_seen_ms[arm_index(arm)];
        dep.last_seen_ms[arm_index(arm)] = previous.max(t_ms);
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
        // Only while this arm kept sending: after a gap in the whole deployment's stream the
        // first event of one arm does not make the other look silent.
        if t_ms.saturating_sub(previous) < self.absent_after_ms {
            self.check_absent(dep_i, 1 - arm_index(arm), out);
        }
        let dep = &mut self.deployments[dep_i];
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
                if arm == Arm::Canary && self.late_drift {
                    let late = &mut dep.late[m];
                    if late.push(&rule.late, values[m], &test.control).is_some() {
                        let subject = Subject(&dep.name, dep.canary_version.as_deref());
                        let v = late::verdict(subject, rule, test, late, t_ms, self.events_seen);
                        out.push(Change::Verdict(v.clone()));
                        dep.late_alarms[m] = Some(v);
                    }
                }
                let state = match dep.segments.as_mut() {
                    Some(seg) => {
                        seg.push(m, slot, arm == Arm::Canary, values[m]);
                        segments::next_state(rule, test, seg, m, slot)
                    }
                    None => next_state(rule, test),
                };
                if state != test.state {
                    test.state = state;
                    // The confidence bounds are only needed for the evidence of a change.
                    out.push(Change::Verdict(verdict(
                        subject,
                        rule,
                        test,
                        dep.segments.as_ref().map(|s| (s, m)),
                        t_ms,
                        self.events_seen,
                    )));
                }
            }
            self.check_srm(dep_i, t_ms, out);
        }
        if self.self_baseline {
            self.observe_baselines(cohort, values, t_ms, out);
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
            tests: fresh_tests(self.rules.len()),
            alarms: vec![None; self.rules.len()],
            late: vec![Late::default(); self.rules.len()],
            late_alarms: vec![None; self.rules.len()],
            ranks: Ranks::default(),
            canary_share: share,
            srm_active: false,
            srm_log_lr: 0.0,
            last_seen_ms: [i64::MIN; 2],
            absent: [false; 2],
            history: VecDeque::new(),
            segments: self
                .segments
                .map(|(k, share)| Segments::new(k, share, self.rules.len())),
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
            for (m, (rule, test)) in self.rules.iter().zip(&dep.tests).enumerate() {
                let v = verdict(
                    Subject(&dep.name, Some(&old)),
                    rule,
                    test,
                    dep.segments.as_ref().map(|s| (s, m)),
                    t_ms,
                    self.events_seen,
                );
                dep.history.push_back(v);
            }
            for alarm in dep.alarms.iter_mut().filter_map(Option::take) {
                dep.history.push_back(alarm);
            }
            for alarm in dep.late_alarms.iter_mut().filter_map(Option::take) {
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
        dep.tests = fresh_tests(self.rules.len());
        dep.late = vec![Late::default(); self.rules.len()];
        if let Some(seg) = dep.segments.as_mut() {
            seg.restart();
        }
        dep.srm_active = false;
        dep.srm_log_lr = 0.0;
        for (m, (rule, test)) in self.rules.iter().zip(&dep.tests).enumerate() {
            out.push(Change::Verdict(verdict(
                Subject(&dep.name, Some(version)),
                rule,
                test,
                dep.segments.as_ref().map(|s| (s, m)),
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
            // A degraded control says nothing against the canary (which may be relatively
            // better): it alerts, it never fails the canary.
            let state = match c.arm {
                Arm::Canary => self.on_alarm,
                Arm::Control => self.on_alarm.min(VerdictState::Warn),
            };
            let Some(watch) = Watch::of(c.baselines[m].phase(), state) else {
                continue;
            };
            let v = baseline_verdict(dep, c, (m, rule), watch, t_ms, self.events_seen);
            // The first alarm stands, unless a worse one follows (the canary's after control's).
            if dep.alarms[m].as_ref().is_none_or(|a| v.state > a.state) {
                out.push(Change::Verdict(v.clone()));
                dep.alarms[m] = Some(v);
            }
        }
    }

    /// Raises `telemetry_absent` for arm `arm` (index) of deployment `dep_i` when it has been
    /// silent for `absent_after` of the deployment's own event time, i.e. while its other arm
    /// kept sending. The deployment's clock, not the stream's: another partition's producer
    /// whose clock runs ahead must not make this deployment's arms look silent.
    fn check_absent(&mut self, dep_i: usize, arm: usize, out: &mut Vec<Change>) {
        let dep = &mut self.deployments[dep_i];
        // `i64::MIN` marks an arm never seen: never "absent".
        if dep.canary_version.is_none() || dep.absent[arm] || dep.last_seen_ms[arm] == i64::MIN {
            return;
        }
        let now_ms = dep.last_seen_ms[1 - arm].max(dep.last_seen_ms[arm]);
        let silent = now_ms - dep.last_seen_ms[arm];
        if silent < self.absent_after_ms {
            return;
        }
        dep.absent[arm] = true;
        let which = [Arm::Canary, Arm::Control][arm];
        out.push(Change::Signal(absent_signal(
            dep,
            which,
            true,
            silent as f64 / 1000.0,
            self.absent_after_ms,
            now_ms,
            self.events_seen,
        )));
    }

    /// Moves per-cohort state to the table's indices after an eviction
    /// (`crate::state::expiry`): an evicted cohort's self-baseline goes with it.
    pub fn evict(&mut self, map: &[Option<usize>]) {
        crate::state::expiry::compact(&mut self.cohorts, map);
    }

    /// Per deployment and metric, the canary cohort whose self-baseline CUSUM stands nearest
    /// its threshold (the largest statistic / threshold), once monitoring; only for the
    /// deployments `wanted` marks (by index), the others stay `None`.
    fn nearest_alarms(&self, wanted: &[bool]) -> Vec<Vec<Option<(f64, usize)>>> {
        let mut nearest = vec![Vec::new(); self.deployments.len()];
        for (d, w) in wanted.iter().enumerate() {
            if *w {
                nearest[d] = vec![None; self.rules.len()];
            }
        }
        for (i, c) in self.cohorts.iter().enumerate() {
            if c.arm != Arm::Canary || !wanted[c.deployment] {
                continue;
            }
            let dep = &self.deployments[c.deployment];
            if dep.canary_version.as_deref() != Some(&c.model_version) {
                continue;
            }
            for (m, b) in c.baselines.iter().enumerate() {
                if let CusumPhase::Monitoring {
                    threshold,
                    statistic,
                    ..
                } = b.phase()
                {
                    let ratio = statistic / threshold.max(f64::MIN_POSITIVE);
                    let slot = &mut nearest[c.deployment][m];
                    if slot.is_none_or(|(r, _)| ratio > r) {
                        *slot = Some((ratio, i));
                    }
                }
            }
        }
        nearest
    }

    /// The self-baseline verdict of cohort `i`'s CUSUM for metric `m` as it stands.
    fn watch(&self, i: usize, m: usize, alarm: Option<&Verdict>, t_ms: i64) -> Option<Verdict> {
        let c = &self.cohorts[i];
        let watch = Watch::of(
            c.baselines[m].phase(),
            alarm.map_or(VerdictState::Pass, |a| a.state),
        )?;
        let dep = &self.deployments[c.deployment];
        Some(baseline_verdict(
            dep,
            c,
            (m, &self.rules[m]),
            watch,
            t_ms,
            self.events_seen,
        ))
    }

    /// Deployment `d`'s canary-vs-control verdict on metric `m`, with its bounds, and the
    /// self-baseline chart nearest its threshold (`nearest` from [`Detector::nearest_alarms`]).
    fn evidence(
        &self,
        d: usize,
        m: usize,
        nearest: &[Vec<Option<(f64, usize)>>],
        t: i64,
    ) -> (Verdict, Option<Verdict>) {
        let dep = &self.deployments[d];
        let ab = verdict(
            Subject(&dep.name, dep.canary_version.as_deref()),
            &self.rules[m],
            &dep.tests[m],
            dep.segments.as_ref().map(|s| (s, m)),
            t,
            self.events_seen,
        );
        let alarm = dep.alarms[m].as_ref();
        let watch = nearest[d][m].and_then(|(_, i)| self.watch(i, m, alarm, t));
        (ab, watch)
    }

    /// True when the detector holds deployment `name`.
    pub fn knows(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The evidence a trajectory samples, of each deployment whose name `wanted` accepts, with
    /// the deployment's name: per metric, the canary-vs-control verdict and the self-baseline
    /// chart nearest its threshold, as [`Detector::snapshot`] has them. Only those: the rest of
    /// a view (history, signals, segments) is not built, and bounds are computed for the
    /// accepted deployments alone.
    pub fn evidence_where(&self, wanted: impl Fn(&str) -> bool) -> Vec<Evidence<'_>> {
        let t = self.watermark_ms.max(0);
        let wanted: Vec<bool> = self.deployments.iter().map(|d| wanted(&d.name)).collect();
        let nearest = self.nearest_alarms(&wanted);
        self.deployments
            .iter()
            .enumerate()
            .filter(|(d, _)| wanted[*d])
            .map(|(d, dep)| {
                let metrics = (0..self.rules.len())
                    .map(|m| self.evidence(d, m, &nearest, t))
                    .collect();
                (dep.name.as_str(), metrics)
            })
            .collect()
    }

    /// Every deployment's current verdicts, signals and history.
    pub fn snapshot(&self) -> Vec<DeploymentView> {
        let t = self.watermark_ms.max(0);
        let nearest = self.nearest_alarms(&vec![true; self.deployments.len()]);
        self.deployments
            .iter()
            .enumerate()
            .map(|(d, dep)| {
                let metrics = self
                    .rules
                    .iter()
                    .zip(&dep.alarms)
                    .zip(&dep.late_alarms)
                    .enumerate()
                    .map(|(m, ((rule, alarm), late))| {
                        let (ab, watch) = self.evidence(d, m, &nearest, t);
                        let state = [alarm, late]
                            .into_iter()
                            .flatten()
                            .fold(ab.state, |s, a| s.max(a.state));
                        MetricVerdicts {
                            metric: rule.name.clone(),
                            state,
                            canary_vs_control: ab,
                            self_baseline: alarm.clone(),
                            self_baseline_watch: watch,
                            late_drift: late.clone(),
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
                    segments: dep.segments.as_ref().map(Segments::view),
                }
            })
            .collect()
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

mod ab;
mod baseline;
mod budget;
mod late;
mod overflow;
pub mod part;
mod segments;

#[cfg(test)]
mod tests;
