//! The exact log-likelihood of a denoiser's probability-flow ODE (Song et al. 2021,
//! "Score-Based Generative Modeling through Stochastic Differential Equations", Sec. 4.3 and
//! App. D.2; seed 004's score-based section; score_sde's `likelihood.py`).
//!
//! In the variance-exploding coordinates `x_sigma = x_t / sqrt(abar) = x_0 + sigma eps` the
//! marginals are the data convolved with `N(0, sigma^2)` whatever the schedule, and the
//! probability-flow ODE is `dx_sigma / dsigma = -sigma grad log p_sigma = (x_sigma - D) / sigma`
//! (Karras et al. 2022, eq. 3), `D` the denoiser's data prediction. The solver carries the VP
//! sample `x = x_sigma / c`, `c = sqrt(1 + sigma^2)` (the model's input, of order 1 all the way:
//! in `x_sigma`, which grows to `sigma_T`, RK45 needs about twice the evaluations for the same
//! tolerance), in `u = ln sigma`: `dx/du = x / c^2 - D / c`, whose divergence is
//! `D / c^2 - tr(dD/dx) / c` (`D` the dimension). The instantaneous change of variables
//! (Chen et al. 2018) gives
//!
//! `ln p_0(x(u_0)) = ln N(x(u_1); 0, I) + int_{u_0}^{u_1} div du`,
//!
//! integrated from the data at `sigma_0` (the schedule's first level; `x(u_0) = x_data / c_0`,
//! which adds `D ln c_0` to the NLL) to the last level, where the VP marginal is taken as the
//! prior `N(0, I)` (the same approximation as the bound's prior term).
//!
//! The divergence comes from Jacobian-vector products by central differences of the model
//! (step `2^-9` on the model's input): exactly (`D` products, one per coordinate) or by
//! Hutchinson's estimator with `K` Rademacher probes per example, fixed over the solve (as
//! score_sde). A batch is one ODE system solved by the Dormand-Prince pair RK45 with scipy's
//! step control (`rtol`, `atol`); every evaluation of the field calls the model once, on the
//! batch and all its perturbed copies. Discrete data (`K` levels) are dequantised uniformly
//! within their bins: `-ln P(x) <= -ln p(x + u) - D ln(bin width)`.

use elbo_core::denoiser::{Condition, Denoiser};
use elbo_core::param::to_x0_eps;
use elbo_core::rng::{Counter, Noise, domain};
use elbo_core::sampler::{Level, sigma_to_t, table_sigma};
use elbo_core::{NoiseSchedule, RunError};

use crate::error::{Result, input};

/// How the ODE's likelihood is computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OdeOptions {
    /// The solver's relative tolerance.
    pub rtol: f64,
    /// Its absolute tolerance.
    pub atol: f64,
    /// Hutchinson's probes per example (`None`: the exact divergence).
    pub probes: Option<usize>,
    /// The examples of one ODE system.
    pub batch: usize,
    /// The data's levels (uniform dequantisation), if discrete; and the bin width in the
    /// model's space.
    pub bins: Option<(u32, f64)>,
}

/// The result of [`nll`].
#[derive(Debug, Clone, PartialEq)]
pub struct OdeNll {
    /// `-ln p` of each example (nats, in the model's space; for discrete data the dequantised
    /// bound on `-ln P`).
    pub per_example: Vec<f64>,
    /// Evaluations of the field (model calls), summed over the batches.
    pub nfe: u64,
}

/// Central-difference step on the model's input.
const FD_STEP: f64 = 1.0 / 512.0;

/// The field `v` and its divergence at `u = ln sigma` for a batch of `n` examples: what every
/// stage of the solver evaluates.
struct Field<'a, D: Denoiser> {
    den: &'a mut D,
    schedule: &'a dyn NoiseSchedule,
    dim: usize,
    n: usize,
    /// Rademacher probes (`k` per example), or none for the exact divergence.
    probes: Option<(usize, Vec<f32>)>,
    input: Vec<f32>,
    out: Vec<f32>,
    calls: u64,
}

