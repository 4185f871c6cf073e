//! Server-side SVG charts of a test's trajectory: nothing to download, nothing run in the
//! browser, readable without colour (lines differ by dash, states are written out).
//!
//! Owns the drawing only: from a [`Series`] to SVG text. Each verdict change is a
//! `line.crossing` with `data-state` and `data-t` (its event time), so a reader — or a browser
//! test — finds where the verdict changed.

use super::esc;
use crate::detect::trajectory::{Point, Series};
use crate::event::format_rfc3339_ms;

const W: f64 = 640.0;
const H: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 30.0;

/// Linear map of the data range onto the plot area.
struct Scale {
    t0: f64,
    t1: f64,
    y0: f64,
    y1: f64,
}

impl Scale {
    fn new(points: &[&Point], ys: impl Iterator<Item = f64>) -> Scale {
        let t0 = points.first().map_or(0, |p| p.t_ms) as f64;
        let mut t1 = points.last().map_or(0, |p| p.t_ms) as f64;
        if t1 <= t0 {
            t1 = t0 + 1000.0;
        }
        let (mut y0, mut y1) = ys
            .filter(|y| y.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
                (a.min(y), b.max(y))
            });
        if !y0.is_finite() || !y1.is_finite() {
            (y0, y1) = (-1.0, 1.0);
        }
        if y1 - y0 < 1e-9 {
            (y0, y1) = (y0 - 1.0, y1 + 1.0);
        }
        let pad = (y1 - y0) * 0.06;
        Scale {
            t0,
            t1,
            y0: y0 - pad,
            y1: y1 + pad,
        }
    }

    fn x(&self, t_ms: i64) -> f64 {
        LEFT + (t_ms as f64 - self.t0) / (self.t1 - self.t0) * (W - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        TOP + (self.y1 - v) / (self.y1 - self.y0) * (H - TOP - BOTTOM)
    }

    /// A horizontal line at `v` with a label above it (below it when `below`).
    /// The line through `value` of each point.
    fn polyline(&self, points: &[&Point], value: impl Fn(&Point) -> f32) -> String {
        let line: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", self.x(p.t_ms), self.y(value(p) as f64)))
            .collect();
        format!(
            "<polyline class=\"estimate\" points=\"{}\"/>\n",
            line.join(" ")
        )
    }

    fn hline(&self, v: f64, class: &str, label: &str, below: bool) -> String {
        let y = self.y(v);
        let ty = if below { y + 11.0 } else { y - 3.0 };
        format!(
            r#"<line class="{class}" x1="{LEFT}" x2="{x2:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="label" x="{tx:.1}" y="{ty:.1}" text-anchor="end">{label}</text>
"#,
            x2 = W - RIGHT,
            tx = W - RIGHT - 2.0,
        )
    }

    /// The axes' frame and end labels.
    fn frame(&self) -> String {
        let time = |t: f64| {
            let s = format_rfc3339_ms(t as i64);
            s.get(11..19).unwrap_or(&s).to_string()
        };
        format!(
            r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{w:.1}" height="{h:.1}"/>
<text class="tick" x="{lx:.1}" y="{ty0:.1}" text-anchor="end">{y1:.3}</text>
<text class="tick" x="{lx:.1}" y="{ty1:.1}" text-anchor="end">{y0:.3}</text>
<text class="tick" x="{LEFT}" y="{bx:.1}">{t0} UTC</text>
<text class="tick" x="{rx:.1}" y="{bx:.1}" text-anchor="end">{t1} UTC</text>
"#,
            w = W - LEFT - RIGHT,
            h = H - TOP - BOTTOM,
            lx = LEFT - 4.0,
            ty0 = TOP + 10.0,
            ty1 = H - BOTTOM,
            y1 = self.y1,
            y0 = self.y0,
            bx = H - 10.0,
            rx = W - RIGHT,
            t0 = time(self.t0),
            t1 = time(self.t1),
        )
    }
}

fn finite(x: f32) -> Option<f64> {
    x.is_finite().then_some(x as f64)
}

fn svg_open(id: &str, title: &str, desc: &str) -> String {
    format!(
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="{id}-t {id}-d" xmlns="http://www.w3.org/2000/svg">
<title id="{id}-t">{title}</title><desc id="{id}-d">{desc}</desc>
"#,
        title = esc(title),
        desc = esc(desc),
    )
}

