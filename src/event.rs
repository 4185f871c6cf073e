//! The v1 generation-event contract: decoding and validation of one message.
//!
//! Owns the rules of the event table in the design brief and the bounded set of rejection
//! [`Reason`]s. Order matters and is fixed: size first (never parse an oversized message), then
//! JSON, then the privacy gate over every key and string, values a repeated key replaced
//! included (so an event carrying personal data is always classified `pii_suspected`, whatever
//! else is wrong with it), then repeated keys, then the schema.
//!
//! A JSON object may not repeat a key: a parser keeps one of the values, so a repeated key would
//! let the other hide from a reader. The parse itself notices a repeat (one map lookup per key,
//! no second pass), the gate also scans the value the repeat replaced, and the event is a
//! `schema_violation` naming the key's path.
//!
//! This module must not log, allocate metrics or keep state (beyond the bounded set of
//! repeated-key paths it has named), and a [`Rejection`] only ever carries static text: nothing
//! from the payload can leak through an error (a repeated key's path is spelled with contract and
//! config names only, any other key as `*`).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

use crate::config::{Config, MetricKind};
use crate::privacy::{self, PiiKind};

/// Why an event was not applied. The label values are a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Empty payload, not UTF-8, or not JSON.
    InvalidJson,
    /// A required field is missing, has the wrong type, or breaks its pattern.
    SchemaViolation,
    /// `schema_version` is an integer other than 1.
    UnsupportedVersion,
    /// A number outside its declared range.
    OutOfRange,
    /// Larger than `ingest.max_message_bytes`.
    TooLarge,
    /// A field (or signal) that the contract does not define.
    UnknownField,
    /// A string looked like personal data.
    PiiSuspected,
    /// Event time older than its partition's clock minus the allowed lateness.
    Late,
    /// Event time further ahead than `ingest.max_future_skew`.
    Future,
}

impl Reason {
    /// Every reason, for pre-registering metric label values.
    pub const ALL: [Reason; 9] = [
        Reason::InvalidJson,
        Reason::SchemaViolation,
        Reason::UnsupportedVersion,
        Reason::OutOfRange,
        Reason::TooLarge,
        Reason::UnknownField,
        Reason::PiiSuspected,
        Reason::Late,
        Reason::Future,
    ];

    /// The metrics label / dead-letter header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidJson => "invalid_json",
            Reason::SchemaViolation => "schema_violation",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::OutOfRange => "out_of_range",
            Reason::TooLarge => "too_large",
            Reason::UnknownField => "unknown_field",
            Reason::PiiSuspected => "pii_suspected",
            Reason::Late => "late",
            Reason::Future => "future",
        }
    }
}

/// A rejected event: the reason and which contract field was at fault (static text only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// Bounded reason code.
    pub reason: Reason,
    /// The contract field involved, e.g. `emitted_at`, or for a duplicate key its path, e.g.
    /// `signals.tone`; never payload text.
    pub field: &'static str,
    /// For `pii_suspected`: what it looked like.
    pub pii: Option<PiiKind>,
}

fn reject(reason: Reason, field: &'static str) -> Rejection {
    Rejection {
        reason,
        field,
        pii: None,
    }
}

/// Which arm of the rollout produced the event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// The new (fine-tuned) model under test.
    Canary,
    /// The current model serving the rest of the traffic.
    Control,
}

impl Arm {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Canary => "canary",
            Arm::Control => "control",
        }
    }
}

/// A validated event, reduced to what cohort state needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `emitted_at` as milliseconds since the Unix epoch.
    pub emitted_at_ms: i64,
    /// The service being rolled out.
    pub deployment: String,
    /// The model version that produced the generation.
    pub model_version: String,
    /// Canary or control.
    pub arm: Arm,
    /// Values of the allow-listed segment keys, in `cohorts.segment_keys` order (`None` = absent).
    pub segment: Vec<Option<String>>,
    /// Signal values in [`Decoder::signals`] order; booleans are 0.0 / 1.0.
    pub signals: Vec<f64>,
}

/// One signal the configured metrics read.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalSpec {
    /// Key in the event's `signals` object.
    pub name: String,
    /// `Some(range)` for a number, `None` for a boolean.
    pub range: Option<[f64; 2]>,
}

