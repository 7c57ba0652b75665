//! The U-Net's layers, forward and backward, on one chunk of `n` examples held channels-last:
//! a tensor is `n x pixels x channels`, row-major, so that a 1x1 convolution is the matrix
//! product of the tensor itself with the weight, and a 3x3 convolution reads each pixel's
//! neighbourhood in place ([`super::direct`]). Every reduction runs in a fixed order (no result
//! depends on the thread count).
//!
//! Backward functions add to the parameter gradient `g` (laid out as the parameters) and, where
//! asked, to the input gradient `dx`.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

use super::direct;
use crate::nn::gemm::{gemm, gemm_new};
use crate::nn::{sigmoid, wide};

/// Adds `bias` to every row of `y` (`rows x bias.len()`).
fn add_bias(y: &mut [f32], bias: &[f32]) {
    for row in y.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
    }
}

/// Adds the column sums of `dy` (`rows x db.len()`) to `db`, row by row.
fn sum_rows(dy: &[f32], db: &mut [f32]) {
    for row in dy.chunks_exact(db.len()) {
        db.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
    }
}

/// A convolution with a square kernel of size 1 (stride 1) or 3 (stride 1 or 2) and zero padding
/// `k / 2` (PyTorch's `Conv2d(cin, cout, k, stride, padding=k // 2)`). The weight is laid out
/// `[k, k, cin, cout]`: row `(ky, kx, ci)` multiplies tap `(ky, kx)`'s channel `ci`.
#[derive(Debug, Clone)]
pub struct Conv {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel size (1 or 3).
    pub k: usize,
    /// Stride (1 or 2).
    pub stride: usize,
    /// Offset of the weight.
    pub weight: usize,
    /// Offset of the bias.
    pub bias: usize,
}

