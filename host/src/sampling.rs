//! Sampling as a library function: any [`Denoiser`] (a checkpoint, an ONNX model, the exact
//! denoiser of a mixture, or a guided one) with any sampler of the core.

use elbo_core::denoiser::{Condition, Denoiser};
use elbo_core::elbo::ReverseVariance;
use elbo_core::rng::Noise;
use elbo_core::sampler::{AnnealedLangevin, Clip, Ddim, Ddpm, DpmSolverPP, SolverType, Spacing, Timesteps};
use elbo_core::{NoiseSchedule, RunError};

use crate::error::{Error, Result, flag, input};
use crate::kinds::{SamplerKind, SpacingKind, VarianceChoice};

fn run_err<E: std::fmt::Display + 'static>(e: RunError<E>) -> Error {
    crate::error::run_error(e)
}

/// How to sample: the options of `elbo sample` that choose and tune the sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerOptions {
    /// The sampler.
    pub sampler: SamplerKind,
    /// Sampling steps (default: all `T` for DDPM, 50 for DDIM, 100 levels for Langevin).
    pub steps: Option<usize>,
    /// DDIM's eta.
    pub eta: f32,
    /// Timestep spacing of the strided samplers.
    pub spacing: SpacingKind,
    /// DDPM's reverse variance (`Auto`: the model's learned one if it has one, else small).
    pub variance: VarianceChoice,
    /// What is done to the predicted `x_0`.
    pub clip: Clip,
    /// diffusers' `steps_offset` of the `leading` spacing (strided runs only).
    pub steps_offset: usize,
    /// DDIM's last step to `abar = 1` (diffusers' `set_alpha_to_one`), else to `abar_1`.
    pub set_alpha_to_one: bool,
    /// Langevin iterations per noise level.
    pub langevin_steps: usize,
    /// Langevin step size (times `1 - abar_t`).
    pub langevin_step_size: f32,
    /// DPM-Solver++'s settings (diffusers' names).
    pub dpm: DpmSettings,
}

/// DPM-Solver++'s settings beyond its order, as diffusers' `DPMSolverMultistepScheduler`
/// names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpmSettings {
    /// `solver_type`: midpoint (default) or heun.
    pub solver_type: SolverType,
    /// `lower_order_final` (default true).
    pub lower_order_final: bool,
    /// `euler_at_final` (default false).
    pub euler_at_final: bool,
    /// `final_sigmas_type` "zero" (default) rather than "sigma_min".
    pub final_sigma_zero: bool,
}

impl Default for DpmSettings {
    fn default() -> Self {
        DpmSettings {
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            final_sigma_zero: true,
        }
    }
}

impl Default for SamplerOptions {
    /// The command line's defaults.
    fn default() -> Self {
        SamplerOptions {
            sampler: SamplerKind::Ddpm,
            steps: None,
            eta: 0.0,
            spacing: SpacingKind::Trailing,
            variance: VarianceChoice::Auto,
            clip: Clip::Off,
            steps_offset: 0,
            set_alpha_to_one: true,
            langevin_steps: 10,
            langevin_step_size: 0.5,
            dpm: DpmSettings::default(),
        }
    }
}

impl SamplerOptions {
    /// The denoiser calls a run makes on a schedule of `t` steps (the length of its progress).
    pub fn denoiser_calls(&self, t: usize) -> u64 {
        let steps = |default: usize| self.steps.unwrap_or(default.min(t)) as u64;
        match self.sampler {
            SamplerKind::Ddpm => steps(t),
            SamplerKind::Ddim => steps(50),
            // every level's Langevin steps, then one denoising call
            SamplerKind::Langevin => steps(100) * self.langevin_steps as u64 + 1,
            SamplerKind::Dpmpp2m | SamplerKind::Dpmpp3m => steps(20),
        }
    }
}

/// Samples in place: `x` holds `x_T` on entry (any denoiser, any schedule) and the samples in
/// the model's space on return; every random number from `noise` (the batch's example `e` at
/// step `i` is its draw `i` of example `e`: see [`crate::noise`]).
pub fn sample<D: Denoiser>(
    a: &SamplerOptions,
    den: &mut D,
    schedule: &dyn NoiseSchedule,
    x: &mut [f32],
    cond: Condition<'_>,
    noise: &mut dyn Noise,
) -> Result<()>
where
    D::Error: std::fmt::Display + 'static,
{
    let t = schedule.steps();
    let spacing = Spacing::from(a.spacing);
    let variance = match (a.variance, den.has_variance()) {
        (VarianceChoice::Small, _) | (VarianceChoice::Auto, false) => ReverseVariance::Small,
        (VarianceChoice::Large, _) => ReverseVariance::Large,
        (VarianceChoice::Learned | VarianceChoice::Auto, true) => ReverseVariance::LearnedRange,
        (VarianceChoice::Learned, false) => {
            return Err(input("--variance learned: the model has no variance output"));
        }
    };
    // DDPM with a learned variance takes the model's variance output in a second half
    let learned_ddpm = a.sampler == SamplerKind::Ddpm && variance == ReverseVariance::LearnedRange;
    let mut scratch = vec![0.0f32; if learned_ddpm { 2 * x.len() } else { x.len() }];
    match a.sampler {
        SamplerKind::Ddpm => {
            let timesteps = match a.steps {
                None => None,
                Some(k) => Some(Timesteps::new(spacing, k, t, a.steps_offset).map_err(|e| flag("--steps", e))?),
            };
            Ddpm { variance, clip: a.clip, timesteps }
                .sample(den, schedule, x, &mut scratch, cond, noise)
                .map_err(run_err)
        }
        SamplerKind::Ddim => {
            let k = a.steps.unwrap_or(50.min(t));
            let mut ddim = Ddim::with_offset(a.eta, spacing, k, t, a.steps_offset).map_err(|e| match e {
                elbo_core::Error::InvalidParameter { .. } => flag("--eta", e),
                e => flag("--steps", e),
            })?;
            ddim.clip = a.clip;
            ddim.set_alpha_to_one = a.set_alpha_to_one;
            ddim.sample(den, schedule, x, &mut scratch, cond, noise).map_err(run_err)
        }
        SamplerKind::Dpmpp2m | SamplerKind::Dpmpp3m => {
            let order = if a.sampler == SamplerKind::Dpmpp2m { 2 } else { 3 };
            let k = a.steps.unwrap_or(20.min(t.saturating_sub(1)).max(1));
            let mut dpm = DpmSolverPP::new(order, spacing, k, t, a.steps_offset).map_err(|e| flag("--steps", e))?;
            dpm.solver_type = a.dpm.solver_type;
            dpm.lower_order_final = a.dpm.lower_order_final;
            dpm.euler_at_final = a.dpm.euler_at_final;
            dpm.final_sigma_zero = a.dpm.final_sigma_zero;
            dpm.clip = a.clip;
            let mut history = vec![0.0f32; (order - 1) * x.len()];
            dpm.sample(den, schedule, x, &mut scratch, &mut history, cond).map_err(run_err)
        }
        SamplerKind::Langevin => {
            let levels =
                Timesteps::new(spacing, a.steps.unwrap_or(100.min(t)), t, 0).map_err(|e| flag("--steps", e))?;
            AnnealedLangevin {
                levels,
                steps_per_level: a.langevin_steps,
                step_size: a.langevin_step_size,
                denoise: true,
            }
            .sample(den, schedule, x, &mut scratch, cond, noise)
            .map_err(run_err)
        }
    }
}
