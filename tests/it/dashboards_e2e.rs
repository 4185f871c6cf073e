//! End to end: every PromQL expression of the dashboards and alert rules, run by a real
//! Prometheus (Debian `prometheus`) scraping a `driftd` that detects and contains a drift
//! injected with `driftd gen` into the real broker. An expression that errors, or returns
//! nothing where a drifting driftd has data, fails the test; the alert rules for faults the run
//! does not have must parse and stay quiet, and the containment alert must fire. Also: the
//! rules pass `promtool check rules` and their unit tests, and every metric the dashboards name
//! is one the live driftd exports.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::dashboards::{self, QueryKind, DASHBOARDS};
use super::support::{self, Driftd};

const TOKEN: &str = "dashboards-e2e-admin-token";
const DRIFTING: &str = "support-bot";
/// The drifting metric, the value `$metric` takes.
const METRIC: &str = "refusal";
/// A score metric, for the panels of score metrics only.
const SCORE_METRIC: &str = "tone";
/// Panels that show score metrics only: empty for a rate metric such as `refusal`.
const SCORE_ONLY: [&str; 1] = ["Score quantiles per cohort (score metrics)"];
/// The annotation that shows only after a release; checked after the release. Annotations run
/// as range queries over the test, as Grafana runs them over the dashboard's range.
const AFTER_RELEASE: &str = "Released";
/// The one alert the drifting run fires; every other rule must stay quiet.
const FIRING: &str = "DriftdContainmentActive";
/// Series driftd creates only while their fault is present (read by rules only).
const FAULT_ONLY: [&str; 1] = ["driftd_partition_stalled"];

