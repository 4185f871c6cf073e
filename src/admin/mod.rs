//! The admin HTTP server.
//!
//! Routes:
//! - `GET /metrics` — Prometheus text exposition of every `driftd_*` series;
//! - `GET /healthz` — 200 while the process serves requests (liveness);
//! - `GET /readyz` — 200 once the consumer has its partition assignment and the config is
//!   loaded, 503 before (and while a rebalance has revoked it);
//! - `GET /v1/cohorts` — JSON: every cohort with its window statistics, optionally filtered by
//!   `?deployment=NAME`;
//! - `GET /v1/verdicts` — JSON: per deployment, the verdict of every metric with its evidence,
//!   cohort-level signals and the history of earlier canary versions (`?deployment=NAME`).
//!
//! Owns request handling only. It reads cohort state through the published snapshot (a `watch`
//! channel), never by locking the hot path, and it must not mutate anything.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::pipeline::Published;

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}; choose another admin.addr (or --admin-addr)")]
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
    if s.metrics.ready.get() == 1 {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for a partition assignment\n",
        )
            .into_response()
    }
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
    Json(serde_json::json!({
        "watermark": published.cohorts.watermark,
        "deployments": deployments,
    }))
    .into_response()
}
