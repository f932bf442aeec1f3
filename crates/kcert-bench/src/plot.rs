//! The latency plot: cumulative distributions on a logarithmic time axis, as a standalone SVG
//! (no plotting crate: a few lines of text are all an SVG line chart needs).

use crate::stats::percentile_sorted;
use std::fmt::Write as _;

/// One distribution to draw.
pub struct Series<'a> {
    pub label: &'a str,
    pub color: &'a str,
    pub millis: &'a [f64],
}

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// Draw the CDFs of `series` with p50 and p99 marked.
pub fn cdf_svg(title: &str, series: &[Series<'_>]) -> String {
    let all = series.iter().flat_map(|s| s.millis.iter().copied());
    let lo = all.clone().fold(f64::INFINITY, f64::min).max(0.1);
    let hi = all.fold(0.0, f64::max).max(lo * 10.0);
    let (x0, x1) = (lo.log10().floor(), hi.log10().ceil());
    let px = |ms: f64| LEFT + (ms.max(lo).log10() - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |pct: f64| TOP + (1.0 - pct / 100.0) * (H - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Grid: decades and 2×, 5× on x; every 10 % on y, with 50 % and 99 % stronger.
    let mut decade = x0;
    while decade <= x1 {
        for m in [1.0, 2.0, 5.0] {
            let ms = 10f64.powf(decade) * m;
            if ms.log10() > x1 + 1e-9 {
                break;
            }
            let x = px(ms);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#ddd"/>"##,
                H - BOTTOM
            );
            let _ = writeln!(
                svg,
                r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
                H - BOTTOM + 16.0,
                trim(ms)
            );
        }
        decade += 1.0;
    }
    for pct in (0..=10).map(|i| f64::from(i) * 10.0).chain([99.0]) {
        let y = py(pct);
        let stroke = if pct == 50.0 || pct == 99.0 {
            "#999"
        } else {
            "#eee"
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{stroke}"/>"#,
            W - RIGHT
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{pct}%</text>"#,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">milliseconds from create (log scale)</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0
    );
    for (i, s) in series.iter().enumerate() {
        let mut v = s.millis.to_vec();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            continue;
        }
        let step = (v.len() / 600).max(1);
        let mut points = String::new();
        for (k, ms) in v.iter().enumerate() {
            if k % step == 0 || k == v.len() - 1 {
                let pct = (k + 1) as f64 / v.len() as f64 * 100.0;
                let _ = write!(points, "{:.1},{:.1} ", px(*ms), py(pct));
            }
        }
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            s.color,
            points.trim_end()
        );
        let (p50, p99) = (percentile_sorted(&v, 50.0), percentile_sorted(&v, 99.0));
        for (p, val) in [(50.0, p50), (99.0, p99)] {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"/>"#,
                px(val),
                py(p),
                s.color
            );
        }
        let ly = TOP + 18.0 + i as f64 * 18.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{ly:.1}" x2="{}" y2="{ly:.1}" stroke="{}" stroke-width="3"/>"#,
            LEFT + 12.0,
            LEFT + 36.0,
            s.color
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}">{} — n={}, p50 {:.1} ms, p99 {:.1} ms</text>"#,
            LEFT + 42.0,
            ly + 4.0,
            escape(s.label),
            v.len(),
            p50,
            p99
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn trim(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_is_an_svg_with_both_series_and_their_percentiles() {
        let a: Vec<f64> = (1..=100).map(f64::from).collect();
        let b: Vec<f64> = (1..=100).map(|i| f64::from(i) * 3.0).collect();
        let svg = cdf_svg(
            "t <1>",
            &[
                Series {
                    label: "round trip",
                    color: "#1f77b4",
                    millis: &a,
                },
                Series {
                    label: "pipeline",
                    color: "#d62728",
                    millis: &b,
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("round trip — n=100, p50 50.0 ms, p99 99.0 ms"));
        assert!(svg.contains("pipeline — n=100, p50 150.0 ms, p99 297.0 ms"));
        assert!(svg.contains("t &lt;1&gt;"));
    }
}
