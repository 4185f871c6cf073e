//! Several replicas: who owns which deployment, the records of the latch topic, the view merged
//! from tailing it, and the fencing rule checked before every action.
//!
//! Owns the rules, not the I/O: the [`Journal`] (the latch topic, `crate::persist::latch_topic`)
//! produces and tails the records; the containment task decides when. An event partition's
//! owner claims it with an epoch one above the newest recorded ([`Record::Epoch`]); every latch
//! change carries the writer's claim, and the merge ignores a change whose claim is older than
//! the partition's newest, so a zombie's late write cannot undo the new owner's. Before every
//! action, [`check`] compares the claim the action was decided under with the newest recorded
//! one, read to the topic's end. An owner's views of its deployments ([`Record::View`]) are
//! merged under the same rule. Pure apart from [`Ownership`]'s lock: no Kafka here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::ladder::Requester;
use super::latch::Latch;
use super::Request;
use crate::detect::DeploymentView;

/// Which event partitions this replica's consumer holds, and the partition each deployment's
/// events came from. Written by the consumer's rebalance callback and message path, read by
/// the containment task; the generation tells the task that the assignment changed.
#[derive(Default)]
pub struct Ownership {
    assigned: Mutex<BTreeSet<i32>>,
    deployments: Mutex<HashMap<String, i32>>,
    generation: AtomicU64,
}

impl Ownership {
    /// The consumer was given `partitions`.
    pub fn assign(&self, partitions: &[i32]) {
        self.lock_assigned().extend(partitions);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The consumer gave `partitions` up.
    pub fn revoke(&self, partitions: &[i32]) {
        let mut a = self.lock_assigned();
        for p in partitions {
            a.remove(p);
        }
        drop(a);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// An event of `deployment` (its message key) was read from `partition`.
    pub fn seen(&self, deployment: &str, partition: i32) {
        let mut d = self
            .deployments
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if d.get(deployment) != Some(&partition) {
            d.insert(deployment.to_string(), partition);
        }
    }

    /// True while the consumer holds `partition`.
    pub fn holds(&self, partition: i32) -> bool {
        self.lock_assigned().contains(&partition)
    }

    /// The partitions held now.
    pub fn assigned(&self) -> BTreeSet<i32> {
        self.lock_assigned().clone()
    }

    /// The partition `deployment`'s events were last read from, if any were.
    pub fn partition_of(&self, deployment: &str) -> Option<i32> {
        self.deployments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(deployment)
            .copied()
    }

    /// Bumped by every assignment change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn lock_assigned(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        self.assigned.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One owner's claim on an event partition: the epoch and the replica that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// One above the newest recorded when it was claimed.
    pub epoch: u64,
    /// The claiming replica's id (random per process).
    pub writer: String,
}

impl Claim {
    /// The claim that follows `newest` (the first is epoch 1).
    pub fn next(newest: Option<&Claim>, writer: &str) -> Claim {
        Claim {
            epoch: newest.map_or(1, |c| c.epoch + 1),
            writer: writer.to_string(),
        }
    }
}

/// Why an action was not taken; the `reason` label of `driftd_actions_fenced_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceReason {
    /// A newer owner recorded a higher epoch for the partition.
    Epoch,
    /// The consumer no longer holds the partition.
    NotOwner,
    /// The latch topic could not be read to its end in time.
    Unchecked,
    /// The latch change the action follows was not acknowledged by the topic.
    Unrecorded,
}

impl FenceReason {
    /// Every reason, for the metric's zero series.
    pub const ALL: [FenceReason; 4] = [
        FenceReason::Epoch,
        FenceReason::NotOwner,
        FenceReason::Unchecked,
        FenceReason::Unrecorded,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FenceReason::Epoch => "epoch",
            FenceReason::NotOwner => "not_owner",
            FenceReason::Unchecked => "unchecked",
            FenceReason::Unrecorded => "unrecorded",
        }
    }
}

/// The fencing rule: an action decided under `held` may run only while the consumer still
/// holds the partition and the newest recorded claim (read to the topic's end) is `held`.
pub fn check(
    held: Option<&Claim>,
    recorded: Option<&Claim>,
    holds: bool,
) -> Result<(), FenceReason> {
    if !holds {
        return Err(FenceReason::NotOwner);
    }
    match (held, recorded) {
        (Some(h), Some(r)) if h == r => Ok(()),
        _ => Err(FenceReason::Epoch),
    }
}

/// An operator request as the latch topic carries it from the replica that received it to the
/// deployment's owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireRequest {
    /// `contain`, `release`, `approve_release` or `approve_promotion`.
    pub kind: super::audit::RequestKind,
    /// Deployment.
    pub deployment: String,
    /// The authenticated identity.
    pub identity: String,
    /// Holds the approver role.
    pub approver: bool,
    /// The operator name the body gave, a comment.
    pub stated: Option<String>,
    /// Why.
    pub reason: String,
    /// The canary version (promotion approvals).
    pub model_version: Option<String>,
}

