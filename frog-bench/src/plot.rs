//! The study's line charts (plotters' SVG backend; text stays SVG
//! `<text>`, so no font library is needed): x is training minutes, one
//! line per configuration, and the legend in a box of its own right of the
//! plotting area, so it is clear of the lines however many there are.

use plotters::prelude::*;

use crate::error::{Error, Result};

/// One line: its label and its `(minutes, value)` points.
pub type Series = (String, Vec<(f64, f64)>);

/// Figure width and least height, pixels.
const WIDTH: u32 = 960;
const HEIGHT: u32 = 480;
/// Least width of the legend column right of the plot; longer labels
/// widen it (see [`legend_width`]).
const LEGEND_WIDTH: u32 = 250;
/// Legend text: its size, where it starts in the column, and a width per
/// character that no sans-serif face's average exceeds at that size.
const LEGEND_FONT: u32 = 17;
const LEGEND_TEXT_X: i32 = 46;
pub(crate) const LEGEND_CHAR_WIDTH: f64 = 0.62 * LEGEND_FONT as f64;

/// The legend column's width: room for the longest label (and its
/// margin), at least [`LEGEND_WIDTH`], at most half the figure.
fn legend_width(series: &[Series]) -> u32 {
    let chars = series.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
    let need = f64::from(LEGEND_TEXT_X) + chars as f64 * LEGEND_CHAR_WIDTH + 24.0;
    (need.ceil().min(f64::from(WIDTH / 2)) as u32).max(LEGEND_WIDTH)
}
/// Top of the legend box (level with the plotting area's top) and the
/// height of one entry.
const LEGEND_TOP: i32 = 44;
const LEGEND_ROW: i32 = 20;
/// The legend box's fill, which also tells the tests which box it is.
pub(crate) const LEGEND_FILL: RGBColor = RGBColor(248, 248, 248);
/// Stroke width of the data lines (axes and ticks are 1 wide).
pub(crate) const LINE_WIDTH: u32 = 2;

/// Well-separated line colours (Tableau 10 without its grey, which reads as
/// the grid); more configurations than these get evenly spaced hues.
const COLORS: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of line `i` of `n`: distinct for every `i < n`.
fn color(i: usize, n: usize) -> RGBColor {
    if n <= COLORS.len() {
        COLORS[i]
    } else {
        let (r, g, b) = HSLColor(i as f64 / n as f64, 0.75, 0.42).rgb();
        RGBColor(r, g, b)
    }
}

/// Draws marker `$i`'s shape at `$p` in colour `$c` on `$area`: a filled
/// circle, triangle or square, or a cross, in turn, so that lines of close
/// colours (or in grey print) still tell apart, in the plot and its legend.
macro_rules! draw_marker {
    ($area:expr, $i:expr, $p:expr, $c:expr) => {
        match $i % MARKERS {
            0 => $area.draw(&Circle::new($p, 4, $c.filled())),
            1 => $area.draw(&TriangleMarker::new($p, 6, $c.filled())),
            2 => $area.draw(&(EmptyElement::at($p) + Rectangle::new([(-4, -4), (4, 4)], $c.filled()))),
            _ => $area.draw(&Cross::new($p, 5, $c.stroke_width(2))),
        }
    };
}

/// Marker shapes [`draw_marker`] cycles through.
const MARKERS: usize = 4;

fn fail(title: &str) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::new(format!("drawing `{title}`: {e}"))
}

