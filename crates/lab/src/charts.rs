//! Charts with plotters: one description, drawn to SVG (inlined in the report, and saved) and
//! to PNG. Text uses the bundled DejaVu Sans (assets/), so nothing depends on the machine's fonts.

use crate::error::LabError;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::Once;

static FONT: Once = Once::new();

fn fonts() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        let _ = register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];
pub const RED: RGBColor = RGBColor(214, 39, 40);
pub const PURPLE: RGBColor = RGBColor(120, 40, 160);

#[derive(Clone, Debug)]
pub enum Kind {
    Line,
    /// Markers: (x, y) points drawn as circles of the given radius.
    Points(u32),
    /// Triangular markers.
    Triangles(u32),
    /// Vertical bars of the given width in x units.
    Bars(f64),
}

#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub kind: Kind,
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// The x values are unix milliseconds: label them as times.
    pub x_time: bool,
    pub y_from_zero: bool,
    /// A fixed y range (e.g. the breaker states 0..3).
    pub y_range: Option<(f64, f64)>,
    pub series: Vec<Series>,
}

impl Chart {
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Chart { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), ..Chart::default() }
    }
    pub fn time(mut self) -> Self {
        self.x_time = true;
        self
    }
    pub fn from_zero(mut self) -> Self {
        self.y_from_zero = true;
        self
    }
    pub fn add(&mut self, name: impl Into<String>, color: RGBColor, kind: Kind, points: Vec<(f64, f64)>) {
        self.series.push(Series { name: name.into(), color, kind, points });
    }
}

fn ranges(c: &Chart) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for s in &c.series {
        for &(x, y) in &s.points {
            if !(x.is_finite() && y.is_finite()) {
                continue;
            }
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
            if let Kind::Bars(w) = s.kind {
                x1 = x1.max(x + w);
                y0 = y0.min(0.0);
            }
        }
    }
    if !x0.is_finite() {
        return ((0.0, 1.0), c.y_range.unwrap_or((0.0, 1.0)));
    }
    if let Some(r) = c.y_range {
        return ((x0, x1.max(x0 + 1.0)), r);
    }
    if c.y_from_zero {
        y0 = y0.min(0.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 && c.y_from_zero && y0 >= 0.0 {
        return ((x0, x1), (0.0, if y1 > 0.0 { y1 * 1.1 } else { 1.0 }));
    }
    if y1 <= y0 {
        let pad = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.05 };
        y0 -= pad;
        y1 += pad;
    } else {
        let pad = (y1 - y0) * 0.06;
        y1 += pad;
        if !(c.y_from_zero && y0 >= 0.0) {
            y0 -= pad;
        }
    }
    ((x0, x1), (y0, y1))
}

pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}B", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let ((x0, x1), (y0, y1)) = ranges(c);
    let span_days = (x1 - x0) > 86_400_000.0 * 0.9;
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    let x_time = c.x_time;
    let xfmt =
        move |x: &f64| if x_time { crate::time::format_short(x.max(0.0) as u64, span_days) } else { fmt_num(*x) };
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&xfmt)
        .y_label_formatter(&|y| fmt_num(*y))
        .light_line_style(RGBColor(235, 235, 235))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| e.to_string())?;
    let mut legend = false;
    for s in &c.series {
        let color = s.color;
        let anno = match &s.kind {
            Kind::Line => chart.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2))),
            Kind::Points(r) => {
                let r = *r;
                chart.draw_series(s.points.iter().map(move |&p| Circle::new(p, r, color.mix(0.7).filled())))
            }
            Kind::Triangles(r) => {
                let r = *r;
                chart.draw_series(s.points.iter().map(move |&p| TriangleMarker::new(p, r, color.filled())))
            }
            Kind::Bars(w) => {
                let w = *w;
                chart.draw_series(
                    s.points
                        .iter()
                        .map(move |&(x, y)| Rectangle::new([(x, 0.0), (x + w * 0.9, y)], color.mix(0.8).filled())),
                )
            }
        }
        .map_err(|e| e.to_string())?;
        if !s.name.is_empty() {
            legend = true;
            anno.label(s.name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 14, y + 4)], color.filled()));
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 12))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

pub const W: u32 = 900;
pub const H: u32 = 340;

/// The chart as an SVG document.
pub fn svg(c: &Chart) -> Result<String, LabError> {
    fonts();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (W, H)).into_drawing_area();
        draw(root, c).map_err(|e| LabError::Other(format!("chart '{}': {e}", c.title)))?;
    }
    Ok(out)
}

/// The chart as a PNG file.
pub fn png(c: &Chart, path: &Path) -> Result<(), LabError> {
    fonts();
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    draw(root, c).map_err(|e| LabError::Other(format!("chart '{}' to {}: {e}", c.title, path.display())))
}
