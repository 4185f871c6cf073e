//! Reading the audit log a page at a time, at a cost bounded by the page, not the log.
//!
//! Every record carries `seq`, increasing by one per record across rotations, so a page is
//! addressed by sequence number and stays stable while new records arrive and files rotate. A
//! page is found by binary search over byte offsets (records within a file, and files among
//! themselves, are in `seq` order) and read line by line from there, forwards or backwards: a
//! request touches `O(log size + page)` bytes whatever the log holds. Records written before
//! `seq` existed read as `seq` 0: they sort first and are reached by paging backwards.
//!
//! Read-only and tolerant: a line that is not JSON (a torn write after a crash) is skipped, and
//! a file rotated away between two reads only shortens a page.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Which records to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The newest records.
    Latest,
    /// The oldest records with `seq` greater than this (paging forwards, or following).
    After(u64),
    /// The newest records with `seq` less than this (paging backwards).
    Before(u64),
}

/// One page of records, oldest first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Page {
    /// The records.
    pub records: Vec<Value>,
    /// Pass as `after` for the records that follow (the last `seq` on this page, or the cursor
    /// itself when the page is empty); `null` on an empty log.
    pub next_after: Option<u64>,
    /// Pass as `before` for older records; `null` when there are none.
    pub prev_before: Option<u64>,
}

/// The audit files of `current` (`audit.log`), oldest first: `audit.log.keep` … `audit.log.1`,
/// `audit.log`, those that exist.
pub fn files(current: &Path, keep: usize) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..=keep.max(1))
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", current.display())))
        .collect();
    out.push(current.to_path_buf());
    out.retain(|p| p.exists());
    out
}

/// The `seq` of a record line: 0 for a record without one, `None` for a line that is not a
/// record.
fn seq_of(line: &[u8]) -> Option<u64> {
    let v: Value = serde_json::from_slice(line).ok()?;
    Some(v.get("seq").and_then(Value::as_u64).unwrap_or(0))
}

/// The first complete line starting at or after `pos`, with its start and end offsets.
fn line_from(file: &mut File, pos: u64) -> std::io::Result<Option<(u64, u64, Vec<u8>)>> {
    let mut reader = BufReader::new(&mut *file);
    let mut start = pos;
    if pos > 0 {
        // `pos` may fall inside a line: skip to the start of the next one.
        reader.seek(SeekFrom::Start(pos - 1))?;
        let mut skipped = Vec::new();
        let n = reader.read_until(b'\n', &mut skipped)?;
        start = pos - 1 + n as u64;
    } else {
        reader.seek(SeekFrom::Start(0))?;
    }
    let mut line = Vec::new();
    let n = reader.read_until(b'\n', &mut line)?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Ok(None);
    }
    line.pop();
    Ok(Some((start, start + n as u64, line)))
}

/// The offset of the first line whose `seq` is at least `target` (the file's length if none):
/// a binary search over byte offsets, reading one line per probe. Lines that are not records
/// count as `seq` 0.
fn lower_bound(file: &mut File, target: u64) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    // Invariants: every line starting before `lo` has seq < target; the first line starting at
    // or after `hi` has seq >= target (or there is none).
    let (mut lo, mut hi) = (0u64, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match line_from(file, mid)? {
            Some((start, end, line)) if start < hi => {
                if seq_of(&line).unwrap_or(0) < target {
                    lo = end;
                } else {
                    hi = start;
                }
            }
            // No line starts in [mid, hi): the first one at or after mid is the one at hi.
            _ => hi = mid,
        }
    }
    Ok(match line_from(file, lo.min(len))? {
        Some((start, _, _)) => start,
        None => len,
    })
}