impl Conv {
    /// The output's height and width for an input of `h x w`.
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let p = self.k / 2;
        ((h + 2 * p - self.k) / self.stride + 1, (w + 2 * p - self.k) / self.stride + 1)
    }

    fn rows_k(&self) -> usize {
        self.k * self.k * self.cin
    }

    /// Calls `f(col, src, len)` for every run of kernel taps that falls inside the image, in a
    /// fixed order: `col` is the offset of the run's values in the im2col matrix (the matrix of
    /// every output pixel's taps: row `(b, oy, ox)`, column `(ky, kx, ci)`, zero where a tap
    /// falls in the padding), `src` that of the first pixel's `cin` values in the input,
    /// `len` the run's length in values (the taps of one kernel row inside the image are
    /// adjacent in both).
    fn for_each_tap(&self, n: usize, h: usize, w: usize, mut f: impl FnMut(usize, usize, usize)) {
        let (ho, wo) = self.out_size(h, w);
        let (k, s, ci) = (self.k, self.stride, self.cin);
        let p = k / 2;
        let kk = self.rows_k();
        for b in 0..n {
            for oy in 0..ho {
                for ox in 0..wo {
                    let row = ((b * ho + oy) * wo + ox) * kk;
                    // the kernel columns inside the image: kx in kx0..kx1
                    let kx0 = p.saturating_sub(ox * s);
                    let kx1 = k.min((w + p).saturating_sub(ox * s));
                    if kx0 >= kx1 {
                        continue;
                    }
                    for ky in 0..k {
                        let iy = (oy * s + ky).wrapping_sub(p);
                        if iy < h {
                            let ix = ox * s + kx0 - p;
                            f(row + (ky * k + kx0) * ci, ((b * h + iy) * w + ix) * ci, (kx1 - kx0) * ci);
                        }
                    }
                }
            }
        }
    }

    /// Adds the im2col matrix's gradient `dcols` back onto the input gradient `dx` (the adjoint
    /// of gathering the taps), in a fixed order: the data gradient of a stride-2 convolution.
    fn col2im(&self, dcols: &[f32], n: usize, h: usize, w: usize, dx: &mut [f32]) {
        self.for_each_tap(n, h, w, |col, src, len| {
            dx[src..src + len].iter_mut().zip(&dcols[col..col + len]).for_each(|(a, &v)| *a += v);
        });
    }

    /// A 1x1 convolution (stride 1): one matrix product.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1
    }

    /// The output (`n x ho*wo x cout`) of the input `x` (`n x h*w x cin`): a 1x1 convolution is
    /// one matrix product, a 3x3 one a direct convolution ([`direct::conv3x3`]).
    pub fn forward(&self, p: &[f32], x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        if !self.pointwise() {
            return self.forward_padded(p, &direct::pad(x, n, h, w, self.cin), n, h, w);
        }
        let weight = &p[self.weight..self.weight + self.rows_k() * self.cout];
        let mut y = gemm_new(n * h * w, self.cin, self.cout, x, false, weight, false);
        add_bias(&mut y, &p[self.bias..self.bias + self.cout]);
        y
    }

    /// [`Conv::forward`] of a 3x3 convolution from its input already padded with a border of
    /// one zero pixel (`n x (h + 2) x (w + 2) x cin`): the same bits.
    pub fn forward_padded(&self, p: &[f32], xp: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        assert_eq!(self.k, 3, "a padded input is for a 3x3 convolution");
        let wt = direct::Packed::new(&p[self.weight..self.weight + self.rows_k() * self.cout], self.cin, self.cout);
        direct::conv3x3(xp, n, h, w, self.stride, &wt, &p[self.bias..self.bias + self.cout])
    }

    /// Backward from `dy` (`n x ho*wo x cout`): adds to the weight's and bias's gradients in `g`
    /// and, with `dx`, to the input's gradient.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        dy: &[f32],
        dx: Option<&mut [f32]>,
    ) {
        let (ho, wo) = self.out_size(h, w);
        let m = n * ho * wo;
        let kk = self.rows_k();
        let weight = &p[self.weight..self.weight + kk * self.cout];
        let gw = &mut g[self.weight..self.weight + kk * self.cout];
        if self.pointwise() {
            gemm(kk, m, self.cout, x, true, dy, false, 1.0, gw);
        } else {
            let xp = direct::pad(x, n, h, w, self.cin);
            direct::conv3x3_weight_grad(&xp, n, h, w, self.stride, self.cin, dy, self.cout, gw);
        }
        sum_rows(dy, &mut g[self.bias..self.bias + self.cout]);
        if let Some(dx) = dx {
            if self.pointwise() {
                gemm(m, self.cout, kk, dy, false, weight, true, 1.0, dx);
            } else if self.stride == 1 {
                // the data gradient of a stride-1 3x3 convolution is itself one (of the padded
                // dy, with the kernel flipped and its channels swapped)
                let dyp = direct::pad(dy, n, ho, wo, self.cout);
                let wt = direct::Packed::transposed(weight, self.cin, self.cout);
                direct::conv3x3_add(&dyp, n, ho, wo, 1, &wt, dx);
            } else {
                let dcols = gemm_new(m, self.cout, kk, dy, false, weight, true);
                self.col2im(&dcols, n, h, w, dx);
            }
        }
    }
}

/// A fully connected layer, `y = x W + b` with `W` laid out `[in, out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Inputs.
    pub n_in: usize,
    /// Outputs.
    pub n_out: usize,
    /// Offset of the weight.
    pub weight: usize,
    /// Offset of the bias.
    pub bias: usize,
}

impl Linear {
    /// The output (`rows x n_out`) of `x` (`rows x n_in`).
    pub fn forward(&self, p: &[f32], x: &[f32]) -> Vec<f32> {
        let rows = x.len() / self.n_in;
        let mut y = gemm_new(rows, self.n_in, self.n_out, x, false, &p[self.weight..], false);
        add_bias(&mut y, &p[self.bias..self.bias + self.n_out]);
        y
    }

    /// Backward from `dy`: adds to the gradients in `g` and to `dx`.
    pub fn backward(&self, p: &[f32], g: &mut [f32], x: &[f32], dy: &[f32], dx: &mut [f32]) {
        let rows = x.len() / self.n_in;
        gemm(
            self.n_in,
            rows,
            self.n_out,
            x,
            true,
            dy,
            false,
            1.0,
            &mut g[self.weight..self.weight + self.n_in * self.n_out],
        );
        sum_rows(dy, &mut g[self.bias..self.bias + self.n_out]);
        gemm(rows, self.n_out, self.n_in, dy, false, &p[self.weight..], true, 1.0, dx);
    }
}

