//! Shared helpers for the integration tests: the broker (tansu in the `e2e` tier, librdkafka's
//! mock cluster in process), topics, offsets, and a driftd process under test with its admin
//! endpoints and logs.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The broker started by `scripts/test.sh` (tansu), held by one test at a time. Fails, never
/// skips, when it is missing.
#[cfg(feature = "e2e")]
pub struct Broker {
    /// Bootstrap address.
    pub addr: String,
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// One test at a time runs a broker and a driftd. Observed here: one test's consumer got no
/// heartbeat answer for 45 s (and lost its partitions) while another test's consumer was
/// re-joining its own group on the same tansu; and in CI, the kill -9 test's consumer timed out
/// of its group while a broker-fault test drove its own tansu and driftd on the two cores.
#[cfg(feature = "e2e")]
pub fn turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding the turn leaves nothing behind that the next needs.
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes the broker (and the turn, [`turn`]) for this test.
#[cfg(feature = "e2e")]
pub fn broker() -> Broker {
    let addr = match std::env::var("DRIFTD_TEST_BROKER") {
        Ok(b) if !b.is_empty() => b,
        _ => panic!(
            "DRIFTD_TEST_BROKER is not set: these tests need the real Kafka-compatible broker. \
             Run `scripts/test.sh`, which installs and starts tansu and sets it."
        ),
    };
    Broker {
        addr,
        _turn: turn(),
    }
}

/// A topic or group name no other test (or earlier run on the same broker) uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let run: u32 = rand::random();
    format!(
        "{prefix}-{}-{run:08x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// librdkafka's in-process mock cluster, for the fast tier: a real Kafka protocol endpoint on
/// loopback (a `driftd` child process can connect to it too) that lives as long as the value.
pub fn mock_cluster() -> MockCluster<'static, DefaultProducerContext> {
    MockCluster::new(1).expect("librdkafka mock cluster")
}

/// librdkafka properties a test's own clients add (credentials for an authenticated broker).
pub type Props<'a> = &'a [(&'a str, &'a str)];

/// A client config for `brokers` with `props`.
fn client(brokers: &str, props: Props<'_>) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers);
    for (k, v) in props {
        cc.set(*k, *v);
    }
    cc
}

/// Creates topics with the given partition counts.
#[cfg(feature = "e2e")]
pub fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    create_topics_as(brokers, &[], topics)
}

/// [`create_topics`] with the client properties `props`.
#[cfg(feature = "e2e")]
pub fn create_topics_as(brokers: &str, props: Props<'_>, topics: &[(&str, i32)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        client(brokers, props).create().expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results = rt
        .block_on(admin.create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

/// A plain consumer (no group commits) for reading topics back.
#[cfg(feature = "e2e")]
pub fn reader(brokers: &str) -> BaseConsumer {
    reader_as(brokers, &[])
}

/// [`reader`] with the client properties `props`.
pub fn reader_as(brokers: &str, props: Props<'_>) -> BaseConsumer {
    client(brokers, props)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader consumer")
}

/// The end offset (high watermark) of each partition.
pub fn end_offsets(brokers: &str, topic: &str, partitions: i32) -> Vec<i64> {
    end_offsets_as(brokers, &[], topic, partitions)
}

/// [`end_offsets`] with the client properties `props`.
pub fn end_offsets_as(brokers: &str, props: Props<'_>, topic: &str, partitions: i32) -> Vec<i64> {
    let c = reader_as(brokers, props);
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

/// Offsets committed by `group` on each partition (-1 when none).
pub fn committed_offsets(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    committed_offsets_as(brokers, &[], group, topic, partitions)
}

/// [`committed_offsets`] with the client properties `props`.
pub fn committed_offsets_as(
    brokers: &str,
    props: Props<'_>,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<i64> {
    let c: BaseConsumer = client(brokers, props)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect()
}

/// A `driftd run` child process.
pub struct Driftd {
    child: Child,
    pub admin: String,
    pub log: PathBuf,
    /// What it writes to its standard output.
    stdout: PathBuf,
    /// Holds the config, logs and state; removed when the test ends.
    _dir: tempfile::TempDir,
}

impl Driftd {
    /// Starts `driftd run --config` with `toml`. The admin server binds port 0 (added here);
    /// its address is read back from the start-up log line, so no port is guessed.
    pub fn start(toml: &str) -> Driftd {
        Driftd::start_with_env(toml, &[])
    }

    /// [`Driftd::start`] with extra environment variables (secrets read with `{ env = .. }`).
    pub fn start_with_env(toml: &str, env: &[(&str, &str)]) -> Driftd {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("driftd.toml");
        // Containment state goes to this process's own folder unless the test chose one.
        let containment = if toml.contains("[containment]") {
            String::new()
        } else {
            let state = dir.path().join("state");
            format!("\n[containment]\nstate_dir = \"{}\"\n", state.display())
        };
        let admin = "\n[admin]\naddr = \"127.0.0.1:0\"\n";
        std::fs::write(&config, format!("{toml}{containment}{admin}")).unwrap();
        let log = dir.path().join("driftd.log");
        let stdout = dir.path().join("stdout.log");
        let child = Command::new(env!("CARGO_BIN_EXE_driftd"))
            .args(["run", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn driftd");
        let mut d = Driftd {
            child,
            admin: String::new(),
            log,
            stdout,
            _dir: dir,
        };
        let mut addr = None;
        d.wait_until(Duration::from_secs(30), "admin server listening", || {
            addr = listening_addr(&d.log_text());
            addr.is_some()
        });
        d.admin = format!("http://{}", addr.unwrap());
        d.wait_until(Duration::from_secs(30), "admin server up", || {
            d.get("/healthz").is_some()
        });
        d
    }

    /// GET a path on the admin server; `None` when it does not answer 200.
    pub fn get(&self, path: &str) -> Option<String> {
        let resp = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .ok()?;
        resp.status()
            .is_success()
            .then(|| resp.text().ok())
            .flatten()
    }

    /// Any request on the admin server: (status, body).
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, String) {
        let mut req = reqwest::blocking::Client::new()
            .request(method, format!("{}{path}", self.admin))
            .timeout(Duration::from_secs(10));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().expect("admin server answers");
        (resp.status().as_u16(), resp.text().unwrap_or_default())
    }

    /// Parsed `/metrics` (empty when the server does not answer, so polls keep polling and a
    /// timeout reports the log).
    pub fn metrics(&self) -> Metrics {
        Metrics::parse(&self.get("/metrics").unwrap_or_default())
    }

    /// Polls `cond` until it holds or `timeout` passes (then panics with `what` and the log).
    pub fn wait_until(&self, timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
        self.wait_until_every(timeout, Duration::from_millis(50), what, cond);
    }

    /// [`Driftd::wait_until`], polling every `every`: for conditions that cost the driftd under
    /// test real work (its whole cohort table or `/metrics`), so polling does not slow it.
    pub fn wait_until_every(
        &self,
        timeout: Duration,
        every: Duration,
        what: &str,
        mut cond: impl FnMut() -> bool,
    ) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond() {
                return;
            }
            std::thread::sleep(every);
        }
        panic!(
            "timed out waiting for {what}; driftd log:\n{}\nstdout:\n{}",
            self.log_text(),
            self.stdout_text()
        );
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "driftd did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything driftd logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything driftd wrote to its standard output so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Sends SIGHUP (reload the config, re-read the Kafka secrets).
    #[cfg(feature = "e2e")]
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The JSON log line whose message is `message`.
    #[cfg(feature = "e2e")]
    pub fn log_event(&self, message: &str) -> Option<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == message)
    }
}

/// Events per (deployment, arm) in a `/v1/cohorts` body.
pub fn cohort_counts(cohorts: &serde_json::Value) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for c in cohorts["cohorts"].as_array().expect("a cohorts array") {
        *out.entry((
            c["deployment"].as_str().unwrap().to_string(),
            c["arm"].as_str().unwrap().to_string(),
        ))
        .or_insert(0) += c["events_total"].as_u64().unwrap();
    }
    out
}

