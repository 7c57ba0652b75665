//! The four parameterisations of the denoiser's output and the conversions between them
//! (seed 004 eqs. 69, 115-125, 131-135; Salimans & Ho 2022 for v):
//!
//! - `x_t = a x_0 + s eps` with `a = sqrt(abar_t)`, `s = sqrt(1 - abar_t)` (eq. 69);
//! - `x_0 = (x_t - s eps) / a` (eq. 115);
//! - `v = a eps - s x_0`, so `x_0 = a x_t - s v` and `eps = s x_t + a v` (as `a^2 + s^2 = 1`);
//! - score `= grad log p(x_t) = -eps / s` (Tweedie, eqs. 131-135: `a x_0 = x_t + s^2 score`).
//!
//! Every conversion goes through the pair `(x_0, eps)`: [`to_x0_eps`] and [`from_x0_eps`] are
//! the only places these formulas are written. They are generic over f32 (samplers) and f64
//! (likelihood terms).

use core::ops::{Add, Div, Mul, Neg, Sub};

use crate::error::{Error, Result, check_len};

/// What a denoiser predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prediction {
    /// The noise `eps` (Ho et al. 2020).
    Eps,
    /// The data `x_0`.
    X0,
    /// The velocity `v = sqrt(abar) eps - sqrt(1 - abar) x_0`.
    V,
    /// The score `grad log p(x_t)`.
    Score,
}

impl Prediction {
    /// `eps`/`epsilon`, `x0`/`sample`, `v`/`v_prediction`, `score` (diffusers' names accepted).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "eps" | "epsilon" => Ok(Prediction::Eps),
            "x0" | "sample" => Ok(Prediction::X0),
            "v" | "v_prediction" => Ok(Prediction::V),
            "score" => Ok(Prediction::Score),
            _ => Err(Error::UnknownName { what: "prediction" }),
        }
    }

    /// The short name (`eps`, `x0`, `v`, `score`).
    pub fn name(self) -> &'static str {
        match self {
            Prediction::Eps => "eps",
            Prediction::X0 => "x0",
            Prediction::V => "v",
            Prediction::Score => "score",
        }
    }
}

/// The arithmetic the conversions need; implemented for f32 and f64.
pub trait Real:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> + Neg<Output = Self>
{
    /// Widening (or identity) conversion from f32.
    fn of(x: f32) -> Self;
}

impl Real for f32 {
    #[inline]
    fn of(x: f32) -> Self {
        x
    }
}

impl Real for f64 {
    #[inline]
    fn of(x: f32) -> Self {
        f64::from(x)
    }
}

/// `(x_0, eps)` implied by a prediction `p` of kind `kind` at `x_t`, with `a = sqrt(abar_t)` and
/// `s = sqrt(1 - abar_t)`.
#[inline]
pub fn to_x0_eps<R: Real>(kind: Prediction, p: R, xt: R, a: R, s: R) -> (R, R) {
    match kind {
        Prediction::Eps => ((xt - s * p) / a, p),
        Prediction::X0 => (p, (xt - a * p) / s),
        Prediction::V => (a * xt - s * p, s * xt + a * p),
        Prediction::Score => {
            let eps = -(s * p);
            ((xt - s * eps) / a, eps)
        }
    }
}

/// The prediction of kind `kind` for a pair `(x_0, eps)` (the inverse of [`to_x0_eps`]).
#[inline]
pub fn from_x0_eps<R: Real>(kind: Prediction, x0: R, eps: R, a: R, s: R) -> R {
    match kind {
        Prediction::Eps => eps,
        Prediction::X0 => x0,
        Prediction::V => a * eps - s * x0,
        Prediction::Score => -eps / s,
    }
}

/// Converts a batch of predictions from `from` to `to` at noise level `(a, s)`:
/// `out[i] = convert(pred[i])` given `xt[i]`. Buffers must have equal length.
pub fn convert(
    from: Prediction,
    to: Prediction,
    pred: &[f32],
    xt: &[f32],
    a: f32,
    s: f32,
    out: &mut [f32],
) -> Result<()> {
    check_len(pred.len(), xt.len())?;
    check_len(pred.len(), out.len())?;
    for ((o, &p), &x) in out.iter_mut().zip(pred).zip(xt) {
        let (x0, eps) = to_x0_eps(from, p, x, a, s);
        *o = from_x0_eps(to, x0, eps, a, s);
    }
    Ok(())
}
