//! The action ladder: pure decisions about what to do with a verdict.
//!
//! Per deployment: `healthy → suspect (warn) → contained → released`. Verdict and signal
//! changes climb the ladder as the matching policy says (observe → alert → contain); `contained`
//! is latched — new evidence, a restart (the [`Latch`] is persisted by the caller) or a config
//! reload never un-contain, only [`Ladder::release`] does. An incident is one canary version of
//! one deployment: it is contained once, paged once, and once released it stays closed even if
//! the same stream is consumed again. Every action carries an idempotency key
//! ([`action_key`]); the caller records keys as done so nothing is repeated, across restarts
//! too. What is persisted lives in [`super::latch`]; this module only moves latches between
//! phases and says which actions follow.
//!
//! Pure: no I/O, no clock (times are passed in), no knowledge of the providers' APIs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::latch::{action_key, Incident, Latch, Latches, Op, Phase, Release, Severity};
use crate::config::{ContainmentConfig, PolicyConfig, PolicyMode, TriggerState};
use crate::detect::{Change, Signal, Verdict, VerdictState};
pub use approval::{ApprovalKind, ApprovalNote, ApprovalStep, Outcome, Requester};

/// One action to carry out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    /// Idempotency key: `incident/target/op`.
    pub key: String,
    /// Target name.
    pub target: String,
    /// What to do.
    pub op: Op,
    /// Alert severity.
    pub severity: Severity,
    /// The incident (or signal alert) it belongs to.
    pub incident: Incident,
    /// Log, audit and count only.
    pub dry_run: bool,
}

/// A phase change, for the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Deployment.
    pub deployment: String,
    /// From.
    pub from: Phase,
    /// To.
    pub to: Phase,
    /// Why.
    pub why: String,
    /// The authenticated identity, for manual transitions.
    pub operator: Option<String>,
    /// The operator name the request body gave, when it differs from `operator`: a comment,
    /// never who acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stated_operator: Option<String>,
    /// The incident.
    pub incident: Option<String>,
}

/// What the ladder decided about one input: the phase changes and the actions that follow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Phase changes.
    pub transitions: Vec<Transition>,
    /// Actions to carry out (already filtered against done keys).
    pub actions: Vec<Action>,
    /// Inputs deliberately not acted on (e.g. evidence of a released incident), for the audit.
    pub ignored: Vec<String>,
}

/// Why a manual request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LadderError {
    /// Release of something not contained.
    #[error("deployment `{0}` is not contained; nothing to release")]
    NotContained(String),
    /// Manual containment of something already contained.
    #[error("deployment `{0}` is already contained")]
    AlreadyContained(String),
    /// A contained latch without its incident (the state file refuses this at load; this
    /// guards the release path rather than panicking).
    #[error("deployment `{0}` is contained without an incident; fix or move aside the latch state in containment.state_dir")]
    NoIncident(String),
    /// An approval of a release nobody asked for (or whose request lapsed).
    #[error("no release of `{0}` is pending (a request lapses after the policy's approval_window); ask for one with `driftd release`")]
    NothingPending(String),
    /// `separate_requester`: the requester approving their own release.
    #[error("`{identity}` requested this release of `{deployment}` and its policy has separate_requester = true: another approver must approve it")]
    OwnRequest {
        /// Deployment.
        deployment: String,
        /// The requester.
        identity: String,
    },
    /// An approval from an identity without the `approver` role.
    #[error("`{0}` does not hold the approver role")]
    NotApprover(String),
    /// A promotion approval where the policy promotes on evidence alone.
    #[error("the policy of `{0}` promotes on evidence alone (promotion = \"evidence\"); there is nothing to approve")]
    PromotionByEvidence(String),
}

/// All latches plus the policies that drive them.
#[derive(Debug, Clone)]
pub struct Ladder {
    policies: Vec<PolicyConfig>,
    alert_targets: Vec<String>,
    latches: Latches,
}

