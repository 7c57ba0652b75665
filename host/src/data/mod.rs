//! Data sets: the built-in 2-D sets (generated from a seed, with component labels), the
//! built-in image sets ([`images`]), Gaussian mixtures from JSON (`gmm:FILE.json`), and `.npy` /
//! `.csv` files (a `.npy` of shape `[N, C, H, W]` or `[N, H, W]` is image data, its labels in a
//! sibling `NAME_labels.npy`); per-coordinate normalisation computed on the training data.

pub mod images;

use std::path::Path;

use elbo_core::gmm::GaussianMixture;
use elbo_core::rng::{standard_normal, uniform_below, uniform_f64};
use rand_pcg::Pcg32;
use serde::{Deserialize, Serialize};

use crate::error::{Result, flag, input};

/// The names of the built-in sets.
pub const BUILTIN: [&str; 5] = ["two-moons", "swiss-roll", "8gaussians", "checkerboard", "rings"];

/// A data set in memory: `n x dim` rows, optional class labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Row-major values.
    pub x: Vec<f32>,
    /// Dimension of one example.
    pub dim: usize,
    /// The shape of one example (`[dim]` for vectors, e.g. `[1, 8, 8]` for images).
    pub shape: Vec<usize>,
    /// Class labels, if the set has them.
    pub labels: Option<Vec<u32>>,
    /// Number of classes (0 without labels).
    pub classes: usize,
    /// The number of grey levels of quantised image data, where known (built-in image sets).
    pub levels: Option<usize>,
}

impl Dataset {
    /// The number of examples.
    pub fn len(&self) -> usize {
        self.x.len() / self.dim
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    /// `(C, H, W)` of image data: examples of shape `[C, H, W]` or `[H, W]`.
    pub fn image_shape(&self) -> Option<(usize, usize, usize)> {
        match self.shape[..] {
            [c, h, w] => Some((c, h, w)),
            [h, w] => Some((1, h, w)),
            _ => None,
        }
    }
}

/// A Gaussian mixture that owns its parameters (the JSON of `gmm:FILE.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mixture {
    /// Component weights (normalised on use).
    pub weights: Vec<f32>,
    /// Component means, `K` rows of `D`.
    pub means: Vec<Vec<f32>>,
    /// Component standard deviations, `K` rows of `D`.
    pub stds: Vec<Vec<f32>>,
}

impl Mixture {
    /// `8gaussians`: eight components on a circle of radius 2, standard deviation 0.2.
    pub fn eight_gaussians() -> Self {
        let means = (0..8)
            .map(|k| {
                let a = std::f32::consts::TAU * k as f32 / 8.0;
                vec![2.0 * a.cos(), 2.0 * a.sin()]
            })
            .collect();
        Mixture { weights: vec![1.0; 8], means, stds: vec![vec![0.2, 0.2]; 8] }
    }

    /// Reads and validates `gmm:FILE.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| input(format!("{}: {e}", path.display())))?;
        let m: Mixture = serde_json::from_str(&text).map_err(|e| {
            input(format!("{}: expected a JSON object with weights, means and stds ({e})", path.display()))
        })?;
        m.with_core(|_| ()).map_err(|e| input(format!("{}: {e}", path.display())))?;
        Ok(m)
    }

    /// The data dimension.
    pub fn dim(&self) -> usize {
        self.means.first().map_or(0, Vec::len)
    }

    /// Runs `f` with the core's borrowed, validated view.
    pub fn with_core<T>(&self, f: impl FnOnce(&GaussianMixture<'_>) -> T) -> Result<T> {
        FlatMixture::new(self)?.with_core(f)
    }
}

/// A mixture with its means and standard deviations laid out flat once (`K x D`, row after
/// row), as the core reads them: for repeated use (an exact denoiser at every sampling step)
/// without copying.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatMixture {
    dim: usize,
    weights: Vec<f32>,
    means: Vec<f32>,
    stds: Vec<f32>,
}

