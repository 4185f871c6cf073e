//! The containment task's side of several replicas (`persist.latch_topic`): claiming the
//! partitions the consumer is given, writing every latch change before its actions start,
//! forwarding requests for deployments another replica owns and applying those forwarded to
//! this one, and the check every action passes first ([`Admission`]).
//!
//! Owns when those happen; the rules are [`super::fence`]'s and the topic is the [`Journal`].
//! Must not act for a deployment whose partition it has not claimed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use tokio::sync::{oneshot, watch};

use super::fence::{self, Claim, FenceReason, Journal, Ownership, Record};
use super::ladder::Action;
use super::latch::Latch;
use super::views::Sharing;
use super::{AttemptReport, Controller, Request};
use crate::detect::Change;
use tokio::time::Instant;

/// What became of an operator request.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Answer {
    /// Applied here: the deployment's latch after it.
    Applied {
        /// The latch.
        latch: Box<Latch>,
    },
    /// Another replica owns the deployment: the request was written to `persist.latch_topic`
    /// for it to apply (and audit).
    Forwarded {
        /// The request's id in the latch topic.
        id: String,
        /// The deployment's event partition.
        partition: i32,
    },
}

/// How long a partition held but not claimed waits before the next claim.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// The changes kept per unclaimed partition; the oldest go first past it.
const WAITING_CAP: usize = 1_000;

/// What the daemon hands containment to run as one of several replicas.
#[derive(Clone)]
pub struct Replication {
    /// The latch topic.
    pub journal: Arc<dyn Journal>,
    /// What the consumer holds, kept by ingest.
    pub ownership: Arc<Ownership>,
}

/// A write of latch changes, shared by the actions that must wait for it; true once the topic
/// acknowledged it (and every write before it).
type Write = Shared<BoxFuture<'static, bool>>;

/// This replica's state as one of several.
pub(super) struct Replicas {
    pub(super) journal: Arc<dyn Journal>,
    ownership: Arc<Ownership>,
    pub(super) claims: BTreeMap<i32, Claim>,
    generation: u64,
    /// When to look again at partitions held but not claimed yet.
    retry: Option<Instant>,
    /// Changes of deployments whose partition is held but not claimed yet, replayed in order
    /// once it is (at most [`WAITING_CAP`] per partition).
    waiting: BTreeMap<i32, VecDeque<Change>>,
    /// The latches as last written, to write only what changed.
    produced: BTreeMap<String, Latch>,
    last_write: Write,
    /// The forwarded request being applied (id, deployment): its latch write names it.
    applying: Option<(String, String)>,
    /// Forwarded requests this replica took up.
    taken: BTreeSet<String>,
    next_id: u64,
    pub(super) tailed: watch::Receiver<u64>,
    /// The verdict views shared and read ([`super::views`]).
    pub(super) sharing: Sharing,
}

impl Replicas {
    pub(super) fn new(r: Replication, sharing: Sharing) -> Replicas {
        let tailed = r.journal.changed();
        Replicas {
            journal: r.journal,
            ownership: r.ownership,
            claims: BTreeMap::new(),
            // Forces a first look at the assignment.
            generation: u64::MAX,
            retry: None,
            waiting: BTreeMap::new(),
            produced: BTreeMap::new(),
            last_write: async { true }.boxed().shared(),
            applying: None,
            taken: BTreeSet::new(),
            next_id: 0,
            tailed,
            sharing,
        }
    }

    /// Resolves once the latch topic was read to its end at start.
    pub(super) fn opened(&self) -> BoxFuture<'static, Result<(), String>> {
        self.journal.opened()
    }

    pub(super) fn partition_of(&self, deployment: &str) -> Option<i32> {
        self.ownership.partition_of(deployment).or_else(|| {
            self.journal
                .merged()
                .latches
                .get(deployment)
                .and_then(|s| s.partition)
        })
    }
}

/// What an action's task checks before it runs.
pub(super) struct Admission {
    journal: Arc<dyn Journal>,
    ownership: Arc<Ownership>,
    partition: Option<i32>,
    claim: Option<Claim>,
    write: Write,
}

