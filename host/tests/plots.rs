//! The pictures the command line draws, read back from their PNG files.

use assert_cmd::Command;

fn elbo() -> Command {
    Command::cargo_bin("elbo").unwrap()
}

/// The RGB pixels of a PNG (8-bit RGB or RGBA) as `(width, height, pixels)`.
fn pixels(path: &std::path::Path) -> (usize, usize, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected colour type {other:?}"),
    };
    let px = buf[..info.buffer_size()].chunks_exact(step).map(|p| [p[0], p[1], p[2]]).collect();
    (info.width as usize, info.height as usize, px)
}

/// Pixels of a clear hue (not grey, white or black) falling nearest each of `palette`.
fn hue_counts(px: &[[u8; 3]], palette: &[[f32; 3]]) -> Vec<usize> {
    let mut counts = vec![0; palette.len()];
    for p in px {
        let (hi, lo) = (*p.iter().max().unwrap(), *p.iter().min().unwrap());
        if hi - lo < 60 {
            continue;
        }
        let d = |c: &[f32; 3]| (0..3).map(|i| (f32::from(p[i]) - c[i]).powi(2)).sum::<f32>();
        let best = (0..palette.len()).min_by(|&a, &b| d(&palette[a]).total_cmp(&d(&palette[b]))).unwrap();
        counts[best] += 1;
    }
    counts
}

/// `sample --class all --plot` on 2-D data draws each class in its own colour: the samples of
/// a two-class model fall into two hues (blue, orange), each with many pixels; an
/// unconditional model's into one.
#[test]
fn scatter_gives_each_class_its_colour() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    let train = |extra: &[&str]| {
        elbo()
            .args(["train", "--data", "two-moons", "--steps", "200", "--out"])
            .arg(&model)
            .args(extra)
            .assert()
            .success();
    };
    // blue and orange, the first two colours, at the scatter's opacity over white
    let palette = [[97.0, 140.0, 217.0], [237.0, 160.0, 90.0]];
    train(&["--conditional"]);
    let png = dir.path().join("c.png");
    elbo()
        .args(["sample", "--class", "all", "--n", "300", "--sampler", "ddim", "--steps", "10", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(dir.path().join("c.npy"))
        .arg("--plot")
        .arg(&png)
        .assert()
        .success();
    let counts = hue_counts(&pixels(&png).2, &palette);
    assert!(counts.iter().all(|&c| c > 500), "two classes, two hues: {counts:?}");

    std::fs::remove_dir_all(&model).unwrap();
    train(&[]);
    let png = dir.path().join("u.png");
    elbo()
        .args(["sample", "--n", "300", "--sampler", "ddim", "--steps", "10", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(dir.path().join("u.npy"))
        .arg("--plot")
        .arg(&png)
        .assert()
        .success();
    let counts = hue_counts(&pixels(&png).2, &palette);
    assert!(counts[0] < 50 && counts[1] > 500, "unconditional: one hue (orange): {counts:?}");
}

/// An image grid of `--class all` labels each row with its class: text (dark pixels) in the
/// white left margin at every row's height (the images start right of it).
#[test]
fn image_grid_rows_are_labelled() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/digits/model.onnx");
    let grid = |extra: &[&str], name: &str| {
        let png = dir.path().join(name);
        elbo()
            .args(["sample", "--model", onnx, "--n", "3", "--sampler", "ddim", "--steps", "2"])
            .args(extra)
            .arg("--out")
            .arg(dir.path().join(format!("{name}.npy")))
            .arg("--plot")
            .arg(&png)
            .assert()
            .success();
        pixels(&png)
    };
    // dark pixels in columns 4..80 of each tenth of the grid's rows (below the 36-pixel title)
    let margin_ink = |(w, h, px): &(usize, usize, Vec<[u8; 3]>)| -> Vec<usize> {
        let band = (h - 36) / 10;
        (0..10)
            .map(|r| {
                (36 + r * band..36 + (r + 1) * band)
                    .flat_map(|y| (4..80.min(*w)).map(move |x| (x, y)))
                    .filter(|&(x, y)| px[y * w + x].iter().all(|&v| v < 100))
                    .count()
            })
            .collect()
    };
    let labelled = margin_ink(&grid(&["--class", "all"], "all.png"));
    assert!(labelled.iter().all(|&k| k > 20), "a label on every row: {labelled:?}");
}

/// `train --plot` labels the loss curve's log y axis: tick labels (runs of rows with dark
/// pixels) left of the axis, at three heights at least.
#[test]
fn loss_plot_has_y_tick_labels() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("loss.png");
    elbo()
        .args(["train", "--data", "two-moons", "--steps", "400", "--log-every", "20", "--out"])
        .arg(dir.path().join("m"))
        .arg("--plot")
        .arg(&png)
        .assert()
        .success();
    let (w, h, px) = pixels(&png);
    // the tick labels' column, right of the rotated axis name and left of the axis
    let ink: Vec<bool> = (40..h - 50).map(|y| (30..76).any(|x| px[y * w + x].iter().all(|&v| v < 100))).collect();
    let runs = ink.windows(2).filter(|p| !p[0] && p[1]).count() + usize::from(ink[0]);
    assert!(runs >= 3, "{runs} tick labels on the y axis");
}
