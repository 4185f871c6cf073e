//! Approvals: when a release takes effect, and what the promotion gate may say.
//!
//! A release of a contained deployment takes effect once `release_approvals` distinct
//! identities holding `approver` have approved it while it is pending: from the request (`POST
//! …/release`, whose requester counts as an approver unless `separate_requester`) until
//! `approval_window` later, when a request not yet approved lapses — its approvals with it. The
//! same identity approving twice counts once. Every step is a [`ApprovalNote`] for the audit
//! log, and the request and each approval raise a warning alert on the policy's alert targets,
//! all resolved when the release takes effect or lapses. A promotion approval (`promotion =
//! "approval"`) names one canary version; the gate reads it ([`crate::admin::gate`]).
//!
//! Pure, like the rest of the ladder: times are passed in (Unix milliseconds), and the pending
//! state lives in the [`Latch`], which the caller persists. Who a caller is was settled by the
//! admin server; this module only counts.

use serde::{Deserialize, Serialize};

use super::{Decision, Ladder, LadderError};
use crate::config::{PolicyConfig, PromotionMode};
use crate::contain::latch::{
    Approval, Incident, Latch, Op, PendingRelease, Phase, PromotionApproval, Severity,
};
use crate::event::format_rfc3339_ms;

/// Who asks, as the admin server authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// The authenticated identity.
    pub identity: String,
    /// Holds the `approver` role.
    pub approver: bool,
    /// The operator name the request body gave, when it differs from `identity`.
    pub stated: Option<String>,
}

impl Requester {
    /// An identity holding `approver` (as `containment.admin_token` does).
    pub fn approver(identity: &str) -> Requester {
        Requester {
            identity: identity.into(),
            approver: true,
            stated: None,
        }
    }

    /// An identity without `approver`.
    pub fn operator(identity: &str) -> Requester {
        Requester {
            approver: false,
            ..Requester::approver(identity)
        }
    }

    fn approval(&self, reason: &str, now: &str) -> Approval {
        Approval {
            identity: self.identity.clone(),
            at: now.into(),
            reason: reason.into(),
            stated_operator: self.stated.clone(),
        }
    }
}

/// What is approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    /// Releasing a contained deployment.
    Release,
    /// Promoting a canary version.
    Promotion,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStep {
    /// A release was asked for and is pending.
    Requested,
    /// An approval counted.
    Approved,
    /// Nothing changed: the identity had already approved (or asked).
    Unchanged,
    /// The release took effect.
    Released,
    /// The pending release lapsed, not approved in time.
    Expired,
}

/// One approval step, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalNote {
    /// Deployment.
    pub deployment: String,
    /// Release or promotion.
    pub kind: ApprovalKind,
    /// What happened.
    pub step: ApprovalStep,
    /// The authenticated identity that acted (none when a request lapsed).
    pub identity: Option<String>,
    /// The operator name the request body gave, when it differs: a comment only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stated_operator: Option<String>,
    /// The reason given.
    pub reason: Option<String>,
    /// The incident a release is about, or the canary version a promotion is about.
    pub subject: String,
    /// The distinct approvers counted so far.
    pub approved_by: Vec<String>,
    /// How many the policy asks.
    pub needed: u32,
    /// When a pending release lapses (RFC 3339).
    pub expires_at: Option<String>,
}

/// What an approval step decided: phase changes and actions (alerts, a release's resolves)
/// as any ladder decision, and the notes to audit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Phase changes and actions.
    pub decision: Decision,
    /// The steps, in order.
    pub notes: Vec<ApprovalNote>,
}

impl Outcome {
    fn absorb(&mut self, other: Outcome) {
        self.decision.transitions.extend(other.decision.transitions);
        self.decision.actions.extend(other.decision.actions);
        self.decision.ignored.extend(other.decision.ignored);
        self.notes.extend(other.notes);
    }
}

