//! Durable files of containment: the persisted latch state and atomic file replacement.
//!
//! The latch must survive restarts (a restart never silently un-contains), so every change is
//! appended to `containment.journal` and fdatasynced before its actions start; the journal is
//! folded into `containment.json` now and then, by [`atomic_write`]: temp file, fsync, rename,
//! fsync of the directory — a crash leaves the old or the new file, never half of one. The
//! flagd provider replaces flag files the same way. Must not decide what changed: the caller
//! says which deployments to write (`super::latch::Latches` tracks them).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::latch::{Latch, Phase};

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O on the latch state file or its directory.
    #[error("{action} {path}; check that containment.state_dir exists and is writable")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// [`atomic_write`] failed; it replaces latch state and flagd flag files alike, so the
    /// message names the directory rather than a setting.
    #[error("{action} {path}; check that the directory {dir} exists and is writable by driftd")]
    Write {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The directory of the file being replaced.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state file is not valid.
    #[error("latch state {path} is corrupt ({message}); fix or move it aside — driftd will not guess whether deployments are contained")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with `bytes` atomically and durably. Errors are [`StoreError::Write`].
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Write {
            action,
            path,
            dir: dir.to_path_buf(),
            source,
        }
    };
    // A temp name per write, not per process: two writers of the same file must never share
    // (and truncate) each other's temp file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut f = std::fs::File::create(&tmp).map_err(io("cannot create", &tmp))?;
    f.write_all(bytes).map_err(io("cannot write", &tmp))?;
    f.sync_all().map_err(io("cannot fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("cannot rename into", path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot fsync directory", dir))?;
    Ok(())
}

/// A journal line: one deployment's latch as it now is, or `null` once it was dropped.
#[derive(Serialize)]
struct Entry<'a> {
    deployment: &'a str,
    latch: Option<&'a Latch>,
}

/// [`Entry`] as read back.
#[derive(Deserialize)]
struct ReadEntry {
    deployment: String,
    latch: Option<Latch>,
}

/// The journal is folded into `containment.json` once it is larger than this and than the
/// file: rewriting the whole map then costs at most as much again as the appends it replaces.
const COMPACT_AT: u64 = 1 << 20;

/// The persisted latches of every deployment: `containment.json` holds them all as of the last
/// compaction, `containment.journal` every change since, one JSON line per changed deployment.
/// A change costs one append and one fdatasync whatever the number of latches; the journal is
/// folded into `containment.json` ([`LatchStore::compact`]) off the actions' path.
pub struct LatchStore {
    path: PathBuf,
    journal_path: PathBuf,
    journal: Option<std::fs::File>,
    /// The journal's length up to its last whole record.
    journal_len: u64,
    base_len: u64,
    /// An append failed part way: the journal is cut back to `journal_len` before the next one.
    torn: bool,
    /// What the files hold: every save must leave it equal to the latches it was given, which
    /// fails the tests when a change to a latch was not marked (see `Latches`).
    #[cfg(debug_assertions)]
    mirror: BTreeMap<String, Latch>,
}

