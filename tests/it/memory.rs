//! Memory per cohort, measured rather than computed: the peak resident set of `driftd replay`
//! over few and over many cohorts, read from `/proc` while it runs.
//!
//! The difference of the two peaks divided by the difference in cohorts is what one more cohort
//! costs the whole process — cohort state, detection state, the final snapshot and the
//! per-cohort metric series — so a change that makes cohorts bigger anywhere shows up here.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Cohorts per generated deployment: 2 arms × 4 locales × 2 channels (see `driftd gen`).
const COHORTS_PER_DEPLOYMENT: u64 = 16;

/// What one more cohort may cost the process, in KiB. Measured at about 23 KiB in a debug
/// build (about 19 KiB of it cohort state, see the `state` module doc); a cohort that doubled
/// in size, or whose cohort state alone doubled, lands above this.
const MAX_KIB_PER_COHORT: u64 = 40;

/// Below this the measurement did not see the cohorts at all: the cohort state alone is
/// about 19 KiB.
const MIN_KIB_PER_COHORT: u64 = 12;

fn driftd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_driftd"))
}

/// The peak resident set (`VmHWM`) of a running process in KiB, `None` once it has exited.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Generates events for `deployments` deployments, replays them with the segment keys that
/// make every locale and channel its own cohort, and returns (peak RSS in KiB, cohorts).
fn replay_peak(dir: &Path, deployments: u64) -> (u64, u64) {
    let events = dir.join(format!("events-{deployments}.jsonl"));
    // 16 events per cohort leave a cohort unseen with probability e⁻¹⁶; the cohort count is
    // read back from the output anyway.
    let count = deployments * COHORTS_PER_DEPLOYMENT * 16;
    let status = driftd()
        .args(["gen", "--rate", "1000", "--start", "2026-11-29T05:00:00Z"])
        .args(["--count", &count.to_string()])
        .args(["--deployments", &deployments.to_string()])
        .arg("--output")
        .arg(&events)
        .status()
        .unwrap();
    assert!(status.success(), "driftd gen failed");
    let config = dir.join("segments.toml");
    std::fs::write(
        &config,
        "[cohorts]\nsegment_keys = [\"locale\", \"channel\"]\n",
    )
    .unwrap();
    let out_path = dir.join(format!("replay-{deployments}.jsonl"));
    let err_path = dir.join(format!("replay-{deployments}.log"));
    // Files, not pipes: a full pipe would stall the child while we poll.
    let mut child = driftd()
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .arg("--input")
        .arg(&events)
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // VmHWM only grows, so the last reading before exit is the peak; polling keeps the
    // largest reading in case the final one falls between exit and reaping.
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(
        status.success(),
        "driftd replay failed: {}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    let cohorts = std::fs::read_to_string(&out_path)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("{\"type\":\"cohort\""))
        .count() as u64;
    assert!(peak > 0, "no VmHWM read from /proc/{pid}/status");
    (peak, cohorts)
}

#[test]
fn memory_per_cohort_is_within_the_documented_figure() {
    let dir = tempfile::tempdir().unwrap();
    let (small_kib, small_cohorts) = replay_peak(dir.path(), 2);
    let (large_kib, large_cohorts) = replay_peak(dir.path(), 32);
    assert_eq!(
        (small_cohorts, large_cohorts),
        (2 * COHORTS_PER_DEPLOYMENT, 32 * COHORTS_PER_DEPLOYMENT),
        "every cohort was seen"
    );
    let per_cohort = large_kib.saturating_sub(small_kib) / (large_cohorts - small_cohorts);
    assert!(
        (MIN_KIB_PER_COHORT..=MAX_KIB_PER_COHORT).contains(&per_cohort),
        "{per_cohort} KiB per cohort (peak {small_kib} KiB with {small_cohorts} cohorts, \
         {large_kib} KiB with {large_cohorts}); if cohorts grew on purpose, update this bound, \
         the state module doc and the README"
    );
}
