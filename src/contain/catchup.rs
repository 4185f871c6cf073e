//! The containment task's side of stale evidence: a stale change is recorded, audited, counted
//! and shown instead of reaching the ladder, and a held stale verdict or signal is acted on (or
//! dropped) when the published snapshot says so (the rule and the judgement are in
//! [`super::stale`]).
//!
//! The notice is deliberately low: a `warn` log line per stale change, one audit record, the
//! `driftd_stale_changes_total{kind}` counter and the `stale` entries in `/v1/deployments`,
//! `/v1/verdicts` and the gate body — no alert, since a backfill of days of history over many
//! deployments would otherwise page (or flood a warning channel) for canaries long gone. It must
//! not act on a stale change.

use super::audit::AuditRecord;
use super::ladder::signal_alert_id;
use super::latch::{Stale, StaleSignal};
use super::stale::{self, Confirm, ConfirmSignal};
use super::{now, Controller};
use crate::detect::{Change, Signal};
use crate::pipeline::Published;

impl Controller {
    /// Handles `change` when its evidence is stale (returns true); a fresh verdict supersedes
    /// what was held for its metric and replaces what was held for other canary versions.
    pub(super) fn stale_or_forget(&mut self, change: &Change, now_ms: i64) -> bool {
        let (deployment, at, kind) = match change {
            Change::Verdict(v) => (&v.deployment, &v.at, "verdict"),
            Change::Signal(s) => (&s.deployment, &s.at, "signal"),
        };
        let Some(age_ms) = stale::stale_change(change, now_ms, self.max_evidence_age_ms) else {
            if let Change::Signal(s) = change {
                self.forget_signal(s, "superseded by a fresh change of the same signal");
            }
            if let Change::Verdict(v) = change {
                if self
                    .ladder
                    .latch(&v.deployment)
                    .is_some_and(|l| !l.stale.is_empty())
                {
                    let why = format!(
                        "superseded by a fresh {} verdict of {}",
                        v.state.as_str(),
                        v.model_version
                    );
                    for held in stale::forget(self.ladder.latch_mut(&v.deployment), v) {
                        self.dropped(&v.deployment, &held, &why);
                    }
                    self.persist();
                    self.publish();
                }
            }
            return false;
        };
        self.metrics.count_stale(kind);
        let held = match change {
            Change::Verdict(v) if self.ladder.covers(v) => {
                let held = stale::hold(self.ladder.latch_mut(deployment), v, age_ms, &now());
                self.persist();
                self.publish();
                held
            }
            Change::Signal(s) if s.active && self.ladder.alerts_on_signals(deployment) => {
                let held = stale::hold_signal(self.ladder.latch_mut(deployment), s, age_ms, &now());
                self.persist();
                self.publish();
                held
            }
            _ => false,
        };
        // A stale clear of a signal whose alert is open still resolves it: standing down on old
        // evidence pages no one, and holding it back would leave the alert firing for good.
        let resolves = match change {
            Change::Signal(s) if !s.active => {
                self.forget_signal(s, "cleared");
                self.ladder
                    .latch(deployment)
                    .is_some_and(|l| l.signal_alerts.contains_key(&signal_alert_id(s)))
            }
            _ => false,
        };
        match resolves {
            true => {
                tracing::warn!(deployment = %deployment, kind, at = %at, age_seconds = age_ms / 1000, "stale evidence: a signal cleared; its open alert is resolved")
            }
            false => {
                tracing::warn!(deployment = %deployment, kind, at = %at, age_seconds = age_ms / 1000, held, "stale evidence: recorded, not acted on")
            }
        }
        self.record(AuditRecord::Stale {
            deployment: deployment.clone(),
            kind: kind.to_string(),
            at: at.clone(),
            age_seconds: age_ms as f64 / 1000.0,
            max_evidence_age_seconds: self.max_evidence_age_ms as f64 / 1000.0,
            held,
            change: serde_json::to_value(change).unwrap_or_default(),
        });
        !resolves
    }

