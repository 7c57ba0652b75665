//! `elbo experiment NAME`: the claims of the seeds, each one command that writes a Markdown
//! report with PNG plots into a folder.
//!
//! - `likelihood`: on a Gaussian mixture with known density, the negative ELBO of the
//!   Bayes-optimal denoiser against the exact negative log-likelihood, as the number of steps T
//!   grows (10 .. 1000) and in continuous time (VDM's loss, seed 002 eqs. 8-10).
//! - `invariance` (seed 002 eq. 12): for a fixed denoiser, every weighted loss under two
//!   schedules of different shape with the same end points agrees within Monte Carlo error,
//!   while the variance of the estimator differs (the schedule is an importance distribution).
//! - `weighting`, `parameterization`, `vdm`, `guidance`: see [`trained`].
//! - `rb-variance` (seed 000): the per-timestep variance of the Rao-Blackwellised and the Monte
//!   Carlo estimator of `L_{t-1}` with a single sample, at initialisation and after training, and
//!   the training curves (loss, MMD) of a model trained with each, same seed and budget.

mod samplers;
mod trained;

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use elbo_core::elbo::{Decoder, ElboOptions, ElboOutput, ElboScratch, Estimator, ReverseVariance, neg_elbo};
use elbo_core::gaussian::{LN_2PI, prior_kl};
use elbo_core::gmm::{GaussianMixture, OptimalDenoiser};
use elbo_core::rng::{standard_normal, uniform_f64};
use elbo_core::schedule::{LinearGamma, LogSnrSchedule};
use elbo_core::{BetaSchedule, NoiseSchedule, Schedule};
use rand_core::SeedableRng;
use rand_pcg::Pcg32;

use crate::data::DataSpec;
use crate::error::{Error, Result, input};
use crate::io::write_atomic;

/// The experiments of the seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Experiment {
    /// The exact denoiser's bound against the exact NLL, T = 10..1000 and continuous time.
    Likelihood,
    /// Seed 000: Rao-Blackwellised against Monte Carlo estimator variances and training.
    RbVariance,
    /// Seed 002 eq. 12: weighted losses across schedule shapes.
    Invariance,
    /// Seeds 002/003: the weighted-ELBO family, bits/dim and MMD.
    Weighting,
    /// Seed 004: eps, x0, v and score prediction.
    Parameterization,
    /// Continuous time: linear, cosine and learned schedules.
    Vdm,
    /// Seed 004: accuracy and spread against gamma, classifier-free and classifier guidance.
    Guidance,
    /// VAE and HVAE next to diffusion.
    Vae,
    /// Sample quality against denoiser calls for every sampler; the bound against the ODE.
    Samplers,
}

/// Arguments of `elbo experiment`.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// The experiment.
    #[arg(value_enum)]
    pub name: Experiment,
    /// Output folder.
    #[arg(long, default_value = "elbo-experiment")]
    pub out: PathBuf,
    /// Data. By default likelihood and invariance use the 8gaussians mixture (they need a
    /// mixture: gmm:FILE.json or 8gaussians), guidance an overlapping three-component mixture
    /// (it needs a mixture too), the others two-moons (they take any data set).
    #[arg(long)]
    pub data: Option<String>,
    /// Examples.
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Training steps of every model (rb-variance, weighting, parameterization, vdm, guidance,
    /// vae).
    #[arg(long, default_value_t = 3000)]
    pub steps: u64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Your own model for rb-variance and likelihood, instead of the models they train or the
    /// exact denoiser: a checkpoint directory or FILE.onnx, measured on --data (--n examples).
    #[arg(long)]
    pub model: Option<String>,
    /// rb-variance with --model: the timesteps t (2..T, comma-separated) of the per-timestep
    /// variances [default: 2,3,5,10,20,50,100,200,300,500,700,900,1000, those within T].
    #[arg(long, value_delimiter = ',')]
    pub t_list: Option<Vec<usize>>,
    #[command(flatten, next_help_heading = "Schedule of an ONNX --model without elbo.schedule")]
    pub schedule: crate::cli::ScheduleOpts,
    #[command(flatten, next_help_heading = "ONNX models")]
    pub onnx: crate::onnx::OnnxOpts,
}

/// The data of the mixture experiments: `--data`, or the 8gaussians mixture.
fn mixture_data(a: &ExperimentArgs) -> &str {
    a.data.as_deref().unwrap_or("8gaussians")
}

/// The data of the trained-model experiments: `--data`, or two-moons.
pub(super) fn data_of(a: &ExperimentArgs) -> String {
    a.data.clone().unwrap_or_else(|| "two-moons".into())
}

