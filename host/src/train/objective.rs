//! The discrete-time training objectives, one type each behind one trait: `L_simple` (seed
//! 003), the bound's terms with the Rao-Blackwellised or the Monte Carlo estimator (seed 000,
//! the core's [`kl_grad`], [`mc_log_ratio_grad`], [`nll_grad`]), and the weighted ELBO (seed
//! 002 eq. 11). A [`Loss`] is a sum of them (hybrid: simple + 0.001 VLB).

use elbo_core::elbo::{ReverseVariance, reverse_log_variance};
use elbo_core::gaussian::{kl_grad, mc_log_ratio_grad, nll_grad};
use elbo_core::param::{from_x0_eps, to_x0_eps};
use elbo_core::weighting::Weighting;
use elbo_core::{Prediction, Step};

use super::{HYBRID_LAMBDA, Loss};

/// One example at one timestep: what every objective reads.
pub(super) struct Example<'a> {
    /// What the network predicts.
    pub kind: Prediction,
    /// The fixed reverse variance (unless the model has a variance head).
    pub variance: ReverseVariance,
    /// The timestep's coefficients.
    pub step: &'a Step,
    /// `SNR_{t-1}/SNR_t - 1` for weighted losses.
    pub snr_ratio: f64,
    /// `T`.
    pub steps: f64,
    /// The `D` mean outputs.
    pub mean: &'a [f32],
    /// The `D` variance outputs (empty without a variance head).
    pub var_out: &'a [f32],
    /// The clean example, its noise, the noisy input, and the Monte Carlo draw.
    pub x0: &'a [f32],
    pub eps: &'a [f32],
    pub xt: &'a [f32],
    pub z: &'a [f32],
}

impl Example<'_> {
    /// `(sqrt(abar_t), sqrt(1 - abar_t))`.
    fn coefficients(&self) -> (f64, f64) {
        (f64::from(self.step.cur.sqrt_abar), f64::from(self.step.cur.sqrt_one_minus_abar))
    }
}

