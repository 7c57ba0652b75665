//! DDIM (Song, Meng & Ermon 2021, eq. 12), as diffusers' `DDIMScheduler.step` computes it:
//! `x_prev = sqrt(abar_p) x0_hat + sqrt(1 - abar_p - sigma^2) eps_hat + sigma z` with
//! `sigma = eta sqrt((1 - abar_p)/(1 - abar_t) (1 - abar_t/abar_p))`; `eta = 0` is deterministic,
//! `eta = 1` the ancestral sampler of the strided chain.

use super::{Clip, Spacing, Timesteps, X0Map, check_batch, check_signal, with_noise};
use crate::denoiser::{Condition, Denoiser, NoiseLevel};
use crate::error::{Error, Result, RunError, check_len};
use crate::param::{Prediction, to_x0_eps};
use crate::rng::Noise;
use crate::schedule::{Marginal, NoiseSchedule};

/// The coefficients of one DDIM update `t -> p`, computed once in f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdimCoefficients {
    /// `sqrt(abar_t)`, `sqrt(1 - abar_t)`.
    pub a_t: f32,
    /// See `a_t`.
    pub s_t: f32,
    /// `sqrt(abar_p)`.
    pub a_p: f32,
    /// `sqrt(1 - abar_p - sigma^2)`.
    pub direction: f32,
    /// `sigma`.
    pub sigma: f32,
}

impl DdimCoefficients {
    /// For the marginals at `t` and at the previous timestep `p` (the data if `p = 0`).
    pub fn new(cur: &Marginal, prev: &Marginal, eta: f32) -> Self {
        let beta_eff = -libm::expm1(cur.log_abar - prev.log_abar);
        let oma_p = -libm::expm1(prev.log_abar);
        let oma_t = -libm::expm1(cur.log_abar);
        let var = oma_p / oma_t * beta_eff;
        let sigma = f64::from(eta) * libm::sqrt(var);
        let dir2 = oma_p - sigma * sigma;
        DdimCoefficients {
            a_t: cur.sqrt_abar,
            s_t: cur.sqrt_one_minus_abar,
            a_p: prev.sqrt_abar,
            direction: libm::sqrt(if dir2 > 0.0 { dir2 } else { 0.0 }) as f32,
            sigma: sigma as f32,
        }
    }
}

/// One DDIM update in place. Clipping maps `x0_hat` only (diffusers' default
/// `use_clipped_model_output = False`); with [`Clip::Dynamic`], `x` is one example.
/// `noise(first, out)` fills `out` with the normals of elements `first..` of `x`; it is called
/// only when `sigma > 0`.
pub fn ddim_update(
    c: &DdimCoefficients,
    kind: Prediction,
    pred: &[f32],
    x: &mut [f32],
    clip: Clip,
    noise: impl FnMut(usize, &mut [f32]),
) -> Result<()> {
    check_len(x.len(), pred.len())?;
    check_signal(kind, c.a_t)?;
    let map = X0Map::new(clip, pred.iter().zip(x.iter()).map(|(&p, &xv)| to_x0_eps(kind, p, xv, c.a_t, c.s_t).0));
    // the deterministic part, then the noise (as in the DDPM update)
    for (xv, &p) in x.iter_mut().zip(pred) {
        let (x0, eps) = to_x0_eps(kind, p, *xv, c.a_t, c.s_t);
        *xv = c.a_p * X0Map::apply(map, x0) + c.direction * eps;
    }
    if c.sigma > 0.0 {
        with_noise(x, noise, |_, xc, z| {
            for (xv, &zi) in xc.iter_mut().zip(z) {
                *xv += c.sigma * zi;
            }
        });
    }
    Ok(())
}

/// The DDIM sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ddim {
    /// `eta >= 0` (0: deterministic).
    pub eta: f32,
    /// The timesteps visited.
    pub timesteps: Timesteps,
    /// What is done to the predicted `x_0`.
    pub clip: Clip,
    /// Whether the last step goes to `abar = 1` (diffusers' `set_alpha_to_one`, its default) or
    /// to `abar_1`, the first timestep's, as Stable Diffusion's configs say.
    pub set_alpha_to_one: bool,
}

impl Ddim {
    /// `count` steps with the given spacing over a `steps`-step schedule.
    pub fn new(eta: f32, spacing: Spacing, count: usize, steps: usize) -> Result<Self> {
        Ddim::with_offset(eta, spacing, count, steps, 0)
    }

    /// As [`Ddim::new`], with diffusers' `steps_offset` (of the `leading` spacing).
    pub fn with_offset(eta: f32, spacing: Spacing, count: usize, steps: usize, offset: usize) -> Result<Self> {
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(Error::InvalidParameter { name: "eta", reason: "a finite value >= 0" });
        }
        let timesteps = Timesteps::new(spacing, count, steps, offset)?;
        Ok(Ddim { eta, timesteps, clip: Clip::Off, set_alpha_to_one: true })
    }

    /// Runs the chain from `x = x_T` to `x_0`; `scratch` (same length) receives model outputs.
    /// With `eta > 0`, the noise of example `e` at step `i` (0-based) is `noise`'s draw `i` of
    /// example `e`.
    pub fn sample<D: Denoiser, S: NoiseSchedule + ?Sized, N: Noise + ?Sized>(
        &self,
        denoiser: &mut D,
        schedule: &S,
        x: &mut [f32],
        scratch: &mut [f32],
        cond: Condition<'_>,
        noise: &mut N,
    ) -> core::result::Result<(), RunError<D::Error>> {
        check_batch(denoiser, x, scratch, cond)?;
        let clip = self.clip.check()?;
        let ts = self.timesteps;
        let kind = denoiser.prediction();
        let dim = denoiser.dim();
        for i in 0..ts.len() {
            let step = schedule.step(ts.get(i)?)?;
            check_signal(kind, step.cur.sqrt_abar)?;
            let p = ts.ddim_previous(i)?;
            let prev = schedule.marginal(if p == 0 && !self.set_alpha_to_one { 1 } else { p })?;
            let c = DdimCoefficients::new(&step.cur, &prev, self.eta);
            denoiser.predict(x, NoiseLevel::of(&step), cond, scratch).map_err(RunError::Model)?;
            let draw = i as u32;
            for (e, (xe, pe)) in x.chunks_mut(dim).zip(scratch.chunks(dim)).enumerate() {
                ddim_update(&c, kind, pe, xe, clip, |first, out| noise.normals(e, draw, first, out))?;
            }
        }
        super::check_finite(x)?;
        Ok(())
    }
}
