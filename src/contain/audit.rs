//! The audit log: append-only JSON lines, fsync'd, rotated by size.
//!
//! One record per transition and per action attempt: what, why, the evidence, the config hash,
//! the result, and who released and why. Each append is flushed to disk before the caller goes
//! on, so the log tells the story even after a crash. When the file passes
//! `containment.audit_max_bytes` it is renamed to `audit.log.1` (older ones shift up to
//! `audit_keep`). Records hold verdict evidence and operator input, never event payloads.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::store::StoreError;

/// The audit log of one driftd.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: usize,
    config_hash: String,
}

impl AuditLog {
    /// Opens (appending) `audit.log` in `state_dir`.
    pub fn open(
        state_dir: &Path,
        max_bytes: u64,
        keep: usize,
        config_hash: &str,
    ) -> Result<AuditLog, StoreError> {
        let path = state_dir.join("audit.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| StoreError::Io {
                action: "cannot open",
                path: path.clone(),
                source,
            })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(AuditLog {
            path,
            file,
            size,
            max_bytes,
            keep,
            config_hash: config_hash.to_string(),
        })
    }

    /// Appends one record (a JSON object; `at` and `config_hash` are added) and fsyncs.
    pub fn append(&mut self, at: &str, mut record: serde_json::Value) -> Result<(), StoreError> {
        if let Some(obj) = record.as_object_mut() {
            obj.insert("at".into(), at.into());
            obj.insert("config_hash".into(), self.config_hash.clone().into());
        }
        let mut line = serde_json::to_vec(&record).expect("records serialise");
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let err = |source| StoreError::Io {
            action: "cannot append to",
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&line).map_err(err)?;
        self.file.sync_data().map_err(|source| StoreError::Io {
            action: "cannot fsync",
            path: self.path.clone(),
            source,
        })?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), StoreError> {
        let name = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(name(self.keep.max(1)));
        for n in (1..self.keep.max(1)).rev() {
            let _ = std::fs::rename(name(n), name(n + 1));
        }
        std::fs::rename(&self.path, name(1)).map_err(|source| StoreError::Io {
            action: "cannot rotate",
            path: self.path.clone(),
            source,
        })?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|source| StoreError::Io {
                action: "cannot open",
                path: self.path.clone(),
                source,
            })?;
        self.size = 0;
        Ok(())
    }

    /// The records of the current file, oldest first (at most the last `limit`).
    pub fn read(&self, limit: usize) -> Vec<serde_json::Value> {
        read_records(&self.path, limit)
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Updates the config hash written into records (after a reload).
    pub fn set_config_hash(&mut self, hash: &str) {
        self.config_hash = hash.to_string();
    }
}

/// Reads the last `limit` records of an audit file.
pub fn read_records(path: &Path, limit: usize) -> Vec<serde_json::Value> {
    let Ok(f) = File::open(path) else {
        return Vec::new();
    };
    let all: Vec<serde_json::Value> = std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    let skip = all.len().saturating_sub(limit);
    all.into_iter().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_in_order_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(dir.path(), 4096, 2, "abc").unwrap();
        for i in 0..100 {
            log.append("t", serde_json::json!({"event": "x", "i": i}))
                .unwrap();
        }
        let current = log.read(1000);
        assert!(!current.is_empty());
        let last = current.last().unwrap();
        assert_eq!(last["i"], 99);
        assert_eq!(last["config_hash"], "abc");
        assert!(dir.path().join("audit.log.1").exists(), "rotated");
        assert!(!dir.path().join("audit.log.3").exists(), "keeps at most 2");
        let sizes = std::fs::metadata(log.path()).unwrap().len();
        assert!(sizes <= 4096);
        // The rotated file continues where the current one starts.
        let older = read_records(&dir.path().join("audit.log.1"), 1000);
        assert_eq!(
            older.last().unwrap()["i"].as_u64().unwrap() + 1,
            current[0]["i"].as_u64().unwrap()
        );
    }
}
