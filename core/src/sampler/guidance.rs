//! Guidance as denoiser adapters, so every sampler can use it.
//!
//! - Classifier-free (seed 004 eq. 170): `score = gamma score(x, y) + (1 - gamma) score(x, null)`.
//!   The combination is affine with weights summing to 1, and every parameterisation is an
//!   affine function of the score at fixed `x_t`, so it is applied to the raw predictions of any
//!   kind. `gamma = 1` is the plain conditional model, `gamma = 0` the unconditional one; gamma
//!   is diffusers' `guidance_scale`.
//! - Classifier (seed 004 eq. 166): `score(x | y) = score(x) + gamma grad log p(y | x_t)` with an
//!   unconditional denoiser and a noise-conditional [`Classifier`].

use core::fmt;

use crate::denoiser::{Classifier, Condition, Denoiser, NoiseLevel};
use crate::error::{Error, RunError, check_len};
use crate::param::{Prediction, from_x0_eps, to_x0_eps};

/// Classifier-free guidance around a class-conditional denoiser.
pub struct ClassifierFree<'s, D> {
    inner: D,
    gamma: f32,
    scratch: &'s mut [f32],
}

impl<'s, D: Denoiser> ClassifierFree<'s, D> {
    /// `scratch` must hold a whole batch (it receives the unconditional prediction).
    pub fn new(inner: D, gamma: f32, scratch: &'s mut [f32]) -> Result<Self, Error> {
        if inner.classes() == 0 {
            return Err(Error::Unconditional);
        }
        if !gamma.is_finite() {
            return Err(Error::InvalidParameter { name: "guidance", reason: "a finite scale" });
        }
        Ok(ClassifierFree { inner, gamma, scratch })
    }
}

impl<D: Denoiser> Denoiser for ClassifierFree<'_, D> {
    type Error = RunError<D::Error>;

    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn prediction(&self) -> Prediction {
        self.inner.prediction()
    }
    fn classes(&self) -> usize {
        self.inner.classes()
    }
    fn has_variance(&self) -> bool {
        self.inner.has_variance()
    }

    fn predict(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
    ) -> Result<(), Self::Error> {
        self.guide(x, level, cond, out, None)
    }

    fn predict_with_variance(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
        variance: &mut [f32],
    ) -> Result<(), Self::Error> {
        self.guide(x, level, cond, out, Some(variance))
    }
}

impl<D: Denoiser> ClassifierFree<'_, D> {
    /// The guided prediction; a learned variance comes from the conditional call (as
    /// improved-diffusion's guided sampling takes it).
    fn guide(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
        variance: Option<&mut [f32]>,
    ) -> Result<(), RunError<D::Error>> {
        if cond == Condition::Unconditional {
            return Err(Error::InvalidParameter { name: "guidance", reason: "a class label to guide towards" }.into());
        }
        let guided = self.gamma != 1.0;
        // the unconditional prediction's buffer, needed (and checked) only when guiding
        let n = x.len();
        let short = Error::DimensionMismatch { expected: n, got: 0 };
        match (variance, guided) {
            (Some(v), _) => {
                if guided {
                    let uncond = self.scratch.get_mut(..n).ok_or(short)?;
                    self.inner.predict(x, level, Condition::Unconditional, uncond).map_err(RunError::Model)?;
                }
                self.inner.predict_with_variance(x, level, cond, out, v)
            }
            // both predictions at once where the model can (one call of 2N)
            (None, true) => {
                let uncond = self.scratch.get_mut(..n).ok_or(short)?;
                self.inner.predict_pair(x, level, cond, out, uncond)
            }
            (None, false) => self.inner.predict(x, level, cond, out),
        }
        .map_err(RunError::Model)?;
        if self.gamma == 1.0 {
            return Ok(());
        }
        let uncond = &self.scratch[..x.len()];
        let g = self.gamma;
        for (o, &u) in out.iter_mut().zip(uncond.iter()) {
            *o = g * *o + (1.0 - g) * u;
        }
        Ok(())
    }
}

