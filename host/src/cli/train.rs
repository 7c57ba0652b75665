//! `elbo train`: train a denoiser on a data set, with checkpoints and exact resume.

use std::path::PathBuf;

use crate::progress::Progress;
use clap::Args;

use super::ScheduleOpts;
use crate::checkpoint::Architecture;
use crate::checkpoint::{Checkpoint, ModelConfig, ModelKind};
use crate::data::Normalization;
use crate::error::{Result, input};
use crate::kinds::{Arch, Family, FixedVariance, Normalize, PredictionKind, TimestepSampling};
use crate::model::build_schedule;
use crate::train::{Fourier, Loss, TrainOptions, Trainer, UNetOptions, check_normalized, training_data};

/// Arguments of `elbo train`.
#[derive(Debug, Args)]
pub struct TrainCliArgs {
    /// A built-in set, gmm:FILE.json, or a .npy/.csv file.
    #[arg(long)]
    pub data: String,
    /// Checkpoint directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Optimisation steps.
    #[arg(long, default_value_t = TrainOptions::DEFAULT.steps)]
    pub steps: u64,
    /// Batch size.
    #[arg(long, default_value_t = TrainOptions::DEFAULT.batch)]
    pub batch: usize,
    #[command(flatten)]
    pub schedule: ScheduleOpts,
    /// What the network predicts.
    #[arg(long, value_enum, default_value_t = TrainOptions::DEFAULT.prediction)]
    pub prediction: PredictionKind,
    /// simple, vlb, mc, hybrid, or weighted:NAME[:PARAM] (default: simple; vlb, VDM's
    /// continuous-time bound, for continuous-time schedules, which take vlb or weighted:).
    #[arg(long)]
    pub loss: Option<Loss>,
    /// uniform, antithetic, stratified or importance (continuous time: uniform, or stratified
    /// for VDM's low-discrepancy times).
    #[arg(long, value_enum, default_value_t = TrainOptions::DEFAULT.t_sampling)]
    pub t_sampling: TimestepSampling,
    /// Reverse variance in the VLB terms.
    #[arg(long, value_enum, default_value_t = TrainOptions::DEFAULT.variance)]
    pub variance: FixedVariance,
    /// Seed of every random number.
    #[arg(long, default_value_t = TrainOptions::DEFAULT.seed)]
    pub seed: u64,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Continue the run in --out from its checkpoint (start fresh if there is none).
    #[arg(long)]
    pub resume: bool,
    /// Training examples drawn from a generated set.
    #[arg(long, default_value_t = TrainOptions::DEFAULT.n_train)]
    pub n_train: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = TrainOptions::DEFAULT.lr)]
    pub lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = TrainOptions::DEFAULT.warmup)]
    pub warmup: u64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = TrainOptions::DEFAULT.weight_decay)]
    pub weight_decay: f64,
    /// Gradient-norm clip (0: off).
    #[arg(long, default_value_t = TrainOptions::DEFAULT.grad_clip)]
    pub grad_clip: f64,
    /// EMA decay.
    #[arg(long, default_value_t = TrainOptions::DEFAULT.ema_decay)]
    pub ema_decay: f64,
    /// Hidden width.
    #[arg(long, default_value_t = TrainOptions::DEFAULT.width)]
    pub width: usize,
    /// Hidden layers.
    #[arg(long, default_value_t = TrainOptions::DEFAULT.depth)]
    pub depth: usize,
    /// Time embedding size.
    #[arg(long, default_value_t = TrainOptions::DEFAULT.embed)]
    pub embed: usize,
    /// Also predict the reverse variance (improved-diffusion's learned_range); needs --loss
    /// hybrid, vlb or mc.
    #[arg(long)]
    pub learn_variance: bool,
    /// Condition on the data's class labels (classifier-free guidance training).
    #[arg(long)]
    pub conditional: bool,
    /// Probability of dropping the label during conditional training.
    #[arg(long, default_value_t = TrainOptions::DEFAULT.cond_dropout)]
    pub cond_dropout: f64,
    /// Data normalisation: standard (per-coordinate mean and std) or none [default: none for
    /// image data trained by a U-Net, standard otherwise].
    #[arg(long, value_enum)]
    pub normalize: Option<Normalize>,
    /// Continuous time: the data is quantised to K levels of [-1, 1], so the bound uses VDM's
    /// discrete decoder [default: the levels of a built-in image set (digits 17, mnist5k 256);
    /// a Gaussian density for other data].
    #[arg(long)]
    pub bins: Option<usize>,
    /// The network: auto (a U-Net for image data, an MLP otherwise), mlp, or unet.
    #[arg(long, value_enum, default_value_t = Arch::Auto)]
    pub arch: Arch,
    /// U-Net: channels of the first level [default: 64 for images of at most 256 pixels, 32
    /// above].
    #[arg(long)]
    pub channels: Option<usize>,
    /// U-Net: channel multiplier of each level, e.g. 1,2,2 [default: a level per halving of
    /// the image while its side stays even and at least 8, at most three: 8x8 gets 1,2 and
    /// 28x28 1,2,2].
    #[arg(long, value_delimiter = ',')]
    pub mults: Option<Vec<usize>>,
    /// U-Net: residual blocks per level.
    #[arg(long, default_value_t = UNetOptions::DEFAULT.blocks)]
    pub blocks: usize,
    /// U-Net: self-attention at the lowest resolution (true or false).
    #[arg(long, default_value_t = UNetOptions::DEFAULT.attention, action = clap::ArgAction::Set)]
    pub attention: bool,
    /// U-Net: GroupNorm groups (dividing --channels).
    #[arg(long, default_value_t = UNetOptions::DEFAULT.groups)]
    pub groups: usize,
    /// U-Net: VDM's Fourier features of the input: auto (for quantised data of known grey
    /// levels K, the exponents e - 1 and e with 2^e nearest (K - 1) / 2: 6,7 for 8-bit
    /// images; none otherwise), none, or exponents like 6,7.
    #[arg(long, default_value = "auto")]
    pub fourier: Fourier,
    /// Checkpoint every this many steps.
    #[arg(long, default_value_t = TrainOptions::DEFAULT.checkpoint_every)]
    pub checkpoint_every: u64,
    /// Loss log interval.
    #[arg(long, default_value_t = 50)]
    pub log_every: u64,
    /// Write the loss curve to this PNG at the end.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// diffusion, or a baseline of the family: vae or hvae (two-level Markovian).
    #[arg(long, value_enum, default_value_t = TrainOptions::DEFAULT.family)]
    pub family: Family,
    /// Latent dimension of the vae/hvae baselines (per level).
    #[arg(long, default_value_t = TrainOptions::DEFAULT.latent)]
    pub latent: usize,
    /// Train a noise-conditional classifier instead (`elbo train-classifier`).
    #[arg(skip)]
    pub classifier: bool,
    /// The ids of the flags given on the command line (for `--resume`'s comparison with the
    /// stored arguments); empty when built in code.
    #[arg(skip)]
    pub explicit: Vec<String>,
}

