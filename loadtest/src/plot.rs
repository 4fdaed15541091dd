//! The run as an SVG picture: latency percentiles (log scale) above, throughput below, both over time.
//!
//! Three polylines and a few labels do not need a plotting library (and its font stack); the SVG is written
//! directly and opens in any browser.

use std::fmt::Write as _;

use crate::stats::Point;

const W: f64 = 900.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 60.0;

/// A line of a panel: its name, colour and value per point.
type Series = (&'static str, &'static str, fn(&Point) -> f64);

/// Renders `series` with `title` as an SVG document; `window` (s since the start) is shaded: the interval the
/// report's totals are measured over.
pub fn svg(title: &str, series: &[Point], window: (f64, f64)) -> String {
    let mut s = String::new();
    let h = TOP + 2.0 * PANEL_H + GAP + 40.0;
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(s, r#"<text x="{LEFT}" y="20" font-size="14">{}</text>"#, escape(title));
    let t_max = series.iter().map(|p| p.t).fold(1.0, f64::max);
    let (w0, w1) = (x_of(window.0.min(t_max), t_max), x_of(window.1.min(t_max), t_max));
    for y in [TOP, TOP + PANEL_H + GAP] {
        let _ = write!(s, r##"<rect x="{w0:.1}" y="{y}" width="{:.1}" height="{PANEL_H}" fill="#f2f2f2"/>"##, w1 - w0);
    }

    // Latency panel, log10 scale.
    let lat: [Series; 3] = [
        ("p50", "#1f77b4", |p| p.latency_ms.p50),
        ("p99", "#d62728", |p| p.latency_ms.p99),
        ("max", "#7f7f7f", |p| p.latency_ms.max),
    ];
    let positive = series.iter().flat_map(|p| [p.latency_ms.p50, p.latency_ms.max]).filter(|v| *v > 0.0);
    let (lo, hi) = positive.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) =
        if hi > 0.0 { (lo.log10().floor(), hi.log10().ceil().max(lo.log10().floor() + 1.0)) } else { (-1.0, 1.0) };
    let y0 = TOP;
    axes(
        &mut s,
        y0,
        "latency (ms, log)",
        t_max,
        &(lo as i32..=hi as i32).map(f64::from).collect::<Vec<_>>(),
        |e| fmt_num(10f64.powf(e)),
        lo,
        hi,
    );
    for (name, color, f) in lat {
        let pts = series.iter().filter(|p| f(p) > 0.0).map(|p| (p.t, f(p).log10()));
        line(&mut s, y0, t_max, lo, hi, pts, color);
        legend(&mut s, y0, name, color, lat.iter().position(|l| l.0 == name).unwrap_or(0));
    }

    // Throughput panel, linear from 0.
    let y1 = TOP + PANEL_H + GAP;
    let most = series.iter().flat_map(|p| [p.submitted_per_s, p.acked_per_s]).fold(1.0, f64::max);
    let step = nice_step(most * 1.05 / 4.0);
    let ticks: Vec<f64> = (0..).map(|i| i as f64 * step).take_while(|v| *v < most * 1.05 + step).collect();
    let top = ticks.last().copied().unwrap_or(1.0);
    axes(&mut s, y1, "tasks/s", t_max, &ticks, fmt_num, 0.0, top);
    let thr: [Series; 2] = [("submitted", "#2ca02c", |p| p.submitted_per_s), ("acked", "#ff7f0e", |p| p.acked_per_s)];
    for (i, (name, color, f)) in thr.into_iter().enumerate() {
        line(&mut s, y1, t_max, 0.0, top, series.iter().map(|p| (p.t, f(p))), color);
        legend(&mut s, y1, name, color, i);
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">time (s)</text>"#,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        h - 8.0
    );
    s.push_str("</svg>\n");
    s
}

fn x_of(t: f64, t_max: f64) -> f64 {
    LEFT + t / t_max * (W - LEFT - RIGHT)
}

fn y_of(v: f64, y0: f64, lo: f64, hi: f64) -> f64 {
    y0 + PANEL_H - (v - lo) / (hi - lo).max(1e-12) * PANEL_H
}

#[allow(clippy::too_many_arguments)]
fn axes(
    s: &mut String,
    y0: f64,
    label: &str,
    t_max: f64,
    ticks: &[f64],
    fmt: impl Fn(f64) -> String,
    lo: f64,
    hi: f64,
) {
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{y0}" width="{}" height="{PANEL_H}" fill="none" stroke="#444"/>"##,
        W - LEFT - RIGHT
    );
    let _ = write!(
        s,
        r#"<text x="12" y="{}" transform="rotate(-90 12 {})" text-anchor="middle">{label}</text>"#,
        y0 + PANEL_H / 2.0,
        y0 + PANEL_H / 2.0
    );
    for &v in ticks {
        let y = y_of(v, y0, lo, hi);
        let _ = write!(s, r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/>"##, W - RIGHT);
        let _ = write!(s, r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, y + 4.0, fmt(v));
    }
    let step = nice_step(t_max / 6.0);
    for t in (0..).map(|i| i as f64 * step).take_while(|t| *t <= t_max + 1e-9) {
        let x = x_of(t, t_max);
        let _ = write!(s, r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#, y0 + PANEL_H + 16.0, fmt_num(t));
    }
}

fn line(s: &mut String, y0: f64, t_max: f64, lo: f64, hi: f64, pts: impl Iterator<Item = (f64, f64)>, color: &str) {
    let pts: Vec<String> = pts.map(|(t, v)| format!("{:.1},{:.1}", x_of(t, t_max), y_of(v, y0, lo, hi))).collect();
    if !pts.is_empty() {
        let _ = write!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#, pts.join(" "));
    }
}

fn legend(s: &mut String, y0: f64, name: &str, color: &str, i: usize) {
    let x = LEFT + 10.0 + 90.0 * i as f64;
    let _ = write!(s, r#"<rect x="{x}" y="{}" width="12" height="3" fill="{color}"/>"#, y0 - 10.0);
    let _ = write!(s, r#"<text x="{}" y="{}">{name}</text>"#, x + 16.0, y0 - 5.0);
}

/// The smallest of 1, 2 and 5 times a power of ten that is at least `raw`: axis ticks on round numbers.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

fn fmt_num(v: f64) -> String {
    let short = |x: f64, unit: &str| {
        if x.fract().abs() < 1e-9 {
            format!("{x:.0}{unit}")
        } else {
            format!("{x:.1}{unit}")
        }
    };
    if v >= 1e6 {
        short(v / 1e6, "M")
    } else if v >= 1e3 {
        short(v / 1e3, "k")
    } else if v >= 1.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Quantiles;

    fn point(t: f64, p99: f64, acked: f64) -> Point {
        let latency_ms = Quantiles { p50: p99 / 2.0, p99, max: p99 * 2.0, samples: 10, ..Default::default() };
        Point { t, submitted_per_s: acked, acked_per_s: acked, latency_ms, server_rss: None }
    }

    #[test]
    fn the_svg_has_every_line_and_escapes_the_title() {
        let series = vec![point(1.0, 2.0, 20_000.0), point(2.0, 3.0, 21_000.0), point(3.0, 0.0, 0.0)];
        let svg = svg("fixed-rate <pm>", &series, (1.0, 2.0));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 5, "p50, p99, max, submitted, acked");
        assert!(svg.contains("fixed-rate &lt;pm&gt;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn throughput_ticks_are_round_numbers() {
        assert_eq!(nice_step(1312.5), 2000.0);
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(80_000.0), 100_000.0);
        assert_eq!(fmt_num(2000.0), "2k");
        assert_eq!(fmt_num(2500.0), "2.5k");
        assert_eq!(fmt_num(1_500_000.0), "1.5M");
        let svg = svg("five thousand", &[point(1.0, 2.0, 5_000.0), point(2.0, 2.0, 5_000.0)], (0.0, 2.0));
        assert!(svg.contains(">6k<") && !svg.contains(">5.5k<"), "ticks at 0, 2k, 4k, 6k: {svg}");
    }

    #[test]
    fn an_empty_series_still_renders() {
        let svg = svg("empty", &[], (2.0, 12.0));
        assert!(svg.contains("</svg>") && !svg.contains("NaN"));
    }
}
