//! The on-call page: HTML served by driftd itself, for the engineer an alert links to.
//!
//! Routes: `GET /` and `/ui/` (the overview: every deployment, contained first),
//! `GET /ui/deployments/{deployment}` (one deployment: its evidence over time, the containment
//! timeline, the release command, release and contain forms), and the two assets under
//! `/ui/assets/`, compiled into the binary (no CDN, nothing fetched from elsewhere; the charts
//! are SVG drawn here).
//!
//! Owns rendering only. It reads what the admin API reads — the published detection snapshot
//! with its trajectories, the views other replicas' owners share of their deployments (shown
//! without charts), the containment latches, the audit log — and changes nothing: the
//! forms send their request from the browser to the existing
//! `POST /v1/deployments/{d}/release|contain` routes, which check the caller as for any client.
//!
//! Security model:
//! - The pages are public, like `/v1/verdicts` and the gate: they show evidence, phases,
//!   actions and their outcomes, never operator names or reasons (those need a `viewer` token
//!   on `/v1/audit`).
//! - The bearer token is typed by the operator into the form and kept in the page's memory
//!   only: never stored (no cookie, no local storage), sent as `Authorization: Bearer` by
//!   `ui.js`. With no ambient credential a forged cross-site request carries no authority, so
//!   CSRF does not apply, and a cross-origin page cannot send the header without a CORS grant
//!   driftd never gives.
//! - Every string from state (deployment names, versions, reasons, errors) is escaped
//!   ([`esc`]); the responses carry a strict `Content-Security-Policy` (`default-src 'self'`,
//!   no inline script or style) and `X-Content-Type-Options: nosniff`, and the page may not be
//!   framed.

mod chart;
mod deployment;
mod overview;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AdminState;
use crate::contain::latch::{Latch, Phase};
use crate::detect::{DeploymentView, VerdictState};
use crate::pipeline::Published;

/// The policy every page and asset is sent with: nothing from another origin, no inline
/// script or style, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");
/// Audit records read (newest) for a deployment's timeline.
const TIMELINE_RECORDS: usize = 1000;

/// The routes of the page, merged into the admin router.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/", get(overview_page))
        .route("/ui/", get(overview_page))
        .route("/ui/deployments/{deployment}", get(deployment_page))
        .route(
            "/ui/assets/ui.css",
            get(|| async { asset(CSS, "text/css") }),
        )
        .route(
            "/ui/assets/ui.js",
            get(|| async { asset(JS, "text/javascript") }),
        )
}

/// What a page is drawn from: the same state the admin API reads.
pub struct View {
    /// The published detection snapshot, trajectories included.
    pub published: Arc<Published>,
    /// Containment's latches (empty when containment is not running).
    pub latches: Arc<BTreeMap<String, Arc<Latch>>>,
    /// Wall-clock time of the request (ms), for "time since".
    pub now_ms: i64,
    /// The views of deployments another replica owns (see `crate::contain::views`): shown
    /// instead of this replica's own, without charts (trajectories stay with the owner).
    pub remote: crate::contain::views::Remote,
}

impl View {
    fn read(s: &AdminState) -> View {
        View {
            published: s.snapshots.borrow().clone(),
            latches: s.contain.as_ref().map(|c| c.latches()).unwrap_or_default(),
            now_ms: crate::clock::wall_ms(),
            remote: s
                .contain
                .as_ref()
                .map(|c| c.remote_views())
                .unwrap_or_default(),
        }
    }

    /// The detection view of `deployment`: its owner's when another replica owns it.
    pub fn deployment(&self, deployment: &str) -> Option<&DeploymentView> {
        self.remote.get(deployment).map(|v| &*v.view).or_else(|| {
            self.published
                .deployments
                .iter()
                .find(|d| d.deployment == deployment)
        })
    }

