//! Durable files of containment: the persisted latch state and atomic file replacement.
//!
//! The latch must survive restarts (a restart never silently un-contains), so every change is
//! written to `containment.json` by [`atomic_write`]: temp file, fsync, rename, fsync of the
//! directory — a crash leaves the old or the new file, never half of one. The flagd provider
//! replaces flag files the same way.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// The persisted latches of every deployment.
pub struct LatchStore {
    path: PathBuf,
}

impl LatchStore {
    /// The store in `state_dir` (created if missing).
    pub fn open(state_dir: &Path) -> Result<LatchStore, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(io("cannot create", state_dir))?;
        Ok(LatchStore {
            path: state_dir.join("containment.json"),
        })
    }

    /// Loads the latches; an absent file means no deployment was ever contained.
    pub fn load(&self) -> Result<BTreeMap<String, Latch>, StoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let latches: BTreeMap<String, Latch> =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: self.path.clone(),
                        message: e.to_string(),
                    })?;
                // Contained without an incident cannot be released or explained: refuse it
                // here rather than fail at the operator's release.
                if let Some((deployment, _)) = latches
                    .iter()
                    .find(|(_, l)| l.phase == Phase::Contained && l.incident.is_none())
                {
                    return Err(StoreError::Corrupt {
                        path: self.path.clone(),
                        message: format!(
                            "deployment `{deployment}` is contained without an incident"
                        ),
                    });
                }
                Ok(latches)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io("cannot read", &self.path)(e)),
        }
    }

    /// Saves the latches.
    pub fn save(&self, latches: &BTreeMap<String, Latch>) -> Result<(), StoreError> {
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latches_round_trip_and_corruption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LatchStore::open(dir.path()).unwrap();
        assert!(store.load().unwrap().is_empty());
        let mut latches = BTreeMap::new();
        latches.insert(
            "svc".to_string(),
            Latch {
                closed: vec!["svc:v1".into()],
                ..Latch::default()
            },
        );
        store.save(&latches).unwrap();
        assert_eq!(store.load().unwrap(), latches);
        std::fs::write(dir.path().join("containment.json"), b"{oops").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
    }

    /// Regression: a failed flag-file write told the operator to check
    /// `containment.state_dir`, which has nothing to do with the flag file.
    #[test]
    fn write_errors_name_the_right_place() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir");
        let e = atomic_write(&missing.join("flags.json"), b"{}").unwrap_err();
        let message = e.to_string();
        assert!(!message.contains("containment.state_dir"), "{message}");
        assert!(
            message.contains(&format!(
                "check that the directory {} exists",
                missing.display()
            )),
            "{message}"
        );
        let store = LatchStore::open(&missing).unwrap();
        std::fs::remove_dir(&missing).unwrap();
        let e = store.save(&BTreeMap::new()).unwrap_err();
        assert!(
            e.to_string().contains("containment.state_dir"),
            "the latch store still names its setting: {e}"
        );
    }

    /// Regression: a saved latch marked contained without an incident loaded fine, then made
    /// the operator's release panic and silently end the containment task.
    #[test]
    fn a_contained_latch_without_an_incident_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = LatchStore::open(dir.path()).unwrap();
        std::fs::write(
            dir.path().join("containment.json"),
            br#"{"svc": {"phase": "contained"}}"#,
        )
        .unwrap();
        let e = store.load().unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }));
        assert!(
            e.to_string()
                .contains("`svc` is contained without an incident"),
            "{e}"
        );
    }
}
