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
    t.apply(event("a", 1_000)).unwrap();
    let (part, indices) = t.export(|_| true);
    assert_eq!(indices, [0]);

    let mut other = Config::default();
    other.windows.span = Duration::from_secs(1800);
    let mut t2 = table(&other);
    assert_eq!(
        t2.import(part.clone()).unwrap_err(),
        PartError::Shape {
            index: 0,
            what: "window buckets"
        }
    );
    assert!(t2.is_empty(), "nothing was added");

    let mut fewer = Config::default();
    fewer.metrics.pop();
    assert!(matches!(
        table(&fewer).check(&part),
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
    t.apply(event("a", 1_000)).unwrap();
    t.apply(event("b", 2_000)).unwrap(); // into the overflow cohort
    assert_eq!(t.len(), 2);
    let (part, indices) = t.export(|_| true);
    assert_eq!(indices, [0], "the overflow cohort stays out");
    assert_eq!(part.keys().next().unwrap().deployment, "a");

    let mut fresh = table(&Config::default());
    fresh.apply(event("a", 5_000)).unwrap();
    assert_eq!(fresh.import(part.clone()).unwrap(), [None], "kept as it is");
    assert_eq!(fresh.watermark_ms(), Some(5_000));

    // A full table cannot take more.
    assert_eq!(t.import(part).unwrap_err(), PartError::TableFull);
}