/// The id of the alert a raised signal opens: `deployment:model_version:kind` (one per kind and
/// canary version, whichever arm is silent).
pub fn signal_alert_id(s: &Signal) -> String {
    format!("{}:{}:{}", s.deployment, s.model_version, s.kind.as_str())
}

fn matches(list: &[String], value: &str) -> bool {
    list.iter().any(|x| x == "*" || x == value)
}

fn trigger(state: VerdictState) -> Option<TriggerState> {
    match state {
        VerdictState::Warn => Some(TriggerState::Warn),
        VerdictState::Fail => Some(TriggerState::Fail),
        VerdictState::Insufficient | VerdictState::Pass => None,
    }
}

impl Ladder {
    /// A ladder for the config, with latches loaded from the persisted state.
    pub fn new(config: &ContainmentConfig, latches: BTreeMap<String, Latch>) -> Ladder {
        let alert_targets = config.alert_targets();
        let policies = config.effective_policies();
        Ladder {
            policies,
            alert_targets,
            latches: Latches::loaded(latches),
        }
    }

    /// Every latch.
    pub fn latches(&self) -> &BTreeMap<String, Latch> {
        self.latches.map()
    }

    /// One deployment's latch.
    pub fn latch(&self, deployment: &str) -> Option<&Latch> {
        self.latches.get(deployment)
    }

    /// True when the deployment's gate is closed (see [`Latch::gate_closed`]).
    pub fn gate_closed(&self, deployment: &str) -> bool {
        self.latches.get(deployment).is_some_and(Latch::gate_closed)
    }

    fn policy(&self, deployment: &str) -> Option<&PolicyConfig> {
        self.policies
            .iter()
            .find(|p| matches(&p.deployments, deployment))
    }

    /// True when a policy covers the verdict's deployment and metric (the ladder may act on it).
    pub fn covers(&self, v: &Verdict) -> bool {
        self.policy(&v.deployment)
            .is_some_and(|p| matches(&p.metrics, &v.metric))
    }

    /// True when a policy alerts on `deployment`'s signals.
    pub fn alerts_on_signals(&self, deployment: &str) -> bool {
        self.policy(deployment).is_some_and(|p| p.alert_on_signals)
    }

    /// One deployment's latch, to be changed outside the ladder's phases (held stale evidence,
    /// [`super::stale`]); created when missing.
    pub fn latch_mut(&mut self, deployment: &str) -> &mut Latch {
        self.latches.entry(deployment)
    }

    /// Drops a deployment's latch: another replica owns it now (`persist.latch_topic`).
    pub fn forget(&mut self, deployment: &str) {
        self.latches.remove(deployment);
    }

    /// The deployments whose latch changed since the last call: to persist.
    pub fn take_unsaved(&mut self) -> BTreeSet<String> {
        self.latches.take_unsaved()
    }

    /// Marks deployments to persist again (their write failed).
    pub fn unsave(&mut self, deployments: BTreeSet<String>) {
        self.latches.unsave(deployments);
    }

    /// True when a latch change is not persisted yet.
    pub fn has_unsaved(&self) -> bool {
        self.latches.has_unsaved()
    }

    /// The deployments whose latch changed since the last call: to publish.
    pub fn take_unpublished(&mut self) -> BTreeSet<String> {
        self.latches.take_unpublished()
    }

    /// Records an action as done.
    pub fn mark_done(&mut self, deployment: &str, key: &str) {
        self.latches.entry(deployment).done.insert(key.to_string());
    }

    fn actions(
        latch: &Latch,
        incident: &Incident,
        targets: &[String],
        op: Op,
        severity: Severity,
    ) -> Vec<Action> {
        targets
            .iter()
            .map(|t| Action {
                key: action_key(&incident.id, t, op, severity),
                target: t.clone(),
                op,
                severity,
                incident: incident.clone(),
                dry_run: incident.dry_run,
            })
            .filter(|a| !latch.done.contains(&a.key))
            .collect()
    }

