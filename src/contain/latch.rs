//! The latch: what containment persists per deployment, and the rule read from it.
//!
//! Everything here is written to the latch journal and `containment.json` (by [`super::store`]) and read back at
//! start-up — pending releases and approvals included, so a restart between two approvals loses
//! neither — so its serialised form is a file format: field names, enum spellings and the
//! idempotency keys in [`Latch::done`] (spelled by [`action_key`]) must stay readable by the next
//! driftd, or a restart would forget a containment or redo a done action. The transitions that
//! change a latch live in [`super::ladder`].
//!
//! Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::detect::{SignalKind, Source, VerdictState};
use crate::event::Arm;

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

impl Phase {
    /// The spelling in logs, the audit log and the API (the same as its serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Healthy => "healthy",
            Phase::Suspect => "suspect",
            Phase::Contained => "contained",
            Phase::Released => "released",
        }
    }
}

/// What one incident is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable id: `deployment:model_version` (from a verdict), `deployment:manual:<at>` (by
    /// hand), `deployment:model_version:<signal kind>` (a signal alert) or
    /// `<incident>:action-failed:<target>` (a containment action that failed).
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
    /// The severity its actions were taken with; actions redone after a restart keep it.
    /// State written before it was recorded loads as critical, which is what those versions
    /// redid with.
    #[serde(default = "critical")]
    pub severity: Severity,
}

fn critical() -> Severity {
    Severity::Critical
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
    /// The approvers whose approvals made it take effect (the requester alone, when one
    /// approver's request sufficed). Absent in releases written before approvals existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_by: Vec<String>,
}

/// One approval, or the release request it came with: who (the authenticated identity, never a
/// name from a request body), when and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// The authenticated identity.
    pub identity: String,
    /// Wall-clock time (RFC 3339).
    pub at: String,
    /// The reason given.
    pub reason: String,
    /// The operator name the request body gave, when it differs from `identity`: a comment,
    /// never who acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stated_operator: Option<String>,
}

/// A release asked for and not yet approved by enough approvers; the deployment stays
/// contained meanwhile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRelease {
    /// The contained incident it would release.
    pub incident: String,
    /// Who asked, when and why.
    pub requested: Approval,
    /// Distinct approvers so far, in order (the request itself when it counts as one).
    pub approvals: Vec<Approval>,
    /// How many distinct approvers the policy asks (`release_approvals`).
    pub needed: u32,
    /// When it lapses unless approved (`requested.at` + `approval_window`, RFC 3339).
    pub expires_at: String,
    /// The alerts raised for the request and each approval, by id: resolved when the release
    /// takes effect or lapses.
    #[serde(default)]
    pub alerts: BTreeMap<String, Incident>,
}

impl PendingRelease {
    /// "release pending 1/2, approved by alice, expires at …", for people.
    pub fn summary(&self) -> String {
        let by: Vec<&str> = self.approvals.iter().map(|a| a.identity.as_str()).collect();
        format!(
            "release pending {}/{}, {}, expires at {}",
            self.approvals.len(),
            self.needed,
            if by.is_empty() {
                format!("requested by {}, not yet approved", self.requested.identity)
            } else {
                format!("approved by {}", by.join(", "))
            },
            self.expires_at
        )
    }
}

/// An approver's approval to promote one canary version (`promotion = "approval"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionApproval {
    /// The canary version approved; any other version needs its own approval.
    pub model_version: String,
    /// Who, when, why.
    pub approval: Approval,
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
    /// Idempotency keys of actions done (see [`action_key`]).
    pub done: BTreeSet<String>,
    /// The last release.
    pub last_release: Option<Release>,
    /// Open signal alerts (`deployment:kind`), resolved when the signal clears.
    pub signal_alerts: BTreeMap<String, Incident>,
    /// The metrics now at `warn`, as `model_version/metric/source`: a suspect deployment is
    /// healthy again only when none of its current version's metrics still warns.
    pub warning: BTreeSet<String>,
    /// `warn`/`fail` verdicts that arrived stale (see [`Stale`]), by
    /// `model_version/metric/source`: shown, not acted on until fresh events confirm them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub stale: BTreeMap<String, Stale>,
    /// Raised signals that arrived stale (see [`StaleSignal`]), by `model_version/kind[/arm]`:
    /// shown, not alerted on until fresh events confirm them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub stale_signals: BTreeMap<String, StaleSignal>,
    /// A release waiting for approvals (see [`PendingRelease`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_release: Option<PendingRelease>,
    /// The latest promotion approval (see [`PromotionApproval`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion_approval: Option<PromotionApproval>,
}

