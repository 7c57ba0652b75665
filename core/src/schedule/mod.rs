//! Discrete-time noise schedules as fixed-size tables.
//!
//! Conventions (design.md, seed 004 eqs. 61-70 and 84-85): time index `t = 1..T`, `x_0` is data,
//! `abar_0 := 1`, `beta_t` the variance of `q(x_t | x_{t-1})`, `alpha_t = 1 - beta_t`,
//! `abar_t = prod_{i<=t} alpha_i`, so `q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`
//! (seed 004 eq. 70).
//!
//! Every entry is evaluated in f64 from `log abar_t = sum_{i<=t} log1p(-beta_i)` and rounded to
//! f32 once; `1 - abar_t` is `-expm1(log abar_t)`, never `1 - abar_t` in f32 (which loses about
//! three digits at `beta_1 = 1e-4`).

mod continuous;

pub use continuous::{CosineLogSnr, LinearGamma, LogSnrSchedule};

use crate::error::{Error, Result};

/// How the betas of a discrete schedule are made. Names and formulas follow diffusers, so a
/// diffusers `scheduler_config.json` maps onto one of these directly.
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(missing_docs)] // beta_start/beta_end as in diffusers
pub enum BetaSchedule<'a> {
    /// `beta_t = linspace(beta_start, beta_end, T)` (Ho et al. 2020).
    Linear { beta_start: f64, beta_end: f64 },
    /// `beta_t = linspace(sqrt(beta_start), sqrt(beta_end), T)^2` (latent diffusion).
    ScaledLinear { beta_start: f64, beta_end: f64 },
    /// Cosine schedule (Nichol & Dhariwal 2021, eq. 17): `abar(s) = cos^2((s + 0.008)/1.008 pi/2)`,
    /// `beta_i = min(1 - abar(i/T) / abar((i-1)/T), 0.999)`, with floating-point `i/T`.
    SquaredCosCapV2,
    /// `beta_t = sigmoid(linspace(-6, 6, T)) (beta_end - beta_start) + beta_start` (GeoDiff).
    Sigmoid { beta_start: f64, beta_end: f64 },
    /// User-given betas, `betas[t - 1] = beta_t`.
    Custom(&'a [f64]),
}

/// The cap of the cosine schedule's betas.
const COSINE_MAX_BETA: f64 = 0.999;
/// The offset `s` of the cosine schedule.
const COSINE_OFFSET: f64 = 0.008;

impl<'a> BetaSchedule<'a> {
    /// The schedule named as in diffusers (`linear`, `scaled_linear`, `squaredcos_cap_v2`,
    /// `sigmoid`), with the beta range used by the linear-type ones.
    pub fn from_name(name: &str, beta_start: f64, beta_end: f64) -> Result<Self> {
        let s = match name {
            "linear" => BetaSchedule::Linear { beta_start, beta_end },
            "scaled_linear" => BetaSchedule::ScaledLinear { beta_start, beta_end },
            "squaredcos_cap_v2" | "cosine" => BetaSchedule::SquaredCosCapV2,
            "sigmoid" => BetaSchedule::Sigmoid { beta_start, beta_end },
            _ => return Err(Error::UnknownName { what: "schedule" }),
        };
        Ok(s)
    }

