//! The noise levels a few-step sampler visits, on the variance-exploding scale of Karras et al.
//! 2022 (EDM, "Elucidating the Design Space of Diffusion-Based Generative Models"):
//! `sigma = sqrt((1 - abar) / abar)`, so that `x_t / sqrt(abar) = x_0 + sigma eps`, with
//! `alpha = 1 / sqrt(1 + sigma^2)`, `sigma_t = sigma alpha` (the VP scales) and the half
//! log-SNR `lambda = -ln sigma` (seed 004 eq. 4 rewritten in `sigma`).
//!
//! diffusers builds these levels in `set_timesteps` of each scheduler, and the schedulers
//! differ in the details; [`Sigmas`] reproduces each rule, computing every level when asked
//! (no buffer):
//!
//! - the timesteps: [`Timesteps`] of `K` points (Euler, Heun: linspace unrounded) or `K + 1`
//!   points with the last dropped (DPM-Solver++, UniPC, DEIS: rounded);
//! - the sigmas: the table's, linearly interpolated at those timesteps (`np.interp`), or Karras'
//!   ramp (EDM eq. 5, `rho = 7`) between the spaced timesteps' ends (Euler, Heun) or the whole
//!   table's (the multistep schedulers), with the timesteps fed to the model found back by
//!   diffusers' `_sigma_to_t` (log-linear interpolation in the table), rounded or not;
//! - the level after the last: zero, the table's first, or the last repeated.
//!
//! A zero-terminal-SNR table's `abar_T = 0` is taken as `2^-24`, as diffusers does. Levels are
//! rounded to `f32` as diffusers stores its `sigmas`; everything after is f64.

use super::{Spacing, Timesteps};
use crate::denoiser::NoiseLevel;
use crate::error::{Error, Result};
use crate::schedule::NoiseSchedule;

/// EDM's `rho` (Karras et al. 2022, eq. 5 and Table 1).
pub const KARRAS_RHO: f64 = 7.0;

/// Where the sigmas come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SigmaSpacing {
    /// The schedule's table at the spaced timesteps (interpolated linearly between entries).
    Table,
    /// Karras' ramp `(s_max^(1/rho) + i/(K-1) (s_min^(1/rho) - s_max^(1/rho)))^rho`
    /// (EDM eq. 5), between `min` and `max` where given (diffusers' Euler `sigma_min`,
    /// `sigma_max`), else the ends the scheduler uses.
    Karras {
        /// The smallest sigma, if not the scheduler's.
        min: Option<f64>,
        /// The largest sigma, if not the scheduler's.
        max: Option<f64>,
    },
}

/// How a Karras level's interpolated timestep is fed to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeRounding {
    /// As interpolated (Euler, Heun: a float32 timestep).
    Exact,
    /// To the nearest integer (UniPC, DEIS; DPM-Solver++ except on a cosine schedule).
    Nearest,
    /// Toward zero (DPM-Solver++ on `squaredcos_cap_v2`: cast to int64 unrounded).
    Truncate,
}

/// The level after the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalSigma {
    /// Zero: the last step lands on the data prediction (`final_sigmas_type = "zero"`).
    Zero,
    /// The table's first level, `t = 1` (`final_sigmas_type = "sigma_min"`; DEIS).
    First,
    /// The last level again (UniPC's and DEIS' Karras `sigma_min`).
    Repeat,
}

/// Which diffusers family builds the levels (they place the timesteps and the Karras ends
/// differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigmaFamily {
    /// `EulerDiscreteScheduler`, `HeunDiscreteScheduler`: `K` timesteps, linspace unrounded,
    /// Karras between the spaced ends.
    Discrete,
    /// `DPMSolverMultistepScheduler`, `UniPCMultistepScheduler`, `DEISMultistepScheduler`:
    /// `K + 1` rounded timesteps less the last (trailing: `K`), Karras over the whole table.
    Multistep,
}

/// One noise level: its sigma and the 0-based timestep the model is fed there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    /// `sigma = sqrt((1 - abar) / abar)` (0: the data).
    pub sigma: f64,
    /// The 0-based model time.
    pub timestep: f64,
}

impl Level {
    /// `c = sqrt(1 + sigma^2)`: `x_sigma` over the VP sample.
    pub fn scale(&self) -> f64 {
        libm::sqrt(1.0 + self.sigma * self.sigma)
    }

    /// `(alpha, sigma_t) = (1, sigma) / sqrt(1 + sigma^2)`, the VP scales.
    pub fn alpha_sigma(&self) -> (f64, f64) {
        let alpha = 1.0 / self.scale();
        (alpha, self.sigma * alpha)
    }

