//! Diagonal Gaussians: log-density, KL divergence with arbitrary variances, the prior term, and
//! the discretised Gaussian likelihood of quantised data. All in f64, per element; callers sum.

/// `ln(2 pi)`.
pub const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// `log N(x; mean, exp(log_var))`.
pub fn log_density(x: f64, mean: f64, log_var: f64) -> f64 {
    let d = x - mean;
    -0.5 * (LN_2PI + log_var + d * d * libm::exp(-log_var))
}

/// `KL(N(m_q, exp(lv_q)) || N(m_p, exp(lv_p)))` for one coordinate, given the mean difference
/// `m_q - m_p` (so callers can form it without cancellation):
/// `1/2 (lv_p - lv_q + exp(lv_q - lv_p) - 1 + (m_q - m_p)^2 exp(-lv_p))`
/// (seed 004 eq. 87 with unequal variances), with `exp(d) - 1 - d` as `expm1(d) - d`.
pub fn kl(mean_diff: f64, log_var_q: f64, log_var_p: f64) -> f64 {
    let d = log_var_q - log_var_p;
    0.5 * (libm::expm1(d) - d + mean_diff * mean_diff * libm::exp(-log_var_p))
}

/// The log-ratio of one Monte Carlo draw (seed 000, "naive Monte Carlo"):
/// `log q(y) - log p(y) = 1/2 (lv_p - lv_q - z^2 + (y - m_p)^2 exp(-lv_p))` at
/// `y = m_q + exp(lv_q / 2) z`, given `y - m_p`. Its expectation over `z` is [`kl`].
pub fn mc_log_ratio(y_minus_mean_p: f64, z: f64, log_var_q: f64, log_var_p: f64) -> f64 {
    let d = y_minus_mean_p;
    0.5 * (log_var_p - log_var_q - z * z + d * d * libm::exp(-log_var_p))
}

/// A per-coordinate term of the bound with its derivatives with respect to the model's mean
/// `m_p` and log-variance `lv_p` (what training back-propagates into the network).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TermGrad {
    /// The term.
    pub value: f64,
    /// `d value / d m_p`.
    pub d_mean: f64,
    /// `d value / d lv_p`.
    pub d_log_var: f64,
}

/// [`kl`] with `d/d m_p = -(m_q - m_p) exp(-lv_p)` and
/// `d/d lv_p = 1/2 (1 - exp(lv_q - lv_p) - (m_q - m_p)^2 exp(-lv_p))`.
pub fn kl_grad(mean_diff: f64, log_var_q: f64, log_var_p: f64) -> TermGrad {
    let inv_var_p = libm::exp(-log_var_p);
    TermGrad {
        value: kl(mean_diff, log_var_q, log_var_p),
        d_mean: -mean_diff * inv_var_p,
        d_log_var: 0.5 * (1.0 - libm::exp(log_var_q - log_var_p) - mean_diff * mean_diff * inv_var_p),
    }
}

/// `-log N(x; m_p, exp(lv_p))` (the continuous decoder `L_0`, seed 004 eq. 58) with
/// `d/d m_p = -(x - m_p) exp(-lv_p)` and `d/d lv_p = 1/2 (1 - (x - m_p)^2 exp(-lv_p))`.
pub fn nll_grad(x: f64, mean_p: f64, log_var_p: f64) -> TermGrad {
    let r = x - mean_p;
    let inv_var_p = libm::exp(-log_var_p);
    TermGrad {
        value: -log_density(x, mean_p, log_var_p),
        d_mean: -r * inv_var_p,
        d_log_var: 0.5 * (1.0 - r * r * inv_var_p),
    }
}