    /// The diffusers name of this schedule (`custom` for user-given betas).
    pub fn name(&self) -> &'static str {
        match self {
            BetaSchedule::Linear { .. } => "linear",
            BetaSchedule::ScaledLinear { .. } => "scaled_linear",
            BetaSchedule::SquaredCosCapV2 => "squaredcos_cap_v2",
            BetaSchedule::Sigmoid { .. } => "sigmoid",
            BetaSchedule::Custom(_) => "custom",
        }
    }

    /// `beta_i` for `i = 1..=steps`, in f64.
    fn beta(&self, i: usize, steps: usize) -> f64 {
        match *self {
            BetaSchedule::Linear { beta_start, beta_end } => linspace(beta_start, beta_end, i, steps),
            BetaSchedule::ScaledLinear { beta_start, beta_end } => {
                let r = linspace(libm::sqrt(beta_start), libm::sqrt(beta_end), i, steps);
                r * r
            }
            BetaSchedule::SquaredCosCapV2 => {
                let abar = |s: f64| {
                    let c = libm::cos((s + COSINE_OFFSET) / (1.0 + COSINE_OFFSET) * core::f64::consts::FRAC_PI_2);
                    c * c
                };
                let t = steps as f64;
                let b = 1.0 - abar(i as f64 / t) / abar((i - 1) as f64 / t);
                if b < COSINE_MAX_BETA { b } else { COSINE_MAX_BETA }
            }
            BetaSchedule::Sigmoid { beta_start, beta_end } => {
                let x = linspace(-6.0, 6.0, i, steps);
                sigmoid(x) * (beta_end - beta_start) + beta_start
            }
            BetaSchedule::Custom(b) => b[i - 1],
        }
    }

    fn check(&self, steps: usize) -> Result<()> {
        let range_ok = |a: f64, b: f64| a > 0.0 && b > 0.0 && a < 1.0 && b < 1.0;
        match *self {
            BetaSchedule::Linear { beta_start, beta_end }
            | BetaSchedule::ScaledLinear { beta_start, beta_end }
            | BetaSchedule::Sigmoid { beta_start, beta_end }
                if !range_ok(beta_start, beta_end) =>
            {
                return Err(Error::InvalidParameter {
                    name: "beta_start/beta_end",
                    reason: "values in the open interval (0, 1)",
                });
            }
            BetaSchedule::Custom(b) if b.len() != steps => {
                return Err(Error::DimensionMismatch { expected: steps, got: b.len() });
            }
            _ => {}
        }
        Ok(())
    }
}

/// Element `i` (1-based) of numpy's `linspace(start, stop, n)`: `start + (i - 1) step` with
/// `step = (stop - start) / (n - 1)`, and exactly `stop` at the end.
fn linspace(start: f64, stop: f64, i: usize, n: usize) -> f64 {
    if n == 1 {
        return start;
    }
    if i == n {
        return stop;
    }
    let step = (stop - start) / (n - 1) as f64;
    (i - 1) as f64 * step + start
}

/// The logistic function.
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + libm::exp(-x))
    } else {
        let e = libm::exp(x);
        e / (1.0 + e)
    }
}

/// `log sigmoid(x) = -softplus(-x)`, accurate for all x.
pub(crate) fn log_sigmoid(x: f64) -> f64 {
    if x >= 0.0 { -libm::log1p(libm::exp(-x)) } else { x - libm::log1p(libm::exp(x)) }
}

/// The marginal `q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)` at one timestep
/// (seed 004 eq. 70). At `t = 0` it is the identity: `abar_0 = 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marginal {
    /// `abar_t`.
    pub abar: f32,
    /// `1 - abar_t`, from `-expm1(log abar_t)`.
    pub one_minus_abar: f32,
    /// `sqrt(abar_t)`, the signal scale.
    pub sqrt_abar: f32,
    /// `sqrt(1 - abar_t)`, the noise scale.
    pub sqrt_one_minus_abar: f32,
    /// `log abar_t = sum_{i<=t} log1p(-beta_i)`, kept in f64 for strided steps.
    pub log_abar: f64,
}

impl Marginal {
    /// `t = 0`: data.
    pub const DATA: Marginal =
        Marginal { abar: 1.0, one_minus_abar: 0.0, sqrt_abar: 1.0, sqrt_one_minus_abar: 0.0, log_abar: 0.0 };

    fn from_log_abar(log_abar: f64) -> Marginal {
        let abar = libm::exp(log_abar);
        let oma = -libm::expm1(log_abar);
        Marginal {
            abar: abar as f32,
            one_minus_abar: oma as f32,
            sqrt_abar: libm::sqrt(abar) as f32,
            sqrt_one_minus_abar: libm::sqrt(oma) as f32,
            log_abar,
        }
    }
}

