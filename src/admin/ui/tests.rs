use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::contain::latch::{Incident, Latch, Phase};
use crate::detect::trajectory::Trajectories;
use crate::detect::{Change, DeploymentView, Source, Verdict, VerdictState};
use crate::pipeline::Published;

const T0: i64 = 1_780_000_000_000;
const HOSTILE: &str = "<script>alert('x')</script>\"&bot";

fn verdict(deployment: &str, state: VerdictState, estimate: f64) -> Verdict {
    Verdict {
        deployment: deployment.into(),
        model_version: "v2<b>".into(),
        metric: "refusal".into(),
        source: Source::CanaryVsControl,
        state,
        at: "2026-11-30T00:00:00.000Z".into(),
        events_seen: 100,
        n_canary: 50,
        n_control: 50,
        canary_value: Some(0.1 + estimate),
        control_value: Some(0.1),
        estimate: Some(estimate),
        ci_low: Some(estimate - 0.05),
        ci_high: Some(estimate + 0.05),
        p_value: Some(0.01),
        statistic: 3.0,
        threshold: 5.0,
        min_effect: 0.02,
        alpha: Some(0.005),
        arm: None,
        segment: None,
        reference: None,
    }
}

/// A hostile deployment contained after a crossing at t = 30 s, and a healthy one.
fn view() -> View {
    let mut t = Trajectories::default();
    let t0 = T0;
    for s in 0..60i64 {
        let state = if s >= 30 {
            VerdictState::Fail
        } else {
            VerdictState::Pass
        };
        let v = verdict(HOSTILE, state, s as f64 / 1000.0);
        assert!(t.advance(HOSTILE, t0 + s * 1000));
        if s == 30 {
            t.record_changes(&[Change::Verdict(v.clone())]);
        }
        t.sample(
            &[
                DeploymentView::of(v),
                DeploymentView::of(verdict("quiet-bot", VerdictState::Pass, 0.0)),
            ],
            |_| true,
        );
    }
    let published = Published {
        cohorts: Default::default(),
        deployments: vec![
            DeploymentView::of(verdict("quiet-bot", VerdictState::Pass, 0.0)),
            DeploymentView::of(verdict(HOSTILE, VerdictState::Fail, 0.059)),
        ],
        trajectories: t,
    };
    let mut latches = BTreeMap::new();
    latches.insert(
        HOSTILE.to_string(),
        Arc::new(Latch {
            phase: Phase::Contained,
            incident: Some(Incident {
                id: format!("{HOSTILE}:v2"),
                deployment: HOSTILE.into(),
                model_version: "v2".into(),
                opened_at: crate::event::format_rfc3339_ms(T0 + 31_000),
                reason: "refusal <i>fail</i>".into(),
                policy: "p".into(),
                dry_run: false,
                severity: crate::contain::latch::Severity::Critical,
                evidence: serde_json::json!({}),
            }),
            ..Latch::default()
        }),
    );
    View {
        published: Arc::new(published),
        latches: Arc::new(latches),
        now_ms: t0 + 120_000,
        remote: Default::default(),
    }
}

fn no_raw_markup(html: &str) {
    assert!(!html.contains("<script>alert"), "unescaped name: {html}");
    assert!(!html.contains("<b>"), "unescaped version");
    assert!(!html.contains("<i>"), "unescaped reason");
    assert!(!html.contains("<script>"), "no inline script");
    assert!(!html.contains("style="), "no inline style (CSP)");
}

#[test]
fn the_overview_lists_contained_first_with_states_as_text_and_escapes_names() {
    let html = overview::render(&view());
    no_raw_markup(&html);
    let hostile = html
        .find("data-phase=\"contained\"")
        .expect("contained row");
    let quiet = html.find("data-phase=\"healthy\"").expect("healthy row");
    assert!(hostile < quiet, "contained first");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;bot"));
    assert!(html.contains("/ui/deployments/%3Cscript%3Ealert%28%27x%27%29%3C%2Fscript%3E%22%26bot"));
    assert!(html.contains("■</span> contained"));
    assert!(html.contains("✖</span> fail"));
    assert!(html.contains("v2&lt;b&gt;"));
    assert!(html.contains("1 min ago"), "the crossing 89 s before now");
}

