//! The operator routes: contain, release, approve, and the reads that show operator names and
//! reasons (latches, approvals, the audit log), each behind the role it needs.
//!
//! Owns checking the caller ([`super::auth`]) and the body, and handing a
//! [`Request`] — carrying the authenticated identity, never a name from the body — to the
//! containment task. A body's `operator` is kept only as `stated_operator`, a comment. It must
//! not decide anything about containment or approvals itself.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::Refusal;
use super::{error, not_running, AdminState};
use crate::config::{PromotionMode, Role};
use crate::contain::audit::page::Cursor;
use crate::contain::ladder::Requester;
use crate::contain::{Answer, Request};

type Body = Result<Json<OperatorRequest>, axum::extract::rejection::JsonRejection>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OperatorRequest {
    reason: String,
    operator: Option<String>,
    model_version: Option<String>,
}

/// The checked body: the reason, the stated operator when it differs from `identity`, and the
/// model version asked for.
fn read_body(
    body: Body,
    identity: &str,
) -> Result<(String, Option<String>, Option<String>), Refusal> {
    let Json(body) = body.map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("body must be {{\"reason\": ..., \"operator\": optional comment}}: {e}"),
        ))
    })?;
    let reason = body.reason.trim().to_string();
    let stated = body
        .operator
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty() && o != identity);
    let version = body.model_version.map(|v| v.trim().to_string());
    if reason.is_empty()
        || reason.len() > 1024
        || stated.as_ref().is_some_and(|o| o.len() > 128)
        || version
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.len() > 64)
    {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "reason (1-1024 chars) is required; operator (a comment) at most 128 chars, model_version 1-64",
        )));
    }
    Ok((reason, stated, version))
}

