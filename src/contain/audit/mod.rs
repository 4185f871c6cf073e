//! The audit log: append-only JSON lines, fsync'd, rotated by size.
//!
//! One [`AuditRecord`] per transition (with the evidence, and who released and why), per action
//! attempt (with its result), per pending action resumed at start-up, per input deliberately
//! ignored, per change received with stale evidence, per refused operator request and per
//! failed-containment alert; every record carries its time, the config hash and `seq` (one more
//! than the record before, across rotations and restarts: the cursor of [`page`]). Each append is flushed to disk before the caller goes on,
//! so the log tells the story even after a crash. When the file passes
//! `containment.audit_max_bytes` it is renamed to `audit.log.1` (older ones shift up to
//! `audit_keep`). Records hold verdict evidence and operator input, never event payloads.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ladder::{ApprovalNote, Transition};
use super::latch::{Op, Release};
use super::store::StoreError;

pub mod page;

/// One line of the audit log; `event` names the variant. The JSON is a file format that
/// operators and tests read: field names and values do not change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditRecord {
    /// Start-up found actions of contained deployments not yet done and runs them.
    Resume {
        /// Their idempotency keys.
        pending_actions: Vec<String>,
    },
    /// An operator request the ladder refused.
    RequestRefused {
        /// Deployment.
        deployment: String,
        /// What was asked.
        request: RequestKind,
        /// Who asked: the authenticated identity.
        operator: String,
        /// The operator name the request body gave, when it differs: a comment only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stated_operator: Option<String>,
        /// Why it was refused.
        error: String,
    },
    /// A step of a release or promotion approval: requested, approved, unchanged, released,
    /// expired.
    Approval(ApprovalNote),
    /// A phase change.
    Transition {
        /// From, to, why, who.
        transition: Transition,
        /// The evidence of the deployment's incident, if it has one.
        evidence: Option<serde_json::Value>,
        /// Who released and why, on a release.
        release: Option<Release>,
    },
    /// An input deliberately not acted on.
    Ignored {
        /// Why.
        why: String,
    },
    /// One action attempt (or, in dry-run, the action that would have been taken).
    Action {
        /// Idempotency key.
        key: String,
        /// Target name.
        target: String,
        /// Provider label.
        provider: String,
        /// What it does.
        op: Op,
        /// How it went.
        result: ActionResult,
        /// The incident it belongs to.
        incident: String,
        /// The attempt's details; absent for a dry run, which makes no attempt.
        #[serde(flatten)]
        attempt: Option<AttemptDetail>,
    },
    /// A verdict or signal change whose event time was further than
    /// `containment.max_evidence_age` behind the wall clock: not acted on.
    Stale {
        /// Deployment.
        deployment: String,
        /// `verdict` or `signal`.
        kind: String,
        /// The change's event time (RFC 3339).
        at: String,
        /// How far `at` was behind the wall clock, in seconds.
        age_seconds: f64,
        /// `containment.max_evidence_age`, in seconds.
        max_evidence_age_seconds: f64,
        /// A `warn`/`fail` verdict held, to be acted on once fresh events of its canary version
        /// show it still stands.
        held: bool,
        /// The change as the pipeline reported it.
        change: serde_json::Value,
    },
    /// A SIGHUP config reload, applied or refused. Its `config_hash` is the config in force
    /// after it.
    ConfigReload {
        /// As in `driftd_config_reloads_total`: `success`, `failure` or `restart_required`.
        outcome: String,
        /// The hash of the file read, when it loaded.
        loaded_hash: Option<String>,
        /// Why it was refused (the error, or the settings that need a restart).
        detail: Option<String>,
    },
    /// An action not taken because this replica may no longer act for the deployment's
    /// partition (`persist.latch_topic`): another owner recorded a newer epoch, the consumer
    /// gave the partition up, the topic could not be read, or the latch change was not
    /// recorded.
    ActionDropped {
        /// Idempotency key.
        key: String,
        /// Target name.
        target: String,
        /// What it would have done.
        op: Op,
        /// The incident it belongs to.
        incident: String,
        /// Why (the `reason` of `driftd_actions_fenced_total`).
        reason: String,
    },
    /// A containment action failed for good and was reported to the alert targets.
    ActionFailureAlert {
        /// Idempotency key of the failed action.
        failed: String,
        /// Its last error.
        error: String,
    },
}