/// A training objective: adds one example's loss to `total` and its gradient with respect to
/// the network's outputs to `gm` (the means) and `gv` (the variance outputs).
pub(super) trait Objective {
    /// Adds the loss and the gradient (in this order over the coordinates).
    fn add(&self, ex: &Example<'_>, total: &mut f64, gm: &mut [f32], gv: &mut [f32]);
}

/// `L_simple`: `||output - target||^2 / D` with the target of the prediction kind.
pub(super) struct Simple;

impl Objective for Simple {
    fn add(&self, ex: &Example<'_>, total: &mut f64, gm: &mut [f32], _: &mut [f32]) {
        let (a, s) = ex.coefficients();
        let d = ex.x0.len() as f64;
        for (((g, &m), &x), &e) in gm.iter_mut().zip(ex.mean).zip(ex.x0).zip(ex.eps) {
            let target = from_x0_eps(ex.kind, f64::from(x), f64::from(e), a, s);
            let r = f64::from(m) - target;
            *total += r * r / d;
            *g += (2.0 * r / d) as f32;
        }
    }
}

/// `scale T L_{t-1} / D`: the bound's term at the example's timestep (the decoder at `t = 1`),
/// Rao-Blackwellised (the analytic KL) or Monte Carlo (one draw).
pub(super) struct Bound {
    /// The weight of the term (1, or the hybrid loss's lambda).
    pub scale: f64,
    /// The Monte Carlo estimator instead of the analytic KL.
    pub monte_carlo: bool,
    /// Whether the term trains the mean (improved-diffusion's hybrid objective holds the mean
    /// fixed in the VLB of a learned-variance model: the VLB trains only the variance).
    pub mean_grad: bool,
}

impl Objective for Bound {
    fn add(&self, ex: &Example<'_>, total: &mut f64, gm: &mut [f32], gv: &mut [f32]) {
        let st = ex.step;
        let (a, s) = ex.coefficients();
        let d = ex.x0.len() as f64;
        let vlb_scale = self.scale * ex.steps / d;
        let learned = !ex.var_out.is_empty();
        // The outputs enter through x0_hat, affine in the output: the derivative is the
        // conversion of a unit output at x_t = 0.
        let (dx0, _) = to_x0_eps(ex.kind, 1.0, 0.0, a, s);
        let lv_q = f64::from(st.posterior_log_variance_clipped);
        let dlv_dv = 0.5 * (f64::from(st.log_beta) - lv_q);
        let (c0, ct) = (f64::from(st.posterior_mean_coef_x0), f64::from(st.posterior_mean_coef_xt));
        let sd_q = (0.5 * lv_q).exp();
        for i in 0..ex.x0.len() {
            let lv_p = if learned {
                reverse_log_variance(st, ReverseVariance::LearnedRange, ex.var_out[i])
            } else {
                reverse_log_variance(st, ex.variance, 0.0)
            };
            let (x0_hat, _) = to_x0_eps(ex.kind, f64::from(ex.mean[i]), f64::from(ex.xt[i]), a, s);
            let e = f64::from(ex.x0[i]) - x0_hat;
            // the core's terms with their derivatives in the model's mean
            // m_p = c0 x0_hat + ct x_t (so d m_p / d x0_hat = c0) and log-variance
            let term = if st.t == 1 {
                nll_grad(f64::from(ex.x0[i]), c0 * x0_hat + ct * f64::from(ex.xt[i]), lv_p)
            } else if self.monte_carlo {
                let zz = f64::from(ex.z[i]);
                mc_log_ratio_grad(c0 * e + sd_q * zz, zz, lv_q, lv_p)
            } else {
                kl_grad(c0 * e, lv_q, lv_p)
            };
            *total += vlb_scale * term.value;
            if self.mean_grad {
                gm[i] += (vlb_scale * term.d_mean * c0 * dx0) as f32;
            }
            if learned {
                gv[i] += (vlb_scale * term.d_log_var * dlv_dv) as f32;
            }
        }
    }
}

/// A weighting of the weighted-ELBO family, discretised as
/// `T/2 w(lambda_t) (SNR_{t-1}/SNR_t - 1) ||eps_hat - eps||^2 / D`.
pub(super) struct Weighted(pub Weighting);

impl Objective for Weighted {
    fn add(&self, ex: &Example<'_>, total: &mut f64, gm: &mut [f32], _: &mut [f32]) {
        let (a, s) = ex.coefficients();
        let d = ex.x0.len() as f64;
        let (_, deps) = to_x0_eps(ex.kind, 1.0, 0.0, a, s);
        let factor = 0.5 * ex.steps * self.0.weight(f64::from(ex.step.log_snr)) * ex.snr_ratio / d;
        for (((g, &m), &xt), &e) in gm.iter_mut().zip(ex.mean).zip(ex.xt).zip(ex.eps) {
            let (_, eps_hat) = to_x0_eps(ex.kind, f64::from(m), f64::from(xt), a, s);
            let r = eps_hat - f64::from(e);
            *total += factor * r * r;
            *g += (2.0 * factor * r * deps) as f32;
        }
    }
}

/// The objectives a loss sums, applied in a fixed order (simple, bound, weighted).
#[derive(Default)]
pub(super) struct Objectives {
    simple: Option<Simple>,
    bound: Option<Bound>,
    weighted: Option<Weighted>,
}

impl Objective for Objectives {
    fn add(&self, ex: &Example<'_>, total: &mut f64, gm: &mut [f32], gv: &mut [f32]) {
        let parts: [Option<&dyn Objective>; 3] = [
            self.simple.as_ref().map(|o| o as &dyn Objective),
            self.bound.as_ref().map(|o| o as &dyn Objective),
            self.weighted.as_ref().map(|o| o as &dyn Objective),
        ];
        for o in parts.into_iter().flatten() {
            o.add(ex, total, gm, gv);
        }
    }
}

impl Loss {
    /// The objectives this loss sums (`learned`: the model has a variance head).
    pub(super) fn objectives(self, learned: bool) -> Objectives {
        let bound = |scale, monte_carlo, mean_grad| Some(Bound { scale, monte_carlo, mean_grad });
        match self {
            Loss::Simple => Objectives { simple: Some(Simple), ..Default::default() },
            Loss::Vlb => Objectives { bound: bound(1.0, false, true), ..Default::default() },
            Loss::Mc => Objectives { bound: bound(1.0, true, true), ..Default::default() },
            Loss::Hybrid => {
                Objectives { simple: Some(Simple), bound: bound(HYBRID_LAMBDA, false, !learned), ..Default::default() }
            }
            Loss::Weighted(w) => Objectives { weighted: Some(Weighted(w)), ..Default::default() },
            Loss::CrossEntropy => Objectives::default(),
        }
    }
}
