//! The pipeline's decisions and publications, byte for byte, over a fixed generated corpus:
//! what a performance change must leave exactly as it was. The digest was recorded on the
//! pipeline before the performance work of issue 12 (s9-perf, on 997bc96), and re-recorded when
//! late drift's thresholds changed (s9-late): that branch, without the performance work, gives
//! the same digest as both together. Re-recorded once more when the per-cohort and verdict
//! series came to be rendered from the publication at each scrape instead of registered: the
//! series of every publication were checked the same (name, label pairs, value) before and
//! after; only the exposition's order of label pairs within a series differs (the registry
//! sorted them), and the series are digested sorted since.
//!
//! The corpus has six deployments on three partitions, both arms, segment keys `locale` and
//! `channel` (segment tests on), a refusal drift on two deployments, a second canary version
//! on one, a canary arm that goes silent for a while on another (`telemetry_absent`) and a
//! deployment that stops, whose cohorts are evicted. Every change, and at every publication the
//! published cohorts, verdicts, trajectories and per-cohort / per-verdict metric series, then
//! every partition's exported state, are digested.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Pipeline;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::traffic::{
    deployment_name, Drift, DriftMetric, Generator, TrafficModel, CANARY_VERSION,
};

/// SHA-256 of [`golden_run`]'s bytes.
const DIGEST: &str = "03192f4c2ab77b5703ea5a8b76df5250f524a530e099ccd4c370cce7d6575c69";

const EVENTS: u64 = 60_000;
const START_MS: i64 = 1_800_000_000_000;
const PUBLISH_EVERY: u64 = 5_000;

fn config() -> Config {
    let mut config = Config::default();
    config.cohorts.segment_keys = vec!["locale".into(), "channel".into()];
    config.windows.span = Duration::from_secs(300);
    config.cohorts.idle_expiry = Some(Duration::from_secs(300));
    config.detection.absent_after = Duration::from_secs(60);
    config.validate().expect("the golden config is valid");
    config
}

/// The corpus: (partition, payload), 20 ms apart; `perturb` drops that one event (`None` for
/// the recorded corpus), to show that the digest notices.
fn corpus(perturb: Option<u64>) -> Vec<(i32, Vec<u8>)> {
    let mut g = Generator::new(
        TrafficModel {
            deployments: 6,
            drift: vec![Drift {
                metric: DriftMetric::Refusal,
                to: 0.2,
                at: 0.25,
                deployments: 2,
            }],
            seed: 12,
            ..TrafficModel::default()
        },
        Some(EVENTS),
    );
    let stopped = deployment_name(5);
    let silent = deployment_name(3);
    let upgraded = deployment_name(1);
    let mut out = Vec::new();
    for i in 0..EVENTS {
        let e = g.next_event(START_MS + i as i64 * 20);
        let canary = e.payload.windows(8).any(|w| w == b"\"canary\"");
        if (e.key == stopped && i > EVENTS * 3 / 10)
            || (e.key == silent && canary && (EVENTS / 2..EVENTS * 6 / 10).contains(&i))
            || perturb == Some(i)
        {
            continue;
        }
        let mut payload = e.payload;
        if e.key == upgraded && i > EVENTS * 7 / 10 {
            let text = String::from_utf8(payload).expect("generated events are UTF-8");
            payload = text.replace(CANARY_VERSION, "ft-2026-12-01").into_bytes();
        }
        let partition = (e.key.bytes().map(u32::from).sum::<u32>() % 3) as i32;
        out.push((partition, payload));
    }
    out
}

/// The metric series a publication writes (the timing histograms excepted), sorted: the
/// exposition's order is not part of what it says.
fn published_series(metrics: &Metrics) -> String {
    let text = metrics.render();
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            [
                "driftd_cohort",
                "driftd_verdict",
                "driftd_sample_ratio",
                "driftd_telemetry",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .collect();
    lines.sort_unstable();
    lines.join("\n")
}

/// The run's bytes; `off_thread`: the metrics are written on the publication thread (as in the
/// daemon), and read once it has written every publication.
fn golden_run(perturb: Option<u64>, off_thread: bool) -> Vec<u8> {
    let config = config();
    let metrics = Arc::new(Metrics::new(&config));
    let (mut p, _) = Pipeline::new(&config, metrics.clone(), false);
    p.collect_changes(true);
    if off_thread {
        p.publish_off_thread();
    }
    let mut bytes = Vec::new();
    for (i, (partition, payload)) in corpus(perturb).iter().enumerate() {
        p.process(*partition, Some(payload));
        if (i as u64 + 1) % PUBLISH_EVERY == 0 {
            for change in p.take_changes() {
                json(&mut bytes, &change);
            }
            let published = p.publish();
            json(&mut bytes, &published.cohorts);
            json(&mut bytes, &published.deployments);
            for d in &published.deployments {
                for series in published.trajectories.of(&d.deployment) {
                    json(&mut bytes, &**series);
                }
            }
            p.publisher.flush();
            bytes.extend(published_series(&metrics).into_bytes());
        }
    }
    for change in p.take_changes() {
        json(&mut bytes, &change);
    }
    for partition in 0..3 {
        let state = p.export_partition(partition);
        json(&mut bytes, &state);
        json(&mut bytes, state.trajectories());
    }
    assert!(
        metrics.cohorts_evicted.get() > 0,
        "the stopped deployment's cohorts must be evicted"
    );
    bytes
}

fn json(bytes: &mut Vec<u8>, v: &impl serde::Serialize) {
    bytes.extend(serde_json::to_vec(v).expect("serialisable"));
}

fn digest(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[test]
fn the_corpus_gives_the_recorded_decisions_and_publications() {
    let bytes = golden_run(None, false);
    let text = String::from_utf8_lossy(&bytes);
    for must in [
        r#""state":"fail""#,
        "telemetry_absent",
        "ft-2026-12-01",
        r#""segments":{"#,
    ] {
        assert!(text.contains(must), "the run must exercise {must}");
    }
    let got = digest(&bytes);
    println!("{} bytes, sha256 {got}", bytes.len());
    assert_eq!(got, DIGEST);
}

#[test]
fn written_off_the_consumers_thread_the_metrics_are_the_same() {
    assert_eq!(digest(&golden_run(None, true)), DIGEST);
}

#[test]
fn one_event_less_changes_the_digest() {
    let got = digest(&golden_run(Some(EVENTS / 3), false));
    assert_ne!(got, DIGEST);
}
