//! `rayrs report`: the side-by-side table of a Ray run and a rayrs run (JSON lines of
//! `{"name","per_second","sd"}`), with ratios and the targets; as text, as Markdown
//! (between markers, so hand-written notes around it survive a rerun) and as an SVG chart.

use plotters::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

type R<T> = Result<T, String>;

#[derive(Deserialize)]
struct Line {
    name: String,
    per_second: f64,
    sd: f64,
}

/// The targets: rayrs / Ray, at least.
const TARGETS: &[(&str, f64)] = &[
    ("single client get calls (Plasma Store)", 100.0),
    ("single client put calls (Plasma Store)", 100.0),
    ("single client put gigabytes", 5.0),
    ("single client get object containing 10k refs", 20.0),
    ("single client wait 1k refs", 20.0),
    ("single client tasks sync", 20.0),
    ("single client tasks async", 50.0),
    ("multi client tasks async", 50.0),
    ("1:1 actor calls sync", 20.0),
    ("1:1 actor calls async", 50.0),
    ("n:n actor calls async", 30.0),
    ("nested tasks fib", 10.0),
];

struct Row {
    name: String,
    ray: Option<(f64, f64)>,
    ours: Option<(f64, f64)>,
    target: Option<f64>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        match (self.ray, self.ours) {
            (Some((r, _)), Some((o, _))) if r > 0.0 => Some(o / r),
            _ => None,
        }
    }
    fn verdict(&self) -> &'static str {
        match (self.ratio(), self.target) {
            (Some(r), Some(t)) if r >= t => "met",
            (Some(_), Some(_)) => "MISSED",
            _ => "",
        }
    }
}

fn read_lines(path: &str) -> R<Vec<Line>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{path}: {e}: {l}")))
        .collect()
}

/// One row per metric of either run: first the metrics both ran, in Ray's order, then ours
/// alone, then Ray's alone.
fn rows(ray: &[Line], ours: &[Line]) -> Vec<Row> {
    let ray_by: BTreeMap<&str, &Line> = ray.iter().map(|l| (l.name.as_str(), l)).collect();
    let ours_by: BTreeMap<&str, &Line> = ours.iter().map(|l| (l.name.as_str(), l)).collect();
    let targets: BTreeMap<&str, f64> = TARGETS.iter().copied().collect();
    let both = ray.iter().filter(|l| ours_by.contains_key(l.name.as_str()));
    let ours_only = ours
        .iter()
        .filter(|l| !ray_by.contains_key(l.name.as_str()));
    let ray_only = ray
        .iter()
        .filter(|l| !ours_by.contains_key(l.name.as_str()));
    let mut out: Vec<Row> = Vec::new();
    for l in both.chain(ours_only).chain(ray_only) {
        if out.iter().any(|r| r.name == l.name) {
            continue;
        }
        let name = l.name.as_str();
        out.push(Row {
            name: l.name.clone(),
            ray: ray_by.get(name).map(|l| (l.per_second, l.sd)),
            ours: ours_by.get(name).map(|l| (l.per_second, l.sd)),
            target: targets.get(name).copied(),
        });
    }
    out
}

/// 12,345 or 12.3 or 0.123: enough digits, thousands separated.
fn num(v: f64) -> String {
    if v >= 100.0 {
        let s = format!("{:.0}", v);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn cell(v: Option<(f64, f64)>) -> String {
    v.map_or("—".into(), |(m, sd)| format!("{} ± {}", num(m), num(sd)))
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{}×", num(r)))
}

fn text_table(rows: &[Row]) -> String {
    let w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut s = format!(
        "{:<w$}  {:>22}  {:>26}  {:>10}  {:>7}  {}\n",
        "metric", "Ray (/s)", "rayrs (/s)", "ratio", "target", ""
    );
    for r in rows {
        s += &format!(
            "{:<w$}  {:>22}  {:>26}  {:>10}  {:>7}  {}\n",
            r.name,
            cell(r.ray),
            cell(r.ours),
            ratio_cell(r.ratio()),
            r.target.map_or(String::new(), |t| format!("≥{t}×")),
            r.verdict()
        );
    }
    s
}

const START: &str = "<!-- rayrs report: table start -->";
const END: &str = "<!-- rayrs report: table end -->";

fn markdown_table(rows: &[Row], machine: &str, svg: Option<&str>) -> String {
    let mut s = format!("{START}\n");
    if !machine.is_empty() {
        s += &format!("Machine: {machine}\n\n");
    }
    s += "| metric | Ray 2.60 (per second) | rayrs (per second) | ratio | target | |\n";
    s += "|---|--:|--:|--:|--:|---|\n";
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.name,
            cell(r.ray),
            cell(r.ours),
            ratio_cell(r.ratio()),
            r.target.map_or(String::new(), |t| format!("≥ {t}×")),
            r.verdict()
        );
    }
    if let Some(svg) = svg {
        s += &format!("\n![rayrs / Ray throughput ratio per metric]({svg})\n");
    }
    s += END;
    s += "\n";
    s
}

