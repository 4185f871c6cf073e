//! One provider at a time against a vendor-shaped server, for behaviour the whole-flow tests in
//! the parent module do not pin.

use super::*;

/// Regression: the Kubernetes service-account token was read once at start-up; projected
/// tokens rotate about hourly, so every abort after the first rotation was refused. The token
/// file is read again for every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_rollouts_uses_the_rotated_service_account_token() {
    let dir = tempfile::tempdir().unwrap();
    let (v, addr) = vendor().await;
    let token = secret_file(dir.path(), "token", "token-before-rotation\n");
    let SecretSource::File(token_path) = &token else {
        unreachable!("secret_file gives a file source")
    };
    let mut config = Config::default();
    config.containment.state_dir = dir.path().join("state");
    config.containment.targets = vec![TargetConfig::ArgoRollouts {
        name: "argo".into(),
        api_url: format!("http://{addr}"),
        namespace: "prod".into(),
        rollout: "support-bot".into(),
        token: token.clone(),
        ca_file: None,
    }];
    config.containment.policies = vec![enforce_policy(&[], &["argo"])];
    let r = Running::start(&config);
    r.changes.send(fail_verdict("support-bot", "ft-1")).unwrap();
    wait_for("the first abort", || {
        v.requests("/apis/argoproj.io").len() == 1
    })
    .await;
    // The kubelet replaces the file with a fresh token.
    std::fs::write(token_path, "token-after-rotation\n").unwrap();
    r.changes
        .send(fail_verdict("search-assist", "ft-2"))
        .unwrap();
    wait_for("the second abort", || {
        v.requests("/apis/argoproj.io").len() == 2
    })
    .await;
    let seen: Vec<String> = v
        .requests("/apis/argoproj.io")
        .iter()
        .map(|s| s.header("authorization").to_string())
        .collect();
    assert_eq!(
        seen,
        [
            "Bearer token-before-rotation",
            "Bearer token-after-rotation"
        ]
    );
    r.stop().await;
}
