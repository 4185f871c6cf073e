//! Every way a secret can be wrong, tried as an operator would get it wrong: the secret's value
//! (and every other secret of the same config) never reaches stderr, the log, `/metrics`,
//! `check-config` output or an HTTP response (issue 8, item 11). Each case plants distinct
//! canary values and looks for them in every channel the case reaches.
//!
//! Every `driftd run` here has a deadline: a regression that makes start-up wait (for a broker
//! that never answers, say) fails the test instead of hanging it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::support;

/// How long a `driftd run` that must stop on its own may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// Secret values planted by the cases; none may be printed anywhere.
const KAFKA_PASSWORD: &str = "kafka-pw-CANARY-5d1e9";
const KAFKA_USER: &str = "kafka-user-CANARY-77c0";
const ADMIN_TOKEN: &str = "admin-token-CANARY-0f3b8a61c2";
const WRONG_TOKEN: &str = "wrong-token-CANARY-a9e4d7b3";
const SHORT_TOKEN: &str = "shrt-CANARY9";
const SLACK_URL: &str = "https://hooks.slack.example/services/SLACK-CANARY-31f";
const ROUTING_KEY: &str = "pd-routing-CANARY-c4a2";
// Standard Webhooks form (driftd refuses any other): base64 of "hook-hmac-CANARY-e81-0123456789".
const HOOK_SECRET: &str = "whsec_aG9vay1obWFjLUNBTkFSWS1lODEtMDEyMzQ1Njc4OQ==";
const KEY_PASSWORD: &str = "key-password-CANARY-5d21";
const UNLEASH_TOKEN: &str = "unleash-CANARY-46b9";
const NOT_A_CREDENTIAL: &str = "client-id-CANARY-2b7f";
const INLINE: &str = "inline-CANARY-93d0e5c1b7";

const ALL: [&str; 12] = [
    KAFKA_PASSWORD,
    KAFKA_USER,
    ADMIN_TOKEN,
    WRONG_TOKEN,
    SHORT_TOKEN,
    SLACK_URL,
    ROUTING_KEY,
    HOOK_SECRET,
    KEY_PASSWORD,
    UNLEASH_TOKEN,
    NOT_A_CREDENTIAL,
    INLINE,
];

/// The environment every case's child gets: some variables set to canaries, so a secret read
/// from the environment has a value to leak.
const ENV: [(&str, &str); 5] = [
    ("DRIFTD_IT_KAFKA_PASSWORD", KAFKA_PASSWORD),
    ("DRIFTD_IT_KAFKA_USER", KAFKA_USER),
    ("DRIFTD_IT_ROUTING_KEY", ROUTING_KEY),
    ("DRIFTD_IT_CLIENT_ID", NOT_A_CREDENTIAL),
    ("DRIFTD_IT_EMPTY", ""),
];

fn assert_no_canary(case: &str, channel: &str, text: &str) {
    for canary in ALL {
        assert!(
            !text.contains(canary),
            "{case}: a secret value reached {channel}:\n{text}"
        );
    }
}

/// A folder with the secret files the cases refer to (`@` in a config stands for it).
fn secrets_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("admin-token", format!("{ADMIN_TOKEN}\n")),
        ("short-token", format!("{SHORT_TOKEN}\n")),
        ("slack-url", format!("{SLACK_URL}\n")),
        ("hook-secret", format!("{HOOK_SECRET}\n")),
        ("key-password", format!("{KEY_PASSWORD}\n")),
        ("unleash-token", UNLEASH_TOKEN.to_string()),
        ("empty", String::new()),
        ("not-pem", format!("{KAFKA_PASSWORD}\n")),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// Writes `toml` (with `@` replaced by `dir`) plus a port-0 admin address and a state folder.
fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("driftd.toml");
    let toml = toml.replace('@', &dir.display().to_string());
    let state = dir.join("state");
    let containment = if toml.contains("[containment]") {
        toml.replace(
            "[containment]\n",
            &format!("[containment]\nstate_dir = \"{}\"\n", state.display()),
        )
    } else {
        format!(
            "{toml}\n[containment]\nstate_dir = \"{}\"\n",
            state.display()
        )
    };
    std::fs::write(
        &path,
        format!("{containment}\n[admin]\naddr = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    path
}

/// `driftd` with the case environment, its output going to files in `dir`.
fn spawn(dir: &Path, args: &[&str], config: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftd"));
    cmd.args(args)
        .arg(config)
        .envs(ENV)
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .stdin(Stdio::null());
    cmd.spawn().expect("spawn driftd")
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// Runs `driftd <args> <config>` to its exit within [`DEADLINE`]; kills it and fails the test
/// when it is still running then. Returns the exit code, stdout and stderr.
pub fn run_to_exit(dir: &Path, args: &[&str], config: &Path) -> (Option<i32>, String, String) {
    let mut child = spawn(dir, args, config);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "driftd {args:?} still running after {DEADLINE:?}; stderr:\n{}",
                read(dir, "stderr")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), read(dir, "stdout"), read(dir, "stderr"))
}

/// A `driftd run` that must fail at start-up: it exits 1 within the deadline, says `expect`,
/// and prints no secret.
fn refused(case: &str, toml: &str, expect: &[&str]) {
    let dir = secrets_dir();
    let config = write_config(dir.path(), toml);
    let (code, stdout, stderr) = run_to_exit(dir.path(), &["run", "--config"], &config);
    assert_eq!(code, Some(1), "{case}: {stderr}");
    for e in expect {
        let e = e.replace('@', &dir.path().display().to_string());
        assert!(stderr.contains(&e), "{case}: stderr lacks `{e}`:\n{stderr}");
    }
    assert_no_canary(case, "stderr", &stderr);
    assert_no_canary(case, "stdout", &stdout);
}

/// Kafka settings whose other secrets resolve to canaries before the wrong one is read
/// (`kafka.secrets` resolve in key order).
const KAFKA: &str = "[kafka]\nbrokers = \"127.0.0.1:1\"\n";

#[test]
fn a_kafka_secret_that_cannot_be_read_is_named_never_printed() {
    let good = "\"sasl.password\" = { env = \"DRIFTD_IT_KAFKA_PASSWORD\" }\n\"sasl.username\" = { env = \"DRIFTD_IT_KAFKA_USER\" }\n";
    refused(
        "env var missing",
        &format!("{KAFKA}[kafka.secrets]\n{good}\"ssl.key.password\" = {{ env = \"DRIFTD_IT_UNSET\" }}\n"),
        &["kafka.secrets.\"ssl.key.password\"", "DRIFTD_IT_UNSET"],
    );
    refused(
        "file missing",
        &format!("{KAFKA}[kafka.secrets]\n{good}\"ssl.key.password\" = {{ file = \"@/nope\" }}\n"),
        &["kafka.secrets.\"ssl.key.password\"", "@/nope"],
    );
}

/// A value librdkafka refuses: its error quotes values, so every secret is redacted from it.
#[test]
fn a_kafka_config_librdkafka_refuses_never_prints_a_secret() {
    let secrets = "[kafka.secrets]\n\"sasl.password\" = { env = \"DRIFTD_IT_KAFKA_PASSWORD\" }\n\"sasl.username\" = { env = \"DRIFTD_IT_KAFKA_USER\" }\n";
    refused(
        "sasl.password with an unknown mechanism",
        &format!("{KAFKA}[kafka.properties]\n\"security.protocol\" = \"sasl_plaintext\"\n\"sasl.mechanism\" = \"NO-SUCH-MECHANISM\"\n{secrets}"),
        &["kafka client setup failed"],
    );
    refused(
        "a password that is not a PEM key",
        &format!("{KAFKA}[kafka.properties]\n\"security.protocol\" = \"ssl\"\n[kafka.secrets]\n\"ssl.key.pem\" = {{ file = \"@/not-pem\" }}\n\"ssl.key.password\" = {{ env = \"DRIFTD_IT_KAFKA_PASSWORD\" }}\n"),
        &["kafka client setup failed"],
    );
}

