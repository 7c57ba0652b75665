//! Reverse-process samplers. Each works in place on a caller-provided batch `x` (`n` examples of
//! dimension `D`: `x_T` on entry, the sample on return) with one caller-provided scratch buffer
//! of the same length for the model's output, and allocates nothing.
//!
//! - [`Ddpm`]: ancestral sampling `x_{t-1} = mu_theta(x_t, t) + sigma_t z` (seed 004 eq. 94);
//! - [`Ddim`]: Song et al. 2021 with `eta`, diffusers' step exactly;
//! - [`DpmSolverPP`]: DPM-Solver++ multistep of order 1-3 (Lu et al. 2022), deterministic;
//! - [`UniPc`]: UniPC multistep, predictor and corrector (Zhao et al. 2023), deterministic;
//! - [`Deis`]: DEIS multistep (Zhang & Chen 2023), deterministic;
//! - [`Euler`] and [`Heun`]: the probability-flow ODE in `sigma` (Karras et al. 2022, Alg. 1),
//!   on the table's levels or Karras' ([`Sigmas`]);
//! - [`AnnealedLangevin`]: Langevin dynamics (seed 004 eq. 158) over decreasing noise levels;
//! - [`ClassifierFree`] and [`ClassifierGuided`]: denoiser adapters for guidance (eqs. 166, 170)
//!   that any sampler can drive.

mod ddim;
mod ddpm;
mod deis;
mod dpm_solver;
mod euler;
mod guidance;
mod langevin;
mod sigmas;
mod spacing;
mod unipc;

pub use ddim::{Ddim, DdimCoefficients, ddim_update};
pub use ddpm::{Ddpm, Sigma, ddpm_sigma, ddpm_update};
pub use deis::Deis;
pub use dpm_solver::{DpmSolverPP, SolverType};
pub use euler::{Euler, Heun};
pub use guidance::{ClassifierFree, ClassifierGuided, GuidedError};
pub use langevin::AnnealedLangevin;
pub use sigmas::{
    FinalSigma, KARRAS_RHO, Level, SigmaFamily, SigmaSpacing, Sigmas, TimeRounding, sigma_to_t, table_sigma,
};
pub use spacing::{Spacing, Timesteps};
pub use unipc::{UniPc, UniPcVariant};

use crate::denoiser::{Condition, Denoiser};
use crate::error::{Error, Result, check_len};
use crate::param::Prediction;

/// What is done to a predicted `x_0` before an update (diffusers' `clip_sample` and
/// `thresholding`). Off by default: data need not live in `[-1, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Clip {
    /// `x0_hat` as predicted.
    #[default]
    Off,
    /// Clamped to `[-r, r]` (diffusers' `clip_sample` with `clip_sample_range = r`).
    Range(f32),
    /// Dynamic thresholding (Saharia et al. 2022, Imagen, Sec. 2.3; diffusers'
    /// `_threshold_sample`): per example, `s` is the `ratio`-quantile of `|x0_hat|` (linear
    /// interpolation, as `torch.quantile`), clamped to `[1, max]`; then
    /// `x0_hat <- clamp(x0_hat, -s, s) / s`.
    Dynamic {
        /// diffusers' `dynamic_thresholding_ratio` (0.995), in `[0, 1]`.
        ratio: f32,
        /// diffusers' `sample_max_value` (1.0), at least 1.
        max: f32,
    },
}

impl Clip {
    /// Checks the parameters (a finite range > 0; a ratio in `[0, 1]`, a maximum `>= 1`).
    pub fn check(self) -> Result<Self> {
        match self {
            Clip::Off => Ok(self),
            Clip::Range(r) if r > 0.0 && r.is_finite() => Ok(self),
            Clip::Range(_) => Err(Error::InvalidParameter { name: "clip", reason: "a finite range > 0" }),
            Clip::Dynamic { ratio, max } if (0.0..=1.0).contains(&ratio) && max >= 1.0 && max.is_finite() => Ok(self),
            Clip::Dynamic { .. } => {
                Err(Error::InvalidParameter { name: "thresholding", reason: "a ratio in [0, 1] and a maximum >= 1" })
            }
        }
    }
}

/// [`Clip`] resolved for one example: clamp `x0_hat` to `[-r, r]`, then divide by `scale`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct X0Map {
    r: f32,
    scale: Option<f32>,
}

