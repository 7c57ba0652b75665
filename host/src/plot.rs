//! PNG pictures: samples over data, the loss curve, the per-step ELBO terms. Text is drawn with
//! DejaVu Sans (shipped in `host/assets/`, Bitstream Vera licence), so no system font is needed.
//! Files are rendered to a temporary name and renamed into place.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, anyhow};
use plotters::prelude::*;

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        let _ =
            plotters::style::register_font("sans-serif", FontStyle::Normal, include_bytes!("../assets/DejaVuSans.ttf"));
    });
}

fn atomic_png(path: &Path, draw: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    register_font();
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp.png",
        path.file_name().context("no file name")?.to_string_lossy(),
        std::process::id()
    ));
    let r = draw(&tmp).and_then(|_| std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display())));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

fn bounds(points: &[f32], dim: usize, axis: usize) -> (f32, f32) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for row in points.chunks_exact(dim) {
        lo = lo.min(row[axis]);
        hi = hi.max(row[axis]);
    }
    let pad = 0.05 * (hi - lo).max(1e-3);
    (lo - pad, hi + pad)
}

/// Colours of series and classes, in order (then again from the start).
const COLOURS: [RGBColor; 10] = [
    RGBColor(30, 90, 200),
    RGBColor(230, 120, 20),
    RGBColor(40, 160, 60),
    RGBColor(200, 40, 40),
    RGBColor(140, 80, 190),
    RGBColor(90, 90, 90),
    RGBColor(0, 170, 190),
    RGBColor(190, 150, 0),
    RGBColor(220, 90, 170),
    RGBColor(120, 70, 30),
];

/// The first two coordinates of `samples` over `data` (grey): orange, or with `labels` (one
/// per sample) a colour per class and a legend entry `class k`.
pub fn scatter(
    path: &Path,
    title: &str,
    data: &[f32],
    samples: &[f32],
    dim: usize,
    labels: Option<&[u32]>,
) -> anyhow::Result<()> {
    if dim < 2 {
        return Err(anyhow!("a scatter plot needs at least 2 dimensions"));
    }
    atomic_png(path, |tmp| {
        let root = BitMapBackend::new(tmp, (640, 640)).into_drawing_area();
        root.fill(&WHITE)?;
        let all: Vec<f32> = data.iter().chain(samples).copied().collect();
        let (x0, x1) = bounds(&all, dim, 0);
        let (y0, y1) = bounds(&all, dim, 1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart.configure_mesh().draw()?;
        let grey = RGBColor(150, 150, 150).mix(0.5);
        if !data.is_empty() {
            chart
                .draw_series(data.chunks_exact(dim).map(|r| Circle::new((r[0], r[1]), 2, grey.filled())))?
                .label("data")
                .legend(move |(x, y)| Circle::new((x, y), 4, grey.filled()));
        }
        match labels {
            Some(labels) => {
                let mut classes: Vec<u32> = labels.to_vec();
                classes.sort_unstable();
                classes.dedup();
                for c in classes {
                    let colour = COLOURS[c as usize % COLOURS.len()].mix(0.7);
                    let points = samples.chunks_exact(dim).zip(labels).filter(|&(_, &l)| l == c);
                    chart
                        .draw_series(points.map(|(r, _)| Circle::new((r[0], r[1]), 2, colour.filled())))?
                        .label(format!("class {c}"))
                        .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
                }
            }
            None => {
                let orange = RGBColor(230, 120, 20).mix(0.6);
                chart
                    .draw_series(samples.chunks_exact(dim).map(|r| Circle::new((r[0], r[1]), 2, orange.filled())))?
                    .label("samples")
                    .legend(move |(x, y)| Circle::new((x, y), 4, orange.filled()));
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })
}

/// A line plot of `(x, y)` points (log y if `log_y`).
pub fn curve(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
    log_y: bool,
) -> anyhow::Result<()> {
    curves(path, title, x_label, y_label, &[("", points.to_vec())], log_y)
}

/// Several labelled line plots on one chart (log y if `log_y`; a legend if any label is
/// non-empty).
pub fn curves(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    log_y: bool,
) -> anyhow::Result<()> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(l, p)| {
            (*l, p.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0)).collect())
        })
        .collect();
    let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    if all.is_empty() {
        return Err(anyhow!("nothing to plot for {}", path.display()));
    }
    let legend = series.iter().any(|(l, _)| !l.is_empty());
    let integral_x = all.iter().all(|p| p.0.fract() == 0.0);
    atomic_png(path, |tmp| {
        let longest = series.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0) as u32;
        let panel_w = if legend { (44 + 9 * longest).clamp(120, 480) } else { 0 };
        let root = BitMapBackend::new(tmp, (800 + panel_w, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        // the legend in a panel of its own, right of the chart, so it never covers the data
        let (area, panel) = root.split_horizontally(800);
        if legend {
            let labelled = series.iter().enumerate().filter(|(_, (l, _))| !l.is_empty());
            for (row, (i, (label, _))) in labelled.enumerate() {
                let (c, y) = (COLOURS[i % COLOURS.len()], 60 + 24 * row as i32);
                panel.draw(&Rectangle::new([(4, y - 3), (28, y + 3)], c.filled()))?;
                panel.draw(&Text::new(label.to_string(), (34, y - 8), ("sans-serif", 15)))?;
            }
        }
        let (xl, xh) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (yl, yh) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let xh = if xh > xl { xh } else { xl + 1.0 };
        let x_tick = |v: &f64| if integral_x { format!("{v:.0}") } else { tick(v) };
        let mut builder = ChartBuilder::on(&area);
        builder
            .caption(title, ("sans-serif", 22))
            .margin(10)
            .margin_right(30)
            .x_label_area_size(40)
            .y_label_area_size(70);
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc(y_label)
                    .x_label_formatter(&x_tick)
                    .y_label_formatter(&tick)
                    .draw()?;
                for (i, (_, pts)) in series.iter().enumerate() {
                    let c = COLOURS[i % COLOURS.len()];
                    chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?;
                }
            }};
        }
        if log_y {
            let (lo, hi) = (yl * 0.9, yh * 1.1);
            draw!(builder.build_cartesian_2d(xl..xh, (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)))?);
        } else {
            let pad = 0.05 * (yh - yl).max(1e-9);
            draw!(builder.build_cartesian_2d(xl..xh, yl - pad..yh + pad)?);
        }
        root.present()?;
        Ok(())
    })
}