/// Moved from `cli`: a client config librdkafka refuses (a key that is not PEM) stops `driftd
/// run` at once, with exit 1, and the error never quotes the secret. With the deadline, the
/// regression (driftd waiting for the broker) fails instead of hanging.
#[test]
fn a_refused_kafka_secret_fails_at_once_and_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "NOT-A-PEM-SECRET-VALUE-4711";
    let key = dir.path().join("key");
    std::fs::write(&key, format!("{secret}\n")).unwrap();
    let config = dir.path().join("driftd.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n[kafka.properties]\n\"security.protocol\" = \"ssl\"\n[kafka.secrets]\n\"ssl.key.pem\" = {{ file = \"{k}\" }}\n\"ssl.key.password\" = {{ file = \"{k}\" }}\n[admin]\naddr = \"127.0.0.1:0\"\n[containment]\nstate_dir = \"{s}\"\n",
            k = key.display(),
            s = dir.path().join("state").display()
        ),
    )
    .unwrap();
    let (code, _, stderr) = run_to_exit(dir.path(), &["run", "--config"], &config);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("kafka client setup failed"), "{stderr}");
    assert!(
        !stderr.contains(secret),
        "the secret is never printed: {stderr}"
    );
}

/// A `kafka.secrets` key that is not a credential property is refused at load, by both `run`
/// and `check-config`, naming the key; its value is never even read.
#[test]
fn a_secret_for_a_property_that_is_not_a_credential_is_named_never_printed() {
    let toml =
        format!("{KAFKA}[kafka.secrets]\n\"client.id\" = {{ env = \"DRIFTD_IT_CLIENT_ID\" }}\n");
    refused("not a credential", &toml, &["kafka.secrets.\"client.id\""]);
    let dir = secrets_dir();
    let config = write_config(dir.path(), &toml);
    let (code, stdout, stderr) = run_to_exit(dir.path(), &["check-config"], &config);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("kafka.secrets.\"client.id\""), "{stderr}");
    assert_no_canary("check-config, not a credential", "stderr", &stderr);
    assert_no_canary("check-config, not a credential", "stdout", &stdout);
}

#[test]
fn a_short_admin_token_is_refused_without_printing_it() {
    refused(
        "admin token too short",
        &format!("{KAFKA}[containment]\nadmin_token = {{ file = \"@/short-token\" }}\n"),
        &["containment.admin_token", "it has 12 characters"],
    );
}