pub fn run(a: &ExperimentArgs) -> Result<()> {
    if a.n < 2 || a.steps == 0 {
        return Err(input("--n, --steps: expected at least 2 points and 1 step"));
    }
    if let Some(model) = &a.model {
        let run = match a.name {
            Experiment::RbVariance => model_rb_variance,
            Experiment::Likelihood => model_likelihood,
            _ => return Err(input("--model: only rb-variance and likelihood run on a given model")),
        };
        let data = a.data.as_deref().ok_or_else(|| input("--model: needs --data (the data to measure it on)"))?;
        let (source, schedule, data, z) = user_model(a, model, data)?;
        let t = schedule.steps();
        if let Some(bad) = a.t_list.iter().flatten().find(|&&k| k < 2 || k > t) {
            return Err(input(format!("--t-list: {bad} is not a timestep 2..{t} of the model (t = 1 is the decoder)")));
        }
        let _lock = crate::io::OutputLock::dir(&a.out, "--out")?;
        std::fs::create_dir_all(&a.out).map_err(|e| input(format!("--out {}: {e}", a.out.display())))?;
        return run(a, model, source, schedule.as_ref(), &data, &z);
    }
    let _lock = crate::io::OutputLock::dir(&a.out, "--out")?;
    match a.name {
        Experiment::Likelihood => likelihood(a),
        Experiment::RbVariance => rb_variance(a),
        Experiment::Invariance => invariance(a),
        Experiment::Weighting => trained::weighting(a),
        Experiment::Parameterization => trained::parameterization(a),
        Experiment::Vdm => trained::vdm(a),
        Experiment::Guidance => trained::guidance(a),
        Experiment::Vae => trained::vae(a),
        Experiment::Samplers => samplers::samplers(a),
    }
}

/// Writes `report.md` into the output folder (atomically), shows it, and prints its path.
/// The documents the reports cite as "seed 00N" (the math's sources, `shared/seeds/` of the
/// project): what each is, named at its first citation in a report.
pub const SOURCES: [(&str, &str); 5] = [
    (
        "seed 000",
        "a note on the diffusion ELBO read as a latent-variable model and its KL form as Rao-Blackwellisation",
    ),
    ("seed 001", "the textbook section \"DDPM from a Variational Derivation: Where Does the ELBO Come From?\""),
    (
        "seed 002",
        "D. P. Kingma and R. Gao, \"Understanding Diffusion Objectives as the ELBO with Data Augmentation\", 2025",
    ),
    ("seed 003", "the note \"The DDPM Simple Loss Is a Weighted ELBO\""),
    ("seed 004", "a survey of diffusion models as hierarchical VAEs, VDM, score-based models and guidance"),
];

/// `md` with each source named at its first citation: "seed 002" becomes "seed 002 (D. P.
/// Kingma and R. Gao, ...)" the first time, and stays short after.
pub fn name_sources(md: &str) -> String {
    let mut out = md.to_string();
    for (id, what) in SOURCES {
        // "seeds 002/003" cites two at once: name both at that point
        let first = [id.to_string(), id.replace("seed ", "seeds ")]
            .iter()
            .filter_map(|pat| out.find(pat.as_str()).map(|i| (i, pat.len())))
            .min();
        if let Some((i, len)) = first {
            out.insert_str(i + len, &format!(" [{what}]"));
        }
    }
    out
}

fn write_report(a: &ExperimentArgs, md: &str) -> Result<()> {
    let md = name_sources(md);
    let md = md.as_str();
    write_atomic(&a.out.join("report.md"), md.as_bytes())?;
    crate::note!("{md}");
    crate::cli::print_line(a.out.join("report.md").display())?;
    Ok(())
}

/// Noises one example at log-SNR `lambda` (`z = a x + s eps`), denoises it with the exact
/// denoiser and returns `||eps_hat - eps||^2`.
fn noisy_eps_error(
    den: &mut OptimalDenoiser<'_>,
    x: &[f32],
    lambda: f64,
    rng: &mut Pcg32,
    x0_hat: &mut [f32],
) -> Result<f64> {
    let sig = |l: f64| 1.0 / (1.0 + (-l).exp());
    let (al, sl) = (sig(lambda).sqrt(), sig(-lambda).sqrt());
    let eps: Vec<f64> = x.iter().map(|_| f64::from(standard_normal(rng))).collect();
    let z: Vec<f32> = x.iter().zip(&eps).map(|(&xv, e)| (al * f64::from(xv) + sl * e) as f32).collect();
    let level = NoiseLevel {
        timestep: 0.0,
        steps: 1,
        log_snr: lambda as f32,
        sqrt_abar: al as f32,
        sqrt_one_minus_abar: sl as f32,
    };
    den.predict(&z, level, Condition::Unconditional, x0_hat).map_err(|e| input(format!("{e}")))?;
    // eps_hat = (z - a x0_hat) / s
    Ok(z.iter()
        .zip(x0_hat.iter())
        .zip(&eps)
        .map(|((&zv, &h), e)| ((f64::from(zv) - al * f64::from(h)) / sl - e).powi(2))
        .sum())
}

fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

/// Time samples per example of the continuous-time estimate (stratified).
const CONTINUOUS_T: usize = 128;

