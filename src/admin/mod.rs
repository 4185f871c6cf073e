//! The admin HTTP server.
//!
//! Routes:
//! - `GET /metrics` — Prometheus text exposition of every `driftd_*` series;
//! - `GET /healthz` — liveness: 200 while the process serves requests, 503 once a background
//!   task (containment) has died, so a supervisor's liveness probe restarts driftd (its state
//!   comes back from the snapshots, its latches from `containment.json` and its journal);
//! - `GET /readyz` — 200 once the consumer has its partition assignment and the config is
//!   loaded, 503 before (and while a rebalance has revoked it), and 503 for good once a
//!   background task (containment, this server) has died;
//! - `GET /v1/cohorts` — JSON: every cohort with its window statistics, optionally filtered by
//!   `?deployment=NAME`;
//! - `GET /v1/verdicts` — JSON: per deployment, the verdict of every metric with its evidence,
//!   cohort-level signals and the history of earlier canary versions (`?deployment=NAME`), and
//!   under `stale` the verdicts containment holds as too old to act on; with several replicas,
//!   a deployment another replica owns is shown as its owner shared it, its age under
//!   `shared_views` (see `crate::contain::views`);
//! - `GET` or `POST /v1/gate/{deployment}`, `…/promotion`, `…/decision` — the gate, one
//!   decision spelled for each kind of caller (see [`gate`]); public, without operator input;
//!   for a deployment another replica owns, decided on the view its owner shared
//!   (`shared_view` in the body: its age; an expired one is never `pass`);
//! - `GET /v1/deployments` — every deployment's containment latch, pending release included
//!   (`viewer`);
//! - `POST /v1/deployments/{deployment}/contain` (`operator`) and `…/release` (`operator` or
//!   `approver`: a request, which takes effect once the policy's `release_approvals` approvers
//!   approved it; an approver's request is its approval unless `separate_requester`) — body
//!   `{"reason": "...", "operator": "..."}`, where `operator` is optional and only a comment;
//! - `POST /v1/deployments/{deployment}/release/approve` and `…/promotion/approve`
//!   (`approver`) — body `{"reason": "..."}`, for a promotion also `"model_version"` (default:
//!   the canary version driftd sees now);
//! - `GET /v1/approvals` — pending releases and promotion approvals (`viewer`);
//! - `GET /v1/whoami` — the identity and roles of the bearer token (any identity);
//! - `GET /v1/audit[?limit=N&after=SEQ|before=SEQ]` — one page of the audit log, oldest first
//!   (`viewer`; at most 1000 records, read at a cost bounded by the page);
//! - `GET /`, `/ui/`, `/ui/deployments/{deployment}` — the on-call page (see [`ui`]).
//!
//! The routes that change containment or show operator names and reasons need an identity
//! ([`auth`]: `Authorization: Bearer <token>` of one of `admin.operators`, or
//! `containment.admin_token`, which holds every role): 403 when none is configured, 401 for a
//! missing, unknown or wrong token, 403 for a known one without the role. Every record they
//! cause names the authenticated identity. The rest (metrics, health, cohorts, verdicts, gate)
//! are for scrapers and rollout controllers, which cannot send a token, and carry no operator
//! input.
//!
//! Owns request handling only. It reads cohort state through the published snapshot (a `watch`
//! channel), never by locking the hot path, and it must not mutate anything itself: release and
//! contain are requests to the containment task, which decides.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::PromotionMode;
use crate::contain::fence::SharedView;
use crate::contain::latch::Latch;
use crate::contain::ContainHandle;
use crate::detect::DeploymentView;
use crate::event::format_rfc3339_ms;
use crate::metrics::Metrics;
use crate::pipeline::Published;

pub mod auth;
pub mod gate;
mod operator;
pub mod ui;

