//! Checkpoints: a directory with
//!
//! - `config.json`: architecture, schedule, prediction, data normalisation, training arguments,
//!   step (what a user needs to sample and evaluate);
//! - `model.safetensors`: the EMA weights under the layer names (`layers.0.weight` `[in, out]`,
//!   `layers.0.bias`, ..., `class_embedding`), the raw weights under `raw.` + name;
//! - `optimizer.safetensors`: AdamW's moments `adam.m`, `adam.v`;
//! - `state.json`: the generator state, the importance sampler's history and the loss log.
//!
//! Every file is written atomically (temporary file, fsync, rename) and carries the step;
//! loading checks that all four agree, so an interrupted write is detected, never half-read.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::data::Normalization;
use crate::error::{Result, input};
use crate::io::write_atomic;
use crate::nn::{Mlp, MlpConfig};

/// The schedule a model was trained with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    /// diffusers' name.
    pub name: String,
    /// T.
    pub timesteps: usize,
    /// First beta (linear-type schedules).
    pub beta_start: f64,
    /// Last beta.
    pub beta_end: f64,
    /// Rescaled to zero terminal SNR.
    pub zero_terminal_snr: bool,
    /// Continuous-time schedules (`vdm`, `cosine-logsnr`, `learned`): the log-SNR end points
    /// `[lambda(0), lambda(1)]` (the initial ones of `learned`, whose parameters are weights);
    /// `timesteps` is then the default discretisation for sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_snr_range: Option<[f64; 2]>,
}

impl ScheduleConfig {
    /// Whether the model is a continuous-time one.
    pub fn is_continuous(&self) -> bool {
        crate::continuous::is_continuous(&self.name)
    }
}

/// Names, shapes and offsets of every tensor of a model's flat parameter vector, and its
/// length: the network's (see [`Mlp::tensors`]), then `schedule.params` of a learned schedule
/// (see [`crate::continuous::LearnedGamma`]).
pub fn tensors(config: &ModelConfig) -> (Vec<(String, Vec<usize>, usize)>, usize) {
    if let Some(v) = config.vae_net() {
        return (v.tensors(), v.n_params());
    }
    let mlp = Mlp::new(config.mlp.clone());
    let mut v = mlp.tensors();
    let mut n = mlp.n_params();
    if config.schedule.name == "learned" {
        v.push(("schedule.params".into(), vec![crate::continuous::N_PARAMS], n));
        n += crate::continuous::N_PARAMS;
    }
    (v, n)
}

/// The training arguments, stored so that `--resume` continues the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainArgs {
    /// `--data`.
    pub data: String,
    /// Training examples drawn from a generated set.
    pub n_train: usize,
    /// Total optimisation steps.
    pub steps: u64,
    /// Batch size.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// EMA decay.
    pub ema_decay: f64,
    /// `--loss`.
    pub loss: String,
    /// `--t-sampling`.
    pub t_sampling: String,
    /// Reverse variance of the VLB terms (`small` or `large`).
    pub variance: String,
    /// Probability of replacing the label by the null class (classifier-free guidance).
    pub cond_dropout: f64,
    /// `--seed`.
    pub seed: u64,
    /// Checkpoint every this many steps.
    pub checkpoint_every: u64,
}

/// `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Always `elbo-checkpoint`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// Steps done.
    pub step: u64,
    /// The network.
    pub mlp: MlpConfig,
    /// `eps`, `x0` or `v`.
    pub prediction: String,
    /// The schedule.
    pub schedule: ScheduleConfig,
    /// Data normalisation (the model works on normalised data).
    pub normalization: Normalization,
    /// How it was trained.
    pub train: TrainArgs,
    /// A VAE baseline (`prediction` is then `vae`; `mlp` gives the hidden layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<crate::vae::VaeConfig>,
}

impl ModelConfig {
    /// The VAE of a VAE checkpoint.
    pub fn vae_net(&self) -> Option<crate::vae::Vae> {
        self.vae.as_ref().map(|v| crate::vae::Vae::new(self.mlp.dim, v, self.mlp.width, self.mlp.depth))
    }
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Steps done.
    pub step: u64,
    /// The generator after `step` steps.
    pub rng: rand_pcg::Pcg32,
    /// The importance sampler's loss history (`T` rows) and counts, if used.
    pub resampler: Option<(Vec<Vec<f64>>, Vec<usize>)>,
    /// `(step, mean loss since the previous entry, learning rate)`.
    pub loss_log: Vec<(u64, f64, f64)>,
}

/// Everything a checkpoint holds.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// `config.json`.
    pub config: ModelConfig,
    /// Raw parameters.
    pub params: Vec<f32>,
    /// EMA parameters.
    pub ema: Vec<f32>,
    /// Adam first moments.
    pub adam_m: Vec<f32>,
    /// Adam second moments.
    pub adam_v: Vec<f32>,
    /// `state.json`.
    pub state: RunState,
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn safetensors_bytes(tensors: Vec<(String, Vec<usize>, Vec<u8>)>, step: u64) -> anyhow::Result<Vec<u8>> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<std::result::Result<_, safetensors::SafeTensorError>>()?;
    // One key only: the metadata is a HashMap, whose order (and so the file's bytes) would
    // otherwise vary from process to process.
    let meta = HashMap::from([("step".to_string(), step.to_string())]);
    Ok(safetensors::serialize(views, Some(meta))?)
}

