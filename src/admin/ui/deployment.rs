//! A deployment's page: per metric the evidence over time, the containment timeline from the
//! audit records, the release command, and the release and contain form.
//!
//! Owns this page's HTML only; reads the [`View`] and the audit records it is given. Public
//! facts only: a manual transition or request shows that an operator acted, not who or why, and
//! an action's error (which can name internal hosts) is left to the audit log.

use serde_json::Value;

use super::{chart, esc, experiment_signals, num, page, phase_badge, state_badge, View};
use crate::contain::latch::Phase;
use crate::detect::trajectory::Series;
use crate::detect::{MetricVerdicts, Source};

/// What containment adds to the page (nothing when it is not running).
#[derive(Default)]
pub(super) struct Containment {
    /// The deployment's audit records, oldest first.
    pub audit: Vec<Value>,
    /// The exact command that releases it.
    pub release_command: Option<String>,
}

/// The records of `audit` about `deployment`.
pub(super) fn records_of(deployment: &str, audit: Vec<Value>) -> Vec<Value> {
    let prefix = format!("{deployment}:");
    let is = |v: &Value| v.as_str() == Some(deployment);
    let under = |v: &Value| v.as_str().is_some_and(|s| s.starts_with(&prefix));
    audit
        .into_iter()
        .filter(|r| match r["event"].as_str() {
            Some("transition") => is(&r["transition"]["deployment"]),
            Some("approval" | "request_refused" | "stale") => is(&r["deployment"]),
            Some("action") => under(&r["incident"]),
            Some("action_failure_alert") => under(&r["failed"]),
            _ => false,
        })
        .collect()
}

/// The page for a deployment driftd does not know.
pub(super) fn not_found(deployment: &str) -> String {
    page(
        "Not found",
        &format!(
            r#"<h1>Not found</h1><p>driftd knows no deployment named <code>{}</code>. <a href="/ui/">All deployments</a></p>"#,
            esc(deployment)
        ),
    )
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// One timeline entry: (kind, text) — escaped here.
fn entry(r: &Value) -> Option<(&'static str, String)> {
    Some(match s(r, "event") {
        "transition" => {
            let t = &r["transition"];
            let by = match t["operator"].is_null() {
                true => format!(": {}", esc(s(t, "why"))),
                false => " by an operator (who and why: the audit log, with a viewer token)".into(),
            };
            (
                "transition",
                format!("phase {} → {}{by}", esc(s(t, "from")), esc(s(t, "to"))),
            )
        }
        "action" => {
            let latency = r["elapsed_ms"]
                .as_u64()
                .map_or(String::new(), |ms| format!(", {ms} ms after the decision"));
            let attempt = r["attempt"]
                .as_u64()
                .map_or(String::new(), |a| format!(", attempt {a}"));
            // A target's error can name internal hosts: the audit log (viewer) has it.
            let error = match r["error"].is_null() {
                true => "",
                false => " (its error: in the audit log)",
            };
            (
                "action",
                format!(
                    "{} on {} ({}): {}{attempt}{latency}{error}",
                    esc(s(r, "op")),
                    esc(s(r, "target")),
                    esc(s(r, "provider")),
                    esc(s(r, "result")),
                ),
            )
        }
        "approval" => (
            "approval",
            format!(
                "{} {} ({} of {} approvals)",
                esc(s(r, "kind")),
                esc(s(r, "step")),
                r["approved_by"].as_array().map_or(0, Vec::len),
                r["needed"].as_u64().unwrap_or(0)
            ),
        ),
        "request_refused" => (
            "refused",
            format!("an operator's {} request was refused", esc(s(r, "request"))),
        ),
        "stale" => (
            "stale",
            format!(
                "{} {} s old, not acted on{}",
                esc(s(r, "kind")),
                r["age_seconds"].as_f64().map_or(0, |a| a as i64),
                if r["held"].as_bool() == Some(true) {
                    " (held until fresh events confirm it)"
                } else {
                    ""
                }
            ),
        ),
        "action_failure_alert" => (
            "action-failed",
            format!(
                "action {} failed for good; the alert targets were told",
                esc(s(r, "failed"))
            ),
        ),
        _ => return None,
    })
}

fn timeline(c: &Containment) -> String {
    let items: Vec<String> = c
        .audit
        .iter()
        .filter_map(|r| {
            let (kind, text) = entry(r)?;
            Some(format!(
                r#"<li class="event" data-event="{kind}" data-seq="{seq}"><time>{at}</time> <span class="kind">{kind}</span> {text}</li>"#,
                seq = r["seq"].as_u64().unwrap_or(0),
                at = esc(s(r, "at")),
            ))
        })
        .collect();
    let list = match items.is_empty() {
        true => "<p>No containment record for this deployment.</p>".to_string(),
        false => format!("<ol class=\"timeline\">\n{}\n</ol>", items.join("\n")),
    };
    format!(
        r#"<section id="timeline" aria-labelledby="timeline-h"><h2 id="timeline-h">Containment timeline</h2>
<p class="note">From the audit log, oldest first (wall-clock times, UTC).</p>
{list}</section>
"#
    )
}

fn series<'a>(
    list: &'a [std::sync::Arc<Series>],
    metric: &str,
    source: Source,
) -> Option<&'a Series> {
    list.iter()
        .map(|s| &**s)
        .find(|s| s.metric == metric && s.source == source)
}