/// The kind of operator request, in [`AuditRecord::RequestRefused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// Contain by hand.
    Contain,
    /// Release (a request, which may wait for approvals).
    Release,
    /// Approve the pending release.
    ApproveRelease,
    /// Approve promoting a canary version.
    ApprovePromotion,
}

/// How an action went, in [`AuditRecord::Action`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionResult {
    /// Done.
    Success,
    /// Failed, another attempt follows.
    Retrying,
    /// Failed for good.
    Failed,
    /// Not attempted: dry-run.
    DryRun,
    /// No further attempt: a release withdrew it while it was retrying.
    Withdrawn,
}

/// The fields of an attempted action, in [`AuditRecord::Action`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptDetail {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The attempt's error (`null` on success).
    pub error: Option<String>,
    /// From the verdict (or request) reaching containment to this result.
    pub elapsed_ms: u64,
}

/// The audit log of one driftd.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: usize,
    config_hash: String,
    next_seq: u64,
    /// Records were appended since the last fsync.
    unsynced: bool,
}

impl AuditLog {
    /// Opens (appending) `audit.log` in `state_dir`, continuing the sequence numbers of the
    /// records already there.
    pub fn open(
        state_dir: &Path,
        max_bytes: u64,
        keep: usize,
        config_hash: &str,
    ) -> Result<AuditLog, StoreError> {
        let path = state_dir.join("audit.log");
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io {
                action,
                path,
                source,
            }
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
        // A crash mid-append leaves a torn last line: end it, so the next record starts on its
        // own line instead of being glued to the fragment and lost with it.
        if size > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::End(-1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(io("cannot read", &path))?;
            if last[0] != b'\n' {
                file.write_all(b"\n")
                    .map_err(io("cannot append to", &path))?;
                size += 1;
            }
        }
        let next_seq =
            page::last_seq(&page::files(&path, keep)).map_err(io("cannot read", &path))? + 1;
        Ok(AuditLog {
            path,
            file,
            size,
            max_bytes,
            keep,
            config_hash: config_hash.to_string(),
            next_seq,
            unsynced: false,
        })
    }

    /// Appends one record (with `at` and `config_hash` added) and fsyncs.
    pub fn append(&mut self, at: &str, record: &AuditRecord) -> Result<(), StoreError> {
        self.append_unsynced(at, record)?;
        self.sync()
    }

    /// [`AuditLog::append`] without the fsync: the record is durable only after the next
    /// [`AuditLog::sync`] (or `append`), which must come before anything relies on it — a batch
    /// of records then costs one fsync.
    pub fn append_unsynced(&mut self, at: &str, record: &AuditRecord) -> Result<(), StoreError> {
        // Through a JSON map, whose keys are sorted: the line is what earlier versions wrote
        // (they built maps by hand), whatever order the fields are declared in.
        let mut value = serde_json::to_value(record).expect("records serialise");
        if let Some(obj) = value.as_object_mut() {
            obj.insert("at".into(), at.into());
            obj.insert("config_hash".into(), self.config_hash.clone().into());
            obj.insert("seq".into(), self.next_seq.into());
        }
        let mut line = serde_json::to_vec(&value).expect("records serialise");
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
        self.unsynced = true;
        self.size += line.len() as u64;
        self.next_seq += 1;
        Ok(())
    }

