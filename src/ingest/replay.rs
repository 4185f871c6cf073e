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

/// Reads the next line into `line` without its leading whitespace, keeping at most `limit + 1`
/// bytes of it and skipping the rest, so a line of any length costs bounded memory. Returns
/// `None` at the end of the input, else whether the line was longer than `limit`.
fn read_line(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut seen = false;
    let mut oversized = false;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(seen.then_some(oversized));
        }
        seen = true;
        let (chunk, end) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let chunk = if line.is_empty() {
            chunk.trim_ascii_start()
        } else {
            chunk
        };
        let room = (limit + 1).saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        oversized |= line.len() > limit;
        let used = end.unwrap_or(buf.len());
        input.consume(used);
        if end.is_some() {
            return Ok(Some(oversized));
        }
    }
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
    while let Some(oversized) = read_line(&mut input, &mut line, pipeline.max_message_bytes())? {
        // An oversized line is handed over as read (one byte past the limit), so the decoder
        // rejects it as `too_large` without parsing a truncated event.
        let payload = if oversized {
            &line[..]
        } else {
            line.trim_ascii()
        };
        if payload.is_empty() {
            continue;
        }
        lines += 1;
        if let Outcome::Rejected(r) = pipeline.process(0, Some(payload)) {
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
        Pipeline::new(config, Arc::new(Metrics::new(config)), false).0
    }

    #[test]
    fn decisions_are_identical_across_runs_and_chunkings() {
        let mut config = Config::default();
        config.detection.self_baseline.warmup_events = 3000;
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

    /// Regression: replay read a line of any length into memory. An oversized line costs at
    /// most the limit, is counted `too_large`, and the next line is read intact.
    #[test]
    fn an_oversized_line_is_bounded_rejected_as_too_large_and_the_next_line_still_read() {
        let limit = 1024;
        let huge = format!("  {{\"pad\":\"{}\"}}\n", "x".repeat(5_000_000));
        let mut input = std::io::Read::chain(huge.as_bytes(), &b"\n   \nnext\n"[..]);
        let mut line = Vec::new();
        assert_eq!(read_line(&mut input, &mut line, limit).unwrap(), Some(true));
        assert_eq!(line.len(), limit + 1);
        assert!(line.capacity() <= 4 * (limit + 1), "{}", line.capacity());
        assert!(line.starts_with(b"{\"pad\""), "leading whitespace skipped");
        assert_eq!(
            read_line(&mut input, &mut line, limit).unwrap(),
            Some(false)
        );
        assert!(line.is_empty());
        assert_eq!(
            read_line(&mut input, &mut line, limit).unwrap(),
            Some(false)
        );
        assert!(line.is_empty());
        assert_eq!(
            read_line(&mut input, &mut line, limit).unwrap(),
            Some(false)
        );
        assert_eq!(line, b"next");
        assert_eq!(read_line(&mut input, &mut line, limit).unwrap(), None);

        let mut config = Config::default();
        config.ingest.max_message_bytes = limit;
        let metrics = Arc::new(Metrics::new(&config));
        let mut p = Pipeline::new(&config, metrics.clone(), false).0;
        let valid = crate::traffic::Generator::new(TrafficModel::default(), None)
            .next_event(1_795_928_400_000)
            .payload;
        let mut events = huge.into_bytes();
        events.extend_from_slice(&valid);
        events.push(b'\n');
        let summary = replay(&mut p, events.as_slice(), std::io::sink()).unwrap();
        assert_eq!(summary.lines, 2);
        assert_eq!(
            summary.events,
            Totals {
                applied: 1,
                rejected: 1
            }
        );
        assert_eq!(metrics.rejected(crate::event::Reason::TooLarge), 1);
    }
}
