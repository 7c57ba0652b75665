//! Ancestral (DDPM) sampling, Ho et al. 2020 Alg. 2 in the x0 form of seed 004 eq. 94:
//! `x_{t-1} = c0_t x0_hat + ct_t x_t + sigma_t z`, no noise on the last step.

use super::{Clip, Timesteps, X0Map, check_batch, check_signal, with_noise};
use crate::denoiser::{Condition, Denoiser, NoiseLevel};
use crate::elbo::{ReverseVariance, reverse_log_variance};
use crate::error::{Error, Result, RunError, check_len};
use crate::param::{Prediction, to_x0_eps};
use crate::rng::Noise;
use crate::schedule::{NoiseSchedule, Step, stride};

/// The reverse standard deviation of one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sigma<'a> {
    /// One `sigma_t` for every coordinate.
    Fixed(f32),
    /// The model's `learned_range` output, one per coordinate:
    /// `sigma = exp(1/2 (f log beta_t + (1 - f) log btilde_t))`, `f = (v + 1)/2`.
    LearnedRange(&'a [f32]),
}

/// `sigma_t` of a (possibly strided) step: `sqrt(btilde_t)` for `Small`, `sqrt(beta_t)` for
/// `Large` (a learned variance comes from the model: [`Sigma::LearnedRange`]).
pub fn ddpm_sigma(step: &Step, variance: ReverseVariance) -> Result<f32> {
    match variance {
        ReverseVariance::Small => Ok(libm::sqrtf(step.posterior_variance)),
        ReverseVariance::Large => Ok(libm::sqrtf(step.beta)),
        ReverseVariance::LearnedRange => Err(Error::Unsupported("a learned variance comes from the model")),
    }
}

/// One ancestral update in place: `x <- c0 x0_hat + ct x + sigma z`, where `x0_hat` comes from
/// the prediction `pred` of kind `kind` (mapped by `clip`; with [`Clip::Dynamic`], `x` is one
/// example), and `z` from `noise(first, out)`, which fills `out` with the normals of elements
/// `first..` of `x` (not called on the last step, `step.prev` being the data).
pub fn ddpm_update(
    step: &Step,
    kind: Prediction,
    pred: &[f32],
    x: &mut [f32],
    sigma: Sigma<'_>,
    clip: Clip,
    noise: impl FnMut(usize, &mut [f32]),
) -> Result<()> {
    check_len(x.len(), pred.len())?;
    if let Sigma::LearnedRange(v) = sigma {
        check_len(x.len(), v.len())?;
    }
    check_signal(kind, step.cur.sqrt_abar)?;
    let (a, s) = (step.cur.sqrt_abar, step.cur.sqrt_one_minus_abar);
    let map = X0Map::new(clip, pred.iter().zip(x.iter()).map(|(&p, &xv)| to_x0_eps(kind, p, xv, a, s).0));
    let (c0, ct) = (step.posterior_mean_coef_x0, step.posterior_mean_coef_xt);
    let last = step.prev.log_abar == 0.0;
    // Two passes with the same operations per element (so the same bits however `x` is cut):
    // the mean, one long loop that vectorises (measured faster than fusing it into the noise
    // pass), then the noise, a chunk of normals at a time.
    for (xv, &p) in x.iter_mut().zip(pred) {
        let (x0, _) = to_x0_eps(kind, p, *xv, a, s);
        *xv = c0 * X0Map::apply(map, x0) + ct * *xv;
    }
    if last {
        return Ok(());
    }
    with_noise(x, noise, |first, xc, z| match sigma {
        Sigma::Fixed(sd) => {
            for (xv, &zi) in xc.iter_mut().zip(z) {
                *xv += sd * zi;
            }
        }
        Sigma::LearnedRange(v) => {
            for ((xv, &zi), &vi) in xc.iter_mut().zip(z).zip(&v[first..]) {
                let sd = libm::exp(0.5 * reverse_log_variance(step, ReverseVariance::LearnedRange, vi)) as f32;
                *xv += sd * zi;
            }
        }
    });
    Ok(())
}

/// The DDPM sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ddpm {
    /// `Small` (`btilde_t`, diffusers' `fixed_small`), `Large` (`beta_t`), or `LearnedRange`
    /// (the model's variance output).
    pub variance: ReverseVariance,
    /// What is done to the predicted `x_0`.
    pub clip: Clip,
    /// The timesteps visited (`None`: all `T`); with fewer, each stride uses its effective
    /// `beta = 1 - abar_t / abar_prev` (improved-diffusion's respacing).
    pub timesteps: Option<Timesteps>,
}

impl Default for Ddpm {
    fn default() -> Self {
        Ddpm { variance: ReverseVariance::Small, clip: Clip::Off, timesteps: None }
    }
}

impl Ddpm {
    /// Runs the chain from `x = x_T` to `x_0`; `scratch` receives model outputs: the same length
    /// as `x`, or twice that with [`ReverseVariance::LearnedRange`] (the prediction, then the
    /// model's variance output).
    /// The noise of example `e` at step `i` (0-based) is `noise`'s draw `i` of example `e`.
    pub fn sample<D: Denoiser, S: NoiseSchedule + ?Sized, N: Noise + ?Sized>(
        &self,
        denoiser: &mut D,
        schedule: &S,
        x: &mut [f32],
        scratch: &mut [f32],
        cond: Condition<'_>,
        noise: &mut N,
    ) -> core::result::Result<(), RunError<D::Error>> {
        let learned = self.variance == ReverseVariance::LearnedRange;
        if learned && !denoiser.has_variance() {
            return Err(Error::Unsupported("learned variance: the model has no variance output").into());
        }
        let n = x.len();
        let (scratch, var) = if learned {
            check_len(2 * n, scratch.len())?;
            scratch.split_at_mut(n)
        } else {
            scratch.split_at_mut(scratch.len().min(n))
        };
        check_batch(denoiser, x, scratch, cond)?;
        let clip = self.clip.check()?;
        let dim = denoiser.dim();
        let ts = match self.timesteps {
            Some(ts) => ts,
            None => Timesteps::all(schedule.steps())?,
        };
        let kind = denoiser.prediction();
        for i in 0..ts.len() {
            let step = stride(schedule, ts.get(i)?, ts.next_in_sequence(i)?)?;
            let level = NoiseLevel::of(&step);
            let sigma = if learned {
                denoiser.predict_with_variance(x, level, cond, scratch, var).map_err(RunError::Model)?;
                Sigma::LearnedRange(var)
            } else {
                denoiser.predict(x, level, cond, scratch).map_err(RunError::Model)?;
                Sigma::Fixed(ddpm_sigma(&step, self.variance)?)
            };
            // example by example, each with its own noise
            let draw = i as u32;
            for (e, (xe, pe)) in x.chunks_mut(dim).zip(scratch.chunks(dim)).enumerate() {
                let se = match sigma {
                    Sigma::LearnedRange(v) => Sigma::LearnedRange(&v[e * dim..(e + 1) * dim]),
                    fixed => fixed,
                };
                ddpm_update(&step, kind, pe, xe, se, clip, |first, out| noise.normals(e, draw, first, out))?;
            }
        }
        super::check_finite(x)?;
        Ok(())
    }
}