/// Flags that `--resume` accepts with a value other than the stored one: they change how the
/// run is watched, not what it computes (`--steps` may also grow: see [`resume_differences`]).
const SAFE_ON_RESUME: [&str; 5] = ["threads", "log_every", "plot", "resume", "out"];

/// The explicitly given flags of `a` whose values differ from the run stored in `config`, as
/// `--flag: given X, stored Y`. `--steps` may grow (the extra steps are trained; the cosine
/// learning-rate decay is then laid over the new total) but not shrink.
fn resume_differences(a: &TrainCliArgs, config: &ModelConfig) -> Vec<String> {
    let t = &config.train;
    let dash = || "-".to_string();
    let mlp = config.mlp();
    let unet = match &config.net {
        Architecture::Unet(u) => Some(u),
        Architecture::Mlp(_) => None,
    };
    let join = |v: &[usize]| v.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(",");
    let family = match config.vae() {
        None => Family::Diffusion,
        Some(v) if v.levels == 2 => Family::Hvae,
        Some(_) => Family::Vae,
    };
    let learned_variance = matches!(config.kind, ModelKind::Denoiser { learned_variance: true, .. });
    let identity = config.normalization == Normalization::identity(config.net.dim());
    let range = config.schedule.log_snr_range;
    let pairs: Vec<(&str, String, String)> = vec![
        ("data", a.data.clone(), t.data.clone()),
        ("n_train", a.n_train.to_string(), t.n_train.to_string()),
        ("batch", a.batch.to_string(), t.batch.to_string()),
        ("lr", a.lr.to_string(), t.lr.to_string()),
        ("warmup", a.warmup.min(t.steps).to_string(), t.warmup.to_string()),
        ("weight_decay", a.weight_decay.to_string(), t.weight_decay.to_string()),
        ("grad_clip", a.grad_clip.to_string(), t.grad_clip.to_string()),
        ("ema_decay", a.ema_decay.to_string(), t.ema_decay.to_string()),
        ("loss", a.loss().to_string(), t.loss.to_string()),
        ("t_sampling", a.t_sampling.to_string(), t.t_sampling.to_string()),
        ("variance", a.variance.to_string(), t.variance.to_string()),
        ("cond_dropout", a.cond_dropout.to_string(), t.cond_dropout.to_string()),
        ("seed", a.seed.to_string(), t.seed.to_string()),
        ("checkpoint_every", a.checkpoint_every.to_string(), t.checkpoint_every.to_string()),
        ("schedule", a.schedule.schedule.to_string(), config.schedule.name.to_string()),
        ("timesteps", a.schedule.timesteps.to_string(), config.schedule.timesteps.to_string()),
        ("beta_start", a.schedule.beta_start.to_string(), config.schedule.beta_start.to_string()),
        ("beta_end", a.schedule.beta_end.to_string(), config.schedule.beta_end.to_string()),
        ("zero_terminal_snr", a.schedule.zero_terminal_snr.to_string(), config.schedule.zero_terminal_snr.to_string()),
        ("log_snr_max", a.schedule.log_snr_max.to_string(), range.map_or("-".into(), |r| r[0].to_string())),
        ("log_snr_min", a.schedule.log_snr_min.to_string(), range.map_or("-".into(), |r| r[1].to_string())),
        ("width", a.width.to_string(), mlp.map_or_else(dash, |m| m.width.to_string())),
        ("depth", a.depth.to_string(), mlp.map_or_else(dash, |m| m.depth.to_string())),
        (
            "embed",
            a.embed.to_string(),
            mlp.map_or_else(|| unet.map_or_else(dash, |u| u.embed.to_string()), |m| m.embed.to_string()),
        ),
        ("bins", a.bins.map_or_else(dash, |k| k.to_string()), t.bins.map_or_else(dash, |k| k.to_string())),
        ("arch", format!("{:?}", a.arch), if unet.is_some() { "Unet".into() } else { "Mlp".into() }),
        ("channels", a.channels.map_or_else(dash, |c| c.to_string()), unet.map_or_else(dash, |u| u.base.to_string())),
        ("mults", a.mults.as_deref().map_or_else(dash, join), unet.map_or_else(dash, |u| join(&u.mults))),
        ("blocks", a.blocks.to_string(), unet.map_or_else(dash, |u| u.blocks.to_string())),
        ("attention", a.attention.to_string(), unet.map_or_else(dash, |u| u.attention.to_string())),
        ("groups", a.groups.to_string(), unet.map_or_else(dash, |u| u.groups.to_string())),
        (
            "fourier",
            match &a.fourier {
                Fourier::Exponents(v) => v.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(","),
                Fourier::None => String::new(),
                Fourier::Auto => {
                    unet.map_or_else(dash, |u| u.fourier.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(","))
                }
            },
            unet.map_or_else(dash, |u| u.fourier.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(",")),
        ),
        ("prediction", a.prediction.to_string(), config.prediction().map_or("-".into(), |p| p.name().to_string())),
        ("learn_variance", a.learn_variance.to_string(), learned_variance.to_string()),
        ("conditional", a.conditional.to_string(), (config.net.classes() > 0).to_string()),
        (
            "normalize",
            format!("{:?}", a.normalize.unwrap_or(Normalize::Standard)),
            format!("{:?}", if identity { Normalize::None } else { Normalize::Standard }),
        ),
        ("family", format!("{:?}", a.family), format!("{family:?}")),
        ("latent", a.latent.to_string(), config.vae().map_or("-".into(), |v| v.latent.to_string())),
    ];
    let mut out = Vec::new();
    for id in &a.explicit {
        if SAFE_ON_RESUME.contains(&id.as_str()) {
            continue;
        }
        if id == "steps" {
            if a.steps < t.steps {
                out.push(format!("--steps: given {}, stored {} (it may only grow)", a.steps, t.steps));
            }
            continue;
        }
        if let Some((_, given, stored)) = pairs.iter().find(|(k, g, s)| k == id && g != s) {
            out.push(format!("--{}: given {given}, stored {stored}", id.replace('_', "-")));
        }
    }
    out
}

