//! The action ladder and latch: pure decisions about what to do with a verdict.
//!
//! Per deployment: `healthy → suspect (warn) → contained → released`. Verdict and signal
//! changes climb the ladder as the matching policy says (observe → alert → contain); `contained`
//! is latched — new evidence, a restart (the latch is persisted by the caller) or a config reload
//! never un-contain, only [`Ladder::release`] does. An incident is one canary version of one
//! deployment: it is contained once, paged once, and once released it stays closed even if the
//! same stream is consumed again. Every action carries an idempotency key
//! (`incident/target/op`); the caller records keys as done so nothing is repeated, across
//! restarts too.
//!
//! Pure: no I/O, no clock (times are passed in), no knowledge of the providers' APIs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{ContainmentConfig, PolicyConfig, PolicyMode, TriggerState};
use crate::detect::{Change, State};

/// Where a deployment stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing wrong known.
    #[default]
    Healthy,
    /// A warning: watched, not contained.
    Suspect,
    /// Contained: gate closed, containment actions taken. Latched.
    Contained,
    /// A human released the last containment.
    Released,
}

/// What one incident is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable id: `deployment:model_version` (automatic) or `deployment:manual:<at>`.
    pub id: String,
    /// Deployment.
    pub deployment: String,
    /// Canary version.
    pub model_version: String,
    /// Wall-clock time it opened (RFC 3339).
    pub opened_at: String,
    /// Why, in one line.
    pub reason: String,
    /// The verdict (or signal, or manual request) that opened it.
    pub evidence: serde_json::Value,
    /// The policy that acted.
    pub policy: String,
    /// Dry-run: nothing outside driftd changes, the gate stays open.
    pub dry_run: bool,
}

/// Who released an incident, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// Operator name.
    pub operator: String,
    /// Reason given.
    pub reason: String,
    /// Wall-clock time (RFC 3339).
    pub at: String,
    /// The incident released.
    pub incident: String,
}

/// One deployment's latch, persisted. Every field has a default so a state file written by an
/// older driftd (with fewer fields) still loads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latch {
    /// Current phase.
    pub phase: Phase,
    /// The open (or last) incident.
    pub incident: Option<Incident>,
    /// Incidents released, never reopened by the same evidence.
    pub closed: Vec<String>,
    /// Idempotency keys of actions done.
    pub done: BTreeSet<String>,
    /// The last release.
    pub last_release: Option<Release>,
    /// Open signal alerts (`deployment:kind`), resolved when the signal clears.
    pub signal_alerts: BTreeMap<String, Incident>,
}

/// What an action does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Raise an alert / page.
    Trigger,
    /// Resolve it.
    Resolve,
    /// Contain: flag to safe variant, rollout aborted, webhook called.
    Contain,
}

/// Alert severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Containment-worthy.
    Critical,
    /// Worth a look.
    Warning,
}

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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// Deployment.
    pub deployment: String,
    /// From.
    pub from: Phase,
    /// To.
    pub to: Phase,
    /// Why.
    pub why: String,
    /// The operator, for manual transitions.
    pub operator: Option<String>,
    /// The incident.
    pub incident: Option<String>,
}

/// The result of one input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
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
}

/// All latches plus the policies that drive them.
#[derive(Debug, Clone)]
pub struct Ladder {
    policies: Vec<PolicyConfig>,
    alert_targets: Vec<String>,
    latches: BTreeMap<String, Latch>,
}

fn matches(list: &[String], value: &str) -> bool {
    list.iter().any(|x| x == "*" || x == value)
}

fn trigger(state: State) -> Option<TriggerState> {
    match state {
        State::Warn => Some(TriggerState::Warn),
        State::Fail => Some(TriggerState::Fail),
        State::Insufficient | State::Pass => None,
    }
}

impl Ladder {
    /// A ladder for the config, with latches loaded from the persisted state.
    pub fn new(config: &ContainmentConfig, latches: BTreeMap<String, Latch>) -> Ladder {
        let alert_targets: Vec<String> = config
            .targets
            .iter()
            .filter(|t| t.is_alert())
            .map(|t| t.name().to_string())
            .collect();
        let policies = if config.policies.is_empty() {
            // The safe default: contain at the gate, alert wherever an alert target exists.
            vec![PolicyConfig {
                name: "default".into(),
                deployments: vec!["*".into()],
                metrics: vec!["*".into()],
                mode: PolicyMode::Enforce,
                alert_on: vec![TriggerState::Fail],
                contain_on: vec![TriggerState::Fail],
                alert_on_signals: true,
                alerts: alert_targets.clone(),
                contain: Vec::new(),
            }]
        } else {
            config.policies.clone()
        };
        Ladder {
            policies,
            alert_targets,
            latches,
        }
    }

    /// Every latch.
    pub fn latches(&self) -> &BTreeMap<String, Latch> {
        &self.latches
    }