/// The continuous-time negative ELBO of the exact denoiser (seed 002 eq. 10, VDM's L_infinity)
/// for one example: prior `KL(q(z_1|x) || N(0, I))` + the mean over [`CONTINUOUS_T`] stratified
/// `t` of `1/2 (-d lambda/dt) ||eps - eps_hat||^2` + the Gaussian decoder
/// `-log N(x; z_0 / alpha_0, sigma_0^2 / alpha_0^2)` at one draw of `z_0`; unbiased.
fn continuous_term(g: &GaussianMixture<'_>, sched: &LinearGamma, x: &[f32], rng: &mut Pcg32) -> f64 {
    let d = x.len();
    let (l_max, l_min) = sched.end_points();
    let sig = |l: f64| 1.0 / (1.0 + (-l).exp());
    let prior: f64 = x.iter().map(|&v| prior_kl(f64::from(v), sig(l_min))).sum();
    let mut den = OptimalDenoiser::new(*g);
    let mut x0_hat = vec![0.0f32; d];
    let u0 = uniform_f64(rng);
    let mut diffusion = 0.0;
    for k in 0..CONTINUOUS_T {
        let t = (k as f64 + u0) / CONTINUOUS_T as f64;
        let Ok(sq) = noisy_eps_error(&mut den, x, sched.log_snr(t), rng, &mut x0_hat) else { return f64::NAN };
        diffusion += 0.5 * (-sched.dlog_snr_dt(t)) * sq / CONTINUOUS_T as f64;
    }
    let (a0, s0) = (sig(l_max).sqrt(), sig(-l_max).sqrt());
    let var = (s0 / a0).powi(2);
    let decoder: f64 = x
        .iter()
        .map(|&xv| {
            let z0 = a0 * f64::from(xv) + s0 * f64::from(standard_normal(rng));
            let r = f64::from(xv) - z0 / a0;
            0.5 * (LN_2PI + var.ln() + r * r / var)
        })
        .sum();
    prior + diffusion + decoder
}

/// A row of the report: name, -ELBO and its standard error, the gap to the exact NLL and its
/// standard error, the decoder convention's cost (discrete T only).
type Row = (String, f64, f64, f64, f64, Option<f64>);