fn note(
    deployment: &str,
    step: ApprovalStep,
    by: Option<&Requester>,
    reason: Option<&str>,
    p: &PendingRelease,
) -> ApprovalNote {
    ApprovalNote {
        deployment: deployment.into(),
        kind: ApprovalKind::Release,
        step,
        identity: by.map(|b| b.identity.clone()),
        stated_operator: by.and_then(|b| b.stated.clone()),
        reason: reason.map(str::to_string),
        subject: p.incident.clone(),
        approved_by: p.approvals.iter().map(|a| a.identity.clone()).collect(),
        needed: p.needed,
        expires_at: Some(p.expires_at.clone()),
    }
}

/// The warning alert of one request or approval: it says where the release stands.
fn alert(contained: &Incident, id: String, p: &PendingRelease, now: &str) -> Incident {
    Incident {
        id,
        deployment: contained.deployment.clone(),
        model_version: contained.model_version.clone(),
        opened_at: now.into(),
        reason: format!(
            "{} (requested by {}: {})",
            p.summary(),
            p.requested.identity,
            p.requested.reason
        ),
        evidence: serde_json::json!({
            "metric": "release_approval",
            "incident": p.incident,
            "requested_by": p.requested.identity,
            "approved_by": p.approvals.iter().map(|a| &a.identity).collect::<Vec<_>>(),
            "needed": p.needed,
            "expires_at": p.expires_at,
        }),
        policy: contained.policy.clone(),
        dry_run: contained.dry_run,
        severity: Severity::Warning,
    }
}

impl Ladder {
    fn policy_or_default(&self, deployment: &str) -> PolicyConfig {
        self.policy(deployment)
            .cloned()
            .unwrap_or_else(|| PolicyConfig::named("none"))
    }

    /// What the promotion gate of `deployment` needs.
    pub fn promotion_mode(&self, deployment: &str) -> PromotionMode {
        promotion_mode(&self.policies, deployment)
    }

    fn contained_incident(&self, deployment: &str) -> Result<Incident, LadderError> {
        let latch = self
            .latches
            .get(deployment)
            .filter(|l| l.phase == Phase::Contained)
            .ok_or_else(|| LadderError::NotContained(deployment.to_string()))?;
        latch
            .incident
            .clone()
            .ok_or_else(|| LadderError::NoIncident(deployment.to_string()))
    }

    fn raise(&mut self, deployment: &str, id: String, now: &str) -> Vec<super::Action> {
        let alerts = self.policy_or_default(deployment).alerts;
        let Some(latch) = self.latches.get_mut(deployment) else {
            return Vec::new();
        };
        let (Some(contained), Some(p)) = (latch.incident.clone(), latch.pending_release.as_mut())
        else {
            return Vec::new();
        };
        let incident = alert(&contained, id.clone(), p, now);
        p.alerts.insert(id, incident.clone());
        Self::actions(latch, &incident, &alerts, Op::Trigger, Severity::Warning)
    }

    /// Ends the pending release of `deployment` (taken out of the latch): its alerts resolved.
    fn end_pending(&mut self, deployment: &str) -> (Option<PendingRelease>, Decision) {
        let alerts = self.policy_or_default(deployment).alerts;
        let mut decision = Decision::default();
        let Some(latch) = self.latches.get_mut(deployment) else {
            return (None, decision);
        };
        let pending = latch.pending_release.take();
        for raised in pending.iter().flat_map(|p| p.alerts.values()) {
            decision.actions.extend(Self::actions(
                latch,
                raised,
                &alerts,
                Op::Resolve,
                Severity::Warning,
            ));
        }
        (pending, decision)
    }

    /// Lapses every pending release whose window has passed at `now_ms`.
    pub fn expire_releases(&mut self, now_ms: i64) -> Outcome {
        let due: Vec<String> = self
            .latches
            .iter()
            .filter(|(_, l)| {
                l.pending_release
                    .as_ref()
                    .is_some_and(|p| lapsed(p, now_ms))
            })
            .map(|(d, _)| d.clone())
            .collect();
        let mut out = Outcome::default();
        for deployment in due {
            let (pending, decision) = self.end_pending(&deployment);
            if let Some(p) = pending {
                out.decision.actions.extend(decision.actions);
                out.notes
                    .push(note(&deployment, ApprovalStep::Expired, None, None, &p));
            }
        }
        out
    }

