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

/// Issue 7, item 4: one event dated in the year 9999, or a producer whose clock runs ahead,
/// must not make everything else `late`.
mod event_time {
    use super::*;

    fn live() -> Pipeline {
        Pipeline::new(&Config::default(), Arc::new(Metrics::new("t")), true).0
    }

    fn at(g: &mut Generator, t_ms: i64) -> Vec<u8> {
        g.next_event(t_ms).payload
    }

    fn generator() -> Generator {
        Generator::new(
            TrafficModel {
                deployments: 2,
                seed: 3,
                ..TrafficModel::default()
            },
            None,
        )
    }

    #[test]
    fn a_future_dated_event_is_rejected_as_future_and_every_other_event_applied() {
        let mut p = live();
        let mut g = generator();
        let now = crate::clock::wall_ms();
        let mut outcomes = Vec::new();
        for i in 0..200i64 {
            outcomes.push(p.process(0, Some(&at(&mut g, now - 60_000 + i * 100))));
            if i == 50 {
                let year_9999 = at(&mut g, 253_402_300_799_000);
                assert_eq!(
                    p.process(0, Some(&year_9999)),
                    Outcome::Rejected(Rejection {
                        reason: Reason::Future,
                        field: "emitted_at",
                        pii: None
                    })
                );
                let ten_minutes_ahead = at(&mut g, now + 600_000);
                assert!(matches!(
                    p.process(0, Some(&ten_minutes_ahead)),
                    Outcome::Rejected(Rejection {
                        reason: Reason::Future,
                        ..
                    })
                ));
            }
        }
        assert!(
            outcomes.iter().all(|o| *o == Outcome::Applied),
            "{outcomes:?}"
        );
        assert_eq!(
            p.totals(),
            Totals {
                applied: 200,
                rejected: 2
            }
        );
        let wm = p.table().watermark_ms().unwrap();
        assert!(
            wm < now,
            "the clock never saw the future events: {wm} vs {now}"
        );
    }

    #[test]
    fn a_producer_running_ahead_on_one_partition_makes_no_other_partitions_event_late() {
        let mut p = live();
        let mut g = generator();
        let now = crate::clock::wall_ms();
        // Partition 1's producer runs 4 minutes ahead: within the skew, so admitted. With the
        // default 2-minute lateness, one clock for the whole stream would make every event of
        // partition 0 late from here on.
        for i in 0..100i64 {
            assert_eq!(
                p.process(1, Some(&at(&mut g, now + 240_000 + i))),
                Outcome::Applied
            );
        }
        for i in 0..100i64 {
            assert_eq!(
                p.process(0, Some(&at(&mut g, now - 1_000 + i))),
                Outcome::Applied
            );
        }
        // Each partition still judges its own late events.
        assert!(matches!(
            p.process(0, Some(&at(&mut g, now - 1_000 - 120_001))),
            Outcome::Rejected(Rejection {
                reason: Reason::Late,
                ..
            })
        ));
        assert_eq!(
            p.table().watermark_ms(),
            Some(now - 1_000 + 99),
            "the stream's watermark is the older active partition's clock"
        );
    }

    #[test]
    fn replay_rejects_a_lone_outlier_but_crosses_a_gap_in_the_recording() {
        let mut p = pipeline();
        let mut g = generator();
        let t0 = 1_800_000_000_000;
        assert_eq!(p.process(0, Some(&at(&mut g, t0))), Outcome::Applied);
        let outlier = p.process(0, Some(&at(&mut g, 253_402_300_799_000)));
        assert!(matches!(outlier, Outcome::Rejected(r) if r.reason == Reason::Future));
        assert_eq!(
            p.process(0, Some(&at(&mut g, t0 + 1_000))),
            Outcome::Applied
        );
        // An hour with no traffic: the first event after it is refused, the rest applied.
        let after = p.process(0, Some(&at(&mut g, t0 + 3_600_000)));
        assert!(matches!(after, Outcome::Rejected(r) if r.reason == Reason::Future));
        for i in 1..50 {
            assert_eq!(
                p.process(0, Some(&at(&mut g, t0 + 3_600_000 + i))),
                Outcome::Applied
            );
        }
    }
}
