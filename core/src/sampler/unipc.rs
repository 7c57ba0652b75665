//! UniPC multistep (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast
//! Sampling of Diffusion Models"), in its data-prediction form as diffusers'
//! `UniPCMultistepScheduler` computes it (`predict_x0 = true`, `solver_type` bh1 or bh2).
//!
//! With the half log-SNR `lambda`, the data predictions `m_i` and the step `h = lambda_t -
//! lambda_s`, the predictor UniP of order `p` is
//! `x_t = (sigma_t / sigma_s) x_s - alpha_t (e^-h - 1) m_s - alpha_t B(h) sum_k rho_k D_k`,
//! `D_k = (m_{s_k} - m_s) / r_k`, `r_k = (lambda_{s_k} - lambda_s) / h`, and the corrector UniC
//! runs the same update again once the model has been called at `x_t`, with `m_t - m_s` as one
//! more difference (`r = 1`). The weights `rho` solve `R rho = b`, `R_{qk} = r_k^q`,
//! `b_q = q! g_{q+1} / B(h)` with `g_1 = (e^u - 1)/u - 1`, `g_{q+1} = g_q / u - 1/(q+1)!` and
//! `u = -h` (the paper's `h phi_{q+1}` terms of the exponential integrator); the predictor of
//! order 2 uses `rho = 1/2`, the corrector of order 1 `rho = 1/2`. `B(h) = u` (bh1) or
//! `e^u - 1` (bh2).
//!
//! The corrected sample differs from the predicted one only by the difference of the two
//! weightings of the same `D_k` (both start from the same `x_s`, `m_s` and levels), so the
//! corrector is applied as that difference and the corrected sample needs no buffer of its
//! own. The model output at the predicted sample is reused for the next step (no extra
//! denoiser call). Deterministic: no noise.

use super::{Clip, Sigmas, check_batch, predict_data};
use crate::denoiser::{Condition, Denoiser};
use crate::error::{Error, Result, RunError, check_len};
use crate::schedule::NoiseSchedule;

/// diffusers' `solver_type`: the `B(h)` of UniPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniPcVariant {
    /// `B(h) = -h` (in diffusers' sign convention `hh = -h`).
    Bh1,
    /// `B(h) = e^-h - 1` (diffusers' default).
    Bh2,
}

/// UniPC multistep of order 1, 2 (diffusers' default) or 3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UniPc {
    /// The predictor's order.
    pub order: usize,
    /// The levels (diffusers' multistep family).
    pub sigmas: Sigmas,
    /// `B(h)`.
    pub variant: UniPcVariant,
    /// diffusers' `lower_order_final` (default true): the order is at most the steps left.
    pub lower_order_final: bool,
    /// Whether UniC corrects each step (diffusers' empty `disable_corrector`).
    pub corrector: bool,
    /// What is done to each data prediction (diffusers applies thresholding only).
    pub clip: Clip,
}

/// The weights `rho` for the differences `r` (the last is the corrector's `1`, or the
/// predictor's ignored one) and the step `h`: `(rho, B(h))`. `n` weights solve the first `n`
/// rows of `R rho = b` on the first `n` differences.
fn weights(variant: UniPcVariant, r: &[f64], n: usize, h: f64) -> Result<([f64; 3], f64)> {
    let hh = -h;
    let b_h = match variant {
        UniPcVariant::Bh1 => hh,
        UniPcVariant::Bh2 => libm::expm1(hh),
    };
    // b_q = h_phi_{q+1} q! / B(h), h_phi_1 = e^hh - 1, h_phi_{k+1} = h_phi_k / hh - 1/(k+1)!
    let mut b = [0.0f64; 3];
    let mut phi = libm::expm1(hh) / hh - 1.0;
    let mut factorial = 1.0;
    for (q, bq) in b.iter_mut().enumerate().take(n) {
        *bq = phi * factorial / b_h;
        factorial *= (q + 2) as f64;
        phi = phi / hh - 1.0 / factorial;
    }
    // R_{qk} = r_k^q, solved by Gaussian elimination with partial pivoting (n <= 3)
    let mut m = [[0.0f64; 4]; 3];
    for k in 0..n {
        let mut p = 1.0;
        for row in m.iter_mut().take(n) {
            row[k] = p;
            p *= r[k];
        }
    }
    for q in 0..n {
        m[q][3] = b[q];
    }
    for col in 0..n {
        let piv = (col..n).max_by(|&a, &c| m[a][col].abs().total_cmp(&m[c][col].abs())).unwrap_or(col);
        m.swap(col, piv);
        if m[col][col] == 0.0 || !m[col][col].is_finite() {
            return Err(Error::NonFinite { what: "UniPC weights" });
        }
        let pivot = m[col];
        for row in &mut m[col + 1..n] {
            let f = row[col] / pivot[col];
            for (v, &p) in row.iter_mut().zip(&pivot).skip(col) {
                *v -= f * p;
            }
        }
    }
    let mut rho = [0.0f64; 3];
    for q in (0..n).rev() {
        let tail: f64 = (q + 1..n).map(|k| m[q][k] * rho[k]).sum();
        rho[q] = (m[q][3] - tail) / m[q][q];
    }
    Ok((rho, b_h))
}

