//! Drawing training timesteps: uniform, antithetic, stratified, and the loss-second-moment
//! importance sampler of improved-diffusion (Nichol & Dhariwal 2021, sec. 3.3). Every draw comes
//! with its importance weight `1 / (T p(t))` (continuous time: `1 / p(t)` on `[0, 1)`), so that
//! weighted losses stay unbiased estimates of the same objective (seed 002 eq. 13).

use rand_core::Rng;

use crate::error::{Error, Result, check_len};
use crate::rng::{uniform_below, uniform_f64};

/// How a batch of times is drawn without learned proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSampling {
    /// Independent uniform draws.
    Uniform,
    /// Antithetic pairs `u, 1 - u` (an odd batch ends with one independent draw).
    Antithetic,
    /// Stratified with one shared offset: `u_i = (i + u) / n` (VDM's low-discrepancy sampler).
    Stratified,
}

impl TimeSampling {
    /// `uniform`, `antithetic` or `stratified`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "uniform" => Ok(TimeSampling::Uniform),
            "antithetic" => Ok(TimeSampling::Antithetic),
            "stratified" => Ok(TimeSampling::Stratified),
            _ => Err(Error::UnknownName { what: "timestep sampling" }),
        }
    }

    /// Fills `out` with times in `[0, 1)`; every marginal is uniform, so all weights are 1.
    pub fn fill_continuous<R: Rng + ?Sized>(self, rng: &mut R, out: &mut [f64]) {
        let n = out.len();
        match self {
            TimeSampling::Uniform => out.iter_mut().for_each(|u| *u = uniform_f64(rng)),
            TimeSampling::Antithetic => {
                for pair in out.chunks_mut(2) {
                    let u = uniform_f64(rng);
                    pair[0] = u;
                    if pair.len() == 2 {
                        // 1 - u is in (0, 1]; map 1 back to 0 to stay in [0, 1).
                        pair[1] = if u == 0.0 { 0.0 } else { 1.0 - u };
                    }
                }
            }
            TimeSampling::Stratified => {
                let u = uniform_f64(rng);
                for (i, v) in out.iter_mut().enumerate() {
                    *v = (i as f64 + u) / n as f64;
                }
            }
        }
    }

    /// Fills `out` with discrete timesteps in `1..=steps` (`t = 1 + floor(u T)` of the continuous
    /// draws above, `Uniform` exactly uniform on the integers); all weights are 1.
    pub fn fill_discrete<R: Rng + ?Sized>(self, rng: &mut R, steps: usize, out: &mut [usize]) -> Result<()> {
        if steps == 0 {
            return Err(Error::ZeroSteps);
        }
        let bin = |u: f64| 1 + ((u * steps as f64) as usize).min(steps - 1);
        let n = out.len();
        match self {
            TimeSampling::Uniform => out.iter_mut().for_each(|t| *t = 1 + uniform_below(rng, steps as u32) as usize),
            TimeSampling::Antithetic => {
                for pair in out.chunks_mut(2) {
                    let u = uniform_f64(rng);
                    pair[0] = bin(u);
                    if pair.len() == 2 {
                        pair[1] = bin(1.0 - u);
                    }
                }
            }
            TimeSampling::Stratified => {
                let u = uniform_f64(rng);
                out.iter_mut().enumerate().for_each(|(i, t)| *t = bin((i as f64 + u) / n as f64));
            }
        }
        Ok(())
    }
}

/// improved-diffusion's `LossSecondMomentResampler`: once every timestep has `H` recorded
/// losses, draws `t` with probability proportional to `sqrt(E[L_t^2])` (mixed with a uniform
/// share of `uniform_prob`), which minimises the variance of the importance-weighted VLB.
/// Before that, uniform. Capacity `N` timesteps, history `H` per timestep; no allocation.
#[derive(Debug, Clone)]
pub struct LossSecondMomentResampler<const N: usize, const H: usize> {
    steps: usize,
    uniform_prob: f64,
    history: [[f64; H]; N],
    counts: [usize; N],
    /// Cumulative probabilities, valid when `fresh`.
    cdf: [f64; N],
    fresh: bool,
}

