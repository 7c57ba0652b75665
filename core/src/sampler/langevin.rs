//! Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) with the update of seed 004 eq. 158,
//! `x <- x + c grad log p(x) + sqrt(2c) z`, run at a decreasing sequence of noise levels of the
//! schedule. At level `t` the target is the noisy marginal `p(x_t)`, whose score the denoiser
//! gives by Tweedie (`-eps_hat / sqrt(1 - abar_t)`), and the step size follows Song & Ermon's
//! `c_t proportional to sigma_t^2`: `c_t = step_size (1 - abar_t)`.

use super::{Timesteps, check_batch, check_signal, with_noise};
use crate::denoiser::{Condition, Denoiser, NoiseLevel};
use crate::error::{Error, RunError};
use crate::param::{Prediction, from_x0_eps, to_x0_eps};
use crate::rng::Noise;
use crate::schedule::NoiseSchedule;

/// The annealed Langevin sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnnealedLangevin {
    /// The noise levels, noisiest first.
    pub levels: Timesteps,
    /// Langevin iterations per level.
    pub steps_per_level: usize,
    /// `c_t / (1 - abar_t)`; below 2 for stability at `p(x_T) = N(0, I)`.
    pub step_size: f32,
    /// End with the posterior mean `E[x_0 | x_t]` at the last level (Tweedie denoising), as
    /// Song & Ermon's later work recommends; otherwise return the last Langevin iterate.
    pub denoise: bool,
}

impl AnnealedLangevin {
    /// Runs the dynamics in place from `x` (usually `N(0, I)` draws). Iteration `k` (0-based,
    /// over all levels) draws `noise`'s draw `k` of each example.
    pub fn sample<D: Denoiser, S: NoiseSchedule + ?Sized, N: Noise + ?Sized>(
        &self,
        denoiser: &mut D,
        schedule: &S,
        x: &mut [f32],
        scratch: &mut [f32],
        cond: Condition<'_>,
        noise: &mut N,
    ) -> core::result::Result<(), RunError<D::Error>> {
        check_batch(denoiser, x, scratch, cond)?;
        if !(self.step_size > 0.0 && self.step_size.is_finite()) || self.steps_per_level == 0 {
            return Err(Error::InvalidParameter {
                name: "langevin",
                reason: "a positive finite step size and at least one step per level",
            }
            .into());
        }
        let (kind, dim) = (denoiser.prediction(), denoiser.dim());
        let mut last = None;
        let mut draw = 0u32;
        for t in self.levels.iter() {
            let step = schedule.step(t)?;
            check_signal(kind, step.cur.sqrt_abar)?;
            let (a, s) = (step.cur.sqrt_abar, step.cur.sqrt_one_minus_abar);
            let c = self.step_size * step.cur.one_minus_abar;
            let noise_scale = libm::sqrtf(2.0 * c);
            for _ in 0..self.steps_per_level {
                denoiser.predict(x, NoiseLevel::of(&step), cond, scratch).map_err(RunError::Model)?;
                for (e, (xe, pe)) in x.chunks_mut(dim).zip(scratch.chunks(dim)).enumerate() {
                    let draws = |first: usize, z: &mut [f32]| noise.normals(e, draw, first, z);
                    with_noise(xe, draws, |first, xc, z| {
                        for ((xv, &p), &zi) in xc.iter_mut().zip(&pe[first..]).zip(z) {
                            let (x0, eps) = to_x0_eps(kind, p, *xv, a, s);
                            let score = from_x0_eps(Prediction::Score, x0, eps, a, s);
                            *xv = *xv + c * score + noise_scale * zi;
                        }
                    });
                }
                draw += 1;
            }
            last = Some(step);
        }
        if let (true, Some(step)) = (self.denoise, last) {
            let (a, s) = (step.cur.sqrt_abar, step.cur.sqrt_one_minus_abar);
            denoiser.predict(x, NoiseLevel::of(&step), cond, scratch).map_err(RunError::Model)?;
            for (xv, &p) in x.iter_mut().zip(scratch.iter()) {
                *xv = to_x0_eps(kind, p, *xv, a, s).0;
            }
        }
        super::check_finite(x)?;
        Ok(())
    }
}