fn likelihood(a: &ExperimentArgs) -> Result<()> {
    let mixture = DataSpec::parse(mixture_data(a))?.mixture().cloned().ok_or_else(|| {
        input(format!("--data {}: the likelihood experiment needs a Gaussian mixture", mixture_data(a)))
    })?;
    if a.n < 2 {
        return Err(input("--n: expected at least 2 examples"));
    }
    let data = DataSpec::Mixture(mixture.clone()).load(a.n, a.seed)?;
    let dim = data.dim;
    std::fs::create_dir_all(&a.out).map_err(|e| input(format!("--out {}: {e}", a.out.display())))?;
    let rows = mixture.with_core(|g| -> Result<Vec<Row>> {
        let exact: Vec<f64> = data.x.chunks_exact(dim).map(|x| -g.log_density(x).unwrap_or(f64::NAN)).collect();
        let (nll, nll_se) = mean_se(&exact);
        let mut rows = Vec::new();
        let mut rng = Pcg32::seed_from_u64(a.seed + 1);
        for steps in [10usize, 20, 50, 100, 200, 500, 1000] {
            // improved-diffusion's rescaling of the linear schedule to T steps.
            let scale = 1000.0 / steps as f64;
            let kind = BetaSchedule::Linear { beta_start: 1e-4 * scale, beta_end: (0.02 * scale).min(0.999) };
            let s = Schedule::<1000>::new(&kind, steps, false).map_err(|e| input(format!("schedule: {e}")))?;
            let mut den = OptimalDenoiser::new(*g);
            let (mut xt, mut eps, mut pred) =
                (vec![0.0; data.x.len()], vec![0.0; data.x.len()], vec![0.0; data.x.len()]);
            let mut per_example = vec![0.0; a.n];
            let mut per_step = vec![0.0; steps];
            let opts = ElboOptions {
                variance: ReverseVariance::Large,
                estimator: Estimator::RaoBlackwell,
                decoder: Decoder::Continuous,
            };
            neg_elbo(
                &mut den,
                &s,
                &data.x,
                Condition::Unconditional,
                opts,
                &mut crate::noise::bound(a.seed + 1, 0),
                ElboScratch { xt: &mut xt, eps: &mut eps, pred: &mut pred, var: &mut [] },
                ElboOutput { per_example: &mut per_example, per_step: &mut per_step, per_term: &mut [] },
            )
            .map_err(|e| Error::Internal(anyhow::anyhow!("{e}")))?;
            let gaps: Vec<f64> = per_example.iter().zip(&exact).map(|(b, e)| b - e).collect();
            let (m, se) = mean_se(&per_example);
            let (gap, gap_se) = mean_se(&gaps);
            // The decoder convention: sigma_1^2 = btilde_2 where the true p(x_0 | x_1) has a
            // variance close to beta_1 (data wide against sqrt(beta_1)): D/2 (r - 1 - ln r).
            let (b1, b2) = match (s.step(1), s.step(2)) {
                (Ok(a), Ok(b)) => (f64::from(a.beta), f64::from(b.posterior_variance)),
                _ => (f64::NAN, f64::NAN),
            };
            let r = b1 / b2;
            let cost = 0.5 * dim as f64 * (r - 1.0 - r.ln());
            rows.push((format!("T = {steps}"), m, se, gap, gap_se, Some(cost)));
        }
        let sched = LinearGamma::VDM;
        let cont: Vec<f64> = data.x.chunks_exact(dim).map(|x| continuous_term(g, &sched, x, &mut rng)).collect();
        let gaps: Vec<f64> = cont.iter().zip(&exact).map(|(b, e)| b - e).collect();
        let (m, se) = mean_se(&cont);
        let (gap, gap_se) = mean_se(&gaps);
        rows.push(("continuous (VDM linear gamma)".into(), m, se, gap, gap_se, None));
        rows.push(("exact NLL".into(), nll, nll_se, 0.0, 0.0, None));
        Ok(rows)
    })??;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Experiment: the ELBO of the exact denoiser against the exact likelihood\n\n\
         Data: `{}`, {} examples (seed {}), dimension {dim}. Denoiser: the Bayes-optimal one of the \
         mixture (exact posterior mean), so the gap between the bound and the exact negative \
         log-likelihood is the variational gap of the diffusion model itself (seed 004 eq. 58).\n\n\
         Discrete T: linear schedule rescaled by 1000/T (improved-diffusion), sigma^2 = beta_t, \
         Rao-Blackwellised terms, Gaussian decoder with improved-diffusion's btilde_2 at t = 1. \
         Continuous time: VDM's loss (seed 002 eq. 10) with the linear gamma schedule \
         (gamma -13.3 .. 5), a Gaussian decoder at z_0, {CONTINUOUS_T} stratified t per example.\n\n\
         The last column is the part of the gap that the decoder convention explains by itself: \
         improved-diffusion's decoder variance btilde_2 where the true p(x_0 | x_1) has a variance \
         close to beta_1, costing D/2 (r - 1 - ln r) with r = beta_1 / btilde_2.\n\n\
         | model | -ELBO (nats) | gap to exact NLL (nats) | decoder convention (nats) |\n|---|---|---|---|",
        mixture_data(a),
        a.n,
        a.seed
    );
    let mut pts = Vec::new();
    let mut all_positive = true;
    for (name, m, se, gap, gap_se, cost) in &rows {
        let c = cost.map_or("".to_string(), |c| format!("{c:.4}"));
        let _ = writeln!(md, "| {name} | {m:.4} +- {se:.4} | {gap:.4} +- {gap_se:.4} | {c} |");
        if name != "exact NLL" {
            all_positive &= *gap > -3.0 * gap_se;
        }
        if let Some(t) = name.strip_prefix("T = ") {
            pts.push((t.parse::<f64>().unwrap_or(f64::NAN).log10(), *gap));
        }
    }
    let _ = writeln!(
        md,
        "\n{} Compare each gap with the decoder convention's cost to see how much of it the \
         diffusion terms leave.\n\n![gap](gap.png)",
        if all_positive {
            "Every gap is above zero within three standard errors: the bound holds."
        } else {
            "A gap is below zero by more than three standard errors: the bound is violated (a bug)."
        }
    );
    crate::plot::curve(
        &a.out.join("gap.png"),
        "-ELBO minus exact NLL (nats) vs log10 T",
        "log10 T",
        "gap (nats)",
        &pts,
        false,
    )?;
    write_report(a, &md)
}

/// Per timestep: the variance over draws of (x_0, x_t[, x_{t-1}]) of the single-sample RB and MC
/// estimates of `L_{t-1}` (seed 000) for `model` on its schedule `sched` (normalised data `z`).
fn estimator_variances<D: Denoiser>(
    model: &mut D,
    sched: &dyn NoiseSchedule,
    z: &[f32],
    ts: &[usize],
    rng: &mut Pcg32,
) -> Result<Vec<(f64, f64)>>
where
    D::Error: std::fmt::Display + 'static,
{
    use elbo_core::elbo::{ModelVariance, kl_term_mc, kl_term_rb, reverse_log_variance};
    let d = model.dim();
    let kind = model.prediction();
    let mut out = Vec::new();
    for &t in ts {
        let st = sched.step(t).map_err(|e| input(format!("{e}")))?;
        let mut xt = vec![0.0f32; z.len()];
        let mut eps = vec![0.0f32; z.len()];
        elbo_core::forward::q_sample_rng(&st.cur, z, rng, &mut eps, &mut xt).map_err(|e| input(format!("{e}")))?;
        let mut pred = vec![0.0f32; z.len()];
        model
            .predict(&xt, NoiseLevel::of(&st), Condition::Unconditional, &mut pred)
            .map_err(|e| crate::error::run_error(elbo_core::RunError::Model(e)))?;
        let lv = ModelVariance::Fixed(reverse_log_variance(&st, ReverseVariance::Large, 0.0));
        let (mut rb, mut mc) = (Vec::new(), Vec::new());
        for ((x, xr), p) in z.chunks_exact(d).zip(xt.chunks_exact(d)).zip(pred.chunks_exact(d)) {
            rb.push(kl_term_rb(&st, kind, p, x, xr, lv).map_err(|e| input(format!("{e}")))?);
            let draw: Vec<f32> = (0..d).map(|_| standard_normal(rng)).collect();
            mc.push(kl_term_mc(&st, kind, p, x, xr, lv, &draw).map_err(|e| input(format!("{e}")))?);
        }
        // the sample variance, from the standard error of the mean
        let var = |v: &[f64]| mean_se(v).1.powi(2) * v.len() as f64;
        out.push((var(&rb), var(&mc)));
    }
    Ok(out)
}

