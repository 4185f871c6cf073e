//! The wall clock, in one place.
//!
//! State and detection run on event time; the wall clock is only for measurements that are
//! about the live system (event age, demo pacing). Keeping it here makes every use easy to find.

/// Milliseconds since the Unix epoch, by the wall clock.
#[allow(clippy::disallowed_methods)] // The one sanctioned read of the wall clock.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
