use std::io::Write;

use proptest::prelude::*;

use super::*;
use crate::contain::audit::{AuditLog, AuditRecord};

fn write(log: &mut AuditLog, n: usize) {
    for i in 0..n {
        log.append(
            "t",
            &AuditRecord::Ignored {
                why: format!("record {i} {}", "x".repeat(i % 7 * 10)),
            },
        )
        .unwrap();
    }
}

fn seqs(records: &[Value]) -> Vec<u64> {
    records.iter().map(seq).collect()
}

/// Every record reachable by paging backwards from the newest, then forwards from the start.
fn walk(files: &[PathBuf], limit: usize) -> (Vec<u64>, Vec<u64>) {
    let mut backwards = Vec::new();
    let mut cursor = Cursor::Latest;
    loop {
        let page = read(files, cursor, limit).unwrap();
        assert!(page.records.len() <= limit);
        let mut s = seqs(&page.records);
        s.append(&mut backwards);
        backwards = s;
        match page.prev_before {
            Some(b) => cursor = Cursor::Before(b),
            None => break,
        }
    }
    let mut forwards = Vec::new();
    let mut after = 0;
    loop {
        let page = read(files, Cursor::After(after), limit).unwrap();
        if page.records.is_empty() {
            assert_eq!(
                page.next_after,
                Some(after),
                "an empty page keeps the cursor"
            );
            break;
        }
        forwards.extend(seqs(&page.records));
        after = page.next_after.unwrap();
    }
    (backwards, forwards)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Paging either way visits every retained record once, in order, across rotations.
    #[test]
    fn paging_visits_every_retained_record_once(n in 0usize..80, limit in 1usize..12, max_bytes in 4096u64..9000) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(dir.path(), max_bytes, 2, "h").unwrap();
        write(&mut log, n);
        let files = files(log.path(), 2);
        let (backwards, forwards) = walk(&files, limit);
        prop_assert_eq!(&backwards, &forwards);
        let newest = n as u64;
        let oldest = backwards.first().copied().unwrap_or(1);
        prop_assert_eq!(backwards, (oldest..=newest).collect::<Vec<_>>(), "contiguous up to the newest");
        if n > 0 {
            let latest = read(&files, Cursor::Latest, limit).unwrap();
            prop_assert_eq!(latest.next_after, Some(newest));
        }
    }
}

#[test]
fn sequence_numbers_continue_across_a_restart_and_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path(), 1 << 20, 2, "h").unwrap();
    write(&mut log, 3);
    drop(log);
    // A crash mid-append: a fragment without its newline.
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("audit.log"))
        .unwrap()
        .write_all(b"{\"event\":\"ignored\",\"seq\":4,\"wh")
        .unwrap();
    let mut log = AuditLog::open(dir.path(), 1 << 20, 2, "h").unwrap();
    write(&mut log, 2);
    let files = files(log.path(), 2);
    let page = read(&files, Cursor::Latest, 100).unwrap();
    assert_eq!(
        seqs(&page.records),
        [1, 2, 3, 4, 5],
        "the fragment is skipped"
    );
    assert_eq!(page.prev_before, None);
}

#[test]
fn records_written_before_seq_existed_read_first_and_the_sequence_starts_after_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("audit.log"),
        "{\"event\":\"ignored\",\"why\":\"old 1\"}\n{\"event\":\"ignored\",\"why\":\"old 2\"}\n",
    )
    .unwrap();
    let mut log = AuditLog::open(dir.path(), 1 << 20, 2, "h").unwrap();
    write(&mut log, 2);
    let files = files(log.path(), 2);
    let all = read(&files, Cursor::Latest, 100).unwrap();
    assert_eq!(seqs(&all.records), [0, 0, 1, 2]);
    assert_eq!(all.records[0]["why"], "old 1");
    let newest = read(&files, Cursor::Latest, 2).unwrap();
    assert_eq!(seqs(&newest.records), [1, 2]);
    assert_eq!(newest.prev_before, Some(1));
    let older = read(&files, Cursor::Before(1), 10).unwrap();
    assert_eq!(seqs(&older.records), [0, 0]);
    assert_eq!(older.prev_before, None, "no cursor reaches before seq 0");
    assert_eq!(
        seqs(&read(&files, Cursor::After(0), 10).unwrap().records),
        [1, 2]
    );
}

/// A page in the middle of a large log is found by binary search: the right records, whatever
/// the line lengths.
#[test]
fn a_page_deep_in_a_large_log_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mut text = String::new();
    for s in 1..=50_000u64 {
        text.push_str(&format!(
            "{{\"event\":\"ignored\",\"seq\":{s},\"why\":\"{}\"}}\n",
            "y".repeat((s % 97) as usize)
        ));
    }
    std::fs::write(&path, text).unwrap();
    let files = vec![path];
    for at in [0u64, 1, 2, 12_345, 31_999, 49_990, 50_000] {
        let after = read(&files, Cursor::After(at), 25).unwrap();
        let want: Vec<u64> = (at + 1..=(at + 25).min(50_000)).collect();
        assert_eq!(seqs(&after.records), want, "after {at}");
        let before = read(&files, Cursor::Before(at + 1), 25).unwrap();
        let want: Vec<u64> = (at.saturating_sub(24).max(1)..=at).collect();
        assert_eq!(seqs(&before.records), want, "before {}", at + 1);
    }
    assert_eq!(last_seq(&files).unwrap(), 50_000);
}

#[test]
fn an_empty_or_missing_log_is_an_empty_page() {
    let dir = tempfile::tempdir().unwrap();
    let files = files(&dir.path().join("audit.log"), 3);
    assert!(files.is_empty());
    let page = read(&files, Cursor::Latest, 10).unwrap();
    assert!(page.records.is_empty());
    assert_eq!((page.next_after, page.prev_before), (None, None));
    assert_eq!(last_seq(&files).unwrap(), 0);
}