/// Decodes and validates messages against contract v1 and the configured signals.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_bytes: usize,
    segment_keys: Vec<String>,
    signals: Vec<SignalSpec>,
}

/// The top-level fields of contract v1; any other top-level key is `unknown_field`.
pub const FIELDS: [&str; 8] = [
    "schema_version",
    "event_id",
    "emitted_at",
    "deployment",
    "model_version",
    "arm",
    "segment",
    "signals",
];

impl Decoder {
    /// Builds the decoder for a validated config.
    pub fn new(config: &Config) -> Decoder {
        let mut signals: Vec<SignalSpec> = Vec::new();
        for m in &config.metrics {
            if signals.iter().any(|s| s.name == m.signal) {
                continue;
            }
            signals.push(SignalSpec {
                name: m.signal.clone(),
                range: match m.kind {
                    MetricKind::Rate => None,
                    MetricKind::Score | MetricKind::Tail => m.range,
                },
            });
        }
        Decoder {
            max_bytes: config.ingest.max_message_bytes,
            segment_keys: config.cohorts.segment_keys.clone(),
            signals,
        }
    }

    /// The signals read from each event, in the order of [`Event::signals`].
    pub fn signals(&self) -> &[SignalSpec] {
        &self.signals
    }

    /// Applies the size limit of a reloaded config (the only decode setting that can change
    /// without a restart).
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
    }

    /// The size limit in force (`ingest.max_message_bytes`).
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Decodes one message payload: a plainly valid event in one typed pass, anything else
    /// through the generic path, which names the rejection.
    pub fn decode(&self, payload: Option<&[u8]>) -> Result<Event, Rejection> {
        let bytes = self.within_limit(payload)?;
        match typed::decode(self, bytes) {
            Some(event) => Ok(event),
            None => self.decode_value(bytes),
        }
    }

    /// The generic path alone: the payload parsed into a JSON value, then checked rule by rule.
    /// [`Decoder::decode`] gives the same result for every input; this is its reference, for
    /// tests and the decode fuzz target.
    pub fn decode_generic(&self, payload: Option<&[u8]>) -> Result<Event, Rejection> {
        self.decode_value(self.within_limit(payload)?)
    }

    fn within_limit<'a>(&self, payload: Option<&'a [u8]>) -> Result<&'a [u8], Rejection> {
        let bytes = match payload {
            None | Some([]) => return Err(reject(Reason::InvalidJson, "payload")),
            Some(b) => b,
        };
        if bytes.len() > self.max_bytes {
            return Err(reject(Reason::TooLarge, "payload"));
        }
        Ok(bytes)
    }

    fn decode_value(&self, bytes: &[u8]) -> Result<Event, Rejection> {
        let seen = Seen::default();
        let value = match self.parse(bytes, &seen) {
            Ok(v) => v,
            Err(_) => {
                // Unparseable text may still carry personal data; classify it so the
                // dead-letter record drops its bytes.
                let text = String::from_utf8_lossy(bytes);
                return Err(match privacy::scan(&text) {
                    Some(kind) => Rejection {
                        reason: Reason::PiiSuspected,
                        field: "payload",
                        pii: Some(kind),
                    },
                    None => reject(Reason::InvalidJson, "payload"),
                });
            }
        };
        if let Some(kind) = seen.shadowed_pii.get().or_else(|| find_pii(&value)) {
            return Err(Rejection {
                reason: Reason::PiiSuspected,
                field: "payload",
                pii: Some(kind),
            });
        }
        if let Some(path) = seen.duplicate.get() {
            return Err(reject(Reason::SchemaViolation, path));
        }
        let Value::Object(obj) = value else {
            return Err(reject(Reason::SchemaViolation, "payload"));
        };
        if obj.keys().any(|k| !FIELDS.contains(&k.as_str())) {
            return Err(reject(Reason::UnknownField, "payload"));
        }
        match obj.get("schema_version") {
            Some(Value::Number(n)) => match n.as_u64() {
                Some(1) => {}
                Some(_) => return Err(reject(Reason::UnsupportedVersion, "schema_version")),
                None if n.is_i64() => {
                    return Err(reject(Reason::UnsupportedVersion, "schema_version"))
                }
                None => return Err(reject(Reason::SchemaViolation, "schema_version")),
            },
            _ => return Err(reject(Reason::SchemaViolation, "schema_version")),
        }
        let event_id = required_str(&obj, "event_id")?;
        if !id_like(event_id, |c| {
            c.is_ascii_alphanumeric() || b"._:-".contains(&c)
        }) {
            return Err(reject(Reason::SchemaViolation, "event_id"));
        }
        let emitted_at_ms = parse_rfc3339_ms(required_str(&obj, "emitted_at")?)
            .ok_or(reject(Reason::SchemaViolation, "emitted_at"))?;
        let deployment = required_str(&obj, "deployment")?;
        if !id_like(deployment, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c)
        }) {
            return Err(reject(Reason::SchemaViolation, "deployment"));
        }
        let model_version = required_str(&obj, "model_version")?;
        if !id_like(model_version, |c| {
            c.is_ascii_alphanumeric() || b"._:-".contains(&c)
        }) {
            return Err(reject(Reason::SchemaViolation, "model_version"));
        }
        let arm = match required_str(&obj, "arm")? {
            "canary" => Arm::Canary,
            "control" => Arm::Control,
            _ => return Err(reject(Reason::SchemaViolation, "arm")),
        };
        let segment = self.segment(obj.get("segment"))?;
        let signals = self.signal_values(obj.get("signals"))?;
        Ok(Event {
            emitted_at_ms,
            deployment: deployment.to_owned(),
            model_version: model_version.to_owned(),
            arm,
            segment,
            signals,
        })
    }

    fn segment(&self, value: Option<&Value>) -> Result<Vec<Option<String>>, Rejection> {
        let mut out = vec![None; self.segment_keys.len()];
        let obj = match value {
            None => return Ok(out),
            Some(Value::Object(obj)) => obj,
            Some(_) => return Err(reject(Reason::SchemaViolation, "segment")),
        };
        for (k, v) in obj {
            let Value::String(v) = v else {
                return Err(reject(Reason::SchemaViolation, "segment"));
            };
            if k.is_empty() || k.len() > 64 || v.is_empty() || v.chars().count() > 64 {
                return Err(reject(Reason::SchemaViolation, "segment"));
            }
            if let Some(i) = self.segment_keys.iter().position(|s| s == k) {
                out[i] = Some(v.clone());
            }
        }
        Ok(out)
    }

    fn signal_values(&self, value: Option<&Value>) -> Result<Vec<f64>, Rejection> {
        let Some(Value::Object(obj)) = value else {
            return Err(reject(Reason::SchemaViolation, "signals"));
        };
        if obj
            .keys()
            .any(|k| !self.signals.iter().any(|s| &s.name == k))
        {
            return Err(reject(Reason::UnknownField, "signals"));
        }
        let mut out = Vec::with_capacity(self.signals.len());
        for spec in &self.signals {
            let x = match (obj.get(&spec.name), spec.range) {
                (Some(Value::Bool(b)), None) => f64::from(u8::from(*b)),
                (Some(Value::Number(n)), Some([lo, hi])) => {
                    let x = n.as_f64().ok_or(reject(Reason::OutOfRange, "signals"))?;
                    if !x.is_finite() || x < lo || x > hi {
                        return Err(reject(Reason::OutOfRange, "signals"));
                    }
                    x
                }
                _ => return Err(reject(Reason::SchemaViolation, "signals")),
            };
            out.push(x);
        }
        Ok(out)
    }
}

