//! Evidence over time: a bounded, downsampled trajectory of every test's evidence, for the
//! on-call page's charts.
//!
//! Owns [`Trajectories`]: per deployment, one [`Series`] per (metric, source) of its current
//! canary version, fed by the pipeline from the detector's public output (the verdict changes it
//! emits and its [`DeploymentView`] snapshots). Every time is event time (the largest seen), so
//! a replay of the same events builds the same trajectory. A series keeps at most
//! [`MAX_POINTS`] points, one per bucket of event time; when full, the bucket width doubles and
//! neighbours merge, so the whole canary lifetime stays visible in bounded memory
//! ([`Series::MAX_BYTES`]). A point where the verdict changed is kept over the others of its
//! bucket: the chart always shows the crossing. Plain data and arithmetic: must not do I/O, read
//! the clock, or decide anything.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::verdict::{Change, DeploymentView, Source, Verdict, VerdictState};

/// The most points a series keeps.
pub const MAX_POINTS: usize = 240;
/// The first bucket width, and how often (in event time) the current evidence is sampled.
pub const SAMPLE_MS: i64 = 1_000;

/// One sample of a test's evidence. Absent values are NaN (kept as `f32`: a chart needs no
/// more, and the point stays at 48 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Event time of the sample (ms since the epoch).
    pub t_ms: i64,
    /// The difference canary − control, or the cohort mean (self-baseline).
    pub estimate: f32,
    /// Lower confidence-sequence bound of the difference.
    pub ci_low: f32,
    /// Upper confidence-sequence bound of the difference.
    pub ci_high: f32,
    /// The test statistic (`ln Λ⁺` or the CUSUM statistic).
    pub statistic: f32,
    /// The threshold the statistic is compared with.
    pub threshold: f32,
    /// Canary events in the test.
    pub n_canary: u64,
    /// Control events in the test.
    pub n_control: u64,
    /// The verdict state at the sample.
    pub state: VerdictState,
    /// The verdict changed state here.
    pub changed: bool,
}

impl Point {
    fn of(v: &Verdict, t_ms: i64, changed: bool) -> Point {
        let f = |x: Option<f64>| x.map_or(f32::NAN, |x| x as f32);
        Point {
            t_ms,
            estimate: f(v.estimate),
            ci_low: f(v.ci_low),
            ci_high: f(v.ci_high),
            statistic: v.statistic as f32,
            threshold: v.threshold as f32,
            n_canary: v.n_canary,
            n_control: v.n_control,
            state: v.state,
            changed,
        }
    }
}

/// One test's trajectory: a metric of a deployment's current canary version, from one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Metric name.
    pub metric: String,
    /// Which detector.
    pub source: Source,
    /// The canary version the test is about; a new version starts a new series.
    pub model_version: String,
    /// The metric's effect floor.
    pub min_effect: f64,
    /// The current bucket width (ms of event time).
    pub width_ms: i64,
    /// The points, oldest first, at most one per bucket.
    pub points: Vec<Point>,
}

impl Series {
    /// The most bytes a series' points take ([`MAX_POINTS`] points).
    pub const MAX_BYTES: usize = MAX_POINTS * std::mem::size_of::<Point>();

    fn new(v: &Verdict) -> Series {
        Series {
            metric: v.metric.clone(),
            source: v.source,
            model_version: v.model_version.clone(),
            min_effect: v.min_effect,
            width_ms: SAMPLE_MS,
            points: Vec::with_capacity(8),
        }
    }

    /// Adds a sample: it replaces the last point when in the same bucket, unless that point
    /// marks a change and this one does not.
    fn push(&mut self, p: Point) {
        let bucket = |t: i64| t.div_euclid(self.width_ms);
        if let Some(last) = self.points.last_mut() {
            if bucket(last.t_ms) == bucket(p.t_ms) {
                if p.changed || !last.changed {
                    *last = p;
                }
                return;
            }
        }
        self.points.push(p);
        while self.points.len() >= MAX_POINTS {
            self.width_ms = self.width_ms.saturating_mul(2);
            self.compact();
        }
    }