    /// One deployment's latch.
    pub fn latch(&self, deployment: &str) -> Option<&Latch> {
        self.latches.get(deployment)
    }

    /// True when the deployment's gate is closed (contained, not in dry-run).
    pub fn gate_closed(&self, deployment: &str) -> bool {
        self.latches.get(deployment).is_some_and(|l| {
            l.phase == Phase::Contained && l.incident.as_ref().is_some_and(|i| !i.dry_run)
        })
    }

    fn policy(&self, deployment: &str) -> Option<&PolicyConfig> {
        self.policies
            .iter()
            .find(|p| matches(&p.deployments, deployment))
    }

    /// Records an action as done.
    pub fn mark_done(&mut self, deployment: &str, key: &str) {
        self.latches
            .entry(deployment.to_string())
            .or_default()
            .done
            .insert(key.to_string());
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
    pub fn on_change(&mut self, change: &Change, now: &str) -> Outcome {
        match change {
            Change::Verdict(v) => {
                let mut out = Outcome::default();
                let Some(policy) = self.policy(&v.deployment).cloned() else {
                    return out;
                };
                if !matches(&policy.metrics, &v.metric) {
                    return out;
                }
                let latch = self.latches.entry(v.deployment.clone()).or_default();
                let Some(t) = trigger(v.state) else {
                    // Back to pass: a suspect deployment calms down and its warning resolves.
                    if latch.phase == Phase::Suspect && v.state == State::Pass {
                        if let Some(inc) = latch.incident.clone() {
                            out.actions = Self::actions(
                                latch,
                                &inc,
                                &policy.alerts,
                                Op::Resolve,
                                Severity::Warning,
                            );
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
                let incident = Incident {
                    id,
                    deployment: v.deployment.clone(),
                    model_version: v.model_version.clone(),
                    opened_at: now.to_string(),
                    reason: format!(
                        "{} {} {} (n {}/{}, estimate {:?}, p {:?})",
                        v.metric,
                        v.source.as_str(),
                        v.state.as_str(),
                        v.n_canary,
                        v.n_control,
                        v.estimate,
                        v.p_value
                    ),
                    evidence: serde_json::to_value(v).unwrap_or_default(),
                    policy: policy.name.clone(),
                    dry_run: policy.mode == PolicyMode::DryRun,
                };
                let severity = if t == TriggerState::Fail {
                    Severity::Critical
                } else {
                    Severity::Warning
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
            Change::Signal(s) => {
                let mut out = Outcome::default();
                let Some(policy) = self.policy(&s.deployment).cloned() else {
                    return out;
                };
                if !policy.alert_on_signals {
                    return out;
                }
                let kind = s.kind.as_str();
                let id = format!("{}:{}:{kind}", s.deployment, s.model_version);
                let latch = self.latches.entry(s.deployment.clone()).or_default();
                let incident = Incident {
                    id: id.clone(),
                    deployment: s.deployment.clone(),
                    model_version: s.model_version.clone(),
                    opened_at: now.to_string(),
                    reason: format!("{kind} (active: {})", s.active),
                    evidence: serde_json::to_value(s).unwrap_or_default(),
                    policy: policy.name.clone(),
                    dry_run: policy.mode == PolicyMode::DryRun,
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
        }
    }

    /// A human contains a deployment by hand.
    pub fn contain(
        &mut self,
        deployment: &str,
        operator: &str,
        reason: &str,
        now: &str,
    ) -> Result<Outcome, LadderError> {
        let policy = self.policy(deployment).cloned();
        let latch = self.latches.entry(deployment.to_string()).or_default();
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
            evidence: serde_json::json!({"operator": operator, "reason": reason}),
            policy: policy.as_ref().map_or("manual".into(), |p| p.name.clone()),
            // A human asked: act even under a dry-run policy.
            dry_run: false,
        };
        let mut out = Outcome::default();
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

    /// A human releases a contained deployment.
    pub fn release(
        &mut self,
        deployment: &str,
        operator: &str,
        reason: &str,
        now: &str,
    ) -> Result<Outcome, LadderError> {
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
            .expect("a contained latch has an incident");
        let mut out = Outcome::default();
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
        });
        Ok(out)
    }

    /// Actions of contained deployments not yet done (after a restart).
    pub fn pending(&self) -> Vec<Action> {
        let mut out = Vec::new();
        for (dep, latch) in &self.latches {
            let (Phase::Contained, Some(incident)) = (latch.phase, &latch.incident) else {
                continue;
            };
            if let Some(p) = self.policy(dep) {
                out.extend(Self::actions(
                    latch,
                    incident,
                    &p.contain,
                    Op::Contain,
                    Severity::Critical,
                ));
                out.extend(Self::actions(
                    latch,
                    incident,
                    &p.alerts,
                    Op::Trigger,
                    Severity::Critical,
                ));
            }
        }
        out
    }

    /// Alert targets of the configured policies' defaults (for failure alerts).
    pub fn alert_targets(&self) -> &[String] {
        &self.alert_targets
    }
}

/// The idempotency key of an action. Alerts carry their severity: a warning and the critical
/// alert that may follow are different alerts (different labels in Alertmanager).
pub fn action_key(incident: &str, target: &str, op: Op, severity: Severity) -> String {
    let sev = match severity {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
    };
    match op {
        Op::Contain => format!("{incident}/{target}/contain"),
        Op::Trigger | Op::Resolve => format!("{incident}/{target}/{}-{sev}", op_str(op)),
    }
}

/// The op as a key / label fragment.
pub fn op_str(op: Op) -> &'static str {
    match op {
        Op::Trigger => "trigger",
        Op::Resolve => "resolve",
        Op::Contain => "contain",
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
        incident: incident.map(|i| i.id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetConfig;
    use crate::detect::{Source, Verdict};

    fn verdict(state: State, version: &str) -> Change {
        Change::Verdict(Verdict {
            deployment: "svc".into(),
            model_version: version.into(),
            metric: "refusal".into(),
            source: Source::CanaryVsControl,
            state,
            at: "2026-11-29T05:00:00.000Z".into(),
            events_seen: 10,
            n_canary: 5,
            n_control: 5,
            canary_value: None,
            control_value: None,
            estimate: Some(0.05),
            ci_low: None,
            ci_high: None,
            p_value: Some(0.001),
            statistic: 7.0,
            threshold: 6.0,
            min_effect: 0.01,
            alpha: Some(0.0025),
            arm: None,
            segment: None,
            reference: None,
        })
    }

    fn config(mode: PolicyMode) -> ContainmentConfig {
        ContainmentConfig {
            targets: vec![
                TargetConfig::Alertmanager {
                    name: "am".into(),
                    url: "http://x".into(),
                },
                TargetConfig::Flagd {
                    name: "flag".into(),
                    path: "/tmp/f.json".into(),
                    flag: "f".into(),
                    safe_variant: "off".into(),
                },
            ],
            policies: vec![PolicyConfig {
                name: "p".into(),
                deployments: vec!["*".into()],
                metrics: vec!["*".into()],
                mode,
                alert_on: vec![TriggerState::Warn, TriggerState::Fail],
                contain_on: vec![TriggerState::Fail],
                alert_on_signals: true,
                alerts: vec!["am".into()],
                contain: vec!["flag".into()],
            }],
            ..ContainmentConfig::default()
        }
    }

    #[test]
    fn fail_contains_once_and_release_resolves_and_latches() {
        let mut l = Ladder::new(&config(PolicyMode::Enforce), BTreeMap::new());
        let out = l.on_change(&verdict(State::Fail, "v1"), "t1");
        let keys: Vec<&str> = out.actions.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["svc:v1/flag/contain", "svc:v1/am/trigger-critical"]);
        assert!(l.gate_closed("svc"));
        for a in &out.actions {
            l.mark_done("svc", &a.key);
        }
        // More evidence: nothing new.
        assert!(l
            .on_change(&verdict(State::Fail, "v1"), "t2")
            .actions
            .is_empty());
        assert!(l
            .on_change(&verdict(State::Pass, "v1"), "t2")
            .actions
            .is_empty());
        assert!(l.gate_closed("svc"), "latched");
        let out = l.release("svc", "ana", "false alarm", "t3").unwrap();
        assert_eq!(out.actions.len(), 1);
        assert_eq!(out.actions[0].op, Op::Resolve);
        assert!(!l.gate_closed("svc"));
        // The same incident replayed does not re-open.
        let out = l.on_change(&verdict(State::Fail, "v1"), "t4");
        assert!(out.actions.is_empty() && !out.ignored.is_empty());
        // A new canary version is a new incident.
        assert!(!l
            .on_change(&verdict(State::Fail, "v2"), "t5")
            .actions
            .is_empty());
        assert_eq!(
            l.release("nope", "a", "b", "t"),
            Err(LadderError::NotContained("nope".into()))
        );
    }

    #[test]
    fn warn_alerts_without_containing_and_calms_down() {
        let mut l = Ladder::new(&config(PolicyMode::Enforce), BTreeMap::new());
        let out = l.on_change(&verdict(State::Warn, "v1"), "t1");
        assert_eq!(out.actions.len(), 1);
        assert_eq!(
            (out.actions[0].op, out.actions[0].severity),
            (Op::Trigger, Severity::Warning)
        );
        assert_eq!(l.latch("svc").unwrap().phase, Phase::Suspect);
        assert!(!l.gate_closed("svc"));
        l.mark_done("svc", &out.actions[0].key);
        let out = l.on_change(&verdict(State::Pass, "v1"), "t2");
        assert_eq!(out.actions[0].op, Op::Resolve);
        assert_eq!(l.latch("svc").unwrap().phase, Phase::Healthy);
    }

    /// Regression: a warning that calmed down recorded its resolve as done, so the release of
    /// the containment that followed for the same canary never resolved the critical alert.
    #[test]
    fn warn_then_pass_then_fail_then_release_resolves_the_critical_alert() {
        let mut l = Ladder::new(&config(PolicyMode::Enforce), BTreeMap::new());
        for (state, t) in [
            (State::Warn, "t1"),
            (State::Pass, "t2"),
            (State::Warn, "t3"),
            (State::Fail, "t4"),
        ] {
            for a in l.on_change(&verdict(state, "v1"), t).actions {
                l.mark_done("svc", &a.key);
            }
        }
        let out = l.release("svc", "ana", "ok", "t5").unwrap();
        let keys: Vec<&str> = out.actions.iter().map(|a| a.key.as_str()).collect();
        assert!(keys.contains(&"svc:v1/am/resolve-critical"), "{keys:?}");
    }

    #[test]
    fn signal_alerts_are_raised_once_resolved_and_can_come_back() {
        use crate::detect::{Signal, SignalKind};
        let signal = |active: bool| {
            Change::Signal(Signal {
                kind: SignalKind::TelemetryAbsent,
                deployment: "svc".into(),
                model_version: "v1".into(),
                arm: None,
                active,
                at: "t".into(),
                events_seen: 1,
                n_canary: 1,
                n_control: 1,
                expected_share: None,
                observed_share: None,
                statistic: 400.0,
                threshold: 300.0,
            })
        };
        let mut l = Ladder::new(&config(PolicyMode::Enforce), BTreeMap::new());
        let up = l.on_change(&signal(true), "t1");
        assert_eq!(up.actions.len(), 1);
        l.mark_done("svc", &up.actions[0].key);
        assert!(
            l.on_change(&signal(true), "t2").actions.is_empty(),
            "raised once"
        );
        assert!(l
            .latch("svc")
            .unwrap()
            .signal_alerts
            .contains_key("svc:v1:telemetry_absent"));
        let down = l.on_change(&signal(false), "t3");
        assert_eq!(down.actions[0].op, Op::Resolve);
        assert_eq!(
            down.actions[0].incident.opened_at, "t1",
            "resolved as raised"
        );
        let again = l.on_change(&signal(true), "t4");
        assert_eq!(again.actions.len(), 1, "a new episode alerts again");
        assert!(!l.gate_closed("svc"), "signals never contain");
    }

    #[test]
    fn dry_run_marks_actions_and_leaves_the_gate_open() {
        let mut l = Ladder::new(&config(PolicyMode::DryRun), BTreeMap::new());
        let out = l.on_change(&verdict(State::Fail, "v1"), "t1");
        assert!(out.actions.iter().all(|a| a.dry_run));
        assert_eq!(l.latch("svc").unwrap().phase, Phase::Contained);
        assert!(!l.gate_closed("svc"));
    }

    #[test]
    fn persisted_latch_survives_and_pending_actions_are_redone() {
        let mut l = Ladder::new(&config(PolicyMode::Enforce), BTreeMap::new());
        let out = l.on_change(&verdict(State::Fail, "v1"), "t1");
        l.mark_done("svc", &out.actions[0].key);
        let restored = Ladder::new(&config(PolicyMode::Enforce), l.latches().clone());
        assert!(restored.gate_closed("svc"));
        let pending: Vec<String> = restored.pending().into_iter().map(|a| a.key).collect();
        assert_eq!(pending, ["svc:v1/am/trigger-critical"]);
    }

    #[test]
    fn no_policy_contains_at_the_gate_and_alerts_every_alert_target() {
        let mut c = config(PolicyMode::Enforce);
        c.policies.clear();
        let mut l = Ladder::new(&c, BTreeMap::new());
        let out = l.on_change(&verdict(State::Fail, "v1"), "t1");
        assert!(l.gate_closed("svc"));
        let keys: Vec<&str> = out.actions.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            ["svc:v1/am/trigger-critical"],
            "no flag flipped without a policy naming it"
        );
    }

    #[test]
    fn manual_contain_and_double_contain() {
        let mut l = Ladder::new(&config(PolicyMode::DryRun), BTreeMap::new());
        let out = l.contain("svc", "ana", "looks off", "t1").unwrap();
        assert!(
            l.gate_closed("svc"),
            "a human's containment is never dry-run"
        );
        assert!(out.actions.iter().all(|a| !a.dry_run));
        assert_eq!(
            l.contain("svc", "ana", "again", "t2"),
            Err(LadderError::AlreadyContained("svc".into()))
        );
    }
}