/// `(x, y)` points of a curve.
type Curve = Vec<(f64, f64)>;

fn rb_variance(a: &ExperimentArgs) -> Result<()> {
    use crate::metrics::{median_bandwidth, mmd2};
    use crate::model::Trained;
    use crate::train::{Loss, TrainOptions};
    let data = data_of(a);
    let spec = DataSpec::parse(&data)?;
    let held_out = spec.load(a.n.max(2), a.seed + 1)?;
    let dim = held_out.dim;
    std::fs::create_dir_all(&a.out).map_err(|e| input(format!("--out {}: {e}", a.out.display())))?;
    let ts: Vec<usize> = [2usize, 3, 5, 10, 20, 50, 100, 200, 300, 500, 700, 900, 1000].to_vec();
    let h = median_bandwidth(&held_out.x, dim);
    let every = (a.steps / 10).max(1);
    let mut report = String::new();
    // (loss name, loss curve, MMD curve), each as (step, value) points
    let mut curves: Vec<(String, Curve, Curve)> = Vec::new();
    let mut variances = Vec::new();
    for loss in [Loss::Vlb, Loss::Mc] {
        let opts = TrainOptions {
            data: data.clone(),
            loss: Some(loss),
            steps: a.steps,
            seed: a.seed,
            ..TrainOptions::DEFAULT
        };
        let mut tr = opts.trainer()?;
        let norm = tr.ckpt.config.normalization.clone();
        let mut z = held_out.x.clone();
        norm.apply(&mut z);
        let mut rng = Pcg32::seed_from_u64(a.seed + 7);
        let snapshot = |tr: &crate::train::Trainer| Trained::new(tr.ckpt.config.clone(), tr.ckpt.params.clone());
        let measure = |tr: &crate::train::Trainer, rng: &mut Pcg32| -> Result<Vec<(f64, f64)>> {
            let mut m = snapshot(tr)?;
            let sched = m.schedule()?;
            estimator_variances(&mut m, sched.as_ref(), &z, &ts, rng)
        };
        if loss == Loss::Vlb {
            variances.push(("initialisation", measure(&tr, &mut rng)?));
        }
        let (mut loss_pts, mut mmd_pts) = (Vec::new(), Vec::new());
        let (mut acc, mut cnt) = (0.0, 0);
        let progress = crate::progress::Progress::new(&format!("training with {loss}"), a.steps, "steps");
        while tr.ckpt.state.step < a.steps {
            acc += tr.step()?;
            progress.set_position(tr.ckpt.state.step);
            cnt += 1;
            let k = tr.ckpt.state.step;
            if k % every == 0 || k == a.steps {
                loss_pts.push((k as f64, acc / f64::from(cnt)));
                acc = 0.0;
                cnt = 0;
                let mut model = Trained::new(tr.ckpt.config.clone(), tr.ckpt.ema.clone())?;
                let sched = model.schedule()?;
                // the same x_T at every point of the curve
                let mut x = crate::evaluate::samples(&mut model, sched.as_ref(), held_out.len(), a.seed + 8, Some(50))?;
                norm.invert(&mut x);
                mmd_pts.push((k as f64, mmd2(&x, &held_out.x, dim, h)));
            }
        }
        if loss == Loss::Vlb {
            variances.push(("after training (RB model)", measure(&tr, &mut rng)?));
        }
        curves.push((loss.to_string(), loss_pts, mmd_pts));
    }
    let _ = writeln!(
        report,
        "# Experiment: Rao-Blackwellised vs Monte Carlo estimation of the diffusion ELBO (seed 000)\n\n\
         Data: `{data}` ({} held-out points for the measurements). Model: the default MLP, eps \
         prediction, linear schedule T = 1000, sigma^2 = beta_t. Single-sample estimators of \
         L_(t-1): RB = the analytic KL at one draw of x_t; MC = the log-ratio at one draw of x_t \
         and of x_(t-1) (seed 000). Variances over the held-out points and the draws.\n",
        held_out.len()
    );
    for (when, v) in &variances {
        let _ = writeln!(
            report,
            "\n## Per-timestep variance, {when}\n\n| t | var RB | var MC | MC / RB |\n|---|---|---|---|"
        );
        for (t, (rb, mc)) in ts.iter().zip(v) {
            let _ = writeln!(report, "| {t} | {rb:.3e} | {mc:.3e} | {:.3e} |", mc / rb);
        }
    }
    let _ = writeln!(
        report,
        "\n## Training with each estimator ({} steps, same seed and batches)\n\n\
         | step | loss RB | loss MC | MMD^2 RB | MMD^2 MC |\n|---|---|---|---|---|",
        a.steps
    );
    for i in 0..curves[0].1.len().min(curves[1].1.len()) {
        let _ = writeln!(
            report,
            "| {} | {:.4} | {:.4} | {:.3e} | {:.3e} |",
            curves[0].1[i].0, curves[0].1[i].1, curves[1].1[i].1, curves[0].2[i].1, curves[1].2[i].1
        );
    }
    let _ = writeln!(
        report,
        "\nLoss: the training objective (an estimate of T L_(t-1) / D in nats, the same quantity for \
         both), averaged over the steps since the previous row. MMD^2: 1 000-sample biased \
         V-statistic (Gaussian kernel, bandwidth {h:.3}) between DDIM samples (50 steps) of the EMA \
         weights and the held-out points, for the model trained with each estimator (`mmd.png`: both \
         curves).\n\n![variances](variance.png) ![mmd](mmd.png)"
    );
    let mut vpts = Vec::new();
    for (t, (rb, mc)) in ts.iter().zip(&variances[variances.len() - 1].1) {
        vpts.push(((*t as f64).log10(), (mc / rb).log10()));
    }
    crate::plot::curve(
        &a.out.join("variance.png"),
        "log10 var(MC) / var(RB) after training, vs log10 t",
        "log10 t",
        "log10 ratio",
        &vpts,
        false,
    )?;
    crate::plot::curves(
        &a.out.join("mmd.png"),
        "MMD^2 of the model trained with each estimator vs step",
        "step",
        "MMD^2",
        &[("Rao-Blackwellised (vlb)", curves[0].2.clone()), ("Monte Carlo (mc)", curves[1].2.clone())],
        true,
    )?;
    write_report(a, &report)
}

