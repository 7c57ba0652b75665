//! The forward (noising) process and its posterior.
//!
//! - `q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`, sampled by reparameterisation
//!   `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps` (seed 004 eqs. 69-70);
//! - `q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, btilde_t I)` (seed 004 eq. 84).

use rand_core::Rng;

use crate::error::{Result, check_len};
use crate::rng::standard_normal;
use crate::schedule::{Marginal, Step};

/// `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps` for one coordinate (eq. 69).
#[inline]
pub fn q_sample_elem(m: &Marginal, x0: f32, eps: f32) -> f32 {
    m.sqrt_abar * x0 + m.sqrt_one_minus_abar * eps
}

/// `out = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps` for whole buffers.
pub fn q_sample(m: &Marginal, x0: &[f32], eps: &[f32], out: &mut [f32]) -> Result<()> {
    check_len(x0.len(), eps.len())?;
    check_len(x0.len(), out.len())?;
    for ((o, &x), &e) in out.iter_mut().zip(x0).zip(eps) {
        *o = q_sample_elem(m, x, e);
    }
    Ok(())
}

/// Draws `eps ~ N(0, I)` into `eps` and `x_t ~ q(x_t | x_0)` into `xt`.
pub fn q_sample_rng<R: Rng + ?Sized>(
    m: &Marginal,
    x0: &[f32],
    rng: &mut R,
    eps: &mut [f32],
    xt: &mut [f32],
) -> Result<()> {
    check_len(x0.len(), eps.len())?;
    check_len(x0.len(), xt.len())?;
    for ((o, e), &x) in xt.iter_mut().zip(eps.iter_mut()).zip(x0) {
        *e = standard_normal(rng);
        *o = q_sample_elem(m, x, *e);
    }
    Ok(())
}

/// The posterior mean `c0_t x_0 + ct_t x_t` for one coordinate (eq. 84).
#[inline]
pub fn posterior_mean_elem(step: &Step, x0: f32, xt: f32) -> f32 {
    step.posterior_mean_coef_x0 * x0 + step.posterior_mean_coef_xt * xt
}

/// The posterior mean for whole buffers; its variance is `step.posterior_variance`.
pub fn posterior_mean(step: &Step, x0: &[f32], xt: &[f32], out: &mut [f32]) -> Result<()> {
    check_len(x0.len(), xt.len())?;
    check_len(x0.len(), out.len())?;
    for ((o, &a), &b) in out.iter_mut().zip(x0).zip(xt) {
        *o = posterior_mean_elem(step, a, b);
    }
    Ok(())
}
