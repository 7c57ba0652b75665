//! Gaussian mixtures with diagonal covariances, and their Bayes-optimal denoiser.
//!
//! For data `x_0 ~ sum_k w_k N(mu_k, diag(sigma_k^2))` and `x_t = a x_0 + s eps`
//! (`a = sqrt(abar_t)`, `s = sqrt(1 - abar_t)`), the noisy marginal is the mixture
//! `sum_k w_k N(a mu_k, diag(a^2 sigma_k^2 + s^2))`, and the posterior mean of `x_0` is exact:
//! `E[x_0 | x_t] = sum_k r_k(x_t) (mu_k + a sigma_k^2 / (a^2 sigma_k^2 + s^2) (x_t - a mu_k))`
//! with responsibilities `r_k(x_t) = p(k | x_t)`. This is the minimiser of every weighting of
//! the diffusion loss (seed 004 eq. 99), so the ELBO it gives is the tightest a denoiser of
//! this schedule can reach, and the score it implies is exact (Tweedie, eq. 133).
//!
//! Component labels double as classes: conditioned on class `k` the denoiser is the exact one
//! of component `k`, and `p(k | x_t)` is the exact noise-conditional classifier.

use rand_core::Rng;

use crate::denoiser::{Classifier, Condition, Denoiser, NoiseLevel};
use crate::error::{Error, Result, check_len};
use crate::gaussian::LN_2PI;
use crate::param::Prediction;
use crate::rng::{standard_normal, uniform_f64};

/// A mixture of `K` diagonal Gaussians in `D` dimensions, borrowing its parameters
/// (`means` and `stds` are `K x D`, row-major).
#[derive(Debug, Clone, Copy)]
pub struct GaussianMixture<'a> {
    dim: usize,
    weights: &'a [f32],
    means: &'a [f32],
    stds: &'a [f32],
    log_total_weight: f64,
}