impl<D: Denoiser> Field<'_, D>
where
    D::Error: std::fmt::Display + 'static,
{
    /// `y = [x_sigma (n D values), accumulated divergence (n)]`; writes `dy/du` into `dy`.
    fn eval(&mut self, u: f64, y: &[f64], dy: &mut [f64]) -> Result<()> {
        let (n, d) = (self.n, self.dim);
        let sigma = u.exp();
        let timestep = sigma_to_t(self.schedule, sigma).map_err(|e| crate::error::flag("--likelihood ode", e))?;
        let level = Level { sigma, timestep }.noise_level(self.schedule.steps());
        let c = Level { sigma, timestep }.scale();
        let (a, s) = (level.sqrt_abar, level.sqrt_one_minus_abar);
        // the copies: the batch, then per example its +h and -h perturbations along each
        // direction (the coordinates, or the probes)
        let dirs = self.probes.as_ref().map_or(d, |p| p.0);
        let copies = 1 + 2 * dirs;
        self.input.resize(copies * n * d, 0.0);
        let (base, rest) = self.input.split_at_mut(n * d);
        for (b, &v) in base.iter_mut().zip(&y[..n * d]) {
            *b = v as f32;
        }
        for i in 0..n {
            let vp = &base[i * d..(i + 1) * d];
            for k in 0..dirs {
                for (sign, slot) in [(1.0f32, 2 * k), (-1.0, 2 * k + 1)] {
                    let row = &mut rest[(slot * n + i) * d..(slot * n + i + 1) * d];
                    row.copy_from_slice(vp);
                    match &self.probes {
                        None => row[k] += sign * FD_STEP as f32,
                        Some((_, p)) => {
                            let e = &p[(i * dirs + k) * d..(i * dirs + k + 1) * d];
                            row.iter_mut().zip(e).for_each(|(r, &ev)| *r += sign * FD_STEP as f32 * ev);
                        }
                    }
                }
            }
        }
        self.out.resize(self.input.len(), 0.0);
        self.den
            .predict(&self.input, level, Condition::Unconditional, &mut self.out)
            .map_err(|e| crate::error::run_error(RunError::Model(e)))?;
        self.calls += 1;
        // the data predictions D of every copy, in place of the model's outputs
        let kind = self.den.prediction();
        for (o, &xv) in self.out.iter_mut().zip(&self.input) {
            *o = to_x0_eps(kind, *o, xv, a, s).0;
        }
        let x0 = |row: usize, j: usize| -> f64 { f64::from(self.out[row * d + j]) };
        for i in 0..n {
            // dx/du = x / c^2 - D / c
            for j in 0..d {
                dy[i * d + j] = y[i * d + j] / (c * c) - x0(i, j) / c;
            }
            // div_x D = (1/c) sum over directions of e . (D(+h e) - D(-h e)) / 2h
            let mut tr = 0.0;
            for k in 0..dirs {
                let (p, m) = ((1 + 2 * k) * n + i, (2 + 2 * k) * n + i);
                match &self.probes {
                    None => tr += (x0(p, k) - x0(m, k)) / (2.0 * FD_STEP),
                    Some((_, pr)) => {
                        let e = &pr[(i * dirs + k) * d..(i * dirs + k + 1) * d];
                        let dot: f64 = (0..d).map(|j| f64::from(e[j]) * (x0(p, j) - x0(m, j))).sum();
                        tr += dot / (2.0 * FD_STEP);
                    }
                }
            }
            // Hutchinson's estimate is the mean over the probes
            let trace = if self.probes.is_some() { tr / dirs as f64 } else { tr };
            dy[n * d + i] = d as f64 / (c * c) - trace / c;
        }
        Ok(())
    }
}

/// The Dormand-Prince 5(4) tableau (Dormand & Prince 1980): the nodes, the stages' weights,
/// the fifth-order weights (the last stage's row, FSAL) and the error weights (fifth minus
/// fourth order), as scipy's `RK45` uses them.
const C: [f64; 6] = [0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0];
const A: [[f64; 5]; 6] = [
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [1.0 / 5.0, 0.0, 0.0, 0.0, 0.0],
    [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0],
    [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0],
    [19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0, 0.0],
    [9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0],
];
const B: [f64; 6] = [35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0];
const E: [f64; 7] =
    [-71.0 / 57600.0, 0.0, 71.0 / 16695.0, -71.0 / 1920.0, 17253.0 / 339200.0, -22.0 / 525.0, 1.0 / 40.0];

