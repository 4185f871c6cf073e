//! State snapshots: one Kafka partition's cohort and detection state, with the offset it
//! reflects, in a versioned, checksummed file written atomically.
//!
//! Owns the file format (documented in `docs/snapshot-format.md`) and the files: per partition
//! the newest snapshot and the one before it, so a damaged newest one falls back to the
//! previous. Every way a file can be unusable — truncated, not a snapshot, a newer format, a
//! bad checksum, undecodable, written under another topic or state configuration — is a
//! [`PersistError`] with the file and the reason, never a panic. It must not decide *when* to
//! snapshot or which offsets to commit (`ingest` does), and must not log payloads: a snapshot
//! holds aggregates only.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pipeline::PartitionState;

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"DRIFTSNP";
/// The format version this driftd writes and reads.
pub const VERSION: u16 = 4;
/// magic (8) + version (2) + reserved (2) + body length (8) + CRC-32 of the body (4).
const HEADER: usize = 24;

/// Why a snapshot could not be read or written. [`PersistError::reason`] is the bounded label
/// of `driftd_snapshot_failures_total`.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The file could not be read.
    #[error("cannot read snapshot {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The snapshot could not be written (a full or read-only disk).
    #[error("cannot write snapshot {path}: {source}; free space or fix permissions in the snapshot directory (persist.dir)")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Shorter than its header says: a write cut short.
    #[error("snapshot {path} is truncated ({len} bytes, expected {expected})")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The length its header promises.
        expected: usize,
    },
    /// Does not start with the snapshot magic.
    #[error("{path} is not a driftd snapshot")]
    NotASnapshot {
        /// The file.
        path: PathBuf,
    },
    /// Written in a format version this driftd does not read.
    #[error("snapshot {path} has format version {found}; this driftd reads version {VERSION} only (written by a newer driftd? it is not used)")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u16,
    },
    /// The body does not match its checksum.
    #[error("snapshot {path} fails its checksum (damaged on disk)")]
    Checksum {
        /// The file.
        path: PathBuf,
    },
    /// The body passed its checksum but does not decode.
    #[error("snapshot {path} does not decode: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// A sound snapshot of another topic, partition or state configuration.
    #[error("snapshot {path} is not for this driftd: {why}")]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// What differs.
        why: String,
    },
}

impl PersistError {
    /// The `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            PersistError::Read { .. } => "read",
            PersistError::Write { .. } => "write",
            PersistError::Truncated { .. } => "truncated",
            PersistError::NotASnapshot { .. } => "not_a_snapshot",
            PersistError::Version { .. } => "version",
            PersistError::Checksum { .. } => "checksum",
            PersistError::Decode { .. } => "decode",
            PersistError::Incompatible { .. } => "incompatible",
        }
    }
}

/// One partition's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The event topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset after the last message reflected: every message before it was applied to
    /// the state below (or dead-lettered and acknowledged), none at or after it.
    pub next_offset: i64,
    /// `Config::state_fingerprint` of the config it was written under.
    pub fingerprint: String,
    /// Wall-clock time of writing (RFC 3339), for people.
    pub written_at: String,
    /// The state.
    pub state: PartitionState,
}

/// Which of a partition's two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// The newest snapshot.
    Current,
    /// The one before it.
    Previous,
}

/// What loading a partition found: the snapshot to use, if any, and what was wrong with the
/// files passed over on the way.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The newest usable snapshot.
    pub snapshot: Option<Snapshot>,
    /// Files that exist but could not be used, newest first.
    pub failures: Vec<PersistError>,
    /// The `next_offset` of every usable file, newest first: what bounds the offset that may
    /// be committed.
    pub kept: Vec<i64>,
}

/// The snapshot files of one topic.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    topic: String,
    fingerprint: String,
}

impl SnapshotStore {
    /// The store for `topic` under `dir`, for state written under `fingerprint`.
    pub fn new(dir: &Path, topic: &str, fingerprint: &str) -> SnapshotStore {
        SnapshotStore {
            dir: dir.join(sanitize(topic)),
            topic: topic.to_string(),
            fingerprint: fingerprint.to_string(),
        }
    }

    /// The topic's snapshot directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `partition`'s `generation`.
    pub fn path(&self, partition: i32, generation: Generation) -> PathBuf {
        self.dir.join(match generation {
            Generation::Current => format!("p{partition}.snap"),
            Generation::Previous => format!("p{partition}.prev.snap"),
        })
    }

    /// Encodes a snapshot of `state` for `partition` at `next_offset`.
    pub fn encode(&self, partition: i32, next_offset: i64, state: PartitionState) -> Vec<u8> {
        let snapshot = Snapshot {
            topic: self.topic.clone(),
            partition,
            next_offset,
            fingerprint: self.fingerprint.clone(),
            written_at: crate::event::format_rfc3339_ms(crate::clock::wall_ms()),
            state,
        };
        encode(&snapshot)
    }