#[test]
fn the_deployment_page_draws_the_crossing_where_the_verdict_changed() {
    let v = view();
    let c = deployment::Containment {
        audit: deployment::records_of(
            HOSTILE,
            vec![
                serde_json::json!({"event": "transition", "seq": 1, "at": "2026-11-30T00:00:31Z",
                    "transition": {"deployment": HOSTILE, "from": "healthy", "to": "contained", "why": "refusal fail <x>", "operator": null}}),
                serde_json::json!({"event": "action", "seq": 2, "at": "2026-11-30T00:00:31Z", "incident": format!("{HOSTILE}:v2"),
                    "target": "flag", "provider": "flagd", "op": "contain", "result": "success", "attempt": 1, "error": null, "elapsed_ms": 12}),
                serde_json::json!({"event": "action", "seq": 2, "at": "2026-11-30T00:00:31Z", "incident": format!("{HOSTILE}:v2"),
                    "target": "am", "provider": "alertmanager", "op": "alert", "result": "retrying", "attempt": 1,
                    "error": "connect to am.internal.corp:9093 refused", "elapsed_ms": 3}),
                serde_json::json!({"event": "transition", "seq": 3, "at": "2026-11-30T00:09:00Z",
                    "transition": {"deployment": "other", "from": "healthy", "to": "contained", "why": "x", "operator": null}}),
                serde_json::json!({"event": "transition", "seq": 4, "at": "2026-11-30T00:10:00Z",
                    "transition": {"deployment": HOSTILE, "from": "contained", "to": "released", "why": "secret reason", "operator": "alice"}}),
            ],
        ),
        release_command: Some(format!("driftd release --deployment {HOSTILE}")),
    };
    let html = deployment::render(&v, HOSTILE, &c);
    no_raw_markup(&html);
    assert_eq!(html.matches("class=\"crossing\"").count(), 1, "{html}");
    let at = crate::event::format_rfc3339_ms(T0 + 30_000);
    assert!(
        html.contains(&format!(
            "data-source=\"canary_vs_control\" data-state=\"fail\" data-t=\"{at}\""
        )),
        "{html}"
    );
    let events: Vec<_> = html
        .match_indices("data-event=\"")
        .map(|(i, _)| &html[i + 12..i + 20])
        .collect();
    assert_eq!(
        events,
        ["transiti", "action\" ", "action\" ", "transiti"],
        "other deployments left out"
    );
    assert!(html.contains(
        "alert on am (alertmanager): retrying, attempt 1, 3 ms after the decision (its error: in the audit log)"
    ));
    assert!(
        !html.contains("internal.corp"),
        "a target's error stays in the audit log"
    );
    assert!(html.contains("contain on flag (flagd): success, attempt 1, 12 ms after the decision"));
    assert!(html.contains("refusal fail &lt;x&gt;"));
    assert!(
        !html.contains("secret reason") && !html.contains("alice"),
        "operator input is not public"
    );
    assert!(html.contains("driftd release --deployment &lt;script&gt;"));
    assert!(html.contains("+min_effect 0.02"));
    assert!(html.contains("class=\"band\""));
    assert!(html.contains(&format!("data-deployment=\"{}\"", esc(HOSTILE))));
}

#[test]
fn an_unknown_deployment_is_named_escaped() {
    let html = deployment::not_found(HOSTILE);
    no_raw_markup(&html);
}

