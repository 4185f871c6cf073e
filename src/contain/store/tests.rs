use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn latch(tag: u8) -> Latch {
    Latch {
        closed: vec![format!("svc:v{tag}")],
        ..Latch::default()
    }
}

fn all(latches: &BTreeMap<String, Latch>) -> BTreeSet<String> {
    latches.keys().cloned().collect()
}

#[test]
fn latches_round_trip_through_the_journal_and_corruption_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LatchStore::open(dir.path()).unwrap();
    assert!(store.load().unwrap().is_empty());
    let mut latches = BTreeMap::from([("svc".to_string(), latch(1))]);
    store.save(&all(&latches), &latches).unwrap();
    latches.insert("other".into(), latch(2));
    latches.remove("svc");
    let changed = BTreeSet::from(["svc".to_string(), "other".to_string()]);
    store.save(&changed, &latches).unwrap();
    assert_eq!(
        LatchStore::open(dir.path()).unwrap().load().unwrap(),
        latches
    );
    assert!(
        !dir.path().join("containment.json").exists(),
        "nothing compacted yet: every change is in the journal"
    );

    let journal = dir.path().join("containment.journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.splice(0..0, b"{oops\n".iter().copied());
    std::fs::write(&journal, bytes).unwrap();
    let e = LatchStore::open(dir.path()).unwrap().load().unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("record 1"), "{e}");

    std::fs::write(dir.path().join("containment.json"), b"{oops").unwrap();
    let e = LatchStore::open(dir.path()).unwrap().load().unwrap_err();
    assert!(e.to_string().contains("containment.json"), "{e}");
}

#[test]
fn a_record_cut_short_by_a_crash_is_left_out_and_cut_back_before_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LatchStore::open(dir.path()).unwrap();
    store.load().unwrap();
    let latches = BTreeMap::from([("svc".to_string(), latch(1))]);
    store.save(&all(&latches), &latches).unwrap();
    let journal = dir.path().join("containment.journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.extend_from_slice(br#"{"deployment":"svc","latch":{"pha"#);
    std::fs::write(&journal, bytes).unwrap();

    let mut store = LatchStore::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap(), latches);
    let next = BTreeMap::from([("svc".to_string(), latch(2))]);
    store.save(&all(&next), &next).unwrap();
    let text = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(text.lines().count(), 2, "the torn record is gone: {text}");
    assert_eq!(LatchStore::open(dir.path()).unwrap().load().unwrap(), next);
}

#[test]
fn compaction_folds_the_journal_into_the_file_an_operator_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LatchStore::open(dir.path()).unwrap();
    store.load().unwrap();
    let mut latches = BTreeMap::new();
    let mut rounds = 0;
    while !store.compaction_due() {
        rounds += 1;
        latches.insert(format!("d{}", rounds % 50), latch(rounds as u8));
        store
            .save(&BTreeSet::from([format!("d{}", rounds % 50)]), &latches)
            .unwrap();
    }
    assert!(rounds > 1_000, "due after {rounds} small records");
    store.compact(&latches).unwrap();
    assert!(!store.compaction_due());
    let journal = dir.path().join("containment.journal");
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
    let file: BTreeMap<String, Latch> =
        serde_json::from_slice(&std::fs::read(dir.path().join("containment.json")).unwrap())
            .unwrap();
    assert_eq!(file, latches);
    assert_eq!(
        LatchStore::open(dir.path()).unwrap().load().unwrap(),
        latches
    );
}

/// Regression: a failed flag-file write told the operator to check
/// `containment.state_dir`, which has nothing to do with the flag file.
#[test]
fn write_errors_name_the_right_place() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let e = atomic_write(&missing.join("flags.json"), b"{}").unwrap_err();
    let message = e.to_string();
    assert!(!message.contains("containment.state_dir"), "{message}");
    assert!(
        message.contains(&format!(
            "check that the directory {} exists",
            missing.display()
        )),
        "{message}"
    );
    let mut store = LatchStore::open(&missing).unwrap();
    std::fs::remove_dir(&missing).unwrap();
    let latches = BTreeMap::from([("svc".to_string(), latch(1))]);
    let e = store.save(&all(&latches), &latches).unwrap_err();
    assert!(
        e.to_string().contains("containment.state_dir"),
        "the latch store still names its setting: {e}"
    );
    let e = store.compact(&latches).unwrap_err();
    assert!(e.to_string().contains("containment.state_dir"), "{e}");
}