impl X0Map {
    /// Resolves `clip` for one example whose `x0_hat` values `x0s` yields (the quantile needs no
    /// buffer: it is found by bisection on the bits, reading `x0s` about 64 times).
    pub(crate) fn new<I: Iterator<Item = f32> + Clone>(clip: Clip, x0s: I) -> Option<Self> {
        match clip {
            Clip::Off => None,
            Clip::Range(r) => Some(X0Map { r, scale: None }),
            Clip::Dynamic { ratio, max } => {
                let n = x0s.clone().count();
                if n == 0 {
                    return None;
                }
                // torch.quantile in f32: rank = q (n - 1), its floor and ceiling, then lerp
                let rank = ratio * (n - 1) as f32;
                let below = rank as usize;
                let above = libm::ceilf(rank) as usize;
                let lo = kth_abs(x0s.clone(), below.min(n - 1));
                let hi = if above == below { lo } else { kth_abs(x0s, above.min(n - 1)) };
                let w = rank - below as f32;
                let q = if w < 0.5 { lo + w * (hi - lo) } else { hi - (hi - lo) * (1.0 - w) };
                let s = q.clamp(1.0, max);
                Some(X0Map { r: s, scale: Some(s) })
            }
        }
    }

    #[inline]
    pub(crate) fn apply(m: Option<Self>, x0: f32) -> f32 {
        match m {
            None => x0,
            Some(X0Map { r, scale: None }) => x0.clamp(-r, r),
            Some(X0Map { r, scale: Some(s) }) => x0.clamp(-r, r) / s,
        }
    }
}

/// The `k`-th smallest (0-based) of the absolute values `xs` (finite or not; NaN counts as the
/// largest), by bisection on the bits of non-negative `f32`s, which order as the values do.
fn kth_abs<I: Iterator<Item = f32> + Clone>(xs: I, k: usize) -> f32 {
    let (mut lo, mut hi) = (0u32, 0x7fff_ffffu32);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let le = xs.clone().filter(|v| v.abs().to_bits() <= mid).count();
        if le > k { hi = mid } else { lo = mid + 1 }
    }
    f32::from_bits(lo)
}

/// Normals an update draws at a time (a stack buffer: the core allocates nothing).
const NOISE_CHUNK: usize = 256;

/// Walks `x` a chunk at a time: `f(first, x_chunk, z)` with `z` the normals of elements
/// `first..` that `noise(first, z)` fills (one pass over `x`, the noise in a stack buffer).
pub(crate) fn with_noise(
    x: &mut [f32],
    mut noise: impl FnMut(usize, &mut [f32]),
    mut f: impl FnMut(usize, &mut [f32], &[f32]),
) {
    let mut z = [0.0f32; NOISE_CHUNK];
    for (k, xc) in x.chunks_mut(NOISE_CHUNK).enumerate() {
        let z = &mut z[..xc.len()];
        noise(k * NOISE_CHUNK, z);
        f(k * NOISE_CHUNK, xc, z);
    }
}

/// Calls the model on `x` at `level` and turns its output in `out` into the data prediction
/// `x0_hat` (seed 004 eq. 115 and its v and x0 forms, [`to_x0_eps`](crate::param::to_x0_eps)), with `clip`
/// applied to each example: the first half of every few-step solver's step.
pub(crate) fn predict_data<D: Denoiser>(
    denoiser: &mut D,
    x: &[f32],
    level: crate::denoiser::NoiseLevel,
    cond: Condition<'_>,
    out: &mut [f32],
    clip: Clip,
) -> core::result::Result<(), crate::error::RunError<D::Error>> {
    denoiser.predict(x, level, cond, out).map_err(crate::error::RunError::Model)?;
    let (kind, dim) = (denoiser.prediction(), denoiser.dim());
    let (a, s) = (level.sqrt_abar, level.sqrt_one_minus_abar);
    for (p, &xv) in out.iter_mut().zip(x.iter()) {
        *p = crate::param::to_x0_eps(kind, *p, xv, a, s).0;
    }
    if clip != Clip::Off {
        for e in out.chunks_mut(dim) {
            let map = X0Map::new(clip, e.iter().copied());
            e.iter_mut().for_each(|v| *v = X0Map::apply(map, *v));
        }
    }
    Ok(())
}

/// The order a multistep solver of order `order` uses at step `i` of `k` (DPM-Solver++'s and
/// DEIS' `step()` in diffusers): lower while there is no history, and with
/// `lower_order_final` on the last two steps of a run shorter than 15; `first_order_last`
/// forces the last step to order 1 (DPM-Solver++'s `euler_at_final` and its final sigma 0).
pub(crate) fn multistep_order(
    order: usize,
    i: usize,
    k: usize,
    lower_order_final: bool,
    first_order_last: bool,
) -> usize {
    let last = i + 1 == k && (first_order_last || (lower_order_final && k < 15));
    let second_last = i + 2 == k && lower_order_final && k < 15;
    if order == 1 || i < 1 || last {
        1
    } else if order == 2 || i < 2 || second_last {
        2
    } else {
        3
    }
}

/// The end of every sampling run: samples that overflowed (extreme or damaged input: a
/// model, a schedule table, a start) are an error, never an `Ok` with non-finite values.
pub(crate) fn check_finite(x: &[f32]) -> Result<()> {
    if x.iter().all(|v| v.is_finite()) { Ok(()) } else { Err(Error::NonFinite { what: "sampling" }) }
}

/// Checks a batch and returns `n`.
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
