//! The demo's terminal output: the live view (progress, recent rates per cohort, verdicts and
//! gates) and the summary (counts, rates before and after the drift, verdicts with evidence).
//! Pure formatting over published snapshots and metrics: no I/O but the writer it is given.

use std::io::Write;
use std::time::Duration;

use crate::detect::VerdictState;
use crate::event::Arm;
use crate::metrics::Metrics;
use crate::pipeline::Published;
use crate::state::{CohortView, Snapshot};

fn state_word(state: VerdictState) -> String {
    match state {
        VerdictState::Fail => "FAIL".into(),
        s => s.as_str().into(),
    }
}

/// One line per deployment: each metric's combined verdict and the gate (`gates[i]` is the
/// gate of `p.deployments[i]`).
pub(super) fn verdicts(out: &mut impl Write, p: &Published, gates: &[&str]) -> std::io::Result<()> {
    for (d, gate) in p.deployments.iter().zip(gates) {
        let metrics: Vec<String> = d
            .metrics
            .iter()
            .map(|m| format!("{} {}", m.metric, state_word(m.state)))
            .collect();
        let mut flags = String::new();
        if d.sample_ratio_mismatch {
            flags.push_str("  SAMPLE RATIO MISMATCH");
        }
        for arm in &d.telemetry_absent {
            flags.push_str(&format!("  {} SILENT", arm.as_str()));
        }
        writeln!(
            out,
            "    verdicts {:<14} {} gate {gate}: {}{flags}",
            d.deployment,
            d.canary_version.as_deref().unwrap_or("-"),
            metrics.join(", ")
        )?;
    }
    Ok(())
}

fn metric<'a>(c: &'a CohortView, name: &str) -> Option<&'a crate::state::MetricView> {
    c.metrics.iter().find(|m| m.name == name)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("    -".into(), |v| format!("{:5.1}%", v * 100.0))
}

/// The live view: a progress bar with counts, then one line per cohort with its recent rates.
pub(super) fn live(
    out: &mut impl Write,
    s: &Snapshot,
    elapsed: Duration,
    total: Duration,
    consumed: u64,
    rejected: u64,
) -> std::io::Result<()> {
    let frac = (elapsed.as_secs_f64() / total.as_secs_f64()).min(1.0);
    let filled = (frac * 20.0) as usize;
    writeln!(
        out,
        "[{}{}] {:3.0}% {:>4}s  consumed {consumed:>7}  rejected {rejected:>4}  watermark {}",
        "#".repeat(filled),
        ".".repeat(20 - filled),
        frac * 100.0,
        elapsed.as_secs(),
        s.watermark.as_deref().unwrap_or("-")
    )?;
    let mut cohorts: Vec<&CohortView> = s.cohorts.iter().filter(|c| !c.overflow).collect();
    cohorts.sort_by(|a, b| (&a.deployment, a.arm).cmp(&(&b.deployment, b.arm)));
    for c in cohorts {
        let m = |name: &str| metric(c, name).map(|m| m.recent.clone());
        let tone = m("tone").and_then(|w| w.value);
        writeln!(
            out,
            "    {:<14} {:<7} last {}s: n {:>5}  refusal {}  escalation {}  tone {}  tone<-0.5 {}",
            c.deployment,
            c.arm.as_str(),
            s.recent_seconds,
            m("refusal").map_or(0, |w| w.n),
            pct(m("refusal").and_then(|w| w.value)),
            pct(m("escalation").and_then(|w| w.value)),
            tone.map_or("    -".into(), |t| format!("{t:+.2}")),
            pct(m("tone_tail").and_then(|w| w.value)),
        )?;
    }
    out.flush()
}

fn recent(s: &Snapshot, deployment: &str, arm: Arm, name: &str) -> Option<f64> {
    let c = s
        .cohorts
        .iter()
        .find(|c| c.deployment == deployment && c.arm == arm)?;
    metric(c, name)?.recent.value
}

