//! Fuzzes the event decoder and the privacy gate with arbitrary message bytes.
//!
//! Two decoders: one from the default config, one with segment keys, two extra metrics and a
//! small size limit, so repeated keys under `segment` and `signals` are named from config and
//! `too_large` is reachable within libFuzzer's default input length. Besides "never panics",
//! it checks what holds for every input:
//! - decoding is deterministic (the same bytes give the same event or rejection), and the
//!   typed single pass a valid event takes agrees with the generic path
//!   (`Decoder::decode_generic`): the same event or the same rejection;
//! - a rejection's `field` is spelled only with contract and config names (or `*`), never
//!   payload text; `pii` is set exactly for `pii_suspected`; `late` is never the decoder's;
//! - an unparseable payload is `invalid_json` only if the gate finds nothing in its text;
//! - a decoded event holds no string the gate flags, and one value per configured segment key
//!   and signal, each within its declared range;
//! - the gate is deterministic and still finds what it found when the text is padded with
//!   spaces (a standalone token stays standalone).

#![no_main]

use std::sync::OnceLock;

use driftd::config::Config;
use driftd::event::{Decoder, Event, Reason, Rejection};
use driftd::privacy;
use libfuzzer_sys::fuzz_target;

/// Segment keys and extra signals the second decoder is configured with.
const CONFIGURED: &str = r#"
[ingest]
max_message_bytes = 1024

[cohorts]
segment_keys = ["locale", "channel"]

[[metrics]]
name = "refusal"
signal = "refused"
kind = "rate"
worse = "up"

[[metrics]]
name = "escalation"
signal = "escalated"
kind = "rate"
worse = "up"

[[metrics]]
name = "tone"
signal = "tone"
kind = "score"
worse = "down"
range = [-1.0, 1.0]

[[metrics]]
name = "tone_tail"
signal = "tone"
kind = "tail"
worse = "up"
range = [-1.0, 1.0]
below = -0.5

[[metrics]]
name = "hallucination"
signal = "hallucinated"
kind = "rate"
worse = "up"

[[metrics]]
name = "latency"
signal = "latency_ms"
kind = "score"
worse = "up"
range = [0.0, 30000.0]
"#;

struct Subject {
    decoder: Decoder,
    segment_keys: Vec<String>,
}

fn subjects() -> &'static [Subject; 2] {
    static SUBJECTS: OnceLock<[Subject; 2]> = OnceLock::new();
    SUBJECTS.get_or_init(|| {
        let configured = Config::parse(CONFIGURED).expect("the fuzz target's config is valid");
        [Config::default(), configured].map(|config| Subject {
            decoder: Decoder::new(&config),
            segment_keys: config.cohorts.segment_keys.clone(),
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_gate(&text);
    for subject in subjects() {
        let first = subject.decoder.decode(Some(data));
        let second = subject.decoder.decode(Some(data));
        assert_eq!(first, second, "decoding the same bytes twice differed");
        assert_eq!(
            first,
            subject.decoder.decode_generic(Some(data)),
            "the typed pass and the generic path disagree"
        );
        match first {
            Ok(event) => check_event(subject, data, &event),
            Err(rejection) => check_rejection(subject, data, &text, rejection),
        }
    }
});

fn check_gate(text: &str) {
    let found = privacy::scan(text);
    assert_eq!(found, privacy::scan(text), "the gate is not deterministic");
    if found.is_some() {
        assert!(
            privacy::scan(&format!(" {text} ")).is_some(),
            "the gate lost a hit when the text was padded with spaces"
        );
    }
}

fn check_event(subject: &Subject, data: &[u8], event: &Event) {
    assert!(data.len() <= subject.decoder.max_bytes());
    for s in [&event.deployment, &event.model_version]
        .into_iter()
        .chain(event.segment.iter().flatten())
    {
        assert_eq!(
            privacy::scan(s),
            None,
            "a decoded event holds personal data"
        );
    }
    assert_eq!(event.segment.len(), subject.segment_keys.len());
    let specs = subject.decoder.signals();
    assert_eq!(event.signals.len(), specs.len());
    for (x, spec) in event.signals.iter().zip(specs) {
        match spec.range {
            Some([lo, hi]) => assert!((lo..=hi).contains(x), "{} out of range", spec.name),
            None => assert!(*x == 0.0 || *x == 1.0, "{} is not a boolean", spec.name),
        }
    }
}

fn check_rejection(subject: &Subject, data: &[u8], text: &str, rejection: Rejection) {
    assert_ne!(
        rejection.reason,
        Reason::Late,
        "lateness is not the decoder's to judge"
    );
    assert_eq!(
        rejection.pii.is_some(),
        rejection.reason == Reason::PiiSuspected,
        "pii kind set without pii_suspected, or the reverse"
    );
    assert_eq!(
        rejection.reason == Reason::TooLarge,
        data.len() > subject.decoder.max_bytes(),
        "too_large does not match the size limit"
    );
    if rejection.reason == Reason::InvalidJson {
        assert_eq!(
            privacy::scan(text),
            None,
            "unparseable text with personal data must be pii_suspected"
        );
    }
    assert!(
        is_named(subject, rejection.field),
        "rejection field {:?} is not spelled with contract and config names",
        rejection.field
    );
}

/// True if `field` is `payload`, a contract field, or a repeated key's path: a contract field
/// or `*`, then a configured name (under `segment` / `signals`) or `*`, then at most `*`. The
/// configured names here hold no `.`, so the path splits unambiguously.
fn is_named(subject: &Subject, field: &str) -> bool {
    let parts: Vec<&str> = field.split('.').collect();
    let top = parts[0];
    let top_ok = top == "*" || driftd::event::FIELDS.contains(&top);
    match parts[..] {
        ["payload"] => true,
        [_] => top_ok,
        [_, second] | [_, second, "*"] => {
            top_ok
                && (second == "*"
                    || match top {
                        "segment" => subject.segment_keys.iter().any(|k| k == second),
                        "signals" => subject.decoder.signals().iter().any(|s| s.name == second),
                        _ => false,
                    })
        }
        _ => false,
    }
}
