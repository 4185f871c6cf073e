//! The containment task as one of several replicas, over an in-memory latch topic whose reads
//! can be made to fail: what a replica does with a partition it holds but cannot claim yet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::watch;

use super::Replication;
use crate::contain::fence::{request_key, Journal, Merged, Ownership, Record};
use crate::contain::testing::{fail, hooked, serve, Running};

/// A latch topic in memory: a record is read back as soon as it is produced, and reading to
/// the end fails while `readable` is false (a broker too slow to answer).
struct Memory {
    merged: Mutex<Merged>,
    readable: AtomicBool,
    tailed: watch::Sender<u64>,
}

impl Journal for Memory {
    fn writer(&self) -> &str {
        "memory"
    }

    fn produce(
        &self,
        record: Result<Record, (Option<i32>, String)>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let mut m = self.merged();
        match &record {
            Ok(r) => assert!(m.apply(&r.key(), Some(&serde_json::to_vec(r).unwrap()))),
            Err((_, id)) => assert!(m.apply(&request_key(id), None)),
        }
        drop(m);
        self.tailed.send_modify(|n| *n += 1);
        async { Ok(()) }.boxed()
    }

    fn caught_up(&self, _partition: Option<i32>) -> BoxFuture<'static, Result<(), String>> {
        let result = match self.readable.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err("the broker did not answer".to_string()),
        };
        async move { result }.boxed()
    }

    fn opened(&self) -> BoxFuture<'static, Result<(), String>> {
        async { Ok(()) }.boxed()
    }

    fn merged(&self) -> MutexGuard<'_, Merged> {
        self.merged.lock().unwrap()
    }

    fn changed(&self) -> watch::Receiver<u64> {
        self.tailed.subscribe()
    }
}

async fn hook(State(calls): State<Arc<Mutex<Vec<String>>>>, body: Bytes) -> &'static str {
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let d = body["incident"]["deployment"].as_str().unwrap_or("?");
    calls.lock().unwrap().push(d.to_string());
    ""
}

/// A `fail` for a deployment of a partition the consumer holds while the latch topic cannot be
/// read: nothing is claimed and nothing acts (before, the partition was claimed without reading
/// the topic, and the change's action was dropped by the fence for good). Once the topic reads
/// again, the partition is claimed at the next look and the held change contains the
/// deployment, with one action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_waits_for_its_partition_to_be_claimed_then_acts_once() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(calls.clone());
    let addr = serve(app).await;
    let config = hooked(
        dir.path(),
        dir.path().join("state"),
        &format!("http://{addr}/hook"),
    );
    let journal = Arc::new(Memory {
        merged: Mutex::default(),
        readable: AtomicBool::new(false),
        tailed: watch::channel(0).0,
    });
    let ownership = Arc::new(Ownership::default());
    ownership.assign(&[0]);
    ownership.seen("svc", 0);
    let running = Running::start(
        &config,
        Some(Replication {
            journal: journal.clone(),
            ownership,
        }),
    );
    running.changes.send(fail("svc")).unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(calls.lock().unwrap().is_empty(), "acted before its claim");
    assert!(
        journal.merged().claims.is_empty(),
        "claimed without reading the latch topic to its end"
    );
    journal.readable.store(true, Ordering::Release);
    for _ in 0..100 {
        if !calls.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Room for a second, wrong action to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await;
    assert_eq!(*calls.lock().unwrap(), ["svc"], "one action, once claimed");
    let merged = journal.merged();
    assert_eq!(merged.claims.get(&0).map(|c| c.epoch), Some(1));
    assert_eq!(
        merged.latches.get("svc").map(|s| s.latch.phase),
        Some(crate::contain::latch::Phase::Contained),
        "the latch is recorded under the claim"
    );
}