/// Target secrets that are missing: start-up stops naming the target and where the secret was
/// looked for; the targets resolved before it print nothing of theirs.
#[test]
fn a_target_secret_that_cannot_be_read_is_named_never_printed() {
    let resolved = "[[containment.targets]]\nkind = \"slack\"\nname = \"slack\"\nwebhook_url = { file = \"@/slack-url\" }\n\n[[containment.targets]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"http://127.0.0.1:1/hook\"\nsecret = { file = \"@/hook-secret\" }\n\n[[containment.targets]]\nkind = \"unleash\"\nname = \"unleash\"\nurl = \"http://127.0.0.1:1\"\nfeature = \"f\"\nenvironment = \"e\"\ntoken = { file = \"@/unleash-token\" }\n";
    for (case, target, expect) in [
        (
            "pagerduty routing_key env missing",
            "kind = \"pagerduty\"\nname = \"pd\"\nrouting_key = { env = \"DRIFTD_IT_UNSET_PD\" }\n",
            ["containment.targets.pd", "DRIFTD_IT_UNSET_PD"],
        ),
        (
            "slack webhook_url file missing",
            "kind = \"slack\"\nname = \"slack2\"\nwebhook_url = { file = \"@/no-slack\" }\n",
            ["containment.targets.slack2", "@/no-slack"],
        ),
        (
            "webhook secret env missing",
            "kind = \"webhook\"\nname = \"hook2\"\nurl = \"http://127.0.0.1:1/h\"\nsecret = { env = \"DRIFTD_IT_UNSET_HOOK\" }\n",
            ["containment.targets.hook2", "DRIFTD_IT_UNSET_HOOK"],
        ),
        (
            "unleash token file missing",
            "kind = \"unleash\"\nname = \"unleash2\"\nurl = \"http://127.0.0.1:1\"\nfeature = \"f\"\nenvironment = \"e\"\ntoken = { file = \"@/no-unleash\" }\n",
            ["containment.targets.unleash2", "@/no-unleash"],
        ),
        (
            "launchdarkly token env missing",
            "kind = \"launchdarkly\"\nname = \"ld\"\nproject = \"p\"\nflag = \"f\"\nenvironment = \"e\"\ntoken = { env = \"DRIFTD_IT_UNSET_LD\" }\n",
            ["containment.targets.ld", "DRIFTD_IT_UNSET_LD"],
        ),
        (
            "webhook secret file empty",
            "kind = \"webhook\"\nname = \"hook3\"\nurl = \"http://127.0.0.1:1/h\"\nsecret = { file = \"@/empty\" }\n",
            ["containment.targets.hook3", "is empty"],
        ),
        (
            "unleash token env empty",
            "kind = \"unleash\"\nname = \"unleash3\"\nurl = \"http://127.0.0.1:1\"\nfeature = \"f\"\nenvironment = \"e\"\ntoken = { env = \"DRIFTD_IT_EMPTY\" }\n",
            ["containment.targets.unleash3", "DRIFTD_IT_EMPTY is empty"],
        ),
    ] {
        refused(
            case,
            &format!("{KAFKA}[containment]\nadmin_token = {{ file = \"@/admin-token\" }}\n\n{resolved}\n[[containment.targets]]\n{target}"),
            &expect,
        );
    }
}

/// Regression: a secret written into the config where a reference belongs (or under a misspelt
/// key) was quoted back twice by the parser's message, excerpt and `unknown variant`, by both
/// `check-config` and `run` (and in the log of a refused reload).
#[test]
fn a_secret_written_into_the_config_is_refused_without_quoting_it() {
    for (case, toml) in [
        (
            "admin_token inline",
            format!("[containment]\nadmin_token = \"{INLINE}\"\n"),
        ),
        (
            "admin_token misspelt",
            format!("[containment]\nadmin_tokn = \"{INLINE}\"\n"),
        ),
        (
            "kafka.secrets inline",
            format!("[kafka.secrets]\n\"sasl.password\" = \"{INLINE}\"\n"),
        ),
        (
            "slack webhook_url inline",
            format!("[[containment.targets]]\nkind = \"slack\"\nname = \"s\"\nwebhook_url = \"https://hooks.example/{INLINE}\"\n"),
        ),
        (
            "pagerduty routing_key under an unknown key",
            format!("[[containment.targets]]\nkind = \"pagerduty\"\nname = \"pd\"\nrouting_key = {{ value = \"{INLINE}\" }}\n"),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("driftd.toml");
        std::fs::write(&path, toml).unwrap();
        for args in [&["check-config"][..], &["run", "--config"]] {
            let (code, stdout, stderr) = run_to_exit(dir.path(), args, &path);
            assert_ne!(code, Some(0), "{case}: {stderr}");
            assert!(stderr.contains("TOML parse error at line"), "{case}: {stderr}");
            assert_no_canary(case, "stderr", &stderr);
            assert_no_canary(case, "stdout", &stdout);
        }
    }
}

/// A config full of secrets passes `check-config` without reading or printing any of them.
#[test]
fn check_config_prints_no_secret() {
    let dir = secrets_dir();
    let config = write_config(dir.path(), &running_config("127.0.0.1:1"));
    let (code, stdout, stderr) = run_to_exit(dir.path(), &["check-config"], &config);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("ok (config hash"), "{stdout}");
    assert_no_canary("check-config", "stdout", &stdout);
    assert_no_canary("check-config", "stderr", &stderr);
}

