//! Sampling as a library function: any [`Denoiser`] (a checkpoint, an ONNX model, the exact
//! denoiser of a mixture, or a guided one) with any sampler of the core.

use elbo_core::denoiser::{Condition, Denoiser};
use elbo_core::elbo::ReverseVariance;
use elbo_core::rng::Noise;
use elbo_core::sampler::{
    AnnealedLangevin, Clip, Ddim, Ddpm, Deis, DpmSolverPP, Euler, FinalSigma, Heun, SigmaFamily, Sigmas, SolverType,
    Spacing, TimeRounding, Timesteps, UniPc, UniPcVariant,
};
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
    /// The few-step solvers' settings (diffusers' names).
    pub solver: SolverSettings,
}

/// The few-step solvers' settings beyond the sampler's name, as diffusers' schedulers name
/// them (DPMSolverMultistep, UniPCMultistep, DEISMultistep, EulerDiscrete, HeunDiscrete).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolverSettings {
    /// `solver_order` of UniPC and DEIS (default 2; DPM-Solver++'s comes from the sampler's
    /// name).
    pub order: usize,
    /// DPM-Solver++'s `solver_type`: midpoint (default) or heun.
    pub solver_type: SolverType,
    /// UniPC's `solver_type`: bh2 (default) or bh1.
    pub unipc_variant: UniPcVariant,
    /// UniPC's corrector (false where the config's `disable_corrector` lists every step).
    pub corrector: bool,
    /// `lower_order_final` (default true).
    pub lower_order_final: bool,
    /// DPM-Solver++'s `euler_at_final` (default false).
    pub euler_at_final: bool,
    /// `final_sigmas_type` "zero" (default) rather than "sigma_min".
    pub final_sigma_zero: bool,
    /// `use_karras_sigmas` (`--karras`).
    pub karras: bool,
    /// Euler's `sigma_min` and `sigma_max` of the Karras ramp.
    pub sigma_range: (Option<f64>, Option<f64>),
    /// The schedule is `squaredcos_cap_v2`: DPM-Solver++ then truncates its Karras timesteps
    /// instead of rounding them, as diffusers does.
    pub cosine: bool,
}

impl Default for SolverSettings {
    fn default() -> Self {
        SolverSettings {
            order: 2,
            solver_type: SolverType::Midpoint,
            unipc_variant: UniPcVariant::Bh2,
            corrector: true,
            lower_order_final: true,
            euler_at_final: false,
            final_sigma_zero: true,
            karras: false,
            sigma_range: (None, None),
            cosine: false,
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
            solver: SolverSettings::default(),
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
            SamplerKind::Dpmpp2m | SamplerKind::Dpmpp3m | SamplerKind::Unipc | SamplerKind::Deis => steps(20),
            SamplerKind::Euler => steps(20),
            SamplerKind::Heun => (2 * steps(20)).saturating_sub(1),
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
    if a.solver.karras && !a.sampler.on_sigmas() {
        return Err(input(format!(
            "--karras: applies to dpmpp2m, dpmpp3m, unipc, deis, euler and heun (not {})",
            a.sampler
        )));
    }
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
        SamplerKind::Dpmpp2m | SamplerKind::Dpmpp3m | SamplerKind::Unipc | SamplerKind::Deis => {
            let k = a.steps.unwrap_or(20.min(t.saturating_sub(1)).max(1));
            let o = &a.solver;
            let mut sigmas =
                Sigmas::new(SigmaFamily::Multistep, spacing, k, t, a.steps_offset).map_err(|e| flag("--steps", e))?;
            if o.karras {
                // diffusers: UniPC and DEIS round the Karras timesteps, DPM-Solver++ too
                // except on a cosine schedule, where the int64 cast truncates them
                let rounding =
                    if a.sampler.is_dpm() && o.cosine { TimeRounding::Truncate } else { TimeRounding::Nearest };
                sigmas = sigmas.karras(o.sigma_range.0, o.sigma_range.1, rounding).map_err(|e| flag("--karras", e))?;
            }
            // what follows the last level, by each scheduler's rule
            let last = match (a.sampler, o.karras, o.final_sigma_zero) {
                (SamplerKind::Deis, false, _) => FinalSigma::First,
                (SamplerKind::Deis, true, _) | (SamplerKind::Unipc, true, false) => FinalSigma::Repeat,
                (_, _, true) => FinalSigma::Zero,
                (_, _, false) => FinalSigma::First,
            };
            let sigmas = sigmas.ending(last);
            match a.sampler {
                SamplerKind::Unipc => {
                    let mut u = UniPc::new(o.order, sigmas).map_err(|e| flag("--sampler", e))?;
                    u.variant = o.unipc_variant;
                    u.lower_order_final = o.lower_order_final;
                    u.corrector = o.corrector;
                    u.clip = a.clip;
                    let mut history = vec![0.0f32; u.order * x.len()];
                    u.sample(den, schedule, x, &mut scratch, &mut history, cond).map_err(run_err)
                }
                SamplerKind::Deis => {
                    let mut d = Deis::new(o.order, sigmas).map_err(|e| flag("--sampler", e))?;
                    d.lower_order_final = o.lower_order_final;
                    d.clip = a.clip;
                    let mut history = vec![0.0f32; (d.order - 1) * x.len()];
                    d.sample(den, schedule, x, &mut scratch, &mut history, cond).map_err(run_err)
                }
                _ => {
                    let order = if a.sampler == SamplerKind::Dpmpp2m { 2 } else { 3 };
                    let mut dpm = DpmSolverPP::with_sigmas(order, sigmas).map_err(|e| flag("--sampler", e))?;
                    dpm.solver_type = o.solver_type;
                    dpm.lower_order_final = o.lower_order_final;
                    dpm.euler_at_final = o.euler_at_final;
                    dpm.clip = a.clip;
                    let mut history = vec![0.0f32; (order - 1) * x.len()];
                    dpm.sample(den, schedule, x, &mut scratch, &mut history, cond).map_err(run_err)
                }
            }
        }
        SamplerKind::Euler | SamplerKind::Heun => {
            let k = a.steps.unwrap_or(20.min(t));
            let o = &a.solver;
            let mut sigmas =
                Sigmas::new(SigmaFamily::Discrete, spacing, k, t, a.steps_offset).map_err(|e| flag("--steps", e))?;
            if o.karras {
                sigmas = sigmas
                    .karras(o.sigma_range.0, o.sigma_range.1, TimeRounding::Exact)
                    .map_err(|e| flag("--karras", e))?;
            }
            if a.sampler == SamplerKind::Euler {
                let sigmas = sigmas.ending(if o.final_sigma_zero { FinalSigma::Zero } else { FinalSigma::First });
                Euler { sigmas, clip: a.clip }.sample(den, schedule, x, &mut scratch, cond).map_err(run_err)
            } else {
                let mut history = vec![0.0f32; 2 * x.len()];
                Heun { sigmas, clip: a.clip }
                    .sample(den, schedule, x, &mut scratch, &mut history, cond)
                    .map_err(run_err)
            }
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
