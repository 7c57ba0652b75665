//! DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
//! Diffusion Probabilistic Models", Alg. 2 and its third-order extension), as diffusers'
//! `DPMSolverMultistepScheduler` with `algorithm_type = "dpmsolver++"` computes it.
//!
//! In the half log-SNR `lambda = log(alpha / sigma)` (`alpha = sqrt(abar)`,
//! `sigma = sqrt(1 - abar)`), one step from `s` to `t` with `h = lambda_t - lambda_s` and the
//! data predictions `m_0` (now), `m_1`, `m_2` (the steps before) is
//!
//! - order 1 (DDIM's update): `x_t = (sigma_t / sigma_s) x_s - alpha_t (e^-h - 1) D0`;
//! - order 2 (Alg. 2): `... - 1/2 alpha_t (e^-h - 1) D1` (midpoint) or
//!   `... + alpha_t ((e^-h - 1)/h + 1) D1` (Heun), `D1 = (m_0 - m_1) / r_0`, `r_0 = h_0 / h`;
//! - order 3: `... + alpha_t ((e^-h - 1)/h + 1) D1 - alpha_t ((e^-h - 1 + h)/h^2 - 1/2) D2`
//!   with `D1 = D1_0 + r_0/(r_0 + r_1) (D1_0 - D1_1)`, `D2 = (D1_0 - D1_1)/(r_0 + r_1)`.
//!
//! `D0 = m_0`. The first steps use lower orders (there is no history yet), and so do the last
//! ones as diffusers' `lower_order_final` rule says. The levels are [`Sigmas`] (the table's at
//! diffusers' timesteps, or Karras'); every coefficient is computed in f64 from them. The
//! sampler is deterministic: it draws no noise.

use super::{Clip, FinalSigma, SigmaFamily, Sigmas, Spacing, check_batch, multistep_order, predict_data};
use crate::denoiser::{Condition, Denoiser};
use crate::error::{Error, Result, RunError, check_len};
use crate::schedule::NoiseSchedule;

/// How the second-order update treats `D1` (diffusers' `solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverType {
    /// `- 1/2 alpha_t (e^-h - 1) D1` (diffusers' default).
    Midpoint,
    /// `+ alpha_t ((e^-h - 1)/h + 1) D1`.
    Heun,
}

/// DPM-Solver++ multistep of order 1, 2 or 3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpmSolverPP {
    /// 1, 2 (diffusers' default, "2M") or 3 ("3M").
    pub order: usize,
    /// The levels visited and the one after the last (diffusers' `final_sigmas_type`: zero,
    /// the default, lands on the data prediction).
    pub sigmas: Sigmas,
    /// diffusers' `solver_type`.
    pub solver_type: SolverType,
    /// diffusers' `lower_order_final` (default true): the last steps of a run of fewer than 15
    /// use lower orders.
    pub lower_order_final: bool,
    /// diffusers' `euler_at_final`: the last step is first order.
    pub euler_at_final: bool,
    /// What is done to each data prediction (diffusers applies thresholding only).
    pub clip: Clip,
}

impl DpmSolverPP {
    /// `count` steps over a `steps`-step schedule with diffusers' timesteps of this sampler
    /// (`leading` and `linspace` place `count + 1` points and drop the last; `offset` is
    /// `steps_offset`) and the table's sigmas, second order, midpoint, `lower_order_final`,
    /// final sigma zero, no clip.
    pub fn new(order: usize, spacing: Spacing, count: usize, steps: usize, offset: usize) -> Result<Self> {
        let sigmas = Sigmas::new(SigmaFamily::Multistep, spacing, count, steps, offset)?;
        Self::with_sigmas(order, sigmas)
    }

    /// The solver on any levels (Karras', or a final sigma other than zero).
    pub fn with_sigmas(order: usize, sigmas: Sigmas) -> Result<Self> {
        if !(1..=3).contains(&order) {
            return Err(Error::InvalidParameter { name: "order", reason: "1, 2 or 3" });
        }
        Ok(DpmSolverPP {
            order,
            sigmas,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            clip: Clip::Off,
        })
    }

