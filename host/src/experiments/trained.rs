//! The experiments that train models: `weighting`, `parameterization`, `vdm` and `guidance`.
//! Each trains its models in-process with the command line's defaults (`--steps` steps each,
//! same seed), evaluates the bound in bits/dim on held-out data and the sample quality (MMD),
//! and writes a Markdown report with PNG plots.

use std::fmt::Write as _;

use elbo_core::NoiseSchedule;
use elbo_core::denoiser::Condition;
use elbo_core::elbo::{Decoder, ElboOptions, Estimator, ReverseVariance};
use elbo_core::rng::fill_standard_normal;
use elbo_core::sampler::{ClassifierFree, ClassifierGuided, Ddpm};
use elbo_core::schedule::LogSnrSchedule;
use elbo_core::weighting::Weighting;
use rand_core::SeedableRng;
use rand_pcg::Pcg32;

use super::{ExperimentArgs, data_of, write_report};
use crate::cli::train::{TrainCliArgs, new_trainer};
use crate::continuous::Continuous;
use crate::data::{DataSpec, Dataset, Mixture};
use crate::error::{Error, Result, input};
use crate::evaluate::{bound, continuous_bound};
use crate::metrics::{median_bandwidth, mmd2};
use crate::model::{Trained, TrainedClassifier};
use crate::progress::{Progress, Ticking};

/// Trains a model with the command line's defaults and `flags` into `a.out/name`; returns the
/// trained model (EMA weights) and the training time in seconds.
fn train(a: &ExperimentArgs, name: &str, flags: &[&str]) -> Result<(Trained, f64)> {
    let (ckpt, secs) = train_checkpoint(a, name, flags)?;
    Ok((Trained::new(ckpt.config, ckpt.ema)?, secs))
}

/// [`train`] for the other experiment modules.
pub(super) fn train_for(a: &ExperimentArgs, name: &str, flags: &[&str]) -> Result<(Trained, f64)> {
    train(a, name, flags)
}

/// [`train`], returning the checkpoint (any kind of model).
fn train_checkpoint(a: &ExperimentArgs, name: &str, flags: &[&str]) -> Result<(crate::checkpoint::Checkpoint, f64)> {
    let dir = a.out.join(name);
    if dir.join("config.json").exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| input(format!("--out {}: {e}", dir.display())))?;
    }
    let (steps, seed, out) = (a.steps.to_string(), a.seed.to_string(), dir.to_string_lossy().into_owned());
    let mut all = vec!["--steps", &steps, "--seed", &seed, "--out", &out];
    all.extend_from_slice(flags);
    let args = TrainCliArgs::from_flags(&all)?;
    let start = std::time::Instant::now();
    let mut tr = new_trainer(&args)?;
    let progress = Progress::new(&format!("training {name}"), a.steps, "steps");
    tr.run(&dir, 100, |k, loss, _| {
        progress.set_message(format!("loss {loss:.4}"));
        progress.set_position(k);
    })?;
    progress.finish();
    crate::note!("  trained {name} ({})", crate::progress::human_duration(start.elapsed()));
    Ok((tr.ckpt, start.elapsed().as_secs_f64()))
}

/// A model's figures on held-out data.
struct Figures {
    /// `-ELBO` in bits/dim (data units) and its standard error.
    bpd: (f64, f64),
    /// MMD^2 of DDPM samples against the held-out data.
    mmd: f64,
    /// The discrete bound's mean term per timestep `L_{t-1}` in nats (empty in continuous time).
    per_step: Vec<f64>,
    /// The samples the MMD was measured on (data units).
    samples: Vec<f32>,
}

