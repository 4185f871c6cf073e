//! Several replicas: each owner shares what its pipeline shows for its deployments (the
//! `/v1/verdicts` entry, which is also the gate's evidence) through the latch topic, so that
//! every replica answers `/v1/verdicts` and the promotion gate the same for every deployment.
//!
//! When: an owned deployment's view is produced at once when a decision input changed (a
//! metric's state by source, the canary version, a raised signal: [`Signature`]), and otherwise
//! refreshed at most once per `persist.interval`, so the evidence figures elsewhere are at most
//! that old; it is looked at on each published snapshot and each second, never per event.
//!
//! The age rule ([`bound`], [`expired`]): a replica serving another owner's view older than
//! `3 × persist.interval + persist.latch_read_timeout` (three refreshes missed, plus the time a
//! record may take to be read) no longer trusts it for promotion: the gate caps its decision at
//! `insufficient` (`crate::admin::gate::expire`). Its age is measured against this replica's
//! wall clock, so clock skew between replicas adds to it.
//!
//! Owns when views are shared and which ones a replica shows; the merge is [`super::fence`]'s.
//! Must not decide the gate (the admin server does, with `crate::admin::gate`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::fence::{Record, SharedView};
use super::Controller;
use crate::config::PersistConfig;
use crate::detect::{DeploymentView, VerdictState};
use crate::event::Arm;
use crate::pipeline::Published;

/// The views of deployments another replica owns, by deployment, as this replica read them.
pub type Remote = Arc<BTreeMap<String, SharedView>>;

/// How old another owner's view may be before the gate stops trusting it for promotion.
pub fn bound(persist: &PersistConfig) -> Duration {
    3 * persist.interval + persist.latch_read_timeout
}

/// True when a view made at `made_at_ms` is older than `bound` at `now_ms`; its age (never
/// negative: a clock ahead of this one reads as 0) either way.
pub fn expired(made_at_ms: i64, now_ms: i64, bound: Duration) -> (bool, i64) {
    let age = (now_ms - made_at_ms).max(0);
    (age > bound.as_millis() as i64, age)
}

/// What a view's reader decides on, apart from the evidence figures: a change of it is shared at
/// once.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    canary_version: Option<String>,
    /// Per metric: the worst state, then canary-vs-control, self-baseline and late drift.
    metrics: Vec<(String, [Option<VerdictState>; 4])>,
    sample_ratio_mismatch: bool,
    telemetry_absent: Vec<Arm>,
    earlier_versions: usize,
}

impl Signature {
    /// The signature of `view`.
    pub fn of(view: &DeploymentView) -> Signature {
        Signature {
            canary_version: view.canary_version.clone(),
            metrics: view
                .metrics
                .iter()
                .map(|m| {
                    let states = [
                        Some(m.state),
                        Some(m.canary_vs_control.state),
                        m.self_baseline.as_ref().map(|v| v.state),
                        m.late_drift.as_ref().map(|v| v.state),
                    ];
                    (m.metric.clone(), states)
                })
                .collect(),
            sample_ratio_mismatch: view.sample_ratio_mismatch,
            telemetry_absent: view.telemetry_absent.clone(),
            earlier_versions: view.history.len(),
        }
    }
}

/// The owner's side: what it last shared of each deployment, and when.
pub(super) struct Sharing {
    refresh_ms: i64,
    /// Per deployment: the signature shared, under which claim's epoch, and when.
    last: BTreeMap<String, (Signature, u64, i64)>,
    /// Deployments whose last view was not acknowledged by the topic: shared again next time.
    failed: Arc<Mutex<Vec<String>>>,
    /// The views of deployments another replica owns, for the admin server.
    remote: watch::Sender<Remote>,
}

impl Sharing {
    pub(super) fn new(refresh: Duration, remote: watch::Sender<Remote>) -> Sharing {
        Sharing {
            refresh_ms: refresh.as_millis() as i64,
            last: BTreeMap::new(),
            failed: Arc::default(),
            remote,
        }
    }

    /// True when `view` is to be shared at `now_ms` under the claim of `epoch`: its signature
    /// changed since it was last shared, or the claim did (the partition came back), or that was
    /// `persist.interval` ago. Records it as shared.
    pub(super) fn due(&mut self, view: &DeploymentView, epoch: u64, now_ms: i64) -> bool {
        let signature = Signature::of(view);
        let due = self.last.get(&view.deployment).is_none_or(|(s, e, at)| {
            *s != signature || *e != epoch || now_ms - at >= self.refresh_ms
        });
        if due {
            self.last
                .insert(view.deployment.clone(), (signature, epoch, now_ms));
        }
        due
    }

    /// Forgets what was shared of `deployment`: its next view is shared whatever it says.
    pub(super) fn forget(&mut self, deployment: &str) {
        self.last.remove(deployment);
    }
}

impl Controller {
    /// Shares the views of `published` this replica owns that are [`Sharing::due`] at `now_ms`,
    /// each under this replica's claim on its partition.
    pub(super) fn share_views(&mut self, published: &Published, now_ms: i64) {
        let Some(r) = self.replicas.as_mut() else {
            return;
        };
        let failed: Vec<String> = std::mem::take(
            &mut *r
                .sharing
                .failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for d in failed {
            r.sharing.forget(&d);
        }
        for view in &published.deployments {
            let Some(partition) = r.partition_of(&view.deployment) else {
                continue;
            };
            let Some(claim) = r.claims.get(&partition).cloned() else {
                continue;
            };
            if !r.sharing.due(view, claim.epoch, now_ms) {
                continue;
            }
            let sent = r.journal.produce(Ok(Record::View {
                deployment: view.deployment.clone(),
                partition,
                claim,
                made_at_ms: now_ms,
                view: Box::new(view.clone()),
            }));
            let (failed, deployment) = (r.sharing.failed.clone(), view.deployment.clone());
            tokio::spawn(async move {
                if let Err(e) = sent.await {
                    tracing::warn!(deployment = %deployment, error = %e, "verdict view not shared through persist.latch_topic; trying again within a second");
                    failed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(deployment);
                }
            });
        }
    }

    /// Hands the admin server the views of the deployments this replica does not own now.
    pub(super) fn publish_views(&self) {
        let Some(r) = self.replicas.as_ref() else {
            return;
        };
        let remote: BTreeMap<String, SharedView> = r
            .journal
            .merged()
            .views
            .iter()
            .filter(|(_, v)| !r.claims.contains_key(&v.partition))
            .map(|(d, v)| (d.clone(), v.clone()))
            .collect();
        r.sharing.remote.send_replace(Arc::new(remote));
    }
}

#[cfg(test)]
mod tests;
