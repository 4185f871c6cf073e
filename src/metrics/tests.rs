//! The exposition's conventions, and the README's metrics reference checked against it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::config::{ContainmentConfig, MetricKind, TargetConfig};
use crate::contain::latch::Op;
use crate::detect::{DeploymentView, Verdict};
use crate::event::Arm;
use crate::state::{CohortView, EwmaStats, MetricView, Quantiles, Snapshot, WindowStats};

/// A config with a segment key and two action targets.
pub(super) fn config() -> Config {
    let mut c = Config::default();
    c.cohorts.segment_keys = vec!["locale".into(), "channel".into()];
    c.containment.targets = vec![
        TargetConfig::Flagd {
            name: "flags".into(),
            path: PathBuf::from("flags.json"),
            flag: "model".into(),
            safe_variant: "stable".into(),
        },
        TargetConfig::Alertmanager {
            name: "am".into(),
            url: Some("http://127.0.0.1:9093".into()),
            urls: Vec::new(),
            basic_auth: None,
            bearer_token: None,
            tls: None,
        },
    ];
    c
}

fn window(n: u64, value: Option<f64>, quantiles: Option<Quantiles>) -> WindowStats {
    WindowStats {
        n,
        value,
        stddev: None,
        quantiles,
    }
}

/// One cohort with a rate, a score and a tail metric; its recent window is empty.
pub(super) fn cohort(deployment: &str, version: &str) -> CohortView {
    let metric = |name: &str, kind, value, quantiles| MetricView {
        name: name.into(),
        kind,
        window: window(40, Some(value), quantiles),
        recent: window(0, None, None),
        ewma: EwmaStats {
            value: Some(value),
            stddev: None,
            weight: 40.0,
        },
    };
    CohortView {
        deployment: deployment.into(),
        model_version: version.into(),
        arm: Arm::Canary,
        segment: vec![("locale".into(), "en-GB".into())],
        overflow: false,
        events_total: 40,
        last_event_at: "2026-11-29T05:00:00.000Z".into(),
        metrics: vec![
            metric("refusal", MetricKind::Rate, 0.1, None),
            metric(
                "tone",
                MetricKind::Score,
                0.25,
                Some(Quantiles {
                    p50: 0.2,
                    p90: 0.6,
                    p99: 0.9,
                }),
            ),
            metric("tone_tail", MetricKind::Tail, 0.05, None),
        ],
    }
}

/// Hands `m` a publication of `cohorts` (no deployments).
pub(super) fn publish(m: &Metrics, cohorts: Snapshot) {
    publish_all(m, cohorts, Vec::new());
}

/// Hands `m` a publication of `cohorts` and `deployments`.
pub(super) fn publish_all(m: &Metrics, cohorts: Snapshot, deployments: Vec<DeploymentView>) {
    m.publish(std::sync::Arc::new(crate::pipeline::Published {
        cohorts,
        deployments,
        trajectories: Default::default(),
    }));
}

pub(super) fn snapshot(cohorts: Vec<CohortView>) -> Snapshot {
    Snapshot {
        watermark: None,
        watermark_ms: Some(1_800_000_000_000),
        window_seconds: 3600,
        recent_seconds: 300,
        cohorts,
    }
}

pub(super) fn verdict(estimate: Option<f64>, p_value: Option<f64>) -> Verdict {
    Verdict {
        deployment: "svc".into(),
        model_version: "v2".into(),
        metric: "refusal".into(),
        source: Source::CanaryVsControl,
        state: VerdictState::Pass,
        at: "2026-11-29T05:00:00.000Z".into(),
        events_seen: 80,
        n_canary: 40,
        n_control: 40,
        canary_value: None,
        control_value: None,
        estimate,
        ci_low: estimate.map(|e| e - 0.1),
        ci_high: None,
        p_value,
        statistic: 0.0,
        threshold: 5.0,
        min_effect: 0.02,
        alpha: None,
        arm: None,
        segment: None,
        reference: None,
    }
}

/// The sample lines of the exposition (no comments).
pub(super) fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

