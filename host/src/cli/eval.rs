//! `elbo eval`: the full ELBO breakdown (nats per example and bits/dim, with standard errors),
//! and sample quality (MMD against held-out data).

use clap::Args;
use elbo_core::elbo::{Decoder, ElboOptions, Estimator, ReverseVariance};
use serde::Serialize;

use super::ScheduleOpts;
use super::model_arg::Source;
use crate::data::{DataSpec, Dataset};
use crate::error::{Result, input};
use crate::kinds::Split;
use crate::kinds::{EstimatorKind, VarianceChoice};
use crate::metrics::{median_bandwidth, mmd2};

/// Arguments of `elbo eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A checkpoint directory, FILE.onnx (a denoiser: see the README's "ONNX denoisers"), or
    /// `optimal` (the exact denoiser of a gmm: data set).
    #[arg(long)]
    pub model: String,
    /// Held-out data: a built-in set, gmm:FILE.json, or a .npy/.csv file.
    #[arg(long)]
    pub data: String,
    /// Examples of a generated set.
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Seed (of the held-out draw and the bound's noise); differs from training's by default.
    /// Example `i`'s draws depend only on the seed and `i`.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Evaluate part I of N (0-based) of the examples, I n/N .. (I+1) n/N, and write its exact
    /// sums as JSON (needs --json; no sample quality): `elbo merge` of the N parts prints the
    /// whole run's `eval --json --mmd-samples 0`, bit for bit.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<crate::kinds::Shard>,
    /// Data quantised to K levels on [-1, 1]: use the discretised decoder [default: the levels
    /// of a built-in image set].
    #[arg(long)]
    pub bins: Option<u32>,
    /// The part of a built-in image set (digits, mnist5k) to evaluate on.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Reverse variance of the discrete bound: small, large, learned, or auto (learned if the
    /// model has it, else large, the variance of `elbo train`'s vlb terms by default; `elbo
    /// sample`'s auto takes small instead, the better one for samples).
    #[arg(long, value_enum, default_value_t = VarianceChoice::Auto)]
    pub variance: VarianceChoice,
    /// rb (Rao-Blackwellised) or mc (Monte Carlo).
    #[arg(long, value_enum, default_value_t = EstimatorKind::Rb)]
    pub estimator: EstimatorKind,
    /// Continuous-time models: stratified times of the diffusion loss's estimate.
    #[arg(long, default_value_t = 200)]
    pub times: usize,
    /// Samples drawn for the MMD against the data (0: skip). Default: 2000 for flat vectors,
    /// 200 for images (a U-Net's thousand steps per sample are not cheap).
    #[arg(long)]
    pub mmd_samples: Option<usize>,
    /// The sampler of the MMD's samples. Default: ddpm over all T steps for flat vectors, ddim
    /// with 50 steps for images.
    #[arg(long, value_enum)]
    pub mmd_sampler: Option<crate::kinds::SamplerKind>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also the exact likelihood of the model's probability-flow ODE (`ode`), integrated from
    /// the schedule's first level to its last with RK45 (see the README's "Exact likelihood").
    #[arg(long, value_enum)]
    pub likelihood: Option<crate::kinds::LikelihoodKind>,
    /// The ODE solver's relative tolerance.
    #[arg(long, default_value_t = 1e-5)]
    pub rtol: f64,
    /// The ODE solver's absolute tolerance.
    #[arg(long, default_value_t = 1e-5)]
    pub atol: f64,
    /// Hutchinson's probes per example for the ODE's divergence (default: the exact
    /// divergence up to 16 dimensions, else 1 probe).
    #[arg(long)]
    pub probes: Option<usize>,
    /// Examples solved as one ODE system (its adaptive steps are the batch's).
    #[arg(long, default_value_t = 250)]
    pub ode_batch: usize,
    /// Draw the per-step terms of the bound into this PNG.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
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

/// `eval --json`.
#[derive(Debug, Serialize)]
pub struct EvalReport {
    /// Mean `-ELBO` per example (nats).
    pub neg_elbo_nats: f64,
    /// Its standard error.
    pub neg_elbo_nats_se: f64,
    /// Bits per dimension.
    pub bpd: f64,
    /// Its standard error.
    pub bpd_se: f64,
    /// `L_T`.
    pub prior_nats: f64,
    /// `L_0` (with the normalisation's log-determinant).
    pub decoder_nats: f64,
    /// `L_{t-1}` for t = 2..T.
    pub terms_nats: Vec<f64>,
    /// Examples.
    pub n: usize,
    /// Dimension.
    pub dims: usize,
    /// MMD^2 between samples and the data.
    pub mmd: Option<f64>,
    /// MMD^2 between two independent draws of the data (a scale for `mmd`; generated sets only).
    pub mmd_data: Option<f64>,
    /// The kernel bandwidth of the MMD.
    pub mmd_bandwidth: Option<f64>,
    /// The number of samples of the MMD.
    pub mmd_samples: Option<usize>,
    /// How they were drawn: `ddpm-T` or `ddim-K` (K steps).
    pub mmd_sampler: Option<String>,
    /// Exact negative log-likelihood (Gaussian mixtures).
    pub exact_nll_nats: Option<f64>,
    /// The probability-flow ODE's negative log-likelihood (`--likelihood ode`; nats/example,
    /// dequantised for discrete data).
    pub ode_nll_nats: Option<f64>,
    /// Its standard error over the examples (with Hutchinson's noise).
    pub ode_nll_nats_se: Option<f64>,
    /// The same in bits per dimension.
    pub ode_bpd: Option<f64>,
    /// Its standard error.
    pub ode_bpd_se: Option<f64>,
    /// Evaluations of the ODE's field (model calls on the batch and its perturbed copies).
    pub ode_nfe: Option<u64>,
    /// Hutchinson's probes per example (null: the exact divergence).
    pub ode_probes: Option<usize>,
    /// The bound: `discrete` (the `T`-step sum) or `continuous` (VDM's continuous-time one).
    pub bound: &'static str,
    /// The discrete bound's estimator of its terms (`rb` or `mc`; null for the continuous one).
    pub estimator: Option<String>,
    /// The discrete bound's reverse variance (`small`, `large`, `learned`; null for the
    /// continuous one).
    pub variance: Option<String>,
    /// The continuous bound's stratified log-SNR levels (null for the discrete one).
    pub times: Option<usize>,
}

use crate::cli::merge::{BoundMeta, BoundSums};
use crate::evaluate::{bound, continuous_bound, vae_bound};
use crate::exact::ExactSum;
use crate::kinds::SamplerKind;
use crate::progress::{Progress, Ticking};
use crate::sampling::SamplerOptions;
use elbo_core::NoiseSchedule;
use elbo_core::denoiser::Condition;

/// `elbo eval` of a VAE or HVAE checkpoint: its own bound (16 draws per example).
fn eval_vae(a: &EvalArgs, c: &crate::checkpoint::Checkpoint, v: &crate::vae::Vae) -> Result<()> {
    let data = DataSpec::parse(&a.data)?.with_split(a.split).load(a.n, a.seed)?;
    if data.dim != c.config.net.dim() {
        return Err(input(format!(
            "--data {}: examples have {} values, the model expects {}",
            a.data,
            data.dim,
            c.config.net.dim()
        )));
    }
    let (nats, se) = vae_bound(v, &c.ema, &c.config.normalization, &data.x, a.seed)?;
    if !(nats.is_finite() && se.is_finite()) {
        return Err(input(format!("--data {}: the bound is not finite (the data overflows the model)", a.data)));
    }
    let per_dim = data.dim as f64 * std::f64::consts::LN_2;
    if a.json {
        let j = serde_json::json!({"neg_elbo_nats": nats, "neg_elbo_nats_se": se, "bpd": nats / per_dim, "bpd_se": se / per_dim, "n": data.len(), "dims": data.dim});
        super::print_line(j)?;
    }
    crate::note!(
        "-ELBO   {nats:.4} +- {se:.4} nats/example   {:.4} +- {:.4} bits/dim   (n = {}, D = {}, VAE, 16 draws)",
        nats / per_dim,
        se / per_dim,
        data.len(),
        data.dim
    );
    Ok(())
}

/// The options of the discrete bound for `source` on `data`: the reverse variance, the
/// estimator and the decoder (continuous, or discretised to `--bins K` levels).
fn elbo_options(a: &EvalArgs, source: &Source, data: &Dataset, bins: Option<u32>) -> Result<ElboOptions> {
    let learned = match source {
        Source::Trained(t) => t.has_learned_variance(),
        _ => false,
    };
    let variance = match (a.variance, learned) {
        (VarianceChoice::Small, _) => ReverseVariance::Small,
        (VarianceChoice::Large, _) | (VarianceChoice::Auto, false) => ReverseVariance::Large,
        (VarianceChoice::Learned | VarianceChoice::Auto, true) => ReverseVariance::LearnedRange,
        (VarianceChoice::Learned, false) => {
            return Err(input("--variance learned: the model has no variance output"));
        }
    };
    let estimator = match a.estimator {
        EstimatorKind::Rb => Estimator::RaoBlackwell,
        EstimatorKind::Mc => Estimator::MonteCarlo,
    };
    let normalization = source.normalization();
    let decoder = match bins {
        None => Decoder::Continuous,
        Some(k) if k < 2 => return Err(input("--bins: expected at least 2 levels")),
        Some(k) => {
            if normalization.log_det() != 0.0 || normalization.mean.iter().any(|&m| m != 0.0) {
                return Err(input(
                    "--bins: the model normalises its data; a discretised bound needs a model trained with --normalize none",
                ));
            }
            if data.x.iter().any(|v| v.abs() > 1.0) {
                return Err(input(format!("--bins: the data '{}' is not in [-1, 1]", a.data)));
            }
            Decoder::Discretized { levels: k }
        }
    };
    Ok(ElboOptions { variance, estimator, decoder })
}

/// Prints the report on stderr (and as JSON on stdout with `--json`), in the words of the
/// bound it holds: the discrete `L_T + sum L_{t-1} + L_0`, or VDM's continuous-time prior,
/// diffusion loss and decoder.
fn print_report(a: &EvalArgs, report: &EvalReport, diffusion: f64) -> Result<()> {
    if a.json {
        super::print_line(serde_json::to_string(report).map_err(anyhow::Error::from)?)?;
    }
    let how = match (&report.estimator, &report.variance, report.times) {
        (Some(e), Some(v), _) => format!("discrete bound, {e} estimator, {v} variance"),
        (_, _, Some(k)) => format!("continuous-time bound, {k} log-SNR levels"),
        _ => report.bound.to_string(),
    };
    crate::note!(
        "-ELBO   {:.4} +- {:.4} nats/example   {:.4} +- {:.4} bits/dim   (n = {}, D = {}, {how})",
        report.neg_elbo_nats,
        report.neg_elbo_nats_se,
        report.bpd,
        report.bpd_se,
        report.n,
        report.dims,
    );
    if report.times.is_some() {
        crate::note!("  prior KL(q(z_1|x) || N(0, I))  {:.3e} nats", report.prior_nats);
        crate::note!("  diffusion loss, t in (0, 1)    {diffusion:.4} nats");
        crate::note!("  decoder -log p(x|z_0)          {:.4} nats", report.decoder_nats);
    } else {
        crate::note!("  prior L_T      {:.3e} nats", report.prior_nats);
        crate::note!("  sum L_1..L_T-1 {diffusion:.4} nats");
        crate::note!("  decoder L_0    {:.4} nats", report.decoder_nats);
    }
    if let Some(e) = report.exact_nll_nats {
        crate::note!("  exact NLL      {e:.4} nats (gap {:.4})", report.neg_elbo_nats - e);
    }
    if let (Some(o), Some(se), Some(b), Some(nfe)) =
        (report.ode_nll_nats, report.ode_nll_nats_se, report.ode_bpd, report.ode_nfe)
    {
        let how = report.ode_probes.map_or("exact divergence".to_string(), |k| format!("Hutchinson, {k} probes"));
        crate::note!(
            "ODE NLL {o:.4} +- {se:.4} nats/example   {b:.4} bits/dim   (bound gap {:.4}; {nfe} evaluations, {how})",
            report.neg_elbo_nats - o
        );
    }
    if let (Some(m), Some(h)) = (report.mmd, report.mmd_bandwidth) {
        crate::note!(
            "MMD^2 samples vs data {m:.3e} (Gaussian kernel, bandwidth {h:.3}){}",
            report.mmd_data.map_or(String::new(), |d| format!("; two data draws {d:.3e}"))
        );
    }
    Ok(())
}

pub fn run(a: &EvalArgs) -> Result<()> {
    if let Some(p) = &a.plot {
        super::train::check_png(p, "--plot")?;
    }
    if a.n == 0 || a.times == 0 {
        return Err(input("--n, --times: expected at least 1"));
    }
    // generated sets are 2-D or a mixture's dimension (a file's size is checked as it is read)
    let spec = DataSpec::parse(&a.data)?.with_split(a.split);
    let dim_guess = spec.mixture().map_or(2, |m| m.dim());
    crate::io::check_memory("--n", crate::io::product(&[a.n, dim_guess, 4]))?;
    crate::io::check_memory("--mmd-samples", crate::io::product(&[a.mmd_samples.unwrap_or(0), dim_guess, 4]))?;
    let dir = std::path::Path::new(&a.model);
    if dir.join("config.json").is_file() {
        let c = crate::checkpoint::Checkpoint::load(dir, false)?;
        if let Some(v) = c.config.vae_net() {
            return eval_vae(a, &c, &v);
        }
    }
    let mut source = Source::load(&a.model, Some(&a.data), &a.onnx)?;
    let data: Dataset = spec.load(a.n, a.seed)?;
    if let Source::Onnx(o) = &mut source
        && o.shape.is_empty()
    {
        o.set_shape(&data.shape)?;
    }
    let dim = source.dim();
    if data.dim != dim {
        return Err(input(format!("--data {}: examples have {} values, the model expects {dim}", a.data, data.dim)));
    }
    let schedule = source.schedule(&a.schedule)?;
    let identity = source.normalization() == crate::data::Normalization::identity(data.dim);
    let bins = a.bins.or(data.levels.filter(|_| identity).map(|k| k as u32));
    let opts = elbo_options(a, &source, &data, bins)?;
    let normalization = source.normalization();
    let sharded = a.shard.is_some();
    let shard = a.shard.unwrap_or(crate::kinds::Shard::WHOLE);
    if sharded && !a.json {
        return Err(input(
            "--shard: writes the part's sums as JSON: give --json (and merge the parts with elbo merge)",
        ));
    }
    if sharded && a.plot.is_some() {
        return Err(input("--plot: not with --shard (a sharded eval writes the part's sums only)"));
    }
    if sharded && a.likelihood.is_some() {
        return Err(input("--likelihood ode: not with --shard (a batch is one ODE system: run it whole)"));
    }
    if a.likelihood.is_some() {
        if a.ode_batch == 0 || a.probes == Some(0) {
            return Err(input("--ode-batch, --probes: expected at least 1"));
        }
        if !(a.rtol > 0.0 && a.rtol.is_finite() && a.atol > 0.0 && a.atol.is_finite()) {
            return Err(input("--rtol, --atol: expected finite numbers > 0"));
        }
    }
    if sharded && a.mmd_samples.is_some_and(|k| k > 0) {
        return Err(input("--mmd-samples: a sharded eval evaluates the bound only (sample with elbo sample --shard)"));
    }
    if data.len() as u64 > u64::from(u32::MAX) {
        return Err(input(format!(
            "--data {}: at most {} examples in one run (the noise's counter)",
            a.data,
            u32::MAX
        )));
    }
    let part = shard.range(data.len());
    if part.is_empty() {
        return Err(input(format!("--shard {shard}: the part is empty ({} examples)", data.len())));
    }
    let mut z = data.x[part.start * dim..part.end * dim].to_vec();
    normalization.apply(&mut z);
    let offset = part.start as u64;
    // sample quality by default only where it is cheap: every step for flat vectors, a few
    // DDIM steps and fewer samples for images
    let image = source.shape().len() == 3;
    let n_mmd = if sharded { 0 } else { a.mmd_samples.unwrap_or(if image { 200 } else { 2000 }) };
    crate::io::check_memory("--mmd-samples", crate::io::product(&[n_mmd, dim, 4]))?;
    let mmd_sampler = SamplerOptions {
        sampler: a.mmd_sampler.unwrap_or(if image { SamplerKind::Ddim } else { SamplerKind::Ddpm }),
        ..SamplerOptions::default()
    };
    let mmd_calls = mmd_sampler.denoiser_calls(schedule.steps());
    let started = std::time::Instant::now();
    // the bound: VDM's continuous-time one for a continuous-time checkpoint, else the discrete one
    let continuous = match &source {
        Source::Trained(t) => t.continuous().transpose()?,
        _ => None,
    };
    let is_continuous = continuous.is_some();
    let b = match (&mut source, continuous) {
        (Source::Trained(t), Some(c)) => {
            if let Some(k) = bins {
                crate::train::check_quantised(&data.x, k as usize, &a.data)?;
            }
            let progress = Progress::new("bound", a.times as u64, "levels");
            let mut den = Ticking { inner: t.as_mut(), progress: &progress };
            continuous_bound(&mut den, &c, &z, a.times, bins.map(|k| k as usize), a.seed, offset)?
        }
        _ => {
            let progress = Progress::new("bound", schedule.steps() as u64, "steps");
            bound(
                &mut Ticking { inner: &mut source, progress: &progress },
                schedule.as_ref(),
                &z,
                opts,
                a.seed,
                offset,
            )?
        }
    };
    // the probability-flow ODE's likelihood of the same points
    let ode = match a.likelihood {
        None => None,
        Some(crate::kinds::LikelihoodKind::Ode) => {
            if bins.is_some() && !identity {
                return Err(input(
                    "--likelihood ode: discrete data needs a model without a data normalisation (dequantisation is in the model's units)",
                ));
            }
            let probes = a.probes.or((dim > 16).then_some(1));
            let o = crate::ode::OdeOptions {
                rtol: a.rtol,
                atol: a.atol,
                probes,
                batch: a.ode_batch,
                bins: bins.map(|k| (k, 2.0 / (f64::from(k) - 1.0))),
            };
            let t0 = std::time::Instant::now();
            let progress = Progress::new("ODE", 1000, "permille");
            let mut tick = |done: f64, nfe: u64| {
                progress.set_message(format!("{nfe} evaluations"));
                progress.set_position((1000.0 * done) as u64);
            };
            let r = crate::ode::nll(&mut source, schedule.as_ref(), &z, o, a.seed, offset, &mut tick)?;
            progress.finish();
            crate::note!("ODE: {} field evaluations in {:.1} s", r.nfe, t0.elapsed().as_secs_f64());
            Some((r, probes))
        }
    };
    let mut generated = if n_mmd > 0 {
        // its time, estimated from the bound's (model calls of the same batch size)
        let bound_calls = (if is_continuous { a.times } else { schedule.steps() } * part.len()) as f64;
        let estimate = started.elapsed().as_secs_f64() * (mmd_calls * n_mmd as u64) as f64 / bound_calls;
        crate::note!(
            "MMD: {n_mmd} samples by {} {mmd_calls} steps, about {} (--mmd-samples 0 skips it)",
            mmd_sampler.sampler,
            crate::progress::human_duration(std::time::Duration::from_secs_f64(estimate))
        );
        let progress = Progress::new(&format!("{n_mmd} samples for the MMD"), mmd_calls, "steps");
        // the samples' seed differs from the bound's draws (another domain of the same seed)
        let mut x = vec![0.0f32; n_mmd * dim];
        crate::noise::starts(a.seed, 0, dim, &mut x);
        let mut den = Ticking { inner: &mut source, progress: &progress };
        let mut noise = crate::noise::sampler(a.seed, 0);
        crate::sampling::sample(
            &mmd_sampler,
            &mut den,
            schedule.as_ref(),
            &mut x,
            Condition::Unconditional,
            &mut noise,
        )?;
        Some(x)
    } else {
        None
    };
    if let (Some(g), Some(nm)) = (generated.as_mut(), source.data_normalization()) {
        nm.invert(g);
    }
    // the exact NLL where the model is a mixture's exact denoiser
    let exact = match &source {
        Source::Optimal(m) => Some(m.with_core(|g| {
            ExactSum::of(
                data.x[part.start * dim..part.end * dim]
                    .chunks_exact(dim)
                    .map(|x| -g.log_density(x).unwrap_or(f64::NAN)),
            )
        })?),
        _ => None,
    };
    let log_det = normalization.log_det();
    let steps = schedule.steps();
    // exact sums over the part's examples, from which the report (and a merge) is made
    let totals = b.per_example.iter().map(|e| e + log_det);
    let sums = BoundSums {
        n: part.len(),
        total: ExactSum::of(totals.clone()),
        total_sq: ExactSum::of(totals.map(|e| e * e)),
        prior: ExactSum::of(b.prior.iter().copied()),
        decoder: ExactSum::of(b.decoder.iter().map(|d| d + log_det)),
        diffusion: if is_continuous {
            ExactSum::of(b.terms.iter().copied())
        } else {
            ExactSum::of(b.terms.chunks_exact(steps).flat_map(|r| r[1..].iter().copied()))
        },
        terms: if is_continuous {
            vec![]
        } else {
            (1..steps).map(|t| ExactSum::of(b.terms.iter().skip(t).step_by(steps).copied())).collect()
        },
        exact_nll: exact,
    };
    let meta = BoundMeta {
        model: a.model.clone(),
        data: a.data.clone(),
        seed: a.seed,
        n_total: data.len(),
        dims: dim,
        bound: if is_continuous { "continuous" } else { "discrete" }.to_string(),
        estimator: (!is_continuous).then(|| a.estimator.to_string()),
        variance: (!is_continuous).then(|| variance_name(opts.variance).to_string()),
        times: is_continuous.then_some(a.times),
    };
    let mut report = sums.report(&meta);
    let finite_bound = [report.neg_elbo_nats, report.neg_elbo_nats_se, report.prior_nats, report.decoder_nats]
        .into_iter()
        .chain(report.terms_nats.iter().copied())
        .chain(report.exact_nll_nats)
        .all(f64::is_finite);
    if sharded && finite_bound {
        let part_json = crate::cli::merge::EvalPart::new(shard, meta, sums);
        super::print_line(serde_json::to_string(&part_json).map_err(anyhow::Error::from)?)?;
        crate::note!(
            "part {} of the bound: examples {}..{} of {}, -ELBO {:.4} nats/example on this part (elbo merge the parts)",
            shard,
            part.start,
            part.end,
            data.len(),
            report.neg_elbo_nats
        );
        return Ok(());
    }
    let (mmd, mmd_data, h) = match &generated {
        Some(g) => {
            let h = median_bandwidth(&data.x, dim);
            // two independent draws exist of generated sets only (a file or a built-in image set
            // is one fixed sample)
            let mmd_data = match spec {
                DataSpec::File(_) | DataSpec::Image(..) => None,
                _ => {
                    let other = spec.load(data.len(), a.seed.wrapping_add(1_000_003))?;
                    Some(mmd2(&other.x, &data.x, dim, h))
                }
            };
            (Some(mmd2(g, &data.x, dim, h)), mmd_data, Some(h))
        }
        None => (None, None, None),
    };
    if let Some((r, probes)) = &ode {
        let v: Vec<f64> = r.per_example.iter().map(|e| e + log_det).collect();
        let nf = v.len() as f64;
        let mean = ExactSum::of(v.iter().copied()).value() / nf;
        let var = if v.len() > 1 { v.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (nf - 1.0) } else { 0.0 };
        let se = (var / nf).sqrt();
        let per_dim = dim as f64 * std::f64::consts::LN_2;
        report.ode_nll_nats = Some(mean);
        report.ode_nll_nats_se = Some(se);
        report.ode_bpd = Some(mean / per_dim);
        report.ode_bpd_se = Some(se / per_dim);
        report.ode_nfe = Some(r.nfe);
        report.ode_probes = *probes;
    }
    report.mmd = mmd;
    report.mmd_data = mmd_data;
    report.mmd_bandwidth = h;
    report.mmd_samples = (n_mmd > 0).then_some(n_mmd);
    report.mmd_sampler = (n_mmd > 0).then(|| format!("{}-{mmd_calls}", mmd_sampler.sampler));
    let finite = [report.neg_elbo_nats, report.neg_elbo_nats_se, report.prior_nats, report.decoder_nats]
        .into_iter()
        .chain(report.terms_nats.iter().copied())
        .chain([report.mmd, report.exact_nll_nats, report.ode_nll_nats].into_iter().flatten())
        .all(f64::is_finite);
    if !finite {
        return Err(input(format!(
            "--model {} on --data {}: the bound is not finite (the data or the model's outputs overflow \
             float32; check that the data is in the model's units)",
            a.model, a.data
        )));
    }
    if let (Some(p), false) = (&a.plot, report.terms_nats.is_empty()) {
        let pts: Vec<(f64, f64)> = report.terms_nats.iter().enumerate().map(|(i, &v)| ((i + 2) as f64, v)).collect();
        crate::plot::curve(p, "per-step terms L_{t-1} of -ELBO (nats)", "t", "nats", &pts, true)?;
    }
    print_report(a, &report, sums.diffusion_mean())
}

/// The command-line name of a reverse variance.
fn variance_name(v: ReverseVariance) -> &'static str {
    match v {
        ReverseVariance::Small => "small",
        ReverseVariance::Large => "large",
        ReverseVariance::LearnedRange => "learned",
    }
}
