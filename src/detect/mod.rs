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
//! - **self-baseline** ([`cusum`]): each cohort against the reference it learned from its first
//!   `warmup_events` events; catches drift without a control arm and drift that hits both arms. This CUSUM is the only
//!   "baseline" that alarms; the long-run EWMA in `state::ewma` is reported, never tested.
//!
//! Plus cohort-level signals per deployment: sample-ratio mismatch against the configured canary
//! share ([`srm`]) and telemetry absent from one arm. Absent data is an alert, never a `fail`.
//!
//! **One error budget, by construction.** Every detector that can fail a canary spends from
//! `detection.alpha` (α):
//! - the charts that can fail it (late drift, and the canary cohorts' self-baseline when
//!   `on_alarm = "fail"`) get `detection.chart_share` of α (default 0.08); the canary-vs-control
//!   tests split the rest, `αₘ = α·(1 − share)/metrics` (Bonferroni; each test's always-valid
//!   p-value crosses `αₘ` at any time with probability at most `αₘ`). With no chart able to fail
//!   a canary the tests get all of α.
//! - The charts' budget is set in canary **events**, not time (no event-rate estimate, so
//!   deterministic): together a deployment's charts have an in-control ARL of
//!   `ARL_dep = detection.lifetime_events / (α·share)` canary events (50,000 / (0.01·0.08) =
//!   6.25·10⁷ by default). The expected number of false chart alarms over a lifetime of
//!   `lifetime_events` canary events is then at most `α·share` (each chart's run length is close
//!   to geometric, so its alarms come at a rate of at most `1/ARL` per event), hence so is their
//!   probability (Markov), and the family-wise false-fail probability per lifetime is at most α.
//!   A longer lifetime spends proportionally more: `L` canary events cost `α·share·L/lifetime`.
//!   The rate target follows: at 100 events/s per arm a week is 6.048·10⁷ canary events, so the
//!   charts raise at most 6.048·10⁷ / 6.25·10⁷ = 0.97 false alarms per week per deployment.
//! - `ARL_dep` is split over the charts by a union bound (false-alarm rates add): late drift
//!   gets 80% when the canary's self-baseline can fail too (all when not), an equal part for each
//!   of its `2 × metrics` charts (`detector::late`); the canary self-baseline the other 20%, an
//!   equal part per metric, then `6/(π²k²)` of that to the `k`-th canary cohort (segment) of the
//!   canary version in order of appearance, weights that add up to 1 however many cohorts appear.
//!   A cohort sees at most every canary event, so a chart's ARL in its own events bounds its
//!   rate per canary event. Each chart's threshold is the exact one (`arl`) for its ARL, for a
//!   reference (control's running rate for late drift, the warm-up's for the self-baseline)
//!   off by 1.645 standard errors in the costly direction ([`cusum::noisy_reference_threshold`]);
//!   for late drift past 8,000 control events by `1.645·√(8000/n)` of them, a margin that
//!   shrinks like `1/n`, whose cost is measured (`late_false_alarms_per_week`), not bounded.
//! - Control cohorts' self-baseline alarms never fail a canary (a "control degraded" `warn`), so
//!   they are budgeted apart, as a rate: at most one false warning per
//!   `detection.self_baseline.false_alarm_period` per deployment, at each cohort's warm-up event
//!   rate, split over metrics and control cohorts the same way.
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
pub use detector::{Detector, Evidence};
pub use verdict::{
    Change, DeploymentView, MetricVerdicts, SegmentsView, Signal, SignalKind, Source, Verdict,
    VerdictState,
};