    /// Writes encoded snapshot `bytes` as `partition`'s newest, keeping the one it replaces as
    /// the previous: a temp file is written and fsynced, the current file becomes the previous,
    /// the temp file becomes current, and the directory is fsynced. A crash at any point leaves
    /// at least one complete snapshot.
    pub fn write(&self, partition: i32, bytes: &[u8]) -> Result<(), PersistError> {
        let current = self.path(partition, Generation::Current);
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PersistError::Write { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(err(&self.dir))?;
        let tmp = self.dir.join(format!(
            ".p{partition}.{}.{}.tmp",
            std::process::id(),
            crate::clock::wall_ms()
        ));
        let written = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(source) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(PersistError::Write { path: tmp, source });
        }
        if current.exists() {
            std::fs::rename(&current, self.path(partition, Generation::Previous))
                .map_err(err(&current))?;
        }
        std::fs::rename(&tmp, &current).map_err(err(&current))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err(&self.dir))
    }

    /// Reads one file: `Ok(None)` when it does not exist.
    pub fn read(
        &self,
        partition: i32,
        generation: Generation,
    ) -> Result<Option<Snapshot>, PersistError> {
        let path = self.path(partition, generation);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PersistError::Read { path, source }),
        };
        self.accept(&bytes, partition, &path).map(Some)
    }

    /// Decodes snapshot `bytes` of `partition` read from `origin` (a file, or the state topic)
    /// and checks that they were written for this topic, partition and state configuration.
    pub fn accept(
        &self,
        bytes: &[u8],
        partition: i32,
        origin: &Path,
    ) -> Result<Snapshot, PersistError> {
        let path = origin.to_path_buf();
        let snapshot = decode(bytes, &path)?;
        let why = if snapshot.topic != self.topic {
            Some(format!(
                "topic {} (this driftd reads {})",
                snapshot.topic, self.topic
            ))
        } else if snapshot.partition != partition {
            Some(format!("partition {}", snapshot.partition))
        } else if snapshot.fingerprint != self.fingerprint {
            Some("written under other cohorts, windows, metrics or detection settings".into())
        } else {
            None
        };
        match why {
            Some(why) => Err(PersistError::Incompatible { path, why }),
            None => Ok(snapshot),
        }
    }

    /// The newest usable snapshot of `partition` (the current file, or the previous one when
    /// the current one is unusable), and what was wrong with the others.
    pub fn load(&self, partition: i32) -> Loaded {
        let mut loaded = Loaded::default();
        for generation in [Generation::Current, Generation::Previous] {
            match self.read(partition, generation) {
                Ok(Some(s)) => {
                    loaded.kept.push(s.next_offset);
                    if loaded.snapshot.is_none() {
                        loaded.snapshot = Some(s);
                    }
                }
                Ok(None) => {}
                Err(e) => loaded.failures.push(e),
            }
        }
        loaded
    }
}

/// A topic name as a directory name: Kafka topic names are `[a-zA-Z0-9._-]`, and `.`/`..`
/// alone would climb.
fn sanitize(topic: &str) -> String {
    let clean: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.trim_matches('.').is_empty() {
        format!("_{clean}")
    } else {
        clean
    }
}

/// The bytes of a snapshot file.
pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut body = postcard::to_stdvec(snapshot).expect("snapshot state serialises");
    // The evidence trajectories follow the snapshot in the body: a file without them (written
    // before they existed) still decodes.
    let trajectories =
        postcard::to_stdvec(snapshot.state.trajectories()).expect("trajectories serialise");
    body.extend_from_slice(&trajectories);
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads the bytes of a snapshot file (`path` names it in errors).
pub fn decode(bytes: &[u8], path: &Path) -> Result<Snapshot, PersistError> {
    let path = || path.to_path_buf();
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            return Err(PersistError::Truncated {
                path: path(),
                len: bytes.len(),
                expected: HEADER,
            });
        }
        return Err(PersistError::NotASnapshot { path: path() });
    }
    if bytes.len() < HEADER {
        return Err(PersistError::Truncated {
            path: path(),
            len: bytes.len(),
            expected: HEADER,
        });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(PersistError::Version {
            path: path(),
            found: version,
        });
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    // A damaged length can promise more than a u64 holds with the header added.
    let expected = (HEADER as u64).saturating_add(len);
    if (bytes.len() as u64) < expected {
        return Err(PersistError::Truncated {
            path: path(),
            len: bytes.len(),
            expected: usize::try_from(expected).unwrap_or(usize::MAX),
        });
    }
    if (bytes.len() as u64) > expected {
        return Err(PersistError::Decode {
            path: path(),
            message: format!("{} bytes after the body", bytes.len() as u64 - expected),
        });
    }
    let body = &bytes[HEADER..];
    if crc32fast::hash(body) != crc {
        return Err(PersistError::Checksum { path: path() });
    }
    let undecodable = |e: postcard::Error| PersistError::Decode {
        path: path(),
        message: e.to_string(),
    };
    let (mut snapshot, rest) = postcard::take_from_bytes::<Snapshot>(body).map_err(undecodable)?;
    if !rest.is_empty() {
        snapshot
            .state
            .set_trajectories(postcard::from_bytes(rest).map_err(undecodable)?);
    }
    Ok(snapshot)
}

#[cfg(feature = "kafka")]
pub mod latch_topic;
#[cfg(feature = "kafka")]
pub mod topic;

#[cfg(test)]
mod tests;