    /// Flushes the records appended since the last fsync to disk; nothing to do when there are
    /// none.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if !self.unsynced {
            return Ok(());
        }
        self.file.sync_data().map_err(|source| StoreError::Io {
            action: "cannot fsync",
            path: self.path.clone(),
            source,
        })?;
        self.unsynced = false;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), StoreError> {
        // The records not yet fsynced go with the file being rotated out.
        self.sync()?;
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

    /// The config hash written into the records from now on (after a reload).
    pub fn set_config_hash(&mut self, hash: &str) {
        self.config_hash = hash.to_string();
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::contain::latch::Phase;

    fn read_records(path: &Path, limit: usize) -> Vec<serde_json::Value> {
        page::read(&[path.to_path_buf()], page::Cursor::Latest, limit)
            .unwrap()
            .records
    }

    #[test]
    fn appends_in_order_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(dir.path(), 4096, 2, "abc").unwrap();
        for i in 0..100 {
            log.append("t", &AuditRecord::Ignored { why: i.to_string() })
                .unwrap();
        }
        let current = read_records(log.path(), 1000);
        assert!(!current.is_empty());
        let last = current.last().unwrap();
        assert_eq!(last["why"], "99");
        assert_eq!(last["config_hash"], "abc");
        assert!(dir.path().join("audit.log.1").exists(), "rotated");
        assert!(!dir.path().join("audit.log.3").exists(), "keeps at most 2");
        let sizes = std::fs::metadata(log.path()).unwrap().len();
        assert!(sizes <= 4096);
        // The rotated file continues where the current one starts.
        let number = |r: &serde_json::Value| r["why"].as_str().unwrap().parse::<u64>().unwrap();
        let older = read_records(&dir.path().join("audit.log.1"), 1000);
        assert_eq!(number(older.last().unwrap()) + 1, number(&current[0]));
    }

    /// Every variant beside the `json!` literal earlier versions wrote by hand: the same JSON
    /// (plus `seq`, added since), and it reads back as the same record through the file.
    #[test]
    fn each_record_is_the_json_it_always_was_and_round_trips() {
        let transition = Transition {
            deployment: "svc".into(),
            from: Phase::Contained,
            to: Phase::Released,
            why: "released by ana: ok".into(),
            operator: Some("ana".into()),
            stated_operator: None,
            incident: Some("svc:v1".into()),
        };
        let release = Release {
            operator: "ana".into(),
            reason: "ok".into(),
            at: "t2".into(),
            incident: "svc:v1".into(),
            approved_by: Vec::new(),
        };
        let cases = [
            (
                AuditRecord::Resume {
                    pending_actions: vec!["svc:v1/hook/contain".into()],
                },
                json!({"event": "resume", "pending_actions": ["svc:v1/hook/contain"]}),
            ),
            (
                AuditRecord::RequestRefused {
                    deployment: "svc".into(),
                    request: RequestKind::Release,
                    operator: "ana".into(),
                    stated_operator: None,
                    error: "deployment `svc` is not contained; nothing to release".into(),
                },
                json!({"event": "request_refused", "deployment": "svc", "request": "release", "operator": "ana", "error": "deployment `svc` is not contained; nothing to release"}),
            ),
            (
                AuditRecord::Transition {
                    transition: transition.clone(),
                    evidence: Some(json!({"metric": "refusal", "p_value": 0.001})),
                    release: Some(release.clone()),
                },
                json!({"event": "transition", "transition": transition, "evidence": {"metric": "refusal", "p_value": 0.001}, "release": release}),
            ),
            (
                AuditRecord::Transition {
                    transition: transition.clone(),
                    evidence: None,
                    release: None,
                },
                json!({"event": "transition", "transition": transition, "evidence": null, "release": null}),
            ),
            (
                AuditRecord::Approval(ApprovalNote {
                    deployment: "svc".into(),
                    kind: super::super::ladder::ApprovalKind::Release,
                    step: super::super::ladder::ApprovalStep::Approved,
                    identity: Some("bob".into()),
                    stated_operator: Some("carol".into()),
                    reason: Some("checked".into()),
                    subject: "svc:v1".into(),
                    approved_by: vec!["alice".into(), "bob".into()],
                    needed: 2,
                    expires_at: Some("t9".into()),
                }),
                json!({"event": "approval", "deployment": "svc", "kind": "release", "step": "approved", "identity": "bob", "stated_operator": "carol", "reason": "checked", "subject": "svc:v1", "approved_by": ["alice", "bob"], "needed": 2, "expires_at": "t9"}),
            ),
            (
                AuditRecord::Ignored {
                    why: "incident svc:v1 was released".into(),
                },
                json!({"event": "ignored", "why": "incident svc:v1 was released"}),
            ),
            (
                AuditRecord::Action {
                    key: "svc:v1/flag/contain".into(),
                    target: "flag".into(),
                    provider: "flagd".into(),
                    op: Op::Contain,
                    result: ActionResult::DryRun,
                    incident: "svc:v1".into(),
                    attempt: None,
                },
                json!({"event": "action", "key": "svc:v1/flag/contain", "target": "flag", "provider": "flagd", "op": "contain", "result": "dry_run", "incident": "svc:v1"}),
            ),
            (
                AuditRecord::Action {
                    key: "svc:v1/hook/contain".into(),
                    target: "hook".into(),
                    provider: "webhook".into(),
                    op: Op::Contain,
                    result: ActionResult::Withdrawn,
                    incident: "svc:v1".into(),
                    attempt: None,
                },
                json!({"event": "action", "key": "svc:v1/hook/contain", "target": "hook", "provider": "webhook", "op": "contain", "result": "withdrawn", "incident": "svc:v1"}),
            ),
            (
                AuditRecord::Action {
                    key: "svc:v1/am/trigger-critical".into(),
                    target: "am".into(),
                    provider: "alertmanager".into(),
                    op: Op::Trigger,
                    result: ActionResult::Success,
                    incident: "svc:v1".into(),
                    attempt: Some(AttemptDetail {
                        attempt: 1,
                        error: None,
                        elapsed_ms: 12,
                    }),
                },
                json!({"event": "action", "key": "svc:v1/am/trigger-critical", "target": "am", "provider": "alertmanager", "op": "trigger", "attempt": 1, "result": "success", "error": null, "incident": "svc:v1", "elapsed_ms": 12}),
            ),
            (
                AuditRecord::Action {
                    key: "svc:v1/am/resolve-warning".into(),
                    target: "am".into(),
                    provider: "alertmanager".into(),
                    op: Op::Resolve,
                    result: ActionResult::Retrying,
                    incident: "svc:v1".into(),
                    attempt: Some(AttemptDetail {
                        attempt: 2,
                        error: Some("HTTP 503 Service Unavailable".into()),
                        elapsed_ms: 900,
                    }),
                },
                json!({"event": "action", "key": "svc:v1/am/resolve-warning", "target": "am", "provider": "alertmanager", "op": "resolve", "attempt": 2, "result": "retrying", "error": "HTTP 503 Service Unavailable", "incident": "svc:v1", "elapsed_ms": 900}),
            ),
            (
                AuditRecord::Action {
                    key: "svc:v1/hook/contain".into(),
                    target: "hook".into(),
                    provider: "webhook".into(),
                    op: Op::Contain,
                    result: ActionResult::Failed,
                    incident: "svc:v1".into(),
                    attempt: Some(AttemptDetail {
                        attempt: 1,
                        error: Some("HTTP 400 Bad Request".into()),
                        elapsed_ms: 3,
                    }),
                },
                json!({"event": "action", "key": "svc:v1/hook/contain", "target": "hook", "provider": "webhook", "op": "contain", "attempt": 1, "result": "failed", "error": "HTTP 400 Bad Request", "incident": "svc:v1", "elapsed_ms": 3}),
            ),
            (
                AuditRecord::ConfigReload {
                    outcome: "restart_required".into(),
                    loaded_hash: Some("def".into()),
                    detail: Some("these settings take effect only on restart: detection".into()),
                },
                json!({"event": "config_reload", "outcome": "restart_required", "loaded_hash": "def", "detail": "these settings take effect only on restart: detection"}),
            ),
            (
                AuditRecord::ActionDropped {
                    key: "svc:v1/am/trigger-critical".into(),
                    target: "am".into(),
                    op: Op::Trigger,
                    incident: "svc:v1".into(),
                    reason: "epoch".into(),
                },
                json!({"event": "action_dropped", "key": "svc:v1/am/trigger-critical", "target": "am", "op": "trigger", "incident": "svc:v1", "reason": "epoch"}),
            ),
            (
                AuditRecord::ActionFailureAlert {
                    failed: "svc:v1/hook/contain".into(),
                    error: "HTTP 400 Bad Request".into(),
                },
                json!({"event": "action_failure_alert", "failed": "svc:v1/hook/contain", "error": "HTTP 400 Bad Request"}),
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(dir.path(), 1 << 20, 2, "abc").unwrap();
        for (seq, (record, old)) in (1u64..).zip(&cases) {
            assert_eq!(&serde_json::to_value(record).unwrap(), old);
            log.append("t", record).unwrap();
            let mut old_line = old.clone();
            old_line["at"] = "t".into();
            old_line["config_hash"] = "abc".into();
            old_line["seq"] = seq.into();
            let written = std::fs::read_to_string(log.path()).unwrap();
            assert_eq!(
                written.lines().last().unwrap(),
                serde_json::to_string(&old_line).unwrap(),
                "byte for byte"
            );
        }
        let read = read_records(log.path(), 100);
        assert_eq!(read.len(), cases.len());
        for ((record, _), line) in cases.iter().zip(read) {
            assert_eq!(
                &serde_json::from_value::<AuditRecord>(line).unwrap(),
                record
            );
        }
    }
}