impl FlatMixture {
    /// Flattens and validates `m`.
    pub fn new(m: &Mixture) -> Result<Self> {
        let d = m.dim();
        if m.stds.len() != m.means.len() || m.means.iter().chain(&m.stds).any(|r| r.len() != d) {
            return Err(input("mixture: means and stds need K rows of the same dimension"));
        }
        let flat = FlatMixture { dim: d, weights: m.weights.clone(), means: m.means.concat(), stds: m.stds.concat() };
        flat.with_core(|_| ())?;
        Ok(flat)
    }

    /// The data dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of components.
    pub fn components(&self) -> usize {
        self.weights.len()
    }

    /// Runs `f` with the core's borrowed, validated view (no allocation).
    pub fn with_core<T>(&self, f: impl FnOnce(&GaussianMixture<'_>) -> T) -> Result<T> {
        let g =
            GaussianMixture::new(self.dim, &self.weights, &self.means, &self.stds).map_err(|e| flag("mixture", e))?;
        Ok(f(&g))
    }
}

/// What `--data SPEC` names.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSpec {
    /// A built-in 2-D set.
    Builtin(String),
    /// A Gaussian mixture with known density.
    Mixture(Mixture),
    /// A built-in image set and its split.
    Image(images::ImageSet, crate::kinds::Split),
    /// A `.npy` or `.csv` file.
    File(std::path::PathBuf),
}

impl DataSpec {
    /// Parses `--data`.
    pub fn parse(spec: &str) -> Result<Self> {
        if let Some(path) = spec.strip_prefix("gmm:") {
            return Ok(DataSpec::Mixture(Mixture::load(Path::new(path))?));
        }
        if spec == "8gaussians" {
            return Ok(DataSpec::Mixture(Mixture::eight_gaussians()));
        }
        if BUILTIN.contains(&spec) {
            return Ok(DataSpec::Builtin(spec.to_string()));
        }
        if let Some(set) = images::ImageSet::from_name(spec) {
            return Ok(DataSpec::Image(set, crate::kinds::Split::Train));
        }
        let p = Path::new(spec);
        match p.extension().and_then(|e| e.to_str()) {
            Some("npy") | Some("csv") => Ok(DataSpec::File(p.to_path_buf())),
            _ => Err(input(format!(
                "--data: '{spec}' is not a built-in set ({}, {}), gmm:FILE.json, or a .npy/.csv file",
                BUILTIN.join(", "),
                images::IMAGE_SETS.join(", ")
            ))),
        }
    }

    /// The same data with the split `split` of a built-in image set (other data has no split).
    pub fn with_split(self, split: crate::kinds::Split) -> Self {
        match self {
            DataSpec::Image(set, _) => DataSpec::Image(set, split),
            other => other,
        }
    }

    /// The exact mixture, if the data has one.
    pub fn mixture(&self) -> Option<&Mixture> {
        match self {
            DataSpec::Mixture(m) => Some(m),
            _ => None,
        }
    }

    /// `n` examples: generated from `seed` for built-in sets and mixtures; a file is read whole
    /// (`n` is ignored).
    pub fn load(&self, n: usize, seed: u64) -> Result<Dataset> {
        use rand_core::SeedableRng;
        let mut rng = Pcg32::seed_from_u64(seed);
        match self {
            DataSpec::Builtin(name) => {
                let (x, labels, classes) = builtin(name, n, &mut rng);
                Ok(Dataset { x, dim: 2, shape: vec![2], labels: Some(labels), classes, levels: None })
            }
            DataSpec::Mixture(m) => {
                let dim = m.dim();
                let mut x = vec![0.0f32; n * dim];
                let mut labels = vec![0u32; n];
                m.with_core(|g| g.sample(&mut rng, &mut x, Some(&mut labels)))?.map_err(|e| flag("--data", e))?;
                Ok(Dataset { x, dim, shape: vec![dim], labels: Some(labels), classes: m.weights.len(), levels: None })
            }
            DataSpec::Image(set, split) => set.load(*split),
            DataSpec::File(path) => load_file(path),
        }
    }
}

