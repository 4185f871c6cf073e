//! The admin server's handle on the containment task: operator requests in, the latch view
//! and the audit log out, config reloads to audit.
//!
//! Owns nothing but channels and paths: every decision is the task's (`super`), so the handle
//! must not change a latch or write the audit log itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::latch::Latch;
use super::{audit, ladder, providers, Answer, Request};
use crate::config::{PolicyConfig, PromotionMode};

pub(super) type Reply = oneshot::Sender<Result<Answer, String>>;

/// What the admin server uses: requests in, latch view out.
#[derive(Clone)]
pub struct ContainHandle {
    pub(super) requests: mpsc::Sender<(Request, Reply)>,
    pub(super) view: watch::Receiver<Arc<BTreeMap<String, Arc<Latch>>>>,
    pub(super) audit_path: PathBuf,
    pub(super) audit_keep: usize,
    pub(super) external_url: String,
    pub(super) reloads: mpsc::UnboundedSender<ReloadNote>,
    pub(super) policies: Arc<Vec<PolicyConfig>>,
    pub(super) remote: watch::Receiver<super::views::Remote>,
    pub(super) view_bound: std::time::Duration,
}

/// A config reload to audit (see [`ContainHandle::config_reload`]).
pub(super) struct ReloadNote {
    pub(super) outcome: &'static str,
    pub(super) loaded_hash: Option<String>,
    pub(super) detail: Option<String>,
}

impl ContainHandle {
    /// Sends an operator request and waits for the outcome: applied here, or forwarded to the
    /// replica that owns the deployment.
    pub async fn submit(&self, request: Request) -> Result<Answer, String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((request, tx))
            .await
            .map_err(|_| "containment is shutting down".to_string())?;
        rx.await
            .map_err(|_| "containment is shutting down".to_string())?
    }

    /// Sends an operator request that this replica applies, and waits for the latch after it.
    pub async fn request(&self, request: Request) -> Result<Latch, String> {
        match self.submit(request).await? {
            Answer::Applied { latch } => Ok(*latch),
            Answer::Forwarded { id, .. } => Err(format!(
                "forwarded to the deployment's owner as request {id}"
            )),
        }
    }

    /// Every deployment's latch.
    pub fn latches(&self) -> Arc<BTreeMap<String, Arc<Latch>>> {
        self.view.borrow().clone()
    }

    /// The verdict views of the deployments another replica owns (none with one replica).
    pub fn remote_views(&self) -> super::views::Remote {
        self.remote.borrow().clone()
    }

    /// How old another owner's view may be before the gate stops trusting it for promotion
    /// (see [`super::views::bound`]).
    pub fn view_bound(&self) -> std::time::Duration {
        self.view_bound
    }

    /// The last `limit` audit records, oldest first (an unreadable log reads as empty).
    pub fn audit(&self, limit: usize) -> Vec<serde_json::Value> {
        self.audit_page(audit::page::Cursor::Latest, limit)
            .map(|p| p.records)
            .unwrap_or_default()
    }

    /// One page of the audit log (see [`audit::page`]).
    pub fn audit_page(
        &self,
        cursor: audit::page::Cursor,
        limit: usize,
    ) -> std::io::Result<audit::page::Page> {
        let files = audit::page::files(&self.audit_path, self.audit_keep);
        audit::page::read(&files, cursor, limit)
    }

    /// Records a config reload in the audit log: `outcome` as in
    /// `driftd_config_reloads_total`, the loaded file's hash (which becomes the records' config
    /// hash when the outcome is `success`), and why it was refused.
    pub fn config_reload(
        &self,
        outcome: &'static str,
        loaded_hash: Option<String>,
        detail: Option<String>,
    ) {
        let _ = self.reloads.send(ReloadNote {
            outcome,
            loaded_hash,
            detail,
        });
    }

    /// What the promotion gate of `deployment` needs (its policy's `promotion`).
    pub fn promotion_mode(&self, deployment: &str) -> PromotionMode {
        ladder::approval::promotion_mode(&self.policies, deployment)
    }

    /// The command an operator runs to release `deployment` through this driftd.
    pub fn release_command(&self, deployment: &str) -> String {
        providers::release_command(&self.external_url, deployment)
    }
}
