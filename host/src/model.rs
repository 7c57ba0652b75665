//! A trained model: the network with its (EMA) weights, schedule, prediction kind and data
//! normalisation, as the core's [`Denoiser`] (on normalised data).

use std::path::Path;
use std::sync::Arc;

use elbo_core::Prediction;
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};

use crate::checkpoint::{Checkpoint, ModelConfig, ModelKind, ScheduleConfig};
use crate::continuous::Continuous;
use crate::data::Normalization;
use crate::error::{Result, flag, input};
use crate::network::Network;
use crate::nn::{continuous_tau, discrete_tau};
use crate::{HostSchedule, error};

/// A trained MLP denoiser.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The network.
    pub net: Arc<dyn Network>,
    /// Its weights (EMA).
    pub params: Vec<f32>,
    /// What it predicts.
    pub prediction: Prediction,
    /// The data normalisation it was trained with.
    pub normalization: Normalization,
    /// The full configuration.
    pub config: ModelConfig,
    t_buf: Vec<f32>,
    label_buf: Vec<u32>,
    /// Scratch for the raw outputs (mean and variance channels) of a learned-variance model.
    raw: Vec<f32>,
}

/// Builds the schedule a model was trained with (a continuous-time one discretised to its
/// `timesteps`; `learned` needs the model's weights: [`Trained::schedule`]).
pub fn build_schedule(s: &ScheduleConfig) -> Result<Box<HostSchedule>> {
    build_schedule_with(s, &[])
}

/// The continuous-time schedule of a configuration (`params`: the learned one's).
pub fn continuous_schedule(s: &ScheduleConfig, params: &[f32]) -> Result<Continuous> {
    let [hi, lo] = s.log_snr_range.ok_or_else(|| input("config.json schedule: log_snr_range is missing"))?;
    Continuous::new(s.name, hi, lo, params)
}

/// A continuous-time schedule's table at `steps` steps.
pub fn discretise(c: &Continuous, steps: usize) -> Result<Box<HostSchedule>> {
    Ok(Box::new(HostSchedule::from_log_snr(c, steps).map_err(|e| flag("schedule", e))?))
}

fn build_schedule_with(s: &ScheduleConfig, params: &[f32]) -> Result<Box<HostSchedule>> {
    if s.is_continuous() {
        return discretise(&continuous_schedule(s, params)?, s.timesteps);
    }
    if let Some(b) = &s.trained_betas {
        let kind = elbo_core::BetaSchedule::Custom(b);
        return Ok(Box::new(
            HostSchedule::new(&kind, b.len(), s.zero_terminal_snr).map_err(|e| flag("trained_betas", e))?,
        ));
    }
    let kind = s
        .name
        .beta_schedule(s.beta_start, s.beta_end)
        .ok_or_else(|| input(format!("config.json schedule: {} is not a discrete schedule", s.name)))?;
    Ok(Box::new(HostSchedule::new(&kind, s.timesteps, s.zero_terminal_snr).map_err(|e| flag("schedule", e))?))
}

impl Trained {
    /// Wraps a network and weights.
    pub fn new(config: ModelConfig, params: Vec<f32>) -> Result<Self> {
        let prediction = match &config.kind {
            ModelKind::Denoiser { prediction, .. } => Prediction::from(*prediction),
            ModelKind::Vae(_) => {
                return Err(input(
                    "config.json: this checkpoint is a VAE baseline (elbo eval reports its bound; it has no denoiser)",
                ));
            }
            ModelKind::Classifier => {
                return Err(input("config.json: this checkpoint is a classifier (give it as --classifier)"));
            }
        };
        let net = config.network();
        if params.len() != crate::checkpoint::tensors(&config).1 {
            return Err(input("config.json: the weights do not fit the architecture"));
        }
        Ok(Trained {
            net,
            params,
            prediction,
            normalization: config.normalization.clone(),
            config,
            t_buf: vec![],
            label_buf: vec![],
            raw: vec![],
        })
    }

    /// Loads a checkpoint directory (EMA weights).
    pub fn load(dir: &Path) -> Result<Self> {
        let c = Checkpoint::load(dir, false)?;
        Trained::new(c.config, c.ema)
    }

    /// Whether the model predicts its reverse variance.
    pub fn has_learned_variance(&self) -> bool {
        self.net.out() == 2 * self.net.dim()
    }

    /// The schedule of the model (a continuous-time one discretised to its `timesteps`).
    pub fn schedule(&self) -> Result<Box<HostSchedule>> {
        build_schedule_with(&self.config.schedule, self.schedule_params())
    }

    /// The weights of a learned schedule (empty otherwise).
    fn schedule_params(&self) -> &[f32] {
        &self.params[self.net.n_params()..]
    }

    /// The continuous-time schedule of a continuous-time model.
    pub fn continuous(&self) -> Option<Result<Continuous>> {
        self.config.schedule.is_continuous().then(|| continuous_schedule(&self.config.schedule, self.schedule_params()))
    }
}

