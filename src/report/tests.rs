use serde_json::{json, Value};

use super::render::{html, markdown};
use super::{build, ReportError};

const DEMO_AUDIT: &str = include_str!("../../tests/data/report/demo-audit.log");
const DEMO_REPORT: &str = "tests/data/report/demo-report.md";

fn demo_records() -> Vec<Value> {
    DEMO_AUDIT
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn transition(seq: u64, d: &str, from: &str, to: &str, why: &str, extra: Value) -> Value {
    let mut r = json!({"seq": seq, "at": format!("2026-11-30T10:00:{seq:02}.000Z"), "config_hash": "aaa",
        "event": "transition", "evidence": {"metric": "refusal", "source": "canary_vs_control", "state": "fail",
        "estimate": 0.05, "ci_low": 0.01, "p_value": 0.0001, "model_version": "v2", "deployment": d},
        "release": null,
        "transition": {"deployment": d, "from": from, "to": to, "why": why, "operator": null, "incident": format!("{d}:v2")}});
    if let Some(obj) = extra.as_object() {
        for (k, v) in obj {
            r[k] = v.clone();
        }
    }
    r
}

fn action(seq: u64, d: &str, target: &str, result: &str, attempt: u32, error: Value) -> Value {
    json!({"seq": seq, "at": format!("2026-11-30T10:00:{seq:02}.000Z"), "config_hash": "aaa", "event": "action",
        "key": format!("{d}:v2/{target}/contain"), "target": target, "provider": "flagd", "op": "contain",
        "result": result, "incident": format!("{d}:v2"), "attempt": attempt, "error": error, "elapsed_ms": 40 * attempt})
}

#[test]
fn the_demo_incident_reads_as_the_golden_report() {
    let doc = build(
        &demo_records(),
        "support-bot",
        None,
        "http://127.0.0.1:8787",
    )
    .unwrap();
    let md = markdown(&doc);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DEMO_REPORT);
    if std::env::var_os("DRIFTD_BLESS").is_some() {
        std::fs::write(&path, &md).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        md, golden,
        "the report changed; if on purpose: DRIFTD_BLESS=1 cargo test --lib report::"
    );
}

#[test]
fn every_decision_and_action_appears_in_the_timeline_in_order() {
    let records = demo_records();
    let md = markdown(&build(&records, "support-bot", None, "http://h").unwrap());
    let timeline = md.split("## Timeline").nth(1).unwrap();
    let timeline = timeline.split("\n## ").next().unwrap();
    let seqs: Vec<u64> = timeline
        .lines()
        .filter_map(|l| l.split(" | ").nth(1)?.parse().ok())
        .collect();
    let expected: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, expected);
    assert!(md.contains("decision: healthy → contained"), "{md}");
    assert!(md.contains("decision: contained → released"), "{md}");
    assert!(
        md.contains("action: contain support-bot-flag (flagd)"),
        "{md}"
    );
    assert!(
        md.contains("| first action done | 8 ms after the decision |"),
        "{md}"
    );
    assert!(md.contains("| config in force | 1491a8f6c30f |"), "{md}");
    assert!(md.contains("The same evidence as at seq 1."), "{md}");
}