impl TrainCliArgs {
    /// `--loss`, or its default for the schedule.
    pub fn loss(&self) -> Loss {
        self.options().loss()
    }

    /// The typed options of the run these flags describe.
    pub fn options(&self) -> TrainOptions {
        TrainOptions {
            data: self.data.clone(),
            steps: self.steps,
            batch: self.batch,
            schedule: self.schedule.clone(),
            prediction: self.prediction,
            loss: self.loss,
            t_sampling: self.t_sampling,
            variance: self.variance,
            seed: self.seed,
            n_train: self.n_train,
            lr: self.lr,
            warmup: self.warmup,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            ema_decay: self.ema_decay,
            width: self.width,
            depth: self.depth,
            embed: self.embed,
            learn_variance: self.learn_variance,
            conditional: self.conditional,
            cond_dropout: self.cond_dropout,
            normalize: self.normalize,
            checkpoint_every: self.checkpoint_every,
            family: self.family,
            latent: self.latent,
            classifier: self.classifier,
            arch: self.arch,
            bins: self.bins,
            unet: UNetOptions {
                channels: self.channels,
                mults: self.mults.clone(),
                blocks: self.blocks,
                attention: self.attention,
                groups: self.groups,
                fourier: self.fourier.clone(),
            },
        }
    }