/// The axes' ranges: x from 0 to the last minute, y over every value with
/// 5 % margins; a flat or empty chart still gets a unit range.
fn ranges(series: &[Series]) -> (f64, f64, f64) {
    let points = || series.iter().flat_map(|(_, p)| p.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let x1 = points().map(|p| p.0).fold(0.0, f64::max);
    let (mut y0, mut y1) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    let pad = 0.05 * (y1 - y0);
    (if x1 > 0.0 { x1 } else { 1.0 }, y0 - pad, y1 + pad)
}

/// The chart as an SVG document.
pub fn line_chart(title: &str, y_label: &str, series: &[Series]) -> Result<String> {
    let fail = fail(title);
    let n = series.len();
    let rows = i32::try_from(n).map_err(|e| fail(&e))?;
    let height = HEIGHT.max(u32::try_from(LEGEND_TOP + LEGEND_ROW * (rows + 1) + 40).map_err(|e| fail(&e))?);
    let (x1, y0, y1) = ranges(series);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let legend_w = legend_width(series);
        let (plot, legend) = root.split_horizontally(WIDTH - legend_w);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x1, y0..y1)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("training time (minutes)")
            .y_desc(y_label)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, (_, points)) in series.iter().enumerate() {
            chart.draw_series(LineSeries::new(points.iter().copied(), color(i, n).stroke_width(LINE_WIDTH))).map_err(|e| fail(&e))?;
            for &p in points {
                draw_marker!(chart.plotting_area(), i, p, color(i, n)).map_err(|e| fail(&e))?;
            }
        }
        let right = i32::try_from(legend_w).map_err(|e| fail(&e))? - 12;
        let bottom = LEGEND_TOP + LEGEND_ROW * rows + 12;
        legend.draw(&Rectangle::new([(4, LEGEND_TOP), (right, bottom)], LEGEND_FILL.filled())).map_err(|e| fail(&e))?;
        legend.draw(&Rectangle::new([(4, LEGEND_TOP), (right, bottom)], RGBColor(120, 120, 120).stroke_width(1))).map_err(|e| fail(&e))?;
        for (i, (label, _)) in series.iter().enumerate() {
            let y = LEGEND_TOP + 16 + LEGEND_ROW * i as i32;
            legend.draw(&PathElement::new(vec![(14, y), (38, y)], color(i, n).stroke_width(3))).map_err(|e| fail(&e))?;
            draw_marker!(legend, i, (26, y), color(i, n)).map_err(|e| fail(&e))?;
            legend.draw(&Text::new(label.as_str(), (LEGEND_TEXT_X, y - 8), ("sans-serif", LEGEND_FONT))).map_err(|e| fail(&e))?;
        }
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

/// What the tests read back from a chart's SVG.
#[cfg(test)]
pub(crate) mod svg {
    use roxmltree::{Document, Node};

    /// A polyline's stroke colour and points.
    pub struct Line {
        pub stroke: String,
        pub points: Vec<(f64, f64)>,
    }

    /// The legend box `(x0, y0, x1, y1)`, the lines inside it (one per
    /// entry), the texts inside it, the data lines (outside it, in the
    /// data's width) and every text.
    pub struct Chart {
        pub legend_box: (f64, f64, f64, f64),
        pub legend_lines: Vec<Line>,
        pub legend_texts: Vec<String>,
        pub data_lines: Vec<Line>,
        pub texts: Vec<String>,
    }

    fn num(n: &Node, attr: &str) -> f64 {
        n.attribute(attr).unwrap_or_else(|| panic!("{attr} of {n:?}")).parse().unwrap()
    }

    fn inside((x0, y0, x1, y1): (f64, f64, f64, f64), (x, y): (f64, f64)) -> bool {
        (x0..=x1).contains(&x) && (y0..=y1).contains(&y)
    }

