//! The single typed pass over a well-formed event: the message bytes straight into an
//! [`Event`], every string read in place and put through the privacy gate as it is read.
//!
//! Nearly every message on the topic is a valid event, and building a JSON value for it (a map
//! and a string per key, a tree of values, then a second walk for the gate) cost most of the
//! decode. This pass keeps no tree: it knows the contract's shape, so it reads each field into
//! its place, notes repeated keys in a bit set, and gives up at the first thing that is not a
//! plain valid event.
//!
//! It must never decide a rejection, nor accept what the generic path would reject, nor build a
//! different event: it returns `None` on anything unusual (an escaped string, a repeated or
//! unknown key, a wrong type, personal data, a failed pattern or range) and
//! [`Decoder::decode`] then runs the generic path, which orders the checks and names the
//! rejection. Tests and the decode fuzz target compare the two paths on every input.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::{id_like, parse_rfc3339_ms, Arm, Decoder, Event, FIELDS};
use crate::privacy;

/// The event `bytes` hold if it is plainly valid; `None` sends it to the generic path.
pub(super) fn decode(decoder: &Decoder, bytes: &[u8]) -> Option<Event> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let event = de.deserialize_map(Top { decoder }).ok()?;
    de.end().ok()?;
    Some(event)
}

/// Giving up: the error's text is never read, the generic path names the rejection.
fn give_up<E: serde::de::Error>() -> E {
    E::custom("not a plain valid event")
}

/// A string value read in place that the gate passes; escaped strings (which serde cannot
/// lend) give up.
fn clean_str<'de, A: MapAccess<'de>>(map: &mut A) -> Result<&'de str, A::Error> {
    let s: &'de str = map.next_value()?;
    if privacy::scan(s).is_some() {
        return Err(give_up());
    }
    Ok(s)
}

struct Top<'a> {
    decoder: &'a Decoder,
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Event;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a v1 event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let mut seen = 0u16;
        let mut strings: [Option<&'de str>; 5] = [None; 5];
        let mut segment = None;
        let mut signals = None;
        while let Some(key) = map.next_key::<&'de str>()? {
            let i = FIELDS.iter().position(|f| *f == key).ok_or_else(give_up)?;
            if seen & (1 << i) != 0 {
                return Err(give_up());
            }
            seen |= 1 << i;
            match i {
                0 => {
                    if map.next_value::<u64>()? != 1 {
                        return Err(give_up());
                    }
                }
                6 => segment = Some(map.next_value_seed(Segment(self.decoder))?),
                7 => signals = Some(map.next_value_seed(Signals(self.decoder))?),
                _ => strings[i - 1] = Some(clean_str(&mut map)?),
            }
        }
        let [Some(event_id), Some(emitted_at), Some(deployment), Some(model_version), Some(arm)] =
            strings
        else {
            return Err(give_up());
        };
        let (Some(signals), true) = (signals, seen & 1 != 0) else {
            return Err(give_up());
        };
        let id_char = |c: u8| c.is_ascii_alphanumeric() || b"._:-".contains(&c);
        let deployment_char =
            |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c);
        if !id_like(event_id, id_char)
            || !id_like(deployment, deployment_char)
            || !id_like(model_version, id_char)
        {
            return Err(give_up());
        }
        let arm = match arm {
            "canary" => Arm::Canary,
            "control" => Arm::Control,
            _ => return Err(give_up()),
        };
        let emitted_at_ms = parse_rfc3339_ms(emitted_at).ok_or_else(give_up)?;
        Ok(Event {
            emitted_at_ms,
            deployment: deployment.to_owned(),
            model_version: model_version.to_owned(),
            arm,
            segment: segment.unwrap_or_else(|| vec![None; self.decoder.segment_keys.len()]),
            signals,
        })
    }
}

/// The most segment keys an event may carry on this path (more go the generic way), so that
/// repeats are found by a short scan.
const MAX_SEGMENT_KEYS: usize = 8;

struct Segment<'a>(&'a Decoder);

impl<'de> DeserializeSeed<'de> for Segment<'_> {
    type Value = Vec<Option<String>>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Segment<'_> {
    type Value = Vec<Option<String>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a segment object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = vec![None; self.0.segment_keys.len()];
        let mut keys: [&str; MAX_SEGMENT_KEYS] = [""; MAX_SEGMENT_KEYS];
        let mut n = 0;
        while let Some(key) = map.next_key::<&'de str>()? {
            if n == MAX_SEGMENT_KEYS
                || keys[..n].contains(&key)
                || key.is_empty()
                || key.len() > 64
                || privacy::scan(key).is_some()
            {
                return Err(give_up());
            }
            keys[n] = key;
            n += 1;
            let value = clean_str(&mut map)?;
            if value.is_empty() || value.chars().count() > 64 {
                return Err(give_up());
            }
            if let Some(i) = self.0.segment_keys.iter().position(|s| s == key) {
                out[i] = Some(value.to_owned());
            }
        }
        Ok(out)
    }
}

struct Signals<'a>(&'a Decoder);

impl<'de> DeserializeSeed<'de> for Signals<'_> {
    type Value = Vec<f64>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Signals<'_> {
    type Value = Vec<f64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a signals object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let specs = &self.0.signals;
        let mut out = vec![f64::NAN; specs.len()];
        let mut read = 0;
        while let Some(key) = map.next_key::<&'de str>()? {
            let i = specs
                .iter()
                .position(|s| s.name == key)
                .ok_or_else(give_up)?;
            if !out[i].is_nan() || privacy::scan(key).is_some() {
                return Err(give_up());
            }
            out[i] = match specs[i].range {
                None => f64::from(u8::from(map.next_value::<bool>()?)),
                Some([lo, hi]) => {
                    let x = map.next_value_seed(Number)?;
                    if !x.is_finite() || x < lo || x > hi {
                        return Err(give_up());
                    }
                    x
                }
            };
            read += 1;
        }
        if read != specs.len() {
            return Err(give_up());
        }
        Ok(out)
    }
}

/// A JSON number as the generic path reads it (`serde_json::Number::as_f64`); anything else
/// gives up.
struct Number;

impl<'de> DeserializeSeed<'de> for Number {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<f64, D::Error> {
        de.deserialize_any(self)
    }
}

impl Visitor<'_> for Number {
    type Value = f64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
}

#[cfg(test)]
mod tests;