/// scipy's step-size control constants.
const SAFETY: f64 = 0.9;
const MIN_FACTOR: f64 = 0.2;
const MAX_FACTOR: f64 = 10.0;

fn rms(v: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for x in v {
        s += x * x;
        n += 1;
    }
    (s / n.max(1) as f64).sqrt()
}

/// Integrates `dy/du = f(u, y)` from `u0` to `u1` in place (scipy's `RK45` with its initial
/// step selection); `f` counts its own calls.
fn rk45<F: FnMut(f64, &[f64], &mut [f64]) -> Result<()>>(
    mut f: F,
    u0: f64,
    u1: f64,
    y: &mut [f64],
    rtol: f64,
    atol: f64,
    accepted: &mut dyn FnMut(f64),
) -> Result<()> {
    let m = y.len();
    let mut k: Vec<Vec<f64>> = vec![vec![0.0; m]; 7];
    let mut stage = vec![0.0; m];
    f(u0, y, &mut k[0])?;
    // scipy's select_initial_step
    let span = u1 - u0;
    let scale0: Vec<f64> = y.iter().map(|v| atol + v.abs() * rtol).collect();
    let d0 = rms(y.iter().zip(&scale0).map(|(v, s)| v / s));
    let d1 = rms(k[0].iter().zip(&scale0).map(|(v, s)| v / s));
    let h0 = if d0 < 1e-5 || d1 < 1e-5 { 1e-6 } else { 0.01 * d0 / d1 };
    for ((st, &yv), &kv) in stage.iter_mut().zip(y.iter()).zip(&k[0]) {
        *st = yv + h0 * kv;
    }
    f(u0 + h0, &stage, &mut k[1])?;
    let d2 = rms(k[1].iter().zip(&k[0]).zip(&scale0).map(|((a, b), s)| (a - b) / s)) / h0;
    let h1 = if d1 <= 1e-15 && d2 <= 1e-15 { (h0 * 1e-3).max(1e-6) } else { (0.01 / d1.max(d2)).powf(1.0 / 5.0) };
    let mut h = (100.0 * h0).min(h1).min(span);
    let mut u = u0;
    let mut y_new = vec![0.0; m];
    while u < u1 {
        let mut rejected = false;
        loop {
            if h < 1e-12 * span.max(1.0) {
                return Err(input(
                    "--likelihood ode: the solver's step fell below 1e-12 (a model that is not smooth in x?)",
                ));
            }
            let h_now = h.min(u1 - u);
            for s in 1..6 {
                for (j, st) in stage.iter_mut().enumerate() {
                    let mut acc = y[j];
                    for (q, kq) in k.iter().enumerate().take(s) {
                        acc += h_now * A[s][q] * kq[j];
                    }
                    *st = acc;
                }
                f(u + C[s] * h_now, &stage, &mut k[s])?;
            }
            for (j, yn) in y_new.iter_mut().enumerate() {
                let mut acc = y[j];
                for (q, kq) in k.iter().enumerate().take(6) {
                    acc += h_now * B[q] * kq[j];
                }
                *yn = acc;
            }
            f(u + h_now, &y_new, &mut k[6])?;
            let err = rms((0..m).map(|j| {
                let e: f64 = (0..7).map(|q| E[q] * k[q][j]).sum::<f64>() * h_now;
                e / (atol + y[j].abs().max(y_new[j].abs()) * rtol)
            }));
            if !err.is_finite() {
                return Err(input("--likelihood ode: the field is not finite (a broken model?)"));
            }
            if err < 1.0 {
                let mut factor = if err == 0.0 { MAX_FACTOR } else { MAX_FACTOR.min(SAFETY * err.powf(-0.2)) };
                if rejected {
                    factor = factor.min(1.0);
                }
                u += h_now;
                h = h_now * factor;
                y.copy_from_slice(&y_new);
                accepted(u);
                let last = k.pop().expect("seven stages");
                k.insert(0, last);
                break;
            }
            h = h_now * MIN_FACTOR.max(SAFETY * err.powf(-0.2));
            rejected = true;
        }
    }
    Ok(())
}

/// `-ln N(x; 0, v I)` of one example.
fn gaussian_nll(x: &[f64], v: f64) -> f64 {
    let d = x.len() as f64;
    0.5 * (d * (2.0 * std::f64::consts::PI * v).ln() + x.iter().map(|e| e * e).sum::<f64>() / v)
}