/// Up to `want` records from the complete lines ending at or before `end`, oldest first, and
/// whether lines remain before them. Reads backwards in growing chunks, so the cost is the
/// records taken; a torn last line (a crash mid-write) is skipped.
fn lines_before(file: &mut File, end: u64, want: usize) -> std::io::Result<(Vec<Value>, bool)> {
    let mut chunk = 64 * 1024u64;
    loop {
        let start = end.saturating_sub(chunk);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = vec![0; (end - start) as usize];
        file.read_exact(&mut buf)?;
        let mut lines: Vec<&[u8]> = buf.split(|b| *b == b'\n').collect();
        // What follows the last newline is empty, or a torn line: never a record.
        lines.pop();
        // The first piece is a partial line unless the chunk reaches the file's start.
        let from = usize::from(start > 0).min(lines.len());
        let records: Vec<Value> = lines[from..]
            .iter()
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect();
        if records.len() >= want || start == 0 {
            let skip = records.len().saturating_sub(want);
            let more = skip > 0 || start > 0;
            return Ok((records.into_iter().skip(skip).collect(), more));
        }
        chunk *= 4;
    }
}

/// Up to `want` record lines from `pos` on, oldest first.
fn lines_after(file: &mut File, pos: u64, want: usize) -> std::io::Result<Vec<Value>> {
    file.seek(SeekFrom::Start(pos))?;
    let mut out = Vec::new();
    for line in BufReader::new(file).split(b'\n') {
        if out.len() == want {
            break;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(&line?) {
            out.push(v);
        }
    }
    Ok(out)
}

fn seq(v: &Value) -> u64 {
    v.get("seq").and_then(Value::as_u64).unwrap_or(0)
}

/// Reads one page (at most `limit` records) from `files` (oldest first, see [`files`]).
pub fn read(files: &[PathBuf], cursor: Cursor, limit: usize) -> std::io::Result<Page> {
    let limit = limit.max(1);
    let mut opened = Vec::new();
    for p in files {
        // A file rotated away since `files` listed it is simply not part of this page.
        if let Ok(f) = File::open(p) {
            opened.push(f);
        }
    }
    let mut records = Vec::new();
    let mut older = false;
    match cursor {
        Cursor::After(after) => {
            let mut taking = false;
            for f in &mut opened {
                if records.len() == limit {
                    break;
                }
                let pos = if taking {
                    0
                } else {
                    lower_bound(f, after + 1)?
                };
                let got = lines_after(f, pos, limit - records.len())?;
                taking |= !got.is_empty();
                records.extend(got.into_iter().filter(|r| seq(r) > after));
            }
            older = records.first().is_some_and(|r| seq(r) > 1);
        }
        Cursor::Latest | Cursor::Before(_) => {
            let bound = match cursor {
                Cursor::Before(b) => b,
                _ => u64::MAX,
            };
            for f in opened.iter_mut().rev() {
                let end = if bound == u64::MAX {
                    f.metadata()?.len()
                } else {
                    lower_bound(f, bound)?
                };
                let want = limit - records.len();
                if want == 0 {
                    older = older || end > 0;
                    break;
                }
                let (mut got, more) = lines_before(f, end, want)?;
                got.append(&mut records);
                records = got;
                older = more;
            }
        }
    }
    let first = records.first().map(seq);
    let last = records.last().map(seq);
    let next_after = last.or(match cursor {
        Cursor::After(a) => Some(a),
        Cursor::Before(b) => Some(b.saturating_sub(1)),
        Cursor::Latest => None,
    });
    let prev_before = first.filter(|s| *s > 0 && older);
    Ok(Page {
        records,
        next_after,
        prev_before,
    })
}

/// The highest `seq` in the log (0 when empty or written before `seq` existed), for the writer
/// to continue from after a restart.
pub fn last_seq(files: &[PathBuf]) -> std::io::Result<u64> {
    for p in files.iter().rev() {
        let mut f = File::open(p)?;
        let len = f.metadata()?.len();
        if let Some(last) = lines_before(&mut f, len, 1)?.0.last() {
            return Ok(seq(last));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests;
