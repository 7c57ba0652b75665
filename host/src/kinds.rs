//! The closed sets of names the tool knows (schedules, predictions, timestep sampling,
//! variances, samplers, spacings, model families), as types: parsed once at the edge (clap's
//! [`ValueEnum`]) and stored as themselves in `config.json` (serde, under the same names), so
//! that nothing inside compares strings.

use clap::ValueEnum;
use elbo_core::elbo::ReverseVariance;
use elbo_core::sampler::Spacing;
use elbo_core::timesteps::TimeSampling;
use elbo_core::{BetaSchedule, Prediction};
use serde::{Deserialize, Serialize};

/// A noise schedule: diffusers' discrete ones, and the continuous-time ones of VDM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
pub enum ScheduleKind {
    /// linspace of betas.
    #[value(name = "linear")]
    #[serde(rename = "linear")]
    Linear,
    /// linspace of square roots of betas, squared.
    #[value(name = "scaled_linear")]
    #[serde(rename = "scaled_linear")]
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal.
    #[value(name = "squaredcos_cap_v2", alias = "cosine")]
    #[serde(rename = "squaredcos_cap_v2", alias = "cosine")]
    SquaredcosCapV2,
    /// Sigmoid-spaced betas.
    #[value(name = "sigmoid")]
    #[serde(rename = "sigmoid")]
    Sigmoid,
    /// Continuous time: VDM's linear gamma.
    #[value(name = "vdm")]
    #[serde(rename = "vdm")]
    Vdm,
    /// Continuous time: the cosine log-SNR.
    #[value(name = "cosine-logsnr")]
    #[serde(rename = "cosine-logsnr")]
    CosineLogsnr,
    /// Continuous time: VDM's learned monotone schedule (trained with the model).
    #[value(name = "learned")]
    #[serde(rename = "learned")]
    Learned,
}

impl ScheduleKind {
    /// The name on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Linear => "linear",
            ScheduleKind::ScaledLinear => "scaled_linear",
            ScheduleKind::SquaredcosCapV2 => "squaredcos_cap_v2",
            ScheduleKind::Sigmoid => "sigmoid",
            ScheduleKind::Vdm => "vdm",
            ScheduleKind::CosineLogsnr => "cosine-logsnr",
            ScheduleKind::Learned => "learned",
        }
    }

    /// Whether it is a continuous-time schedule.
    pub fn is_continuous(self) -> bool {
        matches!(self, ScheduleKind::Vdm | ScheduleKind::CosineLogsnr | ScheduleKind::Learned)
    }

    /// The core's discrete schedule (`None` in continuous time).
    pub fn beta_schedule(self, beta_start: f64, beta_end: f64) -> Option<BetaSchedule<'static>> {
        match self {
            ScheduleKind::Linear => Some(BetaSchedule::Linear { beta_start, beta_end }),
            ScheduleKind::ScaledLinear => Some(BetaSchedule::ScaledLinear { beta_start, beta_end }),
            ScheduleKind::SquaredcosCapV2 => Some(BetaSchedule::SquaredCosCapV2),
            ScheduleKind::Sigmoid => Some(BetaSchedule::Sigmoid { beta_start, beta_end }),
            _ => None,
        }
    }

    /// Parses a name (diffusers' `beta_schedule`, or one of the continuous-time ones).
    pub fn from_name(name: &str) -> Option<Self> {
        <Self as ValueEnum>::from_str(name, false).ok()
    }
}

impl std::fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a denoiser predicts (seed 004's parameterisations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PredictionKind {
    /// The noise.
    Eps,
    /// The clean data.
    X0,
    /// `sqrt(abar) eps - sqrt(1 - abar) x0`.
    V,
    /// The score `-eps / sqrt(1 - abar)`.
    Score,
}

impl From<PredictionKind> for Prediction {
    fn from(p: PredictionKind) -> Self {
        match p {
            PredictionKind::Eps => Prediction::Eps,
            PredictionKind::X0 => Prediction::X0,
            PredictionKind::V => Prediction::V,
            PredictionKind::Score => Prediction::Score,
        }
    }
}