    /// A release request from `by`. With one approval needed and an approver asking (and
    /// `separate_requester` off) it takes effect at once, as releases always did; otherwise it
    /// is pending, counting as `by`'s approval when `by` is an approver and may approve it.
    pub fn request_release(
        &mut self,
        deployment: &str,
        by: &Requester,
        reason: &str,
        now_ms: i64,
    ) -> Result<Outcome, LadderError> {
        let mut out = self.expire_releases(now_ms);
        let now = format_rfc3339_ms(now_ms);
        let incident = self.contained_incident(deployment)?;
        let policy = self.policy_or_default(deployment);
        let counts = by.approver && !policy.separate_requester;
        let latch = self.latch_mut(deployment);
        if latch.pending_release.is_some() {
            out.absorb(match counts {
                true => self.approve(deployment, by, reason, &now)?,
                false => self.unchanged(deployment, by, reason),
            });
            return Ok(out);
        }
        if policy.release_approvals == 1 && counts {
            out.decision = self.release(deployment, &by.identity, reason, &now)?;
            out.notes.push(ApprovalNote {
                deployment: deployment.into(),
                kind: ApprovalKind::Release,
                step: ApprovalStep::Released,
                identity: Some(by.identity.clone()),
                stated_operator: by.stated.clone(),
                reason: Some(reason.into()),
                subject: incident.id,
                approved_by: vec![by.identity.clone()],
                needed: 1,
                expires_at: None,
            });
            return Ok(out);
        }
        let window = i64::try_from(policy.approval_window.as_millis()).unwrap_or(i64::MAX);
        let request = by.approval(reason, &now);
        let pending = PendingRelease {
            incident: incident.id.clone(),
            approvals: if counts {
                vec![request.clone()]
            } else {
                Vec::new()
            },
            requested: request,
            needed: policy.release_approvals,
            expires_at: format_rfc3339_ms(now_ms.saturating_add(window)),
            alerts: Default::default(),
        };
        out.notes.push(note(
            deployment,
            ApprovalStep::Requested,
            Some(by),
            Some(reason),
            &pending,
        ));
        latch.pending_release = Some(pending);
        let actions = self.raise(
            deployment,
            format!("{}:release-request:{now}", incident.id),
            &now,
        );
        out.decision.actions.extend(actions);
        Ok(out)
    }

    /// An approver's approval of the pending release of `deployment`.
    pub fn approve_release(
        &mut self,
        deployment: &str,
        by: &Requester,
        reason: &str,
        now_ms: i64,
    ) -> Result<Outcome, LadderError> {
        if !by.approver {
            return Err(LadderError::NotApprover(by.identity.clone()));
        }
        let mut out = self.expire_releases(now_ms);
        self.contained_incident(deployment)?;
        let separate = self.policy_or_default(deployment).separate_requester;
        let requester = match self
            .latches
            .get(deployment)
            .and_then(|l| l.pending_release.as_ref())
        {
            None => return Err(LadderError::NothingPending(deployment.into())),
            Some(p) => p.requested.identity.clone(),
        };
        if separate && requester == by.identity {
            return Err(LadderError::OwnRequest {
                deployment: deployment.into(),
                identity: requester,
            });
        }
        out.absorb(self.approve(deployment, by, reason, &format_rfc3339_ms(now_ms))?);
        Ok(out)
    }

    fn unchanged(&self, deployment: &str, by: &Requester, reason: &str) -> Outcome {
        let pending = self
            .latches
            .get(deployment)
            .and_then(|l| l.pending_release.as_ref());
        Outcome {
            notes: pending
                .map(|p| {
                    note(
                        deployment,
                        ApprovalStep::Unchanged,
                        Some(by),
                        Some(reason),
                        p,
                    )
                })
                .into_iter()
                .collect(),
            ..Outcome::default()
        }
    }

