//! Retrying one action: exponential backoff with full jitter, bounded in time.
//!
//! An attempt that fails with a retryable error (a timeout, a connection error, HTTP 429 or 5xx:
//! see [`retryable_status`]) is tried again after a wait drawn uniformly from zero to the
//! backoff ceiling, which doubles from 400 ms per attempt up to 12.8 s. No attempt starts whose
//! ceiling would end past `containment.retry_for` from the first; other errors (4xx, a flag
//! file without the flag) end the loop at once — a client error will not fix itself. A target
//! that answered with `Retry-After` is not called again before that time.
//!
//! Runs on tokio's clock (`tokio::time`), so tests drive it with paused time. Knows nothing of
//! targets: the caller passes the attempt and hears of every result.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::providers::ActionError;

/// The ceiling of the first wait; doubled per attempt.
const BASE: Duration = Duration::from_millis(200);
/// Doublings stop here (200 ms × 2⁶ = 12.8 s).
const MAX_DOUBLINGS: u32 = 6;

/// True for the HTTP statuses worth another attempt: 429 (throttled) and every 5xx.
pub fn retryable_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

/// The ceiling of the wait after attempt `attempt` (1-based): 400 ms, 800 ms, … 12.8 s.
pub fn backoff(attempt: u32) -> Duration {
    BASE.saturating_mul(1 << attempt.min(MAX_DOUBLINGS))
}

/// Full jitter: a wait drawn uniformly from zero to `ceiling`, so many actions failing
/// together do not retry in step.
pub fn full_jitter(ceiling: Duration) -> Duration {
    Duration::from_millis(rand::rng().random_range(0..=ceiling.as_millis() as u64))
}

/// One attempt's result, as the caller hears of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// What the attempt returned (a timeout is a retryable error).
    pub result: Result<(), ActionError>,
    /// No attempt follows: success, a permanent error, no time left, or withdrawn.
    pub last: bool,
    /// Not attempted: the caller withdrew the action before this attempt (a release arrived
    /// while it was retrying). Reported once, as the last.
    pub withdrawn: bool,
}

/// How long one attempt may take and how long to keep trying.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Per attempt (`containment.action_timeout`).
    pub timeout: Duration,
    /// From the first attempt, no new attempt is started whose backoff would end later
    /// (`containment.retry_for`).
    pub retry_for: Duration,
}

