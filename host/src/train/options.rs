//! The options of a training run, typed and validated, apart from the command line's parsing:
//! what `elbo train` builds from its flags and what programs build in code
//! (`TrainOptions { steps: 500, ..TrainOptions::DEFAULT }.trainer()`).

use crate::checkpoint::Architecture;
use crate::checkpoint::{ModelConfig, ModelKind, ScheduleConfig, TrainArgs};
use crate::cli::ScheduleOpts;
use crate::data::{DataSpec, Normalization};
use crate::error::{Result, input};
use crate::kinds::{Arch, Family, FixedVariance, Normalize, PredictionKind, ScheduleKind, TimestepSampling};
use crate::nn::{MlpConfig, UNetConfig};
use crate::train::{Loss, Trainer};

/// Everything that decides what a training run computes (not how it is watched).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// A built-in set, `gmm:FILE.json`, or a `.npy`/`.csv` file.
    pub data: String,
    /// Optimisation steps.
    pub steps: u64,
    /// Batch size.
    pub batch: usize,
    /// The noise schedule.
    pub schedule: ScheduleOpts,
    /// What the network predicts.
    pub prediction: PredictionKind,
    /// The loss (`None`: simple, or VDM's bound for continuous-time schedules).
    pub loss: Option<Loss>,
    /// How timesteps are drawn.
    pub t_sampling: TimestepSampling,
    /// Reverse variance in the VLB terms.
    pub variance: FixedVariance,
    /// Seed of every random number.
    pub seed: u64,
    /// Training examples drawn from a generated set.
    pub n_train: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up steps.
    pub warmup: u64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Gradient-norm clip (0: off).
    pub grad_clip: f64,
    /// EMA decay.
    pub ema_decay: f64,
    /// Hidden width.
    pub width: usize,
    /// Hidden layers.
    pub depth: usize,
    /// Time embedding size.
    pub embed: usize,
    /// Also predict the reverse variance.
    pub learn_variance: bool,
    /// Condition on the data's class labels.
    pub conditional: bool,
    /// Probability of dropping the label during conditional training.
    pub cond_dropout: f64,
    /// Data normalisation (`None`: none for image data trained by a U-Net, standard
    /// otherwise).
    pub normalize: Option<Normalize>,
    /// Checkpoint every this many steps.
    pub checkpoint_every: u64,
    /// The model family.
    pub family: Family,
    /// Latent dimension of the VAE baselines (per level).
    pub latent: usize,
    /// Train a noise-conditional classifier instead.
    pub classifier: bool,
    /// The network family of a diffusion model.
    pub arch: Arch,
    /// Continuous time: the data is quantised to these many levels of [-1, 1] (VDM's discrete
    /// decoder); `None`: the built-in image sets' levels, a Gaussian density for other data.
    pub bins: Option<usize>,
    /// The U-Net's sizes.
    pub unet: UNetOptions,
}

/// The U-Net's sizes as asked for; `None` (and [`Fourier::Auto`]) are sized for the data by
/// [`UNetOptions::config`].
#[derive(Debug, Clone, PartialEq)]
pub struct UNetOptions {
    /// Channels of the first level.
    pub channels: Option<usize>,
    /// Channel multiplier per level.
    pub mults: Option<Vec<usize>>,
    /// Residual blocks per level.
    pub blocks: usize,
    /// Self-attention at the lowest resolution.
    pub attention: bool,
    /// GroupNorm groups.
    pub groups: usize,
    /// VDM's Fourier features.
    pub fourier: Fourier,
}

/// VDM's Fourier features of the input (`--fourier`).
#[derive(Debug, Clone, PartialEq)]
pub enum Fourier {
    /// At the two finest frequencies of quantised data with known grey levels: `2^e` with
    /// `2^e` nearest `(K - 1) / 2` for `K` levels (VDM's 6 and 7 for 8-bit data), and `e - 1`;
    /// none for other data.
    Auto,
    /// None.
    None,
    /// These exponents.
    Exponents(Vec<i32>),
}

