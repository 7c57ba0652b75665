//! The terms of the diffusion ELBO (seed 004 eq. 58; seed 003; seed 000), in nats per example:
//!
//! `-ELBO = L_T + sum_{t=2}^T L_{t-1} + L_0` with
//! - `L_T = KL(q(x_T | x_0) || N(0, I))` ([`prior_term`]),
//! - `L_{t-1} = E_{q(x_t | x_0)} KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`, estimated per draw
//!   of `x_t` either analytically ([`kl_term_rb`], the Rao-Blackwellised estimator of seed 000)
//!   or by the log-ratio at one sampled `x_{t-1}` ([`kl_term_mc`], the Monte Carlo estimator),
//! - `L_0 = -E_{q(x_1 | x_0)} log p(x_0 | x_1)` ([`decoder_nll`]).
//!
//! The reverse model is `p(x_{t-1} | x_t) = N(c0_t x0_hat + ct_t x_t, sigma_t^2 I)`: its mean has
//! the posterior's form with the denoiser's `x0_hat` in place of `x_0` (seed 004 eq. 94), its
//! variance is chosen by [`ReverseVariance`].

use crate::denoiser::{Condition, Denoiser, NoiseLevel};
use crate::error::{Error, Result, RunError, check_len};
use crate::forward::q_sample;
use crate::gaussian::{LN_2PI, discretized_log_likelihood, kl, log_density, mc_log_ratio, prior_kl};
use crate::param::{Prediction, from_x0_eps, to_x0_eps};
use crate::rng::Noise;
use crate::schedule::{Marginal, NoiseSchedule, Step};

/// The reverse process variance `sigma_t^2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReverseVariance {
    /// `btilde_t`, the posterior variance (the lower bound on the optimal variance), clipped at
    /// `t = 1` to `btilde_2` as improved-diffusion does.
    Small,
    /// `beta_t` (the upper bound), with `btilde_2` at `t = 1` as improved-diffusion's fixed-large.
    Large,
    /// `log sigma^2 = f log beta_t + (1 - f) log btilde_t` (clipped), `f = (v + 1)/2` for a model
    /// output `v` in `[-1, 1]` (Nichol & Dhariwal 2021, eq. 15).
    LearnedRange,
}

impl ReverseVariance {
    /// `small`, `large` or `learned_range`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "small" | "fixed_small" => Ok(ReverseVariance::Small),
            "large" | "fixed_large" => Ok(ReverseVariance::Large),
            "learned_range" => Ok(ReverseVariance::LearnedRange),
            _ => Err(Error::UnknownName { what: "variance" }),
        }
    }
}

/// `log sigma_t^2` of the reverse model; `v` is the model's variance output (used by
/// `LearnedRange` only).
pub fn reverse_log_variance(step: &Step, variance: ReverseVariance, v: f32) -> f64 {
    let clipped = f64::from(step.posterior_log_variance_clipped);
    match variance {
        ReverseVariance::Small => clipped,
        ReverseVariance::Large if step.t == 1 => clipped,
        ReverseVariance::Large => f64::from(step.log_beta),
        ReverseVariance::LearnedRange => {
            let frac = (f64::from(v) + 1.0) / 2.0;
            frac * f64::from(step.log_beta) + (1.0 - frac) * clipped
        }
    }
}

/// The reverse model's variance for the terms of one example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModelVariance<'a> {
    /// One log-variance for every coordinate (`Small`, `Large`).
    Fixed(f64),
    /// `learned_range`: the model's variance output, one per coordinate.
    LearnedRange(&'a [f32]),
}

impl ModelVariance<'_> {
    /// `log sigma^2` of coordinate `i` at `step`.
    #[inline]
    pub fn log_var(&self, step: &Step, i: usize) -> f64 {
        match *self {
            ModelVariance::Fixed(lv) => lv,
            ModelVariance::LearnedRange(v) => reverse_log_variance(step, ReverseVariance::LearnedRange, v[i]),
        }
    }

    fn check(&self, len: usize) -> Result<()> {
        match self {
            ModelVariance::Fixed(_) => Ok(()),
            ModelVariance::LearnedRange(v) => check_len(len, v.len()),
        }
    }
}

