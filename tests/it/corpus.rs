//! A seeded corpus of personal data and of clean identifiers, and events carrying them, for the
//! privacy-gate tests (unit-level recall / false-positive report and the broker end-to-end test).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn digits(rng: &mut SmallRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

fn luhn_complete(rng: &mut SmallRng, prefix: &str, len: usize) -> String {
    let mut d: Vec<u8> = prefix.bytes().map(|c| c - b'0').collect();
    while d.len() < len - 1 {
        d.push(rng.random_range(0..10));
    }
    for check in 0..10 {
        let mut all = d.clone();
        all.push(check);
        if driftd::privacy::luhn_valid(&all) {
            return all.iter().map(|x| char::from(b'0' + x)).collect();
        }
    }
    unreachable!("one check digit always completes a Luhn number")
}

/// One PII string of the kind chosen by `i % 10` (e-mail, phone numbers, card numbers, IPv4,
/// IPv6, national ids), random within its kind; the same rng state gives the same string.
pub fn pii_string(rng: &mut SmallRng, i: usize) -> String {
    let names = ["jane.doe", "j.smith", "maria+test", "o_brien", "li.wei"];
    let domains = [
        "example.com",
        "mail.example.org",
        "corp.example.co.uk",
        "example.de",
    ];
    match i % 10 {
        0 => format!(
            "{}{}@{}",
            names[rng.random_range(0..names.len())],
            rng.random_range(1..999),
            domains[rng.random_range(0..domains.len())]
        ),
        1 => format!(
            "+1 ({}) {}-{}",
            digits(rng, 3),
            digits(rng, 3),
            digits(rng, 4)
        ),
        2 => format!("+44 20 {} {}", digits(rng, 4), digits(rng, 4)),
        3 => {
            let prefix = ["4", "51", "37", "6011"][rng.random_range(0..4)];
            let card = luhn_complete(rng, prefix, 16);
            format!(
                "{} {} {} {}",
                &card[0..4],
                &card[4..8],
                &card[8..12],
                &card[12..16]
            )
        }
        4 => luhn_complete(rng, "4", 16),
        5 => format!(
            "{}.{}.{}.{}",
            rng.random_range(1..224),
            rng.random_range(0..256),
            rng.random_range(0..256),
            rng.random_range(1..255)
        ),
        6 => format!(
            "2001:db8:{:x}::{:x}",
            rng.random_range(1..0xffff),
            rng.random_range(1..0xffff)
        ),
        7 => format!("{}-{}-{}", digits(rng, 3), digits(rng, 2), digits(rng, 4)),
        8 => format!(
            "QQ{}{}",
            digits(rng, 6),
            ["A", "B", "C", "D"][rng.random_range(0..4)]
        ),
        _ => format!("0{}{}", rng.random_range(1..10), digits(rng, 8)),
    }
}

/// A clean but realistic identifier of a kind chosen by `i`.
pub fn clean_string(rng: &mut SmallRng, i: usize) -> String {
    let hex = |rng: &mut SmallRng, n: usize| -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
            .collect()
    };
    match i % 6 {
        0 => format!(
            "{}-{}-4{}-a{}-{}",
            hex(rng, 8),
            hex(rng, 4),
            hex(rng, 3),
            hex(rng, 3),
            hex(rng, 12)
        ),
        1 => format!("req-{}", hex(rng, 12)),
        2 => format!(
            "ft-2026-{:02}-{:02}.{}",
            rng.random_range(1..13),
            rng.random_range(1..29),
            rng.random_range(1..9)
        ),
        3 => format!(
            "llama-3.{}-8b-r{}",
            rng.random_range(0..3),
            rng.random_range(1..50)
        ),
        4 => format!("pod-{}-{}", hex(rng, 5), hex(rng, 5)),
        _ => format!(
            "evt:{}:{}",
            ["checkout", "search", "support"][rng.random_range(0..3)],
            hex(rng, 10)
        ),
    }
}

/// A valid v1 event with `value` placed in a field chosen by `i`.
pub fn event_with(i: usize, value: &str) -> Value {
    let mut v = json!({
        "schema_version": 1,
        "event_id": format!("c{i}x"),
        "emitted_at": driftd::event::format_rfc3339_ms(driftd::clock::wall_ms()),
        "deployment": "support-bot",
        "model_version": "ft-2026-11-20",
        "arm": "canary",
        "segment": {"locale": "en-GB"},
        "signals": {"tone": 0.1, "escalated": false, "refused": false}
    });
    match i % 5 {
        0 => v["event_id"] = json!(value),
        1 => v["segment"]["locale"] = json!(value),
        2 => v["segment"]["note"] = json!(value),
        3 => v["model_version"] = json!(value),
        _ => v["user"] = json!(value),
    }
    v
}

/// `n` PII strings from a seed.
pub fn pii_strings(seed: u64, n: usize) -> Vec<String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n).map(|i| pii_string(&mut rng, i)).collect()
}

/// `n` clean identifiers from a seed.
pub fn clean_strings(seed: u64, n: usize) -> Vec<String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n).map(|i| clean_string(&mut rng, i)).collect()
}