impl std::str::FromStr for Fourier {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Fourier::Auto),
            "none" => Ok(Fourier::None),
            _ => s
                .split(',')
                .map(|e| {
                    e.trim()
                        .parse::<i32>()
                        .map_err(|_| format!("expected auto, none or exponents like 6,7; found '{s}'"))
                })
                .collect::<std::result::Result<Vec<i32>, String>>()
                .map(Fourier::Exponents),
        }
    }
}

impl std::fmt::Display for Fourier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fourier::Auto => f.write_str("auto"),
            Fourier::None => f.write_str("none"),
            Fourier::Exponents(v) => f.write_str(&v.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(",")),
        }
    }
}

impl UNetOptions {
    /// The defaults: sized for the data, 2 blocks per level, attention, 8 groups.
    pub const DEFAULT: UNetOptions =
        UNetOptions { channels: None, mults: None, blocks: 2, attention: true, groups: 8, fourier: Fourier::Auto };

    /// The architecture for images of `(C, H, W)` with `levels` grey levels (if known):
    /// - levels of resolution: halve the image while its smaller side stays even and at
    ///   least 8, up to three levels (8x8: 8, 4; 28x28: 28, 14, 7; 32x32: 32, 16, 8);
    /// - channel multipliers `[1]`, `[1, 2]`, `[1, 2, 2]`;
    /// - 64 channels for images of at most 256 pixels, 32 above.
    pub fn config(
        &self,
        (c, h, w): (usize, usize, usize),
        levels: Option<usize>,
        embed: usize,
        classes: usize,
        out_channels: usize,
    ) -> UNetConfig {
        let mut side = h.min(w);
        let mut n = 1;
        while n < 3 && side.is_multiple_of(2) && side >= 8 && h.is_multiple_of(1 << n) && w.is_multiple_of(1 << n) {
            side /= 2;
            n += 1;
        }
        let mults = self.mults.clone().unwrap_or_else(|| [1, 2, 2][..n].to_vec());
        let fourier = match &self.fourier {
            Fourier::None => vec![],
            Fourier::Exponents(v) => v.clone(),
            Fourier::Auto => match levels {
                Some(k) if k > 2 => {
                    let e = (((k - 1) as f64) / 2.0).log2().round() as i32;
                    vec![e - 1, e]
                }
                _ => vec![],
            },
        };
        UNetConfig {
            channels: c,
            height: h,
            width: w,
            base: self.channels.unwrap_or(if h * w <= 256 { 64 } else { 32 }),
            mults,
            blocks: self.blocks,
            attention: self.attention,
            groups: self.groups,
            embed,
            classes,
            out_channels,
            fourier,
        }
    }
}

impl TrainOptions {
    /// The defaults (the command line's: `elbo train --help` shows these).
    pub const DEFAULT: TrainOptions = TrainOptions {
        data: String::new(),
        steps: 5000,
        batch: 512,
        schedule: ScheduleOpts::DEFAULT,
        prediction: PredictionKind::Eps,
        loss: None,
        t_sampling: TimestepSampling::Uniform,
        variance: FixedVariance::Large,
        seed: 0,
        n_train: 20000,
        lr: 2e-3,
        warmup: 100,
        weight_decay: 0.0,
        grad_clip: 1.0,
        ema_decay: 0.995,
        width: 128,
        depth: 3,
        embed: 32,
        learn_variance: false,
        conditional: false,
        cond_dropout: 0.1,
        normalize: None,
        checkpoint_every: 1000,
        family: Family::Diffusion,
        latent: 2,
        classifier: false,
        arch: Arch::Auto,
        bins: None,
        unet: UNetOptions::DEFAULT,
    };

    /// `loss`, or its default for the schedule (a classifier's is the cross-entropy).
    pub fn loss(&self) -> Loss {
        match self.loss {
            _ if self.classifier => Loss::CrossEntropy,
            Some(l) => l,
            None if self.schedule.schedule.is_continuous() => Loss::Vlb,
            None => Loss::Simple,
        }
    }