/// Mean, its standard error, and the sample variance of an estimate.
type Stat = (f64, f64, f64);

fn invariance(a: &ExperimentArgs) -> Result<()> {
    use elbo_core::schedule::CosineLogSnr;
    use elbo_core::weighting::Weighting;
    let mixture = DataSpec::parse(mixture_data(a))?.mixture().cloned().ok_or_else(|| {
        input(format!("--data {}: the invariance experiment needs a Gaussian mixture", mixture_data(a)))
    })?;
    if a.n < 2 {
        return Err(input("--n: expected at least 2 examples"));
    }
    let data = DataSpec::Mixture(mixture.clone()).load(a.n, a.seed)?;
    let dim = data.dim;
    let linear = LinearGamma::VDM;
    let (hi, lo) = linear.end_points();
    let cosine = CosineLogSnr::new(lo, hi).map_err(|e| input(format!("{e}")))?;
    let schedules: [(&str, &dyn LogSnrSchedule); 2] = [("VDM linear gamma", &linear), ("cosine log-SNR", &cosine)];
    let weightings: Vec<Weighting> =
        Weighting::NAMES.iter().filter_map(|n| Weighting::from_name(n, None).ok()).collect();
    // One draw (t ~ U(0, 1), eps) per example and schedule, shared by all weightings.
    let rows = mixture.with_core(|g| -> Result<Vec<(String, [Stat; 2])>> {
        let mut den = OptimalDenoiser::new(*g);
        let mut per: Vec<[Vec<f64>; 2]> = vec![[vec![], vec![]]; weightings.len()];
        for (si, (_, sched)) in schedules.iter().enumerate() {
            let mut rng = Pcg32::seed_from_u64(a.seed + 1 + si as u64);
            let mut x0_hat = vec![0.0f32; dim];
            for x in data.x.chunks_exact(dim) {
                let t = uniform_f64(&mut rng);
                let lambda = sched.log_snr(t);
                let sq = noisy_eps_error(&mut den, x, lambda, &mut rng, &mut x0_hat)?;
                for (wi, w) in weightings.iter().enumerate() {
                    per[wi][si].push(w.loss_term(lambda, sched.dlog_snr_dt(t), sq, 1.0));
                }
            }
        }
        Ok(weightings
            .iter()
            .zip(&per)
            .map(|(w, p)| {
                let stat = |v: &Vec<f64>| {
                    let (m, se) = mean_se(v);
                    (m, se, se * se * v.len() as f64)
                };
                let name = match w.param() {
                    Some(v) => format!("{}:{v}", w.name()),
                    None => w.name().to_string(),
                };
                (name, [stat(&p[0]), stat(&p[1])])
            })
            .collect())
    })??;
    std::fs::create_dir_all(&a.out).map_err(|e| input(format!("--out {}: {e}", a.out.display())))?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Experiment: the weighted loss depends on the schedule only through its end points (seed 002 eq. 12)\n\n\
         Denoiser: the Bayes-optimal one of `{}` (a fixed function of z and lambda). Schedules: VDM's \
         linear gamma and the cosine log-SNR schedule, both from lambda = {hi:.1} to {lo:.1}. Loss: \
         1/2 w(lambda) (-d lambda/dt) ||eps_hat - eps||^2 at one t ~ U(0, 1) per example ({} examples). \
         Weightings by their `--loss weighted:NAME[:PARAM]` names; `v` and `fm-ot` are the same \
         function, exp(-lambda/2) (v-prediction with the cosine schedule, flow matching with the OT \
         path), so their rows agree.\n\n\
         | weighting | L_w, linear gamma | L_w, cosine | difference / its se | variance, linear | variance, cosine |\n|---|---|---|---|---|---|",
        mixture_data(a),
        a.n
    );
    let mut agree = true;
    for (name, [l, c]) in &rows {
        let z = (l.0 - c.0) / (l.1 * l.1 + c.1 * c.1).sqrt();
        agree &= z.abs() < 4.5;
        let _ = writeln!(
            md,
            "| {name} | {:.4} +- {:.4} | {:.4} +- {:.4} | {z:+.2} | {:.3e} | {:.3e} |",
            l.0, l.1, c.0, c.1, l.2, c.2
        );
    }
    let _ = writeln!(
        md,
        "\n{}",
        if agree {
            "Every weighting gives the same loss under both schedules within 4.5 standard errors, while the variances of the estimates differ: the shape of the schedule only acts as an importance distribution."
        } else {
            "Some weighting differs between the schedules by more than 4.5 standard errors: the claim does not hold here."
        }
    );
    write_report(a, &md)
}

