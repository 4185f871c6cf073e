//! The files and config of one demo run: a flagd file with both deployments' canary flags, an
//! admin token, the webhook's signing secret, and a config with short windows, a webhook
//! target, a flagd target and an enforcing policy per deployment. Must not start anything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;

use super::{DEAD_LETTER_TOPIC, TOPIC};
use crate::config::{
    Config, LogFormat, PolicyConfig, PolicyMode, SecretSource, TargetConfig, TriggerState,
};

/// Files of one demo run: flag file, admin token, containment state and audit log.
pub(super) struct DemoFiles {
    /// The run's temporary folder (state and audit log live under it).
    pub(super) dir: PathBuf,
    /// The flagd flag file.
    pub(super) flags: PathBuf,
    /// The admin token file.
    pub(super) token: PathBuf,
    /// The webhook's signing secret file (`whsec_…`).
    pub(super) hook_secret: PathBuf,
    /// The key in that secret, for the demo's receiver to verify signatures with.
    pub(super) hook_key: Vec<u8>,
}

impl DemoFiles {
    /// Creates the folder, the flag file and a random admin token.
    pub(super) fn create() -> std::io::Result<DemoFiles> {
        let dir = std::env::temp_dir().join(format!("driftd-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let flags = dir.join("flags.json");
        let flag = |name: &str| {
            serde_json::json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on",
                "targeting": {"if": [{"==": [{"var": "tier"}, "beta"]}, "on", "on"]}, "metadata": {"deployment": name}})
        };
        let doc = serde_json::json!({
            "$schema": "https://flagd.dev/schema/v0/flags.json",
            "flags": {"support-bot-canary": flag("support-bot"), "search-assist-canary": flag("search-assist")},
        });
        std::fs::write(
            &flags,
            serde_json::to_vec_pretty(&doc).expect("JSON serialises"),
        )?;
        let token = dir.join("admin-token");
        let secret: u128 = rand::random();
        std::fs::write(&token, format!("{secret:032x}\n"))?;
        let hook_secret = dir.join("webhook-secret");
        let hook_key: [u8; 32] = rand::random();
        std::fs::write(
            &hook_secret,
            format!(
                "whsec_{}\n",
                base64::engine::general_purpose::STANDARD.encode(hook_key)
            ),
        )?;
        Ok(DemoFiles {
            dir,
            flags,
            token,
            hook_secret,
            hook_key: hook_key.to_vec(),
        })
    }
}

/// The config the demo runs with: defaults, short windows so a one-minute run shows movement.
pub(super) fn demo_config(
    brokers: String,
    admin_addr: SocketAddr,
    files: &DemoFiles,
    receiver: SocketAddr,
) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = brokers;
    c.kafka.topic = TOPIC.into();
    c.kafka.group_id = "driftd-demo".into();
    c.kafka.dead_letter_topic = DEAD_LETTER_TOPIC.into();
    // The in-process broker is new and holds only this run's traffic, some of it produced
    // before the partitions are assigned.
    c.kafka.start_from = Some(crate::config::StartFrom::Earliest);
    c.windows.bucket = Duration::from_secs(1);
    c.windows.span = Duration::from_secs(600);
    c.windows.recent = Duration::from_secs(10);
    c.windows.baseline_half_life = Duration::from_secs(600);
    c.ingest.allowed_lateness = Duration::from_secs(30);
    c.ingest.publish_interval = Duration::from_millis(500);
    c.admin.addr = admin_addr;
    c.detection.canary_share = Some(0.5);
    // Learn each cohort's own baseline before the drift starts (set in events: the warm-up
    // cannot learn over time that includes the drift).
    c.detection.self_baseline.warmup_events = 300;
    c.log.format = LogFormat::Human;
    c.log.level = "error".into();
    let cc = &mut c.containment;
    cc.state_dir = files.dir.join("state");
    cc.admin_token = Some(SecretSource::File(files.token.clone()));
    cc.action_timeout = Duration::from_secs(2);
    cc.retry_for = Duration::from_secs(10);
    cc.targets.push(TargetConfig::Webhook {
        name: "oncall-webhook".into(),
        url: format!("http://{receiver}/alerts"),
        secret: SecretSource::File(files.hook_secret.clone()),
    });
    for dep in ["support-bot", "search-assist"] {
        cc.targets.push(TargetConfig::Flagd {
            name: format!("{dep}-flag"),
            path: files.flags.clone(),
            flag: format!("{dep}-canary"),
            safe_variant: "off".into(),
        });
        cc.policies.push(PolicyConfig {
            name: format!("{dep}-guard"),
            deployments: vec![dep.into()],
            metrics: vec!["*".into()],
            mode: PolicyMode::Enforce,
            alert_on: vec![TriggerState::Fail],
            contain_on: vec![TriggerState::Fail],
            alert_on_signals: true,
            alerts: vec!["oncall-webhook".into()],
            contain: vec![format!("{dep}-flag")],
            ..PolicyConfig::named("")
        });
    }
    c
}