/// Group normalisation (Wu and He, 2018, eq. 1-3; PyTorch's `GroupNorm(groups, c, eps=1e-5)`):
/// each example's channels fall into `groups` groups of `c / groups`, normalised by the mean and
/// (biased) variance over the group's channels and all pixels, then scaled and shifted per
/// channel by `gamma` and `beta`.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    /// Channels.
    pub c: usize,
    /// Groups (dividing `c`).
    pub groups: usize,
    /// Offset of `gamma`.
    pub gamma: usize,
    /// Offset of `beta`.
    pub beta: usize,
}

/// What [`GroupNorm::backward`] needs: the normalised input and `1 / sqrt(var + eps)` per
/// example and group.
pub struct GroupNormCache {
    xhat: Vec<f32>,
    rstd: Vec<f32>,
}

/// PyTorch's default epsilon of `GroupNorm`.
pub const GN_EPS: f64 = 1e-5;

/// The buffers of [`GroupNorm::stats`].
struct Stats {
    acc: Vec<f64>,
    mean: Vec<f64>,
    var: Vec<f64>,
    m32: Vec<f32>,
    r32: Vec<f32>,
}

impl Stats {
    fn new(c: usize) -> Self {
        Stats { acc: vec![0.0; c], mean: vec![0.0; c], var: vec![0.0; c], m32: vec![0.0; c], r32: vec![0.0; c] }
    }
}

impl GroupNorm {
    /// Per-channel sums of `x` over the pixels of one example (`x` is `pixels x c`), in f64,
    /// pixel by pixel (vectorised across channels).
    #[inline(always)]
    fn channel_sums(&self, x: &[f32], acc: &mut [f64]) {
        self.per_channel(x, None, acc);
    }

    /// Per-channel sums of `(x - mean)^2` over the pixels of one example, in f64, pixel by
    /// pixel (vectorised across channels).
    #[inline(always)]
    fn channel_squares(&self, x: &[f32], mean: &[f64], acc: &mut [f64]) {
        self.per_channel(x, Some(mean), acc);
    }

    /// `acc[j]` = the sum over pixels of `x[pixel, j]`, or with `mean` of `(x[pixel, j] -
    /// mean[j])^2`, each channel's sum in pixel order; the channels in blocks of 32 whose sums
    /// stay in registers while the pixels pass.
    #[inline(always)]
    fn per_channel(&self, x: &[f32], mean: Option<&[f64]>, acc: &mut [f64]) {
        const B: usize = 32;
        #[inline(always)]
        fn block<const N: usize>(x: &[f32], c: usize, j0: usize, mean: Option<&[f64]>, out: &mut [f64]) {
            let mut a = [0.0f64; N];
            match mean {
                None => {
                    for row in x.chunks_exact(c) {
                        let r = &row[j0..j0 + N];
                        for k in 0..N {
                            a[k] += f64::from(r[k]);
                        }
                    }
                }
                Some(mean) => {
                    let m: [f64; N] = mean[j0..j0 + N].try_into().expect("a block");
                    for row in x.chunks_exact(c) {
                        let r = &row[j0..j0 + N];
                        for k in 0..N {
                            let d = f64::from(r[k]) - m[k];
                            a[k] += d * d;
                        }
                    }
                }
            }
            out[j0..j0 + N].copy_from_slice(&a);
        }
        let c = self.c;
        let mut j0 = 0;
        while j0 + B <= c {
            block::<B>(x, c, j0, mean, acc);
            j0 += B;
        }
        // the rest, one channel at a time
        for j in j0..c {
            block::<1>(x, c, j, mean, acc);
        }
    }

    /// Sums per-channel values over each group's channels, then spreads each group's value
    /// (times `scale`) back over its channels.
    fn group_spread(&self, acc: &[f64], scale: f64, out: &mut [f64]) {
        let cg = self.c / self.groups;
        for (a, o) in acc.chunks_exact(cg).zip(out.chunks_exact_mut(cg)) {
            let g = a.iter().sum::<f64>() * scale;
            o.iter_mut().for_each(|v| *v = g);
        }
    }