/// The natural ELBO weight of the eps-form (seed 003):
/// `L_{t-1} = w_t ||eps - eps_hat||^2` with `w_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t))`
/// when `p` and `q` share the variance `sigma_t^2`.
pub fn vlb_weight(step: &Step, sigma2: f64) -> f64 {
    let beta = f64::from(step.beta);
    beta * beta / (2.0 * sigma2 * f64::from(step.alpha) * f64::from(step.cur.one_minus_abar))
}

/// The same weight in x0-form for `sigma_t^2 = btilde_t` (seed 004 eq. 110):
/// `L_{t-1} = 1/2 (SNR_{t-1} - SNR_t) ||x_0 - x0_hat||^2`, with the SNR difference written as
/// `abar_{t-1} beta_t / ((1 - abar_{t-1})(1 - abar_t))` (no cancellation).
pub fn vlb_weight_x0(step: &Step) -> f64 {
    0.5 * f64::from(step.prev.abar) * f64::from(step.beta)
        / (f64::from(step.prev.one_minus_abar) * f64::from(step.cur.one_minus_abar))
}

/// The `L_simple` term of one example (Ho et al. 2020 eq. 14; seed 003): the squared error of the
/// prediction against its own target, `||p - target||^2`, where the target is `eps`, `x_0` or
/// `v` for those kinds and the true score `-eps / sqrt(1 - abar_t)` for score models. For eps
/// models this is `||eps - eps_hat||^2`, the VLB term reweighted by `1 / (T w_t)` (seed 003).
pub fn simple_term(kind: Prediction, m: &Marginal, pred: &[f32], x0: &[f32], eps: &[f32]) -> Result<f64> {
    check_len(x0.len(), eps.len())?;
    check_len(x0.len(), pred.len())?;
    let (a, s) = (f64::from(m.sqrt_abar), f64::from(m.sqrt_one_minus_abar));
    Ok(pred
        .iter()
        .zip(x0)
        .zip(eps)
        .map(|((&p, &x), &e)| {
            let d = f64::from(p) - from_x0_eps(kind, f64::from(x), f64::from(e), a, s);
            d * d
        })
        .sum())
}

/// `x_0 - x0_hat` for one coordinate, in f64.
#[inline]
fn x0_error(kind: Prediction, m: &Marginal, p: f32, x0: f32, xt: f32) -> f64 {
    let (a, s) = (f64::from(m.sqrt_abar), f64::from(m.sqrt_one_minus_abar));
    let (x0_hat, _) = to_x0_eps(kind, f64::from(p), f64::from(xt), a, s);
    f64::from(x0) - x0_hat
}

fn check_example(x0: &[f32], xt: &[f32], pred: &[f32]) -> Result<()> {
    check_len(x0.len(), xt.len())?;
    check_len(x0.len(), pred.len())
}

fn check_kl_step(step: &Step) -> Result<()> {
    if step.t < 2 {
        return Err(Error::InvalidParameter { name: "t", reason: "t >= 2 for a KL term (t = 1 is the decoder)" });
    }
    Ok(())
}

/// The Rao-Blackwellised estimate of `L_{t-1}` (t >= 2) for one example at one draw of `x_t`:
/// the analytic `KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))` with the mean difference
/// `c0_t (x_0 - x0_hat)` (seed 004 eqs. 87-99) and `p`'s log-variance `log_var_p`.
pub fn kl_term_rb(
    step: &Step,
    kind: Prediction,
    pred: &[f32],
    x0: &[f32],
    xt: &[f32],
    var: ModelVariance<'_>,
) -> Result<f64> {
    check_kl_step(step)?;
    check_example(x0, xt, pred)?;
    var.check(x0.len())?;
    let lv_q = f64::from(step.posterior_log_variance_clipped);
    let c0 = f64::from(step.posterior_mean_coef_x0);
    let mut sum = 0.0;
    for (i, ((&p, &x), &z)) in pred.iter().zip(x0).zip(xt).enumerate() {
        sum += kl(c0 * x0_error(kind, &step.cur, p, x, z), lv_q, var.log_var(step, i));
    }
    Ok(sum)
}