/// The bound (continuous-time models: VDM's; discrete: improved-diffusion's with
/// `sigma^2 = beta_t` and the Rao-Blackwellised terms) and the MMD of `held_out.len()` DDPM
/// samples (all steps of the model's schedule).
fn figures(model: &mut Trained, held_out: &Dataset, h: f64, seed: u64) -> Result<Figures> {
    let dim = held_out.dim;
    let mut z = held_out.x.clone();
    let norm = model.normalization.clone();
    norm.apply(&mut z);
    let sched = model.schedule()?;
    let b = match model.continuous() {
        Some(c) => {
            let progress = Progress::new("bound", 200, "levels");
            continuous_bound(&mut Ticking { inner: &mut *model, progress: &progress }, &c?, &z, 200, None, seed, 0)?
        }
        None => {
            let opts = ElboOptions {
                variance: ReverseVariance::Large,
                estimator: Estimator::RaoBlackwell,
                decoder: Decoder::Continuous,
            };
            let progress = Progress::new("bound", sched.steps() as u64, "steps");
            bound(&mut Ticking { inner: &mut *model, progress: &progress }, sched.as_ref(), &z, opts, seed, 0)?
        }
    };
    let n = b.per_example.len() as f64;
    let ld = norm.log_det();
    let mean = b.parts.total + ld;
    let var = b.per_example.iter().map(|e| (e + ld - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let per_dim = dim as f64 * std::f64::consts::LN_2;
    let progress = Progress::new("samples", sched.steps() as u64, "steps");
    let mut x = crate::evaluate::samples(
        &mut Ticking { inner: &mut *model, progress: &progress },
        sched.as_ref(),
        held_out.len(),
        seed,
        None,
    )?;
    drop(progress);
    norm.invert(&mut x);
    Ok(Figures {
        bpd: (mean / per_dim, (var / n).sqrt() / per_dim),
        mmd: mmd2(&x, &held_out.x, dim, h),
        per_step: if model.continuous().is_some() { vec![] } else { b.per_step },
        samples: x,
    })
}

/// `weighting` (seed 002, seed 003): one model per weighting of the family in continuous time
/// (VDM's linear gamma schedule), and the discrete L_simple and VLB; bits/dim and MMD.
pub(super) fn weighting(a: &ExperimentArgs) -> Result<()> {
    let data = data_of(a);
    let held_out = DataSpec::parse(&data)?.load(a.n.max(2), a.seed + 1)?;
    let h = median_bandwidth(&held_out.x, held_out.dim);
    std::fs::create_dir_all(&a.out).map_err(|e| input(format!("--out {}: {e}", a.out.display())))?;
    let mut runs: Vec<(String, Vec<String>, Option<Weighting>)> = vec![
        ("discrete L_simple (eps, T = 1000)".into(), vec!["--loss".into(), "simple".into()], None),
        ("discrete VLB (T = 1000, RB)".into(), vec!["--loss".into(), "vlb".into()], None),
    ];
    for (name, param) in
        [("elbo", None), ("sigmoid", Some(2.0)), ("iddpm", None), ("edm", None), ("v", None), ("fm-ot", None)]
    {
        let w = Weighting::from_name(name, param).map_err(|e| input(format!("{e}")))?;
        let loss = match param {
            Some(p) => format!("weighted:{name}:{p}"),
            None => format!("weighted:{name}"),
        };
        runs.push((
            format!("continuous {loss}"),
            vec!["--schedule".into(), "vdm".into(), "--loss".into(), loss],
            Some(w),
        ));
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Experiment: the weighted-ELBO family\n\n\
         Data: `{data}`; every model: the default MLP, {} steps, seed {}, batch 512. Continuous-time \
         models use VDM's linear gamma schedule (log-SNR 13.3 .. -5) and the loss \
         `1/2 w(lambda) (-d lambda/dt) ||eps - eps_hat||^2` (seed 002 eq. 11); the discrete rows use \
         the linear beta schedule. The bound is evaluated on {} held-out points in the data's own \
         units: VDM's continuous-time bound for continuous models, improved-diffusion's discrete \
         bound (sigma^2 = beta_t) for the discrete ones. MMD^2: DDPM samples (1 000 steps) against \
         the held-out points (the same count; Gaussian kernel, bandwidth {h:.3}).\n\n\
         Seed 002's claim: a weighting that is monotone in time (non-increasing in lambda) is the \
         ELBO of data augmented with Gaussian noise, so it is a likelihood objective up to that \
         augmentation; the ELBO weighting (w = 1) gives the best bound, the others trade bound for \
         sample quality. `v` and `fm-ot` are the same weighting, exp(-lambda/2), under two names \
         (v-prediction with the cosine schedule, flow matching with the OT path), so their rows \
         agree.\n\n\
         | objective | monotone w | -ELBO (bits/dim) | MMD^2 |\n|---|---|---|---|",
        a.steps,
        a.seed,
        held_out.len()
    );
    let mut pts = Vec::new();
    for (i, (name, flags, w)) in runs.iter().enumerate() {
        let mut f: Vec<&str> = vec!["--data", &data];
        f.extend(flags.iter().map(String::as_str));
        let (mut model, _) = train(a, &format!("model-{i}"), &f)?;
        let fig = figures(&mut model, &held_out, h, a.seed + 2)?;
        let mono = w.map_or("-".to_string(), |w| if w.is_monotone() { "yes".into() } else { "no".into() });
        let _ = writeln!(md, "| {name} | {mono} | {:.4} +- {:.4} | {:.3e} |", fig.bpd.0, fig.bpd.1, fig.mmd);
        pts.push((name.clone(), *w, fig.bpd));
    }
    // what the table says about the claim
    let continuous: Vec<&(String, Option<Weighting>, (f64, f64))> = pts.iter().filter(|p| p.1.is_some()).collect();
    let elbo = continuous.iter().find(|p| p.1 == Some(Weighting::Elbo)).map(|p| p.2);
    let best = continuous.iter().min_by(|x, y| x.2.0.total_cmp(&y.2.0));
    if let (Some(e), Some(b)) = (elbo, best) {
        let within = (b.2.0 - e.0).abs() <= 2.0 * (b.2.1.powi(2) + e.1.powi(2)).sqrt();
        let _ = writeln!(
            md,
            "\nLowest bound in continuous time: {} ({:.4} bits/dim); the ELBO weighting: {:.4}. {}",
            b.0,
            b.2.0,
            e.0,
            if b.1 == Some(Weighting::Elbo) || within {
                "The ELBO weighting gives the best bound (within two standard errors), as the claim says."
            } else {
                "The ELBO weighting does not give the best bound here: the claim does not hold at this budget."
            }
        );
    }
    let _ = writeln!(
        md,
        "\nThe weightings as functions of lambda (log scale; a monotone one never rises with lambda):\n\n\
         ![weightings](weightings.png)"
    );
    let curves: Vec<(String, Vec<(f64, f64)>)> = continuous
        .iter()
        .filter_map(|p| {
            let w = p.1?;
            let label = p.0.trim_start_matches("continuous weighted:").to_string();
            Some((label, (0..=200).map(|k| -5.0 + 18.3 * f64::from(k) / 200.0).map(|l| (l, w.weight(l))).collect()))
        })
        .collect();
    let series: Vec<(&str, Vec<(f64, f64)>)> = curves.iter().map(|(l, p)| (l.as_str(), p.clone())).collect();
    crate::plot::curves(&a.out.join("weightings.png"), "w(lambda)", "lambda = log SNR", "w", &series, true)?;
    write_report(a, &md)
}

/// `parameterization` (seed 004): eps-, x0-, v- and score-prediction models trained with the
/// same budget and each its own L_simple (the squared error of its own target).
pub(super) fn parameterization(a: &ExperimentArgs) -> Result<()> {
    let data = data_of(a);
    let held_out = DataSpec::parse(&data)?.load(a.n.max(2), a.seed + 1)?;
    let h = median_bandwidth(&held_out.x, held_out.dim);
    std::fs::create_dir_all(&a.out).map_err(|e| input(format!("--out {}: {e}", a.out.display())))?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Experiment: parameterisations\n\n\
         Data: `{data}`; the default MLP, linear schedule T = 1000, {} steps, seed {}. Each model \
         predicts its own target and is trained on the plain squared error of that target \
         (L_simple in its parameterisation), and, separately, every kind on the same ELBO-weighted \
         loss (`weighted:elbo`, which only changes how the output maps to eps_hat). The four are \
         affine in one another at fixed x_t (seed 004 eqs. 124-148), so with the ELBO loss they \
         share one optimum, though not how hard it is for the network to reach (x0 must be \
         exact to within sigma_t at low noise); with their own L_simple they weight the \
         timesteps differently (x0: by SNR_t, v: by SNR_t + 1, score: by 1 / sigma_t^2).\n\n\
         | prediction | loss | -ELBO (bits/dim) | MMD^2 | training s |\n|---|---|---|---|---|",
        a.steps, a.seed
    );
    let mut terms: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    for loss in ["simple", "weighted:elbo"] {
        for kind in ["eps", "x0", "v", "score"] {
            let (mut model, secs) = train(
                a,
                &format!("model-{kind}-{}", loss.replace(':', "-")),
                &["--data", &data, "--prediction", kind, "--loss", loss],
            )?;
            let fig = figures(&mut model, &held_out, h, a.seed + 2)?;
            let _ = writeln!(
                md,
                "| {kind} | {loss} | {:.4} +- {:.4} | {:.3e} | {secs:.1} |",
                fig.bpd.0, fig.bpd.1, fig.mmd
            );
            if loss == "simple" {
                let pts =
                    fig.per_step.iter().enumerate().map(|(t, &v)| (((t + 1) as f64).log10(), v / held_out.dim as f64));
                terms.push((kind, pts.collect::<Vec<_>>()));
            }
        }
    }
    let _ = writeln!(
        md,
        "\nMMD^2 as in `weighting` (DDPM samples, 1 000 steps, bandwidth {h:.3}).\n\n\
         Where the bound goes: the term L_(t-1) of each L_simple model per timestep (nats/dim, log \
         scale); a kind whose L_simple neglects the low-noise steps pays there.\n\n![terms](terms.png)"
    );
    crate::plot::curves(&a.out.join("terms.png"), "L_(t-1) per timestep", "log10 t", "nats/dim", &terms, true)?;
    write_report(a, &md)
}

/// `vdm` (seed 004 eqs. 111-114, seed 002 eq. 12): continuous-time models on VDM's linear
/// gamma, the cosine log-SNR and the learned monotone schedule (same end points), next to the
/// discrete linear schedule; bits/dim, MMD, the diffusion loss's variance across a batch, and
/// the learned gamma(t).
pub(super) fn vdm(a: &ExperimentArgs) -> Result<()> {
    use crate::train::{ContinuousBatch, Loss, continuous_grads};
    let data = data_of(a);
    let spec = DataSpec::parse(&data)?;
    let held_out = spec.load(a.n.max(2), a.seed + 1)?;
    let h = median_bandwidth(&held_out.x, held_out.dim);
    std::fs::create_dir_all(&a.out).map_err(|e| input(format!("--out {}: {e}", a.out.display())))?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Experiment: continuous time and a learned noise schedule (VDM)\n\n\
         Data: `{data}`; the default MLP, {} steps, seed {}, VDM's low-discrepancy times. The \
         learned schedule is `SNR(t) = exp(-gamma(t))` with gamma a monotone network (seed 004 \
         eqs. 111-114) whose end points descend the bound and whose shape descends the second \
         moment of the diffusion loss's estimate (its mean does not depend on the shape, seed 002 \
         eq. 12). Bound: VDM's continuous-time bound on {} held-out points (200 stratified times \
         each). Variance: of the per-example diffusion loss estimate (one t, one eps each) over \
         4 096 draws, in (nats/dim)^2.\n\n\
         | schedule | -ELBO (bits/dim) | MMD^2 | estimator variance | learned gamma monotone |\n|---|---|---|---|---|",
        a.steps,
        a.seed,
        held_out.len()
    );
    let mut gamma_curves: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    let mut data_n = spec.load(4096, a.seed + 3)?;
    for (name, sched) in [("VDM linear gamma", "vdm"), ("cosine log-SNR", "cosine-logsnr"), ("learned", "learned")] {
        let (mut model, _) =
            train(a, &format!("model-{sched}"), &["--data", &data, "--schedule", sched, "--t-sampling", "stratified"])?;
        let fig = figures(&mut model, &held_out, h, a.seed + 2)?;
        let c: Continuous = model.continuous().ok_or_else(|| input("not a continuous model"))??;
        // the variance of the one-sample estimate of the diffusion loss
        let mut x0 = data_n.x.clone();
        model.normalization.apply(&mut x0);
        let mut rng = Pcg32::seed_from_u64(a.seed + 4);
        let tc: Vec<f64> = (0..data_n.len()).map(|_| elbo_core::rng::uniform_f64(&mut rng)).collect();
        let mut eps = vec![0.0f32; x0.len()];
        fill_standard_normal(&mut rng, &mut eps);
        let batch = ContinuousBatch { x0: &x0, tc: &tc, eps: &eps, labels: None, bins: None };
        let r = continuous_grads(model.net.as_ref(), &model.params, &c, elbo_core::Prediction::Eps, Loss::Vlb, &batch);
        let m = r.per_example.iter().sum::<f64>() / r.per_example.len() as f64;
        let var = r.per_example.iter().map(|l| (l - m).powi(2)).sum::<f64>() / (r.per_example.len() - 1) as f64;
        let grid: Vec<(f64, f64)> = (0..=10_000).map(|i| i as f64 / 10_000.0).map(|t| (t, -c.log_snr(t))).collect();
        let monotone = grid.windows(2).all(|w| w[1].1 > w[0].1);
        let _ = writeln!(
            md,
            "| {name} | {:.4} +- {:.4} | {:.3e} | {var:.4} | {} |",
            fig.bpd.0,
            fig.bpd.1,
            fig.mmd,
            if sched == "learned" { if monotone { "yes (10 001-point grid)" } else { "NO" } } else { "-" }
        );
        if sched == "learned" && !monotone {
            return Err(Error::Internal(anyhow::anyhow!("the learned schedule is not monotone")));
        }
        gamma_curves.push((name, grid.into_iter().step_by(100).collect()));
    }
    data_n.x.clear();
    let (mut model, _) = train(a, "model-discrete", &["--data", &data, "--loss", "vlb"])?;
    let fig = figures(&mut model, &held_out, h, a.seed + 2)?;
    let _ = writeln!(
        md,
        "| discrete linear beta, T = 1000 (VLB) | {:.4} +- {:.4} | {:.3e} | - | - |",
        fig.bpd.0, fig.bpd.1, fig.mmd
    );
    crate::plot::curves(&a.out.join("gamma.png"), "gamma(t) = -log SNR(t)", "t", "gamma", &gamma_curves, false)?;
    let _ = writeln!(md, "\n![gamma](gamma.png)");
    write_report(a, &md)
}