    /// Forgets the held stale signals `s` supersedes (see [`stale::forget_signal`]), auditing
    /// each as never alerted on because of `why`.
    fn forget_signal(&mut self, s: &Signal, why: &str) {
        let Some(latch) = self.ladder.latch(&s.deployment) else {
            return;
        };
        if latch.stale_signals.is_empty() {
            return;
        }
        for held in stale::forget_signal(self.ladder.latch_mut(&s.deployment), s) {
            self.dropped_signal(&s.deployment, &held, why);
        }
        self.persist();
        self.publish();
    }

    /// A held stale signal that will never be alerted on: logged and audited.
    fn dropped_signal(&mut self, deployment: &str, held: &StaleSignal, why: &str) {
        tracing::info!(deployment = %deployment, why = %why, "stale signal dropped, never alerted on");
        self.record(AuditRecord::Ignored {
            why: format!(
                "stale {} of {deployment} {} (event time {}, {:.0}s old when received): never alerted on: {why}",
                held.kind.as_str(),
                held.model_version,
                held.at,
                held.age_seconds
            ),
        });
    }

    /// A held stale verdict that will never be acted on: logged and audited.
    fn dropped(&mut self, deployment: &str, held: &Stale, why: &str) {
        tracing::info!(deployment = %deployment, why = %why, "stale verdict dropped, never acted on");
        self.record(AuditRecord::Ignored {
            why: format!(
                "stale {} {} {} of {deployment} {} (event time {}, {:.0}s old when received): never acted on: {why}",
                held.metric,
                held.source.as_str(),
                held.state.as_str(),
                held.model_version,
                held.at,
                held.age_seconds
            ),
        });
    }

    /// Judges every held stale verdict against a new snapshot: those fresh events confirm go
    /// through the ladder as fresh verdicts, those that can no longer be acted on are dropped.
    pub(super) fn on_snapshot(&mut self, published: &Published, now_ms: i64) {
        let mut decided = Vec::new();
        for (dep, latch) in self.ladder.latches() {
            for (key, held) in &latch.stale {
                match stale::confirm(held, dep, published, now_ms, self.max_evidence_age_ms) {
                    Confirm::Wait => {}
                    d => decided.push((dep.clone(), key.clone(), held.clone(), d)),
                }
            }
        }
        let mut signals = Vec::new();
        for (dep, latch) in self.ladder.latches() {
            for (key, held) in &latch.stale_signals {
                match stale::confirm_signal(held, dep, published, now_ms, self.max_evidence_age_ms)
                {
                    ConfirmSignal::Wait => {}
                    d => signals.push((dep.clone(), key.clone(), held.clone(), d)),
                }
            }
        }
        if decided.is_empty() && signals.is_empty() {
            return;
        }
        let mut confirmed = Vec::new();
        for (dep, key, held, decision) in signals {
            self.ladder.latch_mut(&dep).stale_signals.remove(&key);
            match decision {
                ConfirmSignal::Wait => {}
                ConfirmSignal::Drop(why) => self.dropped_signal(&dep, &held, &why),
                ConfirmSignal::Act(s) => {
                    tracing::warn!(deployment = %dep, at = %s.at, kind = s.kind.as_str(), "stale signal confirmed by fresh events: containment alerts");
                    confirmed.push(Change::Signal(*s));
                }
            }
        }
        for (dep, key, held, decision) in decided {
            self.ladder.latch_mut(&dep).stale.remove(&key);
            match decision {
                Confirm::Wait => {}
                Confirm::Drop(why) => self.dropped(&dep, &held, &why),
                Confirm::Act(v) => {
                    tracing::warn!(deployment = %dep, at = %v.at, "stale verdict confirmed by fresh events: containment acts");
                    confirmed.push(Change::Verdict(*v));
                }
            }
        }
        self.persist();
        self.publish();
        for change in confirmed {
            match &change {
                Change::Verdict(_) => self.on_change(&change),
                // Re-judging its age would hold it again: an absence keeps the silent arm's
                // old last event by nature. Its freshness is what the confirmation checked.
                Change::Signal(s) => self.act_on(&change, &s.deployment.clone()),
            }
        }
    }
}
