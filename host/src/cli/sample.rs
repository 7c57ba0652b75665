//! `elbo sample`: draw samples with any sampler of the core.

use std::path::PathBuf;

use clap::Args;
use elbo_core::denoiser::{Condition, Denoiser};
use elbo_core::rng::fill_standard_normal;
use elbo_core::sampler::{ClassifierFree, ClassifierGuided};
use rand_core::SeedableRng;
use rand_pcg::Pcg32;

use crate::kinds::Shard;

use super::ScheduleOpts;
use super::model_arg::Source;
use crate::data::load_file;
use crate::error::{Result, flag, input};
use crate::io::write_samples;
use crate::kinds::{SamplerKind, SpacingKind, VarianceChoice};
use crate::onnx::scheduler::SamplerDefaults;
use crate::progress::{Progress, Ticking};
use crate::sampling::{SamplerOptions, SolverSettings, sample};
use elbo_core::NoiseSchedule;
use elbo_core::sampler::Clip;

/// Arguments of `elbo sample`.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// A checkpoint directory (a denoiser, or a VAE/HVAE baseline), FILE.onnx (a denoiser: see
    /// the README's "ONNX denoisers"), or `optimal` (the exact denoiser of --data's mixture).
    #[arg(long)]
    pub model: String,
    /// The mixture for `--model optimal`.
    #[arg(long)]
    pub data: Option<String>,
    /// Number of samples (ignored with --init).
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Output .npy or .csv.
    #[arg(long)]
    pub out: PathBuf,
    /// The sampler (default: the scheduler config's `_class_name`, else ddpm). dpmpp2m and
    /// dpmpp3m are DPM-Solver++ multistep of order 2 and 3, unipc UniPC (bh2, order 2), deis
    /// DEIS (order 2), euler and heun the probability-flow ODE in sigma (Heun: 2K - 1
    /// denoiser calls for K steps); all deterministic, 20 steps by default.
    #[arg(long, value_enum)]
    pub sampler: Option<SamplerKind>,
    /// Sampling steps (default: all T for ddpm, 50 for ddim, 100 levels for langevin, 20 for the
    /// few-step solvers).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Karras' sigmas (EDM, rho = 7) for dpmpp2m, dpmpp3m, unipc, deis, euler and heun
    /// (diffusers' use_karras_sigmas; also read from the scheduler config).
    #[arg(long)]
    pub karras: bool,
    /// DDIM's eta (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f32,
    /// Timestep spacing, as diffusers defines it (default: the scheduler config's
    /// timestep_spacing, leading if it says none; trailing without a config).
    #[arg(long, value_enum)]
    pub spacing: Option<SpacingKind>,
    /// DDPM's reverse variance: small, large, learned (a learned-variance model's own), or auto
    /// (learned if the model has it, else small, the better one for samples; `elbo eval`'s auto
    /// takes large instead, the variance of `elbo train`'s vlb terms by default). Default: the
    /// scheduler config's variance_type, else auto.
    #[arg(long, value_enum)]
    pub variance: Option<VarianceChoice>,
    /// Start from x_T read from this .npy/.csv instead of N(0, I) draws.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Guidance scale gamma; needs --class. Classifier-free (a conditional model): 1 is the
    /// plain conditional model; with --classifier: the classifier gradient's weight.
    #[arg(long)]
    pub guidance: Option<f32>,
    /// Classifier guidance with this noise-conditional classifier (`elbo train-classifier`)
    /// around an unconditional model.
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// The class to sample, or `all`: --n samples of every class (pictures get a row per class).
    #[arg(long)]
    pub class: Option<String>,
    /// What is done to the predicted x_0: off, R (clamp to [-R, R]) or dynamic[:RATIO[:MAX]]
    /// (Imagen's dynamic thresholding, diffusers' defaults 0.995 and 1). Default: the scheduler
    /// config's thresholding or clip_sample (diffusers: clip_sample true, range 1), else off.
    #[arg(long, value_parser = parse_clip)]
    pub clip: Option<Clip>,
    /// Langevin iterations per noise level.
    #[arg(long, default_value_t = 10)]
    pub langevin_steps: usize,
    /// Langevin step size (times 1 - abar_t).
    #[arg(long, default_value_t = 0.5)]
    pub langevin_step_size: f32,
    /// Seed of every random number: sample `i`'s start and noise depend only on the seed and
    /// `i` (not on `--n`, the batch, the shard or the machine).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write part I of N (0-based) of the run: its samples I n/N .. (I+1) n/N, the same bits as
    /// in the whole run (concatenate the N files in order to get it).
    #[arg(long, value_name = "I/N", default_value = "0/1")]
    pub shard: Shard,
    /// Also draw the samples over the model's data (first two coordinates) into this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Schedule of `--model optimal` or of an ONNX model without schedule metadata.
    #[command(
        flatten,
        next_help_heading = "Schedule of --model optimal, or of an ONNX file without elbo.schedule \
                                           (a checkpoint uses its own; learned is trained by elbo train only)"
    )]
    pub schedule: ScheduleOpts,
    #[command(flatten, next_help_heading = "ONNX models")]
    pub onnx: crate::onnx::OnnxOpts,
}