    /// The mean and `1/sqrt(var + eps)` of each group of one example `xb` (`pixels x c`), per
    /// channel (in f64, two passes, then rounded to f32), over `count` values per group.
    fn stats(&self, xb: &[f32], count: f64, st: &mut Stats) {
        wide(
            #[inline(always)]
            || {
                self.channel_sums(xb, &mut st.acc);
                self.group_spread(&st.acc, 1.0 / count, &mut st.mean);
                self.channel_squares(xb, &st.mean, &mut st.acc);
            },
        );
        self.group_spread(&st.acc, 1.0 / count, &mut st.var);
        for j in 0..self.c {
            st.m32[j] = st.mean[j] as f32;
            st.r32[j] = (1.0 / (st.var[j] + GN_EPS).sqrt()) as f32;
        }
    }

    /// The output of `x` (`n x pixels x c`), and the cache for backward.
    pub fn forward(&self, p: &[f32], x: &[f32], n: usize) -> (Vec<f32>, GroupNormCache) {
        let c = self.c;
        let pix = x.len() / (n * c);
        let count = (pix * (c / self.groups)) as f64;
        let gamma = &p[self.gamma..self.gamma + c];
        let beta = &p[self.beta..self.beta + c];
        let mut xhat = Vec::with_capacity(x.len());
        let mut y = Vec::with_capacity(x.len());
        let mut rstd = vec![0.0f32; n * self.groups];
        let mut st = Stats::new(c);
        for b in 0..n {
            let xb = &x[b * pix * c..(b + 1) * pix * c];
            self.stats(xb, count, &mut st);
            let (m32, r32) = (&st.m32, &st.r32);
            for q in 0..self.groups {
                rstd[b * self.groups + q] = r32[q * (c / self.groups)];
            }
            for row in xb.chunks_exact(c) {
                let start = xhat.len();
                xhat.extend(row.iter().zip(m32).zip(r32).map(|((&v, &m), &r)| (v - m) * r));
                y.extend(xhat[start..].iter().zip(gamma).zip(beta).map(|((&h, &g), &bt)| h * g + bt));
            }
        }
        (y, GroupNormCache { xhat, rstd })
    }

    /// `SiLU(GroupNorm(x))` for inference, of `n` images of `h x w`: the same arithmetic as
    /// [`GroupNorm::forward`] then [`silu`] (so the same bits), in one pass over the output and
    /// without the cache, written with a border of one zero pixel (`n x (h + 2) x (w + 2) x c`,
    /// the input of [`Conv::forward_padded`]), so that no copy pads it.
    pub fn forward_silu_padded(&self, p: &[f32], x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        let c = self.c;
        let pix = x.len() / (n * c);
        let count = (pix * (c / self.groups)) as f64;
        let gamma = &p[self.gamma..self.gamma + c];
        let beta = &p[self.beta..self.beta + c];
        assert_eq!(h * w, pix, "GroupNorm: images of h x w pixels");
        // an example's rows, and the row of its pixel k
        let per = (h + 2) * (w + 2);
        let row_of = |k: usize| (k / w + 1) * (w + 2) + k % w + 1;
        let mut y = vec![0.0f32; n * per * c];
        let mut st = Stats::new(c);
        for (xb, yb) in x.chunks_exact(pix * c).zip(y.chunks_exact_mut(per * c)) {
            self.stats(xb, count, &mut st);
            // h = (v - m) r g + bt, in that order, then SiLU
            let (m32, r32) = (&st.m32[..c], &st.r32[..c]);
            wide(
                #[inline(always)]
                || {
                    // blocks of 16 channels (one AVX-512 register), then the rest
                    const L: usize = 16;
                    let f = |v: f32, m: f32, r: f32, g: f32, b: f32| {
                        let h = (v - m) * r * g + b;
                        h * sigmoid(h)
                    };
                    for (k, row) in xb.chunks_exact(c).enumerate() {
                        let o0 = row_of(k) * c;
                        let out = &mut yb[o0..o0 + c];
                        let mut j = 0;
                        while j + L <= c {
                            let v: &[f32; L] = row[j..j + L].try_into().expect("16");
                            let m: &[f32; L] = m32[j..j + L].try_into().expect("16");
                            let r: &[f32; L] = r32[j..j + L].try_into().expect("16");
                            let g: &[f32; L] = gamma[j..j + L].try_into().expect("16");
                            let b: &[f32; L] = beta[j..j + L].try_into().expect("16");
                            let o: &mut [f32; L] = (&mut out[j..j + L]).try_into().expect("16");
                            for k in 0..L {
                                o[k] = f(v[k], m[k], r[k], g[k], b[k]);
                            }
                            j += L;
                        }
                        for k in j..c {
                            out[k] = f(row[k], m32[k], r32[k], gamma[k], beta[k]);
                        }
                    }
                },
            );
        }
        y
    }

