//! The admin HTTP server.
//!
//! Routes:
//! - `GET /metrics` — Prometheus text exposition of every `driftd_*` series;
//! - `GET /healthz` — 200 while the process serves requests (liveness);
//! - `GET /readyz` — 200 once the consumer has its partition assignment and the config is
//!   loaded, 503 before (and while a rebalance has revoked it), and 503 for good once a
//!   background task (containment, this server) has died;
//! - `GET /v1/cohorts` — JSON: every cohort with its window statistics, optionally filtered by
//!   `?deployment=NAME`;
//! - `GET /v1/verdicts` — JSON: per deployment, the verdict of every metric with its evidence,
//!   cohort-level signals and the history of earlier canary versions (`?deployment=NAME`), and
//!   under `stale` the verdicts containment holds as too old to act on;
//! - `GET` or `POST /v1/gate/{deployment}`, `…/promotion`, `…/decision` — the gate, one
//!   decision spelled for each kind of caller (see [`gate`]); public, without operator input;
//! - `GET /v1/deployments` — every deployment's containment latch (bearer token);
//! - `POST /v1/deployments/{deployment}/release` and `/contain` — body
//!   `{"operator": "...", "reason": "..."}`, `Authorization: Bearer <containment.admin_token>`;
//!   403 when no token is configured, 401 for a missing or wrong one (compared in constant time);
//! - `GET /v1/audit[?limit=N&after=SEQ|before=SEQ]` — one page of the audit log, oldest first
//!   (bearer token; at most 1000 records, read at a cost bounded by the page).
//!
//! The routes that change containment or show operator names and reasons need the token;
//! the rest (metrics, health, cohorts, verdicts, gate) are for scrapers and rollout controllers
//! and carry no operator input.
//!
//! Owns request handling only. It reads cohort state through the published snapshot (a `watch`
//! channel), never by locking the hot path, and it must not mutate anything itself: release and
//! contain are requests to the containment task, which decides.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::contain::audit::page::Cursor;
use crate::contain::latch::Latch;
use crate::contain::{ContainHandle, Request};
use crate::metrics::Metrics;
use crate::pipeline::Published;

pub mod gate;

use gate::Route;

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {addr}; choose another admin.addr (or --admin-addr)")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Process metrics (readiness included).
    pub metrics: Arc<Metrics>,
    /// The latest published cohort and detection snapshot.
    pub snapshots: watch::Receiver<Arc<Published>>,
    /// Containment, when running (not in replay).
    pub contain: Option<ContainHandle>,
    /// Bearer token of the mutating routes; `None` disables them.
    pub token: Option<Arc<String>>,
}

/// Binds the admin listener (port 0 picks a free port; see `local_addr`).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

