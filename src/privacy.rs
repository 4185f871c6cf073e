//! The privacy gate: recognises strings that look like personal data.
//!
//! Producers promise scrubbed events; driftd does not rely on that promise. Every string of an
//! event (keys and values) passes through [`scan`] before anything else looks at it, and a hit
//! rejects the whole event as `pii_suspected`. The gate errs on the side of rejecting: a false
//! positive costs one event (counted, dead-lettered without its bytes), a false negative could put
//! personal data into a dead-letter topic.
//!
//! This module must stay pure (no I/O, no logging) and must never return or format the matched
//! text: callers only learn the [`PiiKind`], a bounded label.
//!
//! What is recognised, each only as a standalone token (not glued to letters or digits, so ids
//! such as `req-9f3a41b2c7` or UUIDs pass):
//! - e-mail addresses `local@domain.tld`;
//! - IPv4 addresses (four dotted octets) and IPv6 addresses (parsed, at least two colons);
//! - payment card numbers: 13–19 digits, spaces or dashes allowed, passing the Luhn check;
//! - national-id-like numbers: US SSN `ddd-dd-dddd`, UK NINO `AB123456C`;
//! - phone numbers: 8–15 digits with optional `+`, spaces, dots, dashes and parentheses, except
//!   ISO dates (`2026-11-29`) and plain decimals (`0.12345678`).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Which kind of personal data a string looked like. Used as a bounded metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PiiKind {
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
    /// A payment card number passing the Luhn check.
    PaymentCard,
    /// An IPv4 or IPv6 address.
    IpAddress,
    /// A national identification number (SSN, NINO).
    NationalId,
}

impl PiiKind {
    /// All kinds, for pre-registering metric label values.
    pub const ALL: [PiiKind; 5] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::PaymentCard,
        PiiKind::IpAddress,
        PiiKind::NationalId,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::PaymentCard => "payment_card",
            PiiKind::IpAddress => "ip_address",
            PiiKind::NationalId => "national_id",
        }
    }
}

/// Returns the first kind of personal data `s` appears to contain, if any.
pub fn scan(s: &str) -> Option<PiiKind> {
    let b = s.as_bytes();
    // Fast exit: every recognised pattern needs at least 7 bytes and a digit or an '@'
    // (the shortest hit is an IPv6 address such as `fe80::1`).
    if b.len() < 7 || !b.iter().any(|c| c.is_ascii_digit() || *c == b'@') {
        return None;
    }
    if b.contains(&b'@') && has_email(b) {
        return Some(PiiKind::Email);
    }
    if has_ipv6(s) {
        return Some(PiiKind::IpAddress);
    }
    if has_nino(b) {
        return Some(PiiKind::NationalId);
    }
    scan_number_runs(s)
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Maximal runs of bytes satisfying `in_run`; yields (start, end) of runs whose neighbours are
/// not word characters.
fn standalone_runs<'a>(
    b: &'a [u8],
    in_run: impl Fn(u8) -> bool + 'a,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            if !in_run(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && in_run(b[i]) {
                i += 1;
            }
            let before_ok = start == 0 || !is_word(b[start - 1]);
            let after_ok = i == b.len() || !is_word(b[i]);
            if before_ok && after_ok {
                return Some((start, i));
            }
        }
        None
    })
}

fn has_email(b: &[u8]) -> bool {
    let local_char = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let domain_char = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'.';
    for (at, _) in b.iter().enumerate().filter(|(_, c)| **c == b'@') {
        let local_len = b[..at].iter().rev().take_while(|c| local_char(**c)).count();
        if local_len == 0 {
            continue;
        }
        let domain: Vec<u8> = b[at + 1..]
            .iter()
            .copied()
            .take_while(|c| domain_char(*c))
            .collect();
        let domain = domain.strip_suffix(b".").unwrap_or(&domain);
        let labels: Vec<&[u8]> = domain.split(|c| *c == b'.').collect();
        if labels.len() >= 2
            && labels.iter().all(|l| !l.is_empty())
            && labels
                .last()
                .is_some_and(|tld| tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic))
        {
            return true;
        }
    }
    false
}

fn has_ipv6(s: &str) -> bool {
    let b = s.as_bytes();
    if b.iter().filter(|c| **c == b':').count() < 2 {
        return false;
    }
    let in_run = |c: u8| c.is_ascii_hexdigit() || c == b':' || c == b'.';
    standalone_runs(b, in_run).any(|(start, end)| {
        let tok = &s[start..end];
        tok.bytes().filter(|c| *c == b':').count() >= 2 && tok.parse::<Ipv6Addr>().is_ok()
    })
}

fn has_nino(b: &[u8]) -> bool {
    // Two letters, six digits, a final A–D. The official prefix exclusions are ignored on
    // purpose: the gate errs towards rejecting.
    standalone_runs(b, |c| c.is_ascii_alphanumeric()).any(|(start, end)| {
        let t = &b[start..end];
        t.len() == 9
            && t[..2].iter().all(u8::is_ascii_uppercase)
            && t[2..8].iter().all(u8::is_ascii_digit)
            && (b'A'..=b'D').contains(&t[8])
    })
}

