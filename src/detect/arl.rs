//! Exact in-control average run length (ARL) of a one-sided CUSUM, and its inverse.
//!
//! Owns the arithmetic that turns a false-alarm budget into a CUSUM threshold. For
//! `S = max(0, S + X)` alarming at `S ≥ h`, with i.i.d. increments `X`, the run length from
//! `S = 0` is computed by the Markov-chain method (Brook & Evans, 1972): `[0, h)` is cut into `N`
//! states, `R` is the transition matrix among them (mass leaving upwards is the alarm), and the
//! ARL is the first entry of `(I − R)⁻¹·1`. `R` is banded (an increment moves the state by a
//! bounded number of cells; everything below 0 lands in state 0, which stays inside the band),
//! so the system is solved by banded elimination in `O(N·bandwidth²)`: well under a millisecond
//! for the charts driftd runs. `I − R` is row diagonally dominant (`R` is substochastic), so no
//! pivoting is needed.
//!
//! Increments are either two-point (a Bernoulli log-likelihood ratio: each value's mass is split
//! between the two grid points around it, which keeps its mean) or normal (Brook & Evans's
//! midpoint discretisation). The grid is fine enough that the ARL is within 1% of its limit
//! (see the convergence tests). On top: [`threshold_for_arl`], the inverse (Siegmund's
//! approximation as the first guess, Newton steps on a half grid, one or two evaluations on the
//! default grid; a bracketed secant when that does not apply), and [`memo`] for callers that
//! recompute the same thresholds. Pure functions, no state but the memo; must not know about
//! cohorts, config or events. `driftd simulate` uses it for the late-drift oracle's threshold.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::sequential::normal_cdf;

/// The distribution of one CUSUM increment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Increments {
    /// `up` with probability `p`, else `down` (a Bernoulli log-likelihood ratio).
    TwoPoint {
        /// Probability of `up`.
        p: f64,
        /// The increment of a 1 (positive for a chart watching an increase).
        up: f64,
        /// The increment of a 0.
        down: f64,
    },
    /// Normal with this mean and standard deviation.
    Normal {
        /// Mean of the increment.
        mean: f64,
        /// Standard deviation of the increment (> 0).
        sd: f64,
    },
}

impl Increments {
    /// Increments of the Bernoulli LLR chart tuned from `p0` to `p1`, when the true rate is `p`.
    pub fn bernoulli(p: f64, p0: f64, p1: f64) -> Increments {
        Increments::TwoPoint {
            p: p.clamp(0.0, 1.0),
            up: (p1 / p0).ln(),
            down: ((1.0 - p1) / (1.0 - p0)).ln(),
        }
    }

    /// Increments of the Gaussian LLR chart `(δ/σ₀²)(x − μ₀ − δ/2)` when `x ~ N(μ, σ²)`: `mu`
    /// and `sigma` are the truth, `mu0`, `sigma0` and `delta` the chart's tuning.
    pub fn gaussian(mu: f64, sigma: f64, mu0: f64, sigma0: f64, delta: f64) -> Increments {
        let scale = delta / (sigma0 * sigma0);
        Increments::Normal {
            mean: scale * (mu - mu0 - delta / 2.0),
            sd: (scale * sigma).abs().max(1e-12),
        }
    }

    /// Mean of one increment.
    fn mean(&self) -> f64 {
        match *self {
            Increments::TwoPoint { p, up, down } => p * up + (1.0 - p) * down,
            Increments::Normal { mean, .. } => mean,
        }
    }

    /// The increment's typical size (the larger step, or the sd), a floor for a threshold guess.
    fn scale(&self) -> f64 {
        match *self {
            Increments::TwoPoint { up, down, .. } => up.abs().max(down.abs()),
            Increments::Normal { sd, .. } => sd,
        }
    }

    /// Expected overshoot of the threshold at an alarm, for Siegmund's approximation: `0.583·sd`
    /// for normal increments; half the up step for two-point ones (uniform over the step).
    fn overshoot(&self) -> f64 {
        match *self {
            Increments::TwoPoint { up, .. } => up.max(0.0) / 2.0,
            Increments::Normal { sd, .. } => 0.583 * sd,
        }
    }