/// Everything the ELBO terms and the samplers need at one timestep `t`, each entry rounded
/// once from f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The timestep, `1..=T`.
    pub t: usize,
    /// The number of timesteps `T` of the schedule.
    pub steps: usize,
    /// `beta_t`.
    pub beta: f32,
    /// `alpha_t = 1 - beta_t`.
    pub alpha: f32,
    /// `log beta_t`.
    pub log_beta: f32,
    /// The marginal at `t`.
    pub cur: Marginal,
    /// The marginal at `t - 1` (`Marginal::DATA` at `t = 1`).
    pub prev: Marginal,
    /// `SNR_t = abar_t / (1 - abar_t)` (seed 004 eq. 109).
    pub snr: f32,
    /// `lambda_t = log SNR_t`.
    pub log_snr: f32,
    /// `SNR_{t-1}` (infinite at `t = 1`).
    pub snr_prev: f32,
    /// `btilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)` (seed 004 eq. 84; 0 at t = 1).
    pub posterior_variance: f32,
    /// `log btilde_t`, with `btilde_2` at `t = 1` as improved-diffusion clips it
    /// (`log beta_1` if `T = 1`).
    pub posterior_log_variance_clipped: f32,
    /// `c0_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t)`, the posterior mean's x_0 coefficient
    /// (seed 004 eq. 84).
    pub posterior_mean_coef_x0: f32,
    /// `ct_t = sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)`, the x_t coefficient.
    pub posterior_mean_coef_xt: f32,
}

/// Posterior `q(x_{t-1} | x_t, x_0)` of a pair of marginals `prev -> cur` joined by one Gaussian
/// step of variance `beta` (seed 004 eq. 84): returns `(c0, ct, btilde)`. The one place this
/// formula lives; strided samplers use it with the effective beta of a stride.
pub(crate) fn posterior_f64(prev_abar: f64, prev_oma: f64, oma: f64, beta: f64) -> (f64, f64, f64) {
    let c0 = libm::sqrt(prev_abar) * beta / oma;
    let ct = libm::sqrt(1.0 - beta) * prev_oma / oma;
    let var = beta * prev_oma / oma;
    (c0, ct, var)
}

/// A source of per-timestep coefficients: the RAM table [`Schedule`], or a table stored
/// elsewhere (flash). Samplers and ELBO evaluation are generic over it.
pub trait NoiseSchedule {
    /// The number of timesteps `T`.
    fn steps(&self) -> usize;
    /// The coefficients at `t` in `1..=T`.
    fn step(&self, t: usize) -> Result<Step>;
    /// The marginal at `t` in `0..=T` (`t = 0` is the data).
    fn marginal(&self, t: usize) -> Result<Marginal> {
        if t == 0 { Ok(Marginal::DATA) } else { Ok(self.step(t)?.cur) }
    }
}

/// A discrete schedule of up to `N` timesteps (the capacity is a compile-time constant; the
/// number of steps `T <= N` is chosen at construction). No allocation.
#[derive(Debug, Clone)]
pub struct Schedule<const N: usize> {
    steps: usize,
    table: [Step; N],
}

/// A table entry before it is filled.
pub const EMPTY_STEP: Step = Step {
    t: 0,
    steps: 0,
    beta: 0.0,
    alpha: 0.0,
    log_beta: 0.0,
    cur: Marginal::DATA,
    prev: Marginal::DATA,
    snr: 0.0,
    log_snr: 0.0,
    snr_prev: 0.0,
    posterior_variance: 0.0,
    posterior_log_variance_clipped: 0.0,
    posterior_mean_coef_x0: 0.0,
    posterior_mean_coef_xt: 0.0,
};

