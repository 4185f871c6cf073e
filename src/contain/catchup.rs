//! The containment task's side of stale evidence: a stale change is recorded, audited, counted
//! and shown instead of reaching the ladder, and a held stale verdict is acted on (or dropped)
//! when the published snapshot says so (the rule and the judgement are in [`super::stale`]).
//!
//! The notice is deliberately low: a `warn` log line per stale change, one audit record, the
//! `driftd_stale_changes_total{kind}` counter and the `stale` entries in `/v1/deployments`,
//! `/v1/verdicts` and the gate body — no alert, since a backfill of days of history over many
//! deployments would otherwise page (or flood a warning channel) for canaries long gone. It must
//! not act on a stale change.

use super::audit::AuditRecord;
use super::latch::Stale;
use super::stale::{self, Confirm};
use super::{now, Controller};
use crate::detect::Change;
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
            _ => false,
        };
        tracing::warn!(deployment = %deployment, kind, at = %at, age_seconds = age_ms / 1000, held, "stale evidence: recorded, not acted on");
        self.record(AuditRecord::Stale {
            deployment: deployment.clone(),
            kind: kind.to_string(),
            at: at.clone(),
            age_seconds: age_ms as f64 / 1000.0,
            max_evidence_age_seconds: self.max_evidence_age_ms as f64 / 1000.0,
            held,
            change: serde_json::to_value(change).unwrap_or_default(),
        });
        true
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
        if decided.is_empty() {
            return;
        }
        let mut confirmed = Vec::new();
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
            self.on_change(&change);
        }
    }
}
