//! Regression: after a restart, the open alerts of a contained deployment were re-sent only one
//! `alert_repeat` later (default a minute), so an Alertmanager whose hold on the alert ran out
//! while driftd was down resolved it, and the late re-send opened a second page. They are
//! re-sent at start-up: once, the same alert (labels, start time), and nothing else is redone.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_alerts_are_re_sent_at_start_up_and_nothing_else_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    let (v, addr) = vendor().await;
    let mut config = Config::default();
    config.containment.state_dir = dir.path().join("state");
    // Far beyond the test: any re-send seen comes from the start-up.
    config.containment.alert_repeat = Duration::from_secs(3600);
    config.containment.targets = vec![alertmanager(addr)];
    config.containment.policies = vec![enforce_policy(&["am"], &[])];
    let r = Running::start(&config);
    r.changes.send(fail_verdict("support-bot", "ft-1")).unwrap();
    wait_for("the page", || v.requests("/api/v2/alerts").len() == 1).await;
    // Audited in the same step that records it done, before the task can stop.
    wait_for("the page recorded done", || {
        r.handle
            .audit(100)
            .iter()
            .any(|a| a["event"] == "action" && a["result"] == "success")
    })
    .await;
    r.stop().await;
    let paged = v.requests("/api/v2/alerts")[0].json();

    let r = Running::start(&config);
    wait_for("the re-send at start-up", || {
        v.requests("/api/v2/alerts").len() == 2
    })
    .await;
    // The replayed verdict of the contained incident adds nothing either.
    r.changes.send(fail_verdict("support-bot", "ft-1")).unwrap();
    // A fixed wait to show that nothing else is sent.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sent = v.requests("/api/v2/alerts");
    assert_eq!(sent.len(), 2, "one page, one re-send");
    let resent = sent[1].json();
    assert_eq!(resent[0]["labels"], paged[0]["labels"], "the same alert");
    assert_eq!(resent[0]["startsAt"], paged[0]["startsAt"]);
    assert!(resent[0]["endsAt"].is_null(), "still firing");
    assert_eq!(v.seen.lock().unwrap().len(), 2, "nothing else called");
    let resumed = r
        .handle
        .audit(100)
        .into_iter()
        .filter(|a| a["event"] == "resume")
        .count();
    assert_eq!(resumed, 0, "nothing pending to redo");
    r.stop().await;
}
