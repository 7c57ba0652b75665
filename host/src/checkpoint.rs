//! Checkpoints: a directory with
//!
//! - `config.json`: architecture, schedule, prediction, data normalisation, training arguments,
//!   step (what a user needs to sample and evaluate);
//! - `model.safetensors`: the EMA weights under the layer names (`layers.0.weight` `[in, out]`,
//!   `layers.0.bias`, ..., `class_embedding`), the raw weights under `raw.` + name;
//! - `optimizer.safetensors`: AdamW's moments `adam.m`, `adam.v`;
//! - `state.json`: the generator state, the importance sampler's history and the loss log;
//! - `loss.csv`: the loss log as a table.
//!
//! **One atomic set.** The five files of a step are written into a fresh hidden folder `.next/`
//! (each file fsynced, then the folder), which one atomic rename turns into `.commit/`: from
//! that moment the new set is complete and it is the checkpoint. Its files are then moved into
//! the directory one by one and `.commit/` is removed. A reader sees, for each name, the file in
//! `.commit/` if there is one and the directory's otherwise, so at every moment it sees either
//! the whole previous set or the whole new one; a writer that finds a `.commit/` left by a
//! killed run finishes the move first ("roll forward"), and removes a `.next/` (an unfinished
//! write, whose step is simply lost). Each file also carries the step, and loading checks that
//! all agree. The writer holds the directory's lock ([`crate::io::OutputLock`]).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::data::Normalization;
use crate::error::{Result, input};
use crate::io::sync_dir;
use crate::kinds::{FixedVariance, PredictionKind, ScheduleKind, TimestepSampling};
use crate::nn::{Mlp, MlpConfig, UNet, UNetConfig};
use crate::train::Loss;

/// The hidden folder a new checkpoint is written into.
pub const NEXT: &str = ".next";
/// The hidden folder of a complete checkpoint whose files are being moved into place.
pub const COMMIT: &str = ".commit";
/// The files of one checkpoint, in the order they are written.
pub const FILES: [&str; 5] = ["state.json", "optimizer.safetensors", "model.safetensors", "loss.csv", "config.json"];

/// The path of checkpoint file `name` in `dir` as a reader must see it: the one in `.commit/`
/// while a commit is being moved into place, the directory's otherwise.
pub fn file_path(dir: &Path, name: &str) -> std::path::PathBuf {
    let committed = dir.join(COMMIT).join(name);
    if committed.exists() { committed } else { dir.join(name) }
}

/// Whether `dir` holds a checkpoint.
pub fn exists(dir: &Path) -> bool {
    file_path(dir, "config.json").is_file()
}

/// Reads checkpoint file `name` of `dir` (retrying once, should the file move out of
/// `.commit/` between the look and the read).
fn read_file(dir: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(file_path(dir, name)).or_else(|_| std::fs::read(file_path(dir, name)))
}