fn builtin(name: &str, n: usize, rng: &mut Pcg32) -> (Vec<f32>, Vec<u32>, usize) {
    let mut x = Vec::with_capacity(2 * n);
    let mut labels = Vec::with_capacity(n);
    let pi = std::f64::consts::PI;
    let classes = match name {
        "two-moons" => 2,
        "rings" => 4,
        _ => 1,
    };
    for i in 0..n {
        let (a, b, label) = match name {
            // scikit-learn's make_moons with noise 0.05: upper arc (cos u, sin u), lower arc
            // (1 - cos u, 1/2 - sin u), u uniform on [0, pi].
            "two-moons" => {
                let u = uniform_f64(rng) * pi;
                let lower = i % 2;
                let (a, b) = if lower == 0 { (u.cos(), u.sin()) } else { (1.0 - u.cos(), 0.5 - u.sin()) };
                (a + 0.05 * f64::from(standard_normal(rng)), b + 0.05 * f64::from(standard_normal(rng)), lower as u32)
            }
            // The 2-D swiss roll: t = 1.5 pi (1 + 2u), (t cos t, t sin t) / 5, noise 0.1.
            "swiss-roll" => {
                let t = 1.5 * pi * (1.0 + 2.0 * uniform_f64(rng));
                (
                    t * t.cos() / 5.0 + 0.1 * f64::from(standard_normal(rng)),
                    t * t.sin() / 5.0 + 0.1 * f64::from(standard_normal(rng)),
                    0,
                )
            }
            // FFJORD's checkerboard on [-4, 4]^2.
            "checkerboard" => {
                let x1 = uniform_f64(rng) * 4.0 - 2.0;
                let x2 = uniform_f64(rng) - 2.0 * f64::from(uniform_below(rng, 2)) + x1.floor().rem_euclid(2.0);
                (2.0 * x1, 2.0 * x2, 0)
            }
            // Four concentric rings of radii 0.5, 1, 1.5, 2 with radial noise 0.05.
            _ => {
                let k = uniform_below(rng, 4);
                let r = 0.5 * f64::from(k + 1) + 0.05 * f64::from(standard_normal(rng));
                let a = uniform_f64(rng) * 2.0 * pi;
                (r * a.cos(), r * a.sin(), k)
            }
        };
        x.push(a as f32);
        x.push(b as f32);
        labels.push(label);
    }
    (x, labels, classes)
}

fn check_finite(x: &[f32], dim: usize, path: &Path) -> Result<()> {
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(input(format!(
            "{}: row {}, column {}: expected a finite number, found {}",
            path.display(),
            i / dim + 1,
            i % dim + 1,
            x[i]
        )));
    }
    Ok(())
}

/// Reads a `.npy` (float32 or float64, shape `[N, ...]`) or `.csv` (numbers, optional header).
pub fn load_file(path: &Path) -> Result<Dataset> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let (x, shape) = match ext {
        "npy" => read_npy(path)?,
        "csv" => read_csv(path)?,
        _ => return Err(input(format!("{}: expected a .npy or .csv file", path.display()))),
    };
    let dim: usize = shape.iter().product();
    if dim == 0 || x.is_empty() {
        return Err(input(format!("{}: no data", path.display())));
    }
    check_finite(&x, dim, path)?;
    let n = x.len() / dim;
    let (labels, classes) = match sibling_labels(path, n)? {
        Some((l, c)) => (Some(l), c),
        None => (None, 0),
    };
    Ok(Dataset { x, dim, shape, labels, classes, levels: None })
}

/// The largest class label a labels file may hold.
const MAX_LABEL: i64 = 1 << 20;