    /// `lambda = ln(alpha / sigma_t) = -ln sigma` (`+inf` at the data).
    pub fn lambda(&self) -> f64 {
        -libm::log(self.sigma)
    }

    /// What the denoiser is told (`steps`: the schedule's `T`).
    pub fn noise_level(&self, steps: usize) -> NoiseLevel {
        let (a, s) = self.alpha_sigma();
        NoiseLevel {
            timestep: self.timestep as f32,
            steps,
            log_snr: (-2.0 * libm::log(self.sigma)) as f32,
            sqrt_abar: a as f32,
            sqrt_one_minus_abar: s as f32,
        }
    }
}

/// The `K` levels of a sampler and the one after (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sigmas {
    timesteps: Timesteps,
    family: SigmaFamily,
    spacing: SigmaSpacing,
    rounding: TimeRounding,
    last: FinalSigma,
    count: usize,
}

/// `sigma` of the 0-based table entry `j` (`abar = 0` taken as `2^-24`).
pub fn table_sigma<S: NoiseSchedule + ?Sized>(schedule: &S, j: usize) -> Result<f64> {
    let log_abar = schedule.marginal(j + 1)?.log_abar;
    let log_abar = if log_abar == f64::NEG_INFINITY { -24.0 * core::f64::consts::LN_2 } else { log_abar };
    Ok(libm::sqrt(libm::expm1(-log_abar)))
}

/// `np.interp(tau, arange(T), table_sigmas)`: linear in sigma between the entries around the
/// 0-based `tau`, the ends held outside.
fn interp_sigma<S: NoiseSchedule + ?Sized>(schedule: &S, tau: f64) -> Result<f64> {
    let last = schedule.steps() - 1;
    if tau <= 0.0 {
        return table_sigma(schedule, 0);
    }
    if tau >= last as f64 {
        return table_sigma(schedule, last);
    }
    let lo = libm::floor(tau) as usize;
    let w = tau - lo as f64;
    let (a, b) = (table_sigma(schedule, lo)?, table_sigma(schedule, lo + 1)?);
    Ok(if w == 0.0 { a } else { a + w * (b - a) })
}

/// diffusers' `_sigma_to_t`: the 0-based timestep of `sigma`, interpolating linearly in
/// `ln sigma` between the table's entries around it (clamped to the table's range). The entry
/// below is found by bisection (the table's sigmas increase with `t`). Needs `T >= 2`.
pub fn sigma_to_t<S: NoiseSchedule + ?Sized>(schedule: &S, sigma: f64) -> Result<f64> {
    let n = schedule.steps();
    if n < 2 {
        return Err(Error::InvalidParameter { name: "schedule", reason: "at least 2 steps" });
    }
    let ls = libm::log(sigma.max(1e-10));
    let log_sigma = |j: usize| table_sigma(schedule, j).map(libm::log);
    // low = the last j with ln sigma_j <= ls (0 if none), at most n - 2
    let (mut lo, mut hi) = (0usize, n - 1);
    if log_sigma(0)? > ls {
        hi = 0;
    }
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if log_sigma(mid)? <= ls { lo = mid } else { hi = mid - 1 }
    }
    let low = lo.min(n - 2);
    let (a, b) = (log_sigma(low)?, log_sigma(low + 1)?);
    let w = ((a - ls) / (a - b)).clamp(0.0, 1.0);
    Ok((1.0 - w) * low as f64 + w * (low + 1) as f64)
}

impl Sigmas {
    /// `count` levels over the `steps`-step schedule: the `family`'s timesteps with `spacing`
    /// (`offset`: `steps_offset`), the table's sigmas there, and zero after the last.
    pub fn new(family: SigmaFamily, spacing: Spacing, count: usize, steps: usize, offset: usize) -> Result<Self> {
        if count == 0 {
            return Err(Error::ZeroSteps);
        }
        let timesteps = match (family, spacing) {
            (SigmaFamily::Multistep, Spacing::Leading | Spacing::Linspace) => {
                if count >= steps {
                    return Err(Error::TooManySteps { steps: count, timesteps: steps.saturating_sub(1) });
                }
                Timesteps::new(spacing, count + 1, steps, offset)?
            }
            _ => Timesteps::new(spacing, count, steps, offset)?,
        };
        Ok(Sigmas {
            timesteps,
            family,
            spacing: SigmaSpacing::Table,
            rounding: TimeRounding::Exact,
            last: FinalSigma::Zero,
            count,
        })
    }