/// The Monte Carlo estimate of `L_{t-1}` (t >= 2) for one example: draws
/// `x_{t-1} = mu_q + sqrt(btilde_t) z` from the posterior, `z` the standard normals given, and
/// returns `log q(x_{t-1} | x_t, x_0) - log p(x_{t-1} | x_t)
///  = 1/2 (lv_p - lv_q - z^2 + (c0_t (x_0 - x0_hat) + sqrt(btilde_t) z)^2 / sigma_p^2)`
/// (seed 000, "naive Monte Carlo"). Its expectation over `z` is [`kl_term_rb`].
pub fn kl_term_mc(
    step: &Step,
    kind: Prediction,
    pred: &[f32],
    x0: &[f32],
    xt: &[f32],
    var: ModelVariance<'_>,
    z: &[f32],
) -> Result<f64> {
    check_kl_step(step)?;
    check_example(x0, xt, pred)?;
    check_len(x0.len(), z.len())?;
    var.check(x0.len())?;
    let lv_q = f64::from(step.posterior_log_variance_clipped);
    let sd_q = libm::exp(0.5 * lv_q);
    let c0 = f64::from(step.posterior_mean_coef_x0);
    let mut sum = 0.0;
    for (i, (((&p, &x), &zt), &zi)) in pred.iter().zip(x0).zip(xt).zip(z).enumerate() {
        let lv_p = var.log_var(step, i);
        let z = f64::from(zi);
        let d = c0 * x0_error(kind, &step.cur, p, x, zt) + sd_q * z;
        sum += mc_log_ratio(d, z, lv_q, lv_p);
    }
    Ok(sum)
}

/// The decoder `p(x_0 | x_1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// A Gaussian density: continuous data (the bound is on a density, in nats).
    Continuous,
    /// The discretised Gaussian over `levels` values on `[-1, 1]` (quantised data such as
    /// 8-bit images with 256 levels; the bound is on a probability).
    Discretized {
        /// K, the number of values.
        levels: u32,
    },
}

/// `L_0 = -log p(x_0 | x_1)` for one example at one draw of `x_1`, with
/// `p(x_0 | x_1) = N(c0_1 x0_hat + ct_1 x_1, exp(log_var_p))` (a density or its discretisation).
pub fn decoder_nll(
    step: &Step,
    kind: Prediction,
    pred: &[f32],
    x0: &[f32],
    x1: &[f32],
    var: ModelVariance<'_>,
    decoder: Decoder,
) -> Result<f64> {
    if step.t != 1 {
        return Err(Error::InvalidParameter { name: "t", reason: "t = 1 for the decoder term" });
    }
    check_example(x0, x1, pred)?;
    var.check(x0.len())?;
    if let Decoder::Discretized { levels } = decoder
        && levels < 2
    {
        return Err(Error::InvalidParameter { name: "levels", reason: "at least 2 levels" });
    }
    let c0 = f64::from(step.posterior_mean_coef_x0);
    let ct = f64::from(step.posterior_mean_coef_xt);
    let (a, s) = (f64::from(step.cur.sqrt_abar), f64::from(step.cur.sqrt_one_minus_abar));
    let mut nll = 0.0;
    for (i, ((&p, &x), &z)) in pred.iter().zip(x0).zip(x1).enumerate() {
        let log_var_p = var.log_var(step, i);
        let (x0_hat, _) = to_x0_eps(kind, f64::from(p), f64::from(z), a, s);
        let mean = c0 * x0_hat + ct * f64::from(z);
        nll -= match decoder {
            Decoder::Continuous => log_density(f64::from(x), mean, log_var_p),
            Decoder::Discretized { levels } => discretized_log_likelihood(f64::from(x), mean, 0.5 * log_var_p, levels),
        };
    }
    Ok(nll)
}

