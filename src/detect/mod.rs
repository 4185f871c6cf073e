//! Drift detection: verdicts with evidence, per deployment and metric.
//!
//! Owns the [`Detector`] (in `detector`), fed by the pipeline after each event reaches cohort
//! state, and the verdict types it emits (in `verdict`, re-exported here), which the pipeline,
//! metrics, admin API, containment and replay consume. Three sources of verdicts per
//! (deployment, metric):
//! - **canary vs control** ([`sequential`]): an anytime-valid one-sided test of the difference
//!   between the deployment's current canary model_version and its control arm, counted from
//!   the moment that canary version first appeared. The confidence bounds it reports invert
//!   the same statistic at the same `αₘ`, so a verdict's bound and its state cannot disagree. A new canary version starts a new test; the
//!   old verdicts go to the deployment's history.
//! - **late drift** (`detector::late`, thresholds from [`arl`]): two CUSUMs per metric that
//!   compare each canary event with the control arm's running rate or mean, tuned to 2× and 5×
//!   `min_effect` in the worse direction; they see a drift that starts late, which the sequential
//!   test dilutes with the good events before it. An alarm is a `fail`, latched for the canary
//!   version: it is evidence against the canary relative to control.
//! - **self-baseline** ([`cusum`]): each cohort against the reference it learned in warm-up;
//!   catches drift without a control arm and drift that hits both arms. This CUSUM is the only
//!   "baseline" that alarms; the long-run EWMA in `state::ewma` is reported, never tested.
//!
//! Plus cohort-level signals per deployment: sample-ratio mismatch against the configured canary
//! share ([`srm`]) and telemetry absent from one arm. Absent data is an alert, never a `fail`.
//!
//! **One error budget**: each metric's canary-vs-control test runs at its Bonferroni share
//! `αₘ` of `detection.alpha` (shares add up to at most α). Each test's always-valid p-value
//! crosses `αₘ` at any time with probability at most `αₘ`, so the probability that any metric of
//! a deployment's canary lifetime fails falsely is at most α, however often it is evaluated.
//! The CUSUMs watch indefinitely, so they are budgeted as a rate, **per deployment**: at most one
//! false alarm per `detection.self_baseline.false_alarm_period` (a week by default) across all
//! of a deployment's late-drift charts, at the deployment's observed canary event rate. Half of
//! that goes to late drift when self-baseline is on (all of it when off), split evenly over its
//! `2 × metrics` charts: each chart's threshold is the exact one (`arl`) for an in-control ARL of
//! `canary events per period × 2 × metrics / share` events (16 periods' worth at the default
//! four metrics), with the control reference shifted against the canary by 1.645 standard errors
//! (`detector::late`). Charged against α: a canary lifetime of `L` event-time covers `L/period`
//! of the budget, so late-drift false fails add at most `share × L/period` to the family-wise
//! false-fail probability (0.5 × 500 s / 1 week = 4.1·10⁻⁴ for a 50,000-event-per-arm lifetime at
//! 100 events/s), on top of the sequential tests' α; the Bonferroni shares are not reduced by it.
//! Self-baseline alarms are still budgeted per cohort and metric (one per `false_alarm_period`
//! each, `h = ln ARL₀`), outside that per-deployment budget.
//!
//! States: `insufficient` (fewer than `min_events` per arm — never `pass`), `pass`, `warn`
//! (evidence half-way: `Λ ≥ 1/√αₘ` with an effect beyond `min_effect`, or significant but below
//! `min_effect`; it ends only when `Λ` falls under `αₘ^(-1/4)` or the effect under half the
//! floor, so it does not flap), `fail` (always-valid `p ≤ αₘ` in the worse direction *and*
//! estimate beyond `min_effect`; latched for the canary version, as a sequential test's decision
//! is final). A self-baseline alarm of a canary cohort raises `detection.self_baseline.on_alarm`
//! (`fail` or `warn`) for the rest of the canary version; one of a control cohort is a `warn`
//! ("control degraded"), never a `fail`: a degraded control is no evidence against the canary.
//!
//! Pure: no I/O, no wall clock; event time and counts come from the caller, so `replay`
//! reproduces the daemon's decisions exactly. Must not know about Kafka, HTTP, metrics or
//! containment.

pub mod arl;
pub mod cusum;
mod detector;
pub mod sequential;
pub mod srm;
pub mod trajectory;
mod verdict;

pub use detector::part::{DetectPart, DetectPartError};
pub use detector::Detector;
pub use verdict::{
    Change, DeploymentView, MetricVerdicts, Signal, SignalKind, Source, Verdict, VerdictState,
};