/// The label pairs of `body` (`k="v",…`), in any order.
fn pairs(body: &str) -> BTreeSet<(String, String)> {
    body.split("\",")
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

/// Whether a sample of `name` with exactly `labels` (`k="v",…`, any order) has `value`.
fn has(text: &str, name: &str, labels: &str, value: &str) -> bool {
    let want = pairs(labels);
    samples(text).into_iter().any(|line| {
        let (head, v) = line.rsplit_once(' ').unwrap();
        let (n, body) = head.split_once('{').unwrap_or((head, "}"));
        n == name && v == value && pairs(body.trim_end_matches('}')) == want
    })
}

/// How many samples of `name` carry all of `labels` (`k="v",…`).
fn count(text: &str, name: &str, labels: &str) -> usize {
    let want = pairs(labels);
    samples(text)
        .into_iter()
        .filter(|line| {
            let head = line.rsplit_once(' ').unwrap().0;
            let (n, body) = head.split_once('{').unwrap_or((head, "}"));
            n == name && want.is_subset(&pairs(body.trim_end_matches('}')))
        })
        .count()
}

#[test]
fn every_counter_with_known_label_values_is_exported_at_zero_from_start() {
    let text = Metrics::new(&config()).render();
    let mut expected: Vec<(&str, String)> = vec![
        ("driftd_events_total", r#"outcome="applied""#.into()),
        ("driftd_events_total", r#"outcome="rejected""#.into()),
        ("driftd_dead_letters_total", r#"outcome="delivered""#.into()),
        ("driftd_dead_letters_total", r#"outcome="failed""#.into()),
        ("driftd_offset_commits_total", r#"outcome="success""#.into()),
        ("driftd_offset_commits_total", r#"outcome="failure""#.into()),
        ("driftd_stale_changes_total", r#"kind="verdict""#.into()),
        ("driftd_stale_changes_total", r#"kind="signal""#.into()),
    ];
    for r in Reason::ALL {
        expected.push((
            "driftd_events_rejected_total",
            format!(r#"reason="{}""#, r.as_str()),
        ));
    }
    for k in PiiKind::ALL {
        expected.push((
            "driftd_pii_detections_total",
            format!(r#"kind="{}""#, k.as_str()),
        ));
    }
    for o in ["success", "failure", "restart_required"] {
        expected.push(("driftd_config_reloads_total", format!(r#"outcome="{o}""#)));
    }
    for t in TASKS {
        expected.push(("driftd_task_failures_total", format!(r#"task="{t}""#)));
    }
    for r in SNAPSHOT_FAILURES {
        expected.push(("driftd_snapshot_failures_total", format!(r#"reason="{r}""#)));
    }
    for k in SignalKind::ALL {
        expected.push(("driftd_signals_total", format!(r#"kind="{}""#, k.as_str())));
    }
    for s in Source::ALL {
        for v in VerdictState::ALL {
            expected.push((
                "driftd_verdict_changes_total",
                format!(r#"source="{}",state="{}""#, s.as_str(), v.as_str()),
            ));
        }
    }
    for p in ["flagd", "alertmanager"] {
        for o in ACTION_OUTCOMES {
            expected.push((
                "driftd_actions_total",
                format!(r#"provider="{p}",outcome="{o}""#),
            ));
        }
    }
    for r in KAFKA_BLOCKS {
        expected.push(("driftd_kafka_blocked", format!(r#"reason="{r}""#)));
    }
    let missing: Vec<String> = expected
        .iter()
        .filter(|(name, labels)| !has(&text, name, labels, "0"))
        .map(|(name, labels)| format!("{name}{{{labels}}}"))
        .collect();
    assert!(missing.is_empty(), "not at 0 from start: {missing:#?}");
    for plain in [
        "driftd_events_overflow_total",
        "driftd_events_misrouted_total",
        "driftd_cohorts_evicted_total",
        "driftd_snapshots_written_total",
        "driftd_snapshot_restores_total",
        "driftd_events_skipped_total",
    ] {
        assert!(has(&text, plain, "", "0"), "{plain} at 0 from start");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn process_series_are_exported() {
    let text = Metrics::new(&Config::default()).render();
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing from:\n{text}"
        );
    }
}

#[test]
fn rates_and_score_means_have_a_family_each_and_an_empty_window_has_no_series() {
    let m = Metrics::new(&config());
    publish(&m, snapshot(vec![cohort("svc", "v1")]));
    let text = m.render();
    let key = r#"deployment="svc",model_version="v1",arm="canary",segment_locale="en-GB",segment_channel="""#;
    for (name, metric, value) in [
        ("driftd_cohort_window_rate", "refusal", "0.1"),
        ("driftd_cohort_window_rate", "tone_tail", "0.05"),
        ("driftd_cohort_window_mean", "tone", "0.25"),
    ] {
        assert!(
            has(
                &text,
                name,
                &format!(r#"{key},metric="{metric}",window="span""#),
                value
            ),
            "{name} {metric} in:\n{text}"
        );
    }
    assert!(has(
        &text,
        "driftd_cohort_baseline_mean",
        &format!(r#"{key},metric="tone""#),
        "0.25"
    ));
    assert!(has(
        &text,
        "driftd_cohort_baseline_rate",
        &format!(r#"{key},metric="refusal""#),
        "0.1"
    ));
    assert!(has(
        &text,
        "driftd_cohort_window_quantile",
        &format!(r#"{key},metric="tone",q="0.9""#),
        "0.6"
    ));
    // A name has one meaning: no score in the rate family, no rate in the mean family.
    assert_eq!(
        count(&text, "driftd_cohort_window_rate", r#"metric="tone""#),
        0
    );
    assert_eq!(
        count(&text, "driftd_cohort_baseline_rate", r#"metric="tone""#),
        0
    );
    assert_eq!(
        count(&text, "driftd_cohort_window_mean", r#"metric="refusal""#),
        0
    );
    assert_eq!(
        count(
            &text,
            "driftd_cohort_baseline_mean",
            r#"metric="tone_tail""#
        ),
        0
    );
    // The tail's span window only: its recent window is empty.
    assert_eq!(
        count(&text, "driftd_cohort_window_rate", r#"metric="tone_tail""#),
        1
    );
    // The empty recent window: its count is 0, its rate and mean absent.
    assert!(has(
        &text,
        "driftd_cohort_window_events",
        &format!(r#"{key},metric="tone",window="recent""#),
        "0"
    ));
    let recent: Vec<&str> = samples(&text)
        .into_iter()
        .filter(|l| {
            l.contains(r#"window="recent""#) && !l.starts_with("driftd_cohort_window_events")
        })
        .collect();
    assert_eq!(recent, Vec::<&str>::new());
    assert!(!text.contains("NaN"), "{text}");

    // The window empties: its value series go, its quantiles too.
    let mut emptied = cohort("svc", "v1");
    for metric in &mut emptied.metrics {
        metric.window = window(0, None, None);
    }
    publish(&m, snapshot(vec![emptied]));
    let text = m.render();
    for name in [
        "driftd_cohort_window_rate{",
        "driftd_cohort_window_mean{",
        "driftd_cohort_window_quantile{",
    ] {
        assert!(
            !text.contains(name),
            "{name} of an empty window in:\n{text}"
        );
    }
    assert!(!text.contains("NaN"), "{text}");
}

#[test]
fn a_verdict_without_data_has_no_difference_or_p_value_series() {
    let m = Metrics::new(&config());
    publish_all(
        &m,
        snapshot(Vec::new()),
        vec![DeploymentView::of(verdict(Some(0.03), Some(0.2)))],
    );
    let text = m.render();
    let labels = r#"deployment="svc",metric="refusal""#;
    assert!(has(&text, "driftd_verdict_p_value", labels, "0.2"));
    assert!(has(
        &text,
        "driftd_verdict_difference",
        &format!(r#"{labels},bound="estimate""#),
        "0.03"
    ));
    // ci_high is unbounded: absent, never +Inf or NaN.
    assert!(!text.contains(r#"bound="ci_high""#), "{text}");

    // A new canary version's test before its first events: the retired one's numbers go.
    publish_all(
        &m,
        snapshot(Vec::new()),
        vec![DeploymentView::of(verdict(None, None))],
    );
    let text = m.render();
    assert!(!text.contains("driftd_verdict_p_value{"), "{text}");
    assert!(!text.contains("driftd_verdict_difference{"), "{text}");
    assert!(has(
        &text,
        "driftd_verdict_events",
        &format!(r#"{labels},arm="canary""#),
        "40"
    ));
    assert!(!text.contains("NaN"), "{text}");
}

#[test]
fn each_segment_key_is_a_label_and_an_absent_value_is_empty() {
    let m = Metrics::new(&config());
    let mut c = cohort("svc", "v1");
    c.segment = vec![("channel".into(), "web".into())];
    publish(&m, snapshot(vec![c]));
    assert!(has(
        &m.render(),
        "driftd_cohort_events_total",
        r#"deployment="svc",model_version="v1",arm="canary",segment_locale="",segment_channel="web""#,
        "40"
    ));
    assert!(!m.render().contains("segment="));
}

#[test]
fn an_evicted_cohort_takes_every_series_with_it() {
    let m = Metrics::new(&config());
    publish(&m, snapshot(vec![cohort("svc", "v1"), cohort("svc", "v2")]));
    // The next publication after the eviction no longer holds it.
    publish(&m, snapshot(vec![cohort("svc", "v2")]));
    let text = m.render();
    let left: Vec<&str> = samples(&text)
        .into_iter()
        .filter(|l| l.contains(r#"model_version="v1""#))
        .collect();
    assert_eq!(left, Vec::<&str>::new());
    assert!(text.contains(r#"model_version="v2""#));
}

/// Label values come from events: quotes, backslashes and line breaks are escaped as the text
/// format requires, so one cohort cannot break the exposition.
#[test]
fn cohort_label_values_are_escaped() {
    let m = Metrics::new(&config());
    publish(&m, snapshot(vec![cohort("a\\b\"c\nd", "v1")]));
    let text = m.render();
    assert!(
        text.contains(r#"driftd_cohort_events_total{deployment="a\\b\"c\nd",model_version="v1""#),
        "{text}"
    );
}

#[test]
fn a_revoked_partition_keeps_no_lag_or_stall_series() {
    let m = Metrics::new(&Config::default());
    m.set_consumer_lags("events", &[(0, 5), (1, 7), (2, 0)]);
    for p in 0..3 {
        m.set_partition_stalled("events", p, None);
    }
    m.set_partition_stalled("events", 1, Some(true));
    let text = m.render();
    assert!(has(
        &text,
        "driftd_partition_stalled",
        r#"topic="events",partition="0""#,
        "0"
    ));
    assert!(has(
        &text,
        "driftd_partition_stalled",
        r#"topic="events",partition="1""#,
        "1"
    ));
    assert!(has(
        &text,
        "driftd_consumer_lag",
        r#"topic="events",partition="1""#,
        "7"
    ));

    m.forget_partition("events", 1);
    let text = m.render();
    assert!(!text.contains(r#"partition="1""#), "{text}");

    // A statistics report without partition 2 (it moved to another consumer) drops its lag.
    m.set_consumer_lags("events", &[(0, 3)]);
    let text = m.render();
    assert!(has(
        &text,
        "driftd_consumer_lag",
        r#"topic="events",partition="0""#,
        "3"
    ));
    assert_eq!(
        count(&text, "driftd_consumer_lag", r#"partition="2""#),
        0,
        "{text}"
    );
}

#[test]
fn action_duration_buckets_cover_the_longest_retry_and_keep_one_ladder() {
    let top = |c: &ContainmentConfig| *contain::action_buckets(c).last().unwrap();
    let mut c = ContainmentConfig::default();
    assert!(top(&c) >= 65.0, "default retry_for 60s + action_timeout 5s");
    c.retry_for = Duration::from_secs(3600);
    let long = contain::action_buckets(&c);
    assert!(*long.last().unwrap() >= 3605.0);
    let default = contain::action_buckets(&ContainmentConfig::default());
    assert_eq!(
        long[..default.len()],
        default[..],
        "one ladder for every config"
    );

    let m = Metrics::new(&config());
    m.count_action(
        "flagd",
        Op::Contain,
        "success",
        Some(Duration::from_millis(4)),
    );
    m.count_action("alertmanager", Op::Resolve, "dry_run", None);
    let text = m.render();
    assert!(has(
        &text,
        "driftd_action_duration_seconds_count",
        r#"provider="flagd",op="contain""#,
        "1"
    ));
    assert!(has(
        &text,
        "driftd_actions_total",
        r#"provider="alertmanager",outcome="dry_run""#,
        "1"
    ));
    assert!(
        !text.contains(r#"op="resolve""#),
        "no duration for a dry run"
    );
}
