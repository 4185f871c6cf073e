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
    let (mut p, _) = Pipeline::new(&config, Arc::new(Metrics::new(&config)), false);
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
        Pipeline::new(
            &Config::default(),
            Arc::new(Metrics::new(&Config::default())),
            true,
        )
        .0
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

/// A message keyed by something other than its deployment is applied all the same, and counted.
#[test]
fn a_misrouted_event_is_applied_and_counted_and_a_keyless_one_too() {
    let config = Config::default();
    let metrics = Arc::new(Metrics::new(&config));
    let (mut keyed, _) = Pipeline::new(&config, metrics.clone(), false);
    let (mut plain, _) = Pipeline::new(&config, Arc::new(Metrics::new(&config)), false);
    let mut g = Generator::new(TrafficModel::default(), Some(30));
    let mut misrouted = 0;
    for i in 0..30u64 {
        let e = g.next_event(1_800_000_000_000 + i as i64 * 20);
        let key = match i % 3 {
            0 => Some(e.key.as_bytes().to_vec()),
            1 => Some(b"another-deployment".to_vec()),
            _ => None,
        };
        let want = match i % 3 {
            0 => Outcome::Applied,
            _ => Outcome::Misrouted,
        };
        misrouted += u64::from(want == Outcome::Misrouted);
        assert_eq!(
            keyed.process_keyed(0, key.as_deref(), Some(&e.payload)),
            want
        );
        assert_eq!(plain.process(0, Some(&e.payload)), Outcome::Applied);
    }
    assert_eq!(metrics.events_misrouted.get(), misrouted);
    assert_eq!(keyed.totals().applied, 30);
    assert_eq!(
        state(&mut keyed),
        state(&mut plain),
        "the same state either way"
    );
}

/// Issue 7, item 5: cohorts that come and go, and a full table that is never silent.
mod cohorts_come_and_go {
    use super::*;
    use crate::detect::SignalKind;

    fn payload(i: u64, t_ms: i64, deployment: &str, version: &str, arm: &str) -> Vec<u8> {
        format!(
            r#"{{"schema_version":1,"event_id":"e{i}","emitted_at":"{}","deployment":"{deployment}","model_version":"{version}","arm":"{arm}","signals":{{"tone":0.2,"escalated":false,"refused":false}}}}"#,
            crate::event::format_rfc3339_ms(t_ms)
        )
        .into_bytes()
    }

    fn overflow_signals(changes: &[Change]) -> Vec<(String, String, bool)> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::Signal(s) if s.kind == SignalKind::CohortOverflow => {
                    Some((s.deployment.clone(), s.model_version.clone(), s.active))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_canary_version_beyond_the_cap_raises_cohort_overflow_until_idle_cohorts_make_room() {
        let mut config = Config::default();
        config.cohorts.max_cohorts = 4;
        let metrics = Arc::new(Metrics::new(&config));
        let (mut p, _) = Pipeline::new(&config, metrics.clone(), false);
        p.collect_changes(true);
        let t0 = 1_800_000_000_000;
        let mut i = 0;
        let mut send = |p: &mut Pipeline, t: i64, dep: &str, version: &str, arm: &str| {
            i += 1;
            assert_eq!(
                p.process(0, Some(&payload(i, t, dep, version, arm))),
                Outcome::Applied
            );
        };
        for k in 0..50 {
            send(&mut p, t0 + k, "svc", "v1", "canary");
            send(&mut p, t0 + k, "svc", "base", "control");
            send(&mut p, t0 + k, "other", "v1", "canary");
            send(&mut p, t0 + k, "other", "base", "control");
        }
        p.publish();
        assert!(metrics.render().contains("deployment=\"other\""));
        assert!(overflow_signals(&p.take_changes()).is_empty());

        // The table is full: svc's new canary version is folded — and on-call hears it, once.
        for k in 0..20 {
            send(&mut p, t0 + 1_000 + k, "svc", "v2", "canary");
            send(&mut p, t0 + 1_000 + k, "svc", "base", "control");
        }
        assert_eq!(
            overflow_signals(&p.take_changes()),
            [("svc".to_string(), "v2".to_string(), true)]
        );
        assert_eq!(metrics.events_overflow.get(), 20);

        // `other` and svc's retired v1 go quiet; two hours on they are evicted, with their
        // series, and v2 gets a cohort of its own: the signal clears and v2 is judged.
        for k in 0..200 {
            let t = t0 + 2_000 + k * 40_000;
            send(&mut p, t, "svc", "v2", "canary");
            send(&mut p, t, "svc", "base", "control");
        }
        let changes = p.take_changes();
        assert_eq!(
            overflow_signals(&changes),
            [("svc".to_string(), "v2".to_string(), false)]
        );
        let published = p.publish();
        assert_eq!(metrics.cohorts_evicted.get(), 3);
        let text = metrics.render();
        // Deployment-level series (verdicts, signals) stay: deployments are not evicted.
        let cohort_series = |needle: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("driftd_cohort_") && l.contains(needle))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(cohort_series("deployment=\"other\""), Vec::<String>::new());
        assert_eq!(cohort_series("model_version=\"v1\""), Vec::<String>::new());
        assert!(!cohort_series("model_version=\"v2\"").is_empty());
        let svc = published
            .deployments
            .iter()
            .find(|d| d.deployment == "svc")
            .unwrap();
        assert_eq!(svc.canary_version.as_deref(), Some("v2"));
        assert!(
            svc.metrics[0].canary_vs_control.n_canary > 0,
            "v2 is being judged"
        );
        let cohorts: Vec<_> = published
            .cohorts
            .cohorts
            .iter()
            .map(|c| format!("{}/{}", c.deployment, c.model_version))
            .collect();
        assert!(cohorts.contains(&"svc/v2".to_string()), "{cohorts:?}");
    }
}

/// The on-call page's trajectories follow event time only: the same events give the same
/// trajectory however often the snapshot is published (a daemon's wall-clock cadence), so a
/// replay draws what the daemon drew.
#[test]
fn the_same_events_give_the_same_trajectories_whatever_the_publication_cadence() {
    let input = events(6_000, 11);
    let (mut often, mut once) = (pipeline(), pipeline());
    for (i, (partition, payload)) in input.iter().enumerate() {
        often.process(*partition, Some(payload));
        once.process(*partition, Some(payload));
        if i % 7 == 0 {
            often.publish();
        }
    }
    let drawn = |p: &mut Pipeline| {
        let published = p.publish();
        let names: Vec<String> = published
            .deployments
            .iter()
            .map(|d| d.deployment.clone())
            .collect();
        let t = &published.trajectories;
        assert_eq!(names.len(), 4);
        assert!(names.iter().all(|n| t.of(n).len() == 4), "every metric");
        format!("{:?}", t.export(names.iter().map(String::as_str)))
    };
    assert_eq!(drawn(&mut often), drawn(&mut once));
}