/// Finishes the commit of a complete checkpoint left in `.commit/` by a killed writer and
/// removes an unfinished `.next/`. Only the holder of the directory's lock may call this.
pub fn recover(dir: &Path) -> std::io::Result<()> {
    let commit = dir.join(COMMIT);
    if commit.is_dir() {
        for name in FILES {
            let src = commit.join(name);
            if src.exists() {
                std::fs::rename(&src, dir.join(name))?;
            }
        }
        sync_dir(dir)?;
        std::fs::remove_dir_all(&commit)?;
        sync_dir(dir)?;
    }
    match std::fs::remove_dir_all(dir.join(NEXT)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The loss log as CSV (`step,loss,lr`).
fn loss_csv(log: &[(u64, f64, f64)]) -> Vec<u8> {
    std::iter::once("step,loss,lr\n".to_string())
        .chain(log.iter().map(|(s, l, r)| format!("{s},{l},{r}\n")))
        .collect::<String>()
        .into_bytes()
}

/// The schedule a model was trained with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    /// The schedule (diffusers' names for the discrete ones).
    pub name: ScheduleKind,
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
    /// diffusers' `trained_betas` (`betas[t - 1] = beta_t`) of an ONNX model's schedule: they
    /// replace the named schedule (`timesteps` is their number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_betas: Option<Vec<f64>>,
}

impl ScheduleConfig {
    /// Whether the model is a continuous-time one.
    pub fn is_continuous(&self) -> bool {
        self.name.is_continuous()
    }
}

/// Names, shapes and offsets of every tensor of a model's flat parameter vector, and its
/// length: the network's (see [`Mlp::tensors`]), then `schedule.params` of a learned schedule
/// (see [`crate::continuous::LearnedGamma`]).
pub fn tensors(config: &ModelConfig) -> (Vec<(String, Vec<usize>, usize)>, usize) {
    if let Some(v) = config.vae_net() {
        return (v.tensors(), v.n_params());
    }
    let net = config.network();
    let mut v = net.tensors();
    let mut n = net.n_params();
    if config.schedule.name == ScheduleKind::Learned {
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
    pub loss: Loss,
    /// `--t-sampling`.
    pub t_sampling: TimestepSampling,
    /// Reverse variance of the VLB terms.
    pub variance: FixedVariance,
    /// Probability of replacing the label by the null class (classifier-free guidance).
    pub cond_dropout: f64,
    /// `--seed`.
    pub seed: u64,
    /// Checkpoint every this many steps.
    pub checkpoint_every: u64,
    /// Quantised data on these many levels of [-1, 1]: the continuous-time bound uses VDM's
    /// discrete decoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<usize>,
    /// A fingerprint of the training data as read (FNV-1a of its values' bits), so that
    /// `--resume` notices a data file that changed since the run began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_fingerprint: Option<String>,
}

/// The fingerprint of a data set's values (64-bit FNV-1a over the bits of every value, and its
/// dimension), as hex.
pub fn data_fingerprint(x: &[f32], dim: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in (dim as u64).to_le_bytes().into_iter().chain(x.iter().flat_map(|v| v.to_bits().to_le_bytes())) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// What a checkpoint's network is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A denoiser: its prediction, and whether it also predicts the reverse variance
    /// (improved-diffusion's learned range: a second output per coordinate).
    Denoiser {
        /// What it predicts.
        prediction: PredictionKind,
        /// Whether it has the variance head.
        learned_variance: bool,
    },
    /// A noise-conditional classifier (`elbo train-classifier`): one logit per class.
    Classifier,
    /// A VAE (one level) or a two-level Markovian HVAE baseline.
    Vae(crate::vae::VaeConfig),
}

impl Architecture {
    /// Input values per example.
    pub fn dim(&self) -> usize {
        match self {
            Architecture::Mlp(m) => m.dim,
            Architecture::Unet(u) => u.dim(),
        }
    }

    /// Output values per example.
    pub fn out(&self) -> usize {
        match self {
            Architecture::Mlp(m) => m.out,
            Architecture::Unet(u) => u.out(),
        }
    }

    /// Classes of a conditional network (0: unconditional).
    pub fn classes(&self) -> usize {
        match self {
            Architecture::Mlp(m) => m.classes,
            Architecture::Unet(u) => u.classes,
        }
    }

    /// The shape of one example: `[C, H, W]` for a U-Net, `[dim]` for an MLP.
    pub fn example_shape(&self) -> Vec<usize> {
        match self {
            Architecture::Mlp(m) => vec![m.dim],
            Architecture::Unet(u) => vec![u.channels, u.height, u.width],
        }
    }
}

/// A model's network: its family and architecture (stored in `config.json` under the family's
/// name, `mlp` or `unet`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// An MLP on flat vectors.
    Mlp(MlpConfig),
    /// A convolutional U-Net on images.
    Unet(UNetConfig),
}

/// The current version of `config.json` (version 1, whose `prediction` string doubled as the
/// model kind, still loads).
pub const CONFIG_VERSION: u32 = 2;

/// `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ConfigFile")]
pub struct ModelConfig {
    /// Always `elbo-checkpoint`.
    pub format: String,
    /// Format version ([`CONFIG_VERSION`]).
    pub version: u32,
    /// Steps done.
    pub step: u64,
    /// The network.
    #[serde(flatten)]
    pub net: Architecture,
    /// What the network is.
    pub kind: ModelKind,
    /// The schedule.
    pub schedule: ScheduleConfig,
    /// Data normalisation (the model works on normalised data).
    pub normalization: Normalization,
    /// How it was trained.
    pub train: TrainArgs,
}

/// `config.json` as read: version 2 (`kind`) or version 1 (`prediction` and `vae`).
#[derive(Deserialize)]
struct ConfigFile {
    format: String,
    version: u32,
    step: u64,
    #[serde(default)]
    mlp: Option<MlpConfig>,
    #[serde(default)]
    unet: Option<UNetConfig>,
    #[serde(default)]
    kind: Option<ModelKind>,
    #[serde(default)]
    prediction: Option<String>,
    #[serde(default)]
    vae: Option<crate::vae::VaeConfig>,
    schedule: ScheduleConfig,
    normalization: Normalization,
    train: TrainArgs,
}

impl TryFrom<ConfigFile> for ModelConfig {
    type Error = String;

    fn try_from(f: ConfigFile) -> std::result::Result<Self, String> {
        if f.format != "elbo-checkpoint" || !(1..=CONFIG_VERSION).contains(&f.version) {
            return Err(format!("not an elbo checkpoint (format elbo-checkpoint, version 1 to {CONFIG_VERSION})"));
        }
        let net = match (f.mlp, f.unet) {
            (Some(m), None) => Architecture::Mlp(m),
            (None, Some(u)) if f.version == 2 => Architecture::Unet(u),
            _ => return Err("expected the network under one of mlp or unet".into()),
        };
        let (dim, out) = (net.dim(), net.out());
        let kind = match (f.version, f.kind, f.prediction.as_deref(), f.vae) {
            (2, Some(k), None, None) => k,
            (2, ..) => return Err("version 2 stores the model's kind, not prediction or vae".into()),
            (_, None, Some("class-logits"), None) => ModelKind::Classifier,
            (_, None, Some("vae"), Some(v)) => ModelKind::Vae(v),
            (_, None, Some(p), None) => ModelKind::Denoiser {
                prediction: elbo_core::Prediction::from_name(p)
                    .map_err(|_| format!("unknown prediction '{p}'"))?
                    .into(),
                learned_variance: dim.checked_mul(2) == Some(out),
            },
            _ => return Err("version 1 needs prediction (and vae for a VAE)".into()),
        };
        Ok(ModelConfig {
            format: f.format,
            version: CONFIG_VERSION,
            step: f.step,
            net,
            kind,
            schedule: f.schedule,
            normalization: f.normalization,
            train: f.train,
        })
    }
}

/// The largest number of parameters a model may have (a limit against absurd sizes in flags
/// and files: 2^28 parameters are 1 GiB per copy of the weights).
pub const MAX_PARAMS: usize = 1 << 28;

/// The largest batch a run may use.
pub const MAX_BATCH: usize = 1 << 20;

/// The largest number of examples a generated training set may have.
pub const MAX_EXAMPLES: usize = 1 << 28;

impl ModelConfig {
    /// Checks every size and value a loader or trainer relies on, with checked arithmetic, so
    /// that a damaged or hand-edited `config.json` is refused instead of crashing a run.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match &self.net {
            Architecture::Mlp(m) => self.validate_mlp(m)?,
            Architecture::Unet(u) => {
                u.validate()?;
                if u.n_params() > MAX_PARAMS {
                    return Err(format!("unet: above the limit of {MAX_PARAMS} parameters"));
                }
                if !matches!(self.kind, ModelKind::Denoiser { .. }) {
                    return Err("unet: only denoisers are U-Nets (classifiers and VAEs are MLPs)".into());
                }
            }
        }
        let (dim, out) = (self.net.dim(), self.net.out());
        match self.kind {
            ModelKind::Denoiser { learned_variance, .. }
                if Some(out) != dim.checked_mul(if learned_variance { 2 } else { 1 }) =>
            {
                return Err("a denoiser has one output per coordinate (two with a learned variance)".into());
            }
            ModelKind::Classifier if self.net.classes() > 0 => {
                return Err("mlp: a classifier takes no class input".into());
            }
            _ => {}
        }
        let nz = &self.normalization;
        if nz.mean.len() != dim || nz.std.len() != dim {
            return Err(format!(
                "normalization: expected {} means and stds (the data's dimension), found {} and {}",
                dim,
                nz.mean.len(),
                nz.std.len()
            ));
        }
        if nz.mean.iter().any(|v| !v.is_finite()) || nz.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err("normalization: expected finite means and positive finite stds".into());
        }
        let s = &self.schedule;
        if s.timesteps == 0 || s.timesteps > crate::MAX_STEPS {
            return Err(format!("schedule: timesteps must be 1..={}", crate::MAX_STEPS));
        }
        if !(s.beta_start.is_finite() && s.beta_end.is_finite()) {
            return Err("schedule: beta_start and beta_end must be finite".into());
        }
        if s.trained_betas.is_some() {
            return Err("schedule: trained_betas belong to ONNX models, not checkpoints".into());
        }
        if let Some([hi, lo]) = s.log_snr_range
            && !(hi.is_finite() && lo.is_finite() && lo < hi)
        {
            return Err("schedule: log_snr_range must be finite and decreasing".into());
        }
        let t = &self.train;
        if t.steps == 0 || t.batch == 0 || t.n_train == 0 {
            return Err("train: steps, batch and n_train must be at least 1".into());
        }
        if t.warmup > t.steps || self.step > t.steps {
            return Err(format!(
                "train: warmup ({}) and the step done ({}) cannot exceed steps ({})",
                t.warmup, self.step, t.steps
            ));
        }
        if t.batch > MAX_BATCH || t.n_train > MAX_EXAMPLES {
            return Err(format!("train: batch and n_train are limited to {MAX_BATCH} and {MAX_EXAMPLES}"));
        }
        let finite = [("lr", t.lr), ("weight_decay", t.weight_decay), ("grad_clip", t.grad_clip)];
        if let Some((k, _)) = finite.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            return Err(format!("train: {k} must be a finite number >= 0"));
        }
        if !(0.0..1.0).contains(&t.ema_decay) || !(0.0..=1.0).contains(&t.cond_dropout) {
            return Err("train: ema_decay must be in [0, 1) and cond_dropout in [0, 1]".into());
        }
        Ok(())
    }

    /// The sizes of an MLP network (and of a VAE's networks).
    fn validate_mlp(&self, m: &MlpConfig) -> std::result::Result<(), String> {
        if m.dim == 0 || m.width == 0 || m.out == 0 {
            return Err("mlp: dim, width and out must be at least 1".into());
        }
        if m.embed < 2 || !m.embed.is_multiple_of(2) {
            return Err("mlp: embed must be an even number >= 2".into());
        }
        if m.depth > 64 {
            return Err(format!("mlp: depth {} is above the limit of 64", m.depth));
        }
        if let Some(v) = self.vae()
            && (v.latent == 0 || !(1..=2).contains(&v.levels) || v.latent > MAX_PARAMS)
        {
            return Err("vae: latent must be at least 1 and levels 1 or 2".into());
        }
        m.checked_n_params().filter(|&n| n <= MAX_PARAMS).ok_or_else(|| {
            format!("mlp: {} x {} x {} is above the limit of {MAX_PARAMS} parameters", m.dim, m.width, m.depth)
        })?;
        if let Some(v) = self.vae() {
            // every VAE network is at most as large as an MLP of the widest in/out sizes
            let widest = m.dim.max(2 * v.latent);
            let one = MlpConfig { dim: widest, out: widest, classes: 0, ..m.clone() };
            one.checked_n_params()
                .and_then(|k| k.checked_mul(5))
                .filter(|&k| k <= MAX_PARAMS)
                .ok_or("vae: too large")?;
        }
        Ok(())
    }

    /// The network of a denoiser or classifier.
    pub fn network(&self) -> std::sync::Arc<dyn crate::network::Network> {
        match &self.net {
            Architecture::Mlp(m) => std::sync::Arc::new(Mlp::new(m.clone())),
            Architecture::Unet(u) => std::sync::Arc::new(UNet::new(u.clone())),
        }
    }

    /// The MLP's sizes, if the network is an MLP.
    pub fn mlp(&self) -> Option<&MlpConfig> {
        match &self.net {
            Architecture::Mlp(m) => Some(m),
            Architecture::Unet(_) => None,
        }
    }

    /// The VAE configuration of a VAE checkpoint.
    pub fn vae(&self) -> Option<&crate::vae::VaeConfig> {
        match &self.kind {
            ModelKind::Vae(v) => Some(v),
            _ => None,
        }
    }

    /// The prediction of a denoiser.
    pub fn prediction(&self) -> Option<elbo_core::Prediction> {
        match self.kind {
            ModelKind::Denoiser { prediction, .. } => Some(prediction.into()),
            _ => None,
        }
    }

    /// Whether this is a noise-conditional classifier.
    pub fn is_classifier(&self) -> bool {
        self.kind == ModelKind::Classifier
    }

    /// The VAE of a VAE checkpoint.
    pub fn vae_net(&self) -> Option<crate::vae::Vae> {
        self.vae().zip(self.mlp()).map(|(v, m)| crate::vae::Vae::new(m.dim, v, m.width, m.depth))
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
    /// The sum and count of the losses since the last loss-log entry (so that a resumed run
    /// logs the same means as an uninterrupted one).
    #[serde(default)]
    pub pending_loss: (f64, u64),
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
    /// Writes the checkpoint as one atomic set (see the module's documentation). On failure
    /// (a full disk, say) the previous checkpoint is left whole and the error says so.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let step = self.config.step;
        let files = self.encode()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        recover(dir).with_context(|| format!("finishing the previous checkpoint in {}", dir.display()))?;
        let next = dir.join(NEXT);
        let written = (|| -> std::io::Result<()> {
            std::fs::create_dir(&next)?;
            for (name, bytes) in &files {
                let mut f = std::fs::File::create(next.join(name))?;
                std::io::Write::write_all(&mut f, bytes)?;
                f.sync_all()?;
            }
            sync_dir(&next)?;
            std::fs::rename(&next, dir.join(COMMIT))?;
            sync_dir(dir)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&next);
            let kept = match Checkpoint::stored_step(dir) {
                Some(s) => format!("the checkpoint of step {s} is kept"),
                None => "no earlier checkpoint".to_string(),
            };
            return Err(anyhow::anyhow!("writing the checkpoint of step {step} in {}: {e} ({kept})", dir.display()));
        }
        recover(dir).with_context(|| format!("moving the checkpoint of step {step} into {}", dir.display()))
    }

    /// The step of the checkpoint in `dir`, if it holds a readable one.
    pub fn stored_step(dir: &Path) -> Option<u64> {
        let v: serde_json::Value = serde_json::from_slice(&read_file(dir, "config.json").ok()?).ok()?;
        v.get("step")?.as_u64()
    }

    /// `model.safetensors` with the EMA weights alone (for inference: loads as a model, not for
    /// `--resume`).
    pub fn inference_weights(&self) -> anyhow::Result<Vec<u8>> {
        let model = tensors(&self.config)
            .0
            .into_iter()
            .map(|(name, shape, off)| {
                let n: usize = shape.iter().product();
                (name, shape, bytes(&self.ema[off..off + n]))
            })
            .collect();
        safetensors_bytes(model, self.config.step)
    }

    /// The bytes of every file of the set, by name.
    fn encode(&self) -> anyhow::Result<Vec<(&'static str, Vec<u8>)>> {
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
        let mut out = Vec::new();
        for name in FILES {
            let b = match name {
                "state.json" => serde_json::to_vec(&self.state)?,
                "optimizer.safetensors" => safetensors_bytes(opt.clone(), step)?,
                "model.safetensors" => safetensors_bytes(model.clone(), step)?,
                "loss.csv" => loss_csv(&self.state.loss_log),
                _ => serde_json::to_vec_pretty(&self.config)?,
            };
            out.push((name, b));
        }
        Ok(out)
    }

    /// Reads a checkpoint directory; with `training`, also the optimizer and run state. A read
    /// that races a writer's commit (the step changed while reading) is repeated.
    pub fn load(dir: &Path, training: bool) -> Result<Self> {
        let mut attempt = 0;
        loop {
            let before = Checkpoint::stored_step(dir);
            match Checkpoint::load_once(dir, training) {
                Err(_) if attempt < 3 && Checkpoint::stored_step(dir) != before => attempt += 1,
                r => return r,
            }
        }
    }

    fn load_once(dir: &Path, training: bool) -> Result<Self> {
        let bad = |what: &str| input(format!("{}: {what}", dir.display()));
        let read = |name: &str| {
            read_file(dir, name).map_err(|e| bad(&format!("{name}: {e} (expected an elbo checkpoint directory)")))
        };
        let config: ModelConfig = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| bad(&format!("config.json: not an elbo checkpoint config ({e})")))?;
        config.validate().map_err(|e| bad(&format!("config.json: {e}")))?;
        let model_bytes = read("model.safetensors")?;
        let (layout, n_params) = tensors(&config);
        // a training run needs the EMA and the raw weights; using a model, the EMA weights alone
        // suffice (the inference-only file of `elbo export --out model.safetensors`)
        let copies = if training { 8 } else { 4 };
        if n_params.saturating_mul(copies) > model_bytes.len() {
            return Err(bad(&format!(
                "model.safetensors: holds {} bytes, too few for the {n_params} weights config.json describes",
                model_bytes.len()
            )));
        }
        let st = SafeTensors::deserialize(&model_bytes)
            .map_err(|e| bad(&format!("model.safetensors: corrupt or truncated ({e})")))?;
        check_step(&model_bytes, config.step).map_err(|e| bad(&format!("model.safetensors: {e}")))?;
        let (mut params, mut ema) = (vec![0.0f32; n_params], vec![0.0f32; n_params]);
        let ema_only = !training && st.tensor(&format!("raw.{}", layout.first().map_or("", |t| t.0.as_str()))).is_err();
        for (name, shape, off) in layout {
            for (prefix, dst) in [("", &mut ema), ("raw.", &mut params)] {
                let stored = if ema_only { name.clone() } else { format!("{prefix}{name}") };
                let t = st.tensor(&stored).map_err(|_| bad(&format!("model.safetensors: missing {prefix}{name}")))?;
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
            pending_loss: (0.0, 0),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 `config.json` (the shipped two-moons model's) loads, with its kind read off
    /// its `prediction` string, and saves as version 2.
    #[test]
    fn version_1_configs_load_and_save_as_version_2() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/two-moons/config.json");
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains("\"version\": 1") && text.contains("\"prediction\": \"eps\""));
        let c: ModelConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(c.kind, ModelKind::Denoiser { prediction: PredictionKind::Eps, learned_variance: false });
        assert_eq!(c.schedule.name, ScheduleKind::Linear);
        let v2 = serde_json::to_value(&c).unwrap();
        assert_eq!(v2["version"], 2);
        assert_eq!(v2["kind"]["denoiser"]["prediction"], "eps");
        assert!(v2.get("prediction").is_none());
        let back: ModelConfig = serde_json::from_value(v2).unwrap();
        assert_eq!(back, c);
        // a version-2 file may not carry the version-1 fields
        let mut mixed = serde_json::to_value(&c).unwrap();
        mixed["prediction"] = "eps".into();
        assert!(serde_json::from_value::<ModelConfig>(mixed).is_err());
    }
}
