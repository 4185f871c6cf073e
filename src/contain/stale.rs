//! Stale evidence: the rule that keeps containment from acting on old events, and how a stale
//! verdict is confirmed once fresh events arrive.
//!
//! A change whose event time (`at`) is further than `containment.max_evidence_age` behind the
//! wall clock is stale: a fresh consumer group reading days of history, or driftd catching up
//! after an outage. It never reaches the [`super::ladder`]. A stale `warn`/`fail` verdict is held
//! in the deployment's [`Latch::stale`] instead; a verdict of a test is latched (a `fail` is
//! final for its canary version), so fresh events of a still-failing canary bring no new change,
//! and [`confirm`] reads the published snapshot to find out when the same canary version's own
//! arm is sending fresh events again while the verdict still stands. A held verdict whose canary
//! was replaced, or that no longer warns or fails, is dropped without ever acting; one whose arm
//! has stopped sending (a canary promoted or withdrawn) waits and never acts.
//!
//! Signals the same way: a stale *raised* sample-ratio mismatch or absent telemetry is held in
//! [`Latch::stale_signals`] (a signal changes only when raised or cleared, so one that stays
//! raised into fresh traffic would otherwise never alert), and [`confirm_signal`] raises it
//! once the snapshot shows it still raised with fresh events. A stale *clear* is not evidence
//! to act on but is never held back either: it resolves an alert that is open (de-escalation
//! on old evidence cannot page anyone) and forgets what was held. Cohort overflow is not held:
//! it has its own metric and alert rule, and the snapshot does not show it per deployment.
//!
//! Pure: no I/O, no clock (the wall-clock time is passed in).

use super::latch::{signal_key, Latch, Phase, Stale, StaleSignal};
use crate::detect::{Change, DeploymentView, Signal, SignalKind, Source, Verdict, VerdictState};
use crate::event::{format_rfc3339_ms, parse_rfc3339_ms, Arm};
use crate::pipeline::Published;

/// How far `at` is behind `now_ms` when that is more than `max_age_ms`; `None` when fresh
/// (or when `at` is not a time, which driftd never writes: judged as fresh, as before this
/// rule existed, rather than silently blocking containment).
pub fn stale_by(at: &str, now_ms: i64, max_age_ms: i64) -> Option<i64> {
    let age = now_ms - parse_rfc3339_ms(at)?;
    (age > max_age_ms).then_some(age)
}

/// How far the evidence of `change` is behind `now_ms`, when more than `max_age_ms` (see
/// [`stale_by`]). The evidence of a verdict or signal is its event time `at`; that of a raised
/// `telemetry_absent` is the silent arm's last event (`at` minus the silence). The detector
/// raises it on the other arm's events once the silence passes `detection.absent_after`, so a
/// silence older than the limit means the other arm was silent as well: a gap in the whole
/// stream (an outage, days of history), not one arm stopping while the other goes on.
pub fn stale_change(change: &Change, now_ms: i64, max_age_ms: i64) -> Option<i64> {
    match change {
        Change::Verdict(v) => stale_by(&v.at, now_ms, max_age_ms),
        Change::Signal(s) if s.kind == SignalKind::TelemetryAbsent && s.active => {
            let age = now_ms - parse_rfc3339_ms(&s.at)? + (s.statistic * 1000.0) as i64;
            (age > max_age_ms).then_some(age)
        }
        Change::Signal(s) => stale_by(&s.at, now_ms, max_age_ms),
    }
}

/// The key a verdict is held under in [`Latch::stale`].
fn key(v: &Verdict) -> String {
    format!("{}/{}/{}", v.model_version, v.metric, v.source.as_str())
}

/// The ladder has seen a (fresh) verdict `v`: held verdicts of other canary versions are
/// replaced and the one for the same metric and source is superseded. Returns what was dropped.
pub fn forget(latch: &mut Latch, v: &Verdict) -> Vec<Stale> {
    let this = key(v);
    let (kept, dropped) = std::mem::take(&mut latch.stale)
        .into_iter()
        .partition(|(k, s)| s.model_version == v.model_version && *k != this);
    latch.stale = kept;
    dropped.into_values().collect()
}