/// Regression: a saved latch marked contained without an incident loaded fine, then made
/// the operator's release panic and silently end the containment task.
#[test]
fn a_contained_latch_without_an_incident_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LatchStore::open(dir.path()).unwrap();
    std::fs::write(
        dir.path().join("containment.json"),
        br#"{"svc": {"phase": "contained"}}"#,
    )
    .unwrap();
    let e = store.load().unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }));
    assert!(
        e.to_string()
            .contains("`svc` is contained without an incident"),
        "{e}"
    );
}

#[derive(Debug, Clone)]
enum Step {
    /// A latch changes in memory.
    Set(u8, u8),
    /// A latch is dropped in memory.
    Drop(u8),
    /// The changes so far are saved.
    Save,
    /// The journal is folded in (only with nothing unsaved, as the controller does).
    Compact,
    /// A crash after a compaction wrote `containment.json`, before it emptied the journal.
    CrashMidCompaction,
    /// A crash part way through an append.
    CrashMidAppend(u8),
    /// A clean restart.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..6u8, 0..4u8).prop_map(|(d, t)| Step::Set(d, t)),
        1 => (0..6u8).prop_map(Step::Drop),
        3 => Just(Step::Save),
        1 => Just(Step::Compact),
        1 => Just(Step::CrashMidCompaction),
        1 => (1..40u8).prop_map(Step::CrashMidAppend),
        1 => Just(Step::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the interleaving of changes, saves, compactions and crashes (during an append
    /// or between a compaction's two steps), a restart reads exactly what was last saved.
    #[test]
    fn a_restart_reads_what_was_last_saved(steps in prop::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LatchStore::open(dir.path()).unwrap();
        let mut live = store.load().unwrap();
        let mut saved = live.clone();
        let mut unsaved = BTreeSet::new();
        let journal = dir.path().join("containment.journal");
        for step in steps {
            match step {
                Step::Set(d, t) => {
                    live.insert(format!("d{d}"), latch(t));
                    unsaved.insert(format!("d{d}"));
                }
                Step::Drop(d) => {
                    if live.remove(&format!("d{d}")).is_some() {
                        unsaved.insert(format!("d{d}"));
                    }
                }
                Step::Save => {
                    store.save(&std::mem::take(&mut unsaved), &live).unwrap();
                    saved = live.clone();
                }
                Step::Compact if unsaved.is_empty() => store.compact(&live).unwrap(),
                Step::Compact => {}
                Step::CrashMidCompaction | Step::CrashMidAppend(_) | Step::Restart => {
                    match step {
                        Step::CrashMidCompaction if unsaved.is_empty() => {
                            let bytes = serde_json::to_vec_pretty(&live).unwrap();
                            atomic_write(&dir.path().join("containment.json"), &bytes).unwrap();
                        }
                        Step::CrashMidAppend(n) => {
                            let mut bytes = std::fs::read(&journal).unwrap_or_default();
                            let record = serde_json::to_vec(&Entry {
                                deployment: "d0",
                                latch: Some(&latch(9)),
                            })
                            .unwrap();
                            bytes.extend_from_slice(&record[..(n as usize).min(record.len() - 1)]);
                            std::fs::write(&journal, bytes).unwrap();
                        }
                        _ => {}
                    }
                    store = LatchStore::open(dir.path()).unwrap();
                    live = store.load().unwrap();
                    prop_assert_eq!(&live, &saved);
                    unsaved.clear();
                }
            }
        }
    }
}
