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

/// The valid event as text with `insert` placed at the start of the object `within` (`""` for
/// the top level, else `segment` or `signals`).
fn text_with(within: &str, insert: &str) -> String {
    let text = serde_json::to_string(&valid()).unwrap();
    let at = if within.is_empty() {
        1
    } else {
        text.find(&format!("\"{within}\":{{")).unwrap() + within.len() + 4
    };
    format!("{}{insert}{}", &text[..at], &text[at..])
}

fn decode_text(text: &str) -> Result<Event, Rejection> {
    decoder().decode(Some(text.as_bytes()))
}

/// Regression: a repeated key was accepted and the parser kept the last value, so the first
/// one was never read by anything, the privacy gate included.
#[test]
fn a_repeated_key_is_a_schema_violation_naming_its_path() {
    for (within, insert, path) in [
        ("", r#""event_id":"evt-other","#, "event_id"),
        ("", r#""arm":"control","#, "arm"),
        ("signals", r#""tone":-0.9,"#, "signals.tone"),
        ("segment", r#""locale":"de-DE","#, "segment.locale"),
        ("segment", r#""channel":"app","#, "segment.*"),
    ] {
        let r = decode_text(&text_with(within, insert)).expect_err(insert);
        assert_eq!(
            (r.reason, r.field),
            (Reason::SchemaViolation, path),
            "{insert}"
        );
    }
    let deep = text_with("", r#""extra":{"meta":{"qwertyuiop":1,"qwertyuiop":2}},"#);
    let r = decode_text(&deep).unwrap_err();
    assert_eq!((r.reason, r.field), (Reason::SchemaViolation, "*.*.*"));
    let listed = text_with("", r#""extra":[{"zxcvbnm":1,"zxcvbnm":2}],"#);
    assert_eq!(decode_text(&listed).unwrap_err().field, "*.*.*");
    // The same key in two different objects is not a repeat.
    let mut v = valid();
    v["segment"]["tone"] = json!("calm");
    assert!(decode(&v).is_ok());
}

/// Regression: the value a repeated key replaced was never scanned, so personal data could sit
/// behind a clean repeat. It is found, and the event is `pii_suspected` like any other.
#[test]
fn personal_data_behind_a_repeated_key_is_found() {
    for (within, insert) in [
        ("", r#""event_id":"jane.doe@example.com","#),
        ("segment", r#""locale":"+44 20 7946 0958","#),
        ("", r#""signals":{"note":"4111 1111 1111 1111"},"#),
    ] {
        let r = decode_text(&text_with(within, insert)).expect_err(insert);
        assert_eq!(r.reason, Reason::PiiSuspected, "{insert}");
        assert_eq!(r.field, "payload");
    }
    // A key that is personal data never becomes part of a path: the gate sees it first.
    let r = decode_text(&text_with(
        "segment",
        r#""jane@example.com":"x","jane@example.com":"y","#,
    ))
    .unwrap_err();
    assert_eq!(r.reason, Reason::PiiSuspected);
}

proptest::proptest! {
    /// Any contract key repeated, with any value, is refused: never applied with one of its
    /// values silently dropped; the path never quotes the value.
    #[test]
    fn any_repeated_key_is_refused(
        which in 0usize..10,
        value in "[a-z]{1,12}",
        string in proptest::bool::ANY,
    ) {
        let (within, key, path) = [
            ("", "schema_version", "schema_version"),
            ("", "event_id", "event_id"),
            ("", "emitted_at", "emitted_at"),
            ("", "deployment", "deployment"),
            ("", "model_version", "model_version"),
            ("", "arm", "arm"),
            ("", "segment", "segment"),
            ("", "signals", "signals"),
            ("signals", "refused", "signals.refused"),
            ("segment", "locale", "segment.locale"),
        ][which];
        let repeated = if string { format!("\"{value}\"") } else { value.len().to_string() };
        let r = decode_text(&text_with(within, &format!("\"{key}\":{repeated},")))
            .expect_err("a repeated key is refused");
        proptest::prop_assert_eq!((r.reason, r.field), (Reason::SchemaViolation, path));
    }
}

#[test]
fn the_direct_time_format_writes_what_the_time_crate_writes() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(7);
    let edges = [
        0,
        1,
        999,
        86_399_999,
        86_400_000,
        951_782_400_000,   // 2000-02-29
        4_107_542_399_999, // 2100-02-28, last ms
        1_800_000_000_000,
        253_402_300_799_999, // 9999-12-31, last ms
        253_402_300_800_000,
        -1,
        -86_400_001,
    ];
    let random = (0..100_000).map(|_| rng.random_range(-1_000_000_000_000i64..260_000_000_000_000));
    for ms in edges.into_iter().chain(random) {
        assert_eq!(format_rfc3339_ms(ms), format_rfc3339_ms_general(ms), "{ms}");
    }
    assert_eq!(
        format_rfc3339_ms(1_800_000_000_123),
        "2027-01-15T08:00:00.123Z"
    );
}
