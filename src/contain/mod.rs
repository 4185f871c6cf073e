//! Containment: from verdicts to actions, latched and audited.
//!
//! Owns the containment task. It receives verdict and signal changes from the pipeline (an
//! unbounded channel: the hot path never waits for it) and operator requests from the admin
//! server, decides with the pure [`ladder`], persists the [`latch`] ([`store`]), writes the
//! [`audit`] log, and runs actions on [`providers`] in their own tasks, with [`retry`]
//! (exponential backoff with full jitter on timeouts, connection errors, 429 and 5xx; none on
//! other 4xx; bounded by `containment.retry_for`). Each action runs once per incident, across
//! restarts: its idempotency key is recorded when it succeeds, and the containment actions and
//! critical alerts of a contained deployment not yet done are redone at start-up, while the
//! alerts already raised are re-sent then (the same alerts, kept firing). Every action
//! counts in `driftd_actions_total{provider, outcome}` (`success`, `failure` once retries are
//! exhausted, `dry_run`, `withdrawn`) and, when attempted,
//! `driftd_action_duration_seconds{provider, op}`. A containment action that finally fails
//! also raises a critical alert of its own on every alert target.
//!
//! A change whose evidence is older than `containment.max_evidence_age` is never acted on
//! ([`stale`]): it is held, and acted on only once the published snapshot shows fresh events of
//! the same canary version still drifting.
//!
//! With `persist.latch_topic` it is one of several replicas ([`replicas`], rules in [`fence`]):
//! latches are written to and read back from that topic, requests for another replica's
//! deployment are forwarded, every action is fenced by its partition's epoch, and owners share
//! their deployments' verdict views ([`views`]).
//!
//! The task's loop and its start-up sequence are in `task`; the `Controller` here decides.
//!
//! It must not block the hot path and knows nothing of Kafka.

pub mod audit;
mod batch;
mod catchup;
pub mod fence;
mod handle;
pub mod ladder;
pub mod latch;
pub mod providers;
mod replicas;
mod requests;
pub mod retry;
pub mod stale;
pub mod store;
mod task;
#[cfg(test)]
mod testing;
pub mod views;

pub use handle::ContainHandle;
use handle::{ReloadNote, Reply};
pub use replicas::{Answer, Replication};
pub use requests::Request;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::{Config, ConfigError};
use crate::detect::Change;
use crate::event::format_rfc3339_ms;
use crate::metrics::Metrics;
use crate::pipeline::Published;
use audit::{ActionResult, AttemptDetail, AuditLog, AuditRecord};
use ladder::{Action, Decision, Ladder};
use latch::{action_key, Incident, Latch, Op, Phase, Severity};
use providers::{Context, Target};
use retry::Retry;
use store::{LatchStore, StoreError};

/// Why containment could not start.
#[derive(Debug, thiserror::Error)]
pub enum ContainError {
    /// A target's secret or CA could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state directory is unusable or the latch file corrupt.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for actions: {0}")]
    Http(String),
}

/// The result of one action attempt, reported back to the controller by the action's task.
struct AttemptReport {
    action: Box<Action>,
    attempt: u32,
    error: Option<String>,
    /// No further attempt follows (success, a permanent error, retries exhausted, withdrawn).
    last: bool,
    /// Not attempted: withdrawn by a release while it was retrying.
    withdrawn: bool,
    /// When the verdict or request behind the action reached containment.
    started: Instant,
    /// Not attempted: this replica may no longer act for the deployment (see [`fence`]).
    fenced: Option<fence::FenceReason>,
}

/// The containment task's state.
struct Controller {
    ladder: Ladder,
    store: LatchStore,
    audit: AuditLog,
    targets: HashMap<String, Arc<Target>>,
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
    reports: mpsc::UnboundedSender<AttemptReport>,
    view: watch::Sender<Arc<BTreeMap<String, Arc<Latch>>>>,
    /// This replica's latches as last published, shared with the views handed out: a change
    /// copies the latches that changed, not all of them.
    shown: BTreeMap<String, Arc<Latch>>,
    retry: Retry,
    received: HashMap<String, Instant>,
    /// Actions whose task is still running, by key: (incident id, op, withdrawn flag).
    running: HashMap<String, (String, Op, Arc<AtomicBool>)>,
    /// `containment.max_evidence_age` in milliseconds.
    max_evidence_age_ms: i64,
    /// With `persist.latch_topic`: one of several replicas.
    replicas: Option<replicas::Replicas>,
    /// The batch of queued inputs being handled, if any ([`batch`]).
    batch: Option<batch::Batch>,
}