impl From<Prediction> for PredictionKind {
    fn from(p: Prediction) -> Self {
        match p {
            Prediction::Eps => PredictionKind::Eps,
            Prediction::X0 => PredictionKind::X0,
            Prediction::V => PredictionKind::V,
            Prediction::Score => PredictionKind::Score,
        }
    }
}

impl std::fmt::Display for PredictionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Prediction::from(*self).name())
    }
}

/// How training draws timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestepSampling {
    /// Independent uniform draws.
    Uniform,
    /// Antithetic pairs.
    Antithetic,
    /// Stratified (VDM's low-discrepancy times).
    Stratified,
    /// improved-diffusion's loss-second-moment importance sampling.
    Importance,
}

impl TimestepSampling {
    /// The core's plain sampler (`None` for importance sampling, which keeps a history).
    pub fn plain(self) -> Option<TimeSampling> {
        match self {
            TimestepSampling::Uniform => Some(TimeSampling::Uniform),
            TimestepSampling::Antithetic => Some(TimeSampling::Antithetic),
            TimestepSampling::Stratified => Some(TimeSampling::Stratified),
            TimestepSampling::Importance => None,
        }
    }
}

impl std::fmt::Display for TimestepSampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default().as_str())
    }
}

/// A fixed reverse variance (the VLB terms of training).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FixedVariance {
    /// `btilde_t`.
    Small,
    /// `beta_t`.
    Large,
}

impl From<FixedVariance> for ReverseVariance {
    fn from(v: FixedVariance) -> Self {
        match v {
            FixedVariance::Small => ReverseVariance::Small,
            FixedVariance::Large => ReverseVariance::Large,
        }
    }
}

impl std::fmt::Display for FixedVariance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FixedVariance::Small => "small",
            FixedVariance::Large => "large",
        })
    }
}

/// The reverse variance of sampling and evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum VarianceChoice {
    /// `btilde_t`.
    Small,
    /// `beta_t`.
    Large,
    /// A learned-variance model's own.
    Learned,
    /// The model's own if it learned one; otherwise the command's default.
    Auto,
}

/// A model family trained by `elbo train`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Family {
    /// A diffusion model.
    Diffusion,
    /// A VAE (one latent level).
    Vae,
    /// A two-level Markovian hierarchical VAE.
    Hvae,
}

/// How data is normalised before training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Normalize {
    /// Per-coordinate mean and standard deviation.
    Standard,
    /// None (data already in [-1, 1]).
    None,
}

/// A reverse-process sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum SamplerKind {
    /// Ancestral sampling.
    Ddpm,
    /// DDIM with eta.
    Ddim,
    /// Annealed Langevin dynamics.
    Langevin,
    /// DPM-Solver++ multistep, second order (diffusers' DPMSolverMultistepScheduler default).
    Dpmpp2m,
    /// DPM-Solver++ multistep, third order.
    Dpmpp3m,
    /// UniPC multistep, bh2, order 2 (diffusers' UniPCMultistepScheduler default).
    Unipc,
    /// Euler on the probability-flow ODE in sigma (diffusers' EulerDiscreteScheduler).
    Euler,
    /// Heun's second-order method in sigma (diffusers' HeunDiscreteScheduler; 2K - 1 calls).
    Heun,
    /// DEIS multistep, order 2 (diffusers' DEISMultistepScheduler default).
    Deis,
}

impl SamplerKind {
    /// DPM-Solver++ of either order.
    pub fn is_dpm(self) -> bool {
        matches!(self, SamplerKind::Dpmpp2m | SamplerKind::Dpmpp3m)
    }

