use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::traffic::{Drift, DriftMetric, Generator, TrafficModel};

fn events(n: u64, seed: u64) -> Vec<(i32, Vec<u8>)> {
    let mut g = Generator::new(
        TrafficModel {
            deployments: 4,
            drift: vec![Drift {
                metric: DriftMetric::Refusal,
                to: 0.3,
                at: 0.2,
                deployments: 2,
            }],
            seed,
            ..TrafficModel::default()
        },
        Some(n),
    );
    (0..n)
        .map(|i| {
            let e = g.next_event(1_800_000_000_000 + i as i64 * 20);
            let partition = (e.key.bytes().map(u32::from).sum::<u32>() % 3) as i32;
            (partition, e.payload)
        })
        .collect()
}

fn pipeline() -> Pipeline {
    let config = Config::default();
    let (mut p, _) = Pipeline::new(&config, Arc::new(Metrics::new("t")), false);
    p.collect_changes(true);
    p
}

/// Cohorts by key and deployments by name, as JSON: the order of a restored table differs.
fn state(p: &mut Pipeline) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let published = p.publish();
    let cohorts = published
        .cohorts
        .cohorts
        .iter()
        .map(|c| {
            (
                format!(
                    "{}/{}/{:?}/{:?}",
                    c.deployment, c.model_version, c.arm, c.segment
                ),
                serde_json::to_string(c).unwrap(),
            )
        })
        .collect();
    let deployments = published
        .deployments
        .iter()
        .map(|d| (d.deployment.clone(), serde_json::to_string(d).unwrap()))
        .collect();
    (cohorts, deployments)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Stopping anywhere, saving every partition (through bytes), restoring into a new
    /// pipeline and going on gives exactly the state of one uninterrupted run.
    #[test]
    fn saved_and_restored_partitions_continue_exactly_where_they_stopped(split in 0usize..6_000, seed in 1u64..1_000) {
        let all = events(6_000, seed);
        let mut whole = pipeline();
        for (partition, e) in &all {
            whole.process(*partition, Some(e));
        }
        let mut first = pipeline();
        for (partition, e) in &all[..split] {
            first.process(*partition, Some(e));
        }
        let before = first.publish();
        let mut resumed = pipeline();
        for partition in 0..3 {
            let bytes = postcard::to_stdvec(&first.export_partition(partition)).unwrap();
            let saved: PartitionState = postcard::from_bytes(&bytes).unwrap();
            resumed.import_partition(partition, saved).unwrap();
        }
        // What containment is told again: exactly the warn/fail verdicts standing at the stop.
        let mut again: Vec<(String, String, String)> = resumed
            .take_changes()
            .into_iter()
            .filter_map(|c| match c {
                Change::Verdict(v) => Some((v.deployment, v.metric, v.state.as_str().to_string())),
                Change::Signal(_) => None,
            })
            .collect();
        again.sort();
        let mut standing: Vec<(String, String, String)> = before
            .deployments
            .iter()
            .flat_map(|d| d.metrics.iter().map(move |m| (d, m)))
            .flat_map(|(d, m)| {
                let ab = &m.canary_vs_control;
                let mut out = Vec::new();
                if ab.state >= crate::detect::VerdictState::Warn {
                    out.push((d.deployment.clone(), m.metric.clone(), ab.state.as_str().to_string()));
                }
                if let Some(a) = m.self_baseline.as_ref().filter(|a| a.state >= crate::detect::VerdictState::Warn) {
                    out.push((d.deployment.clone(), m.metric.clone(), a.state.as_str().to_string()));
                }
                out
            })
            .collect();
        standing.sort();
        prop_assert_eq!(again, standing);
        for (partition, e) in &all[split..] {
            resumed.process(*partition, Some(e));
        }
        prop_assert_eq!(state(&mut resumed), state(&mut whole));
    }
}