    /// Merges the points that now share a bucket, by the rule of [`Series::push`].
    fn compact(&mut self) {
        let width = self.width_ms;
        let mut out: Vec<Point> = Vec::with_capacity(self.points.len() / 2 + 1);
        for p in self.points.drain(..) {
            match out.last_mut() {
                Some(last) if last.t_ms.div_euclid(width) == p.t_ms.div_euclid(width) => {
                    if p.changed || !last.changed {
                        *last = p;
                    }
                }
                _ => out.push(p),
            }
        }
        self.points = out;
    }
}

/// Every deployment's trajectories, shared with readers by reference count (a publication
/// copies only the series that changed since the last one).
#[derive(Debug, Clone, Default)]
pub struct Trajectories {
    by_deployment: BTreeMap<String, Vec<Arc<Series>>>,
    clocks: HashMap<String, Clock>,
    clock_ms: i64,
    sampled_tick: i64,
}

/// One deployment's event time: its points are stamped with it, so a deployment whose
/// partition is read late (a backlog) still spreads over its own time.
#[derive(Debug, Clone, Copy, Default)]
struct Clock {
    now_ms: i64,
    sampled_tick: i64,
    /// No event since it was last sampled: its evidence is unchanged.
    sampled: bool,
}

impl Trajectories {
    /// Advances the event-time clocks with an event of `deployment` at `t_ms`; true when the
    /// current evidence is due to be sampled (then the caller passes a detector snapshot to
    /// [`Trajectories::sample`]): once per [`SAMPLE_MS`] of the largest event time, and once per
    /// [`SAMPLE_MS`] of a deployment's own time while it is more than two behind (catching up
    /// on a backlog) — not once per deployment, which would build a snapshot per deployment.
    pub fn advance(&mut self, deployment: &str, t_ms: i64) -> bool {
        self.clock_ms = self.clock_ms.max(t_ms);
        let clock = match self.clocks.get_mut(deployment) {
            Some(c) => c,
            None => self.clocks.entry(deployment.to_string()).or_default(),
        };
        clock.now_ms = clock.now_ms.max(t_ms);
        clock.sampled = false;
        let tick = self.clock_ms.div_euclid(SAMPLE_MS);
        if tick > self.sampled_tick {
            self.sampled_tick = tick;
            return true;
        }
        clock.now_ms.div_euclid(SAMPLE_MS) > clock.sampled_tick
            && self.clock_ms - clock.now_ms >= 2 * SAMPLE_MS
    }

    /// True when `deployment` had events since it was last sampled (or never was): a
    /// deployment without one has the same evidence at the same time, so sampling it again
    /// would replace its last point with an equal one.
    pub fn moved(&self, deployment: &str) -> bool {
        self.clocks.get(deployment).is_none_or(|c| !c.sampled)
    }

    fn now(&self, deployment: &str) -> i64 {
        self.clocks
            .get(deployment)
            .map_or(self.clock_ms, |c| c.now_ms)
    }

    /// Records the verdict changes among `changes` as change points.
    pub fn record_changes(&mut self, changes: &[Change]) {
        for c in changes {
            if let Change::Verdict(v) = c {
                let t = self.now(&v.deployment);
                self.series(v).push(Point::of(v, t, true));
            }
        }
    }

    /// Records the current canary-vs-control evidence, and the self-baseline chart nearest its
    /// threshold, of every deployment in `views` at its own time (the caller passes those that
    /// [`Trajectories::moved`]), and forgets the deployments `known` no longer accepts.
    pub fn sample(&mut self, views: &[DeploymentView], known: impl Fn(&str) -> bool) {
        for d in views {
            let evidence: Vec<_> = d
                .metrics
                .iter()
                .map(|m| (m.canary_vs_control.clone(), m.self_baseline_watch.clone()))
                .collect();
            self.sample_deployment(&d.deployment, &evidence);
        }
        self.forget(known);
    }