/// The default timesteps of the per-timestep variances.
const T_LIST: [usize; 13] = [2, 3, 5, 10, 20, 50, 100, 200, 300, 500, 700, 900, 1000];

/// A user's model (`--model`), its schedule, `--n` examples of `data` (data units) and the same
/// in the model's units.
fn user_model(
    a: &ExperimentArgs,
    model: &str,
    data: &str,
) -> Result<(crate::cli::model_arg::Source, Box<crate::HostSchedule>, crate::data::Dataset, Vec<f32>)> {
    use crate::cli::model_arg::Source;
    let spec = DataSpec::parse(data)?.with_split(crate::kinds::Split::Test);
    crate::io::check_memory("--n", crate::io::product(&[a.n, spec.mixture().map_or(2, |m| m.dim()), 4]))?;
    let mut source = Source::load(model, Some(data), &a.onnx)?;
    let data_set = spec.load(a.n, a.seed)?;
    if let Source::Onnx(o) = &mut source
        && o.shape.is_empty()
    {
        o.set_shape(&data_set.shape)?;
    }
    if data_set.dim != source.dim() {
        return Err(input(format!(
            "--data {data}: examples have {} values, the model expects {}",
            data_set.dim,
            source.dim()
        )));
    }
    let schedule = source.schedule(&a.schedule)?;
    let mut z = data_set.x.clone();
    source.normalization().apply(&mut z);
    Ok((source, schedule, data_set, z))
}

/// `rb-variance --model`: the per-timestep variances of the Rao-Blackwellised and the Monte
/// Carlo single-sample estimates of `L_{t-1}` (seed 000) of the user's model on the user's data.
fn model_rb_variance(
    a: &ExperimentArgs,
    model: &str,
    mut source: crate::cli::model_arg::Source,
    schedule: &dyn NoiseSchedule,
    data: &crate::data::Dataset,
    z: &[f32],
) -> Result<()> {
    let t = schedule.steps();
    let ts: Vec<usize> = match &a.t_list {
        Some(v) => v.clone(),
        None => T_LIST.iter().copied().filter(|&k| k <= t).collect(),
    };
    let mut rng = Pcg32::seed_from_u64(a.seed + 7);
    let progress = crate::progress::Progress::new("variances", ts.len() as u64, "timesteps");
    let v = estimator_variances(
        &mut crate::progress::Ticking { inner: &mut source, progress: &progress },
        schedule,
        z,
        &ts,
        &mut rng,
    )?;
    drop(progress);
    let mut md = format!(
        "# Experiment: Rao-Blackwellised vs Monte Carlo estimation of L_(t-1) (seed 000) for `{model}`\n\n\
         Data: `{}`, {} examples, in the model's units. Single-sample estimators of L_(t-1) at \
         sigma^2 = beta_t: RB = the analytic KL at one draw of x_t; MC = the log-ratio at one draw \
         of x_t and of x_(t-1). Variances over the examples and the draws (T = {t}).\n\n\
         | t | var RB | var MC | MC / RB |\n|---|---|---|---|\n",
        a.data.as_deref().unwrap_or_default(),
        data.len()
    );
    for (k, (rb, mc)) in ts.iter().zip(&v) {
        let _ = writeln!(md, "| {k} | {rb:.3e} | {mc:.3e} | {:.3e} |", mc / rb);
    }
    md.push_str("\n![variances](variance.png)\n");
    let pts =
        |i: usize| -> Curve { ts.iter().zip(&v).map(|(&k, p)| (k as f64, if i == 0 { p.0 } else { p.1 })).collect() };
    crate::plot::curves(
        &a.out.join("variance.png"),
        "per-timestep variance of the single-sample estimate of L_(t-1)",
        "t",
        "variance",
        &[("Rao-Blackwellised", pts(0)), ("Monte Carlo", pts(1))],
        true,
    )?;
    write_report(a, &md)
}