#[test]
fn an_open_incident_shows_retries_reloads_and_the_release_command_and_nothing_of_others() {
    let records = vec![
        transition(
            1,
            "other",
            "healthy",
            "contained",
            "refusal fail",
            json!({}),
        ),
        transition(
            2,
            "bot",
            "healthy",
            "contained",
            "refusal canary_vs_control fail",
            json!({}),
        ),
        action(3, "bot", "flag", "retrying", 1, json!("HTTP 503")),
        json!({"seq": 4, "at": "2026-11-30T10:00:04.000Z", "config_hash": "bbb", "event": "config_reload",
            "outcome": "success", "loaded_hash": "bbb", "detail": null}),
        action(5, "bot", "flag", "success", 2, Value::Null),
        action(6, "other", "flag", "success", 1, Value::Null),
        json!({"seq": 7, "at": "2026-11-30T10:00:07.000Z", "config_hash": "bbb", "event": "request_refused",
            "deployment": "bot", "request": "release", "operator": "eve", "error": "403: the operator role is needed"}),
    ];
    let md = markdown(&build(&records, "bot", None, "https://driftd.example.com/").unwrap());
    assert!(
        !md.contains("| 1 |") && !md.contains("| 6 |"),
        "another deployment's records: {md}"
    );
    for seq in [2, 3, 4, 5, 7] {
        assert!(
            md.contains(&format!("| {seq} |")),
            "seq {seq} missing: {md}"
        );
    }
    assert!(
        md.contains("| flag | flagd | contain | success | 2 | 80 ms |  |"),
        "{md}"
    );
    assert!(
        md.contains("success, attempt 2, 80 ms after the decision"),
        "{md}"
    );
    assert!(
        md.contains("retrying, attempt 1, 40 ms after the decision: HTTP 503"),
        "{md}"
    );
    assert!(md.contains("| config in force | aaa, then bbb |"), "{md}");
    assert!(md.contains("release refused"), "{md}");
    assert!(
        md.contains("Not released as of the last record (seq 7)"),
        "{md}"
    );
    assert!(
        md.contains("driftd release --admin-url https://driftd.example.com --deployment bot"),
        "{md}"
    );
}

#[test]
fn a_chosen_incident_is_reported_and_an_unknown_one_is_refused_with_the_known_ones() {
    let mut later = transition(9, "bot", "released", "contained", "tone fail", json!({}));
    later["transition"]["incident"] = "bot:v3".into();
    let records = vec![
        transition(1, "bot", "healthy", "contained", "refusal fail", json!({})),
        later,
    ];
    let latest = markdown(&build(&records, "bot", None, "http://h").unwrap());
    assert!(latest.contains("incident bot:v3"), "{latest}");
    let first = markdown(&build(&records, "bot", Some("bot:v2"), "http://h").unwrap());
    assert!(
        first.contains("| 1 |") && !first.contains("| 9 |"),
        "{first}"
    );
    match build(&records, "bot", Some("bot:v9"), "http://h") {
        Err(e @ ReportError::UnknownIncident { .. }) => {
            let m = e.to_string();
            assert!(m.contains("bot:v2, bot:v3"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        build(&records, "nobody", None, "http://h"),
        Err(ReportError::NoIncident { .. })
    ));
}

#[test]
fn operator_text_cannot_change_the_report_structure() {
    let hostile = "it's fine | really\n## Pwned <script>alert(1)</script> `x`";
    let mut released = transition(
        2,
        "bot",
        "contained",
        "released",
        &format!("released by ana: {hostile}"),
        json!({"release": {"operator": "ana", "reason": hostile, "at": "2026-11-30T10:00:02.000Z", "incident": "bot:v2"}}),
    );
    released["transition"]["operator"] = "ana".into();
    let records = vec![
        transition(1, "bot", "healthy", "contained", "refusal fail", json!({})),
        released,
    ];
    let doc = build(&records, "bot", None, "http://h").unwrap();
    let md = markdown(&doc);
    assert!(
        !md.contains("\n## Pwned"),
        "a reason opened a heading: {md}"
    );
    let rows = md
        .lines()
        .filter(|l| l.starts_with('|') && l.contains("released by ana"));
    assert_eq!(rows.clone().count(), 1, "{md}");
    for line in rows {
        let cells = line.replace("\\|", "").matches('|').count();
        assert_eq!(cells, 6, "a reason split a table row: {line}");
    }
    let page = html(&doc);
    assert!(!page.contains("<script>"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(
        page.contains("Released by ana at 2026-11-30T10:00:02.000Z."),
        "{page}"
    );
}
