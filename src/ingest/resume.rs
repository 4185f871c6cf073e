//! Exactly-once across restarts: which messages a partition's restored state already holds,
//! when its state may be snapshotted, and which offset may be committed.
//!
//! The rules, per partition:
//! - a snapshot records `next`, the offset after the last message its state reflects; one is
//!   taken only when every message processed so far is durable (applied, or dead-lettered and
//!   acknowledged), so nothing below `next` is still waiting on the dead-letter topic;
//! - the committed offset never passes the oldest snapshot kept (two are kept), so whichever
//!   snapshot a restart falls back to, the consumer starts at or before its `next`;
//! - on restart the consumer is sent to the restored `next` (it starts at the committed
//!   offset, which may lie before it, or past it when the snapshot is older than what was
//!   committed: another replica's progress, a backup), and every message below `next` is
//!   skipped, being in the state already — as is any message below the offset after the last
//!   one this process processed (a redelivery after a broker reconnect); a message past `next`
//!   fetched before that seek took effect is dropped and the seek made again
//!   ([`Progress::gap`]);
//! - while a partition's state is still being read (from the state topic, which can take long
//!   on a loaded broker), its messages are held back, neither processed nor acknowledged, and
//!   once restored the consumer goes back to the snapshot's `next`, or without a snapshot to
//!   the first message held back ([`Progress::held`]).
//!
//! Pure bookkeeping, no Kafka client and no I/O, so the rules are property-tested against
//! crashes at any point ([`tests`]).

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
struct Part {
    /// Messages below this are in state already.
    skip_below: i64,
    /// The offset after the last message processed here.
    next: Option<i64>,
    /// Everything below this is durable.
    durable: Option<i64>,
    /// `next` of the snapshots on disk, newest first (at most two).
    kept: Vec<i64>,
    /// Processed since the last snapshot.
    dirty: bool,
    /// A snapshot at this offset is being written.
    writing: Option<i64>,
    /// Currently assigned to this process.
    active: bool,
    /// Restored at this `next`, and no message received since: see [`Progress::gap`].
    resumed_at: Option<i64>,
    /// Its state is still being read (from the state topic): messages are held back, not
    /// processed ([`Progress::held`]).
    restoring: bool,
    /// The first message held back while restoring: where consumption goes back to when no
    /// snapshot is restored.
    held_from: Option<i64>,
}

/// Per-partition progress of one consumer.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    parts: BTreeMap<i32, Part>,
}

impl Progress {
    /// `partition` was assigned. True when this process has never held it, so its state must
    /// be restored from its snapshot (then call [`Progress::restored`]); false when its state
    /// is in memory from an earlier assignment.
    pub fn assigned(&mut self, partition: i32) -> bool {
        match self.parts.get_mut(&partition) {
            Some(p) => {
                p.active = true;
                false
            }
            None => {
                self.parts.insert(
                    partition,
                    Part {
                        skip_below: i64::MIN,
                        active: true,
                        ..Part::default()
                    },
                );
                true
            }
        }
    }

    /// `partition`'s state is being read (from the state topic, off the control loop): until
    /// [`Progress::restored`], its messages are held back, not processed.
    pub fn restoring(&mut self, partition: i32) {
        let p = self.parts.entry(partition).or_default();
        p.restoring = true;
        p.held_from = None;
    }

    /// Whether the message at `offset` must be held back (not processed, not acknowledged)
    /// because `partition`'s state is still being read; the first one held is remembered, so
    /// that consumption goes back to it ([`Progress::restored`]).
    pub fn held(&mut self, partition: i32, offset: i64) -> bool {
        match self.parts.get_mut(&partition) {
            Some(p) if p.restoring => {
                p.held_from = Some(p.held_from.map_or(offset, |h| h.min(offset)));
                true
            }
            _ => false,
        }
    }

    /// `partition`'s state was restored from a snapshot at `next` (`None`: no usable snapshot,
    /// a clean start); `kept` are the `next` offsets of the snapshot files on disk, newest
    /// first. Returns where the consumer must be sent: the snapshot's `next` or, without one,
    /// the first message held back while restoring (`None`: it stays where it is).
    pub fn restored(&mut self, partition: i32, next: Option<i64>, kept: Vec<i64>) -> Option<i64> {
        let p = self.parts.entry(partition).or_default();
        p.skip_below = next.unwrap_or(i64::MIN);
        p.next = next;
        p.durable = next;
        p.kept = if next.is_some() { kept } else { Vec::new() };
        p.kept.truncate(2);
        p.active = true;
        p.restoring = false;
        let to = next.or(p.held_from.take());
        p.resumed_at = to;
        to
    }