impl UniPc {
    /// UniPC of `order` on `sigmas`, bh2, `lower_order_final`, corrected, no clip.
    pub fn new(order: usize, sigmas: Sigmas) -> Result<Self> {
        if !(1..=3).contains(&order) {
            return Err(Error::InvalidParameter { name: "order", reason: "1, 2 or 3" });
        }
        Ok(UniPc {
            order,
            sigmas,
            variant: UniPcVariant::Bh2,
            lower_order_final: true,
            corrector: true,
            clip: Clip::Off,
        })
    }

    /// The predictor's order at step `i` (diffusers: at most the steps taken so far plus one,
    /// and with `lower_order_final` at most the steps left).
    pub fn order_at(&self, i: usize) -> usize {
        let left = if self.lower_order_final { self.sigmas.len() - i } else { self.order };
        self.order.min(left).min(i + 1)
    }

    /// Runs the chain from `x = x_T` to `x_0`; `scratch` (the length of `x`) receives the model's
    /// outputs, `history` (`order` times that length) the data predictions of the steps before,
    /// the latest first.
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
        check_len(self.order * len, history.len())?;
        let steps = schedule.steps();
        // lambda of the levels before, the latest first (each level is computed once)
        let mut before = [0.0f64; 3];
        for step in self.sigmas.steps(schedule) {
            let (i, now, next) = step?;
            predict_data(denoiser, x, now.noise_level(steps), cond, scratch, clip)?;
            if i > 0 && self.corrector {
                // UniC over the step i-1 -> i, of the predictor's order there
                let o = self.order_at(i - 1);
                let l0 = before[0];
                let h = now.lambda() - l0;
                let mut r = [1.0f64; 3];
                for (k, rk) in r.iter_mut().enumerate().take(o - 1) {
                    *rk = (before[k + 1] - l0) / h;
                }
                let (rho_c, b_h) = if o == 1 {
                    ([0.5, 0.0, 0.0], weights(self.variant, &r, 0, h)?.1)
                } else {
                    weights(self.variant, &r, o, h)?
                };
                let rho_p = predictor_weights(self.variant, &r, o, h)?;
                let g = now.alpha_sigma().0 * b_h;
                // x += alpha_t B(h) (sum_k (rho_p - rho_c)_k D_k - rho_c,last (m_t - m_s))
                let mut c = [0.0f32; 3];
                for k in 0..o - 1 {
                    c[k] = (g * (rho_p[k] - rho_c[k]) / r[k]) as f32;
                }
                let ct = (-g * rho_c[o - 1]) as f32;
                for e in 0..len {
                    let m_s = history[e];
                    let mut acc = ct * (scratch[e] - m_s);
                    for (k, &ck) in c.iter().enumerate().take(o - 1) {
                        acc += ck * (history[(k + 1) * len + e] - m_s);
                    }
                    x[e] += acc;
                }
            }
            // UniP from level i to i+1
            let o = self.order_at(i);
            let (l0, h) = (now.lambda(), next.lambda() - now.lambda());
            let mut r = [1.0f64; 3];
            for (k, rk) in r.iter_mut().enumerate().take(o - 1) {
                *rk = (before[k] - l0) / h;
            }
            let rho_p = predictor_weights(self.variant, &r, o, h)?;
            let b_h = weights(self.variant, &r, 0, h)?.1;
            let ((alpha_t, sigma_t), (_, sigma_s)) = (next.alpha_sigma(), now.alpha_sigma());
            let cx = (sigma_t / sigma_s) as f32;
            let cm = (-alpha_t * libm::expm1(-h)) as f32;
            let mut c = [0.0f32; 3];
            for k in 0..o - 1 {
                c[k] = (-alpha_t * b_h * rho_p[k] / r[k]) as f32;
            }
            for e in 0..len {
                let m_s = scratch[e];
                let mut v = cx * x[e] + cm * m_s;
                for (k, &ck) in c.iter().enumerate().take(o - 1) {
                    v += ck * (history[k * len + e] - m_s);
                }
                x[e] = v;
            }
            // the history moves on, the latest first
            history.copy_within(..(self.order - 1) * len, len);
            history[..len].copy_from_slice(scratch);
            before = [l0, before[0], before[1]];
        }
        super::check_finite(x)?;
        Ok(())
    }
}

/// The predictor's weights of order `o`: none for 1, `1/2` for 2, else the first `o - 1` rows
/// of `R rho = b` on the first `o - 1` differences.
fn predictor_weights(variant: UniPcVariant, r: &[f64], o: usize, h: f64) -> Result<[f64; 3]> {
    Ok(match o {
        1 => [0.0; 3],
        2 => [0.5, 0.0, 0.0],
        _ => weights(variant, r, o - 1, h)?.0,
    })
}
