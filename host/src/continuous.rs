//! Continuous-time models (VDM; seed 002 eqs. 8-10, seed 004 eqs. 111-114): the log-SNR
//! schedules a model can be trained with, including a learned monotone one.
//!
//! The learned schedule is VDM's (Kingma et al. 2021, App. H): `SNR(t) = exp(-gamma(t))`
//! (seed 004 eq. 111) with
//! `gamma(t) = gamma_0 + (gamma_1 - gamma_0) (g(t) - g(0)) / (g(1) - g(0))` and
//! `g(t) = a t + (1/K) sum_k c_k (2 sigmoid(u_k (2t - 1) + b_k) - 1)`, where `a, u_k, c_k > 0`
//! (softplus of free parameters): `g` is strictly increasing, so `gamma` is too whatever the
//! parameters, and its end points `gamma_0 < gamma_1` are free parameters of their own
//! (`gamma_1 = gamma_0 + softplus(gap)`). The shape only moves probability mass of the
//! Monte Carlo estimate (seed 002 eq. 12), so, as VDM does, it is trained to minimise the
//! estimator's second moment; the end points are trained on the bound itself.

use elbo_core::schedule::{CosineLogSnr, LinearGamma, LogSnrSchedule};

use crate::error::{Result, input};
use crate::kinds::ScheduleKind;

/// Features of the learned schedule's network.
pub const FEATURES: usize = 32;
/// Parameters of the learned schedule: `gamma_0`, `gap`, `a`, then `u`, `b`, `c` (`K` each).
pub const N_PARAMS: usize = 3 + 3 * FEATURES;

