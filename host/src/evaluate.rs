//! The bound and sample quality of any [`Denoiser`] as library functions: the discrete-time
//! `-ELBO` (the core's terms), VDM's continuous-time bound, a VAE's bound, and DDPM samples for
//! the MMD. `elbo eval`, the demo and the experiments call these.

use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use elbo_core::elbo::{ElboOptions, ElboOutput, ElboParts, ElboScratch, ReverseVariance, neg_elbo};
use elbo_core::elbo::{continuous_decoder_term, continuous_diffusion_term, continuous_prior_term};
use elbo_core::param::to_x0_eps;
use elbo_core::rng::{Counter, Noise, domain, uniform_f64};
use elbo_core::sampler::{Ddim, Ddpm, Spacing};
use elbo_core::schedule::LogSnrSchedule;
use elbo_core::{NoiseSchedule, RunError};
use rand_core::SeedableRng;
use rand_pcg::Pcg32;

use crate::error::Result;

/// The bound of a model on a data set.
pub struct Bound {
    /// Its parts, means per example in nats.
    pub parts: ElboParts,
    /// `-ELBO` of every example.
    pub per_example: Vec<f64>,
    /// The mean term of every timestep (discrete time; empty in continuous time).
    pub per_step: Vec<f64>,
    /// Every example's prior term.
    pub prior: Vec<f64>,
    /// Every example's decoder term.
    pub decoder: Vec<f64>,
    /// Every example's terms (discrete time: `n T`, index `e T + t - 1`, index `e T` its
    /// decoder term); in continuous time, every example's diffusion loss (`n`).
    pub terms: Vec<f64>,
}

/// The discrete-time `-ELBO` of any denoiser on `x` (the core's [`neg_elbo`]); the rows of `x`
/// are the run's examples `offset..`, their draws those of [`crate::noise::bound`]`(seed, offset)`.
pub fn bound<D: Denoiser>(
    den: &mut D,
    schedule: &dyn NoiseSchedule,
    x: &[f32],
    opts: ElboOptions,
    seed: u64,
    offset: u64,
) -> Result<Bound>
where
    D::Error: std::fmt::Display + 'static,
{
    let n = x.len() / den.dim();
    let (mut xt, mut eps, mut pred) = (vec![0.0; x.len()], vec![0.0; x.len()], vec![0.0; x.len()]);
    let mut var = if opts.variance == ReverseVariance::LearnedRange { vec![0.0; x.len()] } else { vec![] };
    let mut per_example = vec![0.0; n];
    let mut per_step = vec![0.0; schedule.steps()];
    let steps = schedule.steps();
    let mut per_term = vec![0.0; n * steps];
    let parts = neg_elbo(
        den,
        schedule,
        x,
        Condition::Unconditional,
        opts,
        &mut crate::noise::bound(seed, offset),
        ElboScratch { xt: &mut xt, eps: &mut eps, pred: &mut pred, var: &mut var },
        ElboOutput { per_example: &mut per_example, per_step: &mut per_step, per_term: &mut per_term },
    )
    .map_err(crate::error::run_error)?;
    let last = schedule.marginal(steps).map_err(|e| crate::error::input(format!("schedule: {e}")))?;
    let prior = x.chunks_exact(den.dim()).map(|xi| elbo_core::elbo::prior_term(&last, xi)).collect();
    let decoder = per_term.iter().step_by(steps).copied().collect();
    Ok(Bound { parts, per_example, per_step, prior, decoder, terms: per_term })
}

/// The grid continuous times are rounded to (a [`NoiseLevel`] carries `t / steps`).
const TIME_GRID: usize = 1 << 20;