/// `L_T = KL(q(x_T | x_0) || N(0, I))` for one example (closed form, [`prior_kl`]).
pub fn prior_term(last: &Marginal, x0: &[f32]) -> f64 {
    let abar = libm::exp(last.log_abar);
    x0.iter().map(|&x| prior_kl(f64::from(x), abar)).sum()
}

/// Continuous time (VDM; seed 002 eqs. 8-10): the diffusion loss of one draw of `t` and `eps`,
/// `1/2 (-d lambda / dt) ||eps - eps_hat||^2`, given `sq_err = ||eps - eps_hat||^2` (seed 002
/// eq. 10 with `w = 1`; its expectation over `t ~ U(0, 1)` is `L_infinity`).
pub fn continuous_diffusion_term(dlog_snr_dt: f64, sq_err: f64) -> f64 {
    0.5 * (-dlog_snr_dt) * sq_err
}

/// Continuous time: the prior term `KL(q(z_1 | x) || N(0, I))` at `lambda_min = lambda(1)`
/// (`abar_1 = sigmoid(lambda_min)`, seed 004 eq. 113).
pub fn continuous_prior_term(x: &[f32], lambda_min: f64) -> f64 {
    let abar = 1.0 / (1.0 + libm::exp(-lambda_min));
    x.iter().map(|&v| prior_kl(f64::from(v), abar)).sum()
}

/// Continuous time: the Gaussian decoder `p(x | z_0) = N(z_0 / alpha_0, sigma_0^2 / alpha_0^2)`
/// at `lambda_max = lambda(0)`, its expectation over `z_0 ~ q(z_0 | x)` in closed form
/// (`z_0 / alpha_0 - x` has variance `exp(-lambda_max)`): `D/2 (ln 2 pi + 1 - lambda_max)`.
pub fn continuous_decoder_term(dim: usize, lambda_max: f64) -> f64 {
    0.5 * dim as f64 * (LN_2PI + 1.0 - lambda_max)
}

/// Continuous time, quantised data: VDM's discrete decoder (Kingma et al., 2021, appendix C,
/// "the reconstruction loss"), `p(x = x_k | z_0) = softmax_k(-(z_0 / alpha_0 - x_k)^2 / (2 s^2))`
/// over the `levels` values `x_k = 2k / (levels - 1) - 1`, with `s = sigma_0 / alpha_0 =
/// exp(-lambda_max / 2)`. For a coordinate at level `j` and the draw `z_0 / alpha_0 = x_j + s eps`
/// of `q(z_0 | x)`, returns `-ln p(x_j | z_0)` and its derivative with respect to `lambda_max`:
/// with `d_k = (x_j - x_k) / s` and `a_k = -(d_k + eps)^2 / 2`, the value is
/// `eps^2 / 2 + logsumexp_k a_k` and the derivative `-1/2 sum_k softmax_k(a) (d_k + eps) d_k`.
/// Levels more than 60 nats below the largest `a_k` are left out (their weight is below
/// `e^-60`). Returns `None` unless `j < levels` and `levels >= 2`.
pub fn discrete_decoder_nll(j: usize, levels: usize, eps: f64, lambda_max: f64) -> Option<(f64, f64)> {
    if levels < 2 || j >= levels {
        return None;
    }
    let s = libm::exp(-0.5 * lambda_max);
    let step = 2.0 / (levels - 1) as f64;
    let a = |k: usize| {
        let d = (j as f64 - k as f64) * step / s;
        (d, -0.5 * (d + eps) * (d + eps))
    };
    // the level nearest to x_j + s eps has the largest a_k
    let u = j as f64 + s * eps / step;
    let top = if u <= 0.0 { 0 } else { (libm::round(u) as usize).min(levels - 1) };
    let a_max = a(top).1;
    let (mut sum, mut dsum) = (0.0, 0.0);
    let mut add = |k: usize| {
        let (d, ak) = a(k);
        if ak < a_max - 60.0 {
            return false;
        }
        let w = libm::exp(ak - a_max);
        sum += w;
        dsum += w * (d + eps) * d;
        true
    };
    add(top);
    let mut k = top;
    while k > 0 && add(k - 1) {
        k -= 1;
    }
    let mut k = top;
    while k + 1 < levels && add(k + 1) {
        k += 1;
    }
    let lse = a_max + libm::log(sum);
    Some((0.5 * eps * eps + lse, -0.5 * dsum / sum))
}

