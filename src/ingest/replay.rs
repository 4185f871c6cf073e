//! The replay source: JSON-lines events from a file or stdin through the same pipeline.
//!
//! Replay is how a recorded stream is re-decided offline: because state and detection run on
//! event time, the same input always yields the same verdicts, whether read whole or in chunks.
//! Each line is one message; rejected lines are counted (with their line number at debug level,
//! never their text). Output, one JSON object per line: every verdict or signal change as it
//! happens (`"type": "verdict"` / `"signal"`), then every cohort's final statistics
//! (`"type": "cohort"`). This module must not know about Kafka.

use std::io::{BufRead, Write};

use serde::Serialize;

use super::IngestError;
use crate::pipeline::{Outcome, Pipeline, Totals};

/// What a replay consumed: the lines it read and what the pipeline made of them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Lines read (blank lines excluded).
    pub lines: u64,
    /// Events applied and rejected during this replay.
    #[serde(flatten)]
    pub events: Totals,
}

/// A cohort's final statistics as a replay output line.
#[derive(Serialize)]
struct CohortLine<'a> {
    r#type: &'static str,
    #[serde(flatten)]
    cohort: &'a crate::state::CohortView,
}

/// Feeds every line of `input` to `pipeline`, writing verdict and signal changes as they happen
/// and one JSON line per cohort at the end to `out`.
pub fn replay(
    pipeline: &mut Pipeline,
    mut input: impl BufRead,
    mut out: impl Write,
) -> Result<ReplaySummary, IngestError> {
    let start: Totals = pipeline.totals();
    pipeline.collect_changes(true);
    let mut line = Vec::new();
    let mut lines = 0u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        lines += 1;
        if let Outcome::Rejected(r) = pipeline.process(Some(trimmed)) {
            tracing::debug!(
                line = lines,
                reason = r.reason.as_str(),
                field = r.field,
                "event rejected"
            );
        }
        for change in pipeline.take_changes() {
            serde_json::to_writer(&mut out, &change).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
    }
    let published = pipeline.publish();
    for cohort in &published.cohorts.cohorts {
        let line = CohortLine {
            r#type: "cohort",
            cohort,
        };
        serde_json::to_writer(&mut out, &line).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ReplaySummary {
        lines,
        events: pipeline.totals().since(start),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::traffic::{Drift, DriftMetric, TrafficModel};

    fn input() -> Vec<u8> {
        let model = TrafficModel {
            deployments: 2,
            drift: vec![Drift {
                metric: DriftMetric::Refusal,
                to: 0.15,
                at: 0.4,
                deployments: 1,
            }],
            seed: 11,
            ..TrafficModel::default()
        };
        let mut buf = Vec::new();
        crate::traffic::write_lines(model, 30_000, 100.0, 1_795_928_400_000, &mut buf).unwrap();
        buf
    }

    fn change_lines(out: &[u8]) -> Vec<String> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("{\"type\":\"cohort\""))
            .map(str::to_string)
            .collect()
    }

    fn pipeline(config: &Config) -> Pipeline {
        Pipeline::new(config, Arc::new(Metrics::new("test")), false).0
    }

    #[test]
    fn decisions_are_identical_across_runs_and_chunkings() {
        let mut config = Config::default();
        config.detection.self_baseline.warmup = std::time::Duration::from_secs(30);
        let input = input();
        let mut whole = Vec::new();
        let summary = replay(&mut pipeline(&config), input.as_slice(), &mut whole).unwrap();
        assert_eq!(summary.lines, 30_000);
        assert_eq!(summary.events.applied + summary.events.rejected, 30_000);
        assert_eq!(
            serde_json::to_value(&summary).unwrap(),
            serde_json::json!({"lines": 30_000, "applied": summary.events.applied, "rejected": summary.events.rejected}),
            "the summary line keeps its shape"
        );
        let mut again = Vec::new();
        replay(&mut pipeline(&config), input.as_slice(), &mut again).unwrap();
        assert_eq!(whole, again, "same input, same output");

        let cut = input.len() / 3;
        let cut = cut + input[cut..].iter().position(|b| *b == b'\n').unwrap() + 1;
        let mut p = pipeline(&config);
        let (mut first, mut second) = (Vec::new(), Vec::new());
        replay(&mut p, &input[..cut], &mut first).unwrap();
        replay(&mut p, &input[cut..], &mut second).unwrap();
        let mut chunked = change_lines(&first);
        chunked.extend(change_lines(&second));
        assert_eq!(
            chunked,
            change_lines(&whole),
            "chunked input, same decisions"
        );

        let lines = change_lines(&whole);
        let fail = lines
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| {
                v["type"] == "verdict"
                    && v["source"] == "canary_vs_control"
                    && v["metric"] == "refusal"
                    && v["state"] == "fail"
            })
            .expect("the drifting canary fails on refusal");
        for field in [
            "deployment",
            "model_version",
            "metric",
            "state",
            "at",
            "events_seen",
            "n_canary",
            "n_control",
            "estimate",
            "ci_low",
            "ci_high",
            "p_value",
        ] {
            assert!(!fail[field].is_null(), "{field} present: {fail}");
        }
        assert_eq!(fail["deployment"], "support-bot");
    }
}
