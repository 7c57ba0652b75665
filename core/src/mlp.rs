//! A `no_std` MLP denoiser whose weights stay where they are (flash): a flat little-endian
//! blob, as `elbo export --out FILE.bin` writes it, read in place without allocation.
//!
//! The network is the host's (`host/src/nn.rs`): `[x, emb(t) + emb(class)]`, hidden layers with
//! SiLU, a linear output. The blob also carries the data normalisation and the full schedule
//! table, so a device samples with no table in RAM ([`BlobSchedule`]).
//!
//! Layout (all little-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `ELBOMLP1` |
//! | 8 x u32 | dim, width, depth, embed, classes, out, prediction (0 eps, 1 x0, 2 v, 3 score), T |
//! | 2 x dim x f32 | normalisation mean, then std |
//! | n_params x f32 | layer `i`: weight `[in, out]` row-major, then bias `[out]`; then the class table `[(classes + 1) x embed]` |
//! | T x 60 | per t = 1..T: beta, alpha, log_beta, abar, 1 - abar, sqrt(abar), sqrt(1 - abar), log abar (f64), snr, log_snr, btilde, log btilde (clipped), c0, ct |

use crate::denoiser::{Condition, Denoiser, NoiseLevel};
use crate::error::{Error, Result, check_len};
use crate::param::Prediction;
use crate::schedule::{Marginal, NoiseSchedule, Step};

/// The blob's first bytes.
pub const MAGIC: &[u8; 8] = b"ELBOMLP1";
/// The header size in bytes.
pub const HEADER: usize = 8 + 8 * 4;
/// Bytes per schedule entry.
pub const STEP_BYTES: usize = 60;
/// The widest hidden layer (and the longest input) the device network supports.
pub const MAX_WIDTH: usize = 256;

/// `ln(10000)`, the time embedding's frequency range.
const LN_10000: f32 = 9.210_340_5;

/// The embedding time of the 1-based timestep `t` of a discrete model: the 0-based `t - 1`
/// (the timestep diffusers and ONNX exports feed).
pub fn discrete_tau(t: usize) -> f32 {
    t.saturating_sub(1) as f32
}

/// The embedding time of `t` in `[0, 1]` of a continuous-time model: `1000 t`.
pub fn continuous_tau(t: f64) -> f32 {
    (1000.0 * t) as f32
}

/// improved-diffusion's sinusoidal `timestep_embedding` of a real time `tau` (the 0-based
/// timestep `t - 1` of a discrete model, possibly fractional between table entries;
/// continuous-time models embed `tau = 1000 t`, `t` in `[0, 1]`): `out[k] = cos(tau f_k)`,
/// `out[E/2 + k] = sin(tau f_k)`, `f_k = exp(-ln(10000) k / (E/2))`.
pub fn time_embedding(tau: f32, out: &mut [f32]) {
    let half = out.len() / 2;
    for k in 0..half {
        let f = embedding_frequency(k, half);
        out[k] = libm::cosf(tau * f);
        out[half + k] = libm::sinf(tau * f);
    }
}

/// The frequency `f_k = exp(-ln(10000) k / half)` of the time embedding (exporters use it too).
pub fn embedding_frequency(k: usize, half: usize) -> f32 {
    libm::expf(-LN_10000 * k as f32 / half as f32)
}

/// `SiLU(z) = z sigmoid(z) = z / (1 + exp(-z))`.
#[inline]
pub fn silu(z: f32) -> f32 {
    z / (1.0 + libm::expf(-z))
}

/// The network's shape, as the blob's header gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Data dimension `D`.
    pub dim: usize,
    /// Hidden width.
    pub width: usize,
    /// Hidden layers.
    pub depth: usize,
    /// Time embedding size.
    pub embed: usize,
    /// Classes (0: unconditional; the null class is `classes`).
    pub classes: usize,
    /// Output size.
    pub out: usize,
}

/// Where one layer lies in the flat parameter vector: its weight `[n_in, n_out]` (row-major,
/// one row per input) at `weight`, then its bias `[n_out]` at `bias`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// Inputs.
    pub n_in: usize,
    /// Outputs.
    pub n_out: usize,
    /// Offset of the weight.
    pub weight: usize,
    /// Offset of the bias.
    pub bias: usize,
}