/// How the per-step KL terms are estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    /// The analytic KL at a sampled `x_t` (Rao-Blackwellised; lower variance).
    RaoBlackwell,
    /// The log-ratio at a sampled `x_t` and `x_{t-1}` (Monte Carlo).
    MonteCarlo,
}

/// Options of a full bound evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElboOptions {
    /// The reverse variance (`LearnedRange` reads the model's
    /// [`predict_with_variance`](Denoiser::predict_with_variance)).
    pub variance: ReverseVariance,
    /// RB or MC for `L_{t-1}`.
    pub estimator: Estimator,
    /// Continuous or discretised decoder.
    pub decoder: Decoder,
}

/// Buffers of length `n D` a full evaluation works in.
pub struct ElboScratch<'a> {
    /// Receives `x_t`.
    pub xt: &'a mut [f32],
    /// Receives the noise `eps`.
    pub eps: &'a mut [f32],
    /// Receives the denoiser's prediction.
    pub pred: &'a mut [f32],
    /// Receives a learned-variance model's variance output (as long as `pred` with
    /// [`ReverseVariance::LearnedRange`]; may be empty otherwise).
    pub var: &'a mut [f32],
}

/// Where a full evaluation writes its results (nats).
pub struct ElboOutput<'a> {
    /// Per example (length `n`): the total `-ELBO`.
    pub per_example: &'a mut [f64],
    /// Per timestep (length `T`): index `t - 1` holds the batch mean of `L_{t-1}` (index 0: the
    /// decoder term `L_0`).
    pub per_step: &'a mut [f64],
    /// Every example's every term (length `n T`, index `e T + t - 1`; index `e T` is its `L_0`),
    /// or empty when not wanted.
    pub per_term: &'a mut [f64],
}

/// Batch means of the parts of the bound (nats per example).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ElboParts {
    /// `L_T`.
    pub prior: f64,
    /// `L_0`.
    pub decoder: f64,
    /// `sum_{t=2}^T L_{t-1}`.
    pub diffusion: f64,
    /// The total `-ELBO`.
    pub total: f64,
}