use auth::Identities;
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
    /// The identities of the routes that need one (none configured: those answer 403).
    pub identities: Arc<Identities>,
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
        .route("/healthz", get(healthz))
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
        .route("/v1/deployments", get(operator::deployments))
        .route(
            "/v1/deployments/{deployment}/release",
            post(operator::release),
        )
        .route(
            "/v1/deployments/{deployment}/release/approve",
            post(operator::approve_release),
        )
        .route(
            "/v1/deployments/{deployment}/promotion/approve",
            post(operator::approve_promotion),
        )
        .route(
            "/v1/deployments/{deployment}/contain",
            post(operator::contain),
        )
        .route("/v1/approvals", get(operator::approvals))
        .route("/v1/whoami", get(operator::whoami))
        .route("/v1/audit", get(operator::audit))
        .merge(ui::routes())
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
    // At 10,000 cohorts a render takes tens of milliseconds: on the blocking pool it holds no
    // runtime worker the consumer, containment or other requests need.
    let metrics = s.metrics.clone();
    let Ok(text) = tokio::task::spawn_blocking(move || metrics.render()).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "rendering the metrics failed\n",
        )
            .into_response();
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn healthz(State(s): State<AdminState>) -> Response {
    match liveness(&s.metrics) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// Alive unless a background task died: nothing but a restart brings it back, so the liveness
/// probe should restart driftd rather than leave a process that consumes events and contains
/// nothing. Everything else that makes driftd unready (no partitions yet, a broker away, a full
/// disk) is not cured by a restart and must not fail liveness.
fn liveness(metrics: &Metrics) -> Result<(), String> {
    match metrics.task_failures_total() {
        0 => Ok(()),
        _ => Err("dead: a background task stopped (driftd_task_failures_total); restart driftd — its state comes back from the snapshots and the latch state in containment.state_dir\n".into()),
    }
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
    let remote = remote_views(&s);
    let wanted = |d: &String| q.deployment.as_ref().is_none_or(|name| d == name);
    // This replica's own pipeline for what it owns, the owners' shared views for the rest.
    let deployments: Vec<&DeploymentView> = published
        .deployments
        .iter()
        .filter(|d| !remote.contains_key(&d.deployment))
        .chain(remote.values().map(|v| &*v.view))
        .filter(|d| wanted(&d.deployment))
        .collect();
    let now = crate::clock::wall_ms();
    let shared: BTreeMap<&String, _> = remote
        .iter()
        .filter(|(d, _)| wanted(d))
        .map(|(d, v)| (d, shared_view(&s, v, now).1))
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
        "shared_views": shared,
    }))
    .into_response()
}

/// The views of deployments another replica owns (none with one replica).
fn remote_views(s: &AdminState) -> crate::contain::views::Remote {
    s.contain
        .as_ref()
        .map(|c| c.remote_views())
        .unwrap_or_default()
}

/// Whether another owner's view is expired at `now`, and its age as the body shows it.
fn shared_view(s: &AdminState, v: &SharedView, now: i64) -> (Option<i64>, serde_json::Value) {
    let bound = s
        .contain
        .as_ref()
        .map_or(std::time::Duration::ZERO, |c| c.view_bound());
    let (expired, age) = crate::contain::views::expired(v.made_at_ms, now, bound);
    let body = serde_json::json!({
        "made_at": format_rfc3339_ms(v.made_at_ms),
        "age_ms": age,
        "expired": expired,
        "expires_after_ms": bound.as_millis() as u64,
    });
    (expired.then_some(age), body)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn not_running() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "containment is not running",
    )
}

async fn gate(s: AdminState, deployment: String, route: Route) -> Response {
    let published = s.snapshots.borrow().clone();
    let remote = remote_views(&s);
    let owner = remote.get(&deployment);
    let view = owner.map(|v| &*v.view).or_else(|| {
        published
            .deployments
            .iter()
            .find(|d| d.deployment == deployment)
    });
    let latch = s
        .contain
        .as_ref()
        .and_then(|c| c.latches().get(&deployment).cloned());
    let promotion = s
        .contain
        .as_ref()
        .map_or(PromotionMode::Evidence, |c| c.promotion_mode(&deployment));
    let mut verdict = gate::decide(view, latch.as_deref(), promotion);
    let shared = owner.map(|v| shared_view(&s, v, crate::clock::wall_ms()));
    if let Some((Some(age_ms), _)) = shared {
        verdict = gate::expire(verdict, age_ms);
    }
    let shared = shared.map(|(_, body)| body);
    let closed = latch.as_deref().is_some_and(Latch::gate_closed);
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
    // Public: how far a pending release has come, not who approved it or why.
    let pending = latch
        .as_ref()
        .and_then(|l| l.pending_release.as_ref())
        .map(|p| {
            serde_json::json!({
                "summary": format!("release pending {}/{}, expires at {}", p.approvals.len(), p.needed, p.expires_at),
                "approvals": p.approvals.len(),
                "needed": p.needed,
                "expires_at": p.expires_at,
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
        "release_pending": pending,
        "promotion": {
            "mode": promotion,
            "approved_version": latch.as_ref().and_then(|l| l.promotion_approval.as_ref()).map(|a| &a.model_version),
        },
        "shared_view": shared,
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

#[cfg(test)]
mod tests {
    use super::{liveness, readiness, Metrics};

    #[test]
    fn liveness_fails_only_for_a_dead_task() {
        let m = Metrics::new(&crate::config::Config::default());
        assert!(liveness(&m).is_ok(), "not ready yet is still alive");
        m.snapshot_write_failing.set(1);
        assert!(liveness(&m).is_ok(), "a restart does not free a disk");
        m.task_failures.with_label_values(&["containment"]).inc();
        assert!(liveness(&m).unwrap_err().contains("restart driftd"));
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
