//! The report's charts as inline SVG: a timeline of bars, a line chart over time, and
//! stacked horizontal bars. Every mark carries a `<title>`, shown as a tooltip.

use std::fmt::Write;

use html_escape::encode_text as esc;

const WIDTH: f64 = 900.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 20.0;
const ROW: f64 = 26.0;
const AXIS: f64 = 28.0;

/// A bar of a timeline: in row `row`, from `start` to `end` seconds.
pub struct Span {
    pub row: usize,
    pub start: f64,
    pub end: f64,
    pub color: &'static str,
    pub title: String,
}

/// Up to about `count` round tick values from 0 to at least `max`.
fn ticks(max: f64, count: usize) -> Vec<f64> {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / count as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    (0..)
        .map(|i| i as f64 * step)
        .take_while(|t| *t <= max + step * 0.999)
        .collect()
}

fn x_axis(svg: &mut String, top: f64, height: f64, span: f64, unit: impl Fn(f64) -> String) {
    let scale = (WIDTH - LEFT - RIGHT) / span;
    for t in ticks(span, 8).into_iter().filter(|t| *t <= span * 1.0001) {
        let x = LEFT + t * scale;
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{:.1}" stroke="#e3e6ea"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"##,
            top + height,
            top + height + 16.0,
            esc(&unit(t))
        );
    }
}

/// An SVG of `rows` rows over a time axis of `span` seconds (its closing tag is the caller's).
fn rows_chart(rows: usize, span: f64, label: &str) -> String {
    let height = rows.max(1) as f64 * ROW;
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {:.0}" role="img" aria-label="{label}">"#,
        height + AXIS + 6.0
    );
    x_axis(&mut svg, 4.0, height, span, seconds_label);
    svg
}

/// A timeline: rows named by `labels`, bars placed on a common time axis of `span` seconds.
pub fn timeline(labels: &[String], bars: &[Span], span: f64) -> String {
    let span = span.max(1e-3);
    let mut svg = rows_chart(labels.len(), span, "timeline");
    let scale = (WIDTH - LEFT - RIGHT) / span;
    for (i, label) in labels.iter().enumerate() {
        row_label(&mut svg, i, label);
    }
    for bar in bars {
        let y = 4.0 + bar.row as f64 * ROW;
        let x = LEFT + bar.start.max(0.0) * scale;
        let w = ((bar.end - bar.start.max(0.0)) * scale).max(2.0);
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" rx="3" fill="{}"><title>{}</title></rect>"#,
            y + 4.0,
            ROW - 8.0,
            bar.color,
            esc(&bar.title)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The name of row `i`, left of the plot.
fn row_label(svg: &mut String, i: usize, label: &str) {
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end" class="label">{}</text>"#,
        LEFT - 8.0,
        4.0 + i as f64 * ROW + ROW * 0.65,
        esc(label)
    );
}

/// A line of a chart: its name, its colour and its points of (seconds, value).
pub type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A line chart over time: the lines share one value axis formatted by `unit`.
pub fn lines(series: &[Line<'_>], unit: impl Fn(f64) -> String) -> String {
    let (height, top) = (180.0, 8.0);
    let span = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(1e-3f64, f64::max);
    let max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let yticks = ticks(max, 4);
    let ymax = yticks.last().copied().unwrap_or(1.0).max(1e-9);
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {:.0}" role="img" aria-label="throughput">"#,
        height + top + AXIS
    );
    x_axis(&mut svg, top, height, span, seconds_label);
    for t in &yticks {
        let y = top + height - t / ymax * height;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e3e6ea"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 8.0,
            y + 4.0,
            esc(&unit(*t))
        );
    }
    let sx = (WIDTH - LEFT - RIGHT) / span;
    for (name, color, points) in series {
        let path: Vec<String> = points
            .iter()
            .map(|(t, v)| {
                format!(
                    "{:.1},{:.1}",
                    LEFT + t * sx,
                    top + height - v / ymax * height
                )
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"><title>{}</title></polyline>"#,
            path.join(" "),
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Stacked horizontal bars: per row, one segment per part (`parts` names and colours), all
/// rows on one scale.
pub fn stacked(rows: &[(String, Vec<f64>)], parts: &[(&str, &str)]) -> String {
    let max = rows
        .iter()
        .map(|r| r.1.iter().sum::<f64>())
        .fold(1e-3f64, f64::max);
    let mut svg = rows_chart(rows.len(), max, "phases");
    let scale = (WIDTH - LEFT - RIGHT) / max;
    for (i, (label, values)) in rows.iter().enumerate() {
        let y = 4.0 + i as f64 * ROW;
        row_label(&mut svg, i, label);
        let mut x = LEFT;
        for (value, (name, color)) in values.iter().zip(parts) {
            let w = value * scale;
            if w <= 0.0 {
                continue;
            }
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{color}"><title>{}: {}</title></rect>"#,
                y + 4.0,
                ROW - 8.0,
                esc(name),
                seconds_label(*value)
            );
            x += w;
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Seconds for an axis or a tooltip: `0.25 s`, `12 s`, `3 min 20 s`.
pub fn seconds_label(s: f64) -> String {
    if s < 1.0 && s > 0.0 {
        format!("{s:.2} s")
    } else if s < 10.0 && s.fract() != 0.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else {
        format!("{} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_read_as_written() {
        assert_eq!(seconds_label(0.25), "0.25 s");
        assert_eq!(seconds_label(1.5), "1.5 s");
        assert_eq!(seconds_label(2.0), "2 s");
        assert_eq!(seconds_label(75.4), "75 s");
        assert_eq!(seconds_label(200.0), "3 min 20 s");
    }

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(95.0, 4), vec![0.0, 50.0, 100.0]);
        assert_eq!(ticks(7.0, 8), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(ticks(0.0, 4).last(), Some(&1.0));
    }

    #[test]
    fn charts_hold_a_mark_per_datum_with_its_title() {
        let bar = |start, end| Span {
            row: 0,
            start,
            end,
            color: "#2e7d32",
            title: "done & dusted".into(),
        };
        let svg = timeline(&["shard <0>".into()], &[bar(0.0, 2.0), bar(3.0, 5.0)], 10.0);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("shard &lt;0&gt;") && svg.contains("done &amp; dusted"));
        let svg = stacked(
            &[
                ("a".into(), vec![1.0, 0.0, 2.0]),
                ("b".into(), vec![0.5, 0.5, 0.5]),
            ],
            &[("get", "#111"), ("decode", "#222"), ("encode", "#333")],
        );
        // Zero-length segments are left out.
        assert_eq!(svg.matches("<rect").count(), 5);
        let svg = lines(&[("bytes", "#00f", vec![(0.0, 1.0), (1.0, 3.0)])], |v| {
            format!("{v}")
        });
        assert_eq!(svg.matches("<polyline").count(), 1);
    }
}
