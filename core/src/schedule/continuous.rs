//! Continuous-time noise schedules, as functions of log-SNR `lambda(t)` for `t` in `[0, 1]`
//! (VDM; seed 002 eqs. 8-10). `abar(t) = sigmoid(lambda(t))` and `1 - abar(t) =
//! sigmoid(-lambda(t))` (seed 004 eqs. 113-114), and the continuous-time loss weights the
//! squared error by `-d lambda / dt` (seed 002 eq. 10).

use crate::error::{Error, Result};

/// A strictly decreasing log-SNR `lambda(t)` on `[0, 1]` with its derivative.
pub trait LogSnrSchedule {
    /// `lambda(t)`.
    fn log_snr(&self, t: f64) -> f64;
    /// `d lambda / dt` (negative).
    fn dlog_snr_dt(&self, t: f64) -> f64;
    /// `(lambda_max, lambda_min) = (lambda(0), lambda(1))`: the end points, which alone fix the
    /// weighted loss for a given weighting (seed 002 eq. 12).
    fn end_points(&self) -> (f64, f64) {
        (self.log_snr(0.0), self.log_snr(1.0))
    }
    /// The time at which the log-SNR is `lambda` (bisection, 64 halvings of `[0, 1]`; values
    /// outside the end points give 0 or 1).
    fn time_at(&self, lambda: f64) -> f64 {
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..64 {
            let mid = 0.5 * (lo + hi);
            if self.log_snr(mid) > lambda {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }
}

/// VDM's linear schedule of `gamma = -lambda`: `gamma(t) = gamma_min + (gamma_max - gamma_min) t`
/// (Kingma et al. 2021; VDM's defaults `gamma_min = -13.3`, `gamma_max = 5.0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearGamma {
    gamma_min: f64,
    gamma_max: f64,
}

impl LinearGamma {
    /// VDM's defaults.
    pub const VDM: LinearGamma = LinearGamma { gamma_min: -13.3, gamma_max: 5.0 };

    /// Requires finite `gamma_min < gamma_max` (else the SNR would not decrease).
    pub fn new(gamma_min: f64, gamma_max: f64) -> Result<Self> {
        if !(gamma_min.is_finite() && gamma_max.is_finite()) {
            return Err(Error::InvalidParameter { name: "gamma_min/gamma_max", reason: "finite values" });
        }
        if gamma_min >= gamma_max {
            return Err(Error::NonMonotoneSnr { t: 0 });
        }
        Ok(LinearGamma { gamma_min, gamma_max })
    }
}

impl LogSnrSchedule for LinearGamma {
    fn log_snr(&self, t: f64) -> f64 {
        -(self.gamma_min + (self.gamma_max - self.gamma_min) * t)
    }
    fn dlog_snr_dt(&self, _t: f64) -> f64 {
        -(self.gamma_max - self.gamma_min)
    }
}

/// The cosine schedule in log-SNR form, truncated to given end points (Kingma & Gao 2023,
/// App. D): `lambda(t) = -2 log tan(a t + b)` with `b = atan(exp(-lambda_max / 2))` and
/// `a = atan(exp(-lambda_min / 2)) - b`, so `lambda(0) = lambda_max`, `lambda(1) = lambda_min`;
/// `d lambda / dt = -4 a / sin(2 (a t + b))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineLogSnr {
    a: f64,
    b: f64,
}

impl CosineLogSnr {
    /// Requires finite `lambda_min < lambda_max`.
    pub fn new(lambda_min: f64, lambda_max: f64) -> Result<Self> {
        if !(lambda_min.is_finite() && lambda_max.is_finite()) {
            return Err(Error::InvalidParameter { name: "lambda_min/lambda_max", reason: "finite values" });
        }
        if lambda_min >= lambda_max {
            return Err(Error::NonMonotoneSnr { t: 0 });
        }
        let b = libm::atan(libm::exp(-0.5 * lambda_max));
        let a = libm::atan(libm::exp(-0.5 * lambda_min)) - b;
        Ok(CosineLogSnr { a, b })
    }
}

impl LogSnrSchedule for CosineLogSnr {
    fn log_snr(&self, t: f64) -> f64 {
        -2.0 * libm::log(libm::tan(self.a * t + self.b))
    }
    fn dlog_snr_dt(&self, t: f64) -> f64 {
        -4.0 * self.a / libm::sin(2.0 * (self.a * t + self.b))
    }
}