    /// Checks every value before any work starts (bad input exits 2 naming the flag).
    pub fn validate(&self) -> Result<()> {
        let a = self;
        let positive = [
            ("--steps", a.steps as f64),
            ("--batch", a.batch as f64),
            ("--width", a.width as f64),
            ("--n-train", a.n_train as f64),
        ];
        for (name, v) in positive {
            if v < 1.0 {
                return Err(input(format!("{name}: expected a positive number")));
            }
        }
        if a.embed < 2 || !a.embed.is_multiple_of(2) {
            return Err(input("--embed: expected an even number >= 2"));
        }
        if !(a.lr > 0.0 && a.lr.is_finite()) {
            return Err(input("--lr: expected a positive number"));
        }
        use crate::checkpoint::{MAX_BATCH, MAX_EXAMPLES};
        use crate::cli::check_range;
        if a.batch > MAX_BATCH || a.n_train > MAX_EXAMPLES {
            return Err(input(format!("--batch, --n-train: limited to {MAX_BATCH} and {MAX_EXAMPLES}")));
        }
        check_range("--weight-decay", a.weight_decay, 0.0, 1e6, "a finite number >= 0")?;
        check_range("--grad-clip", a.grad_clip, 0.0, f64::MAX, "a finite number >= 0 (0: off)")?;
        if a.depth > 64 {
            return Err(input("--depth: expected at most 64 layers"));
        }
        // the network's size with the smallest data (one value per example), then the training
        // set and a batch's activations: refused before any data is made if the machine lacks it
        let smallest = MlpConfig { dim: 1, width: a.width, depth: a.depth, embed: a.embed, classes: 0, out: 1 };
        match smallest.checked_n_params() {
            Some(n) if n <= crate::checkpoint::MAX_PARAMS => {
                crate::io::check_memory("--width/--depth", n.checked_mul(6))?;
            }
            _ => {
                return Err(input(format!(
                    "--width/--depth/--embed: above the limit of {} parameters",
                    crate::checkpoint::MAX_PARAMS
                )));
            }
        }
        crate::io::check_memory("--n-train", a.n_train.checked_mul(2))?;
        crate::io::check_memory(
            "--batch/--width/--depth",
            crate::io::product(&[a.batch, a.width.saturating_add(a.embed), a.depth + 2, 4]),
        )?;
        if !(0.0..1.0).contains(&a.ema_decay) {
            return Err(input("--ema-decay: expected a value in [0, 1)"));
        }
        if !(0.0..=1.0).contains(&a.cond_dropout) {
            return Err(input("--cond-dropout: expected a probability"));
        }
        if a.checkpoint_every == 0 {
            return Err(input("--checkpoint-every: expected at least 1"));
        }
        if a.classifier && (a.schedule.schedule.is_continuous() || a.conditional || a.learn_variance) {
            return Err(input(
                "train-classifier: takes a discrete --schedule and no --conditional or --learn-variance",
            ));
        }
        if a.classifier && a.loss.is_some() {
            return Err(input("train-classifier: trains the cross-entropy; it takes no --loss"));
        }
        if a.loss == Some(Loss::CrossEntropy) {
            return Err(input("--loss cross-entropy: is the classifier's (elbo train-classifier)"));
        }
        if a.family != Family::Diffusion && (a.conditional || a.classifier || a.latent == 0) {
            return Err(input("--family vae|hvae: unconditional, with --latent at least 1"));
        }
        let loss = a.loss();
        if a.schedule.schedule.is_continuous() {
            if !matches!(loss, Loss::Vlb | Loss::Weighted(_)) {
                return Err(input(format!(
                    "--loss {loss}: continuous-time schedules train vlb (VDM's bound) or weighted:NAME"
                )));
            }
            if a.learn_variance {
                return Err(input("--learn-variance: continuous-time models have no reverse variance to learn"));
            }
            if matches!(a.t_sampling, TimestepSampling::Importance | TimestepSampling::Antithetic) {
                return Err(input("--t-sampling: continuous time takes uniform or stratified"));
            }
            if a.schedule.schedule == ScheduleKind::Learned
                && (loss != Loss::Vlb || a.prediction != PredictionKind::Eps)
            {
                return Err(input("--schedule learned: trains with --loss vlb and --prediction eps"));
            }
            // the end points (and, for fixed schedules, the schedule itself)
            let linear = crate::cli::ScheduleOpts { schedule: ScheduleKind::Vdm, ..a.schedule.clone() };
            linear.continuous(&[])?;
        }
        if a.learn_variance && !matches!(loss, Loss::Hybrid | Loss::Vlb | Loss::Mc) {
            return Err(input(
                "--learn-variance: needs --loss hybrid, vlb or mc (the other losses do not train the variance)",
            ));
        }
        Ok(())
    }