async fn operator_request(
    s: AdminState,
    headers: HeaderMap,
    body: Body,
    roles: &[Role],
    make: impl FnOnce(Requester, String, Option<String>) -> Result<Request, Refusal>,
) -> Response {
    let identity = match s.identities.require(&headers, roles) {
        Ok(i) => i.clone(),
        Err(r) => return *r,
    };
    let Some(c) = &s.contain else {
        return not_running();
    };
    let (reason, stated, version) = match read_body(body, &identity.name) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let by = Requester {
        approver: identity.has(Role::Approver),
        identity: identity.name,
        stated,
    };
    let request = match make(by, reason, version) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    match c.submit(request).await {
        Ok(Answer::Applied { latch }) => Json(latch).into_response(),
        // Another replica owns the deployment (`persist.latch_topic`): it applies and audits
        // the request; the gate of every replica shows the outcome once it is written.
        Ok(forwarded @ Answer::Forwarded { .. }) => {
            (StatusCode::ACCEPTED, Json(forwarded)).into_response()
        }
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

pub(super) async fn release(
    State(s): State<AdminState>,
    Path(deployment): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let roles = [Role::Operator, Role::Approver];
    operator_request(s, headers, body, &roles, |by, reason, _| {
        Ok(Request::Release {
            deployment,
            by,
            reason,
        })
    })
    .await
}

pub(super) async fn contain(
    State(s): State<AdminState>,
    Path(deployment): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    operator_request(s, headers, body, &[Role::Operator], |by, reason, _| {
        Ok(Request::Contain {
            deployment,
            by,
            reason,
        })
    })
    .await
}

pub(super) async fn approve_release(
    State(s): State<AdminState>,
    Path(deployment): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    operator_request(s, headers, body, &[Role::Approver], |by, reason, _| {
        Ok(Request::ApproveRelease {
            deployment,
            by,
            reason,
        })
    })
    .await
}

pub(super) async fn approve_promotion(
    State(s): State<AdminState>,
    Path(deployment): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let canary = s
        .snapshots
        .borrow()
        .deployments
        .iter()
        .find(|d| d.deployment == deployment)
        .and_then(|d| d.canary_version.clone());
    let s2 = s.clone();
    operator_request(s2, headers, body, &[Role::Approver], |by, reason, asked| {
        // The approval is of the version the approver looked at: refused when the canary has
        // moved on since.
        let model_version = match (asked, canary) {
            (Some(a), Some(c)) if a != c => {
                return Err(Box::new(error(
                    StatusCode::CONFLICT,
                    format!("the canary version of `{deployment}` is now {c}, not {a}: look at its evidence, then approve it"),
                )))
            }
            (_, Some(c)) => c,
            (_, None) => {
                return Err(Box::new(error(
                    StatusCode::CONFLICT,
                    format!("driftd has seen no canary version of `{deployment}` to approve"),
                )))
            }
        };
        Ok(Request::ApprovePromotion {
            deployment,
            by,
            reason,
            model_version,
        })
    })
    .await
}

pub(super) async fn whoami(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    match s.identities.authenticate(&headers) {
        Ok(identity) => Json(identity).into_response(),
        Err(r) => *r,
    }
}

pub(super) async fn deployments(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = s.identities.require(&headers, &[Role::Viewer]) {
        return *r;
    }
    match &s.contain {
        Some(c) => Json(&*c.latches()).into_response(),
        None => not_running(),
    }
}

/// Per deployment with anything to approve: the pending release (with who approved and when it
/// lapses) and, under `promotion = "approval"`, the approval against the canary version now.
pub(super) async fn approvals(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = s.identities.require(&headers, &[Role::Viewer]) {
        return *r;
    }
    let Some(c) = &s.contain else {
        return not_running();
    };
    let published = s.snapshots.borrow().clone();
    let latches = c.latches();
    let mut names: std::collections::BTreeSet<&String> = latches.keys().collect();
    names.extend(published.deployments.iter().map(|d| &d.deployment));
    let mut out = serde_json::Map::new();
    for name in names {
        let latch = latches.get(name);
        let pending = latch.and_then(|l| l.pending_release.as_ref());
        let mode = c.promotion_mode(name);
        if pending.is_none() && mode == PromotionMode::Evidence {
            continue;
        }
        let canary = published
            .deployments
            .iter()
            .find(|d| &d.deployment == name)
            .and_then(|d| d.canary_version.clone());
        let approval = latch.and_then(|l| l.promotion_approval.as_ref());
        out.insert(
            name.clone(),
            serde_json::json!({
                "release": pending.map(|p| serde_json::json!({
                    "summary": p.summary(),
                    "incident": p.incident,
                    "requested": p.requested,
                    "approvals": p.approvals,
                    "needed": p.needed,
                    "expires_at": p.expires_at,
                })),
                "promotion": {
                    "mode": mode,
                    "canary_version": canary,
                    "approval": approval,
                    "approved": approval.is_some_and(|a| Some(&a.model_version) == canary.as_ref()),
                },
            }),
        );
    }
    Json(serde_json::json!({ "deployments": out })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    limit: Option<usize>,
    after: Option<u64>,
    before: Option<u64>,
}

/// Records per `/v1/audit` page unless `limit` says otherwise, and the most it may say.
const AUDIT_PAGE: usize = 100;
const AUDIT_PAGE_MAX: usize = 1000;

pub(super) async fn audit(
    State(s): State<AdminState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(r) = s.identities.require(&headers, &[Role::Viewer]) {
        return *r;
    }
    let Some(c) = &s.contain else {
        return not_running();
    };
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("query parameters are limit, after and before (integers): {e}"),
            )
        }
    };
    let limit = q.limit.unwrap_or(AUDIT_PAGE);
    if !(1..=AUDIT_PAGE_MAX).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {AUDIT_PAGE_MAX}"),
        );
    }
    let cursor = match (q.after, q.before) {
        (Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "give after (page forwards) or before (page backwards), not both",
            )
        }
        (Some(a), None) => Cursor::After(a),
        (None, Some(b)) => Cursor::Before(b),
        (None, None) => Cursor::Latest,
    };
    match c.audit_page(cursor, limit) {
        Ok(page) => Json(page).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the audit log");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the audit log; see driftd's log",
            )
        }
    }
}