/// A trained noise-conditional classifier (`elbo train-classifier`): `grad_x log p(y | x_t)`
/// for classifier guidance (seed 004 eq. 166), on the normalised data of its training.
#[derive(Debug, Clone)]
pub struct TrainedClassifier {
    net: Arc<dyn Network>,
    params: Vec<f32>,
    /// The full configuration.
    pub config: ModelConfig,
    t_buf: Vec<f32>,
}

impl TrainedClassifier {
    /// Loads a checkpoint directory written by `elbo train-classifier` (EMA weights).
    pub fn load(dir: &Path) -> Result<Self> {
        let c = Checkpoint::load(dir, false)?;
        if !c.config.is_classifier() {
            return Err(input(format!("{}: not a classifier (train one with elbo train-classifier)", dir.display())));
        }
        Ok(TrainedClassifier { net: c.config.network(), params: c.ema, config: c.config, t_buf: vec![] })
    }

    /// The number of classes (the network's outputs are their logits).
    pub fn n_classes(&self) -> usize {
        self.net.out()
    }

    /// The logits of a batch at timestep `t` (`rows x classes`).
    pub fn logits(&mut self, x: &[f32], t: usize) -> Vec<f32> {
        let n = x.len() / self.net.dim();
        self.t_buf.clear();
        self.t_buf.resize(n, discrete_tau(t));
        let mut out = vec![0.0f32; n * self.n_classes()];
        self.net.forward(&self.params, x, &self.t_buf, None, &mut out);
        out
    }
}

impl elbo_core::denoiser::Classifier for TrainedClassifier {
    type Error = error::Error;

    fn grad_log_prob(&mut self, x: &[f32], level: NoiseLevel, labels: &[u32], out: &mut [f32]) -> Result<()> {
        let n = x.len() / self.net.dim();
        let c = self.n_classes();
        if labels.len() != n || labels.iter().any(|&l| l as usize >= c) {
            return Err(input(format!("classifier: expected {n} labels below {c}")));
        }
        self.t_buf.clear();
        self.t_buf.resize(n, level.timestep);
        let g = self.net.loss_and_grads(&self.params, x, &self.t_buf, None, true, &|r0, logits, g| {
            let mut sum = 0.0;
            for (j, (lc, gc)) in logits.chunks_exact(c).zip(g.chunks_exact_mut(c)).enumerate() {
                sum += crate::train::log_softmax_grad(lc, labels[r0 + j] as usize, gc);
            }
            sum
        });
        match g.input {
            Some(dx) if dx.len() == out.len() => {
                out.copy_from_slice(&dx);
                Ok(())
            }
            _ => Err(input(format!("classifier: expected {} outputs", x.len()))),
        }
    }
}

impl Denoiser for Trained {
    type Error = error::Error;

    fn dim(&self) -> usize {
        self.net.dim()
    }

    fn prediction(&self) -> Prediction {
        self.prediction
    }

    fn classes(&self) -> usize {
        self.net.classes()
    }

    fn predict(&mut self, x: &[f32], level: NoiseLevel, cond: Condition<'_>, out: &mut [f32]) -> Result<()> {
        self.forward(x, level, cond, out, None)
    }

    fn has_variance(&self) -> bool {
        self.has_learned_variance()
    }

    fn predict_with_variance(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
        variance: &mut [f32],
    ) -> Result<()> {
        self.forward(x, level, cond, out, Some(variance))
    }
}

impl Trained {
    /// The network's prediction and (a learned-variance model, when asked) its variance output.
    fn forward(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
        variance: Option<&mut [f32]>,
    ) -> Result<()> {
        let n = x.len() / self.dim();
        self.t_buf.clear();
        // Continuous-time models read t = t_i / T of the discretisation they are sampled on.
        let tau = if self.config.schedule.is_continuous() {
            continuous_tau((f64::from(level.timestep) + 1.0) / level.steps as f64)
        } else {
            level.timestep
        };
        self.t_buf.resize(n, tau);
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
            if let Some(v) = variance {
                v.fill(0.0);
            }
            self.net.forward(&self.params, x, &self.t_buf, labels, out);
            return Ok(());
        }
        let d = self.dim();
        self.raw.resize(2 * x.len(), 0.0);
        self.net.forward(&self.params, x, &self.t_buf, labels, &mut self.raw);
        for (row, o) in self.raw.chunks_exact(2 * d).zip(out.chunks_exact_mut(d)) {
            o.copy_from_slice(&row[..d]);
        }
        if let Some(v) = variance {
            if v.len() != x.len() {
                return Err(input(format!("variance buffer of {} values for {} inputs", v.len(), x.len())));
            }
            for (row, vr) in self.raw.chunks_exact(2 * d).zip(v.chunks_exact_mut(d)) {
                vr.copy_from_slice(&row[d..]);
            }
        }
        Ok(())
    }
}