/// Evaluates `-ELBO` for a batch `x0` (`n` examples of dimension `D`), one draw of `x_t` per
/// example and timestep, calling the denoiser once per timestep (as improved-diffusion's
/// `calc_bpd_loop` does). Example `e`'s `eps` at `t` is elements `0..D` of `noise`'s draw `t`
/// of `e`, the Monte Carlo term's posterior draw elements `D..2D`.
#[allow(clippy::too_many_arguments)]
pub fn neg_elbo<D: Denoiser, S: NoiseSchedule + ?Sized, N: Noise + ?Sized>(
    denoiser: &mut D,
    schedule: &S,
    x0: &[f32],
    cond: Condition<'_>,
    opts: ElboOptions,
    noise: &mut N,
    scratch: ElboScratch<'_>,
    out: ElboOutput<'_>,
) -> core::result::Result<ElboParts, RunError<D::Error>> {
    let dim = denoiser.dim();
    if dim == 0 || !x0.len().is_multiple_of(dim) || x0.is_empty() {
        return Err(Error::DimensionMismatch { expected: dim, got: x0.len() }.into());
    }
    let n = x0.len() / dim;
    check_len(x0.len(), scratch.xt.len())?;
    check_len(x0.len(), scratch.eps.len())?;
    check_len(x0.len(), scratch.pred.len())?;
    check_len(n, out.per_example.len())?;
    check_len(schedule.steps(), out.per_step.len())?;
    if !out.per_term.is_empty() {
        check_len(n * schedule.steps(), out.per_term.len())?;
    }
    if let Condition::Class(labels) = cond {
        check_len(n, labels.len())?;
    }
    if !x0.iter().all(|v| v.is_finite()) {
        return Err(Error::InvalidParameter { name: "x0", reason: "finite values" }.into());
    }
    let kind = denoiser.prediction();
    let steps = schedule.steps();
    let last = schedule.marginal(steps)?;
    let mut parts = ElboParts { prior: 0.0, decoder: 0.0, diffusion: 0.0, total: 0.0 };
    for (e, x) in out.per_example.iter_mut().zip(x0.chunks_exact(dim)) {
        *e = prior_term(&last, x);
        parts.prior += *e;
    }
    for t in 1..=steps {
        let step = schedule.step(t)?;
        for (e, eps) in scratch.eps.chunks_exact_mut(dim).enumerate() {
            noise.normals(e, t as u32, 0, eps);
        }
        q_sample(&step.cur, x0, scratch.eps, scratch.xt)?;
        let level = NoiseLevel::of(&step);
        let learned = if opts.variance == ReverseVariance::LearnedRange {
            if !denoiser.has_variance() {
                return Err(Error::Unsupported("learned variance: the model has no variance output").into());
            }
            check_len(x0.len(), scratch.var.len())?;
            denoiser
                .predict_with_variance(scratch.xt, level, cond, scratch.pred, scratch.var)
                .map_err(RunError::Model)?;
            Some(&*scratch.var)
        } else {
            denoiser.predict(scratch.xt, level, cond, scratch.pred).map_err(RunError::Model)?;
            None
        };
        let lv = reverse_log_variance(&step, opts.variance, 0.0);
        let mut sum = 0.0;
        let rows = x0.chunks_exact(dim).zip(scratch.xt.chunks_exact(dim)).zip(scratch.pred.chunks_exact(dim));
        let draws = scratch.eps.chunks_exact_mut(dim);
        for (i, ((e, ((x, xt), p)), z)) in out.per_example.iter_mut().zip(rows).zip(draws).enumerate() {
            let var = match learned {
                Some(v) => ModelVariance::LearnedRange(&v[i * dim..(i + 1) * dim]),
                None => ModelVariance::Fixed(lv),
            };
            let term = match (t, opts.estimator) {
                (1, _) => decoder_nll(&step, kind, p, x, xt, var, opts.decoder)?,
                (_, Estimator::RaoBlackwell) => kl_term_rb(&step, kind, p, x, xt, var)?,
                (_, Estimator::MonteCarlo) => {
                    // eps is spent: its buffer takes the posterior draw
                    noise.normals(i, t as u32, dim, z);
                    kl_term_mc(&step, kind, p, x, xt, var, z)?
                }
            };
            *e += term;
            sum += term;
            if let Some(slot) = out.per_term.get_mut(i * steps + t - 1) {
                *slot = term;
            }
        }
        out.per_step[t - 1] = sum / n as f64;
        if t == 1 {
            parts.decoder = sum;
        } else {
            parts.diffusion += sum;
        }
    }
    let nf = n as f64;
    parts.prior /= nf;
    parts.decoder /= nf;
    parts.diffusion /= nf;
    parts.total = parts.prior + parts.decoder + parts.diffusion;
    Ok(parts)
}