impl WireRequest {
    /// The request in its wire form.
    pub fn of(request: &Request) -> WireRequest {
        use super::audit::RequestKind as K;
        let (kind, deployment, by, reason, model_version) = match request {
            Request::Contain {
                deployment,
                by,
                reason,
            } => (K::Contain, deployment, by, reason, None),
            Request::Release {
                deployment,
                by,
                reason,
            } => (K::Release, deployment, by, reason, None),
            Request::ApproveRelease {
                deployment,
                by,
                reason,
            } => (K::ApproveRelease, deployment, by, reason, None),
            Request::ApprovePromotion {
                deployment,
                by,
                reason,
                model_version,
            } => (
                K::ApprovePromotion,
                deployment,
                by,
                reason,
                Some(model_version.clone()),
            ),
        };
        WireRequest {
            kind,
            deployment: deployment.clone(),
            identity: by.identity.clone(),
            approver: by.approver,
            stated: by.stated.clone(),
            reason: reason.clone(),
            model_version,
        }
    }

    /// The request the owner applies.
    pub fn request(&self) -> Request {
        use super::audit::RequestKind as K;
        let (deployment, reason) = (self.deployment.clone(), self.reason.clone());
        let by = Requester {
            identity: self.identity.clone(),
            approver: self.approver,
            stated: self.stated.clone(),
        };
        match self.kind {
            K::Contain => Request::Contain {
                deployment,
                by,
                reason,
            },
            K::Release => Request::Release {
                deployment,
                by,
                reason,
            },
            K::ApproveRelease => Request::ApproveRelease {
                deployment,
                by,
                reason,
            },
            K::ApprovePromotion => Request::ApprovePromotion {
                deployment,
                by,
                reason,
                model_version: self.model_version.clone().unwrap_or_default(),
            },
        }
    }
}

/// A record of the latch topic (its value, JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// A deployment's latch, as `containment.json` holds it, idempotency keys included.
    Latch {
        /// Deployment.
        deployment: String,
        /// Its event partition; absent for a deployment no replica has seen an event of.
        partition: Option<i32>,
        /// The writer's claim on that partition.
        claim: Option<Claim>,
        /// The forwarded request this change applied, if one did.
        applied: Option<String>,
        /// The latch.
        latch: Box<Latch>,
    },
    /// An owner's claim on an event partition.
    Epoch {
        /// Event partition.
        partition: i32,
        /// The claim.
        claim: Claim,
    },
    /// What an owner's pipeline shows for one of its deployments (`/v1/verdicts`, the gate's
    /// evidence), shared so that every replica answers for it (see `super::views`).
    View {
        /// Deployment.
        deployment: String,
        /// Its event partition.
        partition: i32,
        /// The writer's claim on that partition.
        claim: Claim,
        /// When the owner made the view (wall clock, ms since the epoch).
        made_at_ms: i64,
        /// The view.
        view: Box<DeploymentView>,
    },
    /// An operator request received by a replica that does not own the deployment.
    Request {
        /// Unique id; the key's tombstone says it was applied.
        id: String,
        /// Event partition of the deployment, as the receiving replica knew it.
        partition: Option<i32>,
        /// The request.
        request: WireRequest,
    },
}

impl Record {
    /// The record's key: compaction keeps the newest per deployment, partition or request.
    pub fn key(&self) -> String {
        match self {
            Record::Latch { deployment, .. } => format!("latch/{deployment}"),
            Record::View { deployment, .. } => format!("view/{deployment}"),
            Record::Epoch { partition, .. } => format!("epoch/{partition}"),
            Record::Request { id, .. } => request_key(id),
        }
    }

    /// The event partition the record is about (its latch-topic partition follows from it).
    pub fn partition(&self) -> Option<i32> {
        match self {
            Record::Latch { partition, .. } | Record::Request { partition, .. } => *partition,
            Record::Epoch { partition, .. } | Record::View { partition, .. } => Some(*partition),
        }
    }
}

/// The key of request `id` (its tombstone marks it applied).
pub fn request_key(id: &str) -> String {
    format!("request/{id}")
}

/// A latch as the topic last recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    /// Event partition.
    pub partition: Option<i32>,
    /// The writer's claim.
    pub claim: Option<Claim>,
    /// The latch.
    pub latch: Latch,
}

/// An owner's view of a deployment as the topic last recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedView {
    /// Event partition.
    pub partition: i32,
    /// The writer's claim.
    pub claim: Claim,
    /// When the owner made it (wall clock, ms since the epoch).
    pub made_at_ms: i64,
    /// The view; shared, so that handing the map to readers copies no evidence.
    pub view: Arc<DeploymentView>,
}