/// Labelled ticks of a log axis over `[lo, hi]` (`0 < lo < hi`): the powers of ten inside,
/// with 2 and 5 times them where that gives fewer than four, then every integer multiple.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let within = |mults: &[f64]| -> Vec<f64> {
        (d0..=d1).flat_map(|d| mults.iter().map(move |m| m * 10f64.powi(d))).filter(|v| (lo..=hi).contains(v)).collect()
    };
    let t = [&[1.0][..], &[1.0, 2.0, 5.0]]
        .into_iter()
        .map(within)
        .find(|t| t.len() >= 4)
        .unwrap_or_else(|| within(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]));
    // at most a dozen labels: thin a long run of decades
    let stride = t.len().div_ceil(12).max(1);
    t.into_iter().step_by(stride).collect()
}

/// A tick label with few digits (plotters prints log-scale ticks with all of theirs).
fn tick(v: &f64) -> String {
    let a = v.abs();
    if a == 0.0 || (1e-2..1e4).contains(&a) { format!("{}", (v * 1e3).round() / 1e3) } else { format!("{v:.0e}") }
}

/// The first `rows x cols` images of `data` (shape `[C, H, W]` each, C = 1 grey or 3 RGB, values
/// on [-1, 1]) as a grid, each row labelled by its entry of `row_labels` where given.
pub fn image_grid(
    path: &Path,
    title: &str,
    data: &[f32],
    shape: &[usize],
    cols: usize,
    row_labels: &[String],
) -> anyhow::Result<()> {
    let (c, h, w) = match shape {
        [c, h, w] if *c == 1 || *c == 3 => (*c, *h, *w),
        _ => return Err(anyhow!("an image grid needs examples of shape [1 or 3, H, W]")),
    };
    let per = c * h * w;
    let n = (data.len() / per).min(cols * cols.max(16));
    let rows = n.div_ceil(cols);
    let scale = (256 / h.max(w)).max(2) as i32;
    let cell = (w as i32 * scale + 4, h as i32 * scale + 4);
    let left = if row_labels.is_empty() { 4 } else { 84 };
    let size = ((left + cols as i32 * cell.0 + 4) as u32, (rows as i32 * cell.1 + 40) as u32);
    atomic_png(path, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        root.fill(&WHITE)?;
        root.draw(&Text::new(title.to_string(), (8, 8), ("sans-serif", 20)))?;
        for (r, label) in row_labels.iter().enumerate().take(rows) {
            let y = 36 + r as i32 * cell.1 + cell.1 / 2 - 8;
            root.draw(&Text::new(label.clone(), (6, y), ("sans-serif", 16)))?;
        }
        let to_u8 = |v: f32| (((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8;
        for i in 0..n {
            let img = &data[i * per..(i + 1) * per];
            let (ox, oy) = (left + (i % cols) as i32 * cell.0, 36 + (i / cols) as i32 * cell.1);
            for y in 0..h {
                for x in 0..w {
                    let px = |ch: usize| to_u8(img[ch * h * w + y * w + x]);
                    let color = if c == 1 { RGBColor(px(0), px(0), px(0)) } else { RGBColor(px(0), px(1), px(2)) };
                    let (x0, y0) = (ox + x as i32 * scale, oy + y as i32 * scale);
                    root.draw(&Rectangle::new([(x0, y0), (x0 + scale, y0 + scale)], color.filled()))?;
                }
            }
        }
        root.present()?;
        Ok(())
    })
}