impl LatchStore {
    /// The store in `state_dir` (created if missing).
    pub fn open(state_dir: &Path) -> Result<LatchStore, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(io("cannot create", state_dir))?;
        Ok(LatchStore {
            path: state_dir.join("containment.json"),
            journal_path: state_dir.join("containment.journal"),
            journal: None,
            journal_len: 0,
            base_len: 0,
            torn: false,
            #[cfg(debug_assertions)]
            mirror: BTreeMap::new(),
        })
    }

    /// Loads the latches: `containment.json`, then the journal's records in order. A last
    /// record cut short (a crash during its append, before any of its actions ran) is left out;
    /// any other unreadable record is refused. Absent files mean no deployment was ever
    /// contained.
    pub fn load(&mut self) -> Result<BTreeMap<String, Latch>, StoreError> {
        let mut latches: BTreeMap<String, Latch> = match std::fs::read(&self.path) {
            Ok(bytes) => {
                self.base_len = bytes.len() as u64;
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io("cannot read", &self.path)(e)),
        };
        let journal = match std::fs::read(&self.journal_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("cannot read", &self.journal_path)(e)),
        };
        let mut whole = 0;
        for (n, line) in journal.split_inclusive(|b| *b == b'\n').enumerate() {
            if !line.ends_with(b"\n") {
                tracing::warn!(path = %self.journal_path.display(), bytes = line.len(), "left out the latch journal's last record, cut short by a crash during its write (none of its actions had started)");
                self.torn = true;
                break;
            }
            let entry: ReadEntry =
                serde_json::from_slice(line).map_err(|e| StoreError::Corrupt {
                    path: self.journal_path.clone(),
                    message: format!("record {}: {e}", n + 1),
                })?;
            match entry.latch {
                Some(latch) => latches.insert(entry.deployment, latch),
                None => latches.remove(&entry.deployment),
            };
            whole += line.len() as u64;
        }
        self.journal_len = whole;
        // Contained without an incident cannot be released or explained: refuse it here
        // rather than fail at the operator's release.
        if let Some((deployment, _)) = latches
            .iter()
            .find(|(_, l)| l.phase == Phase::Contained && l.incident.is_none())
        {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                message: format!("deployment `{deployment}` is contained without an incident"),
            });
        }
        #[cfg(debug_assertions)]
        {
            self.mirror = latches.clone();
        }
        Ok(latches)
    }

    fn journal(&mut self) -> Result<&mut std::fs::File, StoreError> {
        if self.journal.is_none() {
            let existed = self.journal_path.exists();
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.journal_path)
                .map_err(io("cannot open", &self.journal_path))?;
            if !existed {
                // The new name must survive a crash as well as the records in it.
                let dir = self.journal_path.parent().unwrap_or(Path::new("."));
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io("cannot fsync directory", dir))?;
            }
            self.journal = Some(file);
        }
        Ok(self.journal.as_mut().expect("opened above"))
    }

    /// Persists the latches of `changed` deployments as `latches` now holds them (absent:
    /// dropped) with one append and one fdatasync.
    pub fn save(
        &mut self,
        changed: &BTreeSet<String>,
        latches: &BTreeMap<String, Latch>,
    ) -> Result<(), StoreError> {
        if changed.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for deployment in changed {
            let entry = Entry {
                deployment,
                latch: latches.get(deployment),
            };
            serde_json::to_writer(&mut bytes, &entry).expect("latches serialise");
            bytes.push(b'\n');
        }
        let (path, whole, torn) = (self.journal_path.clone(), self.journal_len, self.torn);
        let file = self.journal()?;
        if torn {
            file.set_len(whole).map_err(io("cannot cut back", &path))?;
        }
        self.torn = true;
        let file = self.journal()?;
        file.write_all(&bytes)
            .map_err(io("cannot append to", &path))?;
        file.sync_data().map_err(io("cannot fsync", &path))?;
        self.torn = false;
        self.journal_len += bytes.len() as u64;
        #[cfg(debug_assertions)]
        {
            for deployment in changed {
                match latches.get(deployment) {
                    Some(l) => self.mirror.insert(deployment.clone(), l.clone()),
                    None => self.mirror.remove(deployment),
                };
            }
            assert!(
                self.mirror == *latches,
                "a latch changed without being marked: the journal misses it"
            );
        }
        Ok(())
    }

    /// True when the journal has grown enough to be folded into `containment.json`.
    pub fn compaction_due(&self) -> bool {
        self.journal_len > COMPACT_AT.max(self.base_len)
    }

    /// Writes `latches` whole to `containment.json` and empties the journal. `latches` must be
    /// what the files hold (nothing changed since the last [`LatchStore::save`]), or what
    /// start-up makes of them: a crash between the two steps replays the journal over the new
    /// file, which then changes nothing that start-up would not change again.
    pub fn compact(&mut self, latches: &BTreeMap<String, Latch>) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(latches).expect("latches serialise");
        atomic_write(&self.path, &bytes).map_err(|e| match e {
            StoreError::Write {
                action,
                path,
                source,
                ..
            } => StoreError::Io {
                action,
                path,
                source,
            },
            other => other,
        })?;
        self.base_len = bytes.len() as u64;
        let path = self.journal_path.clone();
        let file = self.journal()?;
        file.set_len(0).map_err(io("cannot empty", &path))?;
        file.sync_all().map_err(io("cannot fsync", &path))?;
        self.journal_len = 0;
        self.torn = false;
        #[cfg(debug_assertions)]
        {
            self.mirror = latches.clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
