//! The typed pass against the generic path: on near-valid events, mutated the ways producers
//! and attackers get them wrong, the typed pass either gives up or builds exactly the event the
//! generic path builds.

use proptest::prelude::*;
use proptest::sample::select;

use super::super::Decoder;
use crate::config::Config;

fn decoder() -> Decoder {
    let mut c = Config::default();
    c.cohorts.segment_keys = vec!["locale".into(), "channel".into()];
    Decoder::new(&c)
}

const VALID: &str = r#"{"schema_version":1,"event_id":"evt-0001","emitted_at":"2026-11-29T05:00:00.123Z","deployment":"support-bot","model_version":"ft-2026-11-20","arm":"canary","segment":{"locale":"en-GB","channel":"web"},"signals":{"tone":0.25,"escalated":false,"refused":true}}"#;

#[test]
fn a_plain_valid_event_takes_the_typed_pass() {
    let d = decoder();
    let typed = super::decode(&d, VALID.as_bytes()).expect("the typed pass decodes it");
    assert_eq!(Ok(typed), d.decode_generic(Some(VALID.as_bytes())));
}

fn values(field: &str) -> Vec<&'static str> {
    match field {
        "schema_version" => vec!["1", "1", "1.0", "2", "\"1\"", "-1", "1e0", "0", "null"],
        "event_id" => vec![
            r#""evt-0001""#,
            r#""e\u0041""#,
            r#""""#,
            r#""jane@example.com""#,
            r#""a b""#,
            "7",
            r#""aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa""#,
        ],
        "emitted_at" => vec![
            r#""2026-11-29T05:00:00.123Z""#,
            r#""2026-11-29T05:00:00+02:00""#,
            r#""2026-11-29T05:00:00.123456789-07:30""#,
            r#""2026-11-29""#,
            r#""2026-13-29T05:00:00Z""#,
            r#""2026-11-29T23:59:60Z""#,
            "1795928400",
        ],
        "deployment" => vec![
            r#""support-bot""#,
            r#""Support""#,
            r#""10.0.0.12""#,
            r#""bot-4155552671""#,
            "null",
        ],
        "model_version" => vec![
            r#""ft-2026-11-20""#,
            r#""v1.2.3""#,
            r#""415-555-2671""#,
            r#""ft 1""#,
        ],
        "arm" => vec![r#""canary""#, r#""control""#, r#""Canary""#, "true"],
        "segment" => vec!["{}", "null", "[]", r#""x""#],
        _ => vec![r#""x""#],
    }
}

/// One object's members as text, in the given order, some repeated or left out.
fn object(members: &[(String, String)]) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Mostly the first (valid) candidate, sometimes any of them.
fn mostly_first(candidates: Vec<&'static str>) -> impl Strategy<Value = String> {
    prop_oneof![12 => Just(candidates[0].to_owned()), 1 => select(candidates).prop_map(str::to_owned)]
}

fn member(
    keys: Vec<&'static str>,
    value: Vec<&'static str>,
) -> impl Strategy<Value = (String, String)> {
    (mostly_first(keys), mostly_first(value))
}

fn segment() -> impl Strategy<Value = String> {
    let values = vec![
        r#""en-GB""#,
        r#""web""#,
        r#""""#,
        r#""+44 20 7946 0958""#,
        r#""\u00e9t\u00e9""#,
        r#""été""#,
        "1",
    ];
    let base = (mostly_first(values.clone()), mostly_first(values.clone()))
        .prop_map(|(l, c)| vec![("locale".to_owned(), l), ("channel".to_owned(), c)]);
    let keys = vec!["tier", "locale", "loc\\u0061le", "", "jane@example.com"];
    let extra =
        prop_oneof![2 => Just(Vec::new()), 1 => prop::collection::vec(member(keys, values), 1..3)];
    (base, extra, any::<bool>()).prop_map(|(mut m, extra, reversed)| {
        m.extend(extra);
        if reversed {
            m.reverse();
        }
        object(&m)
    })
}

fn signals() -> impl Strategy<Value = String> {
    let flags = vec!["true", "false", "1", "null"];
    let tone = vec![
        "0.25",
        "-1",
        "1",
        "1.5",
        "-1.0000001",
        "0",
        "1e-3",
        "-0",
        "1E0",
        "true",
        r#""0.1""#,
        "100000000000000000000",
    ];
    let full = (
        mostly_first(flags.clone()),
        mostly_first(flags),
        mostly_first(tone),
    )
        .prop_map(|(r, e, t)| {
            vec![
                ("refused".to_owned(), r),
                ("escalated".to_owned(), e),
                ("tone".to_owned(), t),
            ]
        });
    let extra = prop::collection::vec(
        member(
            vec!["tone", "refused", "note", "4111 1111 1111 1111"],
            vec!["0.5", "true", r#""x""#],
        ),
        0..2,
    );
    let extra = prop_oneof![3 => Just(Vec::new()), 1 => extra];
    (full, extra, 0usize..30, any::<prop::sample::Index>()).prop_map(|(mut m, extra, drop, at)| {
        if drop < m.len() {
            m.remove(drop);
        }
        m.extend(extra);
        let n = m.len();
        m.rotate_left(at.index(n.max(1)));
        object(&m)
    })
}

fn event() -> impl Strategy<Value = String> {
    let scalar = |f: &'static str| mostly_first(values(f)).prop_map(move |v| (f.to_owned(), v));
    let fields = (
        scalar("schema_version"),
        scalar("event_id"),
        scalar("emitted_at"),
        scalar("deployment"),
        scalar("model_version"),
        scalar("arm"),
        prop_oneof![4 => segment(), 1 => select(values("segment")).prop_map(str::to_owned)],
        signals(),
    );
    let extra = prop::collection::vec(
        member(
            vec!["arm", "event_id", "extra", "segment"],
            vec![r#""control""#, "{}", "[1,2]"],
        ),
        1..3,
    );
    let extra = prop_oneof![3 => Just(Vec::new()), 1 => extra];
    (
        fields,
        extra,
        any::<prop::sample::Index>(),
        0usize..60,
        any::<bool>(),
    )
        .prop_map(|((v, i, t, d, m, a, seg, sig), extra, at, drop, spaced)| {
            let mut members = vec![
                v,
                i,
                t,
                d,
                m,
                a,
                ("segment".to_owned(), seg),
                ("signals".to_owned(), sig),
            ];
            if drop < members.len() {
                members.remove(drop);
            }
            members.extend(extra);
            let n = members.len();
            members.rotate_left(at.index(n));
            let text = object(&members);
            if spaced {
                text.replace(',', " ,\n ").replace(':', " : ")
            } else {
                text
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Whatever the typed pass accepts, the generic path accepts as the same event.
    #[test]
    fn the_typed_pass_accepts_only_what_the_generic_path_accepts(text in event()) {
        let d = decoder();
        let generic = d.decode_generic(Some(text.as_bytes()));
        if let Some(typed) = super::decode(&d, text.as_bytes()) {
            prop_assert_eq!(Ok(typed), generic.clone(), "{}", text);
        }
        prop_assert_eq!(d.decode(Some(text.as_bytes())), generic, "{}", text);
    }
}