/// The network's layout, defined here once for every implementation (the host's training
/// network, its exports, and this crate's device network): the input is the data (`dim`) then
/// the time embedding (`embed`, [`time_embedding`]), plus the class's embedding row for a
/// conditional model; `depth` hidden layers of `width` with SiLU, then a linear output layer.
/// Layer after layer, weight then bias; last, the class table `[classes + 1, embed]` (its last
/// row is the null class).
impl Shape {
    /// The number of parameters.
    pub fn n_params(&self) -> usize {
        self.checked_n_params().unwrap_or(usize::MAX)
    }

    /// [`Shape::n_params`], or `None` where the count overflows `usize` (a damaged header on a
    /// 32-bit device).
    pub fn checked_n_params(&self) -> Option<usize> {
        let last = self.checked_layer(self.depth)?;
        let end = last.bias.checked_add(last.n_out)?;
        if self.classes > 0 {
            end.checked_add(self.classes.checked_add(1)?.checked_mul(self.embed)?)
        } else {
            Some(end)
        }
    }

    /// The layers in order, `0..=depth` (`depth` is the output layer), each from the one
    /// before; the iteration stops early where an offset overflows.
    pub fn layers(&self) -> impl Iterator<Item = Layer> + '_ {
        let first = self.dim.checked_add(self.embed).map(|n_in| (0usize, n_in));
        (0..=self.depth).scan(first, move |state, k| {
            let (off, n_in) = (*state)?;
            let n_out = if k == self.depth { self.out } else { self.width };
            let bias = off.checked_add(n_in.checked_mul(n_out)?)?;
            *state = bias.checked_add(n_out).map(|next| (next, n_out));
            Some(Layer { n_in, n_out, weight: off, bias })
        })
    }

    /// Layer `i` (`0..=depth`), or `None` past the output layer or where an offset overflows.
    pub fn checked_layer(&self, i: usize) -> Option<Layer> {
        self.layers().nth(i)
    }

    /// The offset of the class table of a conditional model.
    pub fn class_table(&self) -> Option<usize> {
        let last = self.checked_layer(self.depth)?;
        (self.classes > 0).then_some(last.bias + last.n_out)
    }
}

#[inline]
fn f32_at(b: &[u8], off: usize) -> f32 {
    match b.get(off..off + 4) {
        Some(s) => f32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => f32::NAN,
    }
}

#[inline]
fn u32_at(b: &[u8], off: usize) -> u32 {
    match b.get(off..off + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// A validated blob.
#[derive(Debug, Clone, Copy)]
pub struct ModelBlob<'a> {
    bytes: &'a [u8],
    shape: Shape,
    prediction: Prediction,
    steps: usize,
    params_at: usize,
    schedule_at: usize,
}

impl<'a> ModelBlob<'a> {
    /// Checks the magic, the header and the length.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let bad = |reason| Error::InvalidParameter { name: "model blob", reason };
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(bad("the magic ELBOMLP1 and a header"));
        }
        let h = |i: usize| u32_at(bytes, 8 + 4 * i) as usize;
        let shape = Shape { dim: h(0), width: h(1), depth: h(2), embed: h(3), classes: h(4), out: h(5) };
        let prediction = *PREDICTIONS.get(h(6)).ok_or(bad("a prediction code 0..=3"))?;
        let steps = h(7);
        if shape.dim == 0 || !shape.embed.is_multiple_of(2) || shape.width == 0 || shape.out != shape.dim || steps == 0
        {
            return Err(bad("positive sizes, an even embedding, one output per coordinate and T > 0"));
        }
        if shape.width > MAX_WIDTH || shape.dim + shape.embed > MAX_WIDTH || shape.out > MAX_WIDTH {
            return Err(Error::Capacity { requested: shape.width.max(shape.dim + shape.embed), capacity: MAX_WIDTH });
        }
        // sizes from the header are checked against the length with checked arithmetic: a
        // damaged header must not overflow on a 32-bit device
        let too_long = || Error::DimensionMismatch { expected: usize::MAX, got: bytes.len() };
        let params_at = HEADER + 8 * shape.dim;
        let schedule_at = shape
            .checked_n_params()
            .and_then(|n| n.checked_mul(4))
            .and_then(|n| n.checked_add(params_at))
            .ok_or_else(too_long)?;
        let end = STEP_BYTES.checked_mul(steps).and_then(|n| n.checked_add(schedule_at)).ok_or_else(too_long)?;
        check_len(end, bytes.len())?;
        for d in 0..shape.dim {
            let (mean, std) = (f32_at(bytes, HEADER + 4 * d), f32_at(bytes, HEADER + 4 * (shape.dim + d)));
            if !(mean.is_finite() && std.is_finite() && std > 0.0) {
                return Err(bad("a finite normalisation with positive standard deviations"));
            }
        }
        Ok(ModelBlob { bytes, shape, prediction, steps, params_at, schedule_at })
    }

    /// The network's shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The normalisation `(mean_d, std_d)` of coordinate `d` (data = std z + mean).
    pub fn normalization(&self, d: usize) -> (f32, f32) {
        (f32_at(self.bytes, HEADER + 4 * d), f32_at(self.bytes, HEADER + 4 * (self.shape.dim + d)))
    }

    /// The denoiser.
    pub fn denoiser(&self) -> BlobMlp<'a> {
        BlobMlp { blob: *self }
    }

    /// The schedule the model was trained with.
    pub fn schedule(&self) -> BlobSchedule<'a> {
        BlobSchedule { blob: *self }
    }

    #[inline]
    fn param(&self, i: usize) -> f32 {
        f32_at(self.bytes, self.params_at + 4 * i)
    }
}