impl<const N: usize> Schedule<N> {
    /// Builds the tables of `steps` timesteps of a beta schedule, optionally rescaled to zero
    /// terminal SNR (Lin et al. 2024, "Common diffusion noise schedules and sample steps are
    /// flawed", Alg. 1: shift and scale `sqrt(abar)` so that `abar_T = 0` and `abar_1` is kept).
    pub fn new(kind: &BetaSchedule<'_>, steps: usize, zero_terminal_snr: bool) -> Result<Self> {
        check_steps(steps, N)?;
        let mut table = [EMPTY_STEP; N];
        fill_beta_table(kind, steps, zero_terminal_snr, &mut table)?;
        Ok(Schedule { steps, table })
    }

    /// Discretises a continuous log-SNR schedule at `t_i = i / T` (VDM's discrete-time model,
    /// seed 002 eq. 7): `abar_i = sigmoid(lambda(i/T))` (seed 004 eq. 113), `abar_0 = 1`.
    pub fn from_log_snr<S: LogSnrSchedule + ?Sized>(schedule: &S, steps: usize) -> Result<Self> {
        check_steps(steps, N)?;
        let mut table = [EMPTY_STEP; N];
        fill_log_snr_table(schedule, steps, &mut table)?;
        Ok(Schedule { steps, table })
    }

    /// The table entries `t = 1..=T` in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Step> + '_ {
        self.table[..self.steps].iter()
    }
}

/// [`Schedule::new`]'s table written into the caller's `table[..steps]` (a host keeps it on the
/// heap; `table` must hold at least `steps` entries).
pub fn fill_beta_table(
    kind: &BetaSchedule<'_>,
    steps: usize,
    zero_terminal_snr: bool,
    table: &mut [Step],
) -> Result<()> {
    check_steps(steps, table.len())?;
    kind.check(steps)?;
    for i in 1..=steps {
        let b = kind.beta(i, steps);
        if !(b > 0.0 && b < 1.0) {
            return Err(Error::InvalidBeta { t: i, beta: b });
        }
    }
    if !zero_terminal_snr {
        let mut log_abar = 0.0;
        return fill(table, steps, |i| {
            let b = kind.beta(i, steps);
            log_abar += libm::log1p(-b);
            (b, log_abar)
        });
    }
    // Rescale: sqrt(abar_t) -> (sqrt(abar_t) - a_T) a_1 / (a_1 - a_T).
    let log_abar_at = |t: usize| (1..=t).map(|i| libm::log1p(-kind.beta(i, steps))).sum::<f64>();
    let a1 = libm::exp(0.5 * log_abar_at(1));
    let at = libm::exp(0.5 * log_abar_at(steps));
    let (mut orig, mut prev_new) = (0.0, 0.0);
    fill(table, steps, |i| {
        orig += libm::log1p(-kind.beta(i, steps));
        let b = (libm::exp(0.5 * orig) - at) * a1 / (a1 - at);
        let new = if i == steps || b <= 0.0 { f64::NEG_INFINITY } else { 2.0 * libm::log(b) };
        let beta = -libm::expm1(new - prev_new);
        prev_new = new;
        (beta, new)
    })
}

/// [`Schedule::from_log_snr`]'s table written into the caller's `table[..steps]`.
pub fn fill_log_snr_table<S: LogSnrSchedule + ?Sized>(schedule: &S, steps: usize, table: &mut [Step]) -> Result<()> {
    check_steps(steps, table.len())?;
    let mut prev_lambda = f64::INFINITY;
    for i in 1..=steps {
        let lambda = schedule.log_snr(i as f64 / steps as f64);
        if lambda.partial_cmp(&prev_lambda) != Some(core::cmp::Ordering::Less) {
            return Err(Error::NonMonotoneSnr { t: i });
        }
        prev_lambda = lambda;
    }
    let mut prev = 0.0;
    fill(table, steps, |i| {
        let log_abar = log_sigmoid(schedule.log_snr(i as f64 / steps as f64));
        let beta = -libm::expm1(log_abar - prev);
        prev = log_abar;
        (beta, log_abar)
    })
}

