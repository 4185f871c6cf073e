//! The containment task's loop: what it waits on and in which order it handles it.
//!
//! Owns the start-up sequence (the latch topic read first with several replicas, then the
//! pending actions and the open alerts) and the priorities between inputs. Must not decide
//! anything itself: every input goes to the `Controller`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::audit::AuditRecord;
use super::handle::{ReloadNote, Reply};
use super::{replicas, AttemptReport, Controller, Request};
use crate::detect::Change;
use crate::pipeline::Published;
use replicas::Answer;

/// What the containment task receives.
pub(super) struct Inputs {
    /// Verdict and signal changes from the pipeline.
    pub(super) changes: mpsc::UnboundedReceiver<Change>,
    /// Operator requests from the admin server.
    pub(super) requests: mpsc::Receiver<(Request, Reply)>,
    /// The actions' attempt reports.
    pub(super) reports: mpsc::UnboundedReceiver<AttemptReport>,
    /// Config reloads, to audit.
    pub(super) reloads: mpsc::UnboundedReceiver<ReloadNote>,
    /// The pipeline's published snapshots.
    pub(super) snapshots: watch::Receiver<Arc<Published>>,
    /// Shutdown.
    pub(super) shutdown: watch::Receiver<bool>,
}

/// Runs the task until shutdown; `repeat` is `containment.alert_repeat`.
pub(super) async fn run(mut controller: Controller, mut inputs: Inputs, repeat: Duration) {
    // With several replicas nothing is decided, shown or forwarded before every latch
    // the topic holds was read; changes and requests queue meanwhile.
    if let Some(r) = &controller.replicas {
        let opened = r.opened();
        tokio::select! {
            _ = crate::signals::stopped(&mut inputs.shutdown) => return,
            opened = opened => if let Err(e) = opened {
                tracing::error!(error = %e, "containment cannot start without persist.latch_topic; fix the topic and restart driftd");
                return;
            },
        }
    }
    controller.publish();
    let pending = controller.ladder.pending();
    if !pending.is_empty() {
        controller.record(AuditRecord::Resume {
            pending_actions: pending.iter().map(|a| a.key.clone()).collect(),
        });
        controller.run_actions(pending);
    }
    // Alertmanager holds an alert only until a while after its last post, and driftd may
    // have been down for longer: re-send the open alerts now rather than one
    // `alert_repeat` later. The same alert (labels, start), so no second page.
    let resent = controller.resend_alerts();
    if resent > 0 {
        tracing::info!(alerts = resent, "open alerts re-sent at start-up");
    }
    let mut resend = tokio::time::interval(repeat);
    // After a pause (SIGSTOP, a stalled VM) the missed ticks must not burst: one re-send
    // covers them all, and a burst would post the same alerts dozens of times at once.
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resend.tick().await;
    // Pending releases lapse on the wall clock, to the second.
    let mut lapse = tokio::time::interval(Duration::from_secs(1));
    lapse.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tailed = controller.replicas.as_ref().map(|r| r.tailed.clone());
    loop {
        // Every input is handled under the assignment as it is now: a partition just given
        // is claimed (and its latches taken over) before any change of its deployments.
        tokio::select! {
            biased;
            _ = crate::signals::stopped(&mut inputs.shutdown) => break,
            Some(change) = inputs.changes.recv() => {
                controller.sync().await;
                controller.batch(change, || inputs.changes.try_recv().ok(), |c, change| c.on_change(&change));
            }
            Some((request, reply)) = inputs.requests.recv() => {
                controller.sync().await;
                if let Some((request, reply)) = controller.forward(request, reply) {
                    let answer = controller
                        .on_request(request)
                        .map(|latch| Answer::Applied {
                            latch: Box::new(latch),
                        });
                    let _ = reply.send(answer);
                }
            }
            Some(report) = inputs.reports.recv() => {
                controller.batch(report, || inputs.reports.try_recv().ok(), Controller::on_attempt);
            }
            Some(note) = inputs.reloads.recv() => controller.on_reload(note),
            Ok(()) = inputs.snapshots.changed() => {
                let published = inputs.snapshots.borrow_and_update().clone();
                controller.on_snapshot(&published, crate::clock::wall_ms());
                controller.share_views(&published, crate::clock::wall_ms());
            }
            Ok(()) = replicas::tailed_changed(&mut tailed) => {
                controller.sync().await;
                controller.on_tailed();
            }
            _ = resend.tick() => {
                controller.sync().await;
                controller.resend_alerts();
            }
            _ = lapse.tick() => {
                controller.sync().await;
                controller.expire_releases(crate::clock::wall_ms());
                // Refreshes the views of an owner whose pipeline publishes nothing new.
                controller.share_views(&inputs.snapshots.borrow().clone(), crate::clock::wall_ms());
            }
        }
        controller.compact_latches();
    }
}