impl<const N: usize, const H: usize> LossSecondMomentResampler<N, H> {
    /// A resampler for `steps <= N` timesteps; improved-diffusion uses `H = 10` and
    /// `uniform_prob = 0.001`.
    pub fn new(steps: usize, uniform_prob: f64) -> Result<Self> {
        if steps == 0 {
            return Err(Error::ZeroSteps);
        }
        if steps > N {
            return Err(Error::Capacity { requested: steps, capacity: N });
        }
        if H == 0 || !(uniform_prob > 0.0 && uniform_prob <= 1.0) {
            return Err(Error::InvalidParameter { name: "uniform_prob", reason: "a value in (0, 1] and H > 0" });
        }
        Ok(LossSecondMomentResampler {
            steps,
            uniform_prob,
            history: [[0.0; H]; N],
            counts: [0; N],
            cdf: [0.0; N],
            fresh: false,
        })
    }

    /// Whether every timestep has a full history (before that, draws are uniform).
    pub fn warmed_up(&self) -> bool {
        self.counts[..self.steps].iter().all(|&c| c >= H)
    }

    /// Records the loss of timestep `t`; the oldest of a full history is dropped.
    pub fn update(&mut self, t: usize, loss: f64) -> Result<()> {
        if t == 0 || t > self.steps {
            return Err(Error::TimestepOutOfRange { t, steps: self.steps });
        }
        if !loss.is_finite() {
            return Err(Error::InvalidParameter { name: "loss", reason: "a finite value" });
        }
        let c = self.counts[t - 1];
        let h = &mut self.history[t - 1];
        if c < H {
            h[c] = loss;
        } else {
            h.copy_within(1.., 0);
            h[H - 1] = loss;
        }
        self.counts[t - 1] = c + 1;
        self.fresh = false;
        Ok(())
    }

    /// The recorded losses of timestep `t` (oldest first) and how many were ever recorded, to
    /// save a run.
    pub fn entry(&self, t: usize) -> Result<(&[f64], usize)> {
        if t == 0 || t > self.steps {
            return Err(Error::TimestepOutOfRange { t, steps: self.steps });
        }
        let c = self.counts[t - 1];
        Ok((&self.history[t - 1][..c.min(H)], c))
    }

    /// Restores timestep `t` from [`entry`](Self::entry)'s values, to resume a run exactly.
    pub fn restore(&mut self, t: usize, losses: &[f64], count: usize) -> Result<()> {
        if t == 0 || t > self.steps {
            return Err(Error::TimestepOutOfRange { t, steps: self.steps });
        }
        if losses.len() != count.min(H) || !losses.iter().all(|l| l.is_finite()) {
            return Err(Error::InvalidParameter { name: "history", reason: "min(count, H) finite losses" });
        }
        self.history[t - 1][..losses.len()].copy_from_slice(losses);
        self.counts[t - 1] = count;
        self.fresh = false;
        Ok(())
    }

    /// The probability of drawing `t`.
    pub fn probability(&mut self, t: usize) -> Result<f64> {
        if t == 0 || t > self.steps {
            return Err(Error::TimestepOutOfRange { t, steps: self.steps });
        }
        self.refresh();
        let lo = if t == 1 { 0.0 } else { self.cdf[t - 2] };
        Ok(self.cdf[t - 1] - lo)
    }

    fn refresh(&mut self) {
        if self.fresh {
            return;
        }
        let n = self.steps;
        if !self.warmed_up() {
            for i in 0..n {
                self.cdf[i] = (i + 1) as f64 / n as f64;
            }
        } else {
            let mut total = 0.0;
            for i in 0..n {
                let m2 = self.history[i].iter().map(|l| l * l).sum::<f64>() / H as f64;
                self.cdf[i] = libm::sqrt(m2);
                total += self.cdf[i];
            }
            let mut acc = 0.0;
            for i in 0..n {
                let w = if total > 0.0 { self.cdf[i] / total } else { 1.0 / n as f64 };
                acc += w * (1.0 - self.uniform_prob) + self.uniform_prob / n as f64;
                self.cdf[i] = acc;
            }
        }
        self.fresh = true;
    }

    /// Draws timesteps into `t_out` and their importance weights `1 / (T p(t))` into `w_out`.
    pub fn sample<R: Rng + ?Sized>(&mut self, rng: &mut R, t_out: &mut [usize], w_out: &mut [f64]) -> Result<()> {
        check_len(t_out.len(), w_out.len())?;
        self.refresh();
        let n = self.steps;
        let total = self.cdf[n - 1];
        for (t, w) in t_out.iter_mut().zip(w_out.iter_mut()) {
            let u = uniform_f64(rng) * total;
            let i = self.cdf[..n].partition_point(|&c| c <= u).min(n - 1);
            let lo = if i == 0 { 0.0 } else { self.cdf[i - 1] };
            *t = i + 1;
            *w = total / (n as f64 * (self.cdf[i] - lo));
        }
        Ok(())
    }
}
