//! The MLP family: a denoiser on `[x, emb(t) (+ emb(class))]` with SiLU activations.
//!
//! - Time embedding: improved-diffusion's sinusoidal embedding of a time `tau`
//!   ([`elbo_core::mlp::time_embedding`], shared with the device network): the 0-based timestep
//!   `t - 1` of discrete models ([`discrete_tau`]), `1000 t` of continuous-time ones
//!   ([`continuous_tau`]).
//! - Class conditioning: a learned table of `classes + 1` rows (the last is the null class of
//!   classifier-free guidance) added to the time embedding.
//! - Parameters live in one flat `Vec<f32>` (the optimizer, EMA and checkpoints see one vector);
//!   layer `i` has weight `[in, out]` (row-major) and bias `[out]`.
//!
//! Forward and backward run on fixed chunks of [`CHUNK`] rows, in parallel with rayon; chunk
//! gradients are summed in chunk order, so the result does not depend on the number of threads.

use elbo_core::mlp::{Layer, Shape};
use ndarray::{Array2, Axis, s};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::gemm::{gemm, gemm_new};
use super::{CHUNK, Grads, sigmoid};

/// The architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Data dimension `D`.
    pub dim: usize,
    /// Hidden width.
    pub width: usize,
    /// Number of hidden layers.
    pub depth: usize,
    /// Time embedding size `E` (even).
    pub embed: usize,
    /// Number of classes (0: unconditional).
    pub classes: usize,
    /// Output size (`D`).
    pub out: usize,
}

impl MlpConfig {
    /// The layout's definition: the core's [`Shape`].
    pub fn shape(&self) -> Shape {
        Shape {
            dim: self.dim,
            width: self.width,
            depth: self.depth,
            embed: self.embed,
            classes: self.classes,
            out: self.out,
        }
    }

    /// The number of parameters, or `None` if it overflows `usize`.
    pub fn checked_n_params(&self) -> Option<usize> {
        self.shape().checked_n_params()
    }
}

/// The network: configuration and parameter layout.
#[derive(Debug, Clone)]
pub struct Mlp {
    cfg: MlpConfig,
    layers: Vec<Layer>,
    class_table: Option<usize>,
    n_params: usize,
    /// The time embedding of the whole-number times `0 .. MAX_STEPS` (made on first use).
    embeddings: std::sync::OnceLock<Vec<f32>>,
}

/// One chunk's inputs.
pub struct Batch<'a> {
    /// `rows x D` inputs.
    pub x: &'a [f32],
    /// Embedding times `tau`.
    pub t: &'a [f32],
    /// Class labels (`classes` is the null class); `None` for unconditional models.
    pub labels: Option<&'a [u32]>,
}

impl Mlp {
    /// Lays out the parameters of `cfg`.
    /// (The sizes must have been validated: see [`crate::checkpoint::ModelConfig::validate`].)
    pub fn new(cfg: MlpConfig) -> Self {
        let shape = cfg.shape();
        let layers = shape.layers().collect();
        let class_table = shape.class_table();
        Mlp { n_params: shape.n_params(), cfg, layers, class_table, embeddings: std::sync::OnceLock::new() }
    }

    /// The configuration.
    pub fn config(&self) -> &MlpConfig {
        &self.cfg
    }

    /// The number of parameters.
    pub fn n_params(&self) -> usize {
        self.n_params
    }

