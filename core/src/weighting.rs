//! The weighted-ELBO family of Kingma & Gao (seed 002, eq. 11 and its table):
//!
//! `L_w(x) = 1/2 E_{t ~ U(0,1), eps} [ w(lambda_t) (-d lambda/dt) ||eps_hat - eps||^2 ]`.
//!
//! `w = 1` is the ELBO (eq. 10). A weighting that is monotone (non-increasing in `lambda`, i.e.
//! non-decreasing in `t`) makes `L_w` the ELBO of noise-augmented data (Theorem 1). By the
//! change of variables of eq. 12 the loss depends on the schedule only through its end points;
//! the schedule acts as an importance distribution `p(lambda) = -dt/dlambda` (eq. 13).

use crate::error::{Error, Result};
use crate::schedule::sigmoid;

/// A weighting function `w(lambda)` of log-SNR.
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(missing_docs)] // parameters are named as in the papers (gamma, bias)
pub enum Weighting {
    /// `1`: the ELBO (Kingma et al. 2021).
    Elbo,
    /// `sech(lambda/2)`: eps-prediction with the cosine schedule (IDDPM, Nichol & Dhariwal 2021).
    Iddpm,
    /// `N(lambda; 2.4, 2.4^2) (exp(-lambda) + 0.5^2)` (EDM, Karras et al. 2022).
    Edm,
    /// `exp(-lambda/2)`: v-prediction with the cosine schedule (Salimans & Ho 2022).
    VPrediction,
    /// `exp(-lambda/2)`: flow matching with the OT path (Lipman et al. 2022).
    FlowMatchingOt,
    /// `exp(-lambda) sech^2(lambda/4)` (InDI, Delbracio & Milanfar 2023).
    Indi,
    /// `sech(lambda/2) / (1 + exp(lambda))^gamma` (P2, Choi et al. 2022; gamma 0.5 or 1).
    P2 { gamma: f64 },
    /// `sech(lambda/2) min(1, gamma exp(-lambda))` (Min-SNR-gamma, Hang et al. 2023).
    MinSnr { gamma: f64 },
    /// `sigmoid(b - lambda)` (Kingma & Gao 2023, sec. 5).
    Sigmoid { bias: f64 },
}

/// `sech(x) = 2 e^{-|x|} / (1 + e^{-2|x|})`, without overflow.
fn sech(x: f64) -> f64 {
    let e = libm::exp(-libm::fabs(x));
    2.0 * e / (1.0 + e * e)
}

impl Weighting {
    /// All names, for help texts.
    pub const NAMES: [&'static str; 9] = ["elbo", "iddpm", "edm", "v", "fm-ot", "indi", "p2", "min-snr", "sigmoid"];

    /// The name [`Weighting::from_name`] parses (`v` and `fm-ot` are the same function under
    /// two names).
    pub fn name(&self) -> &'static str {
        match self {
            Weighting::Elbo => "elbo",
            Weighting::Iddpm => "iddpm",
            Weighting::Edm => "edm",
            Weighting::VPrediction => "v",
            Weighting::FlowMatchingOt => "fm-ot",
            Weighting::Indi => "indi",
            Weighting::P2 { .. } => "p2",
            Weighting::MinSnr { .. } => "min-snr",
            Weighting::Sigmoid { .. } => "sigmoid",
        }
    }

    /// The parameter of a weighting that takes one (P2's and Min-SNR's gamma, sigmoid's bias).
    pub fn param(&self) -> Option<f64> {
        match *self {
            Weighting::P2 { gamma } | Weighting::MinSnr { gamma } => Some(gamma),
            Weighting::Sigmoid { bias } => Some(bias),
            _ => None,
        }
    }

    /// Parses a name with its optional parameter (`p2` gamma default 1, `min-snr` gamma default 5,
    /// `sigmoid` bias default 0).
    pub fn from_name(name: &str, param: Option<f64>) -> Result<Self> {
        let p = |default: f64| param.unwrap_or(default);
        let w = match name {
            "elbo" => Weighting::Elbo,
            "iddpm" => Weighting::Iddpm,
            "edm" => Weighting::Edm,
            "v" | "v-prediction" => Weighting::VPrediction,
            "fm-ot" | "fm" => Weighting::FlowMatchingOt,
            "indi" => Weighting::Indi,
            "p2" => Weighting::P2 { gamma: p(1.0) },
            "min-snr" => Weighting::MinSnr { gamma: p(5.0) },
            "sigmoid" => Weighting::Sigmoid { bias: p(0.0) },
            _ => return Err(Error::UnknownName { what: "weighting" }),
        };
        let takes_param = matches!(w, Weighting::P2 { .. } | Weighting::MinSnr { .. } | Weighting::Sigmoid { .. });
        if param.is_some() && !takes_param {
            return Err(Error::InvalidParameter { name: "weighting", reason: "no parameter for this weighting" });
        }
        if let Some(v) = param {
            let ok = v.is_finite() && (matches!(w, Weighting::Sigmoid { .. }) || v > 0.0);
            if !ok {
                return Err(Error::InvalidParameter {
                    name: "weighting parameter",
                    reason: "a finite (positive) number",
                });
            }
        }
        Ok(w)
    }

    /// `w(lambda)`.
    pub fn weight(&self, lambda: f64) -> f64 {
        match *self {
            Weighting::Elbo => 1.0,
            Weighting::Iddpm => sech(0.5 * lambda),
            Weighting::Edm => {
                let (mu, sd) = (2.4, 2.4);
                let z = (lambda - mu) / sd;
                let pdf = libm::exp(-0.5 * z * z) / (sd * libm::sqrt(2.0 * core::f64::consts::PI));
                pdf * (libm::exp(-lambda) + 0.25)
            }
            Weighting::VPrediction | Weighting::FlowMatchingOt => libm::exp(-0.5 * lambda),
            Weighting::Indi => {
                let s = sech(0.25 * lambda);
                libm::exp(-lambda) * s * s
            }
            Weighting::P2 { gamma } => {
                // (1 + e^lambda)^-gamma = exp(-gamma softplus(lambda))
                let softplus = if lambda > 0.0 {
                    lambda + libm::log1p(libm::exp(-lambda))
                } else {
                    libm::log1p(libm::exp(lambda))
                };
                sech(0.5 * lambda) * libm::exp(-gamma * softplus)
            }
            Weighting::MinSnr { gamma } => {
                let g = gamma * libm::exp(-lambda);
                sech(0.5 * lambda) * if g < 1.0 { g } else { 1.0 }
            }
            Weighting::Sigmoid { bias } => sigmoid(bias - lambda),
        }
    }

    /// Whether `w` is monotone (non-increasing in `lambda`), as marked in seed 002's table;
    /// Theorem 1 (weighted loss = ELBO with data augmentation) holds exactly for these.
    pub fn is_monotone(&self) -> bool {
        matches!(
            self,
            Weighting::Elbo
                | Weighting::VPrediction
                | Weighting::FlowMatchingOt
                | Weighting::Indi
                | Weighting::Sigmoid { .. }
        )
    }

    /// One draw of the integrand of eq. 11 (or eq. 13 with an importance weight):
    /// `1/2 w(lambda) (-dlambda/dt) ||eps_hat - eps||^2 * importance`.
    pub fn loss_term(&self, lambda: f64, dlambda_dt: f64, sq_err: f64, importance: f64) -> f64 {
        0.5 * self.weight(lambda) * (-dlambda_dt) * sq_err * importance
    }
}
