//! The command line: check-config, replay, demo and SIGHUP reload, run as a user would.

use std::process::Command;
use std::time::Duration;

use super::support::{self, Driftd};

fn driftd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_driftd"))
}

#[test]
fn check_config_accepts_the_readme_example_and_names_the_bad_field() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/driftd.example.toml"
    ))
    .unwrap();
    let (_d, good) = support::temp_file("good.toml", &example);
    let out = driftd().arg("check-config").arg(&good).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (config hash"));

    let containment = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/driftd.containment.example.toml"
    );
    let out = driftd()
        .arg("check-config")
        .arg(containment)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (_d, bad) = support::temp_file("bad.toml", "[windows]\nbucket = \"10s\"\nspan = \"15s\"\n");
    let out = driftd().arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("windows.span"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn replay_is_deterministic_and_counts_what_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let status = driftd()
        .args([
            "gen",
            "--count",
            "20000",
            "--rate",
            "200",
            "--deployments",
            "3",
            "--seed",
            "5",
        ])
        .args([
            "--drift-metric",
            "refusal",
            "--drift-to",
            "0.2",
            "--start",
            "2026-11-29T05:00:00Z",
            "--output",
        ])
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    // A malformed line is counted, not fatal.
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str("{not json}\n");
    std::fs::write(&input, text).unwrap();
    let run = || {
        let out = driftd()
            .args(["replay", "--input"])
            .arg(&input)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (a, summary) = run();
    let (b, _) = run();
    assert_eq!(a, b, "same input, same state");
    // Verdict logs carry numbers and nulls, never the debug text of an `Option`.
    let logged: Vec<serde_json::Value> = summary
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "verdict changed")
        .collect();
    assert!(!logged.is_empty(), "verdict changes are logged: {summary}");
    for v in &logged {
        for field in ["estimate", "ci_low", "ci_high", "p_value"] {
            assert!(
                v[field].is_number() || v[field].is_null(),
                "{field} is a number or null: {v}"
            );
        }
    }
    assert!(
        logged.iter().any(|v| v["estimate"].is_number()),
        "some verdict has an estimate"
    );
    assert!(
        summary.contains("\"applied\":20000") && summary.contains("\"rejected\":1"),
        "{summary}"
    );
    let lines: Vec<serde_json::Value> = a
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cohorts: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "cohort").collect();
    assert_eq!(cohorts.len(), 6, "3 deployments x 2 arms");
    let fails: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["type"] == "verdict" && l["state"] == "fail")
        .collect();
    assert!(
        fails
            .iter()
            .any(|l| l["deployment"] == "support-bot" && l["metric"] == "refusal"),
        "the drifting canary fails"
    );
    assert!(
        fails.iter().all(|l| l["deployment"] == "support-bot"),
        "the others do not: {fails:?}"
    );
    assert_eq!(
        cohorts
            .iter()
            .map(|c| c["events_total"].as_u64().unwrap())
            .sum::<u64>(),
        20_000
    );
    // Piped through stdin gives the same answer as the file.
    let out = driftd()
        .args(["replay"])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), a);
}