impl Admission {
    /// `Ok` when the action may run: the latch change it follows is recorded (when
    /// `after_write`), the consumer still holds the partition and, read to the latch topic's
    /// end, no newer claim on it was recorded.
    pub(super) async fn admit(self, after_write: bool) -> Result<(), FenceReason> {
        if after_write && !self.write.await {
            return Err(FenceReason::Unrecorded);
        }
        let Some(p) = self.partition else {
            return Ok(());
        };
        if let Err(e) = self.journal.caught_up(Some(p)).await {
            tracing::warn!(partition = p, error = %e, "fencing check could not read the latch topic");
            return Err(FenceReason::Unchecked);
        }
        let recorded = self.journal.merged().claims.get(&p).cloned();
        fence::check(
            self.claim.as_ref(),
            recorded.as_ref(),
            self.ownership.holds(p),
        )
    }
}

/// Resolves when the latch topic's tail read records; never without one.
pub(super) async fn tailed_changed(
    tailed: &mut Option<watch::Receiver<u64>>,
) -> Result<(), watch::error::RecvError> {
    match tailed {
        Some(t) => t.changed().await,
        None => std::future::pending().await,
    }
}

impl AttemptReport {
    /// An action dropped by fencing before its first attempt.
    pub(super) fn fenced(action: Action, started: Instant, reason: FenceReason) -> AttemptReport {
        AttemptReport {
            action: Box::new(action),
            attempt: 0,
            error: None,
            last: true,
            withdrawn: false,
            started,
            fenced: Some(reason),
        }
    }
}

impl Controller {
    /// An action dropped by fencing: counted, logged and audited, never marked done.
    pub(super) fn on_fenced(&mut self, action: &Action, reason: FenceReason) {
        self.metrics.count_fenced(reason.as_str());
        tracing::warn!(deployment = %action.incident.deployment, target = %action.target, op = action.op.as_str(), reason = reason.as_str(), "action dropped: this replica may no longer act for the deployment's partition");
        self.record(super::audit::AuditRecord::ActionDropped {
            key: action.key.clone(),
            target: action.target.clone(),
            op: action.op,
            incident: action.incident.id.clone(),
            reason: reason.as_str().to_string(),
        });
    }

    /// The check for an action of `deployment`; `None` with one replica.
    pub(super) fn admission(&self, deployment: &str) -> Option<Admission> {
        let r = self.replicas.as_ref()?;
        let partition = r.partition_of(deployment);
        Some(Admission {
            journal: r.journal.clone(),
            ownership: r.ownership.clone(),
            partition,
            claim: partition.and_then(|p| r.claims.get(&p).cloned()),
            write: r.last_write.clone(),
        })
    }

    /// The latches to show: every replica's, from the topic, with this one's own on top.
    pub(super) fn view(&self) -> BTreeMap<String, Arc<Latch>> {
        let mut view: BTreeMap<String, Arc<Latch>> = self
            .replicas
            .as_ref()
            .map(|r| {
                let merged = r.journal.merged().view();
                merged.into_iter().map(|(d, l)| (d, Arc::new(l))).collect()
            })
            .unwrap_or_default();
        for (d, l) in &self.shown {
            view.insert(d.clone(), l.clone());
        }
        view
    }