#[tokio::test]
async fn pages_and_assets_carry_a_strict_policy_and_no_sniffing() {
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(Published::default()));
    let state = crate::admin::AdminState {
        metrics: Arc::new(crate::metrics::Metrics::new(
            &crate::config::Config::default(),
        )),
        snapshots: rx,
        contain: None,
        identities: Arc::new(Default::default()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crate::admin::serve(listener, state, std::future::pending()));
    for (path, status, kind) in [
        ("/", 200, "text/html; charset=utf-8"),
        ("/ui/", 200, "text/html; charset=utf-8"),
        ("/ui/assets/ui.css", 200, "text/css"),
        ("/ui/assets/ui.js", 200, "text/javascript"),
        (
            "/ui/deployments/%3Cscript%3E",
            404,
            "text/html; charset=utf-8",
        ),
    ] {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let h = r.headers();
        assert_eq!(h["content-type"], kind, "{path}");
        assert_eq!(h["content-security-policy"], CSP, "{path}");
        assert!(CSP.starts_with("default-src 'self'"));
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("<script>"), "{path}");
    }
}

#[test]
fn an_incident_opened_by_late_drift_shows_its_chart_and_crossing() {
    let mut t = Trajectories::default();
    let late = Verdict {
        source: Source::LateDrift,
        state: VerdictState::Fail,
        statistic: 9.5,
        threshold: 8.25,
        ..verdict("late-bot", VerdictState::Fail, 0.04)
    };
    let ab = verdict("late-bot", VerdictState::Pass, 0.01);
    assert!(t.advance("late-bot", T0));
    t.sample(&[DeploymentView::of(ab.clone())], |_| true);
    assert!(t.advance("late-bot", T0 + 1_000));
    t.record_changes(&[Change::Verdict(late.clone())]);
    let mut dv = DeploymentView::of(ab);
    dv.metrics[0].state = VerdictState::Fail;
    dv.metrics[0].late_drift = Some(late);
    let v = View {
        published: Arc::new(Published {
            cohorts: Default::default(),
            deployments: vec![dv],
            trajectories: t,
        }),
        latches: Arc::new(BTreeMap::new()),
        now_ms: T0 + 60_000,
        remote: Default::default(),
    };
    let c = deployment::Containment {
        audit: Vec::new(),
        release_command: None,
    };
    let html = deployment::render(&v, "late-bot", &c);
    assert!(html.contains("Late-drift CUSUM"), "{html}");
    assert!(
        html.contains("statistic 9.50 against threshold 8.25"),
        "{html}"
    );
    let at = crate::event::format_rfc3339_ms(T0 + 1_000);
    assert!(
        html.contains(&format!(
            "data-source=\"late_drift\" data-state=\"fail\" data-t=\"{at}\""
        )),
        "{html}"
    );
}

#[test]
fn a_deployment_another_replica_owns_is_shown_as_its_owner_shared_it() {
    let mut v = view();
    let shared = |name: &str, state: VerdictState, version: &str| {
        let mut d = DeploymentView::of(verdict(name, state, 0.07));
        d.canary_version = Some(version.into());
        crate::contain::fence::SharedView {
            partition: 0,
            claim: crate::contain::fence::Claim {
                epoch: 1,
                writer: "owner".into(),
            },
            made_at_ms: T0,
            view: Arc::new(d),
        }
    };
    v.remote = Arc::new(BTreeMap::from([
        (
            "far-bot".to_string(),
            shared("far-bot", VerdictState::Warn, "far-v7"),
        ),
        // Its owner's view wins over what this replica's pipeline still holds.
        (
            "quiet-bot".to_string(),
            shared("quiet-bot", VerdictState::Fail, "owners-v9"),
        ),
    ]));
    let html = overview::render(&v);
    assert!(
        html.contains("far-bot") && html.contains("far-v7"),
        "{html}"
    );
    assert!(html.contains("owners-v9"), "{html}");
    let page = deployment::render(&v, "far-bot", &deployment::Containment::default());
    assert!(
        page.contains("far-v7") && !page.contains("No evidence published"),
        "{page}"
    );
}
