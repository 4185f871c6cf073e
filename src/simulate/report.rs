//! The benchmark report as Markdown tables.
//!
//! Owns the layout only (one table per scenario, the oracle row last and every median read
//! against it); must not compute a statistic.

use super::{Report, ScenarioResult, METHODS};

/// The oracle row's label for a scenario: an SPRT for a drift from the start, a CUSUM after.
fn oracle_label(s: &ScenarioResult) -> &'static str {
    match s.scenario.drift {
        Some(d) if d.onset > 0.0 => "oracle CUSUM (knows both rates, exact ARL)",
        _ if s.scenario.segments > 0 => "oracle SPRT (knows the segment and the effect)",
        _ => "oracle SPRT (knows the effect)",
    }
}

/// The drift table of one scenario.
fn drift_table(s: &ScenarioResult, out: &mut String) {
    if let (Some(n), Some(a)) = (s.fixed_horizon_n, s.metric_alpha) {
        out.push_str(&format!(
            "Fixed-horizon test (one-sided alpha_m = {a}, 90% power): {n} events per arm.\n\n"
        ));
    }
    out.push_str(
        "| method | detected | early alarm | median events/arm (SE) | p90 | x oracle | at min_events floor |\n|---|---|---|---|---|---|---|\n",
    );
    let oracle = s
        .methods
        .last()
        .and_then(|m| m.delay.as_ref())
        .and_then(|d| d.median);
    for (k, m) in s.methods.iter().enumerate() {
        let label = if k + 1 == METHODS.len() {
            oracle_label(s)
        } else {
            m.method
        };
        let Some(d) = &m.delay else {
            continue;
        };
        let median = match (d.median, d.median_se) {
            (Some(v), Some(se)) => format!("{v} ({se:.0})"),
            (Some(v), None) => format!("{v} (-)"),
            (None, _) => "not reached".into(),
        };
        let ratio = match (d.median, oracle) {
            (Some(v), Some(o)) if o > 0 => format!("{:.2}", v as f64 / o as f64),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "| {label} | {:.1}% | {:.1}% | {median} | {} | {ratio} | {:.1}% |\n",
            d.detected * 100.0,
            d.early * 100.0,
            d.p90.map_or("not reached".into(), |v| v.to_string()),
            d.at_floor * 100.0,
        ));
    }
}

/// The A/A table of one scenario.
fn aa_table(s: &ScenarioResult, out: &mut String) {
    out.push_str("| method | refusal | escalation | tone | tone_tail | family-wise (SE) |\n|---|---|---|---|---|---|\n");
    for m in &s.methods {
        let (Some(r), Some(fw)) = (m.false_fail_rate, m.familywise_false_fail_rate) else {
            continue;
        };
        out.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | **{:.4}** ({:.4}) |\n",
            m.method,
            r[0],
            r[1],
            r[2],
            r[3],
            fw,
            m.familywise_se.unwrap_or(0.0)
        ));
    }
    if let Some((rate, se)) = s.chart_alarms_per_week {
        out.push_str(&format!(
            "\ndriftd's charts (late drift and canary self-baseline `fail`s, every metric): {rate:.3} ({se:.3}) false alarms per week per deployment over {:.1} weeks of traffic.\n",
            s.weeks
        ));
    }
}

/// The report as Markdown.
pub fn markdown(report: &Report) -> String {
    let o = &report.options;
    let mut out = format!(
        "{} lifetimes per drift scenario and {} A/A lifetimes (lifetime i uses seed {} + i), {} events per arm per lifetime, {} events/s per arm, family-wise alpha {}; fixed window: {} looks of {} events per arm; median SE: bootstrap, {} resamples. Undetected lifetimes count as infinite delay; alarms before the onset are early false alarms.\n\n",
        o.runs, o.aa_runs, o.seed, o.events_per_arm, o.rate_per_arm, report.alpha, report.looks, o.window, o.bootstrap
    );
    for s in &report.scenarios {
        out.push_str(&format!(
            "**{}** ({} lifetimes, {:.0} s)\n\n",
            s.scenario.name, s.lifetimes, s.seconds
        ));
        if s.scenario.drift.is_none() {
            aa_table(s, &mut out);
        } else {
            drift_table(s, &mut out);
        }
        out.push('\n');
    }
    out
}