/// `--clip`: `off`, a range `R > 0`, or `dynamic[:RATIO[:MAX]]`.
fn parse_clip(s: &str) -> std::result::Result<Clip, String> {
    let num = |t: &str| t.parse::<f32>().map_err(|_| format!("expected off, R or dynamic[:RATIO[:MAX]], found '{s}'"));
    let c = match s.split(':').collect::<Vec<_>>().as_slice() {
        ["off"] => Clip::Off,
        ["dynamic"] => Clip::Dynamic { ratio: 0.995, max: 1.0 },
        ["dynamic", r] => Clip::Dynamic { ratio: num(r)?, max: 1.0 },
        ["dynamic", r, m] => Clip::Dynamic { ratio: num(r)?, max: num(m)? },
        [r] => Clip::Range(num(r)?),
        _ => return Err(format!("expected off, R or dynamic[:RATIO[:MAX]], found '{s}'")),
    };
    c.check().map_err(|_| match c {
        Clip::Dynamic { .. } => format!("dynamic thresholding needs RATIO in [0, 1] and MAX >= 1, found '{s}'"),
        _ => format!("expected a finite range > 0, found '{s}'"),
    })
}

impl SampleArgs {
    /// The sampler's options: the flags, else what the model's scheduler config says, else
    /// elbo's defaults.
    pub fn sampler_options(&self, config: &SamplerDefaults) -> SamplerOptions {
        let d = SamplerOptions::default();
        let sampler = self.sampler.or(config.sampler).unwrap_or(d.sampler);
        // a config's use_karras_sigmas belongs to its own (sigma) scheduler class
        let karras = self.karras || (config.solver.karras && sampler.on_sigmas());
        SamplerOptions {
            sampler,
            steps: self.steps,
            eta: self.eta,
            spacing: self.spacing.or(config.spacing).unwrap_or(d.spacing),
            variance: self.variance.or(config.variance).unwrap_or(d.variance),
            clip: self.clip.or(config.clip).unwrap_or(d.clip),
            steps_offset: config.steps_offset,
            set_alpha_to_one: config.set_alpha_to_one,
            langevin_steps: self.langevin_steps,
            langevin_step_size: self.langevin_step_size,
            solver: SolverSettings { karras, ..config.solver },
        }
    }
}