/// What the parse noticed besides the value: the path of the first repeated key, and personal
/// data in a value that a repeat replaced (the gate never sees it in the result).
#[derive(Default)]
struct Seen {
    duplicate: Cell<Option<&'static str>>,
    shadowed_pii: Cell<Option<PiiKind>>,
}

/// One step from the root to a value: an object key, or an array item (`None`).
struct Step<'a> {
    parent: Option<&'a Step<'a>>,
    key: Option<&'a str>,
}

/// Parses one JSON value the way `serde_json::Value` does, and notes repeated keys in [`Seen`].
#[derive(Clone, Copy)]
struct Node<'a> {
    decoder: &'a Decoder,
    seen: &'a Seen,
    at: Option<&'a Step<'a>>,
}

impl Decoder {
    /// The JSON value of `bytes`, with repeated keys noted in `seen`.
    fn parse(&self, bytes: &[u8], seen: &Seen) -> serde_json::Result<Value> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = Node {
            decoder: self,
            seen,
            at: None,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }

    /// The printable path of `key` under `parent`: contract field names at the top, configured
    /// segment keys and signal names below `segment` and `signals`, `*` for any other key or an
    /// array item, and one `.*` for everything deeper. Never payload text.
    fn duplicate_path(&self, parent: Option<&Step<'_>>, key: &str) -> &'static str {
        let mut steps = vec![Some(key)];
        let mut at = parent;
        while let Some(step) = at {
            steps.push(step.key);
            at = step.parent;
        }
        steps.reverse();
        let top = steps[0]
            .and_then(|k| FIELDS.iter().copied().find(|f| *f == k))
            .unwrap_or("*");
        let Some(second) = steps.get(1) else {
            return top;
        };
        let configured = second.filter(|k| match top {
            "segment" => self.segment_keys.iter().any(|s| s == k),
            "signals" => self.signals.iter().any(|s| s.name == *k),
            _ => false,
        });
        let deeper = if steps.len() > 2 { ".*" } else { "" };
        intern(format!("{top}.{}{deeper}", configured.unwrap_or("*")))
    }
}

/// The most duplicate-key paths kept; past it (a config with thousands of signal names) a path
/// is reported as `payload`.
const MAX_PATHS: usize = 1024;

/// A `'static` copy of `path`, made once per distinct path. [`Rejection`] is `Copy` and carries
/// static text only; the paths are built from contract and config names, so the set is bounded
/// by the config (and by [`MAX_PATHS`]), never grown by payloads.
fn intern(path: String) -> &'static str {
    static PATHS: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut paths = PATHS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = paths.get(path.as_str()) {
        return known;
    }
    if paths.len() >= MAX_PATHS {
        return "payload";
    }
    let path: &'static str = Box::leak(path.into_boxed_str());
    paths.insert(path);
    path
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let item = Step {
            parent: self.at,
            key: None,
        };
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Node {
            at: Some(&item),
            ..self
        })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let step = Step {
                parent: self.at,
                key: Some(&key),
            };
            let value = map.next_value_seed(Node {
                at: Some(&step),
                ..self
            })?;
            match obj.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(mut slot) => {
                    let replaced = slot.insert(value);
                    if self.seen.duplicate.get().is_none() {
                        let path = self.decoder.duplicate_path(self.at, slot.key());
                        self.seen.duplicate.set(Some(path));
                    }
                    if self.seen.shadowed_pii.get().is_none() {
                        self.seen.shadowed_pii.set(find_pii(&replaced));
                    }
                }
            }
        }
        Ok(Value::Object(obj))
    }
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, Rejection> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(reject(Reason::SchemaViolation, field)),
    }
}

