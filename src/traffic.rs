//! The synthetic traffic model and its producer: the `gen` command, the demo's producer, the
//! benchmark's streams and test fixtures.
//!
//! Owns the synthetic traffic model ([`TrafficModel`]): deployments with canary and control arms,
//! base rates (refusal 5%, escalation 2%, tone ~ N(0.3, 0.3) clamped to [-1, 1]) and an optional
//! drift of one metric in the canary arm from a chosen point on. [`Sampler`] is the one place an
//! event's signals are drawn from the model; [`Generator`] wraps it into contract-v1 JSON for
//! Kafka and files, and `simulate` feeds it to the detector directly, so the two cannot diverge.
//! Deterministic for a seed. Events pass the privacy gate: identifiers are built so that no digit
//! run stands alone (which the gate would read as a phone number). This module must not be used
//! by the daemon.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::Serialize;

use crate::event::{format_rfc3339_ms, Arm};

#[cfg(feature = "kafka")]
mod send;
#[cfg(feature = "kafka")]
pub use send::{produce, Pace, Sender, TrafficError};

/// Which metric drifts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftMetric {
    /// Refusal rate becomes `to`.
    Refusal,
    /// Escalation rate becomes `to`.
    Escalation,
    /// Tone mean shifts by `to` (negative = more hostile).
    Tone,
}

/// A change in the canary arm from a point in the stream on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Drift {
    /// The metric that drifts.
    pub metric: DriftMetric,
    /// New rate (refusal, escalation) or mean shift (tone).
    pub to: f64,
    /// Fraction of the stream (0–1) after which the drift applies.
    pub at: f64,
    /// Which deployments drift: the first `deployments` of them.
    pub deployments: usize,
}

/// The shape of synthetic traffic: deployments, arm split, base rates and drifts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrafficModel {
    /// Number of deployments.
    pub deployments: usize,
    /// Share of each deployment's traffic on the canary arm.
    pub canary_share: f64,
    /// Base refusal rate.
    pub refusal: f64,
    /// Base escalation rate.
    pub escalation: f64,
    /// Base tone mean.
    pub tone_mean: f64,
    /// Tone standard deviation.
    pub tone_sd: f64,
    /// Drifts applied to the canary arm (empty = none).
    pub drift: Vec<Drift>,
    /// Random seed.
    pub seed: u64,
}

impl Default for TrafficModel {
    fn default() -> Self {
        TrafficModel {
            deployments: 2,
            canary_share: 0.5,
            refusal: 0.05,
            escalation: 0.02,
            tone_mean: 0.3,
            tone_sd: 0.3,
            drift: Vec::new(),
            seed: 1,
        }
    }
}

const NAMES: [&str; 6] = [
    "support-bot",
    "search-assist",
    "checkout-helper",
    "docs-qa",
    "triage-agent",
    "sales-chat",
];
const LOCALES: [&str; 4] = ["en-US", "en-GB", "de-DE", "fr-FR"];
const CHANNELS: [&str; 2] = ["web", "app"];

/// Model version of the control arm.
pub const CONTROL_VERSION: &str = "base-2026-10";
/// Model version of the canary arm.
pub const CANARY_VERSION: &str = "ft-2026-11-20";

/// Deployment name number `i`.
pub fn deployment_name(i: usize) -> String {
    match NAMES.get(i) {
        Some(n) => (*n).to_string(),
        None => format!("svc-n{i}x"),
    }
}

/// One event's signals, as the model draws them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    /// The generation was a refusal.
    pub refused: bool,
    /// The conversation was escalated to a human.
    pub escalated: bool,
    /// Tone score in [-1, 1], rounded to four decimals as the events carry it.
    pub tone: f64,
}

/// Draws events' signals from a [`TrafficModel`]: the one place that decides, per arm and drift,
/// whether an event is refused or escalated and what its tone is.
pub struct Sampler {
    model: TrafficModel,
    rng: SmallRng,
    tone: Normal<f64>,
    /// Index of the first drifted event, per drift.
    drift_from: Vec<u64>,
}

impl Sampler {
    /// A sampler seeded with the model's seed; `total` (if known) places each drift onset at
    /// event index `drift.at × total`.
    pub fn new(model: TrafficModel, total: Option<u64>) -> Sampler {
        let drift_from = model
            .drift
            .iter()
            .map(|d| (d.at.clamp(0.0, 1.0) * total.unwrap_or(0) as f64) as u64)
            .collect();
        Sampler {
            rng: SmallRng::seed_from_u64(model.seed),
            tone: Normal::new(0.0, model.tone_sd.max(1e-9)).expect("finite sd"),
            model,
            drift_from,
        }
    }

    /// Index of the first event of the earliest drift, if any drift is configured.
    pub fn drift_from(&self) -> Option<u64> {
        self.drift_from.iter().copied().min()
    }

    /// The signals of event index `i` of deployment number `deployment` on `arm`, and whether a
    /// drift applied to it.
    pub fn draw(&mut self, deployment: usize, arm: Arm, i: u64) -> (Signals, bool) {
        let m = &self.model;
        let (mut refusal, mut escalation, mut tone_mean) = (m.refusal, m.escalation, m.tone_mean);
        let mut drifted = false;
        for (d, from) in m.drift.iter().zip(&self.drift_from) {
            if !(arm == Arm::Canary && deployment < d.deployments && i >= *from) {
                continue;
            }
            drifted = true;
            match d.metric {
                DriftMetric::Refusal => refusal = d.to,
                DriftMetric::Escalation => escalation = d.to,
                DriftMetric::Tone => tone_mean += d.to,
            }
        }
        let refused = self.rng.random_bool(refusal.clamp(0.0, 1.0));
        let escalated = self.rng.random_bool(escalation.clamp(0.0, 1.0));
        let tone = (tone_mean + self.tone.sample(&mut self.rng)).clamp(-1.0, 1.0);
        let signals = Signals {
            refused,
            escalated,
            tone: (tone * 1e4).round() / 1e4,
        };
        (signals, drifted)
    }
}