/// An error of classifier guidance: the core's, the denoiser's or the classifier's.
#[derive(Debug, Clone, PartialEq)]
pub enum GuidedError<A, B> {
    /// Bad input.
    Core(Error),
    /// The denoiser failed.
    Denoiser(A),
    /// The classifier failed.
    Classifier(B),
}

impl<A, B> From<Error> for GuidedError<A, B> {
    fn from(e: Error) -> Self {
        GuidedError::Core(e)
    }
}

impl<A: fmt::Display, B: fmt::Display> fmt::Display for GuidedError<A, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuidedError::Core(e) => e.fmt(f),
            GuidedError::Denoiser(e) => write!(f, "denoiser: {e}"),
            GuidedError::Classifier(e) => write!(f, "classifier: {e}"),
        }
    }
}

/// Classifier guidance around an unconditional denoiser.
pub struct ClassifierGuided<'s, D, C> {
    inner: D,
    classifier: C,
    classes: usize,
    gamma: f32,
    scratch: &'s mut [f32],
}

impl<'s, D: Denoiser, C: Classifier> ClassifierGuided<'s, D, C> {
    /// `classes` is the number of labels the classifier knows; `scratch` must hold a whole
    /// batch (it receives the classifier's gradient).
    pub fn new(inner: D, classifier: C, classes: usize, gamma: f32, scratch: &'s mut [f32]) -> Result<Self, Error> {
        if classes == 0 {
            return Err(Error::Unconditional);
        }
        if !gamma.is_finite() {
            return Err(Error::InvalidParameter { name: "guidance", reason: "a finite scale" });
        }
        Ok(ClassifierGuided { inner, classifier, classes, gamma, scratch })
    }
}

impl<D: Denoiser, C: Classifier> Denoiser for ClassifierGuided<'_, D, C> {
    type Error = GuidedError<D::Error, C::Error>;

    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn prediction(&self) -> Prediction {
        self.inner.prediction()
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn has_variance(&self) -> bool {
        self.inner.has_variance()
    }

    fn predict(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
    ) -> Result<(), Self::Error> {
        self.guide(x, level, cond, out, None)
    }

    fn predict_with_variance(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
        variance: &mut [f32],
    ) -> Result<(), Self::Error> {
        self.guide(x, level, cond, out, Some(variance))
    }
}

impl<D: Denoiser, C: Classifier> ClassifierGuided<'_, D, C> {
    /// The guided prediction (the model's variance output, if asked for, is its own).
    fn guide(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
        variance: Option<&mut [f32]>,
    ) -> Result<(), GuidedError<D::Error, C::Error>> {
        let Condition::Class(labels) = cond else {
            return Err(Error::InvalidParameter { name: "guidance", reason: "a class label to guide towards" }.into());
        };
        check_len(x.len(), out.len())?;
        match variance {
            Some(v) => self.inner.predict_with_variance(x, level, Condition::Unconditional, out, v),
            None => self.inner.predict(x, level, Condition::Unconditional, out),
        }
        .map_err(GuidedError::Denoiser)?;
        let grad = self.scratch.get_mut(..x.len()).ok_or(Error::DimensionMismatch { expected: x.len(), got: 0 })?;
        self.classifier.grad_log_prob(x, level, labels, grad).map_err(GuidedError::Classifier)?;
        let (a, s) = (level.sqrt_abar, level.sqrt_one_minus_abar);
        let kind = self.inner.prediction();
        for ((o, &xv), &g) in out.iter_mut().zip(x).zip(grad.iter()) {
            let (x0, eps) = to_x0_eps(kind, *o, xv, a, s);
            let score = from_x0_eps(Prediction::Score, x0, eps, a, s) + self.gamma * g;
            let (x0, eps) = to_x0_eps(Prediction::Score, score, xv, a, s);
            *o = from_x0_eps(kind, x0, eps, a, s);
        }
        Ok(())
    }
}