fn metric_section(i: usize, m: &MetricVerdicts, list: &[std::sync::Arc<Series>]) -> String {
    let v = &m.canary_vs_control;
    let chart = series(list, &m.metric, Source::CanaryVsControl)
        .and_then(|s| chart::canary_vs_control(&format!("ab-{i}"), s))
        .unwrap_or_else(|| "<p>No estimate yet: fewer than min_events per arm.</p>".into());
    // The alarm when there is one, else the canary's chart nearest its threshold.
    let baseline = match m.self_baseline.as_ref().or(m.self_baseline_watch.as_ref()) {
        Some(b) => {
            let chart = series(list, &m.metric, Source::SelfBaseline)
                .and_then(|s| chart::cusum(&format!("sb-{i}"), s, "self-baseline CUSUM"))
                .unwrap_or_default();
            let segment = b
                .segment
                .as_deref()
                .filter(|s| !s.is_empty())
                .map_or_else(|| "all segments".to_string(), esc);
            format!(
                r#"<h3>Self-baseline CUSUM</h3>
<p class="self-baseline" data-state="{st}">{badge} {arm} cohort, segment <span class="segment">{segment}</span>: statistic {stat:.2} against threshold {thr:.2}; reference {reference}, cohort mean {est}.</p>
{chart}"#,
                st = b.state.as_str(),
                badge = state_badge(b.state),
                arm = b.arm.map_or("", |a| a.as_str()),
                stat = b.statistic,
                thr = b.threshold,
                reference = num(b.reference),
                est = num(b.estimate),
            )
        }
        None => "<p class=\"note\">Self-baseline: no canary cohort has learned its reference yet (warm-up).</p>".into(),
    };
    // The late-drift chart that fired, beside the test it raced: an incident it opened must
    // show where.
    let late = m
        .late_drift
        .as_ref()
        .zip(series(list, &m.metric, Source::LateDrift))
        .map(|(l, s)| {
            format!(
                r#"<h3>Late-drift CUSUM</h3>
<p class="late-drift" data-state="{st}">{badge} canary against control's running rate: statistic {stat:.2} against threshold {thr:.2}.</p>
{chart}"#,
                st = l.state.as_str(),
                badge = state_badge(l.state),
                stat = l.statistic,
                thr = l.threshold,
                chart = chart::cusum(&format!("ld-{i}"), s, "late-drift CUSUM").unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    format!(
        r#"<section class="metric" id="metric-{i}" data-metric="{name}" data-state="{state}" aria-labelledby="metric-{i}-h">
<h2 id="metric-{i}-h">{name} {badge}</h2>
<table class="figures">
<tr><th scope="row">Events per arm</th><td>canary <span class="n-canary">{nc}</span>, control <span class="n-control">{n0}</span></td></tr>
<tr><th scope="row">Canary − control</th><td>{est} (bounds {lo} … {hi}; min_effect {me})</td></tr>
<tr><th scope="row">Canary, control</th><td>{cv}, {ctl}</td></tr>
<tr><th scope="row">Always-valid p</th><td>{p} (α share {alpha})</td></tr>
</table>
{chart}
{late}
{baseline}
</section>
"#,
        name = esc(&m.metric),
        state = m.state.as_str(),
        badge = state_badge(m.state),
        nc = v.n_canary,
        n0 = v.n_control,
        est = num(v.estimate),
        lo = num(v.ci_low),
        hi = num(v.ci_high),
        me = v.min_effect,
        cv = num(v.canary_value),
        ctl = num(v.control_value),
        p = v
            .p_value
            .map_or_else(|| "n/a".to_string(), |p| format!("{p:.2e}")),
        alpha = num(v.alpha),
    )
}

fn act_form(deployment: &str) -> String {
    format!(
        r#"<section id="act" aria-labelledby="act-h"><h2 id="act-h">Release or contain</h2>
<p class="note">Your bearer token stays in this page's memory: it is sent with this request only, never stored or put in a cookie. Operator and reason are required.</p>
<form id="action-form" method="post" data-deployment="{d}">
<label for="token">Bearer token</label><input id="token" type="password" autocomplete="off" required>
<label for="operator">Operator</label><input id="operator" type="text" maxlength="128" autocomplete="off" required>
<label for="reason">Reason</label><textarea id="reason" maxlength="1024" rows="2" required></textarea>
<div class="buttons"><button type="submit" id="release" value="release">Release</button> <button type="submit" id="contain" value="contain">Contain</button></div>
<p id="result" class="result" role="status" aria-live="polite"></p>
</form>
<noscript><p>The form needs JavaScript; without it, use the release command above.</p></noscript>
</section>
"#,
        d = esc(deployment)
    )
}

/// The page of `deployment`.
pub(super) fn render(v: &View, deployment: &str, c: &Containment) -> String {
    let view = v.deployment(deployment);
    let phase = v.phase(deployment);
    let latch = v.latches.get(deployment);
    let name = esc(deployment);
    let version = view
        .and_then(|d| d.canary_version.as_deref())
        .map_or_else(|| "—".to_string(), esc);
    let incident = latch.and_then(|l| l.incident.as_ref()).map_or_else(
        || "none".to_string(),
        |i| {
            format!(
                "{} opened {} — {}",
                esc(&i.id),
                esc(&i.opened_at),
                esc(&super::super::gate::public_reason(i))
            )
        },
    );
    let closed = latch.is_some_and(|l| l.gate_closed());
    let signals = experiment_signals(view);
    let signals = match signals.is_empty() {
        true => "none".into(),
        false => signals.join("; "),
    };
    let command = match (&c.release_command, phase == Phase::Contained) {
        (Some(cmd), true) => format!(
            r#"<section id="release-command" aria-labelledby="rc-h"><h2 id="rc-h">Release command</h2><pre><code>{}</code></pre></section>
"#,
            esc(cmd)
        ),
        _ => String::new(),
    };
    let list = v.published.trajectories.of(deployment);
    let metrics: String = view
        .map(|d| {
            d.metrics
                .iter()
                .enumerate()
                .map(|(i, m)| metric_section(i, m, list))
                .collect()
        })
        .unwrap_or_else(|| "<p>No evidence published for this deployment.</p>".into());
    let body = format!(
        r#"<p><a href="/ui/">← All deployments</a></p>
<h1>Deployment <span class="name">{name}</span></h1>
<dl class="facts" data-phase="{p}">
<dt>Phase</dt><dd id="phase">{badge}</dd>
<dt>Gate</dt><dd id="gate">{gate}</dd>
<dt>Canary version</dt><dd id="version">{version}</dd>
<dt>Incident</dt><dd>{incident}</dd>
<dt>Signals</dt><dd>{signals}</dd>
</dl>
{command}{metrics}{timeline}{form}"#,
        p = phase.as_str(),
        badge = phase_badge(phase),
        gate = if closed { "closed (503)" } else { "open" },
        timeline = timeline(c),
        form = act_form(deployment),
    );
    page(deployment, &body)
}