    /// Names, shapes and offsets of the parameter tensors (for checkpoints and export).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, usize)> {
        let mut v = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            v.push((format!("layers.{i}.weight"), vec![l.n_in, l.n_out], l.weight));
            v.push((format!("layers.{i}.bias"), vec![l.n_out], l.bias));
        }
        if let Some(o) = self.class_table {
            v.push(("class_embedding".into(), vec![self.cfg.classes + 1, self.cfg.embed], o));
        }
        v
    }

    /// He-uniform weights (bound `sqrt(6 / fan_in)` for hidden layers, `sqrt(1 / fan_in)` for
    /// the output), zero biases, N(0, 1) class embeddings; all from `rng`.
    pub fn init(&self, rng: &mut rand_pcg::Pcg32) -> Vec<f32> {
        let mut p = vec![0.0f32; self.n_params];
        for (i, l) in self.layers.iter().enumerate() {
            let gain = if i + 1 == self.layers.len() { 1.0 } else { 6.0 };
            let bound = (gain / l.n_in as f32).sqrt();
            for w in &mut p[l.weight..l.weight + l.n_in * l.n_out] {
                *w = (2.0 * elbo_core::rng::uniform_f32(rng) - 1.0) * bound;
            }
        }
        if let Some(o) = self.class_table {
            elbo_core::rng::fill_standard_normal(rng, &mut p[o..o + (self.cfg.classes + 1) * self.cfg.embed]);
        }
        p
    }

    /// The input matrix `[x, emb(t) + emb(class)]` of a chunk. Whole-number times below
    /// [`crate::MAX_STEPS`] (every discrete model's) read a table of the same embedding; any
    /// other time is embedded once for a run of rows that share it (a batch at one fractional
    /// level: Karras sigmas, the ODE).
    fn input(&self, params: &[f32], b: &Batch<'_>) -> Array2<f32> {
        let (d, e) = (self.cfg.dim, self.cfg.embed);
        let rows = b.t.len();
        let table = self.embeddings.get_or_init(|| {
            let mut v = vec![0.0f32; crate::MAX_STEPS * e];
            for (k, row) in v.chunks_exact_mut(e.max(1)).enumerate() {
                elbo_core::mlp::time_embedding(k as f32, row);
            }
            v
        });
        let mut h = Array2::<f32>::zeros((rows, d + e));
        let mut last = (f32::NAN, vec![0.0f32; e]);
        for (r, mut row) in h.axis_iter_mut(Axis(0)).enumerate() {
            let row = row.as_slice_mut().expect("standard layout");
            row[..d].copy_from_slice(&b.x[r * d..(r + 1) * d]);
            let tau = b.t[r];
            if tau >= 0.0 && tau.fract() == 0.0 && (tau as usize) < crate::MAX_STEPS {
                let k = tau as usize;
                row[d..d + e].copy_from_slice(&table[k * e..(k + 1) * e]);
            } else {
                if tau.to_bits() != last.0.to_bits() {
                    elbo_core::mlp::time_embedding(tau, &mut last.1);
                    last.0 = tau;
                }
                row[d..d + e].copy_from_slice(&last.1);
            }
            if let (Some(o), Some(labels)) = (self.class_table, b.labels) {
                let c = labels[r] as usize;
                for (v, &p) in row[d..d + e].iter_mut().zip(&params[o + c * e..o + (c + 1) * e]) {
                    *v += p;
                }
            }
        }
        h
    }

    /// Forward pass of one chunk; returns the output, and for training (`keep`) the
    /// activations backward needs: the input of every layer and `SiLU'` at each hidden
    /// pre-activation. Bias, activation and its derivative are one pass over the layer.
    fn forward_chunk(
        &self,
        params: &[f32],
        b: &Batch<'_>,
        keep: bool,
    ) -> (Array2<f32>, Vec<Array2<f32>>, Vec<Array2<f32>>) {
        let mut h = self.input(params, b);
        let rows = h.nrows();
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut slopes = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let hs = h.as_slice().expect("standard layout");
            let w = &params[l.weight..l.weight + l.n_in * l.n_out];
            let mut z = Array2::from_shape_vec((rows, l.n_out), gemm_new(rows, l.n_in, l.n_out, hs, false, w, false))
                .expect("the product's shape");
            let bias = &params[l.bias..l.bias + l.n_out];
            let last = i + 1 == self.layers.len();
            let zs = z.as_slice_mut().expect("standard layout");
            if last {
                for row in zs.chunks_exact_mut(l.n_out) {
                    row.iter_mut().zip(bias).for_each(|(v, &bb)| *v += bb);
                }
            } else if keep {
                let mut slope = Array2::<f32>::zeros((rows, l.n_out));
                bias_silu(zs, Some(slope.as_slice_mut().expect("standard layout")), bias);
                slopes.push(slope);
            } else {
                bias_silu(zs, None, bias);
            }
            if keep {
                inputs.push(h);
            }
            if last {
                return (z, inputs, slopes);
            }
            h = z;
        }
        unreachable!("the network has an output layer")
    }

    /// Forward pass of `rows` examples (`x` is `rows x D`), in parallel over chunks; writes
    /// `rows x out` into `out`.
    pub fn forward(&self, params: &[f32], x: &[f32], t: &[f32], labels: Option<&[u32]>, out: &mut [f32]) {
        let (d, o) = (self.cfg.dim, self.cfg.out);
        out.par_chunks_mut(CHUNK * o).enumerate().for_each(|(c, out_chunk)| {
            let r0 = c * CHUNK;
            let rows = out_chunk.len() / o;
            let b = Batch {
                x: &x[r0 * d..(r0 + rows) * d],
                t: &t[r0..r0 + rows],
                labels: labels.map(|l| &l[r0..r0 + rows]),
            };
            let (y, _, _) = self.forward_chunk(params, &b, false);
            out_chunk.copy_from_slice(y.as_slice().expect("standard layout"));
        });
    }

    /// Forward and backward over a batch. `loss_grad(first_row, outputs, grad)` receives each
    /// chunk's outputs (`rows x out`) and writes `d loss / d output` into `grad`, returning the
    /// chunk's loss sum. Returns the total loss and the gradient with respect to the parameters,
    /// summed over chunks in chunk order.
    pub fn loss_and_grad<F>(
        &self,
        params: &[f32],
        x: &[f32],
        t: &[f32],
        labels: Option<&[u32]>,
        loss_grad: F,
    ) -> (f64, Vec<f32>)
    where
        F: Fn(usize, &[f32], &mut [f32]) -> f64 + Sync,
    {
        let g = self.loss_and_grads(params, x, t, labels, false, loss_grad);
        (g.loss, g.params)
    }

    /// [`loss_and_grad`](Self::loss_and_grad), with the gradient with respect to the inputs `x`
    /// too when `want_input` (for classifier guidance, learned schedules and VAEs).
    pub fn loss_and_grads<F>(
        &self,
        params: &[f32],
        x: &[f32],
        t: &[f32],
        labels: Option<&[u32]>,
        want_input: bool,
        loss_grad: F,
    ) -> Grads
    where
        F: Fn(usize, &[f32], &mut [f32]) -> f64 + Sync,
    {
        let (d, o) = (self.cfg.dim, self.cfg.out);
        let n = t.len();
        let n_chunks = n.div_ceil(CHUNK);
        // one gradient buffer per chunk, summed in chunk order afterwards
        let mut grads = vec![0.0f32; n_chunks * self.n_params];
        let chunks: Vec<(f64, Option<Array2<f32>>)> = grads
            .par_chunks_mut(self.n_params.max(1))
            .enumerate()
            .map(|(c, g)| {
                let r0 = c * CHUNK;
                let rows = CHUNK.min(n - r0);
                let b = Batch {
                    x: &x[r0 * d..(r0 + rows) * d],
                    t: &t[r0..r0 + rows],
                    labels: labels.map(|l| &l[r0..r0 + rows]),
                };
                let (y, inputs, slopes) = self.forward_chunk(params, &b, true);
                let mut dy = Array2::<f32>::zeros((rows, o));
                let loss =
                    loss_grad(r0, y.as_slice().expect("standard layout"), dy.as_slice_mut().expect("standard layout"));
                let dx = self.backward_chunk(params, &b, dy, &inputs, &slopes, want_input, g);
                (loss, dx)
            })
            .collect();
        let grad = super::sum_chunk_gradients(&grads, self.n_params, n_chunks);
        let mut loss = 0.0;
        let mut input = want_input.then(|| Vec::with_capacity(n * d));
        for (l, dx) in chunks {
            loss += l;
            if let (Some(v), Some(dx)) = (&mut input, dx) {
                v.extend(dx.slice(s![.., ..d]).iter());
            }
        }
        Grads { loss, params: grad, input }
    }

    /// Backward pass of one chunk: writes the chunk's parameter gradient into `g` (zeroed) and
    /// returns the gradient with respect to the input matrix when asked.
    #[allow(clippy::too_many_arguments)]
    fn backward_chunk(
        &self,
        params: &[f32],
        b: &Batch<'_>,
        mut dy: Array2<f32>,
        inputs: &[Array2<f32>],
        slopes: &[Array2<f32>],
        want_input: bool,
        g: &mut [f32],
    ) -> Option<Array2<f32>> {
        for i in (0..self.layers.len()).rev() {
            let l = &self.layers[i];
            if i + 1 < self.layers.len() {
                // through the SiLU of this layer's output
                dy.zip_mut_with(&slopes[i], |d, &s| *d *= s);
            }
            let rows = dy.nrows();
            let (xs, ds) = (inputs[i].as_slice().expect("standard layout"), dy.as_slice().expect("standard layout"));
            gemm(l.n_in, rows, l.n_out, xs, true, ds, false, 0.0, &mut g[l.weight..l.weight + l.n_in * l.n_out]);
            let db = &mut g[l.bias..l.bias + l.n_out];
            for row in dy.as_slice().expect("standard layout").chunks_exact(l.n_out) {
                db.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
            if i > 0 || self.class_table.is_some() || want_input {
                let w = &params[l.weight..l.weight + l.n_in * l.n_out];
                let prev = gemm_new(rows, l.n_out, l.n_in, dy.as_slice().expect("standard layout"), false, w, true);
                dy = Array2::from_shape_vec((rows, l.n_in), prev).expect("the product's shape");
            }
        }
        if let (Some(o), Some(labels)) = (self.class_table, b.labels) {
            let (d, e) = (self.cfg.dim, self.cfg.embed);
            let demb = dy.slice(s![.., d..d + e]);
            for (r, row) in demb.axis_iter(Axis(0)).enumerate() {
                let c = labels[r] as usize;
                for (k, &v) in row.iter().enumerate() {
                    g[o + c * e + k] += v;
                }
            }
        }
        want_input.then_some(dy)
    }
}