    /// Records one deployment's evidence at its own time: per metric, the canary-vs-control
    /// verdict and the self-baseline chart nearest its threshold (what
    /// `Detector::evidence_where` hands out).
    pub fn sample_deployment(&mut self, deployment: &str, evidence: &[(Verdict, Option<Verdict>)]) {
        let t = self.now(deployment);
        if let Some(c) = self.clocks.get_mut(deployment) {
            c.sampled_tick = c.now_ms.div_euclid(SAMPLE_MS);
            c.sampled = true;
        }
        // Not before a test has a canary version: a deployment without one has no series.
        if evidence.iter().all(|(v, _)| v.model_version.is_empty()) {
            return;
        }
        let list = self.list(deployment);
        for (v, watch) in evidence {
            if v.model_version.is_empty() {
                continue;
            }
            debug_assert_eq!(v.deployment, deployment);
            Self::series_in(list, v).push(Point::of(v, t, false));
            if let Some(w) = watch {
                Self::series_in(list, w).push(Point::of(w, t, false));
            }
        }
    }

    /// Forgets the deployments `known` no longer accepts.
    pub fn forget(&mut self, known: impl Fn(&str) -> bool) {
        self.by_deployment.retain(|name, _| known(name));
        self.clocks.retain(|name, _| known(name));
    }

    /// The series of `deployment`, an empty list at first.
    fn list(&mut self, deployment: &str) -> &mut Vec<Arc<Series>> {
        if !self.by_deployment.contains_key(deployment) {
            self.by_deployment
                .insert(deployment.to_string(), Vec::new());
        }
        self.by_deployment
            .get_mut(deployment)
            .expect("inserted above")
    }

    /// The series for `v`'s test, started afresh when its canary version is new.
    fn series(&mut self, v: &Verdict) -> &mut Series {
        Self::series_in(self.list(&v.deployment), v)
    }

    /// The series for `v`'s test among its deployment's `list`.
    fn series_in<'a>(list: &'a mut Vec<Arc<Series>>, v: &Verdict) -> &'a mut Series {
        list.retain(|s| s.model_version == v.model_version);
        let i = match list
            .iter()
            .position(|s| s.metric == v.metric && s.source == v.source)
        {
            Some(i) => i,
            None => {
                list.push(Arc::new(Series::new(v)));
                list.len() - 1
            }
        };
        Arc::make_mut(&mut list[i])
    }

    /// The trajectories of `deployment`.
    pub fn of(&self, deployment: &str) -> &[Arc<Series>] {
        self.by_deployment
            .get(deployment)
            .map_or(&[], |v| v.as_slice())
    }

    /// The trajectories of the named deployments, for a state snapshot.
    pub fn export<'a>(&self, deployments: impl Iterator<Item = &'a str>) -> TrajectoryPart {
        let mut out = TrajectoryPart::default();
        for d in deployments {
            if let Some(list) = self.by_deployment.get(d) {
                out.deployments
                    .entry(d.to_string())
                    .or_insert_with(|| list.iter().map(|s| (**s).clone()).collect());
            }
        }
        out
    }

    /// Puts back saved trajectories; a deployment already in memory keeps its own. A restored
    /// deployment's clock resumes from its newest point.
    pub fn import(&mut self, part: TrajectoryPart) {
        for (d, list) in part.deployments {
            if self.by_deployment.contains_key(&d) {
                continue;
            }
            let newest = list
                .iter()
                .filter_map(|s| s.points.last())
                .map(|p| p.t_ms)
                .max();
            if let Some(t) = newest {
                self.clocks.entry(d.clone()).or_insert(Clock {
                    now_ms: t,
                    sampled_tick: t.div_euclid(SAMPLE_MS),
                    // Sampled again at the next tick: the restored evidence may be newer than
                    // the last point.
                    sampled: false,
                });
            }
            self.by_deployment
                .insert(d, list.into_iter().map(Arc::new).collect());
        }
    }
}