fn now() -> String {
    format_rfc3339_ms(crate::clock::wall_ms())
}

/// Starts the containment task. Returns the admin handle, the sender the pipeline feeds
/// changes into, and the task. `snapshots` are the pipeline's published snapshots, read to
/// confirm stale verdicts with fresh events.
pub fn start(
    config: &Config,
    admin_bound: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    snapshots: watch::Receiver<Arc<Published>>,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, ContainError> {
    start_replicated(config, admin_bound, metrics, snapshots, shutdown, None)
}

/// What [`start`] returns: the admin handle, the sender the pipeline feeds changes into, and
/// the task.
pub type Started = (
    ContainHandle,
    mpsc::UnboundedSender<Change>,
    tokio::task::JoinHandle<()>,
);

/// [`start`], as one of several replicas when `replication` is given: latches come from and go
/// to the latch topic (`containment.json` is still written, with this replica's own), requests
/// for deployments another replica owns are forwarded, and every action is fenced.
pub fn start_replicated(
    config: &Config,
    admin_bound: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    snapshots: watch::Receiver<Arc<Published>>,
    shutdown: watch::Receiver<bool>,
    replication: Option<Replication>,
) -> Result<Started, ContainError> {
    let c = &config.containment;
    let mut store = LatchStore::open(&c.state_dir)?;
    // Still read, so a corrupt file is refused either way; with several replicas the topic
    // says which latches are this replica's, once it claims their partitions.
    let mut latches = store.load()?;
    if replication.is_some() {
        latches.clear();
    }
    // Starts with the journal folded in, so `containment.json` holds every latch while driftd
    // runs until the journal grows. A failure here is not fatal: the journal still holds them.
    if let Err(e) = store.compact(&latches) {
        tracing::error!(error = %crate::logging::chain(&e), "cannot fold the latch journal into containment.json; changes are still appended to the journal");
    }
    let audit = AuditLog::open(
        &c.state_dir,
        c.audit_max_bytes,
        c.audit_keep,
        &config.hash(),
    )?;
    let targets = providers::resolve(&c.targets, c.action_timeout)?
        .into_iter()
        .map(|t| (t.name.clone(), Arc::new(t)))
        .collect();
    let external_url = config.external_url(admin_bound);
    let ctx = Arc::new(Context {
        client: reqwest::Client::builder()
            .timeout(c.action_timeout)
            .build()
            .map_err(|e| ContainError::Http(e.to_string()))?,
        external_url: external_url.clone(),
        runbook_url: c.runbook_url.clone(),
    });
    let (changes_tx, changes_rx) = mpsc::unbounded_channel::<Change>();
    let (requests_tx, requests_rx) = mpsc::channel::<(Request, Reply)>(64);
    let (reports_tx, reports_rx) = mpsc::unbounded_channel::<AttemptReport>();
    // Served before the task first runs: a contained deployment's gate must read closed from
    // the start.
    let shown: BTreeMap<String, Arc<Latch>> = latches
        .iter()
        .map(|(d, l)| (d.clone(), Arc::new(l.clone())))
        .collect();
    let (view_tx, view_rx) = watch::channel(Arc::new(shown.clone()));
    let (reloads_tx, reloads_rx) = mpsc::unbounded_channel::<ReloadNote>();
    let (remote_tx, remote) = watch::channel(views::Remote::default());
    let handle = ContainHandle {
        reloads: reloads_tx,
        requests: requests_tx,
        view: view_rx,
        audit_path: audit.path().to_path_buf(),
        audit_keep: c.audit_keep,
        external_url,
        policies: Arc::new(c.effective_policies()),
        remote,
        view_bound: views::bound(&config.persist),
    };
    let controller = Controller {
        ladder: Ladder::new(c, latches),
        store,
        audit,
        targets,
        ctx,
        metrics,
        reports: reports_tx,
        view: view_tx,
        shown,
        retry: Retry {
            timeout: c.action_timeout,
            retry_for: c.retry_for,
        },
        received: HashMap::new(),
        running: HashMap::new(),
        max_evidence_age_ms: c.max_evidence_age.as_millis() as i64,
        replicas: replication.map(|r| {
            let sharing = views::Sharing::new(config.persist.interval, remote_tx);
            replicas::Replicas::new(r, sharing)
        }),
        batch: None,
    };
    let inputs = task::Inputs {
        changes: changes_rx,
        requests: requests_rx,
        reports: reports_rx,
        reloads: reloads_rx,
        snapshots,
        shutdown,
    };
    let task = tokio::spawn(task::run(controller, inputs, c.alert_repeat));
    Ok((handle, changes_tx, task))
}

impl Controller {
    pub(super) fn record(&mut self, record: AuditRecord) {
        // In a batch, the fsync comes once, at its end, before any of its actions.
        let appended = match self.batch {
            Some(_) => self.audit.append_unsynced(&now(), &record),
            None => self.audit.append(&now(), &record),
        };
        if let Err(e) = appended {
            tracing::error!(error = %crate::logging::chain(&e), "audit log write failed");
        }
    }

    fn on_reload(&mut self, note: ReloadNote) {
        if let (true, Some(hash)) = (note.outcome == "success", &note.loaded_hash) {
            self.audit.set_config_hash(hash);
        }
        self.record(AuditRecord::ConfigReload {
            outcome: note.outcome.to_string(),
            loaded_hash: note.loaded_hash,
            detail: note.detail,
        });
    }

    fn publish(&mut self) {
        if self.defer_publish() {
            return;
        }
        for dep in self.ladder.take_unpublished() {
            match self.ladder.latch(&dep) {
                Some(latch) => {
                    self.metrics.set_contained(&dep, latch.gate_closed());
                    self.shown.insert(dep, Arc::new(latch.clone()));
                }
                None => {
                    self.shown.remove(&dep);
                }
            }
        }
        self.view.send_replace(Arc::new(self.view()));
        self.publish_views();
    }

    fn persist(&mut self) {
        if self.defer_persist() {
            return;
        }
        let changed = self.ladder.take_unsaved();
        let saved = self.store.save(&changed, self.ladder.latches());
        self.persisted(changed, saved);
    }

    /// Follows the journal append of the `changed` latches: marks them to be written again if
    /// it failed, and writes them to the latch topic.
    fn persisted(
        &mut self,
        changed: std::collections::BTreeSet<String>,
        saved: Result<(), StoreError>,
    ) {
        if let Err(e) = saved {
            tracing::error!(error = %crate::logging::chain(&e), "cannot persist the containment latch; trying again at the next change");
            self.ladder.unsave(changed);
        }
        self.write_latches();
    }

    /// Folds the latch journal into `containment.json` when it is due and every change is in
    /// the journal; the containment task calls it once an input's actions have started.
    fn compact_latches(&mut self) {
        if self.batch.is_some() || self.ladder.has_unsaved() || !self.store.compaction_due() {
            return;
        }
        if let Err(e) = self.store.compact(self.ladder.latches()) {
            tracing::error!(error = %crate::logging::chain(&e), "cannot fold the latch journal into containment.json; changes are still appended to the journal");
        }
    }

    fn on_change(&mut self, change: &Change) {
        let deployment = match change {
            Change::Verdict(v) => &v.deployment,
            Change::Signal(s) => &s.deployment,
        };
        if self.defer(change, deployment) || self.stale_or_forget(change, crate::clock::wall_ms()) {
            return;
        }
        self.act_on(change, deployment);
    }

    /// Runs `change` of `deployment` through the ladder, whatever its age: fresh changes, and
    /// held stale evidence that fresh events confirmed.
    fn act_on(&mut self, change: &Change, deployment: &str) {
        self.received.insert(deployment.to_string(), Instant::now());
        let out = self.ladder.on_change(change, &now());
        self.apply(out);
    }

    fn apply(&mut self, out: Decision) {
        if out.transitions.is_empty() && out.actions.is_empty() && out.ignored.is_empty() {
            return;
        }
        for t in &out.transitions {
            tracing::warn!(deployment = %t.deployment, from = t.from.as_str(), to = t.to.as_str(), why = %t.why, operator = t.operator.as_deref(), "containment transition");
            let evidence = self
                .ladder
                .latch(&t.deployment)
                .and_then(|l| l.incident.as_ref())
                .map(|i| i.evidence.clone());
            let release = self
                .ladder
                .latch(&t.deployment)
                .and_then(|l| l.last_release.clone())
                .filter(|_| t.to == Phase::Released);
            self.record(AuditRecord::Transition {
                transition: t.clone(),
                evidence,
                release,
            });
        }
        for t in out.transitions.iter().filter(|t| t.to == Phase::Released) {
            if let Some(incident) = &t.incident {
                self.withdraw(incident);
            }
        }
        for why in out.ignored {
            self.record(AuditRecord::Ignored { why });
        }
        self.persist();
        self.publish();
        self.run_actions(out.actions);
    }

    fn run_actions(&mut self, actions: Vec<Action>) {
        let Some(actions) = self.defer_actions(actions) else {
            return;
        };
        for action in actions {
            let Some(target) = self.targets.get(&action.target).cloned() else {
                continue;
            };
            let started = self
                .received
                .get(&action.incident.deployment)
                .copied()
                .unwrap_or_else(Instant::now);
            if action.dry_run {
                tracing::warn!(deployment = %action.incident.deployment, target = %action.target, op = action.op.as_str(), "dry-run: would act");
                self.metrics
                    .count_action(target.provider, action.op, "dry_run", None);
                self.record(AuditRecord::Action {
                    key: action.key.clone(),
                    target: action.target.clone(),
                    provider: target.provider.to_string(),
                    op: action.op,
                    result: ActionResult::DryRun,
                    incident: action.incident.id.clone(),
                    attempt: None,
                });
                self.ladder
                    .mark_done(&action.incident.deployment, &action.key);
                self.persist();
                // `/v1/deployments` shows what is done, not what was done at the last change.
                self.publish();
                continue;
            }
            let withdrawn = Arc::new(AtomicBool::new(false));
            self.running.insert(
                action.key.clone(),
                (action.incident.id.clone(), action.op, withdrawn.clone()),
            );
            let (reports, ctx, retry) = (self.reports.clone(), self.ctx.clone(), self.retry);
            let admission = self.admission(&action.incident.deployment);
            tokio::spawn(async move {
                if let Some(admission) = admission {
                    if let Err(reason) = admission.admit(true).await {
                        let _ = reports.send(AttemptReport::fenced(action, started, reason));
                        return;
                    }
                }
                let (target_ref, action_ref, ctx_ref) = (&target, &action, &ctx);
                retry
                    .run(
                        move || async move {
                            providers::execute(target_ref, action_ref, ctx_ref, &now()).await
                        },
                        || !withdrawn.load(Ordering::Acquire),
                        retry::full_jitter,
                        |attempt| {
                            let _ = reports.send(AttemptReport {
                                action: Box::new(action.clone()),
                                attempt: attempt.number,
                                error: attempt.result.err().map(|e| e.message),
                                last: attempt.last,
                                withdrawn: attempt.withdrawn,
                                started,
                                fenced: None,
                            });
                        },
                    )
                    .await;
            });
        }
    }

    /// A release withdraws what its incident still has running — containment and alert
    /// triggers, not the resolves the release itself issued — so no late attempt flips a flag
    /// back or re-opens a page after the operator's decision.
    fn withdraw(&mut self, incident: &str) {
        for (key, (of, op, withdrawn)) in &self.running {
            if of == incident && *op != Op::Resolve {
                withdrawn.store(true, Ordering::Release);
                tracing::info!(key = %key, "release: withdrawing an action still in flight");
            }
        }
    }

    fn on_attempt(&mut self, report: AttemptReport) {
        let AttemptReport {
            action,
            attempt,
            error,
            last,
            withdrawn,
            started,
            fenced,
        } = report;
        let elapsed = started.elapsed();
        let provider = self
            .targets
            .get(&action.target)
            .map_or("unknown", |t| t.provider);
        if last {
            self.running.remove(&action.key);
        }
        if let Some(reason) = fenced {
            self.on_fenced(&action, reason);
            return;
        }
        if withdrawn {
            self.metrics
                .count_action(provider, action.op, "withdrawn", None);
            self.record(AuditRecord::Action {
                key: action.key.clone(),
                target: action.target.clone(),
                provider: provider.to_string(),
                op: action.op,
                result: ActionResult::Withdrawn,
                incident: action.incident.id.clone(),
                attempt: None,
            });
            return;
        }
        self.record(AuditRecord::Action {
            key: action.key.clone(),
            target: action.target.clone(),
            provider: provider.to_string(),
            op: action.op,
            result: match (&error, last) {
                (None, _) => ActionResult::Success,
                (Some(_), true) => ActionResult::Failed,
                (Some(_), false) => ActionResult::Retrying,
            },
            incident: action.incident.id.clone(),
            attempt: Some(AttemptDetail {
                attempt,
                error: error.clone(),
                elapsed_ms: elapsed.as_millis() as u64,
            }),
        });
        if !last {
            return;
        }
        match error {
            None => {
                self.metrics
                    .count_action(provider, action.op, "success", Some(elapsed));
                tracing::info!(target = %action.target, op = action.op.as_str(), deployment = %action.incident.deployment, elapsed_ms = elapsed.as_millis() as u64, "action done");
                self.ladder
                    .mark_done(&action.incident.deployment, &action.key);
                self.persist();
                // `/v1/deployments` shows what is done, not what was done at the last change.
                self.publish();
            }
            Some(e) => {
                self.metrics
                    .count_action(provider, action.op, "failure", Some(elapsed));
                tracing::error!(target = %action.target, op = action.op.as_str(), deployment = %action.incident.deployment, error = %e, "action failed after retries");
                if action.op == Op::Contain {
                    self.alert_action_failure(&action, &e);
                }
            }
        }
    }

    /// A containment that could not be carried out is itself an emergency.
    fn alert_action_failure(&mut self, failed: &Action, error: &str) {
        let incident = Incident {
            id: format!("{}:action-failed:{}", failed.incident.id, failed.target),
            reason: format!(
                "containment action on `{}` FAILED: {error}; contain by hand",
                failed.target
            ),
            evidence: json!({"metric": "containment_action", "failed_key": failed.key, "error": error}),
            ..failed.incident.clone()
        };
        let actions: Vec<Action> = self
            .ladder
            .alert_targets()
            .iter()
            .map(|t| Action {
                key: action_key(&incident.id, t, Op::Trigger, Severity::Critical),
                target: t.clone(),
                op: Op::Trigger,
                severity: Severity::Critical,
                incident: incident.clone(),
                dry_run: false,
            })
            .collect();
        self.record(AuditRecord::ActionFailureAlert {
            failed: failed.key.clone(),
            error: error.to_string(),
        });
        self.run_actions(actions);
    }

    /// Alertmanager forgets alerts that are not re-sent; keep the open ones alive: the open
    /// incident of every suspect or contained deployment, every raised signal alert and the
    /// alerts of pending releases.
    /// Returns how many were re-sent.
    fn resend_alerts(&mut self) -> usize {
        let now = now();
        let mut resent = 0;
        for (dep, latch) in self.ladder.latches() {
            let open = match (latch.phase, &latch.incident) {
                (Phase::Contained | Phase::Suspect, Some(incident)) => Some(incident),
                _ => None,
            };
            let approvals = latch.pending_release.iter().flat_map(|p| p.alerts.values());
            // A dry-run incident's alerts were never sent: "done" only records the would-be
            // action.
            for incident in open
                .into_iter()
                .chain(latch.signal_alerts.values())
                .chain(approvals)
                .filter(|i| !i.dry_run)
            {
                for (name, target) in &self.targets {
                    let severity = [Severity::Critical, Severity::Warning]
                        .into_iter()
                        .find(|s| {
                            latch
                                .done
                                .contains(&action_key(&incident.id, name, Op::Trigger, *s))
                        });
                    let (Some(severity), "alertmanager") = (severity, target.provider) else {
                        continue;
                    };
                    let action = Action {
                        key: action_key(&incident.id, name, Op::Trigger, severity),
                        target: name.clone(),
                        op: Op::Trigger,
                        severity,
                        incident: incident.clone(),
                        dry_run: false,
                    };
                    resent += 1;
                    let (target, ctx, now, dep) =
                        (target.clone(), self.ctx.clone(), now.clone(), dep.clone());
                    let (admission, reports) = (self.admission(&dep), self.reports.clone());
                    tokio::spawn(async move {
                        if let Some(admission) = admission {
                            if let Err(reason) = admission.admit(false).await {
                                let started = Instant::now();
                                let _ =
                                    reports.send(AttemptReport::fenced(action, started, reason));
                                return;
                            }
                        }
                        if let Err(e) = providers::execute(&target, &action, &ctx, &now).await {
                            tracing::warn!(deployment = %dep, error = %e, "alert re-send failed; next try at the next repeat");
                        }
                    });
                }
            }
        }
        resent
    }
}