impl<'a> GaussianMixture<'a> {
    /// Validates: at least one component, positive finite weights (normalised here), finite
    /// means, positive finite standard deviations, `K x D` shapes.
    pub fn new(dim: usize, weights: &'a [f32], means: &'a [f32], stds: &'a [f32]) -> Result<Self> {
        if dim == 0 || weights.is_empty() {
            return Err(Error::InvalidParameter { name: "mixture", reason: "at least one component and dimension" });
        }
        check_len(weights.len() * dim, means.len())?;
        check_len(weights.len() * dim, stds.len())?;
        if !weights.iter().all(|w| w.is_finite() && *w > 0.0) {
            return Err(Error::InvalidParameter { name: "weights", reason: "positive finite values" });
        }
        if !means.iter().all(|m| m.is_finite()) {
            return Err(Error::InvalidParameter { name: "means", reason: "finite values" });
        }
        if !stds.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err(Error::InvalidParameter { name: "stds", reason: "positive finite values" });
        }
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        Ok(GaussianMixture { dim, weights, means, stds, log_total_weight: libm::log(total) })
    }

    /// `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `K`.
    pub fn components(&self) -> usize {
        self.weights.len()
    }

    /// `log p(x_t | k) + log w_k` under the noisy marginal at `(a, s)`.
    fn component_log_joint(&self, k: usize, x: &[f32], a: f64, s2: f64) -> f64 {
        let row = k * self.dim..(k + 1) * self.dim;
        let mut ll = libm::log(f64::from(self.weights[k])) - self.log_total_weight;
        for ((&xv, &m), &sd) in x.iter().zip(&self.means[row.clone()]).zip(&self.stds[row]) {
            let sd = f64::from(sd);
            let v = a * a * sd * sd + s2;
            let d = f64::from(xv) - a * f64::from(m);
            ll -= 0.5 * (LN_2PI + libm::log(v) + d * d / v);
        }
        ll
    }

    /// `log sum_k exp` of the component log-joints, for one example: `log p(x_t)`.
    fn log_sum(&self, x: &[f32], a: f64, s2: f64) -> f64 {
        let mut max = f64::NEG_INFINITY;
        for k in 0..self.components() {
            let l = self.component_log_joint(k, x, a, s2);
            if l > max {
                max = l;
            }
        }
        let sum: f64 = (0..self.components()).map(|k| libm::exp(self.component_log_joint(k, x, a, s2) - max)).sum();
        max + libm::log(sum)
    }

    /// The Bayes classifier at a clean point: the component of largest posterior
    /// probability `w_k N(x; mu_k, diag(s_k^2))` (the reference classifier of guidance experiments).
    pub fn classify(&self, x: &[f32]) -> Result<usize> {
        check_len(x.len(), self.dim)?;
        let mut best = (0, f64::NEG_INFINITY);
        for k in 0..self.components() {
            let l = self.component_log_joint(k, x, 1.0, 0.0);
            if l > best.1 {
                best = (k, l);
            }
        }
        Ok(best.0)
    }

    /// The exact log-density of one example `x` (length `D`) under the mixture.
    pub fn log_density(&self, x: &[f32]) -> Result<f64> {
        self.noisy_log_density(x, 1.0, 0.0)
    }

    /// The log-density of `x_t = a x_0 + s eps` for one example.
    pub fn noisy_log_density(&self, x: &[f32], a: f64, s: f64) -> Result<f64> {
        check_len(self.dim, x.len())?;
        Ok(self.log_sum(x, a, s * s))
    }

    /// Draws `n = out.len() / D` exact samples; the component of each goes to `labels` if given.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R, out: &mut [f32], mut labels: Option<&mut [u32]>) -> Result<()> {
        if !out.len().is_multiple_of(self.dim) {
            return Err(Error::DimensionMismatch { expected: self.dim * (out.len() / self.dim), got: out.len() });
        }
        let n = out.len() / self.dim;
        if let Some(l) = labels.as_deref() {
            check_len(n, l.len())?;
        }
        let total = libm::exp(self.log_total_weight);
        for (i, row) in out.chunks_exact_mut(self.dim).enumerate() {
            let u = uniform_f64(rng) * total;
            let mut acc = 0.0;
            let mut k = self.components() - 1;
            for (j, &w) in self.weights.iter().enumerate() {
                acc += f64::from(w);
                if u < acc {
                    k = j;
                    break;
                }
            }
            for (d, v) in row.iter_mut().enumerate() {
                let idx = k * self.dim + d;
                *v = self.means[idx] + self.stds[idx] * standard_normal(rng);
            }
            if let Some(l) = labels.as_deref_mut() {
                l[i] = k as u32;
            }
        }
        Ok(())
    }

    /// Calls `f(k, r_k)` with the responsibilities `r_k = p(k | x_t)` of one example (a
    /// log-sum-exp in f64: one pass for the maximum, one for the normaliser, one for `f`).
    fn for_responsibilities(&self, x: &[f32], a: f64, s2: f64, mut f: impl FnMut(usize, f64)) {
        let log_norm = self.log_sum(x, a, s2);
        for k in 0..self.components() {
            f(k, libm::exp(self.component_log_joint(k, x, a, s2) - log_norm));
        }
    }

    /// `E[x_0 | x_t, k]` for one coordinate: `mu + a sigma^2 / (a^2 sigma^2 + s^2) (x_t - a mu)`.
    #[inline]
    fn component_mean(&self, k: usize, d: usize, x: f32, a: f64, s2: f64) -> f64 {
        let idx = k * self.dim + d;
        let (m, sd) = (f64::from(self.means[idx]), f64::from(self.stds[idx]));
        m + a * sd * sd / (a * a * sd * sd + s2) * (f64::from(x) - a * m)
    }

    /// `grad log p(x_t | k)` for one coordinate: `-(x_t - a mu) / (a^2 sigma^2 + s^2)`.
    #[inline]
    fn component_score(&self, k: usize, d: usize, x: f32, a: f64, s2: f64) -> f64 {
        let idx = k * self.dim + d;
        let (m, sd) = (f64::from(self.means[idx]), f64::from(self.stds[idx]));
        -(f64::from(x) - a * m) / (a * a * sd * sd + s2)
    }

    /// `E[x_0 | x_t]` (or `E[x_0 | x_t, k]` for `class = Some(k)`) for one example.
    fn posterior_mean_one(&self, x: &[f32], a: f64, s2: f64, class: Option<usize>, out: &mut [f32]) {
        match class {
            Some(k) => {
                for (d, (o, &xv)) in out.iter_mut().zip(x).enumerate() {
                    *o = self.component_mean(k, d, xv, a, s2) as f32;
                }
            }
            None => {
                out.fill(0.0);
                self.for_responsibilities(x, a, s2, |k, r| {
                    for (d, (o, &xv)) in out.iter_mut().zip(x).enumerate() {
                        *o += (r * self.component_mean(k, d, xv, a, s2)) as f32;
                    }
                });
            }
        }
    }
}

