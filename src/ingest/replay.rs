//! The replay source: JSON-lines events from a file or stdin through the same pipeline.
//!
//! Replay is how a recorded stream is re-decided offline: because state runs on event time,
//! the same input always yields the same state, whether read whole or in chunks. Each line is
//! one message; rejected lines are counted (with their line number at debug level, never their
//! text). This module must not know about Kafka.

use std::io::{BufRead, Write};

use serde::Serialize;

use super::IngestError;
use crate::pipeline::{Outcome, Pipeline, Totals};

/// What a replay consumed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Lines read (blank lines excluded).
    pub lines: u64,
    /// Events applied.
    pub applied: u64,
    /// Events rejected.
    pub rejected: u64,
}

/// Feeds every line of `input` to `pipeline`, then writes one JSON line per cohort to `out`.
pub fn replay(
    pipeline: &mut Pipeline,
    mut input: impl BufRead,
    mut out: impl Write,
) -> Result<ReplaySummary, IngestError> {
    let start: Totals = pipeline.totals();
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
    }
    let snapshot = pipeline.publish();
    for cohort in &snapshot.cohorts {
        serde_json::to_writer(&mut out, cohort).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let end = pipeline.totals();
    Ok(ReplaySummary {
        lines,
        applied: end.applied - start.applied,
        rejected: end.rejected - start.rejected,
    })
}