/// A stale verdict `v`, received `age_ms` behind the wall clock at `now`: a `warn` or `fail`
/// the ladder could still act on is held; any other state only forgets (see [`forget`]).
/// Returns true when it was held.
pub fn hold(latch: &mut Latch, v: &Verdict, age_ms: i64, now: &str) -> bool {
    forget(latch, v);
    let incident = format!("{}:{}", v.deployment, v.model_version);
    // A contained deployment stays contained whatever follows, and a released incident is
    // never re-opened by the same evidence: nothing to hold for.
    if v.state < VerdictState::Warn
        || latch.phase == Phase::Contained
        || latch.closed.contains(&incident)
    {
        return false;
    }
    let held = Stale {
        model_version: v.model_version.clone(),
        metric: v.metric.clone(),
        source: v.source,
        state: v.state,
        arm: v.arm,
        at: v.at.clone(),
        age_seconds: age_ms as f64 / 1000.0,
        received_at: now.to_string(),
        events_seen: v.events_seen,
    };
    latch.stale.insert(held.key(), held);
    true
}

/// What to do with a held stale verdict, given the latest snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    /// Not yet decided: no fresh events of its arm, or the snapshot predates the verdict.
    Wait,
    /// Never to be acted on, and why.
    Drop(String),
    /// Fresh events confirm it: the verdict as it stands now, dated by its arm's newest event.
    Act(Box<Verdict>),
}

/// Judges `held`, a stale verdict of `deployment`, against `published` at wall-clock time
/// `now_ms`.
pub fn confirm(
    held: &Stale,
    deployment: &str,
    published: &Published,
    now_ms: i64,
    max_age_ms: i64,
) -> Confirm {
    let Some(view) = published
        .deployments
        .iter()
        .find(|d| d.deployment == deployment)
    else {
        return Confirm::Wait;
    };
    let Some(m) = view.metrics.iter().find(|m| m.metric == held.metric) else {
        return Confirm::Drop(format!("metric `{}` is no longer judged", held.metric));
    };
    // Snapshots are published on a timer: one taken before the verdict cannot overrule it.
    if m.canary_vs_control.events_seen < held.events_seen {
        return Confirm::Wait;
    }
    if view.canary_version.as_deref() != Some(held.model_version.as_str()) {
        return Confirm::Drop(format!(
            "canary {} was replaced by {}",
            held.model_version,
            view.canary_version.as_deref().unwrap_or("none")
        ));
    }
    let current = match held.source {
        Source::CanaryVsControl => Some(&m.canary_vs_control),
        Source::SelfBaseline => m.self_baseline.as_ref().filter(|a| a.arm == held.arm),
        Source::LateDrift => m.late_drift.as_ref(),
    };
    let Some(current) = current.filter(|v| v.state >= VerdictState::Warn) else {
        return Confirm::Drop("it no longer warns or fails".into());
    };
    // The evidence is fresh when the arm it was drawn from sends fresh events: the canary
    // version itself for the canary-vs-control test (fresh control events alone, e.g. after a
    // promotion, confirm nothing), the alarmed arm for a self-baseline alarm.
    let arm = held.arm.unwrap_or(Arm::Canary);
    match newest(published, deployment, arm, &held.model_version) {
        Some(t) if now_ms - t <= max_age_ms => Confirm::Act(Box::new(Verdict {
            at: format_rfc3339_ms(t),
            ..current.clone()
        })),
        _ => Confirm::Wait,
    }
}

/// A stale signal `s` received `age_ms` behind the wall clock at `now`: a raised sample-ratio
/// mismatch or absent telemetry is held (replacing what was held for the same signal); anything
/// else only forgets (see [`forget_signal`]). Returns true when it was held.
pub fn hold_signal(latch: &mut Latch, s: &Signal, age_ms: i64, now: &str) -> bool {
    forget_signal(latch, s);
    if !s.active || s.kind == SignalKind::CohortOverflow {
        return false;
    }
    let held = StaleSignal {
        kind: s.kind,
        model_version: s.model_version.clone(),
        arm: s.arm,
        at: s.at.clone(),
        age_seconds: age_ms as f64 / 1000.0,
        received_at: now.to_string(),
        events_seen: s.events_seen,
        statistic: s.statistic,
        threshold: s.threshold,
    };
    latch.stale_signals.insert(held.key(), held);
    true
}

/// The ladder has seen signal `s` (fresh, or a stale clear): what was held for the same signal
/// is superseded and what was held for other canary versions is replaced. Returns what was
/// dropped.
pub fn forget_signal(latch: &mut Latch, s: &Signal) -> Vec<StaleSignal> {
    let this = signal_key(&s.model_version, s.kind, s.arm);
    let (kept, dropped) = std::mem::take(&mut latch.stale_signals)
        .into_iter()
        .partition(|(k, h)| h.model_version == s.model_version && *k != this);
    latch.stale_signals = kept;
    dropped.into_values().collect()
}

