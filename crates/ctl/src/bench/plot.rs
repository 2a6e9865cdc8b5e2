//! The latency distribution of a run as an SVG percentile plot, written by
//! hand (a few lines of SVG are lighter than a plotting library).
//!
//! The x axis is the percentile on a log scale of `1 / (1 - q)`, so 90%,
//! 99%, 99.9% and 99.99% are evenly spaced and the tail, where systems
//! differ, is as wide as the body; the y axis is the latency in
//! milliseconds.

use std::fmt::Write as _;
use std::path::Path;

use super::stats::Summary;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// Points per decade of `1 / (1 - q)`.
const STEPS_PER_DECADE: usize = 40;

/// Writes the plot of `summary` to `path`.
pub fn write_svg(path: &Path, summary: &Summary) -> std::io::Result<()> {
    std::fs::write(path, svg(summary))
}

/// The plot as SVG text.
pub fn svg(summary: &Summary) -> String {
    let h = &summary.recorded.latency_us;
    // Decades worth drawing: as many as the sample supports, 1 to 5.
    let decades = ((h.len().max(1) as f64).log10().floor() as usize).clamp(1, 5);
    let points: Vec<(f64, f64)> = (0..=decades * STEPS_PER_DECADE)
        .map(|i| {
            let x = i as f64 / STEPS_PER_DECADE as f64;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect();
    let y_max = nice_ceiling(points.iter().map(|p| p.1).fold(0.0, f64::max));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x / decades as f64 * plot_w;
    let sy = |y: f64| TOP + plot_h - y / y_max * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "{} {}: {} clients, {:.0} ops/s, p50 {:.3} ms, p99 {:.3} ms",
        escape(&summary.label),
        escape(&summary.workload),
        summary.clients,
        summary.throughput(),
        summary.percentile_ms(50.0),
        summary.percentile_ms(99.0)
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{title}</text>"#,
        WIDTH / 2.0
    );
    // Axes, grid and ticks.
    for d in 0..=decades {
        let x = sx(d as f64);
        let label = percentile_label(d);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    for i in 0..=5 {
        let v = y_max * i as f64 / 5.0;
        let y = sy(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            trim(v)
        );
    }
    let _ = writeln!(
        out,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">latency (ms)</text>"#,
        TOP + plot_h / 2.0
    );
    let path: Vec<String> = points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
        .collect();
    let _ = writeln!(
        out,
        r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
        path.join(" ")
    );
    out.push_str("</svg>\n");
    out
}

/// `0%`, `90%`, `99%`, `99.9%`... for decade `d`.
fn percentile_label(d: usize) -> String {
    if d == 0 {
        return "0%".into();
    }
    format!("{}%", trim(100.0 - 100.0 * 10f64.powi(-(d as i32))))
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * base)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * base)
}

fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Recorder;
    use std::time::Duration;

    #[test]
    fn percentile_ticks_are_nines() {
        assert_eq!(percentile_label(0), "0%");
        assert_eq!(percentile_label(1), "90%");
        assert_eq!(percentile_label(3), "99.9%");
    }

    #[test]
    fn axis_tops_are_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(12.0), 20.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }

    #[test]
    fn the_svg_has_labelled_axes_and_one_line() {
        let mut recorded = Recorder::new();
        for us in 1..=10_000u64 {
            recorded.ok(Duration::from_micros(us));
        }
        let summary = Summary {
            workload: "put".into(),
            label: "a<b".into(),
            endpoints: vec![],
            clients: 1,
            conns: 1,
            serializable: false,
            key_size: 8,
            value_sizes: crate::bench::workload::ValueSizes::Fixed(8),
            seed: 1,
            key_space: 1,
            rate: 0,
            leases: 0,
            written_bytes: 0,
            nospace_at_bytes: None,
            elapsed: Duration::from_secs(1),
            recorded,
        };
        let svg = svg(&summary);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("latency (ms)") && svg.contains("percentile"));
        assert!(svg.contains("99.99%"));
        assert!(svg.contains("a&lt;b"));
        assert_eq!(svg.matches("<polyline").count(), 1);
    }
}