/// The blob's prediction codes, in [`encode_header`]'s order.
const PREDICTIONS: [Prediction; 4] = [Prediction::Eps, Prediction::X0, Prediction::V, Prediction::Score];

/// Writes the blob's header (for exporters): the magic, then as little-endian `u32`s `dim`,
/// `width`, `depth`, `embed`, `classes`, `out`, the prediction code and the number of steps,
/// the order [`ModelBlob::parse`] reads. `None` if a size does not fit a `u32`.
pub fn encode_header(shape: &Shape, prediction: Prediction, steps: usize) -> Option<[u8; HEADER]> {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    let code = PREDICTIONS.iter().position(|&p| p == prediction)?;
    let fields = [shape.dim, shape.width, shape.depth, shape.embed, shape.classes, shape.out, code, steps];
    for (i, v) in fields.iter().enumerate() {
        h[8 + 4 * i..12 + 4 * i].copy_from_slice(&u32::try_from(*v).ok()?.to_le_bytes());
    }
    Some(h)
}

/// Writes one schedule entry in the blob's layout (for exporters; 60 bytes).
pub fn encode_step(s: &Step, out: &mut [u8; STEP_BYTES]) {
    let fields =
        [s.beta, s.alpha, s.log_beta, s.cur.abar, s.cur.one_minus_abar, s.cur.sqrt_abar, s.cur.sqrt_one_minus_abar];
    for (i, v) in fields.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    out[28..36].copy_from_slice(&s.cur.log_abar.to_le_bytes());
    let rest = [
        s.snr,
        s.log_snr,
        s.posterior_variance,
        s.posterior_log_variance_clipped,
        s.posterior_mean_coef_x0,
        s.posterior_mean_coef_xt,
    ];
    for (i, v) in rest.iter().enumerate() {
        out[36 + 4 * i..40 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
}

/// The schedule table of a blob, read in place.
#[derive(Debug, Clone, Copy)]
pub struct BlobSchedule<'a> {
    blob: ModelBlob<'a>,
}

impl BlobSchedule<'_> {
    fn entry(&self, t: usize) -> (Marginal, [f32; 9]) {
        let b = self.blob.bytes;
        let o = self.blob.schedule_at + STEP_BYTES * (t - 1);
        let f = |i: usize| f32_at(b, o + 4 * i);
        let log_abar = match b.get(o + 28..o + 36) {
            Some(s) => f64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
            None => f64::NAN,
        };
        let m = Marginal { abar: f(3), one_minus_abar: f(4), sqrt_abar: f(5), sqrt_one_minus_abar: f(6), log_abar };
        let g = |i: usize| f32_at(b, o + 36 + 4 * i);
        (m, [f(0), f(1), f(2), g(0), g(1), g(2), g(3), g(4), g(5)])
    }
}

