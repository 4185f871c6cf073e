//! Handing the pipeline's publications to the metrics: on the consumer's thread (replay,
//! tests), or on a thread of its own (the daemon), so that the hot path pays only for the copy
//! it publishes and the per-deployment series' update never stalls it. The per-cohort series
//! are rendered from the publication at each scrape (`crate::metrics`), so an evicted cohort
//! leaves them with the next publication.
//!
//! Owns the order of the writes: publications are applied in the order the pipeline made them,
//! and those queued behind a newer one are skipped (the newer one writes every series they
//! would have). Must not decide anything or touch cohort state.

use std::sync::mpsc;
use std::sync::Arc;

use super::Published;
use crate::metrics::Metrics;

/// One write, in pipeline order.
enum Job {
    Publish(Arc<Published>),
    /// Answered once every job before it is written.
    #[cfg(test)]
    Flush(mpsc::Sender<()>),
}

/// The writes' state: the metrics.
struct Writer {
    metrics: Arc<Metrics>,
}

impl Writer {
    fn apply(&mut self, job: Job) {
        match job {
            Job::Publish(published) => self.metrics.publish(published),
            #[cfg(test)]
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Where the pipeline's publications and evictions are written into the metrics.
pub(super) struct Publisher(Mode);

enum Mode {
    /// On the caller's thread, before `publish` returns.
    Inline(Writer),
    /// On the `driftd-publish` thread; the sender is dropped with the pipeline, which ends it.
    Thread(mpsc::Sender<Job>),
}

impl Publisher {
    /// Writes on the caller's thread.
    pub(super) fn inline(metrics: Arc<Metrics>) -> Publisher {
        Publisher(Mode::Inline(Writer { metrics }))
    }

    /// Moves the writing to a thread of its own (a no-op when it is there already).
    pub(super) fn off_thread(&mut self) {
        if let Mode::Thread(_) = self.0 {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let Mode::Inline(mut writer) = std::mem::replace(&mut self.0, Mode::Thread(tx)) else {
            unreachable!("checked above");
        };
        std::thread::Builder::new()
            .name("driftd-publish".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let mut jobs = batch.into_iter().peekable();
                    while let Some(job) = jobs.next() {
                        let superseded = matches!(
                            (&job, jobs.peek()),
                            (Job::Publish(_), Some(Job::Publish(_)))
                        );
                        if !superseded {
                            writer.apply(job);
                        }
                    }
                }
            })
            .expect("the OS refused a thread for metric publication: raise the process's thread limit (ulimit -u, pids.max)");
    }

    /// Writes a publication's series (now, or on the publication thread).
    pub(super) fn publish(&mut self, published: Arc<Published>) {
        self.send(Job::Publish(published));
    }

    /// Waits until everything sent before is written.
    #[cfg(test)]
    pub(super) fn flush(&mut self) {
        let (tx, rx) = mpsc::channel();
        self.send(Job::Flush(tx));
        rx.recv()
            .expect("the publication thread answers while the pipeline lives");
    }

    fn send(&mut self, job: Job) {
        match &mut self.0 {
            Mode::Inline(writer) => writer.apply(job),
            Mode::Thread(tx) => {
                // The thread only ends when this sender is dropped, so the send cannot fail.
                let _ = tx.send(job);
            }
        }
    }
}