/// The trajectories a state snapshot holds: those of one partition's deployments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryPart {
    /// Per deployment, its series.
    pub deployments: BTreeMap<String, Vec<Series>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(state: VerdictState, estimate: f64) -> Verdict {
        Verdict {
            deployment: "svc".into(),
            model_version: "v2".into(),
            metric: "refusal".into(),
            source: Source::CanaryVsControl,
            state,
            at: String::new(),
            events_seen: 0,
            n_canary: 10,
            n_control: 10,
            canary_value: None,
            control_value: None,
            estimate: Some(estimate),
            ci_low: Some(estimate - 0.1),
            ci_high: None,
            p_value: None,
            statistic: 1.0,
            threshold: 5.0,
            min_effect: 0.02,
            alpha: None,
            arm: None,
            segment: None,
            reference: None,
        }
    }

    #[test]
    fn a_long_run_stays_bounded_covers_the_whole_lifetime_and_keeps_the_crossing() {
        let mut s = Series::new(&verdict(VerdictState::Pass, 0.0));
        let n = 100_000i64;
        for i in 0..n {
            let changed = i == 31_337;
            let state = if i >= 31_337 {
                VerdictState::Fail
            } else {
                VerdictState::Pass
            };
            s.push(Point::of(&verdict(state, i as f64), i * SAMPLE_MS, changed));
            assert!(s.points.len() < MAX_POINTS);
        }
        assert!(s.points.len() >= MAX_POINTS / 2 - 1, "{}", s.points.len());
        assert!(
            s.points[0].t_ms < s.width_ms,
            "the start stays within the first bucket"
        );
        assert!(s.points.last().unwrap().t_ms > (n - 1 - s.width_ms / SAMPLE_MS) * SAMPLE_MS);
        let crossing: Vec<_> = s.points.iter().filter(|p| p.changed).collect();
        assert_eq!(crossing.len(), 1);
        assert_eq!(crossing[0].t_ms, 31_337 * SAMPLE_MS);
        assert!(s.points.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
    }

    #[test]
    fn sampling_follows_event_time_and_a_new_version_starts_afresh() {
        let view = |name: &str| DeploymentView {
            deployment: name.into(),
            canary_version: None,
            metrics: Vec::new(),
            sample_ratio_mismatch: false,
            srm: None,
            telemetry_absent: Vec::new(),
            history: Vec::new(),
            segments: None,
        };
        let both = [view("svc"), view("late")];
        let mut t = Trajectories::default();
        assert!(t.advance("svc", 1_500));
        assert!(!t.advance("svc", 1_900));
        assert!(
            !t.advance("svc", 900),
            "late events do not move the clock back"
        );
        assert!(t.advance("svc", 2_000));
        assert!(t.advance("svc", 10_000));
        // `late` is read from a backlog: sampled on its own time, once per tick of it, while it
        // is behind; once close to the rest, with them.
        assert!(t.advance("late", 3_000));
        t.sample(&both, |_| true);
        assert!(!t.advance("late", 3_500));
        assert!(t.advance("late", 4_000));
        t.sample(&both, |_| true);
        assert!(
            !t.advance("late", 8_500),
            "close enough: sampled with the rest"
        );
        assert!(!t.advance("svc", 10_500));
        assert!(t.advance("svc", 11_000));
        let v = verdict(VerdictState::Fail, 0.3);
        t.record_changes(&[Change::Verdict(v.clone())]);
        assert_eq!(t.of("svc")[0].points.len(), 1);
        let v3 = Verdict {
            model_version: "v3".into(),
            ..v
        };
        t.record_changes(&[Change::Verdict(v3)]);
        assert_eq!(t.of("svc").len(), 1);
        assert_eq!(t.of("svc")[0].model_version, "v3");
        t.sample(&[], |_| false);
        assert!(t.of("svc").is_empty(), "a deployment gone is forgotten");
    }

    #[test]
    fn a_point_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Point>(), 48);
        assert_eq!(Series::MAX_BYTES, 11_520);
    }
}
