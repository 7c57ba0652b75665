//! Reverse-process samplers. Each works in place on a caller-provided batch `x` (`n` examples of
//! dimension `D`: `x_T` on entry, the sample on return) with one caller-provided scratch buffer
//! of the same length for the model's output, and allocates nothing.
//!
//! - [`Ddpm`]: ancestral sampling `x_{t-1} = mu_theta(x_t, t) + sigma_t z` (seed 004 eq. 94);
//! - [`Ddim`]: Song et al. 2021 with `eta`, diffusers' step exactly;
//! - [`AnnealedLangevin`]: Langevin dynamics (seed 004 eq. 158) over decreasing noise levels;
//! - [`ClassifierFree`] and [`ClassifierGuided`]: denoiser adapters for guidance (eqs. 166, 170)
//!   that any sampler can drive.

mod ddim;
mod ddpm;
mod guidance;
mod langevin;
mod spacing;

pub use ddim::{Ddim, DdimCoefficients, ddim_update};
pub use ddpm::{Ddpm, Sigma, ddpm_sigma, ddpm_update};
pub use guidance::{ClassifierFree, ClassifierGuided, GuidedError};
pub use langevin::AnnealedLangevin;
pub use spacing::{Spacing, Timesteps};

use crate::denoiser::{Condition, Denoiser};
use crate::error::{Error, Result, check_len};
use crate::param::Prediction;

/// Clamps a predicted `x_0` to `[-r, r]` when `clip = Some(r)` (off by default: data need not
/// live in `[-1, 1]`).
#[inline]
pub(crate) fn clip_x0(x0: f32, clip: Option<f32>) -> f32 {
    match clip {
        Some(r) => x0.clamp(-r, r),
        None => x0,
    }
}

/// Checks a batch and returns `n`.
/// The end of every sampling run: samples that overflowed (extreme or damaged input: a
/// model, a schedule table, a start) are an error, never an `Ok` with non-finite values.
pub(crate) fn check_finite(x: &[f32]) -> Result<()> {
    if x.iter().all(|v| v.is_finite()) { Ok(()) } else { Err(Error::NonFinite { what: "sampling" }) }
}

pub(crate) fn check_batch<D: Denoiser>(denoiser: &D, x: &[f32], scratch: &[f32], cond: Condition<'_>) -> Result<usize> {
    let dim = denoiser.dim();
    if dim == 0 || x.is_empty() || !x.len().is_multiple_of(dim) {
        return Err(Error::DimensionMismatch { expected: dim.max(1) * (x.len() / dim.max(1)).max(1), got: x.len() });
    }
    check_len(x.len(), scratch.len())?;
    let n = x.len() / dim;
    if let Condition::Class(labels) = cond {
        if denoiser.classes() == 0 {
            return Err(Error::Unconditional);
        }
        check_len(n, labels.len())?;
        if let Some(&c) = labels.iter().find(|&&c| c as usize >= denoiser.classes()) {
            return Err(Error::ClassOutOfRange { class: c, classes: denoiser.classes() });
        }
    }
    if !x.iter().all(|v| v.is_finite()) {
        return Err(Error::InvalidParameter { name: "x_T", reason: "finite values" });
    }
    Ok(n)
}

/// eps- and score-predictions cannot give `x_0` where `abar_t = 0` (zero terminal SNR).
pub(crate) fn check_signal(kind: Prediction, sqrt_abar: f32) -> Result<()> {
    if sqrt_abar == 0.0 && matches!(kind, Prediction::Eps | Prediction::Score) {
        return Err(Error::Unsupported("eps or score prediction at zero SNR (use v or x0 prediction)"));
    }
    Ok(())
}