    /// The adjustment coefficient: the `θ > 0` with `E[e^{θX}] = 1`, which exists when the
    /// drift is negative and an increment can be positive; `ln ARL` grows like `θ·h`. Normal:
    /// `−2μ/σ²`. Two-point: Newton from the right on the convex `p·e^{θu} + (1−p)·e^{θd} − 1`,
    /// which converges monotonically.
    fn theta(&self) -> Option<f64> {
        match *self {
            Increments::Normal { mean, sd } => (mean < 0.0).then(|| -2.0 * mean / (sd * sd)),
            Increments::TwoPoint { p, up, down } => {
                if self.mean() >= 0.0 || up <= 0.0 || p <= 0.0 || down >= 0.0 {
                    return None;
                }
                // p·e^{θu} = 1 there, so the function is positive: right of the root.
                let mut theta = (1.0 / p).ln() / up;
                for _ in 0..60 {
                    let (a, b) = (p * (theta * up).exp(), (1.0 - p) * (theta * down).exp());
                    let step = (a + b - 1.0) / (a * up + b * down);
                    theta -= step;
                    if step.abs() < 1e-12 * theta {
                        break;
                    }
                }
                (theta.is_finite() && theta > 0.0).then_some(theta)
            }
        }
    }

    /// The grid size used by [`arl`] for threshold `h`, between 150 and 6,000 states. Normal:
    /// cells of a sixth of the sd. Two-point: half the smaller step, but no finer than 1/400 of
    /// the larger (a rare large step and frequent tiny ones, a rate of 0.1% charted for a rise
    /// of 2 points, would otherwise need 6,000 states with a wide band; splitting a step between
    /// two cells keeps its mean and adds a variance below `cell²/4`, far below the increment's).
    fn states(&self, h: f64) -> usize {
        let cell = match *self {
            Increments::TwoPoint { up, down, .. } => {
                (up.abs().min(down.abs()) / 2.0).max(up.abs().max(down.abs()) / 400.0)
            }
            Increments::Normal { sd, .. } => sd / 4.0,
        };
        ((h / cell).ceil() as usize).clamp(100, 6000)
    }
}

/// True when the chart's drift is negative and an increment can be positive: its ARL grows
/// exponentially in `h`, so any budget has a threshold of moderate size.
pub fn has_negative_drift(inc: Increments) -> bool {
    inc.theta().is_some()
}

/// In-control ARL from `S = 0` of the chart with increments `inc` and threshold `h`, on the
/// default grid. Both discretisations converge as about `1/N²` (the grid-convergence test), so
/// the ARL is Richardson-extrapolated from `N` and `N/2` states: much more accurate than the
/// finer grid alone for an eighth more work.
pub fn arl(inc: Increments, h: f64) -> f64 {
    extrapolated(inc, h, inc.states(h))
}

/// The ARL Richardson-extrapolated from grids of `n` and `n/2` states.
fn extrapolated(inc: Increments, h: f64, n: usize) -> f64 {
    let (fine, coarse) = (arl_on_grid(inc, h, n), arl_on_grid(inc, h, n / 2));
    fine + (fine - coarse) / 3.0
}

/// In-control ARL on a grid of `n` states (for convergence checks).
pub fn arl_on_grid(inc: Increments, h: f64, n: usize) -> f64 {
    if h <= 0.0 {
        return 1.0;
    }
    let n = n.max(2);
    // kernel[d + lo]: probability of moving d cells.
    let (lo, kernel) = match inc {
        Increments::TwoPoint { p, up, down } => {
            let w = h / n as f64;
            let (lo_up, hi_up) = split(up / w);
            let (lo_dn, hi_dn) = split(down / w);
            let min = lo_up.0.min(lo_dn.0).min(0);
            let max = hi_up.0.max(hi_dn.0).max(0);
            let mut k = vec![0.0; (max - min + 1) as usize];
            for (d, m) in [lo_up, hi_up] {
                k[(d - min) as usize] += p * m;
            }
            for (d, m) in [lo_dn, hi_dn] {
                k[(d - min) as usize] += (1.0 - p) * m;
            }
            ((-min) as usize, k)
        }
        Increments::Normal { mean, sd } => {
            // Brook & Evans: state 0 is S = 0, state j the cell ((j−½)w, (j+½)w], (N−½)w = h.
            let w = 2.0 * h / (2.0 * n as f64 - 1.0);
            let reach = |x: f64| (((x / w).ceil() as i64).max(1) as usize).min(n);
            let lo = reach(7.5 * sd - mean);
            let hi = reach(7.5 * sd + mean);
            let cdf = |d: f64| normal_cdf((d * w - mean) / sd);
            let mut k: Vec<f64> = (-(lo as i64)..=hi as i64)
                .map(|d| cdf(d as f64 + 0.5) - cdf(d as f64 - 0.5))
                .collect();
            // The tails: below the band everything ends at 0, which the lowest offset also
            // reaches from the rows that can reach it; above it the mass is negligible (7.5 sd,
            // 3·10⁻¹⁴ a step).
            k[0] += cdf(-(lo as f64) - 0.5);
            (lo, k)
        }
    };
    solve_banded(n, lo, kernel.len() - 1 - lo, &kernel)
}