/// The labels of `DIR/NAME.npy` in `DIR/NAME_labels.npy` (integers or whole floats, shape
/// `[N]`), if that file exists: the labels and the number of classes (the largest label + 1).
fn sibling_labels(path: &Path, n: usize) -> Result<Option<(Vec<u32>, usize)>> {
    use ndarray::ArrayD;
    use ndarray_npy::ReadNpyExt;
    let (Some(stem), Some("npy")) =
        (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|e| e.to_str()))
    else {
        return Ok(None);
    };
    let lp = path.with_file_name(format!("{stem}_labels.npy"));
    if !lp.is_file() {
        return Ok(None);
    }
    let bad = |what: String| input(format!("{}: {what}", lp.display()));
    let open = || std::fs::File::open(&lp).map_err(|e| bad(e.to_string()));
    let values: Vec<f64> = if let Ok(a) = ArrayD::<i64>::read_npy(open()?) {
        a.iter().map(|&v| v as f64).collect()
    } else if let Ok(a) = ArrayD::<i32>::read_npy(open()?) {
        a.iter().map(|&v| f64::from(v)).collect()
    } else if let Ok(a) = ArrayD::<f64>::read_npy(open()?) {
        a.iter().copied().collect()
    } else if let Ok(a) = ArrayD::<f32>::read_npy(open()?) {
        a.iter().map(|&v| f64::from(v)).collect()
    } else {
        return Err(bad("expected class labels: an int64, int32 or float .npy array of shape [N]".into()));
    };
    if values.len() != n {
        return Err(bad(format!(
            "expected {n} labels (one per example of {}), found {}",
            path.display(),
            values.len()
        )));
    }
    if let Some(v) = values.iter().find(|v| !(v.fract() == 0.0 && (0.0..MAX_LABEL as f64).contains(*v))) {
        return Err(bad(format!("expected whole class labels in 0..{MAX_LABEL}, found {v}")));
    }
    let labels: Vec<u32> = values.iter().map(|&v| v as u32).collect();
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    Ok(Some((labels, classes)))
}

/// Reads a `.npy` header (format versions 1 to 3) and checks it against the file's length
/// before anything is allocated: returns the shape and the item size (4 or 8 bytes).
fn npy_header(path: &Path) -> Result<(Vec<usize>, usize)> {
    use std::io::Read;
    let bad = |what: &str| input(format!("{}: {what}", path.display()));
    let mut f = std::fs::File::open(path).map_err(|e| bad(&e.to_string()))?;
    let len = f.metadata().map_err(|e| bad(&e.to_string()))?.len();
    let mut head = [0u8; 12];
    f.read_exact(&mut head[..10]).map_err(|_| bad("expected a .npy file (too short)"))?;
    if &head[..6] != b"\x93NUMPY" {
        return Err(bad("expected a .npy file (no \\x93NUMPY magic)"));
    }
    let (hlen, pre) = match head[6] {
        1 => (usize::from(u16::from_le_bytes([head[8], head[9]])), 10),
        2 | 3 => {
            f.read_exact(&mut head[10..12]).map_err(|_| bad("truncated .npy header"))?;
            (u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize, 12)
        }
        v => return Err(bad(&format!("unsupported .npy format version {v}"))),
    };
    if (pre + hlen) as u64 > len || hlen > 1 << 20 {
        return Err(bad("truncated .npy header"));
    }
    let mut h = vec![0u8; hlen];
    f.read_exact(&mut h).map_err(|_| bad("truncated .npy header"))?;
    let h = String::from_utf8_lossy(&h);
    let item = if h.contains("'<f4'") {
        4
    } else if h.contains("'<f8'") {
        8
    } else {
        return Err(bad("expected a little-endian float32 or float64 .npy array ('<f4' or '<f8')"));
    };
    let shape_at = h.find("'shape':").ok_or_else(|| bad("the .npy header has no shape"))?;
    let rest = &h[shape_at + 8..];
    let (open, close) = (rest.find('(').ok_or_else(|| bad("bad .npy shape"))?, rest.find(')'));
    let close = close.filter(|&c| c > open).ok_or_else(|| bad("bad .npy shape"))?;
    let shape = rest[open + 1..close]
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().map_err(|_| bad(&format!("bad .npy shape entry '{d}'"))))
        .collect::<Result<Vec<usize>>>()?;
    let want = crate::io::product(&shape).and_then(|n| n.checked_mul(item)).and_then(|b| b.checked_add(pre + hlen));
    if want != Some(len as usize) {
        return Err(bad(&format!(
            "the .npy header's shape {shape:?} does not match the file's length of {len} bytes (truncated or corrupt)"
        )));
    }
    Ok((shape, item))
}

