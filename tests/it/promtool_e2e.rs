//! `promtool check metrics` (Prometheus's own linter, Debian package `prometheus`) on the live
//! `/metrics` of a running driftd with cohorts, verdicts and a containment action in it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Families that must be in the exposition before it is linted: cohorts, verdicts, an action.
const WANTED: [&str; 5] = [
    "driftd_cohort_window_mean{",
    "driftd_cohort_window_quantile{",
    "driftd_verdict_p_value{",
    "driftd_action_duration_seconds_count{",
    "process_resident_memory_bytes ",
];

fn promtool_check(exposition: &str) -> std::process::Output {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run promtool ({e}): install it with `apt-get install prometheus` (scripts/test.sh does)"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn promtool_finds_no_problem_in_a_live_metrics_page_with_cohorts_verdicts_and_actions() {
    let started = Instant::now();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_driftd"))
        .args([
            "demo",
            "--duration",
            "12s",
            "--rate",
            "1500",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("driftd demo starts");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = demo.stdout.take().unwrap();
    // Drains the demo's output to its end, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.trim().strip_prefix("metrics:  curl ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the demo prints its /metrics URL");
    let client = reqwest::blocking::Client::new();
    let mut page = String::new();
    while !WANTED.iter().all(|w| page.contains(w)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no cohort, verdict, action and process series within 60s; missing {:?}",
            WANTED
                .iter()
                .filter(|w| !page.contains(*w))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(250));
        page = client
            .get(&url)
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
    }
    let scraped = started.elapsed();
    // Run to its end, so the demo removes its temporary files.
    assert!(demo.wait().unwrap().success(), "the demo ends cleanly");

    let out = promtool_check(&page);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let series = page.lines().filter(|l| !l.starts_with('#')).count();
    println!(
        "promtool check metrics: {series} series, scraped after {scraped:?}, {:?} in all",
        started.elapsed()
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics reports problems:\n{said}"
    );
    assert!(!page.contains("NaN"), "NaN in /metrics:\n{page}");
}