/// The router, for serving and for in-process tests.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/cohorts", get(cohorts))
        .route("/v1/verdicts", get(verdicts))
        // Flagger calls its webhooks with POST, Argo Rollouts' web metric with GET.
        .route(
            "/v1/gate/{deployment}",
            get(containment_gate).post(containment_gate),
        )
        .route(
            "/v1/gate/{deployment}/promotion",
            get(promotion_gate).post(promotion_gate),
        )
        .route(
            "/v1/gate/{deployment}/decision",
            get(decision).post(decision),
        )
        .route("/v1/deployments", get(deployments))
        .route("/v1/deployments/{deployment}/release", post(release))
        .route("/v1/deployments/{deployment}/contain", post(contain))
        .route("/v1/audit", get(audit))
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(s): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(s): State<AdminState>) -> Response {
    match readiness(&s.metrics) {
        // A stalled partition does not make driftd unready: the gate and the API must keep
        // answering. It is said here, for whoever checks.
        Ok(()) => match s.metrics.partitions_stalled.get() {
            0 => (StatusCode::OK, "ready\n").into_response(),
            n => (
                StatusCode::OK,
                format!("ready; {n} partition(s) stalled: lag grows and nothing was received for kafka.stall_after (driftd_partition_stalled)\n"),
            )
                .into_response(),
        },
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// Ready: no background task has died, nothing the operator must fix blocks Kafka
/// (`driftd_kafka_blocked`), and the consumer holds its partition assignment. A dead task wins
/// over a later assignment.
fn readiness(metrics: &Metrics) -> Result<(), String> {
    if metrics.task_failures_total() > 0 {
        return Err("not ready: a background task stopped (driftd_task_failures_total); see the log and restart driftd\n".into());
    }
    if metrics.snapshot_write_failing.get() == 1 {
        return Err("not ready: state snapshots cannot be written (driftd_snapshot_failures_total{reason=\"write\"}); free space or fix permissions in persist.dir — consuming goes on\n".into());
    }
    let blocks = metrics.kafka_blocks();
    if !blocks.is_empty() {
        return Err(blocks.iter().map(|b| format!("not ready: {b}\n")).collect());
    }
    if metrics.ready.get() != 1 {
        return Err("not ready: waiting for a partition assignment\n".into());
    }
    Ok(())
}

#[derive(Deserialize)]
struct CohortQuery {
    deployment: Option<String>,
}

async fn cohorts(State(s): State<AdminState>, Query(q): Query<CohortQuery>) -> Response {
    let published = s.snapshots.borrow().clone();
    match q.deployment {
        None => Json(&published.cohorts).into_response(),
        Some(d) => {
            let mut filtered = published.cohorts.clone();
            filtered.cohorts.retain(|c| c.deployment == d);
            Json(filtered).into_response()
        }
    }
}

async fn verdicts(State(s): State<AdminState>, Query(q): Query<CohortQuery>) -> Response {
    let published = s.snapshots.borrow().clone();
    let deployments: Vec<_> = published
        .deployments
        .iter()
        .filter(|d| {
            q.deployment
                .as_ref()
                .is_none_or(|name| &d.deployment == name)
        })
        .collect();
    // Verdicts containment holds as stale (too old to act on), by deployment.
    let latches = s.contain.as_ref().map(|c| c.latches()).unwrap_or_default();
    let stale: BTreeMap<&String, Vec<_>> = latches
        .iter()
        .filter(|(d, l)| !l.stale.is_empty() && deployments.iter().any(|v| &&v.deployment == d))
        .map(|(d, l)| (d, l.stale.values().collect()))
        .collect();
    Json(serde_json::json!({
        "watermark": published.cohorts.watermark,
        "deployments": deployments,
        "stale": stale,
    }))
    .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Compares without an early exit, so the time taken does not reveal how much of a guess was
/// right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

/// `Some(response)` when the request must be refused: the mutating routes, and the reads that
/// show operator names and reasons (`/v1/deployments`, `/v1/audit`).
fn refuse(s: &AdminState, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &s.token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "this route needs containment.admin_token to be set (it changes containment, or shows operator names and reasons)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => None,
        _ => Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(serde_json::json!({ "error": "missing or wrong bearer token" })),
            )
                .into_response(),
        ),
    }
}

fn not_running() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "containment is not running",
    )
}

async fn gate(s: AdminState, deployment: String, route: Route) -> Response {
    let published = s.snapshots.borrow().clone();
    let view = published
        .deployments
        .iter()
        .find(|d| d.deployment == deployment);
    let latch = s
        .contain
        .as_ref()
        .and_then(|c| c.latches().get(&deployment).cloned());
    let verdict = gate::decide(view, latch.as_ref());
    let closed = latch.as_ref().is_some_and(Latch::gate_closed);
    let release = s.contain.as_ref().map(|c| c.release_command(&deployment));
    let incident = latch.as_ref().and_then(|l| l.incident.as_ref()).map(|i| {
        serde_json::json!({
            "id": i.id,
            "model_version": i.model_version,
            "opened_at": i.opened_at,
            "reason": gate::public_reason(i),
            "policy": i.policy,
            "dry_run": i.dry_run,
            "severity": i.severity,
        })
    });
    let body = serde_json::json!({
        "deployment": deployment,
        "decision": verdict.decision,
        "reasons": verdict.reasons,
        "open": !closed,
        "phase": latch.as_ref().map(|l| l.phase).unwrap_or_default(),
        "canary_version": view.and_then(|v| v.canary_version.as_ref()),
        "incident": incident,
        "release_command": release.filter(|_| closed),
        "metrics": view.map(|d| &d.metrics),
        "stale": latch.as_ref().map(|l| l.stale.values().collect::<Vec<_>>()).unwrap_or_default(),
    });
    (route.status(verdict.decision), Json(body)).into_response()
}