    /// A fresh run of these options (step 0): reads the data, fits the normalisation, lays out
    /// the network and draws its initial weights.
    pub fn trainer(&self) -> Result<Trainer> {
        let a = self;
        let schedule = if a.schedule.schedule.is_continuous() { None } else { Some(a.schedule.build()?) };
        let train = TrainArgs {
            data: a.data.clone(),
            n_train: a.n_train,
            steps: a.steps,
            batch: a.batch,
            lr: a.lr,
            warmup: a.warmup.min(a.steps),
            weight_decay: a.weight_decay,
            grad_clip: a.grad_clip,
            ema_decay: a.ema_decay,
            loss: a.loss(),
            t_sampling: a.t_sampling,
            variance: a.variance,
            cond_dropout: a.cond_dropout,
            seed: a.seed,
            checkpoint_every: a.checkpoint_every,
            data_fingerprint: None,
            bins: None,
        };
        let mut data = training_data(&train)?;
        let mut train = train;
        train.data_fingerprint = Some(crate::checkpoint::data_fingerprint(&data.x, data.dim));
        if a.classifier && data.classes == 1 {
            return Err(input(format!("--data {}: a classifier needs at least two classes", a.data)));
        }
        if (a.conditional || a.classifier) && data.classes == 0 {
            if a.classifier {
                return Err(input(format!(
                    "--data {}: a classifier needs class labels (gmm: or a labelled CSV)",
                    a.data
                )));
            }
            return Err(input(format!("--conditional: the data '{}' has no class labels", a.data)));
        }
        let unet = match (a.arch, data.image_shape()) {
            (Arch::Mlp, _) => false,
            (Arch::Auto, image) => image.is_some() && a.family == Family::Diffusion && !a.classifier,
            (Arch::Unet, None) => {
                return Err(input(format!(
                    "--arch unet: the data '{}' is not image data (expected a .npy of shape [N, C, H, W] or [N, H, W], or a built-in image set)",
                    a.data
                )));
            }
            (Arch::Unet, Some(_)) if a.family != Family::Diffusion || a.classifier => {
                return Err(input("--arch unet: is a denoiser's network (classifiers and VAEs are MLPs)"));
            }
            (Arch::Unet, Some(_)) => true,
        };
        if unet && let Some(v) = data.x.iter().find(|v| !(-1.0..=1.0).contains(*v)) {
            return Err(input(format!(
                "--data {}: a U-Net trains on images with values in [-1, 1]; found {v}",
                a.data
            )));
        }
        let continuous = a.schedule.schedule.is_continuous();
        if a.bins.is_some() && !continuous {
            return Err(input(
                "--bins: is the discrete decoder of continuous-time training (a discrete schedule's bound takes eval --bins)",
            ));
        }
        train.bins = a.bins.or(if continuous { data.levels } else { None });
        if let Some(k) = train.bins {
            check_quantised(&data.x, k, &a.data)?;
        }
        let normalize = a.normalize.unwrap_or(if unet { Normalize::None } else { Normalize::Standard });
        let normalization = match normalize {
            Normalize::None => Normalization::identity(data.dim),
            Normalize::Standard => Normalization::fit(&data.x, data.dim),
        };
        normalization.apply(&mut data.x);
        check_normalized(&data.x, &a.data)?;
        let classes = if a.conditional && !a.classifier { data.classes } else { 0 };
        let net = match data.image_shape() {
            Some(image) if unet => {
                let out_channels = image.0 * if a.learn_variance { 2 } else { 1 };
                let cfg: UNetConfig = a.unet.config(image, data.levels, a.embed, classes, out_channels);
                cfg.validate().map_err(|e| input(format!("--data {} with the U-Net's flags: {e}", a.data)))?;
                crate::io::check_memory("--channels/--mults/--blocks", cfg.n_params().checked_mul(24))?;
                Architecture::Unet(cfg)
            }
            _ => Architecture::Mlp(MlpConfig {
                dim: data.dim,
                width: a.width,
                depth: a.depth,
                embed: a.embed,
                classes,
                out: match (a.classifier, a.learn_variance) {
                    (true, _) => data.classes,
                    (false, true) => 2 * data.dim,
                    (false, false) => data.dim,
                },
            }),
        };
        let config = ModelConfig {
            format: "elbo-checkpoint".into(),
            version: crate::checkpoint::CONFIG_VERSION,
            step: 0,
            net,
            kind: match (a.classifier, a.family) {
                (true, _) => ModelKind::Classifier,
                (false, Family::Diffusion) => {
                    ModelKind::Denoiser { prediction: a.prediction, learned_variance: a.learn_variance }
                }
                (false, f) => ModelKind::Vae(crate::vae::VaeConfig {
                    latent: a.latent,
                    levels: if f == Family::Hvae { 2 } else { 1 },
                }),
            },
            schedule: ScheduleConfig {
                name: a.schedule.schedule,
                timesteps: a.schedule.timesteps,
                beta_start: a.schedule.beta_start,
                beta_end: a.schedule.beta_end,
                zero_terminal_snr: a.schedule.zero_terminal_snr,
                log_snr_range: a
                    .schedule
                    .schedule
                    .is_continuous()
                    .then_some([a.schedule.log_snr_max, a.schedule.log_snr_min]),
                trained_betas: None,
            },
            normalization,
            train,
        };
        config.validate().map_err(|e| input(format!("--data {}: {e}", a.data)))?;
        Trainer::new(config, schedule, data)
    }
}