    /// Reacts to a verdict or signal change. `now` is the wall-clock time (RFC 3339).
    pub fn on_change(&mut self, change: &Change, now: &str) -> Decision {
        let (deployment, version) = match change {
            Change::Verdict(v) => (&v.deployment, &v.model_version),
            Change::Signal(s) => (&s.deployment, &s.model_version),
        };
        let retired = self.retire_signal_alerts(deployment, version);
        let mut out = match change {
            Change::Verdict(v) => self.on_verdict(v, now),
            Change::Signal(s) => self.on_signal(s, now),
        };
        out.actions.splice(0..0, retired);
        out
    }

    /// A change about canary version `current` means every other version of the deployment is
    /// retired: its open signal alerts (absent telemetry, sample-ratio mismatch) can never clear
    /// by themselves, so they are resolved now instead of being re-sent forever.
    fn retire_signal_alerts(&mut self, deployment: &str, current: &str) -> Vec<Action> {
        let alerts = match self.policy(deployment) {
            Some(p) => p.alerts.clone(),
            None => return Vec::new(),
        };
        let Some(latch) = self.latches.get_mut(deployment) else {
            return Vec::new();
        };
        let retired: Vec<String> = latch
            .signal_alerts
            .iter()
            .filter(|(_, raised)| raised.model_version != current)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in retired {
            if let Some(raised) = latch.signal_alerts.remove(&id) {
                out.extend(Self::actions(
                    latch,
                    &raised,
                    &alerts,
                    Op::Resolve,
                    Severity::Warning,
                ));
            }
        }
        out
    }