/// One generated message.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Message key (the deployment).
    pub key: String,
    /// JSON payload.
    pub payload: Vec<u8>,
    /// True when this event's arm is canary and the drift applies to it.
    pub drifted: bool,
}

/// An endless, seeded stream of contract-v1 events for a traffic model: each event's deployment,
/// arm and segment drawn at random, its signals from the [`Sampler`].
pub struct Generator {
    sampler: Sampler,
    n: u64,
}

impl Generator {
    /// A generator; `total` (if known) places each drift onset at `drift.at × total`.
    pub fn new(model: TrafficModel, total: Option<u64>) -> Generator {
        Generator {
            sampler: Sampler::new(model, total),
            n: 0,
        }
    }

    /// Index of the first event of the earliest drift, if any drift is configured.
    pub fn drift_from(&self) -> Option<u64> {
        self.sampler.drift_from()
    }

    /// The next event, emitted at `emitted_at_ms`.
    pub fn next_event(&mut self, emitted_at_ms: i64) -> Generated {
        let i = self.n;
        self.n += 1;
        // The draws share one random stream in a fixed order (deployment, arm, signals,
        // segment), so a seed gives the same events as before the sampler was split out.
        let (deployments, canary_share) = (
            self.sampler.model.deployments,
            self.sampler.model.canary_share,
        );
        let dep = self.sampler.rng.random_range(0..deployments.max(1));
        let arm = if self.sampler.rng.random_bool(canary_share.clamp(0.0, 1.0)) {
            Arm::Canary
        } else {
            Arm::Control
        };
        let (signals, drifted) = self.sampler.draw(dep, arm, i);
        let locale = LOCALES[self.sampler.rng.random_range(0..LOCALES.len())];
        let channel = CHANNELS[self.sampler.rng.random_range(0..CHANNELS.len())];
        let deployment = deployment_name(dep);
        let payload = serde_json::to_vec(&serde_json::json!({
            "schema_version": 1,
            "event_id": format!("g{}x{}", self.sampler.model.seed, i),
            "emitted_at": format_rfc3339_ms(emitted_at_ms),
            "deployment": deployment,
            "model_version": match arm {
                Arm::Canary => CANARY_VERSION,
                Arm::Control => CONTROL_VERSION,
            },
            "arm": arm.as_str(),
            "segment": {"locale": locale, "channel": channel},
            "signals": {"tone": signals.tone, "escalated": signals.escalated, "refused": signals.refused},
        }))
        .expect("serialising a JSON value cannot fail");
        Generated {
            key: deployment,
            payload,
            drifted,
        }
    }
}

/// Writes `count` events as JSON lines, with synthetic event time: `start_ms` plus `i / rate`.
pub fn write_lines(
    model: TrafficModel,
    count: u64,
    rate: f64,
    start_ms: i64,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let mut generator = Generator::new(model, Some(count));
    let step_ms = if rate > 0.0 { 1000.0 / rate } else { 0.0 };
    for i in 0..count {
        let g = generator.next_event(start_ms + (i as f64 * step_ms) as i64);
        out.write_all(&g.payload)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::event::Decoder;

    #[test]
    fn generated_events_pass_the_decoder_and_drift_applies() {
        let mut config = Config::default();
        config.cohorts.segment_keys = vec!["locale".into()];
        let decoder = Decoder::new(&config);
        let model = TrafficModel {
            drift: vec![Drift {
                metric: DriftMetric::Refusal,
                to: 0.5,
                at: 0.5,
                deployments: 1,
            }],
            ..TrafficModel::default()
        };
        let mut g = Generator::new(model, Some(20_000));
        let (mut before, mut after) = ((0u32, 0u32), (0u32, 0u32));
        for i in 0..20_000 {
            let ev = g.next_event(1_795_928_400_000 + i);
            let e = decoder
                .decode(Some(&ev.payload))
                .expect("generated events are valid");
            if e.deployment == "support-bot" && e.arm == crate::event::Arm::Canary {
                let slot = if i < 10_000 { &mut before } else { &mut after };
                slot.0 += 1;
                slot.1 += e.signals[0] as u32;
            }
        }
        let rate = |(n, k): (u32, u32)| f64::from(k) / f64::from(n);
        assert!(rate(before) < 0.08, "{}", rate(before));
        assert!(rate(after) > 0.4, "{}", rate(after));
    }

    #[test]
    fn drift_applies_to_the_canary_of_the_drifting_deployments_from_its_onset_only() {
        let model = TrafficModel {
            drift: vec![Drift {
                metric: DriftMetric::Refusal,
                to: 1.0,
                at: 0.5,
                deployments: 1,
            }],
            ..TrafficModel::default()
        };
        let mut s = Sampler::new(model, Some(100));
        assert_eq!(s.drift_from(), Some(50));
        for i in 0..100 {
            let (signals, drifted) = s.draw(0, Arm::Canary, i);
            assert_eq!(drifted, i >= 50, "event {i}");
            assert!(i < 50 || signals.refused, "a rate of 1 always refuses");
            assert!(!s.draw(0, Arm::Control, i).1, "control never drifts");
            assert!(
                !s.draw(1, Arm::Canary, i).1,
                "only the first deployment drifts"
            );
        }
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = Generator::new(TrafficModel::default(), None);
        let mut b = Generator::new(TrafficModel::default(), None);
        for t in 0..100 {
            assert_eq!(a.next_event(t).payload, b.next_event(t).payload);
        }
    }
}