    /// Counts `by`'s approval of the pending release (once per identity); releases when enough.
    fn approve(
        &mut self,
        deployment: &str,
        by: &Requester,
        reason: &str,
        now: &str,
    ) -> Result<Outcome, LadderError> {
        let latch = self.latch_mut(deployment);
        let Some(p) = latch.pending_release.as_mut() else {
            return Err(LadderError::NothingPending(deployment.into()));
        };
        if p.approvals.iter().any(|a| a.identity == by.identity) {
            return Ok(self.unchanged(deployment, by, reason));
        }
        p.approvals.push(by.approval(reason, now));
        let mut out = Outcome::default();
        out.notes.push(note(
            deployment,
            ApprovalStep::Approved,
            Some(by),
            Some(reason),
            p,
        ));
        if p.approvals.len() < p.needed as usize {
            let id = format!("{}:release-approval:{}:{now}", p.incident, by.identity);
            let actions = self.raise(deployment, id, now);
            out.decision.actions.extend(actions);
            return Ok(out);
        }
        // Enough: the release takes effect, as asked for by the requester, with its reason.
        let (pending, resolves) = self.end_pending(deployment);
        let p = pending.expect("checked above");
        let approved_by: Vec<String> = p.approvals.iter().map(|a| a.identity.clone()).collect();
        let mut released = self.release_approved(
            deployment,
            &p.requested.identity,
            &p.requested.reason,
            &approved_by,
            now,
        )?;
        released.actions.extend(resolves.actions);
        out.decision = released;
        out.notes.push(note(
            deployment,
            ApprovalStep::Released,
            Some(by),
            Some(reason),
            &p,
        ));
        Ok(out)
    }

    /// An approver's approval to promote canary `model_version` of `deployment`, whose policy
    /// must have `promotion = "approval"`. The first approval of a version stands; a new
    /// version replaces it.
    pub fn approve_promotion(
        &mut self,
        deployment: &str,
        by: &Requester,
        reason: &str,
        model_version: &str,
        now_ms: i64,
    ) -> Result<ApprovalNote, LadderError> {
        if !by.approver {
            return Err(LadderError::NotApprover(by.identity.clone()));
        }
        if self.promotion_mode(deployment) != PromotionMode::Approval {
            return Err(LadderError::PromotionByEvidence(deployment.into()));
        }
        let latch: &mut Latch = self.latch_mut(deployment);
        let step = match &latch.promotion_approval {
            Some(a) if a.model_version == model_version => ApprovalStep::Unchanged,
            _ => {
                latch.promotion_approval = Some(PromotionApproval {
                    model_version: model_version.into(),
                    approval: by.approval(reason, &format_rfc3339_ms(now_ms)),
                });
                ApprovalStep::Approved
            }
        };
        let approved = latch
            .promotion_approval
            .as_ref()
            .map(|a| a.approval.identity.clone());
        Ok(ApprovalNote {
            deployment: deployment.into(),
            kind: ApprovalKind::Promotion,
            step,
            identity: Some(by.identity.clone()),
            stated_operator: by.stated.clone(),
            reason: Some(reason.into()),
            subject: model_version.into(),
            approved_by: approved.into_iter().collect(),
            needed: 1,
            expires_at: None,
        })
    }
}

/// What the promotion gate of `deployment` needs under `policies` (first match wins, as for
/// everything else a policy says).
pub fn promotion_mode(policies: &[PolicyConfig], deployment: &str) -> PromotionMode {
    policies
        .iter()
        .find(|p| super::matches(&p.deployments, deployment))
        .map_or(PromotionMode::Evidence, |p| p.promotion)
}

fn lapsed(p: &PendingRelease, now_ms: i64) -> bool {
    crate::event::parse_rfc3339_ms(&p.expires_at).is_none_or(|at| now_ms >= at)
}

#[cfg(test)]
mod tests;