    /// The few-step solvers on sigma levels (those `--karras` applies to).
    pub fn on_sigmas(self) -> bool {
        matches!(
            self,
            SamplerKind::Dpmpp2m
                | SamplerKind::Dpmpp3m
                | SamplerKind::Unipc
                | SamplerKind::Deis
                | SamplerKind::Euler
                | SamplerKind::Heun
        )
    }
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
            SamplerKind::Langevin => "langevin",
            SamplerKind::Dpmpp2m => "dpmpp2m",
            SamplerKind::Dpmpp3m => "dpmpp3m",
            SamplerKind::Unipc => "unipc",
            SamplerKind::Euler => "euler",
            SamplerKind::Heun => "heun",
            SamplerKind::Deis => "deis",
        })
    }
}

/// Timestep spacing of a strided sampler, as diffusers defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum SpacingKind {
    /// `arange(K) * (T // K)`.
    Leading,
    /// `round(arange(T, 0, -T/K)) - 1`.
    Trailing,
    /// `round(linspace(0, T - 1, K))`.
    Linspace,
}

impl From<SpacingKind> for Spacing {
    fn from(s: SpacingKind) -> Self {
        match s {
            SpacingKind::Leading => Spacing::Leading,
            SpacingKind::Trailing => Spacing::Trailing,
            SpacingKind::Linspace => Spacing::Linspace,
        }
    }
}

/// The estimator of the bound's diffusion terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EstimatorKind {
    /// Rao-Blackwellised (the analytic KL).
    Rb,
    /// Monte Carlo (a sampled `x_{t-1}`).
    Mc,
}

impl std::fmt::Display for EstimatorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EstimatorKind::Rb => "rb",
            EstimatorKind::Mc => "mc",
        })
    }
}

/// An ONNX Runtime execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum ExecutionProvider {
    /// The CPU.
    Cpu,
    /// CUDA; fails if it cannot be registered.
    Cuda,
    /// CUDA if it registers, else the CPU.
    Auto,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in files are the names on the command line.
    #[test]
    fn serde_names_are_the_command_line_names() {
        for k in ScheduleKind::value_variants() {
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.to_possible_value().unwrap().get_name()));
            assert_eq!(ScheduleKind::from_name(k.name()), Some(*k));
        }
        assert_eq!(serde_json::from_str::<ScheduleKind>("\"cosine\"").unwrap(), ScheduleKind::SquaredcosCapV2);
        for k in PredictionKind::value_variants() {
            assert_eq!(serde_json::to_string(k).unwrap(), format!("\"{k}\""));
        }
        for k in TimestepSampling::value_variants() {
            assert_eq!(serde_json::to_string(k).unwrap(), format!("\"{k}\""));
        }
    }
}

/// A likelihood computed next to the bound (`eval --likelihood`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum LikelihoodKind {
    /// The probability-flow ODE's exact likelihood (RK45, exact or Hutchinson divergence).
    Ode,
}

/// Which part of a built-in image set (`--split`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training images.
    #[default]
    Train,
    /// The held-out images.
    Test,
}

/// The network family of a diffusion model (`--arch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Arch {
    /// The U-Net for image data (`[C, H, W]` examples), the MLP otherwise.
    Auto,
    /// An MLP on flat vectors.
    Mlp,
    /// A convolutional U-Net (image data).
    Unet,
}

/// `--shard I/N`: part `I` (0-based) of a run split into `N` parts. Example `i` of the run
/// belongs to part `I` when `I n / N <= i < (I + 1) n / N` (contiguous parts whose sizes
/// differ by at most one); its random numbers depend on `i` only, so the parts' outputs
/// concatenate to the whole run's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// `I`, in `0..N`.
    pub index: u64,
    /// `N`, at least 1.
    pub count: u64,
}

impl Shard {
    /// The whole run.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// The run's examples of this part, of `n` in all.
    pub fn range(self, n: usize) -> std::ops::Range<usize> {
        let at = |i: u64| (u128::from(i) * n as u128 / u128::from(self.count)) as usize;
        at(self.index)..at(self.index + 1)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("expected I/N with 0 <= I < N (part I of N), found '{s}'");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse::<u64>().map_err(|_| bad())?, n.trim().parse::<u64>().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}