/// A `warn` or `fail` verdict whose evidence was older than `containment.max_evidence_age`
/// when containment received it. Plain facts of the verdict, no operator input: the public gate
/// body shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stale {
    /// The canary version the verdict is about.
    pub model_version: String,
    /// Metric name.
    pub metric: String,
    /// Which detector.
    pub source: Source,
    /// `warn` or `fail`.
    pub state: VerdictState,
    /// Self-baseline: the arm of the cohort that alarmed.
    pub arm: Option<Arm>,
    /// Event time of the verdict (RFC 3339).
    pub at: String,
    /// How far `at` was behind the wall clock when the verdict was received, in seconds.
    pub age_seconds: f64,
    /// Wall-clock time it was received (RFC 3339).
    pub received_at: String,
    /// The pipeline's event count at the verdict: a snapshot older than this cannot overrule
    /// it.
    pub events_seen: u64,
}

impl Stale {
    /// The key in [`Latch::stale`]: `model_version/metric/source`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.model_version,
            self.metric,
            self.source.as_str()
        )
    }
}

/// A raised signal (sample-ratio mismatch, absent telemetry) whose evidence was older than
/// `containment.max_evidence_age` when containment received it. A signal changes only when it
/// is raised or cleared, so one that stays raised into fresh traffic would bring no new change:
/// it is held here until the published snapshot shows it still raised with fresh events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaleSignal {
    /// Which signal.
    pub kind: SignalKind,
    /// The canary version it was raised under.
    pub model_version: String,
    /// The silent arm (absent telemetry).
    pub arm: Option<Arm>,
    /// Event time of the signal (RFC 3339).
    pub at: String,
    /// How far its evidence was behind the wall clock when received, in seconds.
    pub age_seconds: f64,
    /// Wall-clock time it was received (RFC 3339).
    pub received_at: String,
    /// The pipeline's event count at the signal: a snapshot older than this cannot overrule it.
    pub events_seen: u64,
    /// The signal's statistic when raised (SRM: `ln Λ`; absent: seconds of silence, so the
    /// silent arm's last event is `at` minus it).
    pub statistic: f64,
    /// The signal's threshold (SRM: `ln(1/srm_alpha)`; absent: `absent_after` in seconds), kept
    /// for the evidence of the alert a confirmation raises.
    pub threshold: f64,
}

impl StaleSignal {
    /// The key in [`Latch::stale_signals`]: `model_version/kind[/arm]`.
    pub fn key(&self) -> String {
        signal_key(&self.model_version, self.kind, self.arm)
    }
}

/// The key of a signal in [`Latch::stale_signals`].
pub fn signal_key(model_version: &str, kind: SignalKind, arm: Option<Arm>) -> String {
    match arm {
        Some(arm) => format!("{model_version}/{}/{}", kind.as_str(), arm.as_str()),
        None => format!("{model_version}/{}", kind.as_str()),
    }
}

impl Latch {
    /// True when the deployment's gate is closed: contained, and not by a dry-run policy (a
    /// dry-run containment is recorded but lets traffic through). The one statement of this
    /// rule: the ladder, the `contained` metric and the admin gate all ask here.
    pub fn gate_closed(&self) -> bool {
        self.phase == Phase::Contained && self.incident.as_ref().is_some_and(|i| !i.dry_run)
    }
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

impl Op {
    /// The spelling in idempotency keys, audit records, logs and webhook bodies (the same as
    /// its serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Trigger => "trigger",
            Op::Resolve => "resolve",
            Op::Contain => "contain",
        }
    }
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

impl Severity {
    /// The spelling in idempotency keys, alert labels and provider payloads (the same as its
    /// serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

/// The idempotency key of an action: `incident/target/contain` or
/// `incident/target/<op>-<severity>`. Alerts carry their severity: a warning and the critical
/// alert that may follow are different alerts (different labels in Alertmanager). These keys are
/// persisted in [`Latch::done`]; their spelling is part of the state file format.
pub fn action_key(incident: &str, target: &str, op: Op, severity: Severity) -> String {
    match op {
        Op::Contain => format!("{incident}/{target}/contain"),
        Op::Trigger | Op::Resolve => {
            format!("{incident}/{target}/{}-{}", op.as_str(), severity.as_str())
        }
    }
}

/// Every deployment's latch, remembering which ones changed since they were last persisted and
/// since they were last published: writing and showing only those keeps a change's cost from
/// growing with the deployments that ever held a latch. Every mutable access marks the
/// deployment changed, whether or not it changes anything.
#[derive(Debug, Clone, Default)]
pub struct Latches {
    map: BTreeMap<String, Latch>,
    unsaved: BTreeSet<String>,
    unpublished: BTreeSet<String>,
}

impl Latches {
    /// Latches loaded from disk: all persisted, none published yet.
    pub fn loaded(map: BTreeMap<String, Latch>) -> Latches {
        Latches {
            unpublished: map.keys().cloned().collect(),
            map,
            unsaved: BTreeSet::new(),
        }
    }

