//! Euler and Heun on the probability-flow ODE in `sigma` (Karras et al. 2022, EDM, Alg. 1 with
//! `S_churn = 0`; diffusers' `EulerDiscreteScheduler` and `HeunDiscreteScheduler`).
//!
//! With `x_sigma = x_t / sqrt(abar) = x_0 + sigma eps` the ODE is
//! `dx_sigma / dsigma = (x_sigma - D(x_sigma; sigma)) / sigma` (EDM eq. 3 with `s = 1`,
//! `sigma(t) = t`), `D` the data prediction. Euler steps it from `sigma_i` to `sigma_{i+1}`;
//! Heun (EDM Alg. 1, lines 9-11) averages the slope there and at the Euler point, except on
//! the last step to `sigma = 0`. The model is fed `x_sigma / sqrt(1 + sigma^2)`, the VP sample,
//! so these solvers keep that as their state and run on any elbo denoiser: one Euler step on
//! the VP state is DDIM's deterministic update (Song et al. 2021, eq. 12) between the same
//! levels.
//!
//! As diffusers, the run starts from `x_sigma = init z` with `init = sigma_0` for the `linspace`
//! and `trailing` spacings and `sqrt(1 + sigma_0^2)` for `leading` (the exact scale; the other
//! is smaller by about `1 / (2 sigma_0^2)`, 2e-5 for the linear betas' `sigma_0 = 157`), and
//! returns `x_sigma` at the last level (`x_0` when it is zero). Deterministic: no noise.

use super::{Clip, Level, Sigmas, Spacing, check_batch, predict_data};
use crate::denoiser::{Condition, Denoiser};
use crate::error::{Result, RunError, check_len};
use crate::schedule::NoiseSchedule;

/// diffusers' `init_noise_sigma` over the VP scale at the first level (1 for `leading`).
fn start_scale(sigmas: &Sigmas, first: &Level) -> f64 {
    if sigmas.spacing() == Spacing::Leading { 1.0 } else { first.sigma / first.scale() }
}

/// The Euler sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Euler {
    /// The levels (diffusers' Euler family: [`super::SigmaFamily::Discrete`]).
    pub sigmas: Sigmas,
    /// What is done to each data prediction (diffusers' Euler does nothing).
    pub clip: Clip,
}

impl Euler {
    /// Euler on `sigmas`, no clip.
    pub fn new(sigmas: Sigmas) -> Self {
        Euler { sigmas, clip: Clip::Off }
    }

    /// Runs the chain: `x` holds the standard normal start on entry and the sample on return;
    /// `scratch` (the length of `x`) receives the model's outputs. `K` denoiser calls.
    pub fn sample<D: Denoiser, S: NoiseSchedule + ?Sized>(
        &self,
        denoiser: &mut D,
        schedule: &S,
        x: &mut [f32],
        scratch: &mut [f32],
        cond: Condition<'_>,
    ) -> core::result::Result<(), RunError<D::Error>> {
        check_batch(denoiser, x, scratch, cond)?;
        let clip = self.clip.check()?;
        let steps = schedule.steps();
        let first = self.sigmas.get(schedule, 0)?;
        let c = start_scale(&self.sigmas, &first) as f32;
        x.iter_mut().for_each(|v| *v *= c);
        for step in self.sigmas.steps(schedule) {
            let (_, now, next) = step?;
            predict_data(denoiser, x, now.noise_level(steps), cond, scratch, clip)?;
            // x_sigma' = x_sigma + (x_sigma - D) / sigma (sigma' - sigma), on the VP state
            let r = next.sigma / now.sigma;
            let (cx, cd) = ((now.scale() * r / next.scale()) as f32, ((1.0 - r) / next.scale()) as f32);
            for (xv, &d) in x.iter_mut().zip(scratch.iter()) {
                *xv = cx * *xv + cd * d;
            }
        }
        Ok(finish(&self.sigmas, schedule, x)?)
    }
}

/// Back from the VP state to `x_sigma` at the last level (nothing to do at sigma 0), and the
/// finiteness check of every run.
fn finish<S: NoiseSchedule + ?Sized>(sigmas: &Sigmas, schedule: &S, x: &mut [f32]) -> Result<()> {
    let last = sigmas.get(schedule, sigmas.len())?;
    if last.sigma > 0.0 {
        let c = last.scale() as f32;
        x.iter_mut().for_each(|v| *v *= c);
    }
    super::check_finite(x)
}

/// Heun's second-order sampler: `2K - 1` denoiser calls for `K` levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heun {
    /// The levels (diffusers' Heun: [`super::SigmaFamily::Discrete`], final sigma zero).
    pub sigmas: Sigmas,
    /// What is done to each data prediction (diffusers' `clip_sample`).
    pub clip: Clip,
}

impl Heun {
    /// Heun on `sigmas`, no clip.
    pub fn new(sigmas: Sigmas) -> Self {
        Heun { sigmas, clip: Clip::Off }
    }

    /// The denoiser calls of a run.
    pub fn calls(&self) -> usize {
        2 * self.sigmas.len() - 1
    }

    /// Runs the chain as [`Euler::sample`]; `history` (twice the length of `x`) keeps the
    /// step's start and first data prediction.
    pub fn sample<D: Denoiser, S: NoiseSchedule + ?Sized>(
        &self,
        denoiser: &mut D,
        schedule: &S,
        x: &mut [f32],
        scratch: &mut [f32],
        history: &mut [f32],
        cond: Condition<'_>,
    ) -> core::result::Result<(), RunError<D::Error>> {
        check_batch(denoiser, x, scratch, cond)?;
        let clip = self.clip.check()?;
        let len = x.len();
        check_len(2 * len, history.len())?;
        let (start, slope) = history.split_at_mut(len);
        let steps = schedule.steps();
        let first = self.sigmas.get(schedule, 0)?;
        let c = start_scale(&self.sigmas, &first) as f32;
        x.iter_mut().for_each(|v| *v *= c);
        for step in self.sigmas.steps(schedule) {
            let (_, now, next) = step?;
            let (c0, c1) = (now.scale(), next.scale());
            let r = next.sigma / now.sigma;
            predict_data(denoiser, x, now.noise_level(steps), cond, scratch, clip)?;
            // the Euler point, as in Euler::sample; the start and D_1 kept
            let (cx, cd) = ((c0 * r / c1) as f32, ((1.0 - r) / c1) as f32);
            for (((xv, &d), s0), d1) in x.iter_mut().zip(scratch.iter()).zip(start.iter_mut()).zip(slope.iter_mut()) {
                *s0 = *xv;
                *d1 = d;
                *xv = cx * *xv + cd * d;
            }
            if next.sigma == 0.0 {
                continue; // the last step stays first order
            }
            // the mean of the slopes (x - D_1)/sigma and (x' - D_2)/sigma' over the step,
            // written in the data predictions so that no large x_sigma cancels:
            // x_sigma'' = r x_sigma + (1 - r)(2r - 1)/(2r) D_1 + (1 - r)/(2r) D_2
            predict_data(denoiser, x, next.noise_level(steps), cond, scratch, clip)?;
            let (w1, w2) = ((1.0 - r) * (2.0 * r - 1.0) / (2.0 * r), (1.0 - r) / (2.0 * r));
            let (w1, w2) = ((w1 / c1) as f32, (w2 / c1) as f32);
            for (((xv, &d2), &s0), &d1) in x.iter_mut().zip(scratch.iter()).zip(start.iter()).zip(slope.iter()) {
                *xv = cx * s0 + w1 * d1 + w2 * d2;
            }
        }
        Ok(finish(&self.sigmas, schedule, x)?)
    }
}