    /// Follows the consumer's assignment: claims each partition it was given (an epoch one
    /// above the newest recorded, read to the topic's end first), takes over the latches the
    /// topic holds for it and runs what they left undone; forgets the latches of partitions
    /// given up. A no-op while the assignment is unchanged.
    pub(super) async fn sync(&mut self) {
        let Some(r) = self.replicas.as_mut() else {
            return;
        };
        let generation = r.ownership.generation();
        let due = r.retry.is_some_and(|at| Instant::now() >= at);
        if generation == r.generation && !due {
            return;
        }
        r.generation = generation;
        r.retry = None;
        let assigned = r.ownership.assigned();
        let journal = r.journal.clone();
        let lost: Vec<i32> = r
            .claims
            .keys()
            .filter(|p| !assigned.contains(p))
            .copied()
            .collect();
        for p in lost {
            r.claims.remove(&p);
            r.waiting.remove(&p);
            let gone: Vec<String> = self
                .ladder
                .latches()
                .keys()
                .filter(|d| r.partition_of(d) == Some(p))
                .cloned()
                .collect();
            for d in gone {
                self.ladder.forget(&d);
                r.produced.remove(&d);
            }
            tracing::info!(partition = p, "latch claim given up with the partition");
        }
        let new: Vec<i32> = assigned
            .iter()
            .filter(|p| !r.claims.contains_key(p))
            .copied()
            .collect();
        let mut taken_over = Vec::new();
        let mut replay = Vec::new();
        let mut unclaimed = false;
        for p in new {
            // A claim made without the topic read to its end could take over latches older
            // than the last owner's, and redo what it did: not claimed, tried again at the
            // next look (within a second); actions for the partition wait until then.
            if let Err(e) = journal.caught_up(Some(p)).await {
                tracing::warn!(partition = p, error = %e, "partition not claimed yet: the latch topic was not read to its end; trying again");
                unclaimed = true;
                continue;
            }
            let newest = journal.merged().claims.get(&p).cloned();
            let claim = Claim::next(newest.as_ref(), journal.writer());
            let record = Record::Epoch {
                partition: p,
                claim: claim.clone(),
            };
            if let Err(e) = journal.produce(Ok(record)).await {
                tracing::warn!(partition = p, error = %e, "partition not claimed yet: its epoch was not recorded; trying again");
                unclaimed = true;
                continue;
            }
            let read = journal.caught_up(Some(p)).await;
            if read.is_err() || journal.merged().claims.get(&p) != Some(&claim) {
                // Another replica claimed the same epoch first, or the claim is not read back
                // yet: the consumer holds the partition, so a higher epoch is claimed next.
                tracing::warn!(partition = p, "partition not claimed yet: another claim came first or this one was not read back; trying again");
                unclaimed = true;
                continue;
            }
            tracing::info!(partition = p, epoch = claim.epoch, "latch epoch claimed");
            r.claims.insert(p, claim);
            let latches: Vec<(String, Latch)> = journal
                .merged()
                .latches
                .iter()
                .filter(|(_, s)| s.partition == Some(p))
                .map(|(d, s)| (d.clone(), s.latch.clone()))
                .collect();
            for (d, latch) in latches {
                *self.ladder.latch_mut(&d) = latch.clone();
                r.produced.insert(d.clone(), latch);
                taken_over.push(d);
            }
            replay.extend(r.waiting.remove(&p).unwrap_or_default());
        }
        // Changes held for a partition given up before it was claimed go with it.
        r.waiting.retain(|p, _| assigned.contains(p));
        if unclaimed {
            r.retry = Some(Instant::now() + CLAIM_RETRY);
        }
        self.take_over(&taken_over);
        for change in replay {
            self.on_change(&change);
        }
        // The views of partitions given up are now another owner's to show.
        self.publish_views();
    }

    /// Runs what the latches taken over left undone.
    fn take_over(&mut self, taken_over: &[String]) {
        if taken_over.is_empty() {
            return;
        }
        let pending: Vec<_> = self
            .ladder
            .pending()
            .into_iter()
            .filter(|a| taken_over.contains(&a.incident.deployment))
            .collect();
        if !pending.is_empty() {
            self.record(super::audit::AuditRecord::Resume {
                pending_actions: pending.iter().map(|a| a.key.clone()).collect(),
            });
            self.run_actions(pending);
        }
        self.publish();
    }

    /// Keeps `change` for later when its deployment's partition is held but not claimed yet
    /// (true); it is decided once the claim is recorded, so no action runs unfenced and none
    /// is lost to the fence.
    pub(super) fn defer(&mut self, change: &Change, deployment: &str) -> bool {
        let Some(r) = self.replicas.as_mut() else {
            return false;
        };
        let Some(p) = r.partition_of(deployment) else {
            return false;
        };
        if r.claims.contains_key(&p) || !r.ownership.holds(p) {
            return false;
        }
        let waiting = r.waiting.entry(p).or_default();
        if waiting.len() == WAITING_CAP {
            waiting.pop_front();
            tracing::warn!(
                partition = p,
                "partition still not claimed: its oldest held change was dropped"
            );
        }
        waiting.push_back(change.clone());
        true
    }