    /// The command line's defaults with `args` (flags as on the command line) applied: the one
    /// source of the defaults for programs that train (demo, experiments).
    pub fn from_flags(args: &[&str]) -> Result<Self> {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            a: TrainCliArgs,
        }
        let argv = std::iter::once("elbo-train").chain(args.iter().copied());
        <Wrapper as clap::Parser>::try_parse_from(argv).map(|w| w.a).map_err(|e| input(format!("train arguments: {e}")))
    }
}

pub(super) fn validate(a: &TrainCliArgs) -> Result<()> {
    if a.log_every == 0 {
        return Err(input("--log-every: expected at least 1"));
    }
    if a.threads == Some(0) {
        return Err(input("--threads: expected at least 1"));
    }
    a.options().validate()
}

pub fn run(a: &TrainCliArgs) -> Result<()> {
    validate(a)?;
    let pool = {
        let mut b = rayon::ThreadPoolBuilder::new();
        if let Some(t) = a.threads {
            b = b.num_threads(t);
        }
        b.build().map_err(anyhow::Error::from)?
    };
    pool.install(|| train(a))
}

/// A fresh run of the command line's arguments (step 0).
pub(crate) fn new_trainer(a: &TrainCliArgs) -> Result<Trainer> {
    a.options().trainer()
}

