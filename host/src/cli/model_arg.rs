//! `--model DIR|optimal`: a trained checkpoint, or the exact denoiser of a Gaussian mixture.

use crate::HostSchedule;
use crate::data::{DataSpec, FlatMixture, Normalization};
use crate::error::{Result, input};
use crate::model::{Trained, build_schedule};
use crate::onnx::{OnnxDenoiser, OnnxOpts};

use super::ScheduleOpts;

/// The model a command runs.
pub enum Source {
    /// A trained checkpoint.
    Trained(Box<Trained>),
    /// The Bayes-optimal denoiser of a mixture.
    Optimal(FlatMixture),
    /// An ONNX model through ONNX Runtime.
    Onnx(Box<OnnxDenoiser>),
}

impl Source {
    /// Resolves `--model`; `optimal` needs `--data` naming a mixture (gmm:FILE.json or 8gaussians).
    pub fn load(model: &str, data: Option<&str>, onnx: &OnnxOpts) -> Result<Self> {
        if let Some(path) = model.strip_prefix("optimal:") {
            // the exact denoiser of a mixture file, whatever the data
            return match DataSpec::parse(&format!("gmm:{path}")).map_err(|e| input(format!("--model {model}: {e}")))? {
                DataSpec::Mixture(m) => Ok(Source::Optimal(FlatMixture::new(&m)?)),
                _ => Err(input(format!("--model {model}: expected optimal:FILE.json, a Gaussian mixture"))),
            };
        }
        if model == "optimal" {
            let spec = data.ok_or_else(|| input("--model optimal: needs --data gmm:FILE.json (or 8gaussians)"))?;
            return match DataSpec::parse(spec)? {
                DataSpec::Mixture(m) => Ok(Source::Optimal(FlatMixture::new(&m)?)),
                _ => Err(input(format!(
                    "--model optimal: --data '{spec}' is not a Gaussian mixture (gmm:FILE.json or 8gaussians)"
                ))),
            };
        }
        let path = std::path::Path::new(model);
        if path.extension().is_some_and(|e| e == "onnx") {
            return Ok(Source::Onnx(Box::new(OnnxDenoiser::open(path, onnx)?)));
        }
        if !path.exists() {
            return Err(input(format!(
                "--model {model}: no such file or folder (expected a checkpoint directory, FILE.onnx or 'optimal')"
            )));
        }
        if !path.is_dir() {
            return Err(input(format!("--model {model}: expected a checkpoint directory, FILE.onnx or 'optimal'")));
        }
        Ok(Source::Trained(Box::new(Trained::load(path)?)))
    }

    /// The schedule: the model's own, or the command line's for `optimal`.
    pub fn schedule(&self, opts: &ScheduleOpts) -> Result<Box<HostSchedule>> {
        match self {
            Source::Trained(t) => t.schedule(),
            Source::Optimal(_) => opts.build(),
            Source::Onnx(o) => match &o.schedule {
                Some(s) => build_schedule(s),
                None => opts.build(),
            },
        }
    }

    /// The data normalisation the model works in.
    pub fn normalization(&self) -> Normalization {
        match self {
            Source::Trained(t) => t.normalization.clone(),
            Source::Optimal(m) => Normalization::identity(m.dim()),
            Source::Onnx(o) => {
                o.normalization.clone().unwrap_or_else(|| Normalization::identity(o.shape.iter().product()))
            }
        }
    }

    /// The shape of one example.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Source::Onnx(o) => o.shape.clone(),
            Source::Trained(t) => t.config.net.example_shape(),
            Source::Optimal(_) => vec![self.dim()],
        }
    }

    /// The data dimension.
    pub fn dim(&self) -> usize {
        match self {
            Source::Trained(t) => t.net.dim(),
            Source::Optimal(m) => m.dim(),
            Source::Onnx(o) => o.shape.iter().product(),
        }
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        match self {
            Source::Trained(t) => t.net.classes(),
            Source::Optimal(m) => m.components(),
            Source::Onnx(o) => elbo_core::Denoiser::classes(o.as_ref()),
        }
    }
}

/// Any model source is a denoiser, so sampling, guidance and the bound are written once.
impl elbo_core::Denoiser for Source {
    type Error = crate::error::Error;

    fn dim(&self) -> usize {
        Source::dim(self)
    }

    fn prediction(&self) -> elbo_core::Prediction {
        match self {
            Source::Trained(t) => t.prediction,
            Source::Optimal(_) => elbo_core::Prediction::X0,
            Source::Onnx(o) => o.prediction(),
        }
    }

    fn classes(&self) -> usize {
        Source::classes(self)
    }

    fn predict(
        &mut self,
        x: &[f32],
        level: elbo_core::NoiseLevel,
        cond: elbo_core::Condition<'_>,
        out: &mut [f32],
    ) -> Result<()> {
        match self {
            Source::Trained(t) => t.predict(x, level, cond, out),
            Source::Onnx(o) => o.predict(x, level, cond, out),
            Source::Optimal(m) => m.with_core(|g| {
                elbo_core::gmm::OptimalDenoiser::new(*g)
                    .predict(x, level, cond, out)
                    .map_err(|e| crate::error::flag("--model optimal", e))
            })?,
        }
    }

    fn predict_pair(
        &mut self,
        x: &[f32],
        level: elbo_core::NoiseLevel,
        cond: elbo_core::Condition<'_>,
        out: &mut [f32],
        uncond: &mut [f32],
    ) -> Result<()> {
        match self {
            // one call of 2N where the ONNX model's batch axis is dynamic
            Source::Onnx(o) => o.predict_pair(x, level, cond, out, uncond),
            _ => {
                self.predict(x, level, elbo_core::Condition::Unconditional, uncond)?;
                self.predict(x, level, cond, out)
            }
        }
    }

    fn has_variance(&self) -> bool {
        match self {
            Source::Trained(t) => t.has_variance(),
            _ => false,
        }
    }

    fn predict_with_variance(
        &mut self,
        x: &[f32],
        level: elbo_core::NoiseLevel,
        cond: elbo_core::Condition<'_>,
        out: &mut [f32],
        variance: &mut [f32],
    ) -> Result<()> {
        match self {
            Source::Trained(t) => t.predict_with_variance(x, level, cond, out, variance),
            other => {
                variance.fill(0.0);
                other.predict(x, level, cond, out)
            }
        }
    }
}

impl Source {
    /// The normalisation to invert on samples, if the model has one.
    pub fn data_normalization(&self) -> Option<Normalization> {
        match self {
            Source::Trained(t) => Some(t.normalization.clone()),
            Source::Optimal(_) => None,
            Source::Onnx(o) => o.normalization.clone(),
        }
    }
}