    /// The number of steps (denoiser calls).
    pub fn len(&self) -> usize {
        self.sigmas.len()
    }

    /// Never true; for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.sigmas.is_empty()
    }

    /// The order step `i` uses (diffusers' `step()`: lower at the start and, by its rules, at
    /// the end; a last step to sigma 0 is first order).
    pub fn order_at(&self, i: usize) -> usize {
        let first_order_last = self.euler_at_final || self.sigmas.last() == FinalSigma::Zero;
        multistep_order(self.order, i, self.len(), self.lower_order_final, first_order_last)
    }

    /// Runs the chain from `x = x_T` to `x_0`; `scratch` (the length of `x`) receives the model's
    /// outputs, `history` (`order - 1` times that length) the data predictions of the steps
    /// before.
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
        // lambda of the steps before (s1, s2)
        let mut lambdas = [0.0f64; 2];
        for step in self.sigmas.steps(schedule) {
            let (i, now, next) = step?;
            let ((_, sigma_s), lambda_s) = (now.alpha_sigma(), now.lambda());
            let ((alpha_t, sigma_t), lambda_t) = (next.alpha_sigma(), next.lambda());
            // the data prediction m_0, in place of the model's output
            predict_data(denoiser, x, now.noise_level(steps), cond, scratch, clip)?;
            let h = lambda_t - lambda_s;
            // e^-h - 1, exactly -1 on the final step to the data (h = inf)
            let em1 = libm::expm1(-h);
            let c_x = (sigma_t / sigma_s) as f32;
            let c0 = (-alpha_t * em1) as f32;
            match self.order_at(i) {
                1 => {
                    for (xv, &m0) in x.iter_mut().zip(scratch.iter()) {
                        *xv = c_x * *xv + c0 * m0;
                    }
                }
                2 => {
                    let r0 = (lambda_s - lambdas[0]) / h;
                    let c1 = match self.solver_type {
                        SolverType::Midpoint => -0.5 * alpha_t * em1,
                        SolverType::Heun => alpha_t * (em1 / h + 1.0),
                    } / r0;
                    let c1 = c1 as f32;
                    for ((xv, &m0), &m1) in x.iter_mut().zip(scratch.iter()).zip(&history[..len]) {
                        *xv = c_x * *xv + c0 * m0 + c1 * (m0 - m1);
                    }
                }
                _ => {
                    let (r0, r1) = ((lambda_s - lambdas[0]) / h, (lambdas[0] - lambdas[1]) / h);
                    let k1 = alpha_t * (em1 / h + 1.0);
                    let k2 = -alpha_t * ((em1 + h) / (h * h) - 0.5);
                    let (q0, q1) = ((1.0 / r0) as f32, (1.0 / r1) as f32);
                    let (w, v) = ((r0 / (r0 + r1)) as f32, (1.0 / (r0 + r1)) as f32);
                    let (k1, k2) = (k1 as f32, k2 as f32);
                    let (h1, h2) = history.split_at(len);
                    for (((xv, &m0), &m1), &m2) in x.iter_mut().zip(scratch.iter()).zip(h1).zip(h2) {
                        let d10 = q0 * (m0 - m1);
                        let d11 = q1 * (m1 - m2);
                        let d1 = d10 + w * (d10 - d11);
                        let d2 = v * (d10 - d11);
                        *xv = c_x * *xv + c0 * m0 + k1 * d1 + k2 * d2;
                    }
                }
            }
            // the history moves on: m_2 <- m_1 <- m_0
            if self.order == 3 {
                history.copy_within(..len, len);
            }
            if self.order >= 2 {
                history[..len].copy_from_slice(scratch);
            }
            lambdas = [lambda_s, lambdas[0]];
        }
        super::check_finite(x)?;
        Ok(())
    }
}
