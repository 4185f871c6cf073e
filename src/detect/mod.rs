//! Drift detection: verdicts with evidence, per deployment and metric.
//!
//! Owns the [`Detector`] (in `detector`), fed by the pipeline after each event reaches cohort
//! state, and the verdict types it emits (in `verdict`, re-exported here), which the pipeline,
//! metrics, admin API, containment and replay consume. Two sources of verdicts per
//! (deployment, metric):
//! - **canary vs control** ([`sequential`]): an anytime-valid one-sided test of the difference
//!   between the deployment's current canary model_version and its control arm, counted from
//!   the moment that canary version first appeared. The confidence bounds it reports invert
//!   the same statistic at the same `αₘ`, so a verdict's bound and its state cannot disagree. A new canary version starts a new test; the
//!   old verdicts go to the deployment's history.
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
//! Self-baseline alarms are budgeted separately, as a rate (one per `false_alarm_period` per
//! cohort and metric).
//!
//! **Segments** (with `cohorts.segment_keys`): a drift in one locale or channel is diluted in
//! the totals, so each metric's test also compares the arms within each segment value, up to
//! `detection.segments.max_tested` = K values (a slot each, on first appearance; later values
//! are counted and stay in the totals). The metric's evidence is
//! `E = (1 − s)·Λ_dep + (s/K)·Σ_k Λ_k` (`s` = `detection.segments.share`, an untested slot
//! counting 1), and the metric fails when `E ≥ 1/αₘ` with the estimate of the component that
//! drives `E` beyond `min_effect`. Weights fixed by config (never by the values seen) make `E`
//! a nonnegative martingale under the null, so Ville keeps the false-`fail` probability at
//! `αₘ` per metric and the budget above unchanged; unlike a Bonferroni split the evidence of
//! several segments and of the totals adds up. The price is `ln(1/(1 − s))` more evidence for
//! a drift seen in the totals and `ln(K/s)` for one segment alone. The verdict names the
//! segment that drives it (`segment`) and carries its estimate, counts and the bound that
//! inverts `E` (`detector::segments`). Without segment keys nothing changes.
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
    Change, DeploymentView, MetricVerdicts, SegmentsView, Signal, SignalKind, Source, Verdict,
    VerdictState,
};