    /// Backward from `dy`: adds to `gamma`'s and `beta`'s gradients and returns `dx`
    /// (`dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))` over each group).
    pub fn backward(&self, p: &[f32], g: &mut [f32], cache: &GroupNormCache, n: usize, dy: &[f32]) -> Vec<f32> {
        let c = self.c;
        let cg = c / self.groups;
        let pix = dy.len() / (n * c);
        let count = (pix * cg) as f64;
        let gamma = &p[self.gamma..self.gamma + c];
        let mut dgamma = vec![0.0f32; c];
        let mut dbeta = vec![0.0f32; c];
        let mut dx = vec![0.0f32; dy.len()];
        let (mut s1, mut s2) = (vec![0.0f64; c], vec![0.0f64; c]);
        let (mut m1, mut m2) = (vec![0.0f64; c], vec![0.0f64; c]);
        let (mut m1f, mut m2f, mut rf) = (vec![0.0f32; c], vec![0.0f32; c], vec![0.0f32; c]);
        for b in 0..n {
            let off = b * pix * c;
            let dyb = &dy[off..off + pix * c];
            let xhb = &cache.xhat[off..off + pix * c];
            s1.iter_mut().for_each(|v| *v = 0.0);
            s2.iter_mut().for_each(|v| *v = 0.0);
            for (d, xh) in dyb.chunks_exact(c).zip(xhb.chunks_exact(c)) {
                for j in 0..c {
                    dgamma[j] += d[j] * xh[j];
                    dbeta[j] += d[j];
                    let dxh = f64::from(d[j] * gamma[j]);
                    s1[j] += dxh;
                    s2[j] += dxh * f64::from(xh[j]);
                }
            }
            self.group_spread(&s1, 1.0 / count, &mut m1);
            self.group_spread(&s2, 1.0 / count, &mut m2);
            for j in 0..c {
                m1f[j] = m1[j] as f32;
                m2f[j] = m2[j] as f32;
                rf[j] = cache.rstd[b * self.groups + j / cg];
            }
            for ((d, xh), o) in
                dyb.chunks_exact(c).zip(xhb.chunks_exact(c)).zip(dx[off..off + pix * c].chunks_exact_mut(c))
            {
                for j in 0..c {
                    o[j] = rf[j] * (d[j] * gamma[j] - m1f[j] - xh[j] * m2f[j]);
                }
            }
        }
        g[self.gamma..self.gamma + c].iter_mut().zip(&dgamma).for_each(|(a, &v)| *a += v);
        g[self.beta..self.beta + c].iter_mut().zip(&dbeta).for_each(|(a, &v)| *a += v);
        dx
    }
}

/// `SiLU(x) = x sigmoid(x)`.
pub fn silu(x: &[f32]) -> Vec<f32> {
    wide(
        #[inline(always)]
        || x.iter().map(|&v| v * sigmoid(v)).collect(),
    )
}

/// Turns `dy` into `dx` through the SiLU at `x`: `SiLU'(x) = sigmoid(x) (1 + x (1 - sigmoid(x)))`.
pub fn silu_backward(x: &[f32], dy: &mut [f32]) {
    wide(
        #[inline(always)]
        || {
            for (d, &v) in dy.iter_mut().zip(x) {
                let s = sigmoid(v);
                *d *= s * (1.0 + v * (1.0 - s));
            }
        },
    )
}

/// Nearest-neighbour upsampling by 2 of `n x h*w x c` (PyTorch's `interpolate(scale_factor=2,
/// mode="nearest")`).
pub fn upsample(x: &[f32], n: usize, h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(4 * x.len());
    for b in 0..n {
        for yy in 0..2 * h {
            for xx in 0..2 * w {
                let src = ((b * h + yy / 2) * w + xx / 2) * c;
                y.extend_from_slice(&x[src..src + c]);
            }
        }
    }
    y
}