/// Adds `bias` to every row of `z` and applies SiLU in place; with `slope`, writes `SiLU'`
/// at each pre-activation there. Compiled for the CPU's widest vectors, chosen at run time
/// (the same operations in every version: results do not depend on the CPU).
#[multiversion::multiversion(targets("x86_64+avx2+fma", "x86_64+avx", "aarch64+neon"))]
fn bias_silu(z: &mut [f32], slope: Option<&mut [f32]>, bias: &[f32]) {
    let w = bias.len();
    match slope {
        Some(ds) => {
            for (row, drow) in z.chunks_exact_mut(w).zip(ds.chunks_exact_mut(w)) {
                for ((v, dv), &bb) in row.iter_mut().zip(drow.iter_mut()).zip(bias) {
                    let zz = *v + bb;
                    let sg = sigmoid(zz);
                    *v = zz * sg;
                    *dv = sg * (1.0 + zz * (1.0 - sg));
                }
            }
        }
        None => {
            for row in z.chunks_exact_mut(w) {
                for (v, &bb) in row.iter_mut().zip(bias) {
                    let zz = *v + bb;
                    *v = zz * sigmoid(zz);
                }
            }
        }
    }
}

impl crate::network::Network for Mlp {
    fn dim(&self) -> usize {
        self.cfg.dim
    }