/// A `prometheus` server for this test, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (host:port) every second with driftd's rules,
    /// evaluated every second, on a free port (three tries).
    fn start(target: &str) -> Prometheus {
        let bin = which("prometheus").unwrap_or_else(|| {
            panic!(
                "the `prometheus` binary is not on PATH: install the Debian package \
                 `prometheus` (scripts/test.sh does)"
            )
        });
        let dir = tempfile::tempdir().unwrap();
        let rules = dashboards::repo_path("deploy/prometheus/driftd-rules.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: driftd\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let mut child = Command::new(&bin)
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn prometheus");
            let url = format!("http://127.0.0.1:{port}");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                let ready = reqwest::blocking::get(format!("{url}/-/ready"))
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    return Prometheus {
                        child,
                        url,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "prometheus did not start; its log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
    }

    /// An instant query: the result vector, or Prometheus's error.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        self.run("query", &[("query", expr.to_string())], "vector")
    }

    /// A range query from `since_ms` (Unix milliseconds) to now, one step a second, as Grafana
    /// runs annotations: the result matrix, or Prometheus's error.
    fn query_range(&self, expr: &str, since_ms: i64) -> Result<Vec<Value>, String> {
        let secs = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
        let form = [
            ("query", expr.to_string()),
            ("start", secs(since_ms)),
            // One step past now: the steps run from `start`, so the last could miss the newest
            // sample by up to a step.
            ("end", secs(driftd::clock::wall_ms() + 1000)),
            ("step", "1".to_string()),
        ];
        self.run("query_range", &form, "matrix")
    }

    fn run(&self, api: &str, form: &[(&str, String)], kind: &str) -> Result<Vec<Value>, String> {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/api/v1/{api}", self.url))
            .form(form)
            .timeout(Duration::from_secs(10))
            .send()
            .map_err(|e| e.to_string())?;
        let body: Value = resp.json().map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        match body["data"]["resultType"].as_str() {
            Some(k) if k == kind => Ok(body["data"]["result"].as_array().unwrap().clone()),
            other => Err(format!("a {other:?} result, not a {kind}")),
        }
    }

    /// Polls `expr` until it returns at least one series.
    fn wait_for(&self, expr: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.query(expr).is_ok_and(|r| !r.is_empty()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("Prometheus returned nothing for {expr} within {timeout:?}");
    }

    /// `GET /api/v1/{path}`'s `data`.
    fn api(&self, path: &str) -> Value {
        let body: Value = reqwest::blocking::get(format!("{}/api/v1/{path}", self.url))
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(body["status"], "success", "{path}: {body}");
        body["data"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn config(dir: &Path, brokers: &str, topic: &str) -> String {
    let d = dir.display();
    format!(
        r#"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
group_id = "{topic}-group"
stats_interval = "1s"

[cohorts]
segment_keys = ["locale"]

[detection.self_baseline]
enabled = false

[containment]
state_dir = "{d}/state"
admin_token = {{ file = "{d}/token" }}

[[containment.targets]]
kind = "flagd"
name = "flag"
path = "{d}/flags.json"
flag = "support-bot-canary"
safe_variant = "off"

[[containment.policies]]
name = "canary-guard"
mode = "enforce"
contain = ["flag"]
"#
    )
}

/// `driftd gen`: two deployments for 15 s, the first one's canary refusing more from 20 % on.
fn gen_drift(brokers: &str, topic: &str) {
    let status = Command::new(env!("CARGO_BIN_EXE_driftd"))
        .args(["gen", "--brokers", brokers, "--topic", topic])
        .args(["--rate", "4000", "--count", "60000", "--deployments", "2"])
        .args([
            "--drift-metric",
            METRIC,
            "--drift-to",
            "0.25",
            "--drift-at",
            "0.2",
        ])
        .args(["--drift-deployments", "1", "--seed", "7"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "driftd gen");
}

/// Grafana's variables, as the test's dashboards see them.
fn substitute(expr: &str, metric: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
        .replace("$deployment", DRIFTING)
        .replace("$metric", metric)
}

/// `label_values(expr, label)` (a Grafana variable query) as the PromQL that lists the values.
fn label_values(query: &str) -> String {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a label_values query: {query}"));
    let (expr, label) = inner.rsplit_once(',').expect("label_values(expr, label)");
    format!("count by ({}) ({expr})", label.trim())
}

/// Every sample name in a Prometheus text exposition.
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = which("promtool").unwrap_or_else(|| {
        panic!("`promtool` is not on PATH: install the Debian package `prometheus` (scripts/test.sh does)")
    });
    for args in [
        ["check", "rules", "deploy/prometheus/driftd-rules.yml"],
        ["test", "rules", "deploy/prometheus/driftd-rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(dashboards::repo_path(""))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_dashboard_and_rule_query_returns_data_from_a_drifting_driftd() {
    let (t0, started) = (Instant::now(), driftd::clock::wall_ms());
    let broker = support::broker();
    let topic = support::unique("it-dash");
    support::create_topics(&broker.addr, &[(&topic, 3)]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flags.json"),
        r#"{"$schema":"https://flagd.dev/schema/v0/flags.json","flags":{"support-bot-canary":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}}}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let d = Driftd::start(&config(dir.path(), &broker.addr, &topic));
    let prom = Prometheus::start(d.admin.trim_start_matches("http://"));
    let gen = std::thread::spawn({
        let (brokers, topic) = (broker.addr.clone(), topic.clone());
        move || gen_drift(&brokers, &topic)
    });
    let gate = format!("/v1/gate/{DRIFTING}");
    d.wait_until(Duration::from_secs(120), "the gate to close", || {
        d.request(reqwest::Method::GET, &gate, None, None).0 == 503
    });
    let contained_at = t0.elapsed();
    gen.join().unwrap();
    let generated_at = t0.elapsed();
    prom.wait_for(
        &format!(
            "ALERTS{{alertname=\"{FIRING}\",alertstate=\"firing\",deployment=\"{DRIFTING}\"}}"
        ),
        Duration::from_secs(30),
    );
    // A few scrapes of everything, the lag from librdkafka statistics included.
    prom.wait_for(
        "count_over_time(driftd_build_info[5m]) >= 5",
        Duration::from_secs(30),
    );
    prom.wait_for("driftd_consumer_lag", Duration::from_secs(30));
    let queries_at = t0.elapsed();

    // Every metric a dashboard names is one the live driftd exports.
    let exported = exported_names(&d.get("/metrics").expect("/metrics"));
    let mut failures = Vec::new();
    let mut all = Vec::new();
    for name in DASHBOARDS {
        all.extend(dashboards::queries(name, &dashboards::load(name)));
    }
    for q in &all {
        for m in dashboards::metric_names(&q.expr) {
            if !exported.contains(&m) {
                failures.push(format!("{}: {m} is not exported by driftd", q.place));
            }
        }
    }

    // Every dashboard query, variables substituted, returns data (or, for the exceptions
    // above, parses and returns data for the value it is meant for).
    let mut ran = 0;
    for q in &all {
        let expr = match q.kind {
            QueryKind::Variable => label_values(&q.expr),
            _ => q.expr.clone(),
        };
        let metric = if SCORE_ONLY.contains(&q.title.as_str()) {
            SCORE_METRIC
        } else {
            METRIC
        };
        let must_have_data = !(q.kind == QueryKind::Annotation && q.title == AFTER_RELEASE);
        for m in [METRIC, SCORE_METRIC, "escalation", "tone_tail"] {
            let result = match q.kind {
                QueryKind::Annotation => prom.query_range(&substitute(&expr, m), started),
                _ => prom.query(&substitute(&expr, m)),
            };
            ran += 1;
            match result {
                Err(e) => failures.push(format!("{} ($metric={m}): {e}\n    {expr}", q.place)),
                Ok(r) if r.is_empty() && m == metric && must_have_data => {
                    failures.push(format!("{} ($metric={m}): no data\n    {expr}", q.place))
                }
                Ok(_) => {}
            }
            if !expr.contains("$metric") {
                break;
            }
        }
    }
    let deployments = prom.query(&label_values(
        "label_values(driftd_verdict_state, deployment)",
    ));
    assert_eq!(
        deployments.map(|r| r.len()),
        Ok(2),
        "both generated deployments"
    );

    // Every rule loaded and healthy; its expression parses; only the containment alert fires.
    let rules = prom.api("rules");
    let mut loaded = BTreeSet::new();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap().to_string();
            assert_eq!(r["health"], "ok", "{name}: {r}");
            let expr = r["query"].as_str().unwrap();
            for m in dashboards::metric_names(expr) {
                if !exported.contains(&m) && !FAULT_ONLY.contains(&m.as_str()) {
                    failures.push(format!("rule {name}: {m} is not exported by driftd"));
                }
            }
            ran += 1;
            match prom.query(expr) {
                Err(e) => failures.push(format!("rule {name}: {e}")),
                Ok(r) if (name == FIRING) == r.is_empty() => failures.push(format!(
                    "rule {name}: {} in a drifting run: {r:?}",
                    if r.is_empty() { "no data" } else { "fires" }
                )),
                Ok(_) => {}
            }
            loaded.insert(name);
        }
    }
    let expected: BTreeSet<String> = dashboards::rules().into_iter().map(|r| r.name).collect();
    assert_eq!(loaded, expected, "the rules Prometheus loaded");
    let firing: BTreeSet<String> = prom
        .query("ALERTS{alertstate=\"firing\"}")
        .unwrap()
        .iter()
        .map(|a| a["metric"]["alertname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        firing,
        BTreeSet::from([FIRING.to_string()]),
        "alerts firing"
    );
    let checked_at = t0.elapsed();

    // A release: the containment alert resolves, the release annotation shows.
    let (status, body) = d.request(
        reqwest::Method::POST,
        &format!("/v1/deployments/{DRIFTING}/release"),
        Some(TOKEN),
        Some(serde_json::json!({"operator": "dash-e2e", "reason": "the dashboards test"})),
    );
    assert_eq!(status, 200, "{body}");
    prom.wait_for(
        &format!("driftd_contained{{deployment=\"{DRIFTING}\"}} == 0"),
        Duration::from_secs(15),
    );
    for q in all.iter().filter(|q| q.title == AFTER_RELEASE) {
        match prom.query_range(&substitute(&q.expr, METRIC), started) {
            Ok(r) if !r.is_empty() => {}
            other => failures.push(format!("{} after the release: {other:?}", q.place)),
        }
    }
    prom.wait_for(
        &format!("absent(ALERTS{{alertname=\"{FIRING}\"}})"),
        Duration::from_secs(15),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!(
        "dashboards e2e: {} dashboard queries and {} rules, {ran} PromQL runs; contained after \
         {:.1}s, traffic done at {:.1}s, queries from {:.1}s to {:.1}s, released and resolved by \
         {:.1}s",
        all.len(),
        loaded.len(),
        contained_at.as_secs_f64(),
        generated_at.as_secs_f64(),
        queries_at.as_secs_f64(),
        checked_at.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