impl Retry {
    /// Runs `attempt` until it succeeds, fails for good, the time is up or `proceed` says no,
    /// reporting each result to `report`. `proceed` is asked before every attempt, so an action
    /// that is no longer wanted is never sent late. `jitter` turns a backoff ceiling into the
    /// wait ([`full_jitter`]).
    pub async fn run<F, Fut>(
        &self,
        mut attempt: F,
        mut proceed: impl FnMut() -> bool,
        mut jitter: impl FnMut(Duration) -> Duration,
        mut report: impl FnMut(Attempt),
    ) where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), ActionError>>,
    {
        let deadline = Instant::now() + self.retry_for;
        let mut number = 0u32;
        loop {
            number += 1;
            if !proceed() {
                report(Attempt {
                    number,
                    result: Err(ActionError::permanent("withdrawn before this attempt")),
                    last: true,
                    withdrawn: true,
                });
                return;
            }
            let result = tokio::time::timeout(self.timeout, attempt())
                .await
                .unwrap_or_else(|_| Err(ActionError::retryable("timeout")));
            // A target that said when to come back (Retry-After) is not called sooner.
            let asked = match &result {
                Err(e) => e.retry_after.unwrap_or_default(),
                Ok(()) => Duration::ZERO,
            };
            let ceiling = backoff(number);
            let again = matches!(&result, Err(e) if e.retryable)
                && Instant::now() + ceiling.max(asked) < deadline;
            report(Attempt {
                number,
                result,
                last: !again,
                withdrawn: false,
            });
            if !again {
                return;
            }
            tokio::time::sleep(jitter(ceiling).max(asked)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retryable() -> ActionError {
        ActionError::retryable("HTTP 503")
    }

    const RETRY: Retry = Retry {
        timeout: Duration::from_secs(1),
        retry_for: Duration::from_secs(30),
    };

    /// Runs `retry` on attempts answered by `answer(number)`; returns every report and the
    /// paused-clock time each attempt started at (since the start).
    async fn run(
        retry: Retry,
        jitter: impl FnMut(Duration) -> Duration,
        answer: impl Fn(u32) -> Result<(), ActionError>,
    ) -> (Vec<Attempt>, Vec<Duration>) {
        let start = Instant::now();
        let mut starts = Vec::new();
        let mut reports = Vec::new();
        let mut n = 0;
        retry
            .run(
                || {
                    n += 1;
                    starts.push(start.elapsed());
                    std::future::ready(answer(n))
                },
                || true,
                jitter,
                |a| reports.push(a),
            )
            .await;
        (reports, starts)
    }

    #[test]
    fn statuses_worth_a_retry() {
        for s in [429, 500, 502, 503, 504, 599] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 422, 600] {
            assert!(!retryable_status(s), "{s}");
        }
    }

    #[test]
    fn the_backoff_ceiling_doubles_then_stays_capped() {
        let ceilings: Vec<u64> = (1..=9).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(
            ceilings,
            [400, 800, 1600, 3200, 6400, 12_800, 12_800, 12_800, 12_800]
        );
        for _ in 0..1000 {
            assert!(full_jitter(backoff(3)) <= backoff(3));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn success_stops_retrying() {
        let (reports, _) = run(RETRY, full_jitter, |n| {
            if n < 3 {
                Err(retryable())
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(reports.len(), 3);
        assert!(reports[..2].iter().all(|a| !a.last && a.result.is_err()));
        assert_eq!(
            reports[2],
            Attempt {
                number: 3,
                result: Ok(()),
                last: true,
                withdrawn: false
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_error_is_not_retried() {
        let (reports, _) = run(RETRY, full_jitter, |_| {
            Err(ActionError::permanent("HTTP 400"))
        })
        .await;
        assert_eq!(reports.len(), 1);
        assert!(reports[0].last);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_grow_with_the_ceiling_and_stay_within_it() {
        // The longest waits full jitter can draw: each gap is exactly the ceiling.
        let (_, starts) = run(RETRY, |c| c, |_| Err(retryable())).await;
        let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        let ceilings: Vec<Duration> = (1..=gaps.len() as u32).map(backoff).collect();
        assert_eq!(gaps, ceilings);
        // Random waits: every gap between zero and its ceiling.
        let (_, starts) = run(RETRY, full_jitter, |_| Err(retryable())).await;
        for (n, w) in starts.windows(2).enumerate() {
            assert!(w[1] - w[0] <= backoff(n as u32 + 1), "gap after {}", n + 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline() {
        let (reports, starts) = run(RETRY, |c| c, |_| Err(retryable())).await;
        // 0.4 + 0.8 + 1.6 + 3.2 + 6.4 = 12.4 s; the next 12.8 s wait would end at 25.2 s,
        // within 30 s; the one after would end at 38 s: no attempt past it.
        assert_eq!(starts.len(), 7);
        assert_eq!(*starts.last().unwrap(), Duration::from_millis(25_200));
        assert!(reports.last().unwrap().last);
        assert!(reports[..6].iter().all(|a| !a.last));
        assert!(starts.iter().all(|s| *s < RETRY.retry_for));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_hangs_times_out_and_is_retried() {
        let start = Instant::now();
        let retry = Retry {
            timeout: Duration::from_millis(500),
            retry_for: Duration::from_secs(2),
        };
        let mut reports = Vec::new();
        retry
            .run(
                std::future::pending::<Result<(), ActionError>>,
                || true,
                |c| c,
                |a| reports.push(a),
            )
            .await;
        // 0.5 s timeout + 0.4 s wait + 0.5 s timeout; a further 0.8 s wait would pass 2 s.
        assert_eq!(reports.len(), 2);
        assert!(reports
            .iter()
            .all(|a| a.result.as_ref().unwrap_err().message == "timeout"));
        assert_eq!(start.elapsed(), Duration::from_millis(1400));
    }

    /// Regression: a release did not stop an action that was still retrying, so a late flip
    /// undid the operator's re-enable. `proceed` is asked before every attempt.
    #[tokio::test(start_paused = true)]
    async fn a_withdrawn_action_makes_no_further_attempt() {
        let attempts = std::cell::Cell::new(0);
        let mut reports = Vec::new();
        RETRY
            .run(
                || {
                    attempts.set(attempts.get() + 1);
                    std::future::ready(Err(retryable()))
                },
                || attempts.get() < 2,
                |c| c,
                |a| reports.push(a),
            )
            .await;
        assert_eq!(attempts.get(), 2, "withdrawn after the second attempt");
        assert_eq!(reports.len(), 3);
        assert!(reports[..2].iter().all(|a| !a.withdrawn && !a.last));
        assert!(reports[2].withdrawn && reports[2].last && reports[2].number == 3);
    }

    /// Regression: `Retry-After` on a 429 was ignored, so a throttling API was called again
    /// within the backoff and kept refusing.
    #[tokio::test(start_paused = true)]
    async fn a_target_that_asks_to_wait_is_not_called_sooner() {
        let (reports, starts) = run(
            RETRY,
            |c| c,
            |n| match n {
                1 => Err(ActionError {
                    retry_after: Some(Duration::from_secs(5)),
                    ..ActionError::retryable("HTTP 429")
                }),
                _ => Ok(()),
            },
        )
        .await;
        assert_eq!(reports.len(), 2);
        assert_eq!(starts, [Duration::ZERO, Duration::from_secs(5)]);
        // Asked to wait past the deadline: no further attempt.
        let (reports, _) = run(
            RETRY,
            |c| c,
            |_| {
                Err(ActionError {
                    retry_after: Some(Duration::from_secs(60)),
                    ..ActionError::retryable("HTTP 429")
                })
            },
        )
        .await;
        assert_eq!(reports.len(), 1);
        assert!(reports[0].last);
    }
}