#[test]
fn demo_runs_to_completion_and_shows_the_drift() {
    let out = driftd()
        .args([
            "demo",
            "--duration",
            "8s",
            "--rate",
            "1500",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("driftd demo summary"), "{stdout}");
    assert!(
        stdout
            .contains("result: drift visible in support-bot's canary; every message accounted for"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pii_suspected"),
        "the privacy gate shows up in the summary: {stdout}"
    );
    assert!(!stdout.contains("jane.doe@example.com"), "no PII on screen");
    assert!(
        stdout.contains("detection: support-bot FAILED on refusal, search-assist did not fail"),
        "{stdout}"
    );
    // The post-incident report of the demo's incident, from its audit files: every record of
    // support-bot's incident, in order.
    let audit = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("audit log: "))
        .expect("the demo prints its audit log");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let out = driftd()
        .args([
            "report",
            "--deployment",
            "support-bot",
            "--audit-log",
            audit,
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seqs: Vec<u64> = report
        .split("## Timeline")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split(" | ").nth(1)?.parse().ok())
        .collect();
    let expected: Vec<u64> = records
        .iter()
        .filter(|r| r.to_string().contains("support-bot"))
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, expected, "{report}");
    assert!(report.contains("decision: healthy → contained"), "{report}");
    assert!(
        report.contains("decision: contained → released"),
        "{report}"
    );
    assert!(report.contains("Reason: demo: drift confirmed"), "{report}");
    for shown in [
        "support-bot    contained  gate /v1/gate/support-bot -> 503",
        "search-assist  healthy    gate /v1/gate/search-assist -> 200",
        "support-bot-canary -> off",
        "search-assist-canary -> on",
        "webhook receiver got: trigger critical for support-bot (signature verified)",
        "driftd release --admin-url",
        "on-call page: http://127.0.0.1:",
        "/ui/deployments/support-bot",
        "release with a wrong token -> 401; with the right token -> 200; gate now -> 200",
        "webhook receiver got: resolve critical for support-bot (signature verified)",
    ] {
        assert!(
            stdout.contains(shown),
            "demo output lacks `{shown}`:\n{stdout}"
        );
    }
}

#[test]
fn sighup_refuses_a_bad_config_keeps_the_old_one_and_applies_a_good_one() {
    // The child connects to the mock cluster this process serves on loopback.
    let cluster = support::mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let topic = support::unique("it-reload");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let base = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\n\n[log]\nformat = \"json\"\n"
    );
    let d = Driftd::start(&base);
    let config_path = d.log.with_file_name("driftd.toml");
    let original = std::fs::read_to_string(&config_path).unwrap();
    let config_info = || {
        d.metrics()
            .text
            .lines()
            .find(|l| l.starts_with("driftd_config_info{"))
            .unwrap()
            .to_string()
    };
    let hash_before = config_info();
    let hup = |pid: &str| {
        assert!(Command::new("kill")
            .args(["-HUP", pid])
            .status()
            .unwrap()
            .success())
    };
    let pid = d.pid().to_string();

    std::fs::write(
        &config_path,
        format!("{original}\n[ingest]\nmax_message_bytes = 12\n"),
    )
    .unwrap();
    hup(&pid);
    // The log line reaches the harness through a pipe read in the background, so it can be
    // seen after the count: wait for both.
    d.wait_until(
        Duration::from_secs(10),
        "reload refused, naming the field",
        || {
            d.metrics()
                .sum("driftd_config_reloads_total", &[("outcome", "failure")])
                == 1.0
                && d.log_text().contains("ingest.max_message_bytes")
        },
    );
    assert!(
        d.metrics().text.contains(&hash_before),
        "old config still in force"
    );

    std::fs::write(
        &config_path,
        format!("{original}\n[ingest]\nmax_message_bytes = 4096\n"),
    )
    .unwrap();
    hup(&pid);
    d.wait_until(Duration::from_secs(10), "reload applied", || {
        let m = d.metrics();
        m.sum("driftd_config_reloads_total", &[("outcome", "success")]) == 1.0
            && !m.text.contains(&hash_before)
    });

    // Regression: a reload that changed settings read only at start-up (detection) was
    // reported as applied while nothing changed. It is refused whole, and says why.
    let hash_applied = config_info();
    std::fs::write(
        &config_path,
        format!("{original}\n[ingest]\nmax_message_bytes = 2048\n\n[detection]\nalpha = 0.02\n"),
    )
    .unwrap();
    hup(&pid);
    let refused_line = || {
        d.log_text()
            .lines()
            .find(|l| l.contains("take effect only on restart"))
            .map(str::to_string)
    };
    d.wait_until(
        Duration::from_secs(10),
        "reload refused as restart-only, and logged",
        || {
            d.metrics().sum(
                "driftd_config_reloads_total",
                &[("outcome", "restart_required")],
            ) == 1.0
                && refused_line().is_some()
        },
    );
    let refused = refused_line().unwrap_or_default();
    assert!(
        refused.contains("detection"),
        "the log names the setting: {refused}"
    );
    let m = d.metrics();
    assert!(
        m.text.contains(&hash_applied),
        "the running config is unchanged"
    );
    assert_eq!(
        m.sum("driftd_config_reloads_total", &[("outcome", "success")]),
        1.0,
        "nothing else was applied"
    );
}

/// Regression: with the broker gone silent, the final commit blocked and SIGTERM never ended
/// the process. The shutdown deadline is a hard bound.
#[test]
fn sigterm_exits_within_the_deadline_when_the_broker_is_unresponsive() {
    // A "broker" that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let (accepted, first_accept) = std::sync::mpsc::channel();
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().take(16).filter_map(Result::ok) {
            held.push(conn);
            let _ = accepted.send(());
        }
        held
    });
    let mut d = Driftd::start(&format!(
        "[kafka]\nbrokers = \"{addr}\"\ntopic = \"t\"\n\n[shutdown]\ndeadline = \"2s\"\n\n[log]\nformat = \"json\"\n"
    ));
    // Stop only once driftd's client is connected to the silent broker, so the final commit
    // has someone to hang on.
    first_accept
        .recv_timeout(Duration::from_secs(10))
        .expect("driftd connects to the broker");
    let asked = std::time::Instant::now();
    d.sigterm();
    d.wait_exit(Duration::from_secs(6));
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "exited after {:?}",
        asked.elapsed()
    );
    drop(held);
}

/// Regression: error chains printed with `{:#}` repeated a cause that the message already
/// quoted. Each cause appears once, after the advice.
#[test]
fn errors_name_the_cause_once_and_say_what_to_do() {
    let missing = "/nonexistent/driftd.toml";
    for args in [
        vec!["run", "--config", missing],
        vec!["check-config", missing],
    ] {
        let out = driftd().args(&args).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("cannot read config file /nonexistent/driftd.toml; check the path"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            stderr.matches("No such file or directory").count(),
            1,
            "{args:?}: {stderr}"
        );
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = driftd()
        .args(["run", "--brokers", "127.0.0.1:1", "--admin-addr", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot listen on {addr}; choose another admin.addr"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("in use").count(), 1, "{stderr}");
}