/// `likelihood --model`: the user's model's bound on the user's data, term by term, next to
/// the data's exact negative log-likelihood where `--data` is a Gaussian mixture.
fn model_likelihood(
    a: &ExperimentArgs,
    model: &str,
    mut source: crate::cli::model_arg::Source,
    schedule: &dyn NoiseSchedule,
    data: &crate::data::Dataset,
    z: &[f32],
) -> Result<()> {
    use crate::cli::model_arg::Source;
    let spec = a.data.as_deref().unwrap_or_default();
    let seed = a.seed + 1;
    let norm = source.normalization();
    let continuous = match &source {
        Source::Trained(t) => t.continuous().transpose()?,
        _ => None,
    };
    let b = match (&mut source, continuous) {
        (Source::Trained(t), Some(c)) => {
            let progress = crate::progress::Progress::new("bound", 200, "levels");
            let mut den = crate::progress::Ticking { inner: t.as_mut(), progress: &progress };
            crate::evaluate::continuous_bound(&mut den, &c, z, 200, None, seed, 0)?
        }
        (s, _) => {
            let opts = ElboOptions {
                variance: ReverseVariance::Large,
                estimator: Estimator::RaoBlackwell,
                decoder: Decoder::Continuous,
            };
            let progress = crate::progress::Progress::new("bound", schedule.steps() as u64, "steps");
            let mut den = crate::progress::Ticking { inner: s, progress: &progress };
            crate::evaluate::bound(&mut den, schedule, z, opts, seed, 0)?
        }
    };
    let ld = norm.log_det();
    let per: Vec<f64> = b.per_example.iter().map(|e| e + ld).collect();
    let (total, se) = mean_se(&per);
    let dim = data.dim;
    let bits = |v: f64| v / (dim as f64 * std::f64::consts::LN_2);
    let mut md = format!(
        "# Experiment: the bound of `{model}` on `{spec}`\n\n\
         {} examples, in the data's own units (the normalisation's log-determinant {ld:.4} is in \
         the decoder term). {}\n\n| quantity | nats | bits/dim |\n|---|---|---|\n\
         | -ELBO | {total:.4} +- {se:.4} | {:.4} +- {:.4} |\n\
         | prior | {:.4e} | |\n| diffusion (sum of L_1..L_T-1, or the continuous-time loss) | {:.4} | |\n\
         | decoder | {:.4} | |\n",
        data.len(),
        if b.per_step.is_empty() {
            "VDM's continuous-time bound (seed 002 eqs. 8-10), 200 stratified log-SNR levels.".to_string()
        } else {
            format!("The discrete bound at T = {}, sigma^2 = beta_t, Rao-Blackwellised terms.", schedule.steps())
        },
        bits(total),
        bits(se),
        b.parts.prior,
        b.parts.diffusion,
        b.parts.decoder + ld,
    );
    if let Some(m) = DataSpec::parse(spec)?.mixture() {
        let exact: Vec<f64> = m.with_core(|g| {
            data.x.chunks_exact(dim).map(|x| -g.log_density(x).unwrap_or(f64::NAN)).collect::<Vec<f64>>()
        })?;
        let gaps: Vec<f64> = per.iter().zip(&exact).map(|(b, e)| b - e).collect();
        let (nll, nll_se) = mean_se(&exact);
        let (gap, gap_se) = mean_se(&gaps);
        let _ = writeln!(
            md,
            "| exact NLL of the data (the mixture's density) | {nll:.4} +- {nll_se:.4} | {:.4} |\n\
             | gap: -ELBO - NLL (paired) | {gap:.4} +- {gap_se:.4} | {:.4} |",
            bits(nll),
            bits(gap)
        );
    }
    if !b.per_step.is_empty() {
        let pts: Curve = b.per_step.iter().enumerate().skip(1).map(|(i, &v)| ((i + 1) as f64, v)).collect();
        crate::plot::curve(&a.out.join("terms.png"), "per-step terms L_(t-1) (nats)", "t", "nats", &pts, true)?;
        md.push_str("\n![terms](terms.png)\n");
    }
    write_report(a, &md)
}
