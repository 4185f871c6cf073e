//! An HA Alertmanager target against the real Alertmanager behind TLS and basic auth: the test
//! starts its own instance (`prometheus-alertmanager` with `--web.config.file`), with a CA and
//! server certificate made by the `openssl` CLI and a bcrypt password hash made by Python's
//! `bcrypt` (both installed by `scripts/test.sh`). The `e2e` tier.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use driftd::config::{BasicAuth, TlsConfig};

use super::*;

const USER: &str = "driftd";
const PASSWORD: &str = "correct-horse-battery-staple";
const WRONG_PASSWORD: &str = "wrong-horse-battery-staple";

/// A running Alertmanager, killed when dropped.
struct Alertmanager {
    child: Child,
    url: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server certificate it signed for 127.0.0.1. Returns (ca, cert, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new("openssl")
        .args(["req", "-x509", "-days", "1", "-subj", "/CN=driftd test CA"])
        .args(ec)
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")));
    run(Command::new("openssl")
        .args(["req", "-subj", "/CN=127.0.0.1"])
        .args(ec)
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    std::fs::write(
        p("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-CAcreateserial"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("server.ext"))
        .arg("-out")
        .arg(p("server.crt")));
    (p("ca.crt"), p("server.crt"), p("server.key"))
}

fn bcrypt(password: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=4)).decode())",
            password,
        ])
        .output()
        .expect("python3 runs (scripts/test.sh installs bcrypt)");
    assert!(
        out.status.success(),
        "bcrypt hash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A port nothing listens on (free a moment ago).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client that trusts the test CA and authenticates as `USER`.
fn client(ca: &Path) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// Starts Alertmanager with TLS and basic auth on a free port (three tries, as another process
/// may take the port between choosing and binding it).
async fn start(dir: &Path, ca: &Path, cert: &Path, key: &Path) -> Alertmanager {
    std::fs::write(
        dir.join("alertmanager.yml"),
        "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  {USER}: '{}'\n",
            cert.display(),
            key.display(),
            bcrypt(PASSWORD)
        ),
    )
    .unwrap();
    for _ in 0..3 {
        let port = free_port();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!(
                "--web.config.file={}",
                dir.join("web.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager runs (scripts/test.sh installs it)");
        let mut am = Alertmanager {
            child,
            url: format!("https://127.0.0.1:{port}"),
        };
        let http = client(ca);
        for _ in 0..100 {
            if am.child.try_wait().unwrap().is_some() {
                break;
            }
            let ready = http
                .get(format!("{}/-/ready", am.url))
                .basic_auth(USER, Some(PASSWORD))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return am;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(am);
    }
    panic!("Alertmanager did not start on a free port in three tries");
}

fn target(live: &str, password: SecretSource, ca: &Path) -> TargetConfig {
    TargetConfig::Alertmanager {
        name: "am".into(),
        url: None,
        // The first instance of the pair is down.
        urls: vec![format!("https://127.0.0.1:{}", free_port()), live.into()],
        basic_auth: Some(BasicAuth {
            username: USER.into(),
            password,
        }),
        bearer_token: None,
        tls: Some(TlsConfig {
            ca_file: Some(ca.to_path_buf()),
            ..TlsConfig::default()
        }),
    }
}

fn am_audit(r: &Running) -> Vec<serde_json::Value> {
    r.handle
        .audit(1000)
        .into_iter()
        .filter(|a| a["event"] == "action" && a["target"] == "am")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ha_pair_behind_tls_and_basic_auth_gets_the_alert_when_one_instance_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let am = start(dir.path(), &ca, &cert, &key).await;

    let mut config = Config::default();
    config.containment.state_dir = dir.path().join("state");
    config.containment.action_timeout = Duration::from_secs(2);
    config.containment.targets = vec![target(
        &am.url,
        secret_file(dir.path(), "am-password", &format!("{PASSWORD}\n")),
        &ca,
    )];
    config.containment.policies = vec![enforce_policy(&["am"], &[])];
    config.validate().expect("valid test config");
    let r = Running::start(&config);
    r.changes.send(fail_verdict("support-bot", "ft-1")).unwrap();
    wait_for("the alert accepted", || {
        am_audit(&r).iter().any(|a| a["result"] == "success")
    })
    .await;
    let alerts: Vec<serde_json::Value> = client(&ca)
        .get(format!("{}/api/v2/alerts", am.url))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ours: Vec<_> = alerts
        .iter()
        .filter(|a| a["labels"]["deployment"] == "support-bot")
        .collect();
    assert_eq!(ours.len(), 1, "the live instance has the alert: {alerts:?}");
    assert_eq!(ours[0]["labels"]["alertname"], "DriftdCanaryContained");
    r.stop().await;

    // The same pair with a wrong password: refused by the live instance, the other is down.
    let mut config = config.clone();
    config.containment.state_dir = dir.path().join("state-wrong");
    config.containment.retry_for = Duration::from_secs(2);
    config.containment.targets = vec![target(
        &am.url,
        secret_file(dir.path(), "wrong-password", WRONG_PASSWORD),
        &ca,
    )];
    let r = Running::start(&config);
    r.changes
        .send(fail_verdict("search-assist", "ft-2"))
        .unwrap();
    wait_for("the alert given up on", || {
        am_audit(&r).iter().any(|a| a["result"] == "failed")
    })
    .await;
    let failed = am_audit(&r)
        .into_iter()
        .find(|a| a["result"] == "failed")
        .unwrap();
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.starts_with("all 2 Alertmanager instances failed; the last, urls[1]: HTTP 401"),
        "{error}"
    );
    let audit_text = std::fs::read_to_string(dir.path().join("state-wrong/audit.log")).unwrap();
    for secret in [WRONG_PASSWORD, PASSWORD] {
        assert!(
            !audit_text.contains(secret),
            "a password reached the audit log"
        );
    }
    r.stop().await;
}
