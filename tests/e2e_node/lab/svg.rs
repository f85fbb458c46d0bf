//! The lab's plot, as a plain SVG that GitHub renders: req/s against the memory limit, one
//! line per configuration (the median of the runs that survived, with their min–max),
//! OOMKills marked with a red ×, Go's number and the minimal limit as dashed lines.

use std::fmt::Write as _;

use super::report::{Report, Summary};
use super::{Cell, Config};

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 56.0;
const RED: &str = "#c62828";

fn color(config: Config) -> &'static str {
    match config {
        Config::Defaults => "#1565c0",
        Config::Injected => "#ef6c00",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round step for about `n` ticks over `0..max`.
fn tick_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// A point of a line: limit, median req/s (None: no run survived), min, max, OOMKills.
struct Point {
    limit: f64,
    rps: Option<f64>,
    min: f64,
    max: f64,
    oom: usize,
    runs: usize,
}

pub(crate) fn plot(r: &Report) -> String {
    let lines: Vec<(Config, Vec<Point>)> = [Config::Defaults, Config::Injected]
        .into_iter()
        .map(|config| {
            // Cells of one configuration at one limit (Go's number can equal the minimal)
            // are one point with all their runs.
            let mut merged: Vec<Cell> = Vec::new();
            for c in r.cells.iter().filter(|c| c.config == config) {
                match merged.iter_mut().find(|m| m.limit_mib == c.limit_mib) {
                    Some(m) => m.runs.extend(c.runs.iter().cloned()),
                    None => merged.push(c.clone()),
                }
            }
            let mut points: Vec<Point> = merged
                .iter()
                .map(|c| {
                    let s = Summary::of(c);
                    Point {
                        limit: c.limit_mib as f64,
                        rps: s.rps,
                        min: s.rps_min.unwrap_or(0.0),
                        max: s.rps_max.unwrap_or(0.0),
                        oom: s.oom,
                        runs: s.runs,
                    }
                })
                .collect();
            points.sort_by(|a, b| a.limit.total_cmp(&b.limit));
            (config, points)
        })
        .collect();
    let failing = r.bisection.as_ref().and_then(|b| b.failing_mib);
    let x_max_data = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.limit))
        .chain(failing.map(|f| f as f64))
        .fold(1.0, f64::max);
    let y_max_data = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.max))
        .fold(1.0, f64::max);
    let x_step = tick_step(x_max_data * 1.05, 8.0);
    let x_max = (x_max_data * 1.05 / x_step).ceil() * x_step;
    let y_step = tick_step(y_max_data * 1.12, 6.0);
    let y_max = (y_max_data * 1.12 / y_step).ceil() * y_step;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |v: f64| LEFT + v / x_max * pw;
    let y = |v: f64| TOP + ph - v / y_max * ph;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" font-weight="bold">req/s against the memory limit: {}</text>"#,
        LEFT,
        escape(&r.settings.image)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="40" fill="#555">{} requests at concurrency {} per run; dots: the median of the runs that survived, bars: min–max</text>"##,
        LEFT, r.settings.requests, r.settings.concurrency,
    );

    // Grid and axes.
    let mut v = 0.0;
    while v <= y_max + 1e-9 {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#e0e0e0"/><text x="{2:.1}" y="{3:.1}" text-anchor="end" fill="#333">{4}</text>"##,
            y(v),
            LEFT + pw,
            LEFT - 6.0,
            y(v) + 4.0,
            v
        );
        v += y_step;
    }
    let mut v = 0.0;
    while v <= x_max + 1e-9 {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#333"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle" fill="#333">{4}</text>"##,
            x(v),
            TOP + ph,
            TOP + ph + 5.0,
            TOP + ph + 18.0,
            v
        );
        v += x_step;
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{0:.1}" stroke="#333"/><line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#333"/>"##,
        TOP + ph,
        LEFT + pw
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">memory limit (MiB)</text>"##,
        LEFT + pw / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        svg,
        r##"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle" fill="#333">req/s</text>"##,
        TOP + ph / 2.0
    );

    // Guides: the minimal limit and Go's number.
    let mut guides = Vec::new();
    if let Some(b) = &r.bisection {
        guides.push((b.minimal_mib, "minimal"));
    }
    if let Some(g) = &r.go_number {
        guides.push((g.mib, "Go's number"));
    }
    for (i, (mib, label)) in guides.iter().enumerate() {
        let gx = x(*mib as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#888" stroke-dasharray="4 4"/><text x="{:.1}" y="{:.1}" fill="#555">{} ({mib} MiB)</text>"##,
            TOP + ph,
            gx + 4.0,
            TOP + 14.0 + 14.0 * i as f64,
            escape(label)
        );
    }

    // Lines, bars, points, OOMKills.
    for (config, points) in &lines {
        let c = color(*config);
        let path: Vec<String> = points
            .iter()
            .filter_map(|p| Some(format!("{:.1},{:.1}", x(p.limit), y(p.rps?))))
            .collect();
        if path.len() > 1 {
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
                path.join(" ")
            );
        }
        for p in points {
            let px = x(p.limit);
            if let Some(rps) = p.rps {
                let _ = writeln!(
                    svg,
                    r#"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="{c}"/><circle cx="{px:.1}" cy="{:.1}" r="4" fill="{c}"/>"#,
                    y(p.min),
                    y(p.max),
                    y(rps)
                );
            }
            if p.oom > 0 {
                let py = y(p.rps.unwrap_or(0.0));
                cross(&mut svg, px, py);
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" fill="{RED}">OOMKilled {}/{}</text>"#,
                    px + 8.0,
                    py - 8.0,
                    p.oom,
                    p.runs
                );
            }
        }
    }
    // The bisection's failures, on the axis: Go's defaults did not survive these limits.
    if let Some(b) = &r.bisection {
        for step in b.steps.iter().filter(|s| !s.survived) {
            cross(&mut svg, x(step.limit_mib as f64), y(0.0));
        }
    }
    if let Some(f) = failing {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" fill="{RED}">first OOMKill with Go defaults: {f} MiB</text>"#,
            x(f as f64) + 8.0,
            y(0.0) - 8.0
        );
    }

    // Legend, bottom right of the plot area.
    let lx = LEFT + pw - 250.0;
    let ly = TOP + ph - 62.0;
    let _ = writeln!(
        svg,
        r##"<rect x="{:.1}" y="{:.1}" width="244" height="56" fill="white" stroke="#ccc"/>"##,
        lx - 6.0,
        ly - 14.0
    );
    for (i, config) in [Config::Defaults, Config::Injected].into_iter().enumerate() {
        let ly = ly + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="{2}" stroke-width="2"/><circle cx="{3:.1}" cy="{0:.1}" r="4" fill="{2}"/><text x="{4:.1}" y="{5:.1}">{6}</text>"#,
            ly - 4.0,
            lx + 24.0,
            color(config),
            lx + 12.0,
            lx + 30.0,
            ly,
            escape(config.label())
        );
    }
    let ly = ly + 32.0;
    cross(&mut svg, lx + 12.0, ly - 4.0);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{ly:.1}">OOMKilled (runs killed / runs)</text>"#,
        lx + 30.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn cross(svg: &mut String, x: f64, y: f64) {
    let d = 5.0;
    let _ = writeln!(
        svg,
        r#"<path d="M{:.1},{:.1} L{:.1},{:.1} M{:.1},{:.1} L{:.1},{:.1}" stroke="{RED}" stroke-width="2.5"/>"#,
        x - d,
        y - d,
        x + d,
        y + d,
        x - d,
        y + d,
        x + d,
        y - d
    );
}