/// Fills `table[..steps]` from `(beta_t, log abar_t)` in f64, t = 1..=steps.
fn fill(table: &mut [Step], steps: usize, mut next: impl FnMut(usize) -> (f64, f64)) -> Result<()> {
    let mut prev = Marginal::DATA;
    let (mut prev_abar, mut prev_oma) = (1.0f64, 0.0f64);
    for t in 1..=steps {
        let (beta, log_abar) = next(t);
        let terminal = t == steps && beta == 1.0;
        if !(beta > 0.0 && (beta < 1.0 || terminal)) {
            return Err(Error::InvalidBeta { t, beta });
        }
        let cur = Marginal::from_log_abar(log_abar);
        let abar = libm::exp(log_abar);
        let oma = -libm::expm1(log_abar);
        let (c0, ct, var) = posterior_f64(prev_abar, prev_oma, oma, beta);
        let snr_prev = if t == 1 { f64::INFINITY } else { prev_abar / prev_oma };
        table[t - 1] = Step {
            t,
            steps,
            beta: beta as f32,
            alpha: (1.0 - beta) as f32,
            log_beta: libm::log(beta) as f32,
            cur,
            prev,
            snr: (abar / oma) as f32,
            log_snr: (log_abar - libm::log(oma)) as f32,
            snr_prev: snr_prev as f32,
            posterior_variance: var as f32,
            posterior_log_variance_clipped: if t == 1 { libm::log(beta) as f32 } else { libm::log(var) as f32 },
            posterior_mean_coef_x0: c0 as f32,
            posterior_mean_coef_xt: ct as f32,
        };
        prev = cur;
        prev_abar = abar;
        prev_oma = oma;
    }
    if steps >= 2 {
        table[0].posterior_log_variance_clipped = table[1].posterior_log_variance_clipped;
    }
    Ok(())
}

fn check_steps(steps: usize, capacity: usize) -> Result<()> {
    if steps == 0 {
        return Err(Error::ZeroSteps);
    }
    if steps > capacity {
        return Err(Error::Capacity { requested: steps, capacity });
    }
    Ok(())
}

impl<const N: usize> NoiseSchedule for Schedule<N> {
    fn steps(&self) -> usize {
        self.steps
    }

    fn step(&self, t: usize) -> Result<Step> {
        if t == 0 || t > self.steps {
            return Err(Error::TimestepOutOfRange { t, steps: self.steps });
        }
        Ok(self.table[t - 1])
    }
}

/// The one-step quantities of a stride `p -> t` (`p < t`) of a schedule, as used by strided
/// ancestral sampling (improved-diffusion's respacing; diffusers' DDPM with fewer inference
/// steps): `beta_eff = 1 - abar_t / abar_p = -expm1(log abar_t - log abar_p)`, and the posterior
/// of eq. 84 with `beta_eff` in place of `beta_t`. Equals the table entry when `p = t - 1`.
pub fn stride<S: NoiseSchedule + ?Sized>(schedule: &S, t: usize, p: usize) -> Result<Step> {
    let mut step = schedule.step(t)?;
    if p + 1 == t {
        return Ok(step);
    }
    if p >= t {
        return Err(Error::InvalidParameter { name: "stride", reason: "previous timestep below t" });
    }
    let prev = schedule.marginal(p)?;
    let beta = -libm::expm1(step.cur.log_abar - prev.log_abar);
    let prev_abar = libm::exp(prev.log_abar);
    let prev_oma = -libm::expm1(prev.log_abar);
    let oma = -libm::expm1(step.cur.log_abar);
    let (c0, ct, var) = posterior_f64(prev_abar, prev_oma, oma, beta);
    step.beta = beta as f32;
    step.alpha = (1.0 - beta) as f32;
    step.log_beta = libm::log(beta) as f32;
    step.prev = prev;
    step.snr_prev = if p == 0 { f32::INFINITY } else { (prev_abar / prev_oma) as f32 };
    step.posterior_variance = var as f32;
    if p > 0 {
        step.posterior_log_variance_clipped = libm::log(var) as f32;
    }
    step.posterior_mean_coef_x0 = c0 as f32;
    step.posterior_mean_coef_xt = ct as f32;
    Ok(step)
}