    /// Produces the latches that changed since the last write, each with this replica's claim
    /// on its partition, after every earlier write.
    pub(super) fn write_latches(&mut self) {
        let Some(r) = self.replicas.as_mut() else {
            return;
        };
        let mut records = Vec::new();
        for (d, latch) in self.ladder.latches() {
            if r.produced.get(d) == Some(latch) {
                continue;
            }
            let partition = r.partition_of(d);
            let claim = partition.and_then(|p| r.claims.get(&p).cloned());
            if partition.is_some() && claim.is_none() {
                continue;
            }
            r.produced.insert(d.clone(), latch.clone());
            records.push(Record::Latch {
                deployment: d.clone(),
                partition,
                claim,
                applied: r
                    .applying
                    .as_ref()
                    .filter(|(_, of)| of == d)
                    .map(|(id, _)| id.clone()),
                latch: Box::new(latch.clone()),
            });
        }
        if !records.is_empty() {
            r.chain(records.into_iter().map(Ok).collect());
        }
    }

    /// Sends a request for a deployment another replica owns to the latch topic and answers
    /// that it was forwarded; hands any other request back.
    pub(super) fn forward(
        &mut self,
        request: Request,
        reply: oneshot::Sender<Result<Answer, String>>,
    ) -> Option<(Request, oneshot::Sender<Result<Answer, String>>)> {
        let Some(r) = self.replicas.as_mut() else {
            return Some((request, reply));
        };
        let wire = fence::WireRequest::of(&request);
        let partition = match r.partition_of(&wire.deployment) {
            Some(p) if !r.claims.contains_key(&p) => p,
            _ => return Some((request, reply)),
        };
        r.next_id += 1;
        let id = format!("{}-{}", r.journal.writer(), r.next_id);
        let record = Record::Request {
            id: id.clone(),
            partition: Some(partition),
            request: wire,
        };
        let sent = r.journal.produce(Ok(record));
        tokio::spawn(async move {
            let answer = match sent.await {
                Ok(()) => {
                    tracing::info!(partition, request = %id, "operator request forwarded to the deployment's owner");
                    Ok(Answer::Forwarded { id, partition })
                }
                Err(e) => Err(format!(
                    "the deployment is owned by another replica and the request could not be forwarded ({e}); try again"
                )),
            };
            let _ = reply.send(answer);
        });
        None
    }

    /// After the tail read records: shows the new view and applies the forwarded requests for
    /// deployments this replica owns, each once, then marks them applied.
    pub(super) fn on_tailed(&mut self) {
        let Some(r) = self.replicas.as_ref() else {
            return;
        };
        let pending: Vec<(String, fence::WireRequest)> = r
            .journal
            .merged()
            .requests
            .iter()
            .filter(|(id, _)| !r.taken.contains(*id))
            .map(|(id, w)| (id.clone(), w.clone()))
            .collect();
        let mine: Vec<_> = pending
            .into_iter()
            .filter(|(_, w)| {
                r.partition_of(&w.deployment)
                    .is_some_and(|p| r.claims.contains_key(&p))
            })
            .collect();
        for (id, wire) in mine {
            let r = self.replicas.as_mut().expect("checked above");
            r.taken.insert(id.clone());
            r.applying = Some((id.clone(), wire.deployment.clone()));
            tracing::info!(request = %id, "applying an operator request forwarded by another replica");
            let _ = self.on_request(wire.request());
            let r = self.replicas.as_mut().expect("checked above");
            r.applying = None;
            let partition = r.partition_of(&wire.deployment);
            r.chain(vec![Err((partition, id))]);
        }
        self.publish();
    }
}

impl Replicas {
    fn chain(&mut self, records: Vec<Result<Record, (Option<i32>, String)>>) {
        let previous = self.last_write.clone();
        let sends: Vec<_> = records
            .into_iter()
            .map(|r| self.journal.produce(r))
            .collect();
        let write = async move {
            // Each record is a whole latch: a later write that succeeds records what an earlier
            // failed one did not.
            previous.await;
            let mut ok = true;
            for send in sends {
                if let Err(e) = send.await {
                    tracing::error!(error = %e, "latch change not recorded in persist.latch_topic; the actions it leads to are dropped");
                    ok = false;
                }
            }
            ok
        }
        .boxed()
        .shared();
        tokio::spawn(write.clone());
        self.last_write = write;
    }
}

#[cfg(test)]
mod tests;