/// The adjoint of [`upsample`]: each input pixel's gradient is the sum of its four copies'.
pub fn upsample_backward(dy: &[f32], n: usize, h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut dx = vec![0.0f32; dy.len() / 4];
    for b in 0..n {
        for yy in 0..2 * h {
            for xx in 0..2 * w {
                let dst = ((b * h + yy / 2) * w + xx / 2) * c;
                let src = ((b * 2 * h + yy) * 2 * w + xx) * c;
                dx[dst..dst + c].iter_mut().zip(&dy[src..src + c]).for_each(|(a, &v)| *a += v);
            }
        }
    }
    dx
}

/// Single-head self-attention over the pixels with a residual connection (DDPM's and
/// improved-diffusion's `AttentionBlock`): `x + proj(softmax(q k^T / sqrt(c)) v)`, with
/// `q, k, v` a 1x1 convolution of `GroupNorm(x)`.
#[derive(Debug, Clone)]
pub struct Attention {
    /// Channels.
    pub c: usize,
    /// The normalisation.
    pub norm: GroupNorm,
    /// `c -> 3c` (q, k, v).
    pub qkv: Conv,
    /// `c -> c`.
    pub proj: Conv,
}

/// What [`Attention::backward`] needs.
pub struct AttentionCache {
    norm: GroupNormCache,
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
}

impl Attention {
    /// The output of `x` (`n x t x c`, `t` pixels).
    pub fn forward(&self, p: &[f32], x: &[f32], n: usize, hh: usize, ww: usize) -> (Vec<f32>, AttentionCache) {
        let c = self.c;
        let t = hh * ww;
        let (h, norm) = self.norm.forward(p, x, n);
        let qkv = self.qkv.forward(p, &h, n, hh, ww);
        let scale = 1.0 / (c as f32).sqrt();
        let mut attn = vec![0.0f32; n * t * t];
        let mut o = vec![0.0f32; n * t * c];
        for b in 0..n {
            let m = ndarray::ArrayView2::from_shape((t, 3 * c), &qkv[b * t * 3 * c..(b + 1) * t * 3 * c]).expect("qkv");
            let q = m.slice(ndarray::s![.., 0..c]);
            let k = m.slice(ndarray::s![.., c..2 * c]);
            let v = m.slice(ndarray::s![.., 2 * c..3 * c]);
            let a = &mut attn[b * t * t..(b + 1) * t * t];
            let mut av = ArrayViewMut2::from_shape((t, t), &mut *a).expect("attn");
            general_mat_mul(scale, &q, &k.t(), 0.0, &mut av);
            for row in a.chunks_exact_mut(t) {
                softmax(row);
            }
            let av = ArrayView2::from_shape((t, t), &*a).expect("attn");
            let mut ov = ArrayViewMut2::from_shape((t, c), &mut o[b * t * c..(b + 1) * t * c]).expect("o");
            general_mat_mul(1.0, &av, &v, 0.0, &mut ov);
        }
        let mut y = self.proj.forward(p, &o, n, hh, ww);
        y.iter_mut().zip(x).for_each(|(a, &v)| *a += v);
        (y, AttentionCache { norm, h, qkv, attn, o })
    }

