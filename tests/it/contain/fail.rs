//! The `fail` verdict the containment tests and the action-latency benchmark feed in (the
//! benchmark includes this file by path).

use driftd::detect::{Change, Source, Verdict, VerdictState};

/// A `fail` verdict of now: fresh evidence, which containment acts on.
pub fn fail_verdict(deployment: &str, version: &str) -> Change {
    Change::Verdict(Verdict {
        deployment: deployment.into(),
        model_version: version.into(),
        metric: "refusal".into(),
        source: Source::CanaryVsControl,
        state: VerdictState::Fail,
        at: driftd::event::format_rfc3339_ms(driftd::clock::wall_ms()),
        events_seen: 5000,
        n_canary: 2500,
        n_control: 2500,
        canary_value: Some(0.1),
        control_value: Some(0.05),
        estimate: Some(0.05),
        ci_low: Some(0.02),
        ci_high: Some(0.08),
        p_value: Some(0.0001),
        statistic: 9.2,
        threshold: 5.99,
        min_effect: 0.01,
        alpha: Some(0.0025),
        arm: None,
        segment: None,
        reference: None,
    })
}