/// What to do with a held stale signal, given the latest snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfirmSignal {
    /// Not yet decided: no fresh events, or the snapshot predates the signal.
    Wait,
    /// Never to be alerted on, and why.
    Drop(String),
    /// Still raised with fresh events: the signal as it stands now, dated by the newest event.
    Act(Box<Signal>),
}

/// The newest event time of `deployment`'s `arm` (of canary version `version` for the canary).
fn newest(published: &Published, deployment: &str, arm: Arm, version: &str) -> Option<i64> {
    published
        .cohorts
        .cohorts
        .iter()
        .filter(|c| c.deployment == deployment && c.arm == arm)
        .filter(|c| arm == Arm::Control || c.model_version == version)
        .filter_map(|c| parse_rfc3339_ms(&c.last_event_at))
        .max()
}

/// The pipeline's event count behind `view`'s verdicts.
fn events_seen(view: &DeploymentView) -> u64 {
    let verdicts = view.metrics.iter().map(|m| m.canary_vs_control.events_seen);
    verdicts
        .chain(view.srm.iter().map(|s| s.events_seen))
        .max()
        .unwrap_or(0)
}

/// Judges `held`, a stale signal of `deployment`, against `published` at wall-clock time
/// `now_ms`. A sample-ratio mismatch is confirmed by a fresh event of either arm while the
/// mismatch stands; absent telemetry by a fresh event of the *other* arm while this one is still
/// silent (that is what the signal says), its silence measured up to that event.
pub fn confirm_signal(
    held: &StaleSignal,
    deployment: &str,
    published: &Published,
    now_ms: i64,
    max_age_ms: i64,
) -> ConfirmSignal {
    let Some(view) = published
        .deployments
        .iter()
        .find(|d| d.deployment == deployment)
    else {
        return ConfirmSignal::Wait;
    };
    if events_seen(view) < held.events_seen {
        return ConfirmSignal::Wait;
    }
    if view.canary_version.as_deref() != Some(held.model_version.as_str()) {
        return ConfirmSignal::Drop(format!(
            "canary {} was replaced by {}",
            held.model_version,
            view.canary_version.as_deref().unwrap_or("none")
        ));
    }
    let fresh = |t: Option<i64>| t.filter(|t| now_ms - t <= max_age_ms);
    let version = held.model_version.as_str();
    match (held.kind, held.arm) {
        (SignalKind::SampleRatioMismatch, _) => {
            let Some(srm) = view.srm.as_ref().filter(|_| view.sample_ratio_mismatch) else {
                return ConfirmSignal::Drop("the sample-ratio mismatch cleared".into());
            };
            let t = [Arm::Canary, Arm::Control]
                .into_iter()
                .filter_map(|arm| newest(published, deployment, arm, version))
                .max();
            match fresh(t) {
                Some(t) => ConfirmSignal::Act(Box::new(Signal {
                    active: true,
                    at: format_rfc3339_ms(t),
                    ..srm.clone()
                })),
                None => ConfirmSignal::Wait,
            }
        }
        (SignalKind::TelemetryAbsent, Some(silent)) => {
            if !view.telemetry_absent.contains(&silent) {
                return ConfirmSignal::Drop(format!("the {} arm sends again", silent.as_str()));
            }
            let other = match silent {
                Arm::Canary => Arm::Control,
                Arm::Control => Arm::Canary,
            };
            let Some(t) = fresh(newest(published, deployment, other, version)) else {
                return ConfirmSignal::Wait;
            };
            // The silent arm's last event, as the signal saw it: its cohorts may have expired.
            let last =
                parse_rfc3339_ms(&held.at).map_or(t, |at| at - (held.statistic * 1000.0) as i64);
            let (n_canary, n_control) = view.metrics.first().map_or((0, 0), |m| {
                (m.canary_vs_control.n_canary, m.canary_vs_control.n_control)
            });
            ConfirmSignal::Act(Box::new(Signal {
                kind: held.kind,
                deployment: deployment.to_string(),
                model_version: held.model_version.clone(),
                arm: Some(silent),
                active: true,
                at: format_rfc3339_ms(t),
                events_seen: events_seen(view),
                n_canary,
                n_control,
                expected_share: None,
                observed_share: None,
                statistic: (t - last).max(0) as f64 / 1000.0,
                threshold: held.threshold,
            }))
        }
        _ => ConfirmSignal::Drop(format!(
            "{} is not confirmed by fresh events",
            held.kind.as_str()
        )),
    }
}

#[cfg(test)]
mod tests;