    /// Whether the segment `a`-`b` touches the box (checked at sub-pixel
    /// steps along it).
    pub fn crosses(b0: (f64, f64, f64, f64), a: (f64, f64), b: (f64, f64)) -> bool {
        let steps = ((b.0 - a.0).abs() + (b.1 - a.1).abs()).ceil() as usize * 4 + 1;
        (0..=steps).any(|k| {
            let t = k as f64 / steps as f64;
            inside(b0, (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1)))
        })
    }

    /// Parses a chart made by `line_chart`.
    pub fn parse(text: &str) -> Chart {
        let doc = Document::parse(text).expect("well-formed SVG");
        let fill = format!("#{:02X}{:02X}{:02X}", super::LEGEND_FILL.0, super::LEGEND_FILL.1, super::LEGEND_FILL.2);
        let rect = doc
            .descendants()
            .find(|n| n.has_tag_name("rect") && n.attribute("fill").is_some_and(|f| f.eq_ignore_ascii_case(&fill)))
            .expect("a legend box");
        let (x, y) = (num(&rect, "x"), num(&rect, "y"));
        let legend_box = (x, y, x + num(&rect, "width"), y + num(&rect, "height"));
        let (mut legend_lines, mut data_lines) = (Vec::new(), Vec::new());
        for n in doc.descendants().filter(|n| n.has_tag_name("polyline")) {
            let points: Vec<(f64, f64)> = n
                .attribute("points")
                .unwrap()
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect();
            let line = Line { stroke: n.attribute("stroke").unwrap().to_ascii_uppercase(), points };
            if line.points.iter().all(|&p| inside(legend_box, p)) {
                legend_lines.push(line);
            } else if num(&n, "stroke-width") == f64::from(super::LINE_WIDTH) {
                data_lines.push(line);
            }
        }
        let texts: Vec<(f64, f64, String)> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| (num(&n, "x"), num(&n, "y"), n.text().unwrap_or("").trim().to_string()))
            .collect();
        let legend_texts = texts.iter().filter(|(x, y, _)| inside(legend_box, (*x, *y))).map(|t| t.2.clone()).collect();
        Chart { legend_box, legend_lines, legend_texts, data_lines, texts: texts.into_iter().map(|t| t.2).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use std::collections::BTreeSet;

    /// `n` lines climbing to the top right corner, where a legend inside
    /// the plot would sit.
    fn series(n: usize) -> Vec<Series> {
        (0..n).map(|i| (format!("config {i} <bs {}>", 64 << i), (0..8).map(|e| (e as f64 * 0.5, 10.0 + 10.0 * e as f64 + i as f64)).collect())).collect()
    }

    #[test]
    fn one_line_and_one_legend_entry_per_configuration_clear_of_each_other() {
        for n in [1, 4, 6, 12] {
            let s = series(n);
            let text = line_chart("Test accuracy vs time (SYNTHETIC)", "test accuracy (%)", &s).unwrap();
            let chart = svg::parse(&text);
            assert_eq!(chart.data_lines.len(), n, "one line per configuration");
            let colors: BTreeSet<&str> = chart.data_lines.iter().map(|l| l.stroke.as_str()).collect();
            assert_eq!(colors.len(), n, "distinct colours");
            assert!(chart.data_lines.iter().all(|l| l.points.len() == 8));
            let legend: BTreeSet<&str> = chart.legend_lines.iter().map(|l| l.stroke.as_str()).collect();
            assert_eq!((chart.legend_lines.len(), &legend), (n, &colors), "one legend entry per line, in its colour");
            let labels: Vec<String> = s.iter().map(|(l, _)| l.clone()).collect();
            assert_eq!(chart.legend_texts, labels);
            for l in &chart.data_lines {
                for w in l.points.windows(2) {
                    assert!(!svg::crosses(chart.legend_box, w[0], w[1]), "{:?} crosses the legend {:?}", w, chart.legend_box);
                }
            }
            // Every line's points carry its marker, and the legend shows it.
            let shapes = [("<circle", 0), ("<polygon", 1), ("<rect", 2), ("<line", 3)];
            for (tag, k) in shapes {
                let lines = (0..n).filter(|i| i % MARKERS == k).count();
                assert!(text.matches(tag).count() >= lines * 9, "{n} lines: {tag} markers");
            }
            assert!(chart.texts.iter().any(|t| t == "Test accuracy vs time (SYNTHETIC)"));
            assert!(chart.texts.iter().any(|t| t == "training time (minutes)"));
        }
    }

    #[test]
    fn degenerate_data_still_draws() {
        let flat = vec![("one epoch".to_string(), vec![(0.0, 2.0)]), ("empty".to_string(), vec![])];
        let chart = svg::parse(&line_chart("flat", "loss", &flat).unwrap());
        assert_eq!(chart.legend_texts, ["one epoch", "empty"]);
        for (got, want) in [(ranges(&flat), (1.0, 1.95, 3.05)), (ranges(&[]), (1.0, -0.05, 1.05))] {
            assert_relative_eq!(got.0, want.0);
            assert_relative_eq!(got.1, want.1);
            assert_relative_eq!(got.2, want.2);
        }
    }
}