/// `-ln p` of every example of `x` (the model's space, `n` rows of the denoiser's dimension)
/// by the probability-flow ODE; `seed` and `offset` (the run's index of the first example) fix
/// the probes and the dequantisation. `progress(done, evaluations)` hears after every accepted
/// step how much of the whole run is done (0 to 1) and the evaluations so far.
pub fn nll<D: Denoiser>(
    den: &mut D,
    schedule: &dyn NoiseSchedule,
    x: &[f32],
    opts: OdeOptions,
    seed: u64,
    offset: u64,
    progress: &mut dyn FnMut(f64, u64),
) -> Result<OdeNll>
where
    D::Error: std::fmt::Display + 'static,
{
    let dim = den.dim();
    let n_all = x.len() / dim.max(1);
    if schedule.steps() < 2 {
        return Err(input("--likelihood ode: needs a schedule of at least 2 steps"));
    }
    if !(opts.rtol > 0.0 && opts.atol > 0.0 && opts.rtol.is_finite() && opts.atol.is_finite()) {
        return Err(input("--rtol, --atol: expected finite numbers > 0"));
    }
    let core = |e| crate::error::flag("--likelihood ode", e);
    let (s0, s1) =
        (table_sigma(schedule, 0).map_err(core)?, table_sigma(schedule, schedule.steps() - 1).map_err(core)?);
    let (u0, u1) = (s0.ln(), s1.ln());
    let mut noise = Counter::new(seed, domain::ODE).at(offset);
    let mut per_example = Vec::with_capacity(n_all);
    let mut nfe = 0;
    for (b, chunk) in x.chunks(opts.batch.max(1) * dim).enumerate() {
        let n = chunk.len() / dim;
        let first = b * opts.batch.max(1);
        // the state: x at sigma_0 (dequantised), then the accumulated divergence
        let mut y: Vec<f64> = chunk.iter().map(|&v| f64::from(v)).collect();
        if let Some((_, width)) = opts.bins {
            let mut z = vec![0.0f32; dim];
            for (i, row) in y.chunks_exact_mut(dim).enumerate() {
                noise.normals(first + i, 1, 0, &mut z);
                for (v, &zi) in row.iter_mut().zip(&z) {
                    // u = Phi(z), uniform on (0, 1): x + width (u - 1/2)
                    let u = 0.5 * libm::erfc(-f64::from(zi) / std::f64::consts::SQRT_2);
                    *v += width * (u - 0.5);
                }
            }
        }
        // the state is the VP sample x_sigma / sqrt(1 + sigma^2)
        let c0 = Level { sigma: s0, timestep: 0.0 }.scale();
        y.iter_mut().for_each(|v| *v /= c0);
        y.resize(n * dim + n, 0.0);
        let probes = opts.probes.map(|k| {
            let mut p = vec![0.0f32; n * k * dim];
            for (i, pi) in p.chunks_exact_mut(k * dim).enumerate() {
                noise.normals(first + i, 0, 0, pi);
                pi.iter_mut().for_each(|v| *v = if *v < 0.0 { -1.0 } else { 1.0 });
            }
            (k, p)
        });
        let mut field = Field { den: &mut *den, schedule, dim, n, probes, input: vec![], out: vec![], calls: 0 };
        let batches = n_all.div_ceil(opts.batch.max(1)) as f64;
        let calls = std::cell::Cell::new(0u64);
        let mut step = |u: f64| progress((b as f64 + (u - u0) / (u1 - u0)) / batches, nfe + calls.get());
        rk45(
            |u, y, dy| {
                let r = field.eval(u, y, dy);
                calls.set(field.calls);
                r
            },
            u0,
            u1,
            &mut y,
            opts.rtol,
            opts.atol,
            &mut step,
        )?;
        nfe += field.calls;
        let prior_var = 1.0;
        for i in 0..n {
            let mut v = gaussian_nll(&y[i * dim..(i + 1) * dim], prior_var) - y[n * dim + i] + dim as f64 * c0.ln();
            if let Some((_, width)) = opts.bins {
                v -= dim as f64 * width.ln();
            }
            per_example.push(v);
        }
    }
    Ok(OdeNll { per_example, nfe })
}