pub fn run(a: &SampleArgs) -> Result<()> {
    if let Some(p) = &a.plot {
        super::train::check_png(p, "--plot")?;
    }
    use super::check_range;
    check_range("--eta", f64::from(a.eta), 0.0, f64::MAX, "a finite number >= 0")?;
    if let Some(g) = a.guidance {
        check_range("--guidance", f64::from(g), f64::from(f32::MIN), f64::from(f32::MAX), "a finite number")?;
    }
    check_range("--langevin-step-size", f64::from(a.langevin_step_size), 1e-30, 1e30, "a positive number")?;
    if a.langevin_steps == 0 || a.steps == Some(0) {
        return Err(input("--steps, --langevin-steps: expected at least 1"));
    }
    let _lock = crate::io::sample_output(&a.out, "--out")?;
    let path = std::path::Path::new(&a.model);
    let mut source = if path.is_dir() {
        let c = crate::checkpoint::Checkpoint::load(path, false)?;
        if c.config.vae().is_some() {
            return sample_vae(a, c);
        }
        Source::Trained(Box::new(crate::model::Trained::new(c.config, c.ema)?))
    } else {
        Source::load(&a.model, a.data.as_deref(), &a.onnx)?
    };
    let data_spec = match &source {
        Source::Trained(t) => t.config.train.data.clone(),
        Source::Optimal(_) | Source::Onnx(_) => a.data.clone().unwrap_or_default(),
    };
    let schedule = source.schedule(&a.schedule)?;
    let init = match &a.init {
        Some(path) => Some(load_file(path)?),
        None => None,
    };
    if let (Source::Onnx(o), Some(d)) = (&mut source, &init)
        && o.shape.is_empty()
    {
        o.set_shape(&d.shape)?;
    }
    let dim = source.dim();
    // an open input's shape is empty (its product, 1, is no dimension)
    if dim == 0 || source.shape().is_empty() {
        return Err(input(format!(
            "--model {}: the model's input has no fixed example shape: give --shape C,H,W (or --init FILE)",
            a.model
        )));
    }
    // the run's starts: the rows of --init, or N(0, I) draws made below for the shard's part
    let init_rows = match init {
        Some(d) => {
            if d.dim != dim {
                return Err(input(format!("--init: rows have {} values, the model expects {dim}", d.dim)));
            }
            Some(d.x)
        }
        None => {
            if a.n == 0 {
                return Err(input("--n: expected at least one sample"));
            }
            None
        }
    };
    let n = init_rows.as_ref().map_or(a.n, |x| x.len() / dim);
    if a.guidance.is_some() && a.class.is_none() {
        return Err(input("--guidance: needs --class C"));
    }
    let mut classifier = match &a.classifier {
        None => None,
        Some(dir) => {
            let c = crate::model::TrainedClassifier::load(dir)?;
            if a.class.is_none() {
                return Err(input("--classifier: needs --class C (and --guidance GAMMA)"));
            }
            match &source {
                Source::Trained(t) if t.classes() > 0 => {
                    return Err(input(
                        "--classifier: the model is conditional; classifier guidance needs an unconditional one",
                    ));
                }
                Source::Trained(t)
                    if t.normalization != c.config.normalization || t.config.schedule != c.config.schedule =>
                {
                    return Err(input(format!(
                        "--classifier {}: trained with another data normalisation or schedule than the model",
                        dir.display()
                    )));
                }
                _ => {}
            }
            if c.config.net.dim() != dim {
                return Err(input(format!(
                    "--classifier {}: its inputs have {} values, not {dim}",
                    dir.display(),
                    c.config.net.dim()
                )));
            }
            Some(c)
        }
    };
    let classes = classifier.as_ref().map_or(source.classes(), |c| c.n_classes());
    let labels: Option<Vec<u32>> = match a.class.as_deref() {
        None => None,
        Some(_) if classes == 0 => {
            return Err(input(format!("--class: the model {} is unconditional (it has no classes)", a.model)));
        }
        Some("all") => {
            // n of every class, class after class (the run's examples 0..n k)
            let k = classes;
            crate::io::check_memory("--n with --class all", crate::io::product(&[n, k, dim, 4]))?;
            Some((0..k as u32).flat_map(|c| std::iter::repeat_n(c, n)).collect())
        }
        Some(c) => match c.parse::<u32>() {
            Ok(c) if (c as usize) < classes => Some(vec![c; n]),
            _ => {
                return Err(input(format!("--class: expected all or a class in 0..{classes}, found '{c}'")));
            }
        },
    };
    let per_row = if a.class.as_deref() == Some("all") { n } else { 8 };
    // the run's examples, and this shard's part of them
    let total = labels.as_ref().map_or(n, Vec::len);
    if total as u64 > u64::from(u32::MAX) {
        return Err(input(format!("--n: at most {} samples in one run (the noise's counter)", u32::MAX)));
    }
    let part = a.shard.range(total);
    if part.is_empty() {
        return Err(input(format!(
            "--shard {}: the part is empty ({total} samples in {} parts)",
            a.shard, a.shard.count
        )));
    }
    let labels = labels.map(|l| l[part.clone()].to_vec());
    let mut x = match init_rows {
        Some(rows) if total == rows.len() / dim => rows[part.start * dim..part.end * dim].to_vec(),
        // --class all with --init: the rows again for every class
        Some(rows) => rows.chunks_exact(dim).cycle().skip(part.start).take(part.len()).flatten().copied().collect(),
        None => {
            crate::io::check_memory("--n", crate::io::product(&[part.len(), dim, 4]))?;
            let mut x = vec![0.0f32; part.len() * dim];
            crate::noise::starts(a.seed, part.start as u64, dim, &mut x);
            x
        }
    };
    let mut noise = crate::noise::sampler(a.seed, part.start as u64);
    let n = x.len() / dim;
    let cond = labels.as_deref().map_or(Condition::Unconditional, Condition::Class);
    let gamma = a.guidance.unwrap_or(1.0);
    let mut guide_buf = vec![0.0f32; x.len()];
    let shape = source.shape();
    if classifier.is_some() && matches!(source, Source::Onnx(_)) {
        return Err(input("--classifier: guides a checkpoint directory's model (not an ONNX file)"));
    }
    let normalization = source.data_normalization();
    let so = a.sampler_options(&match &source {
        Source::Onnx(o) => o.sampling,
        _ => SamplerDefaults::default(),
    });
    let progress = Progress::new(&format!("{n} samples"), so.denoiser_calls(schedule.steps()), "steps");
    if let Some(clf) = classifier.as_mut() {
        let g = ClassifierGuided::new(&mut source, clf, classes, gamma, &mut guide_buf)
            .map_err(|e| flag("--guidance", e))?;
        sample(&so, &mut Ticking { inner: g, progress: &progress }, schedule.as_ref(), &mut x, cond, &mut noise)?;
    } else if labels.is_some() {
        let g = ClassifierFree::new(&mut source, gamma, &mut guide_buf).map_err(|e| flag("--guidance", e))?;
        sample(&so, &mut Ticking { inner: g, progress: &progress }, schedule.as_ref(), &mut x, cond, &mut noise)?;
    } else {
        sample(
            &so,
            &mut Ticking { inner: &mut source, progress: &progress },
            schedule.as_ref(),
            &mut x,
            cond,
            &mut noise,
        )?;
    }
    progress.finish();
    if let Some(nm) = normalization {
        nm.invert(&mut x);
    }
    write_samples(&a.out, &x, &shape)?;
    crate::note!("wrote {n} samples to {}", a.out.display());
    if let Some(p) = &a.plot {
        let title = format!("{} samples ({})", so.sampler, a.model);
        if shape.len() == 3 {
            // a row per class with --class all (rows of one class otherwise)
            let row_labels: Vec<String> = labels
                .as_deref()
                .map(|l| l.chunks(per_row).map(|r| format!("class {}", r[0])).collect())
                .unwrap_or_default();
            crate::plot::image_grid(p, &title, &x, &shape, per_row, &row_labels)?;
        } else if dim >= 2 {
            let data = if data_spec.is_empty() {
                vec![]
            } else {
                crate::data::DataSpec::parse(&data_spec)?.load(n, a.seed + 1)?.x
            };
            crate::plot::scatter(p, &title, &data, &x, dim, labels.as_deref())?;
        } else {
            return Err(input("--plot: the data has fewer than 2 dimensions"));
        }
        crate::note!("wrote {}", p.display());
    }
    Ok(())
}

