use std::sync::Arc;

use super::*;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::traffic::{Generator, TrafficModel};

fn state(events: u64) -> PartitionState {
    let (mut p, _) = Pipeline::new(
        &Config::default(),
        Arc::new(Metrics::new(&Config::default())),
        false,
    );
    let mut g = Generator::new(TrafficModel::default(), None);
    for i in 0..events {
        let e = g.next_event(1_800_000_000_000 + i as i64 * 10);
        p.process(0, Some(&e.payload));
    }
    p.export_partition(0)
}

fn store(dir: &Path) -> SnapshotStore {
    SnapshotStore::new(dir, "llm.events", "fp1")
}

#[test]
fn a_written_snapshot_reads_back_and_the_one_it_replaces_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.write(3, &s.encode(3, 100, state(50))).unwrap();
    s.write(3, &s.encode(3, 250, state(120))).unwrap();
    let current = s.read(3, Generation::Current).unwrap().unwrap();
    assert_eq!((current.partition, current.next_offset), (3, 250));
    assert_eq!(current.state.cohorts(), state(120).cohorts());
    let previous = s.read(3, Generation::Previous).unwrap().unwrap();
    assert_eq!(previous.next_offset, 100);
    assert_eq!(s.load(3).kept, [250, 100]);
    assert!(s.read(4, Generation::Current).unwrap().is_none());
    let leftovers: Vec<_> = std::fs::read_dir(s.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn every_kind_of_damage_is_named_and_the_previous_snapshot_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.write(0, &s.encode(0, 10, state(20))).unwrap();
    let good = s.encode(0, 20, state(40));
    s.write(0, &good).unwrap();
    let current = s.path(0, Generation::Current);
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    let mut newer = good.clone();
    newer[8] = u8::try_from(VERSION + 1).unwrap();
    let mut trailing = good.clone();
    trailing.push(0);
    let cases: [(&str, Vec<u8>); 7] = [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("truncated", good[..5].to_vec()),
        ("checksum", flipped),
        ("version", newer),
        ("not_a_snapshot", b"{\"not\": \"a snapshot\"}".to_vec()),
        ("decode", trailing),
        ("truncated", Vec::new()),
    ];
    for (reason, bytes) in cases {
        std::fs::write(&current, &bytes).unwrap();
        let loaded = s.load(0);
        assert_eq!(loaded.failures.len(), 1, "{reason}");
        let e = &loaded.failures[0];
        assert_eq!(e.reason(), reason, "{e}");
        assert!(e.to_string().contains("p0.snap"), "names the file: {e}");
        assert_eq!(
            loaded.snapshot.map(|s| s.next_offset),
            Some(10),
            "{reason}: the previous snapshot is used"
        );
    }
    let version = decode(
        &{
            let mut b = good.clone();
            b[8] = 5;
            b
        },
        Path::new("x"),
    )
    .unwrap_err();
    assert_eq!(
        version.to_string(),
        "snapshot x has format version 5; this driftd reads version 4 only (written by a newer driftd? it is not used)"
    );
    // Both damaged: nothing to use, two failures.
    std::fs::write(s.path(0, Generation::Previous), b"DRIFTSNP").unwrap();
    let loaded = s.load(0);
    assert!(loaded.snapshot.is_none());
    assert_eq!(loaded.failures.len(), 2);
}

#[test]
fn a_length_near_the_largest_u64_is_truncation_not_a_panic() {
    // Found by the `snapshot` fuzz target: the header's length plus the header overflowed.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = store(dir.path()).encode(0, 1, state(5));
    bytes[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = decode(&bytes, Path::new("p0.snap")).unwrap_err();
    assert_eq!(e.reason(), "truncated", "{e}");
    assert!(e.to_string().contains("p0.snap"), "{e}");
}

#[test]
fn a_snapshot_of_another_topic_partition_or_state_configuration_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let bytes = s.encode(1, 5, state(10));
    for other in [
        SnapshotStore::new(dir.path(), "llm.events", "another-fingerprint"),
        s.clone(),
    ] {
        std::fs::create_dir_all(other.dir()).unwrap();
        // Partition 1's snapshot placed as partition 2's file: refused too.
        std::fs::write(other.path(2, Generation::Current), &bytes).unwrap();
        let e = other.read(2, Generation::Current).unwrap_err();
        assert_eq!(e.reason(), "incompatible", "{e}");
    }
    let elsewhere = SnapshotStore::new(dir.path(), "other.topic", "fp1");
    std::fs::create_dir_all(elsewhere.dir()).unwrap();
    std::fs::write(elsewhere.path(1, Generation::Current), &bytes).unwrap();
    let e = elsewhere.read(1, Generation::Current).unwrap_err();
    assert!(e.to_string().contains("topic llm.events"), "{e}");
}

#[test]
fn a_directory_that_cannot_be_written_is_an_error_naming_it_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    // The snapshot directory would have to be created under a regular file.
    let s = SnapshotStore::new(&blocker, "t", "fp");
    let e = s.write(0, &s.encode(0, 1, state(1))).unwrap_err();
    assert_eq!(e.reason(), "write");
    assert!(e.to_string().contains("persist.dir"), "{e}");
}

#[test]
fn topic_names_cannot_leave_the_snapshot_directory() {
    assert_eq!(sanitize("llm.generation.events"), "llm.generation.events");
    assert_eq!(sanitize(".."), "_..");
    assert_eq!(sanitize("a/../b"), "a_.._b");
}

/// The on-call page's charts survive a restart, and a snapshot written before trajectories
/// existed (its body ends after the state) still loads, without them.
#[test]
fn trajectories_survive_a_snapshot_and_one_written_without_them_still_loads() {
    let saved = state(3_000);
    let (name, series) = saved
        .trajectories()
        .deployments
        .iter()
        .next()
        .expect("30 s of events are sampled");
    // One point per second of the deployment's own event time, give or take the second the
    // sample fell in.
    assert!(series.iter().all(|s| s.points.len() >= 14), "{series:?}");
    let s = store(Path::new("unused"));
    let back = decode(&s.encode(0, 7, saved.clone()), Path::new("p0.snap")).unwrap();
    // Debug forms: absent values are NaN, which `==` never matches.
    let text = |t: &crate::detect::trajectory::TrajectoryPart| format!("{t:?}");
    assert_eq!(text(back.state.trajectories()), text(saved.trajectories()));
    let (mut p, _) = Pipeline::new(
        &Config::default(),
        Arc::new(Metrics::new(&Config::default())),
        false,
    );
    p.import_partition(0, back.state).unwrap();
    let restored: Vec<_> = p
        .publish()
        .trajectories
        .of(name)
        .iter()
        .map(|s| (**s).clone())
        .collect();
    assert_eq!(format!("{restored:?}"), format!("{series:?}"));

    let mut old = decode(&s.encode(0, 7, saved), Path::new("p0.snap")).unwrap();
    old.state.set_trajectories(Default::default());
    let body = postcard::to_stdvec(&old).unwrap();
    let mut file = Vec::new();
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&VERSION.to_le_bytes());
    file.extend_from_slice(&0u16.to_le_bytes());
    file.extend_from_slice(&(body.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    file.extend_from_slice(&body);
    let loaded = decode(&file, Path::new("p0.snap")).unwrap();
    assert_eq!(loaded.state.cohorts(), old.state.cohorts());
    assert!(loaded.state.trajectories().deployments.is_empty());
}