    fn on_verdict(&mut self, v: &Verdict, now: &str) -> Decision {
        let mut out = Decision::default();
        let Some(policy) = self.policy(&v.deployment).cloned() else {
            return out;
        };
        if !matches(&policy.metrics, &v.metric) {
            return out;
        }
        let latch = self.latches.entry(&v.deployment);
        let version = format!("{}/", v.model_version);
        // Each metric's own state: the deployment's phase follows the worst of them.
        latch.warning.retain(|k| k.starts_with(&version));
        let warning = format!("{version}{}/{}", v.metric, v.source.as_str());
        if v.state == VerdictState::Warn {
            latch.warning.insert(warning);
        } else {
            latch.warning.remove(&warning);
        }
        let Some(t) = trigger(v.state) else {
            // Back to pass: a suspect deployment calms down and its warning resolves, once no
            // metric of the version still warns.
            if latch.phase == Phase::Suspect
                && v.state == VerdictState::Pass
                && latch.warning.is_empty()
            {
                if let Some(inc) = latch.incident.clone() {
                    out.actions =
                        Self::actions(latch, &inc, &policy.alerts, Op::Resolve, Severity::Warning);
                }
                out.transitions.push(transition(
                    &v.deployment,
                    latch.phase,
                    Phase::Healthy,
                    "verdicts back to pass",
                    None,
                    latch.incident.as_ref(),
                ));
                latch.phase = Phase::Healthy;
            }
            return out;
        };
        let id = format!("{}:{}", v.deployment, v.model_version);
        if latch.closed.contains(&id) {
            out.ignored.push(format!(
                "{} {} {} on {}: incident {id} was released; not re-opened by the same evidence",
                v.metric,
                v.source.as_str(),
                v.state.as_str(),
                v.deployment
            ));
            return out;
        }
        let contain = policy.contain_on.contains(&t);
        let alert = policy.alert_on.contains(&t);
        let target_phase = if contain {
            Phase::Contained
        } else {
            Phase::Suspect
        };
        let rank = |p: Phase| match p {
            Phase::Healthy | Phase::Released => 0,
            Phase::Suspect => 1,
            Phase::Contained => 2,
        };
        let same_incident = latch.incident.as_ref().is_some_and(|i| i.id == id);
        if rank(latch.phase) >= rank(target_phase)
            && (same_incident || latch.phase == Phase::Contained)
        {
            return out;
        }
        let severity = if t == TriggerState::Fail {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let incident = Incident {
            id,
            deployment: v.deployment.clone(),
            model_version: v.model_version.clone(),
            opened_at: now.to_string(),
            reason: v.headline(),
            evidence: serde_json::to_value(v).unwrap_or_default(),
            policy: policy.name.clone(),
            dry_run: policy.mode == PolicyMode::DryRun,
            severity,
        };
        if contain {
            out.actions.extend(Self::actions(
                latch,
                &incident,
                &policy.contain,
                Op::Contain,
                severity,
            ));
        }
        if alert {
            out.actions.extend(Self::actions(
                latch,
                &incident,
                &policy.alerts,
                Op::Trigger,
                severity,
            ));
        }
        out.transitions.push(transition(
            &v.deployment,
            latch.phase,
            target_phase,
            &incident.reason,
            None,
            Some(&incident),
        ));
        latch.phase = target_phase;
        latch.incident = Some(incident);
        out
    }

    /// Signals alert (never contain): one warning per raise, resolved when the signal clears.
    fn on_signal(&mut self, s: &Signal, now: &str) -> Decision {
        let mut out = Decision::default();
        let Some(policy) = self.policy(&s.deployment).cloned() else {
            return out;
        };
        if !policy.alert_on_signals {
            return out;
        }
        let kind = s.kind.as_str();
        let id = signal_alert_id(s);
        let latch = self.latches.entry(&s.deployment);
        let incident = Incident {
            id: id.clone(),
            deployment: s.deployment.clone(),
            model_version: s.model_version.clone(),
            opened_at: now.to_string(),
            reason: format!("{kind} (active: {})", s.active),
            evidence: serde_json::to_value(s).unwrap_or_default(),
            policy: policy.name.clone(),
            dry_run: policy.mode == PolicyMode::DryRun,
            severity: Severity::Warning,
        };
        if s.active && !latch.signal_alerts.contains_key(&id) {
            // A signal can clear and come back: each raise starts with fresh keys.
            let prefix = format!("{}/", incident.id);
            latch.done.retain(|k| !k.starts_with(&prefix));
            out.actions = Self::actions(
                latch,
                &incident,
                &policy.alerts,
                Op::Trigger,
                Severity::Warning,
            );
            latch.signal_alerts.insert(id, incident);
        } else if !s.active {
            if let Some(raised) = latch.signal_alerts.remove(&id) {
                // Resolve the alert as it was raised (same start time, same labels).
                out.actions = Self::actions(
                    latch,
                    &raised,
                    &policy.alerts,
                    Op::Resolve,
                    Severity::Warning,
                );
            }
        }
        out
    }

    /// A human contains a deployment by hand: `by` is the authenticated identity; a name its
    /// request body gave is kept in the evidence as `stated_operator`, a comment.
    pub fn contain(
        &mut self,
        deployment: &str,
        by: &Requester,
        reason: &str,
        now: &str,
    ) -> Result<Decision, LadderError> {
        let operator = by.identity.as_str();
        let policy = self.policy(deployment).cloned();
        let latch = self.latches.entry(deployment);
        if latch.phase == Phase::Contained {
            return Err(LadderError::AlreadyContained(deployment.to_string()));
        }
        let incident = Incident {
            id: format!("{deployment}:manual:{now}"),
            deployment: deployment.to_string(),
            model_version: latch
                .incident
                .as_ref()
                .map(|i| i.model_version.clone())
                .unwrap_or_default(),
            opened_at: now.to_string(),
            reason: format!("contained by {operator}: {reason}"),
            evidence: match &by.stated {
                None => serde_json::json!({"operator": operator, "reason": reason}),
                Some(stated) => {
                    serde_json::json!({"operator": operator, "reason": reason, "stated_operator": stated})
                }
            },
            policy: policy.as_ref().map_or("manual".into(), |p| p.name.clone()),
            // A human asked: act even under a dry-run policy.
            dry_run: false,
            severity: Severity::Critical,
        };
        let mut out = Decision::default();
        if let Some(p) = &policy {
            out.actions.extend(Self::actions(
                latch,
                &incident,
                &p.contain,
                Op::Contain,
                Severity::Critical,
            ));
            out.actions.extend(Self::actions(
                latch,
                &incident,
                &p.alerts,
                Op::Trigger,
                Severity::Critical,
            ));
        }
        out.transitions.push(transition(
            deployment,
            latch.phase,
            Phase::Contained,
            &incident.reason,
            Some(operator),
            Some(&incident),
        ));
        latch.phase = Phase::Contained;
        latch.incident = Some(incident);
        Ok(out)
    }

    /// A human releases a contained deployment alone (one approver's request, or the release
    /// its approvals completed: see [`approval`]).
    pub fn release(
        &mut self,
        deployment: &str,
        operator: &str,
        reason: &str,
        now: &str,
    ) -> Result<Decision, LadderError> {
        self.release_approved(deployment, operator, reason, &[operator.to_string()], now)
    }

    fn release_approved(
        &mut self,
        deployment: &str,
        operator: &str,
        reason: &str,
        approved_by: &[String],
        now: &str,
    ) -> Result<Decision, LadderError> {
        let alerts = self
            .policy(deployment)
            .map(|p| p.alerts.clone())
            .unwrap_or_default();
        let latch = self
            .latches
            .get_mut(deployment)
            .filter(|l| l.phase == Phase::Contained)
            .ok_or_else(|| LadderError::NotContained(deployment.to_string()))?;
        let incident = latch
            .incident
            .clone()
            .ok_or_else(|| LadderError::NoIncident(deployment.to_string()))?;
        let mut out = Decision::default();
        // Resolve only what was raised, with the severity it was raised with.
        for severity in [Severity::Critical, Severity::Warning] {
            let raised: Vec<String> = alerts
                .iter()
                .filter(|t| {
                    latch
                        .done
                        .contains(&action_key(&incident.id, t, Op::Trigger, severity))
                })
                .cloned()
                .collect();
            out.actions.extend(Self::actions(
                latch,
                &incident,
                &raised,
                Op::Resolve,
                severity,
            ));
        }
        out.transitions.push(transition(
            deployment,
            Phase::Contained,
            Phase::Released,
            &format!("released by {operator}: {reason}"),
            Some(operator),
            Some(&incident),
        ));
        latch.phase = Phase::Released;
        latch.closed.push(incident.id.clone());
        if latch.closed.len() > 100 {
            latch.closed.remove(0);
        }
        latch.last_release = Some(Release {
            operator: operator.to_string(),
            reason: reason.to_string(),
            at: now.to_string(),
            incident: incident.id,
            approved_by: approved_by.to_vec(),
        });
        latch.pending_release = None;
        Ok(out)
    }

    /// Actions of contained deployments not yet done (after a restart).
    pub fn pending(&self) -> Vec<Action> {
        let mut out = Vec::new();
        for (dep, latch) in self.latches.iter() {
            let (Phase::Contained, Some(incident)) = (latch.phase, &latch.incident) else {
                continue;
            };
            if let Some(p) = self.policy(dep) {
                // With the severity it was contained with: the keys of what was done carry it.
                out.extend(Self::actions(
                    latch,
                    incident,
                    &p.contain,
                    Op::Contain,
                    incident.severity,
                ));
                out.extend(Self::actions(
                    latch,
                    incident,
                    &p.alerts,
                    Op::Trigger,
                    incident.severity,
                ));
            }
        }
        out
    }

    /// Every alert-kind target in the config (Alertmanager, PagerDuty, Slack), whatever the
    /// policies name: where a failed containment action is reported.
    pub fn alert_targets(&self) -> &[String] {
        &self.alert_targets
    }
}

fn transition(
    deployment: &str,
    from: Phase,
    to: Phase,
    why: &str,
    operator: Option<&str>,
    incident: Option<&Incident>,
) -> Transition {
    Transition {
        deployment: deployment.to_string(),
        from,
        to,
        why: why.to_string(),
        operator: operator.map(str::to_string),
        stated_operator: None,
        incident: incident.map(|i| i.id.clone()),
    }
}

pub mod approval;
#[cfg(test)]
mod tests;