fn id_like(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(allowed)
}

fn find_pii(v: &Value) -> Option<PiiKind> {
    match v {
        Value::String(s) => privacy::scan(s),
        Value::Array(items) => items.iter().find_map(find_pii),
        Value::Object(obj) => obj
            .iter()
            .find_map(|(k, v)| privacy::scan(k).or_else(|| find_pii(v))),
        // Numbers are not scanned: a Unix timestamp or a count cannot be told from a phone
        // number. The dead-letter record scans the raw text, numbers included.
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// Parses an RFC 3339 timestamp with an explicit offset into Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats Unix milliseconds as RFC 3339 UTC with millisecond precision.
///
/// Years 1970 to 9999 are written directly (civil date from days, Hinnant's algorithm): every
/// verdict and published cohort carries such a time, and the general formatter cost more than
/// the rest of a verdict. Other times go through the `time` crate, which gives the same text.
pub fn format_rfc3339_ms(ms: i64) -> String {
    const END_OF_9999_MS: i64 = 253_402_300_800_000;
    if !(0..END_OF_9999_MS).contains(&ms) {
        return format_rfc3339_ms_general(ms);
    }
    let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = [0u8; 24];
    let mut put = |at: usize, value: i64, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, ms_of_day / 3_600_000, 2);
    put(14, ms_of_day / 60_000 % 60, 2);
    put(17, ms_of_day / 1_000 % 60, 2);
    put(20, ms_of_day % 1_000, 3);
    for (at, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        out[at] = sep;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// [`format_rfc3339_ms`] by the `time` crate, for any time.
fn format_rfc3339_ms_general(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests;
mod typed;
