//! The boundary between the math and a network: every denoiser (the exact one of a Gaussian
//! mixture, the host MLP, an ONNX model, a firmware MLP) implements [`Denoiser`].

use crate::param::Prediction;

/// The noise level a denoiser is asked about. Discrete models read `timestep` (what diffusers
/// and ONNX exports feed: `t - 1` at the table's `t`), continuous-time ones
/// `(timestep + 1) / steps` or `log_snr`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseLevel {
    /// The 0-based model time: `t - 1` at the schedule's timestep `t` in `1..=steps`, and a
    /// fraction between two of them where a sampler's levels fall between the table's entries
    /// (Karras sigmas, Euler's unrounded linspace), interpolated as diffusers' `_sigma_to_t`.
    pub timestep: f32,
    /// The number of timesteps `T` of the schedule.
    pub steps: usize,
    /// `lambda_t = log SNR_t`.
    pub log_snr: f32,
    /// `sqrt(abar_t)`.
    pub sqrt_abar: f32,
    /// `sqrt(1 - abar_t)`.
    pub sqrt_one_minus_abar: f32,
}

impl NoiseLevel {
    /// The level at a table entry.
    pub fn of(step: &crate::schedule::Step) -> Self {
        NoiseLevel {
            timestep: step.t.saturating_sub(1) as f32,
            steps: step.steps,
            log_snr: step.log_snr,
            sqrt_abar: step.cur.sqrt_abar,
            sqrt_one_minus_abar: step.cur.sqrt_one_minus_abar,
        }
    }
}

/// What the prediction is conditioned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition<'a> {
    /// No condition: the unconditional model (the null class of a classifier-free model).
    Unconditional,
    /// One class label per example of the batch.
    Class(&'a [u32]),
}

/// A batched denoiser: `x` holds `n` vectors of dimension [`Denoiser::dim`] one after another,
/// and `out` receives the prediction of kind [`Denoiser::prediction`] for each, in the same
/// layout. Implementations may assume `x.len() == out.len()` and that it is a multiple of
/// `dim()` (the core checks before calling), and return their own error type otherwise.
pub trait Denoiser {
    /// The implementation's error.
    type Error;
    /// The data dimension `D` of one example.
    fn dim(&self) -> usize;
    /// What the output means.
    fn prediction(&self) -> Prediction;
    /// The number of classes (0: unconditional only).
    fn classes(&self) -> usize {
        0
    }
    /// Predicts for a batch at one noise level.
    fn predict(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
    ) -> Result<(), Self::Error>;
    /// Whether the model also predicts its reverse variance (improved-diffusion's
    /// `learned_range`; Nichol & Dhariwal 2021, eq. 15).
    fn has_variance(&self) -> bool {
        false
    }
    /// [`predict`](Self::predict), and for a model with a variance head its variance output
    /// `v` into `variance` (one per coordinate, same layout as `out`; `[-1, 1]` spans
    /// `[log btilde_t, log beta_t]`). Called only when [`has_variance`](Self::has_variance);
    /// the default predicts and writes the midpoint 0.
    fn predict_with_variance(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
        variance: &mut [f32],
    ) -> Result<(), Self::Error> {
        variance.fill(0.0);
        self.predict(x, level, cond, out)
    }
    /// Classifier-free guidance's pair (seed 004 eq. 170): the prediction under `cond` into
    /// `out` and the unconditional one into `uncond`, for the same batch. The default makes two
    /// calls; a model that runs a doubled batch in one call overrides it (the results must be
    /// those of the two calls).
    fn predict_pair(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
        uncond: &mut [f32],
    ) -> Result<(), Self::Error> {
        self.predict(x, level, Condition::Unconditional, uncond)?;
        self.predict(x, level, cond, out)
    }
}

impl<D: Denoiser + ?Sized> Denoiser for &mut D {
    type Error = D::Error;
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn prediction(&self) -> Prediction {
        (**self).prediction()
    }
    fn classes(&self) -> usize {
        (**self).classes()
    }
    fn predict(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
    ) -> Result<(), Self::Error> {
        (**self).predict(x, level, cond, out)
    }
    fn has_variance(&self) -> bool {
        (**self).has_variance()
    }
    fn predict_with_variance(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
        variance: &mut [f32],
    ) -> Result<(), Self::Error> {
        (**self).predict_with_variance(x, level, cond, out, variance)
    }
    fn predict_pair(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
        uncond: &mut [f32],
    ) -> Result<(), Self::Error> {
        (**self).predict_pair(x, level, cond, out, uncond)
    }
}

/// Supplies `grad_x log p(y | x_t)` for classifier guidance (seed 004 eq. 166).
pub trait Classifier {
    /// The implementation's error.
    type Error;
    /// Writes the gradient of `log p(y = labels[i] | x_t)` for each example into `out`.
    fn grad_log_prob(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        labels: &[u32],
        out: &mut [f32],
    ) -> Result<(), Self::Error>;
}

impl<C: Classifier + ?Sized> Classifier for &mut C {
    type Error = C::Error;
    fn grad_log_prob(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        labels: &[u32],
        out: &mut [f32],
    ) -> Result<(), Self::Error> {
        (**self).grad_log_prob(x, level, labels, out)
    }
}
