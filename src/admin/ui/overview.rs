//! The overview: one row per deployment, contained first.
//!
//! Owns the overview's HTML only; reads the [`View`] it is given, changes nothing.

use std::collections::BTreeSet;

use super::{ago, deployment_path, esc, experiment_signals, page, phase_badge, state_badge, View};
use crate::contain::latch::Phase;
use crate::event::parse_rfc3339_ms;

/// Contained first, then suspect, released, healthy.
fn rank(p: Phase) -> u8 {
    match p {
        Phase::Contained => 0,
        Phase::Suspect => 1,
        Phase::Released => 2,
        Phase::Healthy => 3,
    }
}

/// The latest change known of `deployment` (ms): a verdict change in its trajectories (event
/// time), its incident opening or its last release (wall time).
pub(super) fn last_change_ms(v: &View, deployment: &str) -> Option<i64> {
    let verdicts = v
        .published
        .trajectories
        .of(deployment)
        .iter()
        .flat_map(|s| s.points.iter().filter(|p| p.changed).map(|p| p.t_ms));
    let latch = v.latches.get(deployment);
    let opened = latch
        .and_then(|l| l.incident.as_ref())
        .and_then(|i| parse_rfc3339_ms(&i.opened_at));
    let released = latch
        .and_then(|l| l.last_release.as_ref())
        .and_then(|r| parse_rfc3339_ms(&r.at));
    verdicts.chain(opened).chain(released).max()
}

/// The overview page.
pub(super) fn render(v: &View) -> String {
    let mut names: BTreeSet<&str> = v.latches.keys().map(String::as_str).collect();
    names.extend(v.names());
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_by_key(|n| (rank(v.phase(n)), *n));
    let mut rows = String::new();
    for name in &names {
        let view = v.deployment(name);
        let phase = v.phase(name);
        let version = view
            .and_then(|d| d.canary_version.as_deref())
            .map_or_else(|| "—".to_string(), esc);
        let metrics: String = view
            .map(|d| {
                d.metrics
                    .iter()
                    .map(|m| {
                        format!(
                            r#"<li class="metric" data-metric="{n}">{n} {b}</li>"#,
                            n = esc(&m.metric),
                            b = state_badge(m.state)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut signals = experiment_signals(view);
        if let Some(l) = v.latches.get(*name) {
            if !l.stale.is_empty() {
                signals.push(format!("{} stale verdict(s) held", l.stale.len()));
            }
            if l.pending_release.is_some() {
                signals.push("release pending approval".to_string());
            }
        }
        let signals = match signals.is_empty() {
            true => "none".to_string(),
            false => signals.join("; "),
        };
        let since = last_change_ms(v, name).map_or_else(|| "—".to_string(), |t| ago(v.now_ms - t));
        rows.push_str(&format!(
            r#"<tr class="deployment" data-deployment="{attr}" data-phase="{phase}">
<td data-label="Deployment"><a href="{href}">{name}</a></td>
<td data-label="Phase">{badge}</td>
<td data-label="Canary version">{version}</td>
<td data-label="Metrics"><ul class="metrics">{metrics}</ul></td>
<td data-label="Signals">{signals}</td>
<td data-label="Last change">{since}</td>
</tr>
"#,
            attr = esc(name),
            name = esc(name),
            href = esc(&deployment_path(name)),
            phase = phase.as_str(),
            badge = phase_badge(phase),
        ));
    }
    let body = if names.is_empty() {
        "<h1>Deployments</h1>\n<p>No deployment seen yet.</p>".to_string()
    } else {
        format!(
            r#"<h1>Deployments</h1>
<p class="note">Contained first. States are shown as text and shape; charts and the timeline are on each deployment's page.</p>
<table class="overview">
<thead><tr><th scope="col">Deployment</th><th scope="col">Phase</th><th scope="col">Canary version</th><th scope="col">Metrics</th><th scope="col">Signals</th><th scope="col">Last change</th></tr></thead>
<tbody>
{rows}</tbody>
</table>"#
        )
    };
    page("Deployments", &body)
}