/// What tailing the latch topic from its beginning adds up to.
#[derive(Debug, Default)]
pub struct Merged {
    /// The newest accepted latch per deployment.
    pub latches: BTreeMap<String, Stamped>,
    /// The newest accepted owner's view per deployment.
    pub views: BTreeMap<String, SharedView>,
    /// The newest claim per event partition.
    pub claims: BTreeMap<i32, Claim>,
    /// Requests not yet applied, by id.
    pub requests: BTreeMap<String, WireRequest>,
    applied: BTreeSet<String>,
    /// Latch changes and views ignored because a newer claim was recorded first.
    pub fenced_writes: u64,
}

impl Merged {
    /// Takes one tailed record in: `value` is `None` for a tombstone. Undecodable records are
    /// skipped (returns false).
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) -> bool {
        let Some(value) = value else {
            if let Some(id) = key.strip_prefix("request/") {
                self.requests.remove(id);
                self.applied.insert(id.to_string());
            }
            return true;
        };
        let Ok(record) = serde_json::from_slice::<Record>(value) else {
            return false;
        };
        match record {
            Record::Epoch { partition, claim } => {
                // The first record of an epoch wins: two replicas claiming the same epoch
                // agree, by log order, which of them holds it.
                let newer = self
                    .claims
                    .get(&partition)
                    .is_none_or(|c| claim.epoch > c.epoch);
                if newer {
                    self.claims.insert(partition, claim);
                }
            }
            Record::Latch {
                deployment,
                partition,
                claim,
                applied,
                latch,
            } => {
                if !self.current(partition, claim.as_ref()) {
                    self.fenced_writes += 1;
                    return true;
                }
                if let Some(id) = applied {
                    self.requests.remove(&id);
                    self.applied.insert(id);
                }
                self.latches.insert(
                    deployment,
                    Stamped {
                        partition,
                        claim,
                        latch: *latch,
                    },
                );
            }
            Record::View {
                deployment,
                partition,
                claim,
                made_at_ms,
                view,
            } => {
                if !self.current(Some(partition), Some(&claim)) {
                    self.fenced_writes += 1;
                    return true;
                }
                // A producer retry may land an owner's older view after its newer one.
                let older = self
                    .views
                    .get(&deployment)
                    .is_some_and(|v| v.claim == claim && v.made_at_ms > made_at_ms);
                if older {
                    return true;
                }
                self.views.insert(
                    deployment,
                    SharedView {
                        partition,
                        claim,
                        made_at_ms,
                        view: Arc::new(*view),
                    },
                );
            }
            Record::Request { id, request, .. } => {
                if !self.applied.contains(&id) {
                    self.requests.insert(id, request);
                }
            }
        }
        true
    }

    /// A write under `claim` about `partition` counts unless a newer claim on the partition was
    /// recorded first: a zombie's late write is ignored.
    fn current(&self, partition: Option<i32>, claim: Option<&Claim>) -> bool {
        let recorded = partition.and_then(|p| self.claims.get(&p));
        match (recorded, claim) {
            (None, _) => true,
            (Some(r), Some(c)) => c.epoch > r.epoch || c == r,
            (Some(_), None) => false,
        }
    }

    /// Every deployment's latch as the topic holds it.
    pub fn view(&self) -> BTreeMap<String, Latch> {
        self.latches
            .iter()
            .map(|(d, s)| (d.clone(), s.latch.clone()))
            .collect()
    }
}

/// The latch topic as containment uses it. Implemented over Kafka by
/// `crate::persist::latch_topic::LatchTopic`.
pub trait Journal: Send + Sync + 'static {
    /// This replica's writer id.
    fn writer(&self) -> &str;
    /// Produces `record` (or, for `Err(key)`, a tombstone of the request key) and resolves
    /// once the topic acknowledged it.
    fn produce(
        &self,
        record: Result<Record, (Option<i32>, String)>,
    ) -> BoxFuture<'static, Result<(), String>>;
    /// Resolves once the tail has read the latch-topic partition of event partition
    /// `partition` to the end it had when called (bounded; `Err` past the bound).
    fn caught_up(&self, partition: Option<i32>) -> BoxFuture<'static, Result<(), String>>;
    /// Resolves once the topic was read to the end it had at start (every latch is in the
    /// merged view); `Err` when the topic cannot be used.
    fn opened(&self) -> BoxFuture<'static, Result<(), String>>;
    /// The merged view, as tailed so far.
    fn merged(&self) -> std::sync::MutexGuard<'_, Merged>;
    /// Changes whenever the tail took records in.
    fn changed(&self) -> tokio::sync::watch::Receiver<u64>;
}

#[cfg(test)]
mod tests;
