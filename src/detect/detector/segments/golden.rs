//! The default configuration's decisions, byte for byte: with `cohorts.segment_keys` empty the
//! segment tests must change nothing. The digest below was recorded on the detector as it was
//! before segment tests existed: first on 8a2a926, then again on the late-drift branch (s8-late,
//! ef5e99d; one budget and late drift changed the defaults' decisions), whose digest the merged
//! detector reproduced; then on s9-late (the late-drift margin that shrinks past 8,000 control
//! events, and reference counts quantised to an eighth of an octave instead of a half, which
//! moves the late-drift and self-baseline thresholds); then once more when a self-baseline
//! verdict's estimate became its chart's current run (issue 14, item 8): of the run's 34 changes
//! only the `estimate` of its two self-baseline verdicts moved (0.0982 → 0.0994 and 0.0905 →
//! 0.0940 for a true 0.09), every state and time the same; the views and the saved state carry
//! the run's moments. Any change to the changes, the views or the saved state of a run without
//! segments changes it (the saved state's two new fields, empty here, are checked and
//! taken out first).

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::detect::Detector;
use crate::event::Arm;
use crate::state::CohortKey;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// SHA-256 of every change, the final snapshot and the exported state of [`golden_run`].
const DIGEST: &str = "7a0599c60ab0b1880b9dd6247810c6acdb9b0cc815db2bdb4c37e39d64636bd7";

fn key(dep: &str, arm: Arm, version: &str) -> CohortKey {
    CohortKey {
        deployment: dep.into(),
        model_version: version.into(),
        arm,
        segment: vec![],
    }
}

/// Two deployments, the default config (self-baseline on): one healthy, one whose first canary
/// version raises refusal and lowers tone and whose second is healthy; 12,000 events per arm
/// each. Returns the bytes to digest.
fn golden_run(config: &Config) -> Vec<u8> {
    let mut d = Detector::new(config);
    let mut rng = SmallRng::seed_from_u64(2026);
    let mut out = Vec::new();
    let mut bytes = Vec::new();
    let keys = [
        key("a", Arm::Canary, "v1"),
        key("a", Arm::Control, "base"),
        key("b", Arm::Canary, "v1"),
        key("b", Arm::Control, "base"),
        key("b", Arm::Canary, "v2"),
    ];
    for i in 0..24_000u64 {
        let t = i as i64 * 20;
        for (c, k) in keys.iter().enumerate() {
            let live = match c {
                2 => i < 12_000,
                4 => i >= 12_000,
                _ => true,
            };
            if !live {
                continue;
            }
            let bad = c == 2 && i > 2_000;
            let refusal = if bad { 0.09 } else { 0.05 };
            let tone: f64 = rng.random::<f64>() * 0.6 + if bad { -0.05 } else { 0.0 };
            let values = [
                f64::from(u8::from(rng.random_bool(refusal))),
                f64::from(u8::from(rng.random_bool(0.02))),
                tone,
                f64::from(u8::from(tone < 0.01)),
            ];
            d.observe(c, k, &values, t + c as i64, &mut out);
        }
        for change in out.drain(..) {
            bytes.extend(serde_json::to_vec(&change).expect("serialisable"));
        }
    }
    bytes.extend(serde_json::to_vec(&d.snapshot()).expect("serialisable"));
    // The saved state gained two fields, empty without segments (format version 4); the rest
    // of it must not change.
    let part = serde_json::to_string(&d.export(&[0, 1, 2, 3, 4])).expect("serialisable");
    assert_eq!(part.matches(r#","segments":null}"#).count(), 2);
    assert_eq!(part.matches(r#","slot":null}"#).count(), 5);
    let part = part
        .replace(r#","segments":null}"#, "}")
        .replace(r#","slot":null}"#, "}");
    bytes.extend(part.into_bytes());
    bytes
}

#[test]
fn without_segment_keys_decisions_are_byte_identical() {
    let bytes = golden_run(&Config::default());
    let digest = format!("{:x}", Sha256::digest(&bytes));
    println!("{} bytes, sha256 {digest}", bytes.len());
    let text = String::from_utf8(bytes).expect("JSON");
    assert!(
        text.contains(r#""state":"fail""#),
        "the run must decide something"
    );
    assert_eq!(digest, DIGEST);
}