/// The training set of a run (regenerated from the stored arguments on resume).
pub fn training_data(args: &TrainArgs) -> Result<crate::data::Dataset> {
    DataSpec::parse(&args.data)?.load(args.n_train, args.seed)
}

/// Refuses data that does not lie on the `levels` values `2j / (levels - 1) - 1` of [-1, 1].
pub fn check_quantised(x: &[f32], levels: usize, data: &str) -> Result<()> {
    if !(2..=65536).contains(&levels) {
        return Err(input("--bins: expected 2 to 65536 levels"));
    }
    let step = 2.0 / (levels - 1) as f64;
    let off = |v: f32| {
        let j = super::continuous::level_of(v, levels) as f64;
        (f64::from(v) - (j * step - 1.0)).abs() > 1e-3 * step || !(-1.0..=1.0).contains(&v)
    };
    if let Some(v) = x.iter().find(|&&v| off(v)) {
        return Err(input(format!(
            "--data {data}: with --bins {levels} every value must be one of the {levels} levels 2j/{} - 1 of [-1, 1]; found {v}",
            levels - 1
        )));
    }
    Ok(())
}

/// Refuses data whose normalised values overflow float32 (extreme but finite input).
pub(crate) fn check_normalized(x: &[f32], data: &str) -> Result<()> {
    if x.iter().any(|v| !v.is_finite()) {
        return Err(input(format!("--data {data}: the values overflow float32 once normalised (rescale the data)")));
    }
    Ok(())
}
