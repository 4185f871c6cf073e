//! The flagd provider: switches a flag in an OpenFeature flagd flag-definition file to its safe
//! variant.
//!
//! Owns the read-edit-write of flag files: serialised per file within driftd, atomic (flagd
//! never reads a torn file) and verified by reading the file back. It must not touch any flag
//! other than its own, nor any other field of the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

use super::ActionError;
use crate::contain::store::atomic_write;

/// The lock of one flag file. Every flip of a file is a read-edit-write of the whole file, so
/// two flips of the same file (two flags, or two deployments contained at once) must take turns
/// or one of them is lost while recorded as done.
fn flag_file_lock(path: &Path) -> Arc<Mutex<()>> {
    static LOCKS: Mutex<BTreeMap<PathBuf, Arc<Mutex<()>>>> = Mutex::new(BTreeMap::new());
    // Two targets may name the same file by different paths.
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    LOCKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_default()
        .clone()
}

/// Switches `flag` in a flagd flag-definition file to `safe_variant` for everyone: sets
/// `defaultVariant`, removes `targeting` (which would override it), enables the flag, and keeps
/// every other flag and field. Atomic, so flagd never reads a torn file; serialised per file
/// within driftd; and verified by reading the file back, so a flip that another writer undid is
/// retried instead of recorded as done.
pub fn flip_flagd(path: &Path, flag: &str, safe_variant: &str) -> Result<(), ActionError> {
    let lock = flag_file_lock(path);
    let _turn = lock.lock().unwrap_or_else(PoisonError::into_inner);
    write_safe_variant(path, flag, safe_variant)?;
    let back = std::fs::read(path)
        .ok()
        .and_then(|t| serde_json::from_slice::<Value>(&t).ok());
    let flipped = back
        .as_ref()
        .and_then(|doc| doc.get("flags")?.get(flag))
        .is_some_and(|f| {
            f.get("defaultVariant").and_then(Value::as_str) == Some(safe_variant)
                && f.get("targeting").is_none()
                && f.get("state").and_then(Value::as_str) == Some("ENABLED")
        });
    if !flipped {
        return Err(ActionError::retryable(format!(
                "flag `{flag}` in {} is not at `{safe_variant}` after writing it; another writer changed the file",
                path.display()
            )));
    }
    Ok(())
}

fn write_safe_variant(path: &Path, flag: &str, safe_variant: &str) -> Result<(), ActionError> {
    let text = std::fs::read(path).map_err(|e| {
        ActionError::retryable(format!("cannot read flag file {}: {e}", path.display()))
    })?;
    let mut doc: Value = serde_json::from_slice(&text).map_err(|e| {
        ActionError::permanent(format!("flag file {} is not JSON: {e}", path.display()))
    })?;
    let f = doc
        .get_mut("flags")
        .and_then(|flags| flags.get_mut(flag))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| {
            ActionError::permanent(format!("flag `{flag}` is not in {}", path.display()))
        })?;
    if f.get("variants")
        .and_then(|v| v.get(safe_variant))
        .is_none()
    {
        return Err(ActionError::permanent(format!(
            "flag `{flag}` has no variant `{safe_variant}`"
        )));
    }
    f.insert("defaultVariant".into(), safe_variant.into());
    f.insert("state".into(), "ENABLED".into());
    f.remove("targeting");
    let bytes = serde_json::to_vec_pretty(&doc).expect("JSON value serialises");
    atomic_write(path, &bytes).map_err(|e| ActionError::retryable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn flagd_flip_sets_safe_variant_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        std::fs::write(
            &path,
            r#"{"$schema":"https://flagd.dev/schema/v0/flags.json","flags":{"canary":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","targeting":{"if":[true,"on"]}},"other":{"state":"ENABLED","variants":{"a":1},"defaultVariant":"a"}}}"#,
        )
        .unwrap();
        flip_flagd(&path, "canary", "off").unwrap();
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["flags"]["canary"]["defaultVariant"], "off");
        assert!(doc["flags"]["canary"].get("targeting").is_none());
        assert_eq!(doc["flags"]["other"]["defaultVariant"], "a");
        assert_eq!(doc["$schema"], "https://flagd.dev/schema/v0/flags.json");
        flip_flagd(&path, "canary", "off").unwrap();
        assert!(!flip_flagd(&path, "missing", "off").unwrap_err().retryable);
        assert!(!flip_flagd(&path, "canary", "nope").unwrap_err().retryable);
    }

    /// Regression: flips of one file by several targets at once raced (read, edit, rewrite
    /// through one temp name per process) and lost flips that were recorded as done.
    #[test]
    fn concurrent_flips_of_one_file_all_land() {
        const N: usize = 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        for round in 0..10 {
            let flags: serde_json::Map<String, Value> = (0..N)
                .map(|i| {
                    (
                        format!("f{i}"),
                        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}),
                    )
                })
                .collect();
            std::fs::write(&path, json!({ "flags": flags }).to_string()).unwrap();
            let start = std::sync::Arc::new(std::sync::Barrier::new(N));
            let flips: Vec<_> = (0..N)
                .map(|i| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        flip_flagd(&path, &format!("f{i}"), "off")
                    })
                })
                .collect();
            for f in flips {
                f.join().unwrap().expect("each flip reports success");
            }
            let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            for i in 0..N {
                assert_eq!(
                    doc["flags"][format!("f{i}")]["defaultVariant"],
                    "off",
                    "round {round}: flag f{i} lost its flip"
                );
            }
        }
    }
}
