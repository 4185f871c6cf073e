//! Where a report's audit records come from: the audit files of a state directory (the current
//! `audit.log` and its rotated generations), or a running driftd's `GET /v1/audit`, paged from
//! the oldest record. Either way every record is read; a line that is not JSON (a torn write
//! after a crash) is skipped, as the admin API skips it. Must not write anything.

use std::path::Path;

use serde_json::Value;

use super::ReportError;
use crate::contain::audit::page::files;

/// Rotated generations looked for beside `audit.log` (`containment.audit_keep` is at most this).
const MAX_GENERATIONS: usize = 1000;

/// Every record of the audit log at `current` and its rotated generations, oldest first.
pub fn read_files(current: &Path) -> Result<Vec<Value>, ReportError> {
    if !current.is_file() {
        return Err(ReportError::Read {
            path: current.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let mut records = Vec::new();
    for path in files(current, MAX_GENERATIONS) {
        let text = std::fs::read_to_string(&path).map_err(|source| ReportError::Read {
            path: path.clone(),
            source,
        })?;
        records.extend(
            text.lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(Value::is_object),
        );
    }
    Ok(records)
}

/// Records per request: the admin API's largest page.
const PAGE: usize = 1000;

/// Every record a running driftd's admin API at `admin_url` serves, oldest first, read with
/// `token` (a viewer's or better).
pub async fn fetch(admin_url: &str, token: &str) -> Result<Vec<Value>, ReportError> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| ReportError::Api {
            url: admin_url.into(),
            detail: e.to_string(),
        })?;
    let mut records = Vec::new();
    let mut after = 0u64;
    loop {
        let url = format!(
            "{}/v1/audit?after={after}&limit={PAGE}",
            admin_url.trim_end_matches('/')
        );
        let api = |detail: String| ReportError::Api {
            url: url.clone(),
            detail,
        };
        let resp = client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| api(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(api(format!("HTTP {status}")));
        }
        let page: Value = resp.json().await.map_err(|e| api(e.to_string()))?;
        let batch = page["records"].as_array().cloned().unwrap_or_default();
        let next = page["next_after"].as_u64();
        let done = batch.is_empty() || next.is_none_or(|n| n <= after);
        records.extend(batch);
        if done {
            return Ok(records);
        }
        after = next.unwrap_or(after);
    }
}
