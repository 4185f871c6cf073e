//! The README's metrics reference checked against the exposition: every `driftd_*` family
//! exported is documented with its type and label names, and every documented one is exported.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::tests::{cohort, config, publish_all, samples, snapshot, verdict};
use super::{cohort_label_names, Metrics};
use crate::contain::latch::Op;
use crate::detect::DeploymentView;

/// A Metrics with at least one series in every family.
fn every_family() -> Metrics {
    let m = Metrics::new(&config());
    publish_all(
        &m,
        snapshot(vec![cohort("svc", "v1")]),
        vec![DeploymentView::of(verdict(Some(0.03), Some(0.2)))],
    );
    m.set_contained("svc", true);
    m.count_action(
        "flagd",
        Op::Contain,
        "success",
        Some(Duration::from_millis(4)),
    );
    m.set_consumer_lags("events", &[(0, 5)]);
    m.set_partition_stalled("events", 0, Some(false));
    m
}

/// Each `driftd_*` family of the exposition: type and label names.
fn exported(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE driftd_") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(
                format!("driftd_{name}"),
                (kind.to_string(), BTreeSet::new()),
            );
        }
    }
    for line in samples(text) {
        let Some((head, _)) = line.split_once('{') else {
            continue;
        };
        let family = families
            .keys()
            .find(|f| {
                head == f.as_str()
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| head == format!("{f}{s}"))
            })
            .cloned();
        let Some(family) = family else { continue };
        let body = line.split_once('{').unwrap().1;
        let labels = families.get_mut(&family).unwrap();
        for pair in body.split("\",") {
            if let Some((k, _)) = pair.split_once('=') {
                if k != "le" {
                    labels.1.insert(k.to_string());
                }
            }
        }
    }
    families
}

/// The README's metrics reference rows: name → (type, label names). The word `cohort` in the
/// labels column stands for the cohort labels.
fn documented(readme: &str, cohort: &[String]) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let section = readme
        .split("\n## Metrics reference\n")
        .nth(1)
        .expect("README has a `## Metrics reference` section");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `driftd_")) {
        // `| name | type | labels | meaning |`; only the meaning may hold an escaped `\|`.
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`');
        let kind = cells[2];
        let mut labels: BTreeSet<String> = cells[3]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        if cells[3].split([',', ' ']).any(|w| w == "cohort") {
            labels.extend(cohort.iter().cloned());
        }
        assert!(
            rows.insert(name.to_string(), (kind.to_string(), labels))
                .is_none(),
            "{name} is documented twice"
        );
    }
    rows
}

#[test]
fn the_readme_metrics_reference_matches_the_exposition() {
    let text = every_family().render();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md readable");
    let cohort = cohort_label_names(&config().cohorts.segment_keys);
    let exported = exported(&text);
    let documented = documented(&readme, &cohort);
    let undocumented: Vec<&String> = exported
        .keys()
        .filter(|n| !documented.contains_key(*n))
        .collect();
    let not_exported: Vec<&String> = documented
        .keys()
        .filter(|n| !exported.contains_key(*n))
        .collect();
    assert!(
        undocumented.is_empty() && not_exported.is_empty(),
        "exported but not in the README: {undocumented:?}; in the README but not exported: {not_exported:?}"
    );
    let differ: Vec<String> = exported
        .iter()
        .filter(|(n, e)| documented[*n] != **e)
        .map(|(n, e)| format!("{n}: exported {e:?}, README {:?}", documented[n]))
        .collect();
    assert!(
        differ.is_empty(),
        "type or labels differ:\n{}",
        differ.join("\n")
    );
}