    /// The same count on Karras' ramp (between `min` and `max` where given), the model fed
    /// the interpolated timesteps rounded by `rounding`.
    pub fn karras(self, min: Option<f64>, max: Option<f64>, rounding: TimeRounding) -> Result<Self> {
        if self.timesteps.steps() < 2 {
            return Err(Error::InvalidParameter { name: "karras", reason: "a schedule of at least 2 steps" });
        }
        let ok = |v: Option<f64>| v.is_none_or(|s| s > 0.0 && s.is_finite());
        if !ok(min) || !ok(max) {
            return Err(Error::InvalidParameter { name: "sigma_min/sigma_max", reason: "finite values > 0" });
        }
        Ok(Sigmas { spacing: SigmaSpacing::Karras { min, max }, rounding, ..self })
    }

    /// The same levels with `last` after the last.
    pub fn ending(self, last: FinalSigma) -> Self {
        Sigmas { last, ..self }
    }

    /// Whether the levels are Karras'.
    pub fn is_karras(&self) -> bool {
        matches!(self.spacing, SigmaSpacing::Karras { .. })
    }

    /// `K`, the number of levels a model is called at (Heun calls twice at all but the first).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Never true; for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The timestep spacing.
    pub fn spacing(&self) -> Spacing {
        self.timesteps.spacing()
    }

    /// What follows the last level.
    pub fn last(&self) -> FinalSigma {
        self.last
    }

    /// The 0-based timestep of position `i` before any Karras ramp (Euler's linspace is not
    /// rounded; the others are integers).
    fn spaced(&self, i: usize) -> Result<f64> {
        if self.family == SigmaFamily::Discrete && self.timesteps.spacing() == Spacing::Linspace {
            // np.linspace(0, T - 1, K, dtype=float32)[::-1]
            let (k, t) = (self.count, self.timesteps.steps());
            let j = k - 1 - i;
            let v = if k == 1 {
                0.0
            } else if j == k - 1 {
                (t - 1) as f64
            } else {
                j as f64 * ((t - 1) as f64 / (k - 1) as f64)
            };
            return Ok(f64::from(v as f32));
        }
        Ok((self.timesteps.get(i)? - 1) as f64)
    }

    /// The steps `(i, level i, level i + 1)` for `i` in `0..K`, each level computed once.
    pub fn steps<'a, S: NoiseSchedule + ?Sized>(
        &'a self,
        schedule: &'a S,
    ) -> impl Iterator<Item = Result<(usize, Level, Level)>> + 'a {
        let mut next = self.get(schedule, 0);
        (0..self.count).map(move |i| {
            let now = next?;
            next = self.get(schedule, i + 1);
            Ok((i, now, next?))
        })
    }

    /// The level at position `i` in `0..K`, or the level after the last at `i = K`.
    pub fn get<S: NoiseSchedule + ?Sized>(&self, schedule: &S, i: usize) -> Result<Level> {
        if i > self.count {
            return Err(Error::TimestepOutOfRange { t: i, steps: self.count });
        }
        if i == self.count {
            let sigma = match self.last {
                FinalSigma::Zero => 0.0,
                FinalSigma::First => f64::from(table_sigma(schedule, 0)? as f32),
                FinalSigma::Repeat => return Ok(Level { timestep: 0.0, ..self.get(schedule, self.count - 1)? }),
            };
            return Ok(Level { sigma, timestep: 0.0 });
        }
        match self.spacing {
            SigmaSpacing::Table => {
                let timestep = self.spaced(i)?;
                Ok(Level { sigma: f64::from(interp_sigma(schedule, timestep)? as f32), timestep })
            }
            SigmaSpacing::Karras { min, max } => {
                let (lo, hi) = match self.family {
                    SigmaFamily::Discrete => (
                        interp_sigma(schedule, self.spaced(self.count - 1)?)?,
                        interp_sigma(schedule, self.spaced(0)?)?,
                    ),
                    SigmaFamily::Multistep => (table_sigma(schedule, 0)?, table_sigma(schedule, schedule.steps() - 1)?),
                };
                let (lo, hi) = (min.unwrap_or(lo), max.unwrap_or(hi));
                let ramp = if self.count == 1 { 0.0 } else { i as f64 / (self.count - 1) as f64 };
                let (a, b) = (libm::pow(hi, 1.0 / KARRAS_RHO), libm::pow(lo, 1.0 / KARRAS_RHO));
                let sigma = libm::pow(a + ramp * (b - a), KARRAS_RHO);
                let t = sigma_to_t(schedule, sigma)?;
                let timestep = match self.rounding {
                    TimeRounding::Exact => f64::from(t as f32),
                    TimeRounding::Nearest => libm::rint(t),
                    TimeRounding::Truncate => libm::trunc(t),
                };
                Ok(Level { sigma: f64::from(sigma as f32), timestep })
            }
        }
    }
}