/// The Bayes-optimal denoiser of a [`GaussianMixture`]: predicts `x_0` exactly.
#[derive(Debug, Clone, Copy)]
pub struct OptimalDenoiser<'a> {
    mixture: GaussianMixture<'a>,
}

impl<'a> OptimalDenoiser<'a> {
    /// The exact denoiser of `mixture`.
    pub fn new(mixture: GaussianMixture<'a>) -> Self {
        OptimalDenoiser { mixture }
    }

    /// The mixture.
    pub fn mixture(&self) -> &GaussianMixture<'a> {
        &self.mixture
    }
}

fn class_of(cond: Condition<'_>, i: usize, classes: usize) -> Result<Option<usize>> {
    match cond {
        Condition::Unconditional => Ok(None),
        Condition::Class(labels) => {
            let c = *labels.get(i).ok_or(Error::DimensionMismatch { expected: i + 1, got: labels.len() })?;
            if (c as usize) < classes {
                Ok(Some(c as usize))
            } else {
                Err(Error::ClassOutOfRange { class: c, classes })
            }
        }
    }
}

impl Denoiser for OptimalDenoiser<'_> {
    type Error = Error;

    fn dim(&self) -> usize {
        self.mixture.dim
    }

    fn prediction(&self) -> Prediction {
        Prediction::X0
    }

    fn classes(&self) -> usize {
        self.mixture.components()
    }

    fn predict(&mut self, x: &[f32], level: NoiseLevel, cond: Condition<'_>, out: &mut [f32]) -> Result<()> {
        check_len(x.len(), out.len())?;
        let a = f64::from(level.sqrt_abar);
        let s = f64::from(level.sqrt_one_minus_abar);
        let d = self.mixture.dim;
        for (i, (xr, or)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
            let class = class_of(cond, i, self.classes())?;
            self.mixture.posterior_mean_one(xr, a, s * s, class, or);
        }
        Ok(())
    }
}

impl Classifier for GaussianMixture<'_> {
    type Error = Error;

    /// `grad log p(k | x_t) = grad log p(x_t | k) - sum_j p(j | x_t) grad log p(x_t | j)`, exact.
    fn grad_log_prob(&mut self, x: &[f32], level: NoiseLevel, labels: &[u32], out: &mut [f32]) -> Result<()> {
        check_len(x.len(), out.len())?;
        let a = f64::from(level.sqrt_abar);
        let s2 = f64::from(level.sqrt_one_minus_abar) * f64::from(level.sqrt_one_minus_abar);
        let d = self.dim;
        check_len(x.len() / d, labels.len())?;
        for (i, (xr, or)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
            let k = class_of(Condition::Class(labels), i, self.components())?.unwrap_or(0);
            for (j, (o, &xv)) in or.iter_mut().zip(xr).enumerate() {
                *o = self.component_score(k, j, xv, a, s2) as f32;
            }
            self.for_responsibilities(xr, a, s2, |c, r| {
                for (j, (o, &xv)) in or.iter_mut().zip(xr).enumerate() {
                    *o -= (r * self.component_score(c, j, xv, a, s2)) as f32;
                }
            });
        }
        Ok(())
    }
}