async fn containment_gate(State(s): State<AdminState>, Path(d): Path<String>) -> Response {
    gate(s, d, Route::Containment).await
}

async fn promotion_gate(State(s): State<AdminState>, Path(d): Path<String>) -> Response {
    gate(s, d, Route::Promotion).await
}

async fn decision(State(s): State<AdminState>, Path(d): Path<String>) -> Response {
    gate(s, d, Route::Decision).await
}

async fn deployments(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&s, &headers) {
        return r;
    }
    match &s.contain {
        Some(c) => Json(&*c.latches()).into_response(),
        None => not_running(),
    }
}

#[derive(Deserialize)]
struct OperatorRequest {
    operator: String,
    reason: String,
}

async fn operator_request(
    s: AdminState,
    headers: HeaderMap,
    body: Result<Json<OperatorRequest>, axum::extract::rejection::JsonRejection>,
    make: impl FnOnce(String, String) -> Request,
) -> Response {
    if let Some(r) = refuse(&s, &headers) {
        return r;
    }
    let Some(c) = &s.contain else {
        return not_running();
    };
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"operator\": ..., \"reason\": ...}}: {e}"),
            )
        }
    };
    let (operator, reason) = (
        body.operator.trim().to_string(),
        body.reason.trim().to_string(),
    );
    if operator.is_empty() || reason.is_empty() || operator.len() > 128 || reason.len() > 1024 {
        return error(
            StatusCode::BAD_REQUEST,
            "operator (1-128 chars) and reason (1-1024 chars) are required",
        );
    }
    match c.request(make(operator, reason)).await {
        Ok(latch) => Json(latch).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn release(
    State(s): State<AdminState>,
    Path(deployment): Path<String>,
    headers: HeaderMap,
    body: Result<Json<OperatorRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    operator_request(s, headers, body, |operator, reason| Request::Release {
        deployment,
        operator,
        reason,
    })
    .await
}

async fn contain(
    State(s): State<AdminState>,
    Path(deployment): Path<String>,
    headers: HeaderMap,
    body: Result<Json<OperatorRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    operator_request(s, headers, body, |operator, reason| Request::Contain {
        deployment,
        operator,
        reason,
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
    after: Option<u64>,
    before: Option<u64>,
}

/// Records per `/v1/audit` page unless `limit` says otherwise, and the most it may say.
const AUDIT_PAGE: usize = 100;
const AUDIT_PAGE_MAX: usize = 1000;

async fn audit(
    State(s): State<AdminState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(r) = refuse(&s, &headers) {
        return r;
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

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, readiness, Metrics};

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn a_dead_task_keeps_readiness_down_even_after_an_assignment() {
        let m = Metrics::new(&crate::config::Config::default());
        assert!(readiness(&m).unwrap_err().contains("partition assignment"));
        m.ready.set(1);
        assert!(readiness(&m).is_ok());
        m.task_failures.with_label_values(&["containment"]).inc();
        assert!(readiness(&m)
            .unwrap_err()
            .contains("background task stopped"));
        m.ready.set(1);
        assert!(
            readiness(&m).is_err(),
            "a later assignment does not hide it"
        );
    }
}
