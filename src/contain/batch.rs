//! Group commit: the inputs already queued when the containment task wakes up are handled as one
//! batch, with one audit fsync and one latch file write for all of them.
//!
//! Each verdict change used to cost an fsync of the audit log and a whole-file rewrite of
//! `containment.json` (two fsyncs) before its actions started, and each action's report the
//! same again; a burst of incidents queued behind those one by one. In a batch the records are
//! appended as they come; at its end the audit log is fsynced, the latches are written once and
//! published once, and only then are the batch's actions started. Every guarantee stays: the
//! latch is persisted and the audit records are on disk before any action of the batch runs,
//! and every action keeps its record and its idempotency key. It must not hold an input back:
//! a batch is only what is queued already.

use super::ladder::Action;
use super::Controller;

/// The most inputs handled as one batch: a bound on how long the first of them waits.
pub(super) const MAX_BATCH: usize = 256;

/// What a batch deferred to its end.
#[derive(Default)]
pub(super) struct Batch {
    /// The latches changed: append them to the latch journal (and the latch topic).
    persist: bool,
    /// Publish the latches to `/v1/deployments` and the gauges.
    publish: bool,
    /// The actions decided, started once everything above is durable.
    actions: Vec<Action>,
}

impl Controller {
    /// Handles `first` and then whatever `next` still yields, up to [`MAX_BATCH`] inputs, with
    /// `handle`, as one batch.
    pub(super) fn batch<T>(
        &mut self,
        first: T,
        mut next: impl FnMut() -> Option<T>,
        mut handle: impl FnMut(&mut Controller, T),
    ) {
        self.batch = Some(Batch::default());
        handle(self, first);
        for _ in 1..MAX_BATCH {
            let Some(input) = next() else { break };
            handle(self, input);
        }
        self.end_batch();
    }

    /// Defers the latch write to the end of the batch, if one is open; false otherwise.
    pub(super) fn defer_persist(&mut self) -> bool {
        self.batch.as_mut().map(|b| b.persist = true).is_some()
    }

    /// Defers the publication to the end of the batch, if one is open; false otherwise.
    pub(super) fn defer_publish(&mut self) -> bool {
        self.batch.as_mut().map(|b| b.publish = true).is_some()
    }

    /// Defers `actions` to the end of the batch, if one is open; gives them back otherwise.
    pub(super) fn defer_actions(&mut self, actions: Vec<Action>) -> Option<Vec<Action>> {
        match self.batch.as_mut() {
            Some(b) => {
                b.actions.extend(actions);
                None
            }
            None => Some(actions),
        }
    }

    /// Makes the batch durable (the audit fsync and the latch journal's, side by side),
    /// publishes it, then starts its actions.
    fn end_batch(&mut self) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        let changed = if batch.persist {
            self.ladder.take_unsaved()
        } else {
            Default::default()
        };
        let (audit, store, latches) = (&mut self.audit, &mut self.store, self.ladder.latches());
        let (synced, saved) = if changed.is_empty() {
            (audit.sync(), Ok(()))
        } else {
            // Two files, two fsyncs: waiting for both at once rather than one after the other
            // takes the slower one's time, not their sum, off every action of the batch.
            std::thread::scope(|s| {
                let synced = s.spawn(|| audit.sync());
                let saved = store.save(&changed, latches);
                let synced = synced
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (synced, saved)
            })
        };
        if let Err(e) = synced {
            tracing::error!(error = %crate::logging::chain(&e), "audit log write failed");
        }
        if batch.persist {
            self.persisted(changed, saved);
        }
        if batch.publish {
            self.publish();
        }
        self.run_actions(batch.actions);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::routing::post;
    use axum::Router;

    use crate::contain::latch::Phase;
    use crate::contain::store::LatchStore;
    use crate::contain::testing::{fail, hooked, serve, Running};

    /// Per webhook request: its deployment, whether the latch state held it contained and
    /// whether `audit.log` held its transition when the request arrived.
    type Found = Arc<Mutex<Vec<(String, bool, bool)>>>;

    async fn hook(State((state, found)): State<(PathBuf, Found)>, body: Bytes) -> &'static str {
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let d = body["incident"]["deployment"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        // Never fail the request: a failed one would be retried, and the retry hide the error.
        let latches = LatchStore::open(&state)
            .and_then(|mut s| s.load())
            .unwrap_or_default();
        let contained = latches.get(&d).is_some_and(|l| l.phase == Phase::Contained);
        let audit = std::fs::read_to_string(state.join("audit.log")).unwrap_or_default();
        let recorded = audit.lines().any(|l| {
            l.contains(r#""event":"transition""#) && l.contains(&format!(r#""deployment":"{d}""#))
        });
        found.lock().unwrap().push((d, contained, recorded));
        ""
    }

    /// A burst of incidents is handled as batches; each action still starts only once its
    /// latch is persisted and its transition in the audit log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_is_persisted_and_audited_before_any_of_its_actions() {
        const N: usize = 40;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let found: Found = Arc::default();
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state((state.clone(), found.clone()));
        let addr = serve(app).await;
        let config = hooked(dir.path(), state, &format!("http://{addr}/hook"));
        let running = Running::start(&config, None);
        for i in 0..N {
            running.changes.send(fail(&format!("dep-{i}"))).unwrap();
        }
        for _ in 0..200 {
            if found.lock().unwrap().len() == N {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        running.stop().await;
        let found = found.lock().unwrap();
        assert_eq!(found.len(), N, "one webhook request per incident");
        for (d, contained, recorded) in found.iter() {
            assert!(contained, "{d}: acted on before its latch was written");
            assert!(recorded, "{d}: acted on before its transition was audited");
        }
    }
}