/// Every kind of secret, from files and from the environment.
fn running_config(brokers: &str) -> String {
    format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopic = \"it-secrets\"\n\n[kafka.properties]\n\"debug\" = \"conf,security\"\n\n[kafka.secrets]\n\"sasl.password\" = {{ env = \"DRIFTD_IT_KAFKA_PASSWORD\" }}\n\"sasl.username\" = {{ env = \"DRIFTD_IT_KAFKA_USER\" }}\n\"ssl.key.password\" = {{ file = \"@/key-password\" }}\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\n[containment]\nadmin_token = {{ file = \"@/admin-token\" }}\n\n[[containment.targets]]\nkind = \"pagerduty\"\nname = \"pd\"\nurl = \"http://127.0.0.1:1/v2/enqueue\"\nrouting_key = {{ env = \"DRIFTD_IT_ROUTING_KEY\" }}\n\n[[containment.targets]]\nkind = \"slack\"\nname = \"slack\"\nwebhook_url = {{ file = \"@/slack-url\" }}\n\n[[containment.targets]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"http://127.0.0.1:1/hook\"\nsecret = {{ file = \"@/hook-secret\" }}\n\n[[containment.targets]]\nkind = \"unleash\"\nname = \"unleash\"\nurl = \"http://127.0.0.1:1\"\nfeature = \"f\"\nenvironment = \"e\"\ntoken = {{ file = \"@/unleash-token\" }}\n\n[[containment.policies]]\nname = \"p\"\ndeployments = [\"support-bot\"]\nalerts = [\"pd\", \"slack\"]\ncontain = [\"hook\", \"unleash\"]\n"
    )
}

/// A running driftd with every kind of secret: a wrong bearer token, the metrics,
/// the read endpoints and the log never show a secret; the 401 never echoes the token it got.
#[test]
fn a_running_driftd_shows_no_secret_in_responses_metrics_or_logs() {
    let cluster = support::mock_cluster();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("it-secrets", 1, 1).unwrap();
    let dir = secrets_dir();
    let config = write_config(dir.path(), &running_config(&brokers));
    let mut child = spawn(dir.path(), &["run", "--config"], &config);
    let kill = KillOnDrop(&mut child);
    let start = Instant::now();
    let admin = loop {
        if let Some(a) = support::listening_addr(&read(dir.path(), "stderr")) {
            break format!("http://{a}");
        }
        assert!(
            start.elapsed() < DEADLINE,
            "driftd did not start:\n{}",
            read(dir.path(), "stderr")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let release = |token: &str| {
        let resp = http
            .post(format!("{admin}/v1/deployments/support-bot/release"))
            .bearer_auth(token)
            .json(&serde_json::json!({"operator": "it", "reason": "secrets test"}))
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    };
    let (status, body) = release(WRONG_TOKEN);
    assert_eq!(status, 401, "{body}");
    assert_no_canary("wrong bearer token", "the 401 body", &body);
    let (status, body) = release(ADMIN_TOKEN);
    assert_ne!(status, 401, "the right token is accepted: {body}");
    assert_no_canary("right bearer token", "the release answer", &body);
    let metrics = http
        .get(format!("{admin}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let info = metrics
        .lines()
        .find(|l| l.starts_with("driftd_config_info{"))
        .expect("driftd_config_info is exported");
    assert_no_canary("driftd_config_info", "its labels", info);
    assert_no_canary("running", "/metrics", &metrics);
    for path in [
        "/healthz",
        "/readyz",
        "/v1/cohorts",
        "/v1/verdicts",
        "/v1/deployments",
        "/v1/audit",
        "/v1/gate/support-bot",
    ] {
        let resp = http.get(format!("{admin}{path}")).send().unwrap();
        assert_no_canary("running", path, &resp.text().unwrap());
    }
    drop(kill);
    let log = read(dir.path(), "stderr");
    assert!(log.contains("admin"), "the log was captured: {log}");
    assert_no_canary("running", "the log", &log);
}

/// Kills the child when the test ends, failed or not.
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
