//! Contract v1 decoding: each rule, each rejection reason, and the order they are checked in.

use super::*;
use serde_json::json;

fn decoder() -> Decoder {
    let mut c = Config::default();
    c.cohorts.segment_keys = vec!["locale".into()];
    c.ingest.max_message_bytes = 1024;
    Decoder::new(&c)
}

fn valid() -> Value {
    json!({
        "schema_version": 1,
        "event_id": "evt-0001",
        "emitted_at": "2026-11-29T05:00:00.123Z",
        "deployment": "support-bot",
        "model_version": "ft-2026-11-20",
        "arm": "canary",
        "segment": {"locale": "en-GB", "channel": "web"},
        "signals": {"tone": 0.25, "escalated": false, "refused": true}
    })
}

fn decode(v: &Value) -> Result<Event, Rejection> {
    decoder().decode(Some(&serde_json::to_vec(v).unwrap()))
}

fn reason_with(edit: impl FnOnce(&mut Value)) -> Reason {
    let mut v = valid();
    edit(&mut v);
    decode(&v).expect_err("should be rejected").reason
}

#[test]
fn valid_event_decodes() {
    let e = decode(&valid()).unwrap();
    assert_eq!(e.emitted_at_ms, 1_795_928_400_123);
    assert_eq!(e.arm, Arm::Canary);
    assert_eq!(e.segment, vec![Some("en-GB".to_string())]);
    // signals order: refused, escalated, tone (first use in the default metrics)
    assert_eq!(e.signals, vec![1.0, 0.0, 0.25]);
}

#[test]
fn schema_version_must_be_1() {
    assert_eq!(
        reason_with(|v| v["schema_version"] = json!(2)),
        Reason::UnsupportedVersion
    );
    assert_eq!(
        reason_with(|v| v["schema_version"] = json!("1")),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| v["schema_version"] = json!(1.5)),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| {
            v.as_object_mut().unwrap().remove("schema_version");
        }),
        Reason::SchemaViolation
    );
}

#[test]
fn event_id_pattern_and_length() {
    assert_eq!(
        reason_with(|v| v["event_id"] = json!("")),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| v["event_id"] = json!("a b")),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| v["event_id"] = json!("x".repeat(65))),
        Reason::SchemaViolation
    );
    assert!(decode(&{
        let mut v = valid();
        v["event_id"] = json!("A.b_c:d-9");
        v
    })
    .is_ok());
}

#[test]
fn emitted_at_needs_rfc3339_with_offset() {
    assert_eq!(
        reason_with(|v| v["emitted_at"] = json!("2026-11-29 05:00:00")),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| v["emitted_at"] = json!("2026-11-29T05:00:00")),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| v["emitted_at"] = json!(1_795_928_400)),
        Reason::SchemaViolation
    );
    let mut v = valid();
    v["emitted_at"] = json!("2026-11-29T06:00:00.123+01:00");
    assert_eq!(decode(&v).unwrap().emitted_at_ms, 1_795_928_400_123);
}

#[test]
fn deployment_is_lowercase_id() {
    assert_eq!(
        reason_with(|v| v["deployment"] = json!("Support")),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| v["deployment"] = json!("")),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| v["deployment"] = json!("a".repeat(65))),
        Reason::SchemaViolation
    );
}

#[test]
fn model_version_pattern() {
    assert_eq!(
        reason_with(|v| v["model_version"] = json!("v 1")),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| v["model_version"] = json!(3)),
        Reason::SchemaViolation
    );
}

#[test]
fn arm_is_canary_or_control() {
    assert_eq!(
        reason_with(|v| v["arm"] = json!("baseline")),
        Reason::SchemaViolation
    );
}

#[test]
fn segment_values_are_short_strings() {
    assert_eq!(
        reason_with(|v| v["segment"]["locale"] = json!(5)),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| v["segment"]["locale"] = json!("")),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| v["segment"]["locale"] = json!("x".repeat(65))),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| v["segment"] = json!("en")),
        Reason::SchemaViolation
    );
    let mut v = valid();
    v.as_object_mut().unwrap().remove("segment");
    assert_eq!(decode(&v).unwrap().segment, vec![None]);
}

#[test]
fn signals_types_and_ranges() {
    assert_eq!(
        reason_with(|v| v["signals"]["tone"] = json!(1.5)),
        Reason::OutOfRange
    );
    assert_eq!(
        reason_with(|v| v["signals"]["tone"] = json!(-1.01)),
        Reason::OutOfRange
    );
    assert_eq!(
        reason_with(|v| v["signals"]["tone"] = json!(true)),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| v["signals"]["refused"] = json!(1)),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| {
            v["signals"].as_object_mut().unwrap().remove("escalated");
        }),
        Reason::SchemaViolation
    );
    assert_eq!(
        reason_with(|v| v["signals"]["mood"] = json!(0.1)),
        Reason::UnknownField
    );
    assert_eq!(
        reason_with(|v| v["signals"] = json!([])),
        Reason::SchemaViolation
    );
}

#[test]
fn unknown_top_level_field() {
    assert_eq!(
        reason_with(|v| v["prompt"] = json!("hello")),
        Reason::UnknownField
    );
}

#[test]
fn non_finite_and_huge_numbers_are_rejected() {
    let d = decoder();
    let text = serde_json::to_string(&valid())
        .unwrap()
        .replace("0.25", "1e999");
    assert_eq!(
        d.decode(Some(text.as_bytes())).unwrap_err().reason,
        Reason::InvalidJson
    );
    let text = serde_json::to_string(&valid())
        .unwrap()
        .replace("0.25", "NaN");
    assert_eq!(
        d.decode(Some(text.as_bytes())).unwrap_err().reason,
        Reason::InvalidJson
    );
}

#[test]
fn too_large_is_rejected_before_parsing() {
    let big = vec![b'{'; 1025];
    assert_eq!(
        decoder().decode(Some(&big)).unwrap_err().reason,
        Reason::TooLarge
    );
}

#[test]
fn empty_and_garbage_are_invalid_json() {
    let d = decoder();
    assert_eq!(d.decode(None).unwrap_err().reason, Reason::InvalidJson);
    assert_eq!(d.decode(Some(b"")).unwrap_err().reason, Reason::InvalidJson);
    assert_eq!(
        d.decode(Some(b"{not json")).unwrap_err().reason,
        Reason::InvalidJson
    );
    assert_eq!(
        d.decode(Some(&[0xff, 0xfe, 0x00])).unwrap_err().reason,
        Reason::InvalidJson
    );
    assert_eq!(
        d.decode(Some(b"[1,2]")).unwrap_err().reason,
        Reason::SchemaViolation
    );
}

#[test]
fn pii_wins_over_other_violations() {
    assert_eq!(
        reason_with(|v| v["prompt"] = json!("mail me: a@b.example")),
        Reason::PiiSuspected
    );
    assert_eq!(
        reason_with(|v| v["event_id"] = json!("10.1.2.3")),
        Reason::PiiSuspected
    );
    assert_eq!(
        reason_with(|v| v["segment"]["phone"] = json!("+44 20 7946 0958")),
        Reason::PiiSuspected
    );
    let d = decoder();
    let broken = b"{\"note\": \"card 4111-1111-1111-1111\"";
    assert_eq!(
        d.decode(Some(broken)).unwrap_err().reason,
        Reason::PiiSuspected
    );
}

#[test]
fn timestamps_round_trip() {
    let ms = 1_795_928_400_123;
    assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms));
}
