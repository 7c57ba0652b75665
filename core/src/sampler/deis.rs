//! DEIS multistep (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential
//! Integrator", the `logrho` variant of the Adams-Bashforth-type `rho`AB-DEIS), as diffusers'
//! `DEISMultistepScheduler` computes it.
//!
//! In `rho = sigma_t / alpha_t` (the EDM sigma) the probability-flow ODE of `x / alpha` is
//! `d(x/alpha)/drho = eps(x, rho)`. DEIS integrates a Lagrange polynomial of the last `p`
//! noise predictions exactly over `[rho_s, rho_t]`, with the polynomial in `ln rho`:
//! `x_t = alpha_t (x_s / alpha_s + sum_j c_j eps_j)`, `c_j = I_j(rho_t) - I_j(rho_s)` where
//! `I_j` is the antiderivative of the `j`-th Lagrange basis in `ln rho`, closed forms for
//! `p = 2, 3`; order 1 is DDIM's `x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) eps_s`.
//! The noise predictions come from the data predictions (after any clip), as diffusers does.
//! The last level is the table's first (diffusers' DEIS does not land on `sigma = 0`), so the
//! sample is `x` at `t = 1`. Deterministic: no noise.

use super::{Clip, Sigmas, check_batch, multistep_order, predict_data};
use crate::denoiser::{Condition, Denoiser};
use crate::error::{Error, Result, RunError, check_len};
use crate::schedule::NoiseSchedule;

/// DEIS multistep of order 1, 2 (diffusers' default) or 3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deis {
    /// The order.
    pub order: usize,
    /// The levels (diffusers' multistep family; the final one the table's first).
    pub sigmas: Sigmas,
    /// diffusers' `lower_order_final` (default true).
    pub lower_order_final: bool,
    /// What is done to each data prediction before it becomes a noise prediction.
    pub clip: Clip,
}

/// `I(t) = t (ln t - ln c - 1) / (ln b - ln c)`: the antiderivative in `rho` of the linear
/// Lagrange basis in `ln rho` that is 1 at `b` and 0 at `c`.
fn basis2(t: f64, b: f64, c: f64) -> f64 {
    let (lt, lb, lc) = (libm::log(t), libm::log(b), libm::log(c));
    t * (-lc + lt - 1.0) / (lb - lc)
}

/// The antiderivative of the quadratic basis in `ln rho` that is 1 at `b`, 0 at `c` and `d`.
fn basis3(t: f64, b: f64, c: f64, d: f64) -> f64 {
    let (lt, lb, lc, ld) = (libm::log(t), libm::log(b), libm::log(c), libm::log(d));
    let num = t * (lc * (ld - lt + 1.0) - ld * lt + ld + lt * lt - 2.0 * lt + 2.0);
    num / ((lb - lc) * (lb - ld))
}

impl Deis {
    /// DEIS of `order` on `sigmas`, `lower_order_final`, no clip.
    pub fn new(order: usize, sigmas: Sigmas) -> Result<Self> {
        if !(1..=3).contains(&order) {
            return Err(Error::InvalidParameter { name: "order", reason: "1, 2 or 3" });
        }
        Ok(Deis { order, sigmas, lower_order_final: true, clip: Clip::Off })
    }

    /// The order step `i` uses.
    pub fn order_at(&self, i: usize) -> usize {
        multistep_order(self.order, i, self.sigmas.len(), self.lower_order_final, false)
    }

    /// Runs the chain; `scratch` (the length of `x`) receives the model's outputs, `history`
    /// (`order - 1` times that length) the noise predictions of the steps before, the latest
    /// first.
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
        check_len((self.order - 1) * len, history.len())?;
        let steps = schedule.steps();
        // rho (the EDM sigma) of the two levels before, the latest first
        let mut before = [0.0f64; 2];
        for step in self.sigmas.steps(schedule) {
            let (i, now, next) = step?;
            let level = now.noise_level(steps);
            predict_data(denoiser, x, level, cond, scratch, clip)?;
            // eps_hat = (x - alpha x0_hat) / sigma_t, in place of the data prediction
            let (a, s) = (level.sqrt_abar, level.sqrt_one_minus_abar);
            for (p, &xv) in scratch.iter_mut().zip(x.iter()) {
                *p = (xv - a * *p) / s;
            }
            let ((alpha_t, sigma_t), (alpha_s, _)) = (next.alpha_sigma(), now.alpha_sigma());
            let (rt, r0) = (next.sigma, now.sigma);
            match self.order_at(i) {
                1 => {
                    let h = next.lambda() - now.lambda();
                    let (cx, ce) = ((alpha_t / alpha_s) as f32, (-sigma_t * libm::expm1(h)) as f32);
                    for (xv, &e0) in x.iter_mut().zip(scratch.iter()) {
                        *xv = cx * *xv + ce * e0;
                    }
                }
                2 => {
                    let r1 = before[0];
                    let c0 = alpha_t * (basis2(rt, r0, r1) - basis2(r0, r0, r1));
                    let c1 = alpha_t * (basis2(rt, r1, r0) - basis2(r0, r1, r0));
                    let (cx, c0, c1) = ((alpha_t / alpha_s) as f32, c0 as f32, c1 as f32);
                    for ((xv, &e0), &e1) in x.iter_mut().zip(scratch.iter()).zip(&history[..len]) {
                        *xv = cx * *xv + c0 * e0 + c1 * e1;
                    }
                }
                _ => {
                    let (r1, r2) = (before[0], before[1]);
                    let c0 = alpha_t * (basis3(rt, r0, r1, r2) - basis3(r0, r0, r1, r2));
                    let c1 = alpha_t * (basis3(rt, r1, r2, r0) - basis3(r0, r1, r2, r0));
                    let c2 = alpha_t * (basis3(rt, r2, r0, r1) - basis3(r0, r2, r0, r1));
                    let (cx, c0, c1, c2) = ((alpha_t / alpha_s) as f32, c0 as f32, c1 as f32, c2 as f32);
                    let (h1, h2) = history.split_at(len);
                    for (((xv, &e0), &e1), &e2) in x.iter_mut().zip(scratch.iter()).zip(h1).zip(h2) {
                        *xv = cx * *xv + c0 * e0 + c1 * e1 + c2 * e2;
                    }
                }
            }
            if self.order == 3 {
                history.copy_within(..len, len);
            }
            if self.order >= 2 {
                history[..len].copy_from_slice(scratch);
            }
            before = [r0, before[0]];
        }
        super::check_finite(x)?;
        Ok(())
    }
}