fn softplus(x: f64) -> f64 {
    if x > 30.0 { x } else { x.exp().ln_1p() }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The inverse of softplus (for initialisation).
fn softplus_inv(y: f64) -> f64 {
    y + (-(-y).exp_m1()).ln()
}

/// The learned monotone schedule.
#[derive(Debug, Clone)]
pub struct LearnedGamma {
    gamma_0: f64,
    gap: f64,
    a: f64,
    u: [f64; FEATURES],
    b: [f64; FEATURES],
    c: [f64; FEATURES],
    /// `g(0)`, `g(1)`.
    g0: f64,
    g1: f64,
}

/// `d gamma(t) / d theta` and `d gamma'(t) / d theta` for every parameter (in [`N_PARAMS`]
/// order, with respect to the free parameters).
#[derive(Debug, Clone)]
pub struct GammaGrad {
    /// `d gamma / d theta`.
    pub gamma: [f64; N_PARAMS],
    /// `d gamma' / d theta`.
    pub dgamma: [f64; N_PARAMS],
}

impl LearnedGamma {
    /// Initial free parameters: `gamma` close to linear between `gamma_0` and `gamma_1`, the
    /// network's features spread by `noise` (`3K` standard normals).
    pub fn init(gamma_0: f64, gamma_1: f64, noise: &[f32]) -> Vec<f32> {
        let mut p = vec![0.0f32; N_PARAMS];
        p[0] = gamma_0 as f32;
        p[1] = softplus_inv(gamma_1 - gamma_0) as f32;
        p[2] = softplus_inv(1.0) as f32;
        for k in 0..FEATURES {
            p[3 + k] = softplus_inv(1.0 + f64::from(noise[k]).abs()) as f32;
            p[3 + FEATURES + k] = noise[FEATURES + k];
            p[3 + 2 * FEATURES + k] = softplus_inv(0.1 + 0.1 * f64::from(noise[2 * FEATURES + k]).abs()) as f32;
        }
        p
    }

    /// Reads the free parameters.
    pub fn from_params(p: &[f32]) -> Result<Self> {
        if p.len() != N_PARAMS || p.iter().any(|v| !v.is_finite()) {
            return Err(input(format!("learned schedule: expected {N_PARAMS} finite parameters")));
        }
        let f = |i: usize| f64::from(p[i]);
        let mut s = LearnedGamma {
            gamma_0: f(0),
            gap: softplus(f(1)),
            a: softplus(f(2)),
            u: [0.0; FEATURES],
            b: [0.0; FEATURES],
            c: [0.0; FEATURES],
            g0: 0.0,
            g1: 0.0,
        };
        for k in 0..FEATURES {
            s.u[k] = softplus(f(3 + k));
            s.b[k] = f(3 + FEATURES + k);
            s.c[k] = softplus(f(3 + 2 * FEATURES + k));
        }
        s.g0 = s.g(0.0).0;
        s.g1 = s.g(1.0).0;
        if !(s.gap > 0.0 && s.g1 > s.g0) {
            return Err(input("learned schedule: its end points coincide"));
        }
        Ok(s)
    }

    /// `(g(t), g'(t))`.
    fn g(&self, t: f64) -> (f64, f64) {
        let inv_k = 1.0 / FEATURES as f64;
        let (mut g, mut dg) = (self.a * t, self.a);
        for k in 0..FEATURES {
            let sg = sigmoid(self.u[k] * (2.0 * t - 1.0) + self.b[k]);
            g += inv_k * self.c[k] * (2.0 * sg - 1.0);
            dg += inv_k * self.c[k] * 4.0 * self.u[k] * sg * (1.0 - sg);
        }
        (g, dg)
    }

    /// `(gamma(t), gamma'(t))`.
    pub fn gamma(&self, t: f64) -> (f64, f64) {
        let (g, dg) = self.g(t);
        let span = self.g1 - self.g0;
        (self.gamma_0 + self.gap * (g - self.g0) / span, self.gap * dg / span)
    }

    /// The end points `(gamma_0, gamma_1)`.
    pub fn end_gammas(&self) -> (f64, f64) {
        (self.gamma_0, self.gamma_0 + self.gap)
    }

    /// `d g / d theta`, `d g' / d theta` at `t` for the shape parameters `a, u, b, c` (indices
    /// 2.. of [`N_PARAMS`], with respect to the positive values, not yet the free ones).
    fn g_grad(&self, t: f64, dg: &mut [f64; N_PARAMS], ddg: &mut [f64; N_PARAMS]) {
        let inv_k = 1.0 / FEATURES as f64;
        dg[2] = t;
        ddg[2] = 1.0;
        let x = 2.0 * t - 1.0;
        for k in 0..FEATURES {
            let (u, c) = (self.u[k], self.c[k]);
            let sg = sigmoid(u * x + self.b[k]);
            let s1 = sg * (1.0 - sg);
            let s2 = s1 * (1.0 - 2.0 * sg);
            // g term: c (2 sg - 1) / K; g' term: 4 c u s1 / K
            dg[3 + k] = inv_k * c * 2.0 * s1 * x;
            ddg[3 + k] = inv_k * c * 4.0 * (s1 + u * s2 * x);
            dg[3 + FEATURES + k] = inv_k * c * 2.0 * s1;
            ddg[3 + FEATURES + k] = inv_k * c * 4.0 * u * s2;
            dg[3 + 2 * FEATURES + k] = inv_k * (2.0 * sg - 1.0);
            ddg[3 + 2 * FEATURES + k] = inv_k * 4.0 * u * s1;
        }
    }

    /// The derivatives of `gamma(t)` and `gamma'(t)` with respect to every free parameter.
    pub fn grad(&self, t: f64) -> GammaGrad {
        let (mut dg_t, mut ddg_t) = ([0.0; N_PARAMS], [0.0; N_PARAMS]);
        let (mut dg_0, mut scratch) = ([0.0; N_PARAMS], [0.0; N_PARAMS]);
        let mut dg_1 = [0.0; N_PARAMS];
        self.g_grad(t, &mut dg_t, &mut ddg_t);
        self.g_grad(0.0, &mut dg_0, &mut scratch);
        self.g_grad(1.0, &mut dg_1, &mut scratch);
        let (g, dg) = self.g(t);
        let span = self.g1 - self.g0;
        let h = (g - self.g0) / span; // normalised shape, in [0, 1]
        let dh = dg / span;
        let mut out = GammaGrad { gamma: [0.0; N_PARAMS], dgamma: [0.0; N_PARAMS] };
        // gamma = gamma_0 + gap h, gamma' = gap h'
        out.gamma[0] = 1.0;
        out.gamma[1] = h * sigmoid_of_softplus_inv(self.gap);
        out.dgamma[1] = dh * sigmoid_of_softplus_inv(self.gap);
        for i in 2..N_PARAMS {
            let dspan = dg_1[i] - dg_0[i];
            let d_h = (dg_t[i] - dg_0[i]) / span - h * dspan / span;
            let d_dh = ddg_t[i] / span - dh * dspan / span;
            // the chain through softplus for a, u and c
            let chain = match i {
                2 => sigmoid_of_softplus_inv(self.a),
                _ if (3..3 + FEATURES).contains(&i) => sigmoid_of_softplus_inv(self.u[i - 3]),
                _ if (3 + 2 * FEATURES..N_PARAMS).contains(&i) => sigmoid_of_softplus_inv(self.c[i - 3 - 2 * FEATURES]),
                _ => 1.0,
            };
            out.gamma[i] = self.gap * d_h * chain;
            out.dgamma[i] = self.gap * d_dh * chain;
        }
        out
    }
}

/// `softplus'(x) = sigmoid(x)` written in terms of `y = softplus(x)`: `1 - exp(-y)`.
fn sigmoid_of_softplus_inv(y: f64) -> f64 {
    -(-y).exp_m1()
}

impl LogSnrSchedule for LearnedGamma {
    fn log_snr(&self, t: f64) -> f64 {
        -self.gamma(t).0
    }
    fn dlog_snr_dt(&self, t: f64) -> f64 {
        -self.gamma(t).1
    }
}

/// A continuous-time schedule.
#[derive(Debug, Clone)]
pub enum Continuous {
    /// VDM's linear gamma.
    Linear(LinearGamma),
    /// Cosine in log-SNR form.
    Cosine(CosineLogSnr),
    /// The learned monotone schedule.
    Learned(Box<LearnedGamma>),
}

impl Continuous {
    /// The schedule `name` with log-SNR end points `(lambda_max, lambda_min)`; `learned` reads
    /// its parameters from `params`.
    pub fn new(kind: ScheduleKind, lambda_max: f64, lambda_min: f64, params: &[f32]) -> Result<Self> {
        let bad = |e: elbo_core::Error| input(format!("schedule {kind}: {e}"));
        match kind {
            ScheduleKind::Vdm => Ok(Continuous::Linear(LinearGamma::new(-lambda_max, -lambda_min).map_err(bad)?)),
            ScheduleKind::CosineLogsnr => {
                Ok(Continuous::Cosine(CosineLogSnr::new(lambda_min, lambda_max).map_err(bad)?))
            }
            ScheduleKind::Learned => Ok(Continuous::Learned(Box::new(LearnedGamma::from_params(params)?))),
            _ => Err(input(format!("schedule: '{kind}' is not a continuous-time schedule"))),
        }
    }
}

impl LogSnrSchedule for Continuous {
    fn log_snr(&self, t: f64) -> f64 {
        match self {
            Continuous::Linear(s) => s.log_snr(t),
            Continuous::Cosine(s) => s.log_snr(t),
            Continuous::Learned(s) => s.log_snr(t),
        }
    }
    fn dlog_snr_dt(&self, t: f64) -> f64 {
        match self {
            Continuous::Linear(s) => s.dlog_snr_dt(t),
            Continuous::Cosine(s) => s.dlog_snr_dt(t),
            Continuous::Learned(s) => s.dlog_snr_dt(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    fn params(seed: u64) -> Vec<f32> {
        let mut rng = rand_pcg::Pcg32::seed_from_u64(seed);
        let mut noise = vec![0.0f32; 3 * FEATURES];
        elbo_core::rng::fill_standard_normal(&mut rng, &mut noise);
        let mut p = LearnedGamma::init(-13.3, 5.0, &noise);
        // move away from the near-linear start so that every term matters
        for (i, v) in p.iter_mut().enumerate().skip(2) {
            *v += 0.7 * noise[i % noise.len()];
        }
        p
    }

    /// The end points are the parameters, the schedule is strictly increasing in gamma, and
    /// its derivative agrees with finite differences.
    #[test]
    fn learned_schedule_is_monotone_with_its_end_points() {
        for seed in 0..5 {
            let s = LearnedGamma::from_params(&params(seed)).unwrap();
            let (g0, g1) = s.end_gammas();
            assert!((s.gamma(0.0).0 - g0).abs() < 1e-9 && (s.gamma(1.0).0 - g1).abs() < 1e-9);
            let mut prev = f64::NEG_INFINITY;
            for i in 0..=1000 {
                let t = i as f64 / 1000.0;
                let (g, dg) = s.gamma(t);
                assert!(g > prev && dg > 0.0, "seed {seed} t {t}");
                prev = g;
                if (1..1000).contains(&i) {
                    let h = 1e-6;
                    let fd = (s.gamma(t + h).0 - s.gamma(t - h).0) / (2.0 * h);
                    assert!((fd - dg).abs() < 1e-5 * dg.abs().max(1.0), "{fd} vs {dg}");
                }
            }
        }
    }

    /// `d gamma / d theta` and `d gamma' / d theta` against central differences in f64.
    #[test]
    fn learned_schedule_gradients_match_finite_differences() {
        let p = params(7);
        let s = LearnedGamma::from_params(&p).unwrap();
        for t in [0.0, 0.13, 0.5, 0.91, 1.0] {
            let an = s.grad(t);
            for i in 0..N_PARAMS {
                let h = 1e-3f32;
                let (mut up, mut dn) = (p.clone(), p.clone());
                up[i] += h;
                dn[i] -= h;
                let (su, sd) = (LearnedGamma::from_params(&up).unwrap(), LearnedGamma::from_params(&dn).unwrap());
                let hh = f64::from(up[i]) - f64::from(dn[i]);
                let fd = (su.gamma(t).0 - sd.gamma(t).0) / hh;
                let fdd = (su.gamma(t).1 - sd.gamma(t).1) / hh;
                assert!(
                    (fd - an.gamma[i]).abs() < 1e-4 * fd.abs().max(1.0),
                    "t {t} d gamma/d p{i}: {} vs {fd}",
                    an.gamma[i]
                );
                assert!(
                    (fdd - an.dgamma[i]).abs() < 1e-4 * fdd.abs().max(1.0),
                    "t {t} d gamma'/d p{i}: {} vs {fdd}",
                    an.dgamma[i]
                );
            }
        }
    }
}