/// The default mixture of `guidance`: three overlapping components, so that guidance has
/// something to sharpen.
fn overlapping() -> Mixture {
    Mixture {
        weights: vec![1.0; 3],
        means: vec![vec![-1.2, 0.0], vec![0.6, 1.04], vec![0.6, -1.04]],
        stds: vec![vec![0.7, 0.7]; 3],
    }
}

/// `guidance` (seed 004 eqs. 166-171): classifier-free guidance (a conditional model trained
/// with label dropout) and classifier guidance (an unconditional model and a noise-conditional
/// classifier) at a range of gamma; per-class accuracy of the exact Bayes classifier of the
/// mixture on the samples, and the samples' spread.
pub(super) fn guidance(a: &ExperimentArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out).map_err(|e| input(format!("--out {}: {e}", a.out.display())))?;
    let spec = match &a.data {
        None => {
            let path = a.out.join("mixture.json");
            crate::io::write_atomic(&path, &serde_json::to_vec_pretty(&overlapping()).map_err(anyhow::Error::from)?)?;
            format!("gmm:{}", path.display())
        }
        Some(d) => d.clone(),
    };
    let mixture = DataSpec::parse(&spec)?
        .mixture()
        .cloned()
        .ok_or_else(|| input(format!("--data {}: the guidance experiment needs a Gaussian mixture", spec)))?;
    let (mut cfg, _) = train(a, "model-cfg", &["--data", &spec, "--conditional"])?;
    let (mut unc, _) = train(a, "model-uncond", &["--data", &spec])?;
    let clf_dir = a.out.join("classifier");
    {
        if clf_dir.join("config.json").exists() {
            std::fs::remove_dir_all(&clf_dir).map_err(|e| input(format!("{}: {e}", clf_dir.display())))?;
        }
        let opts = crate::train::TrainOptions {
            data: spec.clone(),
            steps: a.steps,
            seed: a.seed,
            classifier: true,
            ..crate::train::TrainOptions::DEFAULT
        };
        opts.trainer()?.run(&clf_dir, 100, |_, _, _| {})?;
    }
    let mut clf = TrainedClassifier::load(&clf_dir)?;
    let k = mixture.weights.len();
    let per_class = (a.n / k).max(10);
    let gammas = [0.0f32, 0.5, 1.0, 2.0, 4.0, 8.0];
    let mut rows = Vec::new();
    mixture.with_core(|g| -> Result<()> {
        for method in ["classifier-free", "classifier"] {
            for &gamma in &gammas {
                let seed = a.seed + 5;
                let n = per_class * k;
                let labels: Vec<u32> = (0..k as u32).flat_map(|c| std::iter::repeat_n(c, per_class)).collect();
                let mut x = vec![0.0f32; n * 2];
                crate::noise::starts(seed, 0, 2, &mut x);
                let mut scratch = vec![0.0f32; x.len()];
                let mut buf = vec![0.0f32; x.len()];
                let cond = Condition::Class(&labels);
                let norm = if method == "classifier-free" {
                    let sched = cfg.schedule()?;
                    let mut d = ClassifierFree::new(&mut cfg, gamma, &mut buf).map_err(|e| input(format!("{e}")))?;
                    Ddpm::default()
                        .sample(&mut d, sched.as_ref(), &mut x, &mut scratch, cond, &mut crate::noise::sampler(seed, 0))
                        .map_err(crate::error::run_error)?;
                    cfg.normalization.clone()
                } else {
                    let sched = unc.schedule()?;
                    let mut d = ClassifierGuided::new(&mut unc, &mut clf, k, gamma, &mut buf)
                        .map_err(|e| input(format!("{e}")))?;
                    Ddpm::default()
                        .sample(&mut d, sched.as_ref(), &mut x, &mut scratch, cond, &mut crate::noise::sampler(seed, 0))
                        .map_err(|e| Error::Internal(anyhow::anyhow!("{e}")))?;
                    unc.normalization.clone()
                };
                norm.invert(&mut x);
                // accuracy of the Bayes classifier; spread: RMS distance to the class's sample mean
                let mut correct = 0usize;
                let mut spread = 0.0;
                for c in 0..k {
                    let rows_c = &x[c * per_class * 2..(c + 1) * per_class * 2];
                    let mean: Vec<f64> = (0..2)
                        .map(|d| rows_c.chunks_exact(2).map(|r| f64::from(r[d])).sum::<f64>() / per_class as f64)
                        .collect();
                    let ms: f64 = rows_c
                        .chunks_exact(2)
                        .map(|r| (f64::from(r[0]) - mean[0]).powi(2) + (f64::from(r[1]) - mean[1]).powi(2))
                        .sum::<f64>()
                        / per_class as f64;
                    spread += ms.sqrt() / k as f64;
                    for r in rows_c.chunks_exact(2) {
                        if g.classify(r).map_err(|e| input(format!("{e}")))? == c {
                            correct += 1;
                        }
                    }
                }
                rows.push((method, gamma, correct as f64 / n as f64, spread));
            }
        }
        Ok(())
    })??;
    // the data's own accuracy and spread
    let data = DataSpec::Mixture(mixture.clone()).load(per_class * k * 4, a.seed + 6)?;
    let labels = data.labels.clone().unwrap_or_default();
    let data_acc = mixture.with_core(|g| {
        data.x.chunks_exact(2).zip(&labels).filter(|(r, l)| g.classify(r).ok() == Some(**l as usize)).count() as f64
            / labels.len() as f64
    })?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Experiment: guidance trades diversity for adherence\n\n\
         Data: `{spec}` ({k} components). Models: a class-conditional MLP trained with label \
         dropout 0.1 (classifier-free guidance, seed 004 eq. 170), an unconditional MLP and a \
         noise-conditional classifier (`elbo train-classifier`; classifier guidance, seed 004 eq. \
         166); {} steps each, seed {}. For each gamma: {per_class} DDPM samples (1 000 steps) of \
         every class. Accuracy: the fraction the exact Bayes classifier of the mixture assigns to \
         the requested class (on data drawn from the mixture itself: {data_acc:.3}). Spread: the \
         RMS distance of a class's samples to their mean, averaged over classes.\n\n\
         Seed 004's claim: raising gamma concentrates samples where the classifier is confident, \
         raising adherence (accuracy) and lowering diversity (spread).\n\n\
         | guidance | gamma | accuracy | spread |\n|---|---|---|---|",
        a.steps, a.seed
    );
    for (m, g, acc, sp) in &rows {
        let _ = writeln!(md, "| {m} | {g} | {acc:.3} | {sp:.3} |");
    }
    let series = |col: usize| -> Vec<(&str, Vec<(f64, f64)>)> {
        ["classifier-free", "classifier"]
            .iter()
            .map(|m| {
                (
                    *m,
                    rows.iter()
                        .filter(|r| r.0 == *m)
                        .map(|r| (f64::from(r.1), if col == 0 { r.2 } else { r.3 }))
                        .collect(),
                )
            })
            .collect()
    };
    crate::plot::curves(&a.out.join("accuracy.png"), "accuracy vs gamma", "gamma", "accuracy", &series(0), false)?;
    crate::plot::curves(&a.out.join("spread.png"), "spread vs gamma", "gamma", "spread", &series(1), false)?;
    let _ = writeln!(md, "\n![accuracy](accuracy.png) ![spread](spread.png)");
    write_report(a, &md)
}

