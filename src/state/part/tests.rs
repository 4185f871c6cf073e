use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::event::{Arm, Decoder, Event};

fn table(config: &Config) -> CohortTable {
    CohortTable::new(config, Decoder::new(config).signals())
}

fn event(dep: &str, t: i64) -> Event {
    Event {
        emitted_at_ms: t,
        deployment: dep.into(),
        model_version: "v1".into(),
        arm: Arm::Canary,
        segment: vec![],
        signals: vec![1.0, 0.0, 0.25],
    }
}

#[test]
fn a_part_from_another_window_configuration_is_refused_whole() {
    let config = Config::default();
    let mut t = table(&config);
    t.apply(0, event("a", 1_000)).unwrap();
    let (part, indices) = t.export(0);
    assert_eq!(indices, [0]);

    let mut other = Config::default();
    other.windows.span = Duration::from_secs(1800);
    let mut t2 = table(&other);
    assert_eq!(
        t2.import(0, part.clone()).unwrap_err(),
        PartError::Shape {
            index: 0,
            what: "window buckets"
        }
    );
    assert!(t2.is_empty(), "nothing was added");

    let mut fewer = Config::default();
    fewer.metrics.pop();
    assert!(matches!(
        table(&fewer).check(&mut part.clone()),
        Err(PartError::Shape {
            what: "metrics",
            ..
        })
    ));
}

#[test]
fn a_cohort_already_in_memory_is_kept_and_the_overflow_cohort_is_never_exported() {
    let mut config = Config::default();
    config.cohorts.max_cohorts = 1;
    let mut t = table(&config);
    t.apply(0, event("a", 1_000)).unwrap();
    t.apply(0, event("b", 2_000)).unwrap(); // into the overflow cohort
    assert_eq!(t.len(), 2);
    let (part, indices) = t.export(0);
    assert_eq!(indices, [0], "the overflow cohort stays out");
    assert_eq!(part.keys().next().unwrap().deployment, "a");

    let mut fresh = table(&Config::default());
    fresh.apply(0, event("a", 5_000)).unwrap();
    assert_eq!(
        fresh.import(0, part.clone()).unwrap(),
        [None],
        "kept as it is"
    );
    assert_eq!(fresh.watermark_ms(), Some(5_000));

    // A full table cannot take more.
    assert_eq!(t.import(0, part).unwrap_err(), PartError::TableFull);
}

#[test]
fn a_part_holds_its_own_partitions_cohorts_and_clock() {
    let config = Config::default();
    let mut t = table(&config);
    t.apply(0, event("a", 1_000)).unwrap();
    t.apply(1, event("b", 900_000)).unwrap();
    let (part, indices) = t.export(0);
    assert_eq!(indices, [0]);
    assert_eq!(
        part.keys()
            .map(|k| k.deployment.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );

    let mut fresh = table(&config);
    assert_eq!(fresh.import(2, part).unwrap(), [Some(0)]);
    assert_eq!(
        fresh.partition(0),
        2,
        "restored onto the partition it was read from"
    );
    assert_eq!(
        fresh.watermark_ms(),
        Some(1_000),
        "partition 0's clock, not partition 1's"
    );
    // The restored clock judges lateness on that partition only.
    assert!(fresh.apply(2, event("a", 1_000 - 120_001)).is_err());
    assert!(fresh.apply(3, event("c", 1_000 - 120_001)).is_ok());
    assert_eq!(fresh.export(2).1, [0]);
}

/// A partition's cohorts in snapshot format 4 as every driftd before `Columns` derived them:
/// one ring of moments per metric.
#[derive(serde::Serialize, serde::Deserialize)]
struct Format4Part {
    cohorts: Vec<Format4Cohort>,
    watermark_ms: Option<i64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Format4Cohort {
    key: CohortKey,
    events: u64,
    last_event_ms: i64,
    metrics: Vec<Format4Metric>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Format4Metric {
    window: super::super::window::Ring<super::super::window::Moments>,
    distribution: Option<super::super::window::Ring<super::super::distribution::Bins>>,
    ewma: super::super::ewma::Ewma,
}

#[test]
fn cohorts_are_written_and_read_in_the_form_of_snapshot_format_4() {
    let config = Config::default();
    let mut t = table(&config);
    for (i, tone) in [0.25, -0.5, 0.9, -0.95].into_iter().enumerate() {
        let mut e = event(["a", "b"][i % 2], 1_000 + i as i64 * 15_000);
        e.signals = vec![(i % 2) as f64, ((i / 2) % 2) as f64, tone];
        t.apply(0, e).unwrap();
    }
    let (part, _) = t.export(0);
    let bytes = postcard::to_stdvec(&part).unwrap();

    let old: Format4Part = postcard::from_bytes(&bytes).unwrap();
    let window = |cohort: usize, metric: usize| {
        let mut m = super::super::window::Moments::default();
        old.cohorts[cohort].metrics[metric]
            .window
            .fold_last(46_000, 360, &mut m);
        (m.n, m.sum, m.sumsq)
    };
    assert_eq!(window(1, 0), (2, 2.0, 2.0), "b refused twice");
    assert_eq!(window(1, 1), (2, 1.0, 1.0), "b escalated once");
    assert_eq!(window(1, 2), (2, -1.45, 0.25 + 0.9025));
    assert_eq!(window(1, 3), (2, 1.0, 1.0), "one tone of b below -0.5");
    assert_eq!(window(0, 2), (2, 1.15, 0.0625 + 0.81));
    assert_eq!(
        postcard::to_stdvec(&old).unwrap(),
        bytes,
        "the old form writes the same bytes"
    );

    let mut fresh = table(&config);
    fresh
        .import(0, postcard::from_bytes::<CohortsPart>(&bytes).unwrap())
        .unwrap();
    assert_eq!(
        format!("{:?}", fresh.snapshot()),
        format!("{:?}", t.snapshot()),
        "restored as it was"
    );
}

#[test]
fn a_rate_window_whose_sums_are_not_counts_of_ones_is_refused() {
    let config = Config::default();
    let mut t = table(&config);
    t.apply(0, event("a", 1_000)).unwrap();
    let (part, _) = t.export(0);
    let mut old: Format4Part = postcard::from_bytes(&postcard::to_stdvec(&part).unwrap()).unwrap();
    // Refusal, a rate, as if its one event had been 0.5: every ring still agrees on buckets
    // and counts, so it decodes, but no count of 1s holds it.
    let window = &mut old.cohorts[0].metrics[0].window;
    let (width, ids, slots) = window.parts();
    let slots: Vec<_> = slots
        .iter()
        .map(|m| super::super::window::Moments {
            sum: m.sum / 2.0,
            sumsq: m.sumsq / 4.0,
            ..*m
        })
        .collect();
    *window = super::super::window::Ring::from_parts(width, ids.into(), slots.into());
    let bytes = postcard::to_stdvec(&old).unwrap();
    let part: CohortsPart = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(
        table(&config).import(0, part).unwrap_err(),
        PartError::Shape {
            index: 0,
            what: "window values"
        }
    );
}
