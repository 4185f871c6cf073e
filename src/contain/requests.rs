//! Operator requests as the containment task handles them: contain by hand, ask for a release,
//! approve a release or a promotion — and pending releases lapsing.
//!
//! Owns turning a request into the ladder's decision, the audit records that say who
//! (the authenticated identity; a name from the request body only as `stated_operator`) did
//! what, and persisting the approval state with the latch before answering, so an approval that
//! was acknowledged survives a restart. It must not authenticate: the admin server did, and a
//! [`Requester`] is what it established.

use super::audit::{AuditRecord, RequestKind};
use super::ladder::approval::Outcome;
use super::ladder::{LadderError, Requester};
use super::latch::Latch;
use super::Controller;
use crate::event::format_rfc3339_ms;

/// An operator request, from an authenticated identity.
#[derive(Debug, Clone)]
pub enum Request {
    /// Contain by hand.
    Contain {
        /// Deployment.
        deployment: String,
        /// Who.
        by: Requester,
        /// Why.
        reason: String,
    },
    /// Ask for a release of a containment (it takes effect once approved, see
    /// [`super::ladder::approval`]).
    Release {
        /// Deployment.
        deployment: String,
        /// Who.
        by: Requester,
        /// Why.
        reason: String,
    },
    /// Approve the pending release.
    ApproveRelease {
        /// Deployment.
        deployment: String,
        /// Who (an approver).
        by: Requester,
        /// Why.
        reason: String,
    },
    /// Approve promoting one canary version.
    ApprovePromotion {
        /// Deployment.
        deployment: String,
        /// Who (an approver).
        by: Requester,
        /// Why.
        reason: String,
        /// The canary version approved.
        model_version: String,
    },
}

impl Request {
    fn parts(&self) -> (&str, &Requester, RequestKind) {
        match self {
            Request::Contain { deployment, by, .. } => (deployment, by, RequestKind::Contain),
            Request::Release { deployment, by, .. } => (deployment, by, RequestKind::Release),
            Request::ApproveRelease { deployment, by, .. } => {
                (deployment, by, RequestKind::ApproveRelease)
            }
            Request::ApprovePromotion { deployment, by, .. } => {
                (deployment, by, RequestKind::ApprovePromotion)
            }
        }
    }
}

impl Controller {
    pub(super) fn on_request(&mut self, request: Request) -> Result<Latch, String> {
        let now_ms = crate::clock::wall_ms();
        let now = format_rfc3339_ms(now_ms);
        let result: Result<Outcome, LadderError> = match &request {
            Request::Contain {
                deployment,
                by,
                reason,
            } => self
                .ladder
                .contain(deployment, by, reason, &now)
                .map(|decision| Outcome {
                    decision,
                    notes: Vec::new(),
                }),
            Request::Release {
                deployment,
                by,
                reason,
            } => self.ladder.request_release(deployment, by, reason, now_ms),
            Request::ApproveRelease {
                deployment,
                by,
                reason,
            } => self.ladder.approve_release(deployment, by, reason, now_ms),
            Request::ApprovePromotion {
                deployment,
                by,
                reason,
                model_version,
            } => self
                .ladder
                .approve_promotion(deployment, by, reason, model_version, now_ms)
                .map(|note| Outcome {
                    notes: vec![note],
                    ..Outcome::default()
                }),
        };
        let (deployment, by, kind) = request.parts();
        match result {
            Ok(mut out) => {
                for t in &mut out.decision.transitions {
                    if t.operator.is_some() {
                        t.stated_operator = by.stated.clone();
                    }
                }
                self.received
                    .insert(deployment.to_string(), tokio::time::Instant::now());
                self.settle(out);
                Ok(self.ladder.latch(deployment).cloned().unwrap_or_default())
            }
            Err(e) => {
                self.record(AuditRecord::RequestRefused {
                    deployment: deployment.to_string(),
                    request: kind,
                    operator: by.identity.clone(),
                    stated_operator: by.stated.clone(),
                    error: e.to_string(),
                });
                Err(e.to_string())
            }
        }
    }

    /// Lapses the pending releases whose window has passed.
    pub(super) fn expire_releases(&mut self, now_ms: i64) {
        let out = self.ladder.expire_releases(now_ms);
        self.settle(out);
    }

    /// Audits the approval steps, then applies the decision; persists and publishes even when
    /// only approval state changed.
    fn settle(&mut self, out: Outcome) {
        let changed = !out.notes.is_empty();
        for note in out.notes {
            tracing::warn!(deployment = %note.deployment, kind = ?note.kind, step = ?note.step, identity = note.identity.as_deref(), approvals = note.approved_by.len(), needed = note.needed, "approval");
            self.record(AuditRecord::Approval(note));
        }
        self.apply(out.decision);
        if changed {
            self.persist();
            self.publish();
        }
    }
}