fn scan_number_runs(s: &str) -> Option<PiiKind> {
    let b = s.as_bytes();
    let in_run = |c: u8| c.is_ascii_digit() || b" ()+.-".contains(&c);
    let separator = |c: u8| b".-".contains(&c);
    let mut i = 0;
    while i < b.len() {
        if !in_run(b[i]) {
            i += 1;
            continue;
        }
        let mut start = i;
        while i < b.len() && in_run(b[i]) {
            i += 1;
        }
        // Spaces at the edges belong to the surrounding text. A dash or dot at an edge glues
        // the run to its neighbour (`model-20261120`), so it is kept for the adjacency check and
        // dropped only for classification (`call 415-555-2671.`).
        let mut end = i;
        while start < end && b[start] == b' ' {
            start += 1;
        }
        while end > start && b[end - 1] == b' ' {
            end -= 1;
        }
        let glued_before = start > 0 && is_word(b[start - 1]);
        let glued_after = end < b.len() && is_word(b[end]);
        if glued_before || glued_after {
            continue;
        }
        while start < end && separator(b[start]) {
            start += 1;
        }
        while end > start && separator(b[end - 1]) {
            end -= 1;
        }
        if start == end {
            continue;
        }
        if let Some(kind) = classify_number_run(&s[start..end]) {
            return Some(kind);
        }
    }
    None
}

fn classify_number_run(run: &str) -> Option<PiiKind> {
    let digits: Vec<u8> = run
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|c| c - b'0')
        .collect();
    if digits.len() < 4 {
        return None;
    }
    if run.parse::<Ipv4Addr>().is_ok() {
        return Some(PiiKind::IpAddress);
    }
    if digits.len() < 7 {
        return None;
    }
    let shape: String = run
        .chars()
        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
        .collect();
    if shape == "ddd-dd-dddd" {
        return Some(PiiKind::NationalId);
    }
    let card_shaped = run
        .bytes()
        .all(|c| c.is_ascii_digit() || c == b' ' || c == b'-');
    if card_shaped && (13..=19).contains(&digits.len()) && luhn_valid(&digits) {
        return Some(PiiKind::PaymentCard);
    }
    let is_date = shape.starts_with("dddd-dd-dd");
    let is_decimal = shape.matches('.').count() == 1
        && shape.chars().all(|c| c == 'd' || c == '.')
        && !shape.starts_with('.')
        && !shape.ends_with('.');
    let is_dotted_version =
        shape.matches('.').count() >= 2 && !shape.contains(['-', ' ', '(', '+']);
    if (8..=15).contains(&digits.len()) && !is_date && !is_decimal && !is_dotted_version {
        return Some(PiiKind::Phone);
    }
    None
}

/// The Luhn mod-10 check used by payment card numbers.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_each_kind() {
        let cases = [
            ("jane.doe@example.com", PiiKind::Email),
            ("contact: a+b@mail.co.uk.", PiiKind::Email),
            ("+1 (415) 555-2671", PiiKind::Phone),
            ("tel:4155552671", PiiKind::Phone),
            ("call 415-555-2671.", PiiKind::Phone),
            ("030 1234 5678", PiiKind::Phone),
            ("4111 1111 1111 1111", PiiKind::PaymentCard),
            ("5500-0000-0000-0004", PiiKind::PaymentCard),
            ("10.0.0.12", PiiKind::IpAddress),
            ("host=192.168.1.20", PiiKind::IpAddress),
            ("2001:db8::ff00:42:8329", PiiKind::IpAddress),
            ("fe80::1", PiiKind::IpAddress),
            ("123-45-6789", PiiKind::NationalId),
            ("QQ123456C", PiiKind::NationalId),
        ];
        for (s, kind) in cases {
            assert_eq!(scan(s), Some(kind), "{s}");
        }
    }

    #[test]
    fn passes_identifiers_versions_and_timestamps() {
        let clean = [
            "550e8400-e29b-41d4-a716-446655440000",
            "req-9f3a41b2c7",
            "evt:checkout:000123",
            "ft-2026-11-20.3",
            "llama-3.1-8b-ft.7",
            "model-20261120-1234",
            "v1.2.3.4",
            "2026-11-29T05:00:00.123Z",
            "2026-11-29",
            "0.12345678",
            "en-GB",
            "checkout",
            "1.2.3",
        ];
        for s in clean {
            assert_eq!(scan(s), None, "{s}");
        }
    }

    #[test]
    fn luhn_matches_known_numbers() {
        let d = |s: &str| s.bytes().map(|c| c - b'0').collect::<Vec<_>>();
        assert!(luhn_valid(&d("79927398713")));
        assert!(!luhn_valid(&d("79927398710")));
        assert!(luhn_valid(&d("4111111111111111")));
        // 16 digits failing Luhn: neither a card nor (too long) a phone number.
        assert_eq!(scan("4111 1111 1111 1112"), None);
    }
}
