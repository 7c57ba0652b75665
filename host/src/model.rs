//! A trained model: the network with its (EMA) weights, schedule, prediction kind and data
//! normalisation, as the core's [`Denoiser`] (on normalised data).

use std::path::Path;

use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use elbo_core::{BetaSchedule, Prediction};

use crate::checkpoint::{Checkpoint, ModelConfig, ScheduleConfig};
use crate::data::Normalization;
use crate::error::{Result, flag, input};
use crate::nn::Mlp;
use crate::{HostSchedule, error};

/// A trained MLP denoiser.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The network.
    pub mlp: Mlp,
    /// Its weights (EMA).
    pub params: Vec<f32>,
    /// What it predicts.
    pub prediction: Prediction,
    /// The data normalisation it was trained with.
    pub normalization: Normalization,
    /// The full configuration.
    pub config: ModelConfig,
    t_buf: Vec<usize>,
    label_buf: Vec<u32>,
    /// Raw outputs (mean and variance channels) of a learned-variance model.
    raw: Vec<f32>,
    /// The variance outputs of the last prediction.
    var: Vec<f32>,
}

/// Builds the schedule a model was trained with.
pub fn build_schedule(s: &ScheduleConfig) -> Result<Box<HostSchedule>> {
    let kind = BetaSchedule::from_name(&s.name, s.beta_start, s.beta_end).map_err(|e| flag("schedule", e))?;
    Ok(Box::new(HostSchedule::new(&kind, s.timesteps, s.zero_terminal_snr).map_err(|e| flag("schedule", e))?))
}

impl Trained {
    /// Wraps a network and weights.
    pub fn new(config: ModelConfig, params: Vec<f32>) -> Result<Self> {
        let prediction = Prediction::from_name(&config.prediction).map_err(|e| flag("config.json prediction", e))?;
        let mlp = Mlp::new(config.mlp.clone());
        if params.len() != mlp.n_params() {
            return Err(input("config.json: the weights do not fit the architecture"));
        }
        Ok(Trained {
            mlp,
            params,
            prediction,
            normalization: config.normalization.clone(),
            config,
            t_buf: vec![],
            label_buf: vec![],
            raw: vec![],
            var: vec![],
        })
    }

    /// Loads a checkpoint directory (EMA weights).
    pub fn load(dir: &Path) -> Result<Self> {
        let c = Checkpoint::load(dir, false)?;
        Trained::new(c.config, c.ema)
    }

    /// Whether the model predicts its reverse variance.
    pub fn has_learned_variance(&self) -> bool {
        self.mlp.config().out == 2 * self.mlp.config().dim
    }

    /// The schedule of the model.
    pub fn schedule(&self) -> Result<Box<HostSchedule>> {
        build_schedule(&self.config.schedule)
    }
}

impl Denoiser for Trained {
    type Error = error::Error;

    fn dim(&self) -> usize {
        self.mlp.config().dim
    }

    fn prediction(&self) -> Prediction {
        self.prediction
    }

    fn classes(&self) -> usize {
        self.mlp.config().classes
    }

    fn predict(&mut self, x: &[f32], level: NoiseLevel, cond: Condition<'_>, out: &mut [f32]) -> Result<()> {
        let n = x.len() / self.dim();
        self.t_buf.clear();
        self.t_buf.resize(n, level.t);
        let labels = match (cond, self.classes()) {
            (_, 0) => None,
            (Condition::Unconditional, c) => {
                self.label_buf.clear();
                self.label_buf.resize(n, c as u32);
                Some(&self.label_buf[..])
            }
            (Condition::Class(l), _) => Some(l),
        };
        if !self.has_learned_variance() {
            self.mlp.forward(&self.params, x, &self.t_buf, labels, out);
            return Ok(());
        }
        let d = self.dim();
        self.raw.resize(2 * x.len(), 0.0);
        self.mlp.forward(&self.params, x, &self.t_buf, labels, &mut self.raw);
        self.var.resize(x.len(), 0.0);
        for ((row, o), v) in self.raw.chunks_exact(2 * d).zip(out.chunks_exact_mut(d)).zip(self.var.chunks_exact_mut(d))
        {
            o.copy_from_slice(&row[..d]);
            v.copy_from_slice(&row[d..]);
        }
        Ok(())
    }

    fn learned_variance(&self) -> Option<&[f32]> {
        self.has_learned_variance().then_some(&self.var[..])
    }
}