/// The summary once everything is consumed: counts, rejections, recent rates before the onset
/// and at the end, whether the drift shows, and every verdict with its evidence.
pub(super) fn summary(
    out: &mut impl Write,
    before: Option<&Snapshot>,
    published: &Published,
    metrics: &Metrics,
    produced: u64,
) -> std::io::Result<()> {
    use crate::event::Reason;
    let after = &published.cohorts;
    let applied = metrics.events_applied.get();
    let rejected = metrics.events_rejected.get();
    writeln!(out, "\ndriftd demo summary")?;
    writeln!(
        out,
        "  produced {produced}, applied {applied}, rejected {rejected}"
    )?;
    let reasons: Vec<String> = Reason::ALL
        .iter()
        .filter(|r| metrics.rejected(**r) > 0)
        .map(|r| format!("{} {}", r.as_str(), metrics.rejected(*r)))
        .collect();
    writeln!(out, "  rejected by reason: {}", reasons.join(", "))?;
    writeln!(
        out,
        "  dead-lettered: {} (PII rejections carry only topic/partition/offset and reason)",
        metrics.dead_letters_delivered.get()
    )?;
    let cohort_total: u64 = after.cohorts.iter().map(|c| c.events_total).sum();
    writeln!(
        out,
        "  cohorts: {}, events in cohort state: {cohort_total}",
        after.cohorts.len()
    )?;
    writeln!(
        out,
        "  last {}s, before the drift onset -> at the end:",
        after.recent_seconds
    )?;
    let mut visible = true;
    for dep in ["support-bot", "search-assist"] {
        for name in ["refusal", "tone"] {
            let fmt = |v: Option<f64>| match (name, v) {
                (_, None) => "-".to_string(),
                ("tone", Some(v)) => format!("{v:+.2}"),
                (_, Some(v)) => format!("{:.1}%", v * 100.0),
            };
            let b = before.and_then(|s| recent(s, dep, Arm::Canary, name));
            let a = recent(after, dep, Arm::Canary, name);
            let ctl = recent(after, dep, Arm::Control, name);
            writeln!(
                out,
                "    {dep:<14} {name:<8} canary {:>7} -> {:>7}   control {:>7}",
                fmt(b),
                fmt(a),
                fmt(ctl)
            )?;
        }
    }
    let canary_refusal = recent(after, "support-bot", Arm::Canary, "refusal");
    let control_refusal = recent(after, "support-bot", Arm::Control, "refusal");
    let canary_tone = recent(after, "support-bot", Arm::Canary, "tone");
    let control_tone = recent(after, "support-bot", Arm::Control, "tone");
    match (canary_refusal, control_refusal, canary_tone, control_tone) {
        (Some(cr), Some(kr), Some(ct), Some(kt)) => visible &= cr > kr * 1.5 && ct < kt - 0.15,
        _ => visible = false,
    }
    let all_counted = applied + rejected == produced && cohort_total == applied;
    writeln!(
        out,
        "  result: drift {} in support-bot's canary; every message {}",
        if visible { "visible" } else { "NOT visible" },
        if all_counted {
            "accounted for"
        } else {
            "NOT accounted for"
        }
    )?;
    writeln!(
        out,
        "  verdicts (canary vs control, with evidence; self-baseline alarms):"
    )?;
    for d in &published.deployments {
        for m in &d.metrics {
            let v = &m.canary_vs_control;
            let pct_or_score = |x: f64| {
                if m.metric == "tone" {
                    format!("{x:+.3}")
                } else {
                    format!("{:+.2}pt", x * 100.0)
                }
            };
            write!(
                out,
                "    {:<14} {:<10} {:<12} n {}/{}",
                d.deployment,
                m.metric,
                state_word(m.state),
                v.n_canary,
                v.n_control
            )?;
            if let (Some(e), Some(lo), Some(hi)) = (v.estimate, v.ci_low, v.ci_high) {
                write!(
                    out,
                    "  diff {} [{}, {}]  p {:.2e}",
                    pct_or_score(e),
                    pct_or_score(lo),
                    pct_or_score(hi),
                    v.p_value.unwrap_or(1.0)
                )?;
            }
            if let Some(a) = &m.self_baseline {
                write!(
                    out,
                    "  self-baseline {} on {} (reference {:.3}, CUSUM {:.1} >= {:.1})",
                    state_word(a.state),
                    a.arm.map_or("-", Arm::as_str),
                    a.reference.unwrap_or(f64::NAN),
                    a.statistic,
                    a.threshold
                )?;
            }
            writeln!(out)?;
        }
    }
    let failed = |dep: &str| {
        published
            .deployments
            .iter()
            .find(|d| d.deployment == dep)
            .is_some_and(|d| {
                d.metrics
                    .iter()
                    .any(|m| m.metric == "refusal" && m.state == VerdictState::Fail)
            })
    };
    writeln!(
        out,
        "  detection: support-bot {}, search-assist {}",
        if failed("support-bot") {
            "FAILED on refusal"
        } else {
            "did NOT fail on refusal"
        },
        if failed("search-assist") {
            "FAILED on refusal"
        } else {
            "did not fail"
        }
    )?;
    out.flush()
}