impl NoiseSchedule for BlobSchedule<'_> {
    fn steps(&self) -> usize {
        self.blob.steps
    }

    fn step(&self, t: usize) -> Result<Step> {
        if t == 0 || t > self.blob.steps {
            return Err(Error::TimestepOutOfRange { t, steps: self.blob.steps });
        }
        let (cur, v) = self.entry(t);
        let (prev, snr_prev) =
            if t == 1 { (Marginal::DATA, f32::INFINITY) } else { (self.entry(t - 1).0, self.entry(t - 1).1[3]) };
        Ok(Step {
            t,
            steps: self.blob.steps,
            beta: v[0],
            alpha: v[1],
            log_beta: v[2],
            cur,
            prev,
            snr: v[3],
            log_snr: v[4],
            snr_prev,
            posterior_variance: v[5],
            posterior_log_variance_clipped: v[6],
            posterior_mean_coef_x0: v[7],
            posterior_mean_coef_xt: v[8],
        })
    }
}

/// The denoiser of a blob: one example at a time, activations in two stack buffers of
/// [`MAX_WIDTH`] floats; sums run in index order without fused multiply-add, so the results
/// are the same bits on every target.
#[derive(Debug, Clone, Copy)]
pub struct BlobMlp<'a> {
    blob: ModelBlob<'a>,
}

impl BlobMlp<'_> {
    fn forward_one(&self, x: &[f32], tau: f32, class: Option<usize>, out: &mut [f32]) {
        let s = self.blob.shape;
        let mut a = [0.0f32; MAX_WIDTH];
        let mut b = [0.0f32; MAX_WIDTH];
        a[..s.dim].copy_from_slice(x);
        time_embedding(tau, &mut a[s.dim..s.dim + s.embed]);
        if let (Some(c), Some(table)) = (class, s.class_table()) {
            for k in 0..s.embed {
                a[s.dim + k] += self.blob.param(table + c * s.embed + k);
            }
        }
        let params = self.blob.bytes.get(self.blob.params_at..self.blob.schedule_at).unwrap_or(&[]);
        for (layer, Layer { n_in, n_out, weight: off, bias }) in s.layers().enumerate() {
            let last = layer == s.depth;
            // b_j = bias_j + sum_i a_i W[i][j], the sum in order of i for every j: the weights
            // are read row after row, in their storage order.
            for (j, bj) in b[..n_out].iter_mut().enumerate() {
                *bj = self.blob.param(bias + j);
            }
            let rows = params.get(4 * off..4 * bias).unwrap_or(&[]);
            for (&ai, row) in a[..n_in].iter().zip(rows.chunks_exact(4 * n_out)) {
                for (bj, w) in b[..n_out].iter_mut().zip(row.chunks_exact(4)) {
                    *bj += ai * f32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                }
            }
            if !last {
                for bj in &mut b[..n_out] {
                    *bj = silu(*bj);
                }
            }
            core::mem::swap(&mut a, &mut b);
        }
        out.copy_from_slice(&a[..s.out]);
    }
}

impl Denoiser for BlobMlp<'_> {
    type Error = Error;

    fn dim(&self) -> usize {
        self.blob.shape.dim
    }

    fn prediction(&self) -> Prediction {
        self.blob.prediction
    }

    fn classes(&self) -> usize {
        self.blob.shape.classes
    }

    fn predict(&mut self, x: &[f32], level: NoiseLevel, cond: Condition<'_>, out: &mut [f32]) -> Result<()> {
        check_len(x.len(), out.len())?;
        let d = self.dim();
        let s = self.blob.shape;
        for (i, (xr, or)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
            let class = match (cond, s.classes) {
                (_, 0) => None,
                (Condition::Unconditional, c) => Some(c),
                (Condition::Class(l), c) => {
                    let k = *l.get(i).ok_or(Error::DimensionMismatch { expected: i + 1, got: l.len() })? as usize;
                    if k >= c {
                        return Err(Error::ClassOutOfRange { class: k as u32, classes: c });
                    }
                    Some(k)
                }
            };
            self.forward_one(xr, level.timestep, class, or);
            if or.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite { what: "the blob's network" });
            }
        }
        Ok(())
    }
}