fn read_npy(path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    use ndarray::ArrayD;
    use ndarray_npy::ReadNpyExt;
    npy_header(path)?;
    let open = || std::fs::File::open(path).map_err(|e| input(format!("{}: {e}", path.display())));
    let bad = |e: ndarray_npy::ReadNpyError| {
        input(format!("{}: expected a float32 or float64 .npy array of shape [N, ...] ({e})", path.display()))
    };
    let arr: ArrayD<f32> = match ArrayD::<f32>::read_npy(open()?) {
        Ok(a) => a,
        Err(_) => ArrayD::<f64>::read_npy(open()?).map_err(bad)?.mapv(|v| v as f32),
    };
    let shape = arr.shape().to_vec();
    let example = if shape.len() <= 1 { vec![1] } else { shape[1..].to_vec() };
    Ok((arr.iter().copied().collect(), example))
}

/// Whether a CSV line is a header: every field non-empty and none of them a number.
fn is_header(fields: &[&str]) -> bool {
    fields.iter().all(|f| !f.is_empty() && f.parse::<f64>().is_err())
}

fn read_csv(path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    let text = std::fs::read_to_string(path).map_err(|e| input(format!("{}: {e}", path.display())))?;
    let mut x = Vec::new();
    let mut dim = None;
    let mut first = true;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let first_line = first;
        let parsed: std::result::Result<Vec<f32>, _> = fields.iter().map(|f| f.parse::<f32>()).collect();
        let row = match parsed {
            Ok(r) => r,
            // The header rule: the first line is a header when it holds no number at all
            // (column names); any other line must be all numbers.
            Err(_) if first && is_header(&fields) => {
                first = false;
                continue;
            }
            Err(_) => {
                return Err(input(format!(
                    "{}: line {}: expected comma-separated numbers{}",
                    path.display(),
                    i + 1,
                    if first_line { " (or a header of column names, none of them a number)" } else { "" }
                )));
            }
        };
        first = false;
        match dim {
            None => dim = Some(row.len()),
            Some(d) if d != row.len() => {
                return Err(input(format!(
                    "{}: line {}: expected {d} values, found {}",
                    path.display(),
                    i + 1,
                    row.len()
                )));
            }
            _ => {}
        }
        x.extend(row);
    }
    let dim = dim.ok_or_else(|| input(format!("{}: no data rows", path.display())))?;
    Ok((x, vec![dim]))
}

/// Per-coordinate affine normalisation `z = (x - mean) / std`, fitted on training data. The
/// bound of `x` is that of `z` plus `sum_d log std_d` (change of variables).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Per-coordinate means.
    pub mean: Vec<f32>,
    /// Per-coordinate standard deviations (1 where the data is constant).
    pub std: Vec<f32>,
}

impl Normalization {
    /// Fits mean and standard deviation per coordinate (in f64).
    pub fn fit(x: &[f32], dim: usize) -> Self {
        let n = (x.len() / dim) as f64;
        let mut mean = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (f64::from(v) - m).powi(2);
            }
        }
        let std = var.iter().map(|s| (s / n).sqrt()).map(|s| if s > 1e-12 { s as f32 } else { 1.0 }).collect();
        Normalization { mean: mean.iter().map(|&m| m as f32).collect(), std }
    }

    /// The identity.
    pub fn identity(dim: usize) -> Self {
        Normalization { mean: vec![0.0; dim], std: vec![1.0; dim] }
    }

    /// `x -> (x - mean) / std`, in place.
    pub fn apply(&self, x: &mut [f32]) {
        for row in x.chunks_exact_mut(self.mean.len()) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
    }

    /// `z -> z std + mean`, in place.
    pub fn invert(&self, z: &mut [f32]) {
        for row in z.chunks_exact_mut(self.mean.len()) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = *v * s + m;
            }
        }
    }

    /// `sum_d log std_d`: add to a bound in normalised space to get nats of the data.
    pub fn log_det(&self) -> f64 {
        self.std.iter().map(|&s| f64::from(s).ln()).sum()
    }
}