/// The crossings: a vertical line where the verdict changed, with the state it changed to.
fn crossings(s: &Scale, series: &Series, points: &[&Point]) -> String {
    let mut out = String::new();
    for (i, p) in points.iter().filter(|p| p.changed).enumerate() {
        let x = s.x(p.t_ms);
        out.push_str(&format!(
            r#"<line class="crossing" data-source="{source}" data-state="{st}" data-t="{t}" data-estimate="{e}" data-ci-low="{lo}" data-ci-high="{hi}" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{y2:.1}"><title>verdict {st} at {t}</title></line><text class="label crossing-label" x="{tx:.1}" y="{ty:.1}">→ {st}</text>
"#,
            source = series.source.as_str(),
            st = p.state.as_str(),
            t = format_rfc3339_ms(p.t_ms),
            e = p.estimate,
            lo = p.ci_low,
            hi = p.ci_high,
            y2 = H - BOTTOM,
            tx = x + 3.0,
            // Staggered: changes close in time would write over each other.
            ty = TOP + 12.0 + (i % 3) as f64 * 13.0,
        ));
    }
    out
}

/// The canary-vs-control difference over event time: the estimate, its confidence bounds
/// narrowing around it, zero, ±`min_effect`, and the crossings. `None` before any estimate.
pub(super) fn canary_vs_control(id: &str, series: &Series) -> Option<String> {
    let points: Vec<&Point> = series
        .points
        .iter()
        .filter(|p| p.estimate.is_finite())
        .collect();
    if points.is_empty() {
        return None;
    }
    let m = series.min_effect;
    let ys = points
        .iter()
        .flat_map(|p| [p.estimate, p.ci_low, p.ci_high])
        .map(|v| v as f64)
        .chain([0.0, m, -m]);
    let s = Scale::new(&points, ys);
    let mut out = svg_open(
        id,
        &format!("{}: canary − control over event time", series.metric),
        &format!(
            "The difference canary minus control (solid), its confidence bounds (shaded band), zero and ±min_effect {m} (dashed); vertical lines mark verdict changes. {} points, one per {} s of event time.",
            series.points.len(),
            series.width_ms / 1000
        ),
    );
    out.push_str(&s.frame());
    let bound = |p: &&Point, v: f32| finite(v).unwrap_or(p.estimate as f64);
    let upper: Vec<String> = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", s.x(p.t_ms), s.y(bound(p, p.ci_high))))
        .collect();
    let lower: Vec<String> = points
        .iter()
        .rev()
        .map(|p| format!("{:.1},{:.1}", s.x(p.t_ms), s.y(bound(p, p.ci_low))))
        .collect();
    out.push_str(&format!(
        "<polygon class=\"band\" points=\"{} {}\"/>\n",
        upper.join(" "),
        lower.join(" ")
    ));
    out.push_str(&s.hline(0.0, "zero", "0", false));
    out.push_str(&s.hline(m, "min-effect", &format!("+min_effect {m}"), false));
    out.push_str(&s.hline(-m, "min-effect", &format!("−min_effect {m}"), true));
    out.push_str(&s.polyline(&points, |p| p.estimate));
    out.push_str(&crossings(&s, series, &points));
    out.push_str("</svg>\n");
    Some(out)
}

/// A CUSUM statistic over time against its threshold, titled `what`: the self-baseline chart
/// (the canary cohort nearest its threshold, then the alarming one) or the late-drift chart
/// that fired.
pub(super) fn cusum(id: &str, series: &Series, what: &str) -> Option<String> {
    let points: Vec<&Point> = series.points.iter().collect();
    if points.is_empty() {
        return None;
    }
    let threshold = points.last().map_or(0.0, |p| p.threshold as f64);
    let ys = points
        .iter()
        .map(|p| p.statistic as f64)
        .chain([0.0, threshold]);
    let s = Scale::new(&points, ys);
    let mut out = svg_open(
        id,
        &format!("{}: {what}", series.metric),
        &format!(
            "The CUSUM statistic over time (dots joined by a solid line) against its threshold {threshold:.2} (dashed)."
        ),
    );
    out.push_str(&s.frame());
    out.push_str(&s.hline(
        threshold,
        "threshold",
        &format!("threshold {threshold:.2}"),
        false,
    ));
    out.push_str(&s.polyline(&points, |p| p.statistic));
    for p in &points {
        out.push_str(&format!(
            "<circle class=\"alarm\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\"><title>{} at {}</title></circle>\n",
            s.x(p.t_ms),
            s.y(p.statistic as f64),
            p.state.as_str(),
            format_rfc3339_ms(p.t_ms)
        ));
    }
    out.push_str(&crossings(&s, series, &points));
    out.push_str("</svg>\n");
    Some(out)
}
