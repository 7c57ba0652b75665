//! Drawing training timesteps: uniform, antithetic, stratified, and the loss-second-moment
//! importance sampler of improved-diffusion (Nichol & Dhariwal 2021, sec. 3.3). Every draw comes
//! with its importance weight `1 / (T p(t))` (continuous time: `1 / p(t)` on `[0, 1)`), so that
//! weighted losses stay unbiased estimates of the same objective (seed 002 eq. 13).

use heapless::HistoryBuf;
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

/// One timestep's record in a [`Resampler`]: its last `H` losses (a
/// [`HistoryBuf`], oldest first), how many were ever recorded, and its cumulative
/// probability.
#[derive(Debug, Clone)]
pub struct Slot<const H: usize> {
    history: HistoryBuf<f64, H>,
    count: usize,
    /// The cumulative probability up to this timestep, valid when the resampler is fresh.
    cdf: f64,
}

impl<const H: usize> Slot<H> {
    /// A timestep with no recorded loss.
    pub const EMPTY: Self = Slot { history: HistoryBuf::new(), count: 0, cdf: 0.0 };
}

/// improved-diffusion's `LossSecondMomentResampler`: once every timestep has `H` recorded
/// losses, draws `t` with probability proportional to `sqrt(E[L_t^2])` (mixed with a uniform
/// share of `uniform_prob`), which minimises the variance of the importance-weighted VLB.
/// Before that, uniform. The slots live in any storage `S` (a fixed array on a device, a `Vec`
/// on a host): one [`Slot`] per timestep. No allocation.
#[derive(Debug, Clone)]
pub struct Resampler<S, const H: usize> {
    steps: usize,
    uniform_prob: f64,
    slots: S,
    fresh: bool,
}

/// The resampler with a fixed capacity of `N` timesteps.
pub type LossSecondMomentResampler<const N: usize, const H: usize> = Resampler<[Slot<H>; N], H>;

impl<const N: usize, const H: usize> Resampler<[Slot<H>; N], H> {
    /// A resampler for `steps <= N` timesteps; improved-diffusion uses `H = 10` and
    /// `uniform_prob = 0.001`.
    pub fn new(steps: usize, uniform_prob: f64) -> Result<Self> {
        Resampler::with_slots([const { Slot::EMPTY }; N], steps, uniform_prob)
    }
}

impl<S: AsRef<[Slot<H>]> + AsMut<[Slot<H>]>, const H: usize> Resampler<S, H> {
    /// A resampler for `steps` timesteps in the caller's empty `slots` (at least `steps`).
    pub fn with_slots(slots: S, steps: usize, uniform_prob: f64) -> Result<Self> {
        if steps == 0 {
            return Err(Error::ZeroSteps);
        }
        let capacity = slots.as_ref().len();
        if steps > capacity {
            return Err(Error::Capacity { requested: steps, capacity });
        }
        if H == 0 || !(uniform_prob > 0.0 && uniform_prob <= 1.0) {
            return Err(Error::InvalidParameter { name: "uniform_prob", reason: "a value in (0, 1] and H > 0" });
        }
        Ok(Resampler { steps, uniform_prob, slots, fresh: false })
    }

    fn slot(&self, t: usize) -> Result<&Slot<H>> {
        match t.checked_sub(1).filter(|_| t <= self.steps).and_then(|i| self.slots.as_ref().get(i)) {
            Some(s) => Ok(s),
            None => Err(Error::TimestepOutOfRange { t, steps: self.steps }),
        }
    }

    fn slot_mut(&mut self, t: usize) -> Result<&mut Slot<H>> {
        let steps = self.steps;
        match t.checked_sub(1).filter(|_| t <= steps).and_then(|i| self.slots.as_mut().get_mut(i)) {
            Some(s) => Ok(s),
            None => Err(Error::TimestepOutOfRange { t, steps }),
        }
    }

    /// Whether every timestep has a full history (before that, draws are uniform).
    pub fn warmed_up(&self) -> bool {
        self.slots.as_ref().iter().take(self.steps).all(|s| s.count >= H)
    }

    /// Records the loss of timestep `t`; the oldest of a full history is dropped.
    pub fn update(&mut self, t: usize, loss: f64) -> Result<()> {
        if !loss.is_finite() {
            return Err(Error::InvalidParameter { name: "loss", reason: "a finite value" });
        }
        let s = self.slot_mut(t)?;
        s.history.write(loss);
        s.count += 1;
        self.fresh = false;
        Ok(())
    }

    /// The recorded losses of timestep `t` (oldest first) and how many were ever recorded, to
    /// save a run.
    pub fn entry(&self, t: usize) -> Result<(impl Iterator<Item = f64> + '_, usize)> {
        let s = self.slot(t)?;
        Ok((s.history.oldest_ordered().copied(), s.count))
    }

    /// Restores timestep `t` from [`entry`](Self::entry)'s values, to resume a run exactly.
    pub fn restore(&mut self, t: usize, losses: &[f64], count: usize) -> Result<()> {
        if losses.len() != count.min(H) || !losses.iter().all(|l| l.is_finite()) {
            return Err(Error::InvalidParameter { name: "history", reason: "min(count, H) finite losses" });
        }
        let s = self.slot_mut(t)?;
        s.history.clear();
        for &l in losses {
            s.history.write(l);
        }
        s.count = count;
        self.fresh = false;
        Ok(())
    }

    /// The probability of drawing `t`.
    pub fn probability(&mut self, t: usize) -> Result<f64> {
        self.slot(t)?;
        self.refresh();
        let cdf = |i: usize| self.slots.as_ref()[i].cdf;
        let lo = if t == 1 { 0.0 } else { cdf(t - 2) };
        Ok(cdf(t - 1) - lo)
    }

    fn refresh(&mut self) {
        if self.fresh {
            return;
        }
        let n = self.steps;
        let warmed = self.warmed_up();
        let slots = &mut self.slots.as_mut()[..n];
        if !warmed {
            for (i, s) in slots.iter_mut().enumerate() {
                s.cdf = (i + 1) as f64 / n as f64;
            }
        } else {
            let mut total = 0.0;
            for s in slots.iter_mut() {
                let m2 = s.history.oldest_ordered().map(|l| l * l).sum::<f64>() / H as f64;
                s.cdf = libm::sqrt(m2);
                total += s.cdf;
            }
            let mut acc = 0.0;
            for s in slots.iter_mut() {
                let w = if total > 0.0 { s.cdf / total } else { 1.0 / n as f64 };
                acc += w * (1.0 - self.uniform_prob) + self.uniform_prob / n as f64;
                s.cdf = acc;
            }
        }
        self.fresh = true;
    }

    /// Draws timesteps into `t_out` and their importance weights `1 / (T p(t))` into `w_out`.
    pub fn sample<R: Rng + ?Sized>(&mut self, rng: &mut R, t_out: &mut [usize], w_out: &mut [f64]) -> Result<()> {
        check_len(t_out.len(), w_out.len())?;
        self.refresh();
        let n = self.steps;
        let slots = &self.slots.as_ref()[..n];
        let total = slots[n - 1].cdf;
        for (t, w) in t_out.iter_mut().zip(w_out.iter_mut()) {
            let u = uniform_f64(rng) * total;
            let i = slots.partition_point(|s| s.cdf <= u).min(n - 1);
            let lo = if i == 0 { 0.0 } else { slots[i - 1].cdf };
            *t = i + 1;
            *w = total / (n as f64 * (slots[i].cdf - lo));
        }
        Ok(())
    }
}
