//! Which timesteps a sampler with `K < T` steps visits: diffusers' `timestep_spacing`
//! (Lin et al. 2024, Table 2), reproduced exactly, including numpy's round-half-to-even.
//! diffusers' timesteps are 0-based; here `t = timestep + 1`.

use crate::error::{Error, Result};

/// diffusers' `timestep_spacing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    /// `arange(K) * (T // K)` (+ `steps_offset`), diffusers' default.
    Leading,
    /// `round(arange(T, 0, -T/K)) - 1`: always starts at the last timestep.
    Trailing,
    /// `round(linspace(0, T - 1, K))`.
    Linspace,
}

impl Spacing {
    /// `leading`, `trailing` or `linspace`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            "linspace" => Ok(Spacing::Linspace),
            _ => Err(Error::UnknownName { what: "timestep spacing" }),
        }
    }
}

/// The `K` timesteps of a sampler over a `T`-step schedule, noisiest first. No buffer: each is
/// computed when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timesteps {
    spacing: Spacing,
    count: usize,
    steps: usize,
    offset: usize,
}

impl Timesteps {
    /// `count` timesteps of a `steps`-step schedule (`1 <= count <= steps`), with diffusers'
    /// `steps_offset` (applies to `Leading` only; usually 0, 1 for Stable Diffusion).
    pub fn new(spacing: Spacing, count: usize, steps: usize, offset: usize) -> Result<Self> {
        if count == 0 || steps == 0 {
            return Err(Error::ZeroSteps);
        }
        if count > steps {
            return Err(Error::TooManySteps { steps: count, timesteps: steps });
        }
        let ts = Timesteps { spacing, count, steps, offset };
        // diffusers' timesteps must land inside the schedule (steps_offset can push them out).
        for i in 0..count {
            let t = ts.raw(i);
            if t < 1 || t > steps as i64 {
                return Err(Error::TimestepOutOfRange { t: t.max(0) as usize, steps });
            }
        }
        Ok(ts)
    }

    /// All `T` timesteps, `T, T-1, ..., 1`.
    pub fn all(steps: usize) -> Result<Self> {
        Timesteps::new(Spacing::Leading, steps, steps, 0)
    }

    /// The spacing.
    pub fn spacing(&self) -> Spacing {
        self.spacing
    }

    /// The schedule's `T`.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// `K`.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Never true (a sampler has at least one step); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The 1-based timestep visited at position `i` (0 = first, noisiest), as i64.
    fn raw(&self, i: usize) -> i64 {
        let (k, t) = (self.count, self.steps);
        let j = k - 1 - i; // index into diffusers' ascending array before its reversal
        let zero_based = match self.spacing {
            Spacing::Leading => (j * (t / k) + self.offset) as i64,
            Spacing::Linspace => {
                let v = if k == 1 {
                    0.0
                } else if j == k - 1 {
                    (t - 1) as f64
                } else {
                    j as f64 * ((t - 1) as f64 / (k - 1) as f64)
                };
                libm::rint(v) as i64
            }
            Spacing::Trailing => {
                // numpy's float arange fills `start + i * delta`, `delta = (start + step) - start`.
                let start = t as f64;
                let delta = (start + -(t as f64 / k as f64)) - start;
                libm::rint(start + i as f64 * delta) as i64 - 1
            }
        };
        zero_based + 1
    }

    /// The 1-based timestep at position `i` (`0 <= i < K`).
    pub fn get(&self, i: usize) -> Result<usize> {
        if i >= self.count {
            return Err(Error::TimestepOutOfRange { t: i, steps: self.count });
        }
        Ok(self.raw(i) as usize)
    }

    /// The timestep after position `i` in the sequence (0 after the last: the data), as
    /// diffusers' DDPM `previous_timestep` does.
    pub fn next_in_sequence(&self, i: usize) -> Result<usize> {
        if i + 1 >= self.count { Ok(0) } else { self.get(i + 1) }
    }

    /// DDIM's previous timestep, `t - T // K` (0 or below: the data), as diffusers' DDIM does
    /// (for `Linspace` this is not always the next element of the sequence).
    pub fn ddim_previous(&self, i: usize) -> Result<usize> {
        let t = self.get(i)?;
        Ok(t.saturating_sub(self.steps / self.count))
    }

    /// The iterator over positions `(i, t)`.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.count).map(|i| self.raw(i) as usize)
    }
}