fn train(a: &TrainCliArgs) -> Result<()> {
    if let Some(p) = &a.plot {
        check_png(p, "--plot")?;
    }
    crate::io::OutputLock::check_dir_free(&a.out, "--out")?;
    let has_ckpt = crate::checkpoint::exists(&a.out);
    if has_ckpt && !a.resume {
        return Err(input(format!(
            "--out {}: already holds a checkpoint (use --resume, or another folder)",
            a.out.display()
        )));
    }
    // A fresh run reads its data before it touches the output.
    let fresh = if has_ckpt { None } else { Some(new_trainer(a)?) };
    let (_lock, created) = crate::io::OutputLock::dir(&a.out, "--out")?;
    crate::checkpoint::recover(&a.out).map_err(|e| input(format!("--out {}: {e}", a.out.display())))?;
    let mut trainer = match fresh {
        Some(t) if !crate::checkpoint::exists(&a.out) => t,
        Some(_) => {
            return Err(input(format!("--out {}: another run wrote a checkpoint there meanwhile", a.out.display())));
        }
        None => {
            let mut ckpt = Checkpoint::load(&a.out, true)?;
            let diff = resume_differences(a, &ckpt.config);
            if !diff.is_empty() {
                return Err(input(format!(
                    "--resume: the flags differ from the run stored in {}: {} (leave them out to continue it)",
                    a.out.display(),
                    diff.join("; ")
                )));
            }
            if a.explicit.iter().any(|f| f == "steps") {
                ckpt.config.train.steps = a.steps;
            }
            let mut data = training_data(&ckpt.config.train)?;
            if let Some(stored) = &ckpt.config.train.data_fingerprint
                && *stored != crate::checkpoint::data_fingerprint(&data.x, data.dim)
            {
                return Err(input(format!(
                    "--data {}: the data differs from what the run in {} was trained on (the file changed?)",
                    ckpt.config.train.data,
                    a.out.display()
                )));
            }
            ckpt.config.normalization.apply(&mut data.x);
            check_normalized(&data.x, &ckpt.config.train.data)?;
            let schedule =
                if ckpt.config.schedule.is_continuous() { None } else { Some(build_schedule(&ckpt.config.schedule)?) };
            let step = ckpt.config.step;
            let t = Trainer::resume(ckpt, schedule, data)?;
            crate::note!("resuming {} from step {step}", a.out.display());
            t
        }
    };
    let result = run_trainer(a, &mut trainer);
    if result.is_err() && created && !crate::checkpoint::exists(&a.out) {
        let _ = std::fs::remove_dir_all(&a.out);
    }
    result
}

/// Checks an output PNG path before any work: its extension and its folder.
pub(crate) fn check_png(p: &std::path::Path, flag: &str) -> Result<()> {
    if p.extension().and_then(|e| e.to_str()) != Some("png") {
        return Err(input(format!("{flag} {}: expected a .png file name", p.display())));
    }
    if !crate::io::lock::parent_of(p).is_dir() || p.is_dir() {
        return Err(input(format!("{flag} {}: expected a file name in an existing folder", p.display())));
    }
    Ok(())
}

fn run_trainer(a: &TrainCliArgs, trainer: &mut Trainer) -> Result<()> {
    let total = trainer.ckpt.config.train.steps;
    let progress = Progress::new("train", total, "steps").with_position(trainer.ckpt.state.step);
    let batch = trainer.ckpt.config.train.batch as f64;
    let start = std::time::Instant::now();
    let first = trainer.ckpt.state.step;
    trainer.run(&a.out, a.log_every.max(1), |k, loss, _| {
        progress.set_message(format!("loss {loss:.4}"));
        progress.set_position(k);
        if crate::progress::verbose() {
            eprintln!("step {k}: loss {loss:.6}");
        }
    })?;
    progress.finish();
    if let Some(path) = &a.plot {
        let pts: Vec<(f64, f64)> = trainer.ckpt.state.loss_log.iter().map(|&(s, l, _)| (s as f64, l)).collect();
        crate::plot::curve(
            path,
            &format!("training loss ({})", trainer.ckpt.config.train.loss),
            "step",
            "loss",
            &pts,
            pts.iter().all(|p| p.1 > 0.0),
        )?;
    }
    let secs = start.elapsed().as_secs_f64();
    let done = trainer.ckpt.state.step - first;
    crate::note!(
        "trained {done} steps in {} ({}); final loss {:.4}; checkpoint in {}",
        crate::progress::human_duration(start.elapsed()),
        crate::progress::human_rate(done as f64 * batch / secs.max(1e-9), "examples"),
        trainer.ckpt.state.loss_log.last().map_or(f64::NAN, |l| l.1),
        a.out.display()
    );
    Ok(())
}