    fn touch(&mut self, deployment: &str) {
        for set in [&mut self.unsaved, &mut self.unpublished] {
            if !set.contains(deployment) {
                set.insert(deployment.to_string());
            }
        }
    }

    /// Every latch.
    pub fn map(&self) -> &BTreeMap<String, Latch> {
        &self.map
    }

    /// One deployment's latch.
    pub fn get(&self, deployment: &str) -> Option<&Latch> {
        self.map.get(deployment)
    }

    /// Every latch, in deployment order.
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, String, Latch> {
        self.map.iter()
    }

    /// One deployment's latch to change, if it has one.
    pub fn get_mut(&mut self, deployment: &str) -> Option<&mut Latch> {
        if !self.map.contains_key(deployment) {
            return None;
        }
        self.touch(deployment);
        self.map.get_mut(deployment)
    }

    /// One deployment's latch to change, created when missing.
    pub fn entry(&mut self, deployment: &str) -> &mut Latch {
        self.touch(deployment);
        self.map.entry(deployment.to_string()).or_default()
    }

    /// Drops a deployment's latch.
    pub fn remove(&mut self, deployment: &str) {
        if self.map.remove(deployment).is_some() {
            self.touch(deployment);
        }
    }

    /// The deployments changed since the last call: to persist.
    pub fn take_unsaved(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.unsaved)
    }

    /// Marks deployments to persist again (their write failed).
    pub fn unsave(&mut self, deployments: BTreeSet<String>) {
        self.unsaved.extend(deployments);
    }

    /// True when a change is not persisted yet.
    pub fn has_unsaved(&self) -> bool {
        !self.unsaved.is_empty()
    }

    /// The deployments changed since the last call: to publish.
    pub fn take_unpublished(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.unpublished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file as driftd writes it today: it must keep loading, field for field.
    const STATE_FILE: &str = r#"{
  "svc": {
    "phase": "contained",
    "incident": {
      "id": "svc:v1",
      "deployment": "svc",
      "model_version": "v1",
      "opened_at": "2026-11-29T05:00:00.000Z",
      "reason": "refusal canary_vs_control fail",
      "evidence": {"metric": "refusal", "p_value": 0.001},
      "policy": "p",
      "dry_run": false
    },
    "closed": ["svc:v0"],
    "done": ["svc:v1/am/trigger-critical", "svc:v1/flag/contain"],
    "last_release": {"operator": "ana", "reason": "ok", "at": "t0", "incident": "svc:v0"},
    "signal_alerts": {}
  },
  "old": {"phase": "released"}
}"#;

    #[test]
    fn the_state_file_format_loads_and_writes_back_the_same() {
        let latches: BTreeMap<String, Latch> = serde_json::from_str(STATE_FILE).unwrap();
        let svc = &latches["svc"];
        assert!(svc.gate_closed());
        assert_eq!(svc.closed, ["svc:v0"]);
        assert!(svc.done.contains(&action_key(
            "svc:v1",
            "flag",
            Op::Contain,
            Severity::Critical
        )));
        assert!(svc
            .done
            .contains(&action_key("svc:v1", "am", Op::Trigger, Severity::Critical)));
        assert_eq!(svc.last_release.as_ref().unwrap().operator, "ana");
        assert_eq!(
            latches["old"].phase,
            Phase::Released,
            "older, shorter latch"
        );
        let written: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(&latches).unwrap()).unwrap();
        let mut expected: serde_json::Value = serde_json::from_str(STATE_FILE).unwrap();
        // A file written before incidents recorded their severity loads as critical (what
        // those versions redid with) and is written back with it.
        assert_eq!(svc.incident.as_ref().unwrap().severity, Severity::Critical);
        expected["svc"]["incident"]["severity"] = "critical".into();
        expected["svc"]["warning"] = serde_json::json!([]);
        expected["old"] = serde_json::to_value(Latch {
            phase: Phase::Released,
            ..Latch::default()
        })
        .unwrap();
        assert_eq!(written, expected);
    }

    #[test]
    fn a_dry_run_containment_leaves_the_gate_open() {
        let mut latch: BTreeMap<String, Latch> = serde_json::from_str(STATE_FILE).unwrap();
        let mut svc = latch.remove("svc").unwrap();
        svc.incident.as_mut().unwrap().dry_run = true;
        assert!(!svc.gate_closed());
        svc.phase = Phase::Released;
        assert!(!svc.gate_closed());
        assert!(!Latch::default().gate_closed());
    }

    #[test]
    fn labels_match_the_serde_spelling() {
        for op in [Op::Trigger, Op::Resolve, Op::Contain] {
            assert_eq!(serde_json::to_value(op).unwrap(), op.as_str());
        }
        for s in [Severity::Critical, Severity::Warning] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for p in [
            Phase::Healthy,
            Phase::Suspect,
            Phase::Contained,
            Phase::Released,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }
}
