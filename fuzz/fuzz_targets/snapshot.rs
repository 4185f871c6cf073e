//! Fuzzes snapshot decoding and restore with arbitrary file bytes.
//!
//! Each input is decoded twice: as it is (the header checks: magic, version, length, checksum),
//! and with a header rewritten to fit its body, so mutated bodies get past the checksum to the
//! postcard decoder and the restore checks instead of dying at the CRC. Besides "never panics":
//! - every error names the file;
//! - a decoded snapshot re-encodes to bytes that decode and re-encode to the same bytes;
//! - restoring it into a fresh pipeline (`import_partition`, the daemon's restore) either
//!   fails with an error or succeeds; after a success, importing it again (cohorts already in
//!   memory), processing events, publishing and exporting the partition again never panic,
//!   and the export round-trips through the encoder.
//!
//! The config is small (6 buckets, 2 slabs of 4 bins), so the seeds in `fuzz/corpus/snapshot`
//! — written by the real encoder under this config — are a few KiB and restore cleanly.

#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use driftd::config::Config;
use driftd::metrics::Metrics;
use driftd::persist::{self, SnapshotStore, MAGIC, VERSION};
use driftd::pipeline::Pipeline;
use libfuzzer_sys::fuzz_target;

/// The config the seeds were written under.
const CONFIG: &str = r#"
[ingest]
allowed_lateness = "20s"

[cohorts]
segment_keys = ["locale"]

[windows]
bucket = "10s"
span = "60s"
recent = "20s"
distribution_slabs = 2
distribution_bins = 4
"#;

/// magic (8) + version (2) + reserved (2) + body length (8) + CRC-32 of the body (4).
const HEADER: usize = 24;

struct Subject {
    config: Config,
    metrics: Arc<Metrics>,
    /// Events of the seeds' deployments, to process after a restore.
    events: Vec<Vec<u8>>,
}

fn subject() -> &'static Subject {
    static SUBJECT: OnceLock<Subject> = OnceLock::new();
    SUBJECT.get_or_init(|| {
        let mut g = driftd::traffic::Generator::new(driftd::traffic::TrafficModel::default(), None);
        let config = Config::parse(CONFIG).expect("the fuzz target's config is valid");
        Subject {
            metrics: Arc::new(Metrics::new(&config)),
            config,
            events: (0..16)
                .map(|i| g.next_event(1_800_000_000_000 + i * 7_000).payload)
                .collect(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= HEADER {
        let mut fixed = data.to_vec();
        let body_len = (data.len() - HEADER) as u64;
        fixed[..8].copy_from_slice(MAGIC);
        fixed[8..10].copy_from_slice(&VERSION.to_le_bytes());
        fixed[12..20].copy_from_slice(&body_len.to_le_bytes());
        let crc = crc32fast::hash(&data[HEADER..]);
        fixed[20..24].copy_from_slice(&crc.to_le_bytes());
        check(&fixed);
    }
});

fn check(bytes: &[u8]) {
    let path = Path::new("fuzz/p0.snap");
    let snapshot = match persist::decode(bytes, path) {
        Ok(s) => s,
        Err(e) => {
            assert!(
                e.to_string().contains("p0.snap"),
                "the error names no file: {e}"
            );
            return;
        }
    };
    let encoded = persist::encode(&snapshot);
    let again = persist::decode(&encoded, path).expect("a re-encoded snapshot decodes");
    assert_eq!(
        persist::encode(&again),
        encoded,
        "re-encoding a decoded snapshot is not stable"
    );
    restore(snapshot);
}

fn restore(snapshot: persist::Snapshot) {
    let s = subject();
    let (mut p, _rx) = Pipeline::new(&s.config, s.metrics.clone(), false);
    p.collect_changes(true);
    let partition = snapshot.partition;
    let saved = snapshot.state.cohorts();
    if let Err(e) = p.import_partition(partition, snapshot.state.clone()) {
        assert!(!e.to_string().is_empty());
        return;
    }
    assert!(
        p.export_partition(partition).cohorts() <= saved,
        "a restore made up cohorts"
    );
    // A partition assigned again while its cohorts are in memory: those are kept.
    let _ = p.import_partition(partition, snapshot.state);
    p.take_changes();
    for e in &s.events {
        p.process(partition, Some(e));
    }
    p.publish();
    let store = SnapshotStore::new(Path::new("fuzz"), &snapshot.topic, &snapshot.fingerprint);
    let bytes = store.encode(
        partition,
        snapshot.next_offset,
        p.export_partition(partition),
    );
    persist::decode(&bytes, Path::new("fuzz/p0.snap")).expect("an exported partition decodes");
}