/// `vae` (seed 004 sections 1-2): a Gaussian VAE and a two-level Markovian HVAE trained by the
/// same trainer on the same data and budget, their bound next to diffusion models' (discrete
/// VLB and continuous-time VDM), with the MMD of their samples.
pub(super) fn vae(a: &ExperimentArgs) -> Result<()> {
    let data = data_of(a);
    let held_out = DataSpec::parse(&data)?.load(a.n.max(2), a.seed + 1)?;
    let dim = held_out.dim;
    let h = median_bandwidth(&held_out.x, dim);
    std::fs::create_dir_all(&a.out).map_err(|e| input(format!("--out {}: {e}", a.out.display())))?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Experiment: VAE, hierarchical VAE and diffusion on the same data\n\n\
         Data: `{data}`; {} steps each, seed {}, batch 512, the same hidden layers (3 x 128 SiLU) \
         in every network. VAE: latent 2, learned per-coordinate decoder variance; HVAE: two \
         Markovian latent levels of 2 (seed 004 eq. 27). Bounds on {} held-out points in the \
         data's own units (VAEs: 16 single-sample estimates per point; diffusion as in `vdm`). \
         MMD^2: samples against the held-out points (Gaussian kernel, bandwidth {h:.3}).\n\n\
         | model | -ELBO (bits/dim) | MMD^2 |\n|---|---|---|",
        a.steps,
        a.seed,
        held_out.len()
    );
    let per_dim = dim as f64 * std::f64::consts::LN_2;
    let mut pictures: Vec<(String, String, Vec<f32>)> = Vec::new();
    for (name, family) in [("VAE (1 level)", "vae"), ("HVAE (2 levels)", "hvae")] {
        let (c, _) = train_checkpoint(a, &format!("model-{family}"), &["--data", &data, "--family", family])?;
        let v = c.config.vae_net().ok_or_else(|| input("not a VAE checkpoint"))?;
        let (nats, se) = crate::evaluate::vae_bound(&v, &c.ema, &c.config.normalization, &held_out.x, a.seed + 2)?;
        let mut rng = Pcg32::seed_from_u64(a.seed + 3);
        let n = held_out.len();
        let mut normals = vec![0.0f32; n * (v.normals_per_example() + dim)];
        fill_standard_normal(&mut rng, &mut normals);
        let mut x = v.sample(&c.ema, n, &normals);
        c.config.normalization.invert(&mut x);
        let _ = writeln!(
            md,
            "| {name} | {:.4} +- {:.4} | {:.3e} |",
            nats / per_dim,
            se / per_dim,
            mmd2(&x, &held_out.x, dim, h)
        );
        pictures.push((format!("samples-{family}.png"), name.to_string(), x));
    }
    for (name, key, flags) in [
        ("diffusion, discrete VLB (T = 1000)", "diffusion-vlb", vec!["--loss", "vlb"]),
        (
            "diffusion, continuous time (VDM linear gamma)",
            "diffusion-vdm",
            vec!["--schedule", "vdm", "--t-sampling", "stratified"],
        ),
    ] {
        let mut f = vec!["--data", data.as_str()];
        f.extend(flags);
        let (mut model, _) = train(a, &format!("model-{key}"), &f)?;
        let fig = figures(&mut model, &held_out, h, a.seed + 2)?;
        let _ = writeln!(md, "| {name} | {:.4} +- {:.4} | {:.3e} |", fig.bpd.0, fig.bpd.1, fig.mmd);
        pictures.push((format!("samples-{key}.png"), name.to_string(), fig.samples));
    }
    // the samples of every model over the held-out points (grey)
    let _ = writeln!(md, "\nSamples (colour) over the held-out points (grey):\n");
    for (file, name, x) in &pictures {
        if dim >= 2 {
            crate::plot::scatter(&a.out.join(file), name, &held_out.x, x, dim, None)?;
            let _ = write!(md, "![{name}]({file}) ");
        }
    }
    let _ = writeln!(md);
    write_report(a, &md)
}