/// A real offset in cells as two integer offsets with weights that keep its mean.
fn split(x: f64) -> ((i64, f64), (i64, f64)) {
    let f = x.floor();
    ((f as i64, 1.0 - (x - f)), (f as i64 + 1, x - f))
}

/// First entry of `(I − R)⁻¹·1`, `R` the `n`-state transition matrix with kernel `kernel`
/// (offsets `−lo..=hi`), moves below 0 clamped to state 0, moves to `n` or beyond absorbed.
fn solve_banded(n: usize, lo: usize, hi: usize, kernel: &[f64]) -> f64 {
    let offset = lo as i64;
    // Moves of n cells or more either way end at 0 or are absorbed from every row.
    let (lo, hi) = (lo.min(n), hi.min(n - 1));
    let width = lo + hi + 1;
    let at = |i: usize, j: usize| i * width + j + lo - i;
    let mut a = vec![0.0; n * width];
    for i in 0..n {
        a[at(i, i)] += 1.0;
        for (k, &pr) in kernel.iter().enumerate() {
            let j = i as i64 + k as i64 - offset;
            if pr == 0.0 || j >= n as i64 {
                continue;
            }
            // Below 0 is state 0, which row i reaches within the band (i − lo ≤ 0 ≤ j).
            a[at(i, j.max(0) as usize)] -= pr;
        }
    }
    // Rows are contiguous (row `i` holds columns `i − lo ..= i + hi`), so elimination and
    // back substitution run over slices: no index arithmetic in the inner loops.
    let mut b = vec![1.0; n];
    for k in 0..n {
        let len = (k + hi).min(n - 1) - k + 1;
        let (head, tail) = a.split_at_mut((k + 1) * width);
        let pivot_row = &head[k * width + lo..k * width + lo + len];
        let pivot = pivot_row[0];
        for d in 1..=lo.min(n - 1 - k) {
            let row = &mut tail[(d - 1) * width..d * width];
            let start = lo - d;
            let f = row[start] / pivot;
            if f == 0.0 {
                continue;
            }
            for (x, y) in row[start..start + len].iter_mut().zip(pivot_row) {
                *x -= f * y;
            }
            b[k + d] -= f * b[k];
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let row = &a[i * width..(i + 1) * width];
        let m = (i + hi).min(n - 1) - i;
        let s: f64 = row[lo + 1..lo + 1 + m]
            .iter()
            .zip(&x[i + 1..i + 1 + m])
            .map(|(a, x)| a * x)
            .sum();
        x[i] = (b[i] - s) / row[lo];
    }
    x[0]
}

/// The smallest threshold (to 0.4% in ARL) whose in-control ARL is at least `arl0`.
///
/// `ln ARL(h)` is nearly linear in `h` with slope `θ`, the adjustment coefficient
/// (`E[e^{θX}] = 1`), so Siegmund's corrected diffusion approximation
/// `ARL ≈ e^{θ(h+ρ)}/(θ|μ|)` (`ρ` the expected overshoot) gives a first guess within a few
/// percent of `h`, and Newton steps with slope `θ` (then the secant through the last two exact
/// evaluations) land in `[arl0, 1.004·arl0]` after two to four exact evaluations. A chart whose
/// in-control drift is not negative (no `θ`), or a solve that does not settle, falls back to a
/// bracketed search. Deterministic: the same input gives the same threshold.
pub fn threshold_for_arl(inc: Increments, arl0: f64) -> f64 {
    let target = arl0.max(1.0).ln();
    if let Some(h) = newton(inc, target) {
        return h;
    }
    // Lorden's `ln ARL₀` is close for an LLR chart and a fine first bracket end for any.
    solve_threshold(|h| -arl(inc, h).ln(), -target, target.max(1.0))
}

/// [`threshold_for_arl`]'s fast path: `None` when it does not apply or does not settle.
///
/// The Newton steps run on a grid half as fine (a quarter to an eighth of the work). Then
/// evaluations on the default grid: one lands inside the window, or its correction
/// `(ln ARL₀ − ln ARL(h))/θ` is taken without checking when it is below 0.05 (the default
/// grid's slope is `θ` within 1%, so the step's error is under 5·10⁻⁴, inside the aim's margin
/// of `3·10⁻³`), or it is checked again.
fn newton(inc: Increments, target: f64) -> Option<f64> {
    let theta = inc.theta()?;
    let drift = -inc.mean();
    // Aim a little above the target so that a step that lands just short still ends inside.
    let (aim, tolerance) = (target + 3e-3, 6e-3);
    let mut h = ((target + (theta * drift).ln()) / theta - inc.overshoot()).max(inc.scale());
    let coarse = (inc.states(h) / 2).max(60);
    let mut previous: Option<(f64, f64)> = None;
    let mut slope = theta;
    let mut fine = false;
    for _ in 0..10 {
        let f = if fine {
            arl(inc, h).ln()
        } else {
            extrapolated(inc, h, coarse).ln()
        };
        if fine {
            if f >= target && f - target <= tolerance {
                return Some(h);
            }
            if (aim - f).abs() <= 0.05 {
                return Some(h + (aim - f) / theta);
            }
            h += (aim - f) / theta;
            continue;
        }
        if let Some((hp, fp)) = previous {
            if (h - hp).abs() > 1e-12 && (f - fp) / (h - hp) > 0.0 {
                slope = (f - fp) / (h - hp);
            }
        }
        if (f - aim).abs() <= tolerance / 2.0 {
            fine = true;
            continue;
        }
        previous = Some((h, f));
        h = (h + (aim - f) / slope).max(h / 4.0);
    }
    None
}

/// Solves `f(h) = target` for a decreasing `f` (a log false-alarm rate), starting from the
/// guess `start`; returns the upper end of the final bracket, so the rate is at most the target.
fn solve_threshold(f: impl Fn(f64) -> f64, target: f64, start: f64) -> f64 {
    let (mut a, mut b) = (start, start);
    let (mut fa, mut fb) = (f(start), f(start));
    if fa > target {
        while fb > target {
            if b > 1e4 {
                return b;
            }
            (a, fa) = (b, fb);
            b = b * 1.25 + 0.5;
            fb = f(b);
        }
    } else {
        while fa <= target {
            if a < 1e-6 {
                return a;
            }
            (b, fb) = (a, fa);
            a *= 0.8;
            fa = f(a);
        }
    }
    // Illinois-modified regula falsi: ln-rate is nearly linear in h, so few steps.
    let mut side = 0;
    for _ in 0..60 {
        if (fb - target).abs() < 1e-3 || b - a < 1e-6 {
            break;
        }
        let c = b - (fb - target) * (b - a) / (fb - fa);
        let c = if c.is_finite() { c } else { (a + b) / 2.0 };
        let c = c.clamp(a + 1e-3 * (b - a), b - 1e-3 * (b - a));
        let fc = f(c);
        if fc > target {
            (a, fa) = (c, fc);
            if side == -1 {
                fb = target + (fb - target) / 2.0;
            }
            side = -1;
        } else {
            (b, fb) = (c, fc);
            if side == 1 {
                fa = target + (fa - target) / 2.0;
            }
            side = 1;
        }
    }
    b
}

/// Memoised threshold computations keyed by quantised inputs.
///
/// Thresholds are recomputed for every canary version and cohort; the same inputs recur (the
/// same metric, a similar reference and budget), and a computation is some milliseconds. The
/// caller quantises its inputs (conservatively) so that equal keys mean equal thresholds; the
/// value is a pure function of the key, so the memo cannot change a decision, only its cost.
pub fn memo(key: [i64; 6], compute: impl FnOnce() -> f64) -> f64 {
    static MEMO: OnceLock<Mutex<HashMap<[i64; 6], f64>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Mutex::default);
    if let Some(h) = memo.lock().ok().and_then(|m| m.get(&key).copied()) {
        return h;
    }
    let h = compute();
    if let Ok(mut m) = memo.lock() {
        if m.len() >= 50_000 {
            m.clear();
        }
        m.insert(key, h);
    }
    h
}

#[cfg(test)]
mod tests;
