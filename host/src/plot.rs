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

/// The first two coordinates of `samples` (orange) over `data` (grey).
pub fn scatter(path: &Path, title: &str, data: &[f32], samples: &[f32], dim: usize) -> anyhow::Result<()> {
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
        chart
            .draw_series(data.chunks_exact(dim).map(|r| Circle::new((r[0], r[1]), 2, grey.filled())))?
            .label("data")
            .legend(move |(x, y)| Circle::new((x, y), 4, grey.filled()));
        let orange = RGBColor(230, 120, 20).mix(0.6);
        chart
            .draw_series(samples.chunks_exact(dim).map(|r| Circle::new((r[0], r[1]), 2, orange.filled())))?
            .label("samples")
            .legend(move |(x, y)| Circle::new((x, y), 4, orange.filled()));
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
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
    let pts: Vec<(f64, f64)> =
        points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0)).collect();
    if pts.is_empty() {
        return Err(anyhow!("nothing to plot for {}", path.display()));
    }
    atomic_png(path, |tmp| {
        let root = BitMapBackend::new(tmp, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let (xl, xh) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (yl, yh) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let xh = if xh > xl { xh } else { xl + 1.0 };
        let mut builder = ChartBuilder::on(&root);
        builder.caption(title, ("sans-serif", 22)).margin(10).x_label_area_size(40).y_label_area_size(70);
        let style = RGBColor(30, 90, 200);
        if log_y {
            let mut chart = builder.build_cartesian_2d(xl..xh, (yl * 0.9..yh * 1.1).log_scale())?;
            chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw()?;
            chart.draw_series(LineSeries::new(pts.iter().copied(), style))?;
        } else {
            let pad = 0.05 * (yh - yl).max(1e-9);
            let mut chart = builder.build_cartesian_2d(xl..xh, yl - pad..yh + pad)?;
            chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw()?;
            chart.draw_series(LineSeries::new(pts.iter().copied(), style))?;
        }
        root.present()?;
        Ok(())
    })
}