/// Replaces the table between the markers of `path`, or writes a new file with only it.
fn write_markdown(path: &str, table: &str) -> R<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(START), old.find(END)) {
        (Some(a), Some(b)) if a < b => {
            let end = b + END.len();
            let end = if old[end..].starts_with('\n') {
                end + 1
            } else {
                end
            };
            format!("{}{}{}", &old[..a], table, &old[end..])
        }
        _ => format!("# rayrs microbenchmark vs Ray\n\n{table}"),
    };
    std::fs::write(path, new).map_err(|e| format!("{path}: {e}"))
}

fn chart(path: &str, rows: &[Row]) -> R<()> {
    let bars: Vec<(&str, f64, Option<f64>)> = rows
        .iter()
        .filter_map(|r| r.ratio().map(|x| (r.name.as_str(), x, r.target)))
        .collect();
    if bars.is_empty() {
        return Err("no metric was measured by both runs: nothing to chart".into());
    }
    let n = bars.len();
    let hi = bars
        .iter()
        .map(|b| b.1.max(b.2.unwrap_or(0.0)))
        .fold(10.0f64, f64::max)
        * 3.0;
    let lo = bars.iter().map(|b| b.1).fold(1.0f64, f64::min) / 2.0;
    let e = |e: &dyn std::fmt::Display| format!("{path}: {e}");
    let root = SVGBackend::new(Path::new(path), (1000, 90 + 28 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let names: Vec<String> = bars.iter().map(|b| b.0.to_string()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "rayrs / Ray 2.60 throughput, per metric (log scale; tick = target)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(330)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if *i < n => names[n - 1 - *i].clone(),
            _ => String::new(),
        })
        .x_desc("ratio (rayrs per second / Ray per second)")
        .x_label_formatter(&|x| format!("{}×", num(*x)))
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (_, ratio, target)) in bars.iter().enumerate() {
        let y = n - 1 - i;
        let color = match target {
            Some(t) if ratio >= t => RGBColor(46, 139, 87),
            Some(_) => RGBColor(230, 126, 34),
            None if *ratio >= 1.0 => RGBColor(70, 130, 180),
            None => RGBColor(192, 57, 43),
        };
        let mut bar = Rectangle::new(
            [
                (1.0, SegmentValue::Exact(y)),
                (*ratio, SegmentValue::Exact(y + 1)),
            ],
            color.filled(),
        );
        bar.set_margin(4, 4, 0, 0);
        chart.draw_series(std::iter::once(bar)).map_err(|x| e(&x))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!(" {}×", num(*ratio)),
                (ratio.max(1.0), SegmentValue::CenterOf(y)),
                ("sans-serif", 12),
            )))
            .map_err(|x| e(&x))?;
        if let Some(t) = target {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![
                        (*t, SegmentValue::Exact(y)),
                        (*t, SegmentValue::Exact(y + 1)),
                    ],
                    BLACK.stroke_width(2),
                )))
                .map_err(|x| e(&x))?;
        }
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
            BLACK.stroke_width(1),
        )))
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// `rayrs report --ray F --ours F [--machine TEXT] [--markdown FILE] [--svg FILE]`.
pub fn main(
    ray: String,
    ours: String,
    machine: String,
    markdown: Option<String>,
    svg: Option<String>,
) -> R<()> {
    let rows = rows(&read_lines(&ray)?, &read_lines(&ours)?);
    print!("{}", text_table(&rows));
    if let Some(svg) = &svg {
        chart(svg, &rows)?;
    }
    if let Some(md) = &markdown {
        // The chart is linked relative to the Markdown file.
        let rel = svg.as_deref().map(|s| {
            Path::new(s)
                .file_name()
                .map_or(s.to_string(), |f| f.to_string_lossy().into_owned())
        });
        write_markdown(md, &markdown_table(&rows, &machine, rel.as_deref()))?;
    }
    Ok(())
}
