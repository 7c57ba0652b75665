//! The options of a training run, typed and validated, apart from the command line's parsing:
//! what `elbo train` builds from its flags and what programs build in code
//! (`TrainOptions { steps: 500, ..TrainOptions::DEFAULT }.trainer()`).

use crate::checkpoint::{ModelConfig, ModelKind, ScheduleConfig, TrainArgs};
use crate::cli::ScheduleOpts;
use crate::data::{DataSpec, Normalization};
use crate::error::{Result, input};
use crate::kinds::{Family, FixedVariance, Normalize, PredictionKind, ScheduleKind, TimestepSampling};
use crate::nn::MlpConfig;
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
    /// Data normalisation.
    pub normalize: Normalize,
    /// Checkpoint every this many steps.
    pub checkpoint_every: u64,
    /// The model family.
    pub family: Family,
    /// Latent dimension of the VAE baselines (per level).
    pub latent: usize,
    /// Train a noise-conditional classifier instead.
    pub classifier: bool,
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
        normalize: Normalize::Standard,
        checkpoint_every: 1000,
        family: Family::Diffusion,
        latent: 2,
        classifier: false,
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
        let normalization = match a.normalize {
            Normalize::None => Normalization::identity(data.dim),
            Normalize::Standard => Normalization::fit(&data.x, data.dim),
        };
        normalization.apply(&mut data.x);
        check_normalized(&data.x, &a.data)?;
        let config = ModelConfig {
            format: "elbo-checkpoint".into(),
            version: crate::checkpoint::CONFIG_VERSION,
            step: 0,
            mlp: MlpConfig {
                dim: data.dim,
                width: a.width,
                depth: a.depth,
                embed: a.embed,
                classes: if a.conditional && !a.classifier { data.classes } else { 0 },
                out: match (a.classifier, a.learn_variance) {
                    (true, _) => data.classes,
                    (false, true) => 2 * data.dim,
                    (false, false) => data.dim,
                },
            },
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

/// Refuses data whose normalised values overflow float32 (extreme but finite input).
pub(crate) fn check_normalized(x: &[f32], data: &str) -> Result<()> {
    if x.iter().any(|v| !v.is_finite()) {
        return Err(input(format!("--data {data}: the values overflow float32 once normalised (rescale the data)")));
    }
    Ok(())
}
