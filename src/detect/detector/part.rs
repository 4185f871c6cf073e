//! Detection state taken out of, and put back into, a [`Detector`] a Kafka partition at a time.
//!
//! Owns the serialised form of detection state in a state snapshot: each deployment's
//! canary-vs-control tests, late-drift charts, alarms, SRM and absence state and verdict
//! history, and each
//! cohort's self-baseline CUSUMs (which refer to their deployment by position in the part, not
//! in the detector, so a part can be put into any detector). Putting a part back also re-reports
//! what it holds that containment acts on — every `warn` or `fail` verdict and every raised
//! signal — so a decision made before a crash is acted on even if containment never saw it
//! (containment is idempotent: what it already did is not done again). Pure: no I/O.

use serde::{Deserialize, Serialize};

use super::{
    absent_signal, arm_index, srm_signal, verdict, CohortDetect, Deployment, Detector, Subject,
};
use crate::detect::verdict::{Change, VerdictState};
use crate::event::Arm;

/// The detection state of one partition's deployments and cohorts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectPart {
    deployments: Vec<Deployment>,
    /// In the order of the cohorts part; `deployment` indexes `deployments` above.
    cohorts: Vec<CohortDetect>,
    events_seen: u64,
    watermark_ms: i64,
}

/// Why saved detection state cannot be put back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DetectPartError {
    /// The part does not have this config's shape.
    #[error("saved detection state does not fit this config ({0}): the snapshot was written under another metric configuration")]
    Shape(&'static str),
}

impl Detector {
    /// The detection state of the table cohorts `cohorts` (indices, in table order) and of
    /// their deployments. A cohort never observed (none is, in practice) is left out.
    pub fn export(&self, cohorts: &[usize]) -> DetectPart {
        let mut deployments: Vec<Deployment> = Vec::new();
        let mut local: Vec<(usize, usize)> = Vec::new();
        let mut part_cohorts = Vec::new();
        for &i in cohorts {
            let Some(c) = self.cohorts.get(i) else {
                continue;
            };
            let dep = match local.iter().find(|(own, _)| *own == c.deployment) {
                Some((_, l)) => *l,
                None => {
                    deployments.push(self.deployments[c.deployment].clone());
                    local.push((c.deployment, deployments.len() - 1));
                    deployments.len() - 1
                }
            };
            part_cohorts.push(CohortDetect {
                deployment: dep,
                ..c.clone()
            });
        }
        DetectPart {
            deployments,
            cohorts: part_cohorts,
            events_seen: self.events_seen,
            watermark_ms: self.watermark_ms,
        }
    }

    /// Checks that the part has this detector's shape.
    pub fn check(&self, part: &DetectPart) -> Result<(), DetectPartError> {
        let metrics = self.rules.len();
        for d in &part.deployments {
            if d.tests.len() != metrics
                || d.alarms.len() != metrics
                || d.late.len() != metrics
                || d.late_alarms.len() != metrics
            {
                return Err(DetectPartError::Shape("metrics per deployment"));
            }
            let fits = match (&d.segments, self.segments) {
                (None, None) => true,
                (Some(s), Some((k, share))) => s.fits(k, share, metrics),
                _ => false,
            };
            if !fits {
                return Err(DetectPartError::Shape("segment tests"));
            }
        }
        for c in &part.cohorts {
            if c.baselines.len() != metrics {
                return Err(DetectPartError::Shape("metrics per cohort"));
            }
            if c.deployment >= part.deployments.len() {
                return Err(DetectPartError::Shape("cohort without its deployment"));
            }
        }
        Ok(())
    }

    /// Puts a part back after [`Detector::check`]. `placed[j]` is the table index the cohorts
    /// part gave saved cohort `j` (`None`: already in the table, kept as it is); the part's
    /// cohorts must be in the same order. A deployment already known is kept as it is.
    /// Appends to `out` what containment must see again.
    pub fn import(
        &mut self,
        part: DetectPart,
        placed: &[Option<usize>],
        out: &mut Vec<Change>,
    ) -> Result<(), DetectPartError> {
        self.check(&part)?;
        if part.cohorts.len() != placed.len() {
            return Err(DetectPartError::Shape(
                "cohorts differ from the cohort state",
            ));
        }
        self.events_seen = self.events_seen.max(part.events_seen);
        self.watermark_ms = self.watermark_ms.max(part.watermark_ms);
        let mut new_index = Vec::with_capacity(part.deployments.len());
        for dep in part.deployments {
            match self.index.get(&dep.name) {
                Some(&i) => new_index.push(i),
                None => {
                    self.report(&dep, out);
                    self.index.insert(dep.name.clone(), self.deployments.len());
                    self.deployments.push(dep);
                    new_index.push(self.deployments.len() - 1);
                }
            }
        }
        for (c, at) in part.cohorts.into_iter().zip(placed) {
            let Some(at) = *at else { continue };
            if self.cohorts.len() != at {
                // Cohort indices are dense in both the table and here; a gap means the table
                // holds a cohort this detector never observed (the overflow cohort), which
                // import refuses before this point.
                return Err(DetectPartError::Shape(
                    "cohort positions out of step with the table",
                ));
            }
            // The slot is re-read by value: a deployment already known keeps its own slots.
            let slot = self.deployments[new_index[c.deployment]]
                .segments
                .as_mut()
                .and_then(|s| s.slot_of(&c.segment));
            self.cohorts.push(CohortDetect {
                deployment: new_index[c.deployment],
                slot,
                ..c
            });
        }
        Ok(())
    }

    /// The changes containment acts on that `dep` holds: `warn`/`fail` verdicts and raised
    /// signals, as they stand.
    fn report(&self, dep: &Deployment, out: &mut Vec<Change>) {
        let t = self.watermark_ms.max(0);
        for (m, (rule, test)) in self.rules.iter().zip(&dep.tests).enumerate() {
            if test.state >= VerdictState::Warn {
                out.push(Change::Verdict(verdict(
                    Subject(&dep.name, dep.canary_version.as_deref()),
                    rule,
                    test,
                    dep.segments.as_ref().map(|s| (s, m)),
                    t,
                    self.events_seen,
                )));
            }
        }
        for alarm in dep.alarms.iter().chain(&dep.late_alarms).flatten() {
            if alarm.state >= VerdictState::Warn {
                out.push(Change::Verdict(alarm.clone()));
            }
        }
        if dep.srm_active {
            out.push(Change::Signal(srm_signal(
                dep,
                self.srm_threshold,
                t,
                self.events_seen,
            )));
        }
        for arm in [Arm::Canary, Arm::Control] {
            if dep.absent[arm_index(arm)] {
                let silent = t.saturating_sub(dep.last_seen_ms[arm_index(arm)]);
                out.push(Change::Signal(absent_signal(
                    dep,
                    arm,
                    true,
                    silent as f64 / 1000.0,
                    self.absent_after_ms,
                    t,
                    self.events_seen,
                )));
            }
        }
    }
}