/// `elbo sample` of a VAE or HVAE baseline: ancestral draws, `z_top ~ N(0, I)` down the
/// decoders to `x` (the decoder's mean plus its Gaussian noise), in the data's own units.
fn sample_vae(a: &SampleArgs, c: crate::checkpoint::Checkpoint) -> Result<()> {
    let not_for = |what: &str| input(format!("{what}: does not apply to a VAE baseline ({})", a.model));
    if a.class.is_some() {
        return Err(not_for("--class"));
    }
    if a.guidance.is_some() || a.classifier.is_some() {
        return Err(not_for("--guidance, --classifier"));
    }
    if a.init.is_some() {
        return Err(not_for("--init"));
    }
    if a.shard != Shard::WHOLE {
        return Err(not_for("--shard"));
    }
    if a.n == 0 {
        return Err(input("--n: expected at least one sample"));
    }
    let v = c.config.vae_net().ok_or_else(|| input(format!("--model {}: not a VAE baseline", a.model)))?;
    let shape = c.config.net.example_shape();
    let dim = c.config.net.dim();
    let per = v.normals_per_example() + dim;
    crate::io::check_memory("--n", crate::io::product(&[a.n, per.max(dim), 8]))?;
    let mut rng = Pcg32::seed_from_u64(a.seed);
    let mut normals = vec![0.0f32; a.n * per];
    fill_standard_normal(&mut rng, &mut normals);
    let mut x = v.sample(&c.ema, a.n, &normals);
    c.config.normalization.invert(&mut x);
    write_samples(&a.out, &x, &shape)?;
    crate::note!("wrote {} samples to {}", a.n, a.out.display());
    if let Some(p) = &a.plot {
        if dim < 2 {
            return Err(input("--plot: the data has fewer than 2 dimensions"));
        }
        let data = crate::data::DataSpec::parse(&c.config.train.data)?.load(a.n, a.seed + 1)?.x;
        let family = if c.config.vae().is_some_and(|v| v.levels == 2) { "HVAE" } else { "VAE" };
        crate::plot::scatter(p, &format!("{family} samples ({})", a.model), &data, &x, dim, None)?;
        crate::note!("wrote {}", p.display());
    }
    Ok(())
}