    /// Every deployment with a detection view, here or shared by its owner.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.published
            .deployments
            .iter()
            .map(|d| d.deployment.as_str())
            .chain(self.remote.keys().map(String::as_str))
    }

    /// The phase of `deployment` (healthy when containment knows nothing of it).
    pub fn phase(&self, deployment: &str) -> Phase {
        self.latches
            .get(deployment)
            .map(|l| l.phase)
            .unwrap_or_default()
    }
}

async fn overview_page(State(s): State<AdminState>) -> Response {
    html(StatusCode::OK, overview::render(&View::read(&s)))
}

async fn deployment_page(State(s): State<AdminState>, Path(d): Path<String>) -> Response {
    let view = View::read(&s);
    let known = view.latches.contains_key(&d) || view.deployment(&d).is_some();
    if !known {
        return html(StatusCode::NOT_FOUND, deployment::not_found(&d));
    }
    let extra = match s.contain.clone() {
        Some(c) => {
            let release_command = Some(c.release_command(&d));
            // The audit log is a file: read off the async workers.
            let audit = tokio::task::spawn_blocking(move || c.audit(TIMELINE_RECORDS))
                .await
                .unwrap_or_default();
            deployment::Containment {
                audit: deployment::records_of(&d, audit),
                release_command,
            }
        }
        None => deployment::Containment::default(),
    };
    html(StatusCode::OK, deployment::render(&view, &d, &extra))
}

fn headers(mut r: Response, content_type: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn html(status: StatusCode, body: String) -> Response {
    headers((status, body).into_response(), "text/html; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    headers(body.into_response(), content_type)
}

/// The experiment's signals raised now (sample-ratio mismatch, a silent arm), as the pages
/// name them.
fn experiment_signals(view: Option<&crate::detect::DeploymentView>) -> Vec<String> {
    let mut signals = Vec::new();
    if let Some(d) = view {
        if d.sample_ratio_mismatch {
            signals.push("sample ratio mismatch".to_string());
        }
        for arm in &d.telemetry_absent {
            signals.push(format!("{} telemetry absent", arm.as_str()));
        }
    }
    signals
}

/// `s` escaped for HTML text and double- or single-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as one URL path segment: everything but the unreserved characters percent-encoded.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The page path of `deployment`.
pub fn deployment_path(deployment: &str) -> String {
    format!("/ui/deployments/{}", path_segment(deployment))
}

/// The page around `body`: title, stylesheet, script, header.
fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · driftd</title>
<link rel="stylesheet" href="/ui/assets/ui.css">
<script src="/ui/assets/ui.js" defer></script>
</head>
<body>
<header class="top"><a href="/ui/">driftd</a> <span class="sub">on-call</span></header>
<main>
{body}
</main>
</body>
</html>
"#,
        title = esc(title),
    )
}

/// A phase as text with a shape (not colour alone).
fn phase_badge(p: Phase) -> String {
    let shape = match p {
        Phase::Contained => "■",
        Phase::Suspect => "▲",
        Phase::Released => "◆",
        Phase::Healthy => "●",
    };
    badge("phase", shape, p.as_str())
}

/// A verdict state as text with a shape.
fn state_badge(s: VerdictState) -> String {
    let shape = match s {
        VerdictState::Fail => "✖",
        VerdictState::Warn => "▲",
        VerdictState::Pass => "✔",
        VerdictState::Insufficient => "○",
    };
    badge("state", shape, s.as_str())
}

/// A badge: the name as text, a shape beside it for the eye, a class for the colour.
fn badge(kind: &str, shape: &str, name: &str) -> String {
    format!(
        r#"<span class="badge {kind}-{name}"><span aria-hidden="true">{shape}</span> {name}</span>"#
    )
}

/// "3 min ago" for a span of `ms`.
fn ago(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h {} min ago", s / 3600, s % 3600 / 60),
        _ => format!("{} d ago", s / 86400),
    }
}

/// A number to four significant decimals, `n/a` when absent or not finite.
fn num(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x:.4}"),
        _ => "n/a".into(),
    }
}

#[cfg(test)]
mod tests;