/// The continuous-time `-ELBO` (VDM; seed 002 eqs. 8-10) of every example: the prior
/// `KL(q(z_1|x) || N(0, I))`, the Gaussian decoder at `z_0` in closed form, and the diffusion
/// loss. The diffusion loss depends on the schedule only through its end points (seed 002 eq.
/// 12), so it is integrated in log-SNR: `1/2 int ||eps - eps_hat||^2 d lambda` at `times`
/// stratified levels `lambda_k = lambda_max - (k + u) / times (lambda_max - lambda_min)` (one
/// shift `u`, so each call to the denoiser is one batch at one level; the integrand is smooth
/// and bounded in lambda, unlike in t, where `-d lambda/dt` can be steep), the model queried at
/// `t(lambda_k)`, one `eps` per example and level. The rows of `x` are the run's examples
/// `offset..`: example `i`'s `eps` at level `k` is its bound draw `k + 1` (seed `seed`), its
/// decoder draw of `z_0` draw 0; the shift `u` is the run's.
pub fn continuous_bound<D: Denoiser>(
    den: &mut D,
    sched: &dyn LogSnrSchedule,
    x: &[f32],
    times: usize,
    bins: Option<usize>,
    seed: u64,
    offset: u64,
) -> Result<Bound>
where
    D::Error: std::fmt::Display + 'static,
{
    let dim = den.dim();
    let n = x.len() / dim;
    let (l_max, l_min) = sched.end_points();
    // the decoder: VDM's discrete one at a draw of z_0 for quantised data, else the Gaussian
    // density's closed form
    let decoders: Vec<f64> = match bins {
        Some(k) => {
            let mut e = vec![0.0f32; x.len()];
            let mut noise = crate::noise::bound(seed, offset);
            for (i, ei) in e.chunks_exact_mut(dim).enumerate() {
                noise.normals(i, 0, 0, ei);
            }
            x.chunks_exact(dim)
                .zip(e.chunks_exact(dim))
                .map(|(xi, ei)| {
                    xi.iter()
                        .zip(ei)
                        .map(|(&v, &z)| {
                            let j = crate::train::level_of(v, k);
                            elbo_core::elbo::discrete_decoder_nll(j, k, f64::from(z), l_max).map_or(0.0, |r| r.0)
                        })
                        .sum()
                })
                .collect()
        }
        None => vec![continuous_decoder_term(dim, l_max); n],
    };
    let decoder = decoders.iter().sum::<f64>() / n as f64;
    let priors: Vec<f64> = x.chunks_exact(dim).map(|xi| continuous_prior_term(xi, l_min)).collect();
    let mut per_example: Vec<f64> = priors.iter().zip(&decoders).map(|(p, dec)| p + dec).collect();
    let prior = per_example.iter().sum::<f64>() / n as f64 - decoder;
    let mut diffusions = vec![0.0; n];
    let (mut z, mut eps, mut pred) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
    let u = uniform_f64(&mut Counter::new(seed, domain::RUN).stream(0, 0));
    let mut noise = crate::noise::bound(seed, offset);
    let kind = den.prediction();
    let mut diffusion = 0.0;
    for k in 0..times {
        let level_k = l_max - (k as f64 + u) / times as f64 * (l_max - l_min);
        let ti = ((sched.time_at(level_k) * TIME_GRID as f64).round() as usize).clamp(1, TIME_GRID);
        let t = ti as f64 / TIME_GRID as f64;
        // uniform in lambda: d lambda / d s = -(lambda_max - lambda_min) for s in [0, 1]
        let (lambda, dl) = (sched.log_snr(t), -(l_max - l_min));
        let (a, s) = ((1.0 / (1.0 + (-lambda).exp())).sqrt(), (1.0 / (1.0 + lambda.exp())).sqrt());
        for (i, ei) in eps.chunks_exact_mut(dim).enumerate() {
            noise.normals(i, k as u32 + 1, 0, ei);
        }
        for ((zi, &xi), &e) in z.iter_mut().zip(x).zip(&eps) {
            *zi = (a * f64::from(xi) + s * f64::from(e)) as f32;
        }
        let level = NoiseLevel {
            timestep: (ti - 1) as f32,
            steps: TIME_GRID,
            log_snr: lambda as f32,
            sqrt_abar: a as f32,
            sqrt_one_minus_abar: s as f32,
        };
        den.predict(&z, level, Condition::Unconditional, &mut pred)
            .map_err(|e| crate::error::run_error(RunError::Model(e)))?;
        for (i, pe) in per_example.iter_mut().enumerate() {
            let sq: f64 = (i * dim..(i + 1) * dim)
                .map(|j| {
                    let (_, eps_hat) = to_x0_eps(kind, f64::from(pred[j]), f64::from(z[j]), a, s);
                    (eps_hat - f64::from(eps[j])).powi(2)
                })
                .sum();
            let term = continuous_diffusion_term(dl, sq) / times as f64;
            *pe += term;
            diffusions[i] += term;
            diffusion += term / n as f64;
        }
    }
    let total = per_example.iter().sum::<f64>() / n as f64;
    Ok(Bound {
        parts: ElboParts { prior, decoder, diffusion, total },
        per_example,
        per_step: vec![],
        prior: priors,
        decoder: decoders,
        terms: diffusions,
    })
}

/// A VAE's `-ELBO` on data `x` in the data's own units (16 draws per example): mean and
/// standard error, nats per example.
pub fn vae_bound(
    v: &crate::vae::Vae,
    params: &[f32],
    norm: &crate::data::Normalization,
    x: &[f32],
    seed: u64,
) -> Result<(f64, f64)> {
    let mut z = x.to_vec();
    norm.apply(&mut z);
    let mut rng = Pcg32::seed_from_u64(seed);
    let per: Vec<f64> = v.neg_elbo(params, &z, 16, &mut rng).iter().map(|e| e + norm.log_det()).collect();
    let n = per.len() as f64;
    let m = per.iter().sum::<f64>() / n;
    let var = per.iter().map(|e| (e - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Ok((m, (var / n).sqrt()))
}

/// `n` unconditional samples of any denoiser (in the model's space), the run's examples `0..n`
/// of seed `seed`: by DDPM over all `T` steps (small variance), or by deterministic DDIM over
/// `ddim_steps` trailing steps.
pub fn samples<D: Denoiser>(
    den: &mut D,
    schedule: &dyn NoiseSchedule,
    n: usize,
    seed: u64,
    ddim_steps: Option<usize>,
) -> Result<Vec<f32>>
where
    D::Error: std::fmt::Display + 'static,
{
    let mut x = vec![0.0f32; n * den.dim()];
    crate::noise::starts(seed, 0, den.dim(), &mut x);
    let mut scratch = vec![0.0f32; x.len()];
    let (cond, mut noise) = (Condition::Unconditional, crate::noise::sampler(seed, 0));
    match ddim_steps {
        None => Ddpm::default().sample(den, schedule, &mut x, &mut scratch, cond, &mut noise),
        Some(k) => Ddim::new(0.0, Spacing::Trailing, k, schedule.steps())
            .map_err(|e| crate::error::input(format!("--steps: {e}")))?
            .sample(den, schedule, &mut x, &mut scratch, cond, &mut noise),
    }
    .map_err(crate::error::run_error)?;
    Ok(x)
}