    /// Backward from `dy`: adds to the gradients in `g`; returns `dx`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        cache: &AttentionCache,
        n: usize,
        hh: usize,
        ww: usize,
        dy: &[f32],
    ) -> Vec<f32> {
        let c = self.c;
        let t = hh * ww;
        let scale = 1.0 / (c as f32).sqrt();
        let mut d_o = vec![0.0f32; n * t * c];
        self.proj.backward(p, g, &cache.o, n, hh, ww, dy, Some(&mut d_o));
        let mut dqkv = vec![0.0f32; n * t * 3 * c];
        let mut da = vec![0.0f32; t * t];
        for b in 0..n {
            let m = ArrayView2::from_shape((t, 3 * c), &cache.qkv[b * t * 3 * c..(b + 1) * t * 3 * c]).expect("qkv");
            let q = m.slice(ndarray::s![.., 0..c]);
            let k = m.slice(ndarray::s![.., c..2 * c]);
            let v = m.slice(ndarray::s![.., 2 * c..3 * c]);
            let a = &cache.attn[b * t * t..(b + 1) * t * t];
            let av = ArrayView2::from_shape((t, t), a).expect("attn");
            let dob = ArrayView2::from_shape((t, c), &d_o[b * t * c..(b + 1) * t * c]).expect("do");
            let mut dm =
                ArrayViewMut2::from_shape((t, 3 * c), &mut dqkv[b * t * 3 * c..(b + 1) * t * 3 * c]).expect("dqkv");
            // dv = A^T do; dA = do v^T
            general_mat_mul(1.0, &av.t(), &dob, 0.0, &mut dm.slice_mut(ndarray::s![.., 2 * c..3 * c]));
            let mut dav = ArrayViewMut2::from_shape((t, t), &mut da[..]).expect("da");
            general_mat_mul(1.0, &dob, &v.t(), 0.0, &mut dav);
            // through the softmax: dS = A (dA - rowsum(A dA)), then the scale
            for (drow, arow) in da.chunks_exact_mut(t).zip(a.chunks_exact(t)) {
                let dot: f32 = drow.iter().zip(arow).map(|(d, a)| d * a).sum();
                drow.iter_mut().zip(arow).for_each(|(d, &a)| *d = a * (*d - dot) * scale);
            }
            let ds = ArrayView2::from_shape((t, t), &da[..]).expect("ds");
            // dq = dS k; dk = dS^T q
            general_mat_mul(1.0, &ds, &k, 0.0, &mut dm.slice_mut(ndarray::s![.., 0..c]));
            general_mat_mul(1.0, &ds.t(), &q, 0.0, &mut dm.slice_mut(ndarray::s![.., c..2 * c]));
        }
        let mut dh = vec![0.0f32; n * t * c];
        self.qkv.backward(p, g, &cache.h, n, hh, ww, &dqkv, Some(&mut dh));
        let mut dx = self.norm.backward(p, g, &cache.norm, n, &dh);
        dx.iter_mut().zip(dy).for_each(|(a, &v)| *a += v);
        dx
    }
}

/// The softmax of a row in place (the maximum subtracted first).
fn softmax(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// VDM's Fourier features of the input (Kingma et al., 2021, appendix C: `sin(2^e 2 pi x)` and
/// `cos(2^e 2 pi x)` for each channel and exponent `e`), appended to the input's channels:
/// `[x, sin(w_0 x_0), sin(w_1 x_0), .., sin(w_last x_last), cos(..)]` (channel-major, as VDM's
/// `Base2FourierFeatures`).
pub fn fourier(x: &[f32], c: usize, exponents: &[i32]) -> Vec<f32> {
    let f = exponents.len();
    let cw = c * (1 + 2 * f);
    let ws: Vec<f32> = exponents.iter().map(|&e| fourier_frequency(e)).collect();
    let mut y = vec![0.0f32; x.len() / c * cw];
    for (row, out) in x.chunks_exact(c).zip(y.chunks_exact_mut(cw)) {
        out[..c].copy_from_slice(row);
        for (ci, &v) in row.iter().enumerate() {
            for (k, &w) in ws.iter().enumerate() {
                let a = v * w;
                out[c + ci * f + k] = a.sin();
                out[c + c * f + ci * f + k] = a.cos();
            }
        }
    }
    y
}

/// The angular frequency `2^e 2 pi` of [`fourier`], in f32.
pub fn fourier_frequency(e: i32) -> f32 {
    (2f64.powi(e) * 2.0 * std::f64::consts::PI) as f32
}

/// The gradient of `x` from that of [`fourier`]'s output.
pub fn fourier_backward(x: &[f32], c: usize, exponents: &[i32], dy: &[f32]) -> Vec<f32> {
    let f = exponents.len();
    let cw = c * (1 + 2 * f);
    let ws: Vec<f32> = exponents.iter().map(|&e| fourier_frequency(e)).collect();
    let mut dx = vec![0.0f32; x.len()];
    for ((row, d), dout) in x.chunks_exact(c).zip(dx.chunks_exact_mut(c)).zip(dy.chunks_exact(cw)) {
        for (ci, &v) in row.iter().enumerate() {
            let mut acc = dout[ci];
            for (k, &w) in ws.iter().enumerate() {
                let a = v * w;
                acc += dout[c + ci * f + k] * w * a.cos() - dout[c + c * f + ci * f + k] * w * a.sin();
            }
            d[ci] = acc;
        }
    }
    dx
}