/// [`mc_log_ratio`] with `d/d m_p = -(y - m_p) exp(-lv_p)` and
/// `d/d lv_p = 1/2 (1 - (y - m_p)^2 exp(-lv_p))` (`z` and `y` held fixed: the reparameterised
/// draw does not depend on the model).
pub fn mc_log_ratio_grad(y_minus_mean_p: f64, z: f64, log_var_q: f64, log_var_p: f64) -> TermGrad {
    let d = y_minus_mean_p;
    let inv_var_p = libm::exp(-log_var_p);
    TermGrad {
        value: mc_log_ratio(d, z, log_var_q, log_var_p),
        d_mean: -d * inv_var_p,
        d_log_var: 0.5 * (1.0 - d * d * inv_var_p),
    }
}

/// The prior term `L_T = KL(q(x_T | x_0) || N(0, I))` for one coordinate (seed 004 eq. 58):
/// `1/2 (abar x0^2 - abar - log1p(-abar))`, which is `1/2 ((1 - abar) + abar x0^2 - 1 - ln(1 -
/// abar))` written without cancellation.
pub fn prior_kl(x0: f64, abar: f64) -> f64 {
    0.5 * (abar * x0 * x0 - abar - libm::log1p(-abar))
}

/// The standard normal CDF `Phi(z) = erfc(-z / sqrt 2) / 2`.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z * core::f64::consts::FRAC_1_SQRT_2)
}

/// `log Phi(z)`, accurate in both tails: `log(erfc(-z/sqrt 2)/2)` down to `z = -20`, the
/// asymptotic series `-z^2/2 - log(-z) - log(2 pi)/2 + log(1 - 1/z^2 + 3/z^4 - 15/z^6)` below
/// (relative error < 1e-10 there), and `log1p(-Phi(-z))` in the upper tail.
pub fn log_normal_cdf(z: f64) -> f64 {
    if z > 5.0 {
        libm::log1p(-normal_cdf(-z))
    } else if z > -20.0 {
        libm::log(normal_cdf(z))
    } else {
        let z2 = z * z;
        let series = 1.0 - 1.0 / z2 + 3.0 / (z2 * z2) - 15.0 / (z2 * z2 * z2);
        -0.5 * z2 - libm::log(-z) - 0.5 * LN_2PI + libm::log(series)
    }
}

/// `log(Phi(b) - Phi(a))` for `a < b`, stable anywhere: an interval in the upper tail is
/// mirrored into the lower one, where `log Phi(b) + log1p(-exp(log Phi(a) - log Phi(b)))`
/// has no cancellation.
pub fn log_normal_interval(a: f64, b: f64) -> f64 {
    if a >= 0.0 {
        return log_normal_interval(-b, -a);
    }
    if b > 0.0 {
        // Straddles zero: the mass is at least min(Phi(b) - 1/2, 1/2 - Phi(a)), no cancellation.
        return libm::log(normal_cdf(b) - normal_cdf(a));
    }
    let lb = log_normal_cdf(b);
    let la = log_normal_cdf(a);
    lb + libm::log1p(-libm::exp(la - lb))
}

/// `log P(x)` of the discretised Gaussian of improved-diffusion (Ho et al. 2020, eq. 13):
/// data on `levels` equally spaced values in `[-1, 1]`, bin half-width `delta = 1/(levels - 1)`,
/// the probability of the bin around `x` under `N(mean, exp(2 log_scale))`, with the outer bins
/// open to -inf and +inf. Uses the exact normal CDF (improved-diffusion uses a tanh
/// approximation that moves the result by up to ~6e-3 bits on 2-D data). NaN for `levels < 2`.
pub fn discretized_log_likelihood(x: f64, mean: f64, log_scale: f64, levels: u32) -> f64 {
    if levels < 2 {
        return f64::NAN;
    }
    let delta = 1.0 / (levels - 1) as f64;
    let inv_std = libm::exp(-log_scale);
    let c = x - mean;
    let upper = (c + delta) * inv_std;
    let lower = (c - delta) * inv_std;
    if x < -1.0 + delta {
        log_normal_cdf(upper)
    } else if x > 1.0 - delta {
        log_normal_cdf(-lower)
    } else {
        log_normal_interval(lower, upper)
    }
}
