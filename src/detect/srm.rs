//! Sample-ratio mismatch: is the canary getting the share of traffic it was configured for?
//!
//! An anytime-valid test of a binomial proportion: the Beta(1,1)-mixture likelihood ratio
//! `Λ = B(k+1, n−k+1) / (p₀ᵏ(1−p₀)ⁿ⁻ᵏ)` against the configured canary share `p₀`, where `k` of `n`
//! events came from the canary. Under `p₀` it is a martingale, so `Λ ≥ 1/α` at any time has
//! probability at most α. A mismatch means the comparison itself is suspect (routing bugs,
//! crashing canary pods dropping telemetry), so it is an alert of its own. Pure.

use statrs::function::beta::ln_beta;

/// `ln Λ` for `k` canary events out of `n` against an expected canary share `p0` (0 < p0 < 1).
pub fn log_lr(k: u64, n: u64, p0: f64) -> f64 {
    let (k, n) = (k as f64, n as f64);
    ln_beta(k + 1.0, n - k + 1.0) - k * p0.ln() - (n - k) * (1.0 - p0).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // No data: Λ = B(1,1) = 1.
        assert!(log_lr(0, 0, 0.3).abs() < 1e-12);
        // One canary event at p0 = ½: B(2,1) = ½ against ½ → Λ = 1.
        assert!(log_lr(1, 1, 0.5).abs() < 1e-12);
        // n = 100, k = 50, p0 = ½: lnΓ(51)·2 − lnΓ(102) + 100·ln 2, computed with Python's
        // math.lgamma: -2.0842441, i.e. a balanced split is evidence *for* p0.
        assert!(
            (log_lr(50, 100, 0.5) - (-2.084_244_1)).abs() < 1e-6,
            "{}",
            log_lr(50, 100, 0.5)
        );
        // A 70/30 split of 1000 events against 50/50 is overwhelming.
        assert!(log_lr(700, 1000, 0.5) > 50.0);
    }
}