    /// Where to send the consumer back to when the first message received for `partition`
    /// since its restore, at `offset`, lies past the restored `next` (or, without a snapshot,
    /// past the first message held back while restoring): the messages in between are in no
    /// state. The consumer is sent to `next` at every restore, but a message fetched
    /// from the committed offset before that seek took effect can still arrive first; when the
    /// committed offset is past the snapshot (the state topic could not be read and the local
    /// copy predates another replica's progress, or `state_dir` was restored from a backup),
    /// that message must not be processed. Asked once per restore: the message after the
    /// second seek is processed whatever its offset (the ones in between may have expired).
    pub fn gap(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let next = self.parts.get_mut(&partition)?.resumed_at.take()?;
        (offset > next).then_some(next)
    }

    /// `partition` was revoked. Its state stays in memory; if it comes back, processing goes
    /// on from where it stopped.
    pub fn revoked(&mut self, partition: i32) {
        if let Some(p) = self.parts.get_mut(&partition) {
            p.active = false;
        }
    }

    /// Forgets `partition` (revoked while a state topic is configured): its state went with
    /// it, so a later assignment restores it as new.
    pub fn forget(&mut self, partition: i32) {
        self.parts.remove(&partition);
    }

    /// Whether the message at `offset` must be processed: false when the state holds it
    /// already (restored from a snapshot, or processed here before a redelivery).
    pub fn admit(&self, partition: i32, offset: i64) -> bool {
        match self.parts.get(&partition) {
            Some(p) => offset >= p.skip_below && p.next.is_none_or(|n| offset >= n),
            None => true,
        }
    }

    /// The message at `offset` was processed.
    pub fn processed(&mut self, partition: i32, offset: i64) {
        let p = self.parts.entry(partition).or_insert_with(|| Part {
            skip_below: i64::MIN,
            active: true,
            ..Part::default()
        });
        p.next = Some(offset + 1);
        p.dirty = true;
    }

    /// The message at `offset` is durable, and so is everything before it.
    pub fn durable(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.parts.get_mut(&partition) {
            p.durable = Some(p.durable.map_or(offset + 1, |d| d.max(offset + 1)));
        }
    }

    /// Assigned partitions whose state may be snapshotted now, with the `next` the snapshot
    /// records: nothing pending, no write in flight, and either changed since the last snapshot or quiet
    /// with an older snapshot still kept beside the newest (one more write then lets the commit
    /// reach the end, so a quiet partition shows no lag).
    pub fn due(&self) -> Vec<(i32, i64)> {
        self.parts
            .iter()
            .filter(|(_, p)| {
                let behind = p.kept.get(1).is_some_and(|k| Some(*k) != p.next);
                (p.dirty || behind)
                    && p.active
                    && p.writing.is_none()
                    && p.next.is_some()
                    && p.durable == p.next
            })
            .map(|(&partition, p)| (partition, p.next.expect("checked")))
            .collect()
    }

    /// A snapshot of `partition` at `next` is being written.
    pub fn writing(&mut self, partition: i32, next: i64) {
        if let Some(p) = self.parts.get_mut(&partition) {
            p.writing = Some(next);
            p.dirty = false;
        }
    }

    /// The snapshot at `next` is on disk. Returns the offset that may now be committed: the
    /// `next` of the older snapshot kept (or of this one, when it is the only one).
    pub fn written(&mut self, partition: i32, next: i64) -> Option<i64> {
        let p = self.parts.get_mut(&partition)?;
        p.writing = None;
        p.kept.insert(0, next);
        p.kept.truncate(2);
        p.kept.iter().copied().min()
    }

    /// The snapshot write failed: the partition is due again.
    pub fn write_failed(&mut self, partition: i32) {
        if let Some(p) = self.parts.get_mut(&partition) {
            p.writing = None;
            p.dirty = true;
        }
    }

    /// The offset that may be committed for `partition` (see [`Progress::written`]).
    pub fn ceiling(&self, partition: i32) -> Option<i64> {
        self.parts.get(&partition)?.kept.iter().copied().min()
    }

    /// Whether `partition` is assigned to this process.
    pub fn active(&self, partition: i32) -> bool {
        self.parts.get(&partition).is_some_and(|p| p.active)
    }

    /// The partitions this process holds state for.
    pub fn known(&self) -> Vec<i32> {
        self.parts.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests;