impl Checkpoint {
    /// Writes the four files atomically (state and optimizer first, `config.json` last).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let step = self.config.step;
        let mut model = Vec::new();
        for (name, shape, off) in tensors(&self.config).0 {
            let n: usize = shape.iter().product();
            model.push((name.clone(), shape.clone(), bytes(&self.ema[off..off + n])));
            model.push((format!("raw.{name}"), shape, bytes(&self.params[off..off + n])));
        }
        let opt = vec![
            ("adam.m".to_string(), vec![self.adam_m.len()], bytes(&self.adam_m)),
            ("adam.v".to_string(), vec![self.adam_v.len()], bytes(&self.adam_v)),
        ];
        write_atomic(&dir.join("state.json"), &serde_json::to_vec(&self.state)?)?;
        write_atomic(&dir.join("optimizer.safetensors"), &safetensors_bytes(opt, step)?)?;
        write_atomic(&dir.join("model.safetensors"), &safetensors_bytes(model, step)?)?;
        write_atomic(&dir.join("config.json"), &serde_json::to_vec_pretty(&self.config)?)?;
        Ok(())
    }

    /// Reads a checkpoint directory; with `training`, also the optimizer and run state.
    pub fn load(dir: &Path, training: bool) -> Result<Self> {
        let bad = |what: &str| input(format!("{}: {what}", dir.display()));
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| bad(&format!("{name}: {e} (expected an elbo checkpoint directory)")))
        };
        let config: ModelConfig = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| bad(&format!("config.json: not an elbo checkpoint config ({e})")))?;
        if config.format != "elbo-checkpoint" || config.version != 1 {
            return Err(bad("config.json: not an elbo checkpoint (format elbo-checkpoint, version 1)"));
        }
        let (layout, n_params) = tensors(&config);
        let model_bytes = read("model.safetensors")?;
        let st = SafeTensors::deserialize(&model_bytes)
            .map_err(|e| bad(&format!("model.safetensors: corrupt or truncated ({e})")))?;
        check_step(&model_bytes, config.step).map_err(|e| bad(&format!("model.safetensors: {e}")))?;
        let (mut params, mut ema) = (vec![0.0f32; n_params], vec![0.0f32; n_params]);
        for (name, shape, off) in layout {
            for (prefix, dst) in [("", &mut ema), ("raw.", &mut params)] {
                let t = st
                    .tensor(&format!("{prefix}{name}"))
                    .map_err(|_| bad(&format!("model.safetensors: missing {prefix}{name}")))?;
                if t.dtype() != Dtype::F32 || t.shape() != shape.as_slice() {
                    return Err(bad(&format!("model.safetensors: {prefix}{name} should be f32 {shape:?}")));
                }
                let n: usize = shape.iter().product();
                dst[off..off + n].copy_from_slice(&floats(t.data()));
            }
        }
        if let Some(i) = ema.iter().position(|v| !v.is_finite()) {
            return Err(bad(&format!("model.safetensors: non-finite weight at index {i}")));
        }
        let (mut adam_m, mut adam_v) = (Vec::new(), Vec::new());
        let mut state = RunState {
            step: config.step,
            rng: rand_core::SeedableRng::seed_from_u64(0),
            resampler: None,
            loss_log: vec![],
        };
        if training {
            let ob = read("optimizer.safetensors")?;
            let os = SafeTensors::deserialize(&ob)
                .map_err(|e| bad(&format!("optimizer.safetensors: corrupt or truncated ({e})")))?;
            check_step(&ob, config.step).map_err(|e| bad(&format!("optimizer.safetensors: {e}")))?;
            for (name, dst) in [("adam.m", &mut adam_m), ("adam.v", &mut adam_v)] {
                let t = os.tensor(name).map_err(|_| bad(&format!("optimizer.safetensors: missing {name}")))?;
                *dst = floats(t.data());
                if dst.len() != n_params {
                    return Err(bad(&format!("optimizer.safetensors: {name} has the wrong length")));
                }
            }
            state =
                serde_json::from_slice(&read("state.json")?).map_err(|e| bad(&format!("state.json: corrupt ({e})")))?;
            if state.step != config.step {
                return Err(bad("state.json: its step differs from config.json (interrupted write?)"));
            }
        }
        Ok(Checkpoint { config, params, ema, adam_m, adam_v, state })
    }
}

fn check_step(bytes: &[u8], step: u64) -> std::result::Result<(), String> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| format!("corrupt ({e})"))?;
    let s = meta.metadata().as_ref().and_then(|m| m.get("step")).and_then(|s| s.parse::<u64>().ok());
    if s != Some(step) {
        return Err(format!("step {s:?} differs from config.json's {step} (interrupted write?)"));
    }
    Ok(())
}