    fn out(&self) -> usize {
        self.cfg.out
    }

    fn classes(&self) -> usize {
        self.cfg.classes
    }

    fn n_params(&self) -> usize {
        self.n_params
    }

    fn tensors(&self) -> Vec<(String, Vec<usize>, usize)> {
        Mlp::tensors(self)
    }

    fn init(&self, rng: &mut rand_pcg::Pcg32) -> Vec<f32> {
        Mlp::init(self, rng)
    }

    fn forward(&self, params: &[f32], x: &[f32], tau: &[f32], labels: Option<&[u32]>, out: &mut [f32]) {
        Mlp::forward(self, params, x, tau, labels, out);
    }

    fn loss_and_grads(
        &self,
        params: &[f32],
        x: &[f32],
        tau: &[f32],
        labels: Option<&[u32]>,
        want_input: bool,
        loss_grad: crate::network::LossGrad<'_>,
    ) -> Grads {
        Mlp::loss_and_grads(self, params, x, tau, labels, want_input, loss_grad)
    }

    fn onnx_graph(&self, params: &[f32], time: crate::network::TimeInput) -> Option<crate::network::OnnxGraph> {
        Some(crate::onnx::export::mlp_graph(&self.cfg.shape(), params, time))
    }

    fn device_shape(&self) -> Option<Shape> {
        Some(self.cfg.shape())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    fn net(classes: usize) -> Mlp {
        Mlp::new(MlpConfig { dim: 2, width: 8, depth: 2, embed: 6, classes, out: 2 })
    }

    /// Backpropagation against central finite differences (in f64 of the f32 loss, with a
    /// step of 1e-2 on a quadratic loss; agreement to 2e-2 relative is what f32 allows).
    #[test]
    fn gradient_matches_finite_differences() {
        for classes in [0, 3] {
            let m = net(classes);
            let mut rng = rand_pcg::Pcg32::seed_from_u64(1);
            let p = m.init(&mut rng);
            let x = [0.3f32, -0.5, 1.2, 0.7, -0.1, 0.4];
            let t = [0.0f32, 499.0, 998.0];
            let labels = [0u32, 3, 2];
            let lab = (classes > 0).then_some(&labels[..]);
            let target = [0.1f32, 0.2, -0.3, 0.4, 0.5, -0.6];
            let lg = |r0: usize, y: &[f32], g: &mut [f32]| {
                let mut l = 0.0;
                for (i, (&v, gg)) in y.iter().zip(g.iter_mut()).enumerate() {
                    let d = v - target[r0 * 2 + i];
                    l += f64::from(d * d);
                    *gg = 2.0 * d;
                }
                l
            };
            let (_, g) = m.loss_and_grad(&p, &x, &t, lab, lg);
            let loss = |p: &[f32]| m.loss_and_grad(p, &x, &t, lab, lg).0;
            for k in (0..m.n_params()).step_by(7) {
                let h = 1e-2f32;
                let (mut pp, mut pm) = (p.clone(), p.clone());
                pp[k] += h;
                pm[k] -= h;
                let fd = (loss(&pp) - loss(&pm)) / (2.0 * f64::from(h));
                let an = f64::from(g[k]);
                assert!((fd - an).abs() <= 2e-2 * an.abs().max(fd.abs()).max(1e-2), "param {k}: {an} vs {fd}");
            }
        }
    }

    /// The input gradient against central finite differences in `x` (f32 forward passes).
    #[test]
    fn input_gradient_matches_finite_differences() {
        for classes in [0, 3] {
            let m = net(classes);
            let p = m.init(&mut rand_pcg::Pcg32::seed_from_u64(3));
            let x = [0.3f32, -0.5, 1.2, 0.7, -0.1, 0.4];
            let t = [0.0f32, 499.0, 998.0];
            let labels = [0u32, 3, 2];
            let lab = (classes > 0).then_some(&labels[..]);
            let w = [0.7f32, -1.1, 0.4, 0.9, -0.3, 1.5];
            let lg = |r0: usize, y: &[f32], g: &mut [f32]| {
                g.copy_from_slice(&w[r0 * 2..r0 * 2 + y.len()]);
                y.iter().zip(g.iter()).map(|(a, b)| f64::from(a * b)).sum()
            };
            let dx = m.loss_and_grads(&p, &x, &t, lab, true, lg).input.unwrap();
            for k in 0..x.len() {
                let h = 1e-2f32;
                let (mut xp, mut xm) = (x, x);
                xp[k] += h;
                xm[k] -= h;
                let fd = (m.loss_and_grad(&p, &xp, &t, lab, lg).0 - m.loss_and_grad(&p, &xm, &t, lab, lg).0)
                    / (2.0 * f64::from(h));
                let an = f64::from(dx[k]);
                assert!((fd - an).abs() <= 1e-2 * an.abs().max(fd.abs()).max(1e-2), "x[{k}]: {an} vs {fd}");
            }
        }
    }

    /// The same results with 1 and 3 threads, bit for bit.
    #[test]
    fn results_do_not_depend_on_threads() {
        let m = Mlp::new(MlpConfig { dim: 2, width: 32, depth: 3, embed: 16, classes: 0, out: 2 });
        let p = m.init(&mut rand_pcg::Pcg32::seed_from_u64(2));
        let n = 300;
        let x: Vec<f32> = (0..2 * n).map(|i| (i as f32 * 0.37).sin()).collect();
        let t: Vec<f32> = (0..n).map(|i| ((i * 7) % 1000) as f32).collect();
        let lg = |_: usize, y: &[f32], g: &mut [f32]| {
            g.copy_from_slice(y);
            y.iter().map(|v| f64::from(v * v)).sum()
        };
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| m.loss_and_grad(&p, &x, &t, None, lg))
        };
        let (l1, g1) = run(1);
        let (l3, g3) = run(3);
        assert_eq!(l1.to_bits(), l3.to_bits());
        assert!(g1.iter().zip(&g3).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