/// Per deployment and metric of a `/v1/verdicts` `deployments` array: the combined state and
/// the canary-vs-control test's state, events per arm, estimate and p-value — what a restart
/// must not change.
pub fn evidence(
    deployments: &[serde_json::Value],
) -> BTreeMap<(String, String), serde_json::Value> {
    let mut out = BTreeMap::new();
    for dep in deployments {
        for m in dep["metrics"].as_array().unwrap() {
            let ab = &m["canary_vs_control"];
            out.insert(
                (
                    dep["deployment"].as_str().unwrap().to_string(),
                    m["metric"].as_str().unwrap().to_string(),
                ),
                serde_json::json!({
                    "state": m["state"],
                    "ab_state": ab["state"],
                    "n_canary": ab["n_canary"],
                    "n_control": ab["n_control"],
                    "estimate": ab["estimate"],
                    "p_value": ab["p_value"],
                }),
            );
        }
    }
    out
}

/// Asserts that `got` holds exactly the evidence `want` (of one uninterrupted pass), naming
/// every deployment and metric that differs.
#[cfg(feature = "e2e")]
pub fn assert_same_evidence(
    want: &BTreeMap<(String, String), serde_json::Value>,
    got: &BTreeMap<(String, String), serde_json::Value>,
) {
    let differing: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k:?}: want {v}, got {:?}", got.get(k)))
        .collect();
    assert!(
        differing.is_empty() && got.len() == want.len(),
        "the evidence of one uninterrupted pass:\n{}",
        differing.join("\n")
    );
}

/// The address in driftd's "admin server listening" log line (JSON or human format).
pub fn listening_addr(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("admin server listening"))?;
    let at = line.find("127.0.0.1:")?;
    let port: String = line[at + "127.0.0.1:".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!port.is_empty()).then(|| format!("127.0.0.1:{port}"))
}

impl Drop for Driftd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus text, parsed into (name, labels) → value.
pub struct Metrics {
    pub text: String,
    series: Vec<(String, HashMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut series = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (head, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), HashMap::new()),
                Some((name, rest)) => {
                    let body = rest.trim_end_matches('}');
                    let labels = body
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap();
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
            };
            series.push((name, labels, value));
        }
        Metrics {
            text: text.to_string(),
            series,
        }
    }

    /// Sum of every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }
}

/// Writes `text` to a temporary file and returns its path (kept alive by the returned dir).
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    (dir, path)
}
