//! `elbo experiment samplers`: sample quality against the number of denoiser calls for every
//! sampler, and the bound against the probability-flow ODE's exact likelihood of the same
//! models, on two-moons (an MLP trained here with `--steps`) and the digits (the shipped
//! `models/digits-unet`, trained natively; left out with `--data two-moons`).

use std::fmt::Write as _;

use elbo_core::NoiseSchedule;
use elbo_core::denoiser::{Condition, Denoiser};

use super::{ExperimentArgs, write_report};
use crate::data::{DataSpec, Dataset};
use crate::error::{Result, input};
use crate::kinds::{SamplerKind, Split};
use crate::metrics::{median_bandwidth, mmd2};
use crate::model::Trained;
use crate::progress::{Progress, Ticking};
use crate::sampling::SamplerOptions;

/// The few-step samplers and the strided classics, in the report's order.
const SAMPLERS: [SamplerKind; 8] = [
    SamplerKind::Ddpm,
    SamplerKind::Ddim,
    SamplerKind::Dpmpp2m,
    SamplerKind::Dpmpp3m,
    SamplerKind::Unipc,
    SamplerKind::Deis,
    SamplerKind::Euler,
    SamplerKind::Heun,
];

/// One model's rows: (sampler, steps, denoiser calls, MMD^2).
type Curve = Vec<(SamplerKind, usize, u64, f64)>;

/// What samples are measured against: held-out data, how many samples, the kernel's bandwidth
/// and the seed of the samples.
struct Reference<'a> {
    held_out: &'a Dataset,
    n: usize,
    h: f64,
    seed: u64,
}

/// Samples `r.n` points with `sampler` over `k` steps and measures their MMD^2 to the held-out
/// data.
fn quality(
    model: &mut Trained,
    schedule: &dyn NoiseSchedule,
    sampler: SamplerKind,
    k: usize,
    r: &Reference<'_>,
) -> Result<(u64, f64)> {
    let (held_out, n, h, seed) = (r.held_out, r.n, r.h, r.seed);
    let so = SamplerOptions { sampler, steps: Some(k), ..SamplerOptions::default() };
    let calls = so.denoiser_calls(schedule.steps());
    let dim = model.dim();
    let mut x = vec![0.0f32; n * dim];
    crate::noise::starts(seed, 0, dim, &mut x);
    let mut noise = crate::noise::sampler(seed, 0);
    let progress = Progress::new(&format!("{sampler} {k}"), calls, "steps");
    crate::sampling::sample(
        &so,
        &mut Ticking { inner: &mut *model, progress: &progress },
        schedule,
        &mut x,
        Condition::Unconditional,
        &mut noise,
    )?;
    drop(progress);
    model.normalization.invert(&mut x);
    Ok((calls, mmd2(&x, &held_out.x, dim, h)))
}

/// The bound and the ODE NLL (nats/example, data units, with standard errors) of `held_out`.
fn bound_and_ode(model: &mut Trained, held_out: &Dataset, seed: u64, bins: Option<u32>) -> Result<[(f64, f64); 2]> {
    let schedule = model.schedule()?;
    let mut z = held_out.x.clone();
    let norm = model.normalization.clone();
    norm.apply(&mut z);
    let b = match model.continuous() {
        Some(c) => crate::evaluate::continuous_bound(&mut *model, &c?, &z, 100, bins.map(|k| k as usize), seed, 0)?,
        None => {
            let opts = elbo_core::elbo::ElboOptions {
                variance: elbo_core::elbo::ReverseVariance::Large,
                estimator: elbo_core::elbo::Estimator::RaoBlackwell,
                decoder: elbo_core::elbo::Decoder::Continuous,
            };
            crate::evaluate::bound(&mut *model, schedule.as_ref(), &z, opts, seed, 0)?
        }
    };
    let dim = model.dim();
    let o = crate::ode::OdeOptions {
        rtol: 1e-5,
        atol: 1e-5,
        probes: (dim > 16).then_some(1),
        batch: 250,
        bins: bins.map(|k| (k, 2.0 / (f64::from(k) - 1.0))),
    };
    let r = crate::ode::nll(&mut *model, schedule.as_ref(), &z, o, seed, 0, &mut |_, _| {})?;
    let ld = norm.log_det();
    let stats = |v: &[f64]| {
        let n = v.len() as f64;
        let m = v.iter().map(|e| e + ld).sum::<f64>() / n;
        let var = v.iter().map(|e| (e + ld - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        (m, (var / n).sqrt())
    };
    Ok([stats(&b.per_example), stats(&r.per_example)])
}

/// The shipped digits U-Net: beside the sources (a checkout), or under the working folder.
fn digits_model() -> Result<Trained> {
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits-unet");
    let here = std::path::Path::new("models/digits-unet");
    let dir = if built.join("config.json").is_file() { built } else { here.to_path_buf() };
    if !dir.join("config.json").is_file() {
        return Err(input(
            "experiment samplers: models/digits-unet not found (run from the repository, or give --data two-moons)",
        ));
    }
    Trained::load(&dir)
}

pub(super) fn samplers(a: &ExperimentArgs) -> Result<()> {
    let only_moons = match a.data.as_deref() {
        None => false,
        Some("two-moons") => true,
        Some(d) => {
            return Err(input(format!("--data {d}: the samplers experiment runs on two-moons (and the digits)")));
        }
    };
    let mut md = String::from(
        "# Experiment: few-step samplers against the number of denoiser calls, and the bound against the ODE\n\n\
         Sample quality is the MMD^2 (Gaussian kernel, median bandwidth) of the samples against held-out data, \
         next to that of as many draws of the data itself. Heun calls the model 2K - 1 times for K steps. \
         The last table sets the bound (-ELBO) beside the exact negative log-likelihood of the same model's \
         probability-flow ODE (RK45, rtol = atol = 1e-5; digits: Hutchinson's estimator with 1 probe and \
         uniform dequantisation over the 17 grey levels) on the same held-out points: the ELBO bounds the \
         likelihood of the model's *stochastic* reverse process, the ODE gives the exact likelihood of its \
         deterministic flow, so their difference is not a gap of one quantity (a model whose score is exact \
         has the two agree up to the bound's own gap).\n\n",
    );
    let mut plots: Vec<(String, Curve)> = vec![];
    let mut likelihoods = vec![];
    // two-moons: an MLP trained here
    {
        let (mut model, secs) = super::trained::train_for(a, "two-moons", &["--data", "two-moons"])?;
        let schedule = model.schedule()?;
        let held_out = DataSpec::parse("two-moons")?.load(a.n.max(2), a.seed + 1)?;
        let other = DataSpec::parse("two-moons")?.load(a.n.max(2), a.seed + 2)?;
        let h = median_bandwidth(&held_out.x, 2);
        let floor = mmd2(&other.x, &held_out.x, 2, h);
        let mut curve = Curve::new();
        let r = Reference { held_out: &held_out, n: a.n, h, seed: a.seed };
        for s in SAMPLERS {
            for k in [5usize, 10, 20, 50, 100] {
                let (calls, m) = quality(&mut model, schedule.as_ref(), s, k, &r)?;
                curve.push((s, k, calls, m));
            }
        }
        let (calls, m) = quality(&mut model, schedule.as_ref(), SamplerKind::Ddpm, 1000, &r)?;
        curve.push((SamplerKind::Ddpm, 1000, calls, m));
        writeln!(
            md,
            "## two-moons (MLP, {} steps, trained in {secs:.0} s; {} samples; data vs data {floor:.2e})\n",
            a.steps, a.n
        )
        .ok();
        table(&mut md, &curve);
        let mut ho = held_out.clone();
        ho.x.truncate(1000.min(a.n) * 2);
        let [b, o] = bound_and_ode(&mut model, &ho, a.seed, None)?;
        likelihoods.push(("two-moons (MLP), 1 000 held-out points".to_string(), b, o));
        plots.push(("two-moons".into(), curve));
    }
    if !only_moons {
        let mut model = digits_model()?;
        let schedule = model.schedule()?;
        let test = DataSpec::parse("digits")?.with_split(Split::Test).load(usize::MAX, a.seed)?;
        let train = DataSpec::parse("digits")?.with_split(Split::Train).load(usize::MAX, a.seed)?;
        let n = 200.min(a.n);
        let h = median_bandwidth(&test.x, test.dim);
        let mut reference = train.clone();
        reference.x.truncate(n * train.dim);
        let floor = mmd2(&reference.x, &test.x, test.dim, h);
        let mut curve = Curve::new();
        let r = Reference { held_out: &test, n, h, seed: a.seed };
        for s in SAMPLERS {
            for k in [5usize, 10, 20, 50] {
                let (calls, m) = quality(&mut model, schedule.as_ref(), s, k, &r)?;
                curve.push((s, k, calls, m));
            }
        }
        writeln!(
            md,
            "## digits (models/digits-unet; {n} samples against the 297 held-out digits; {n} training digits against them: {floor:.2e})\n"
        )
        .ok();
        table(&mut md, &curve);
        let mut ho = test.clone();
        ho.x.truncate(16 * test.dim);
        let [b, o] = bound_and_ode(&mut model, &ho, a.seed, Some(17))?;
        likelihoods.push(("digits (U-Net), 16 held-out digits, 17 levels".to_string(), b, o));
        plots.push(("digits".into(), curve));
    }
    md.push_str("## The bound and the ODE's likelihood (nats/example)\n\n| model | -ELBO | ODE NLL |\n|---|---|---|\n");
    for (name, b, o) in &likelihoods {
        writeln!(md, "| {name} | {:.4} +- {:.4} | {:.4} +- {:.4} |", b.0, b.1, o.0, o.1).ok();
    }
    md.push('\n');
    for (name, curve) in &plots {
        let series: Vec<(String, Vec<(f64, f64)>)> = SAMPLERS
            .iter()
            .map(|s| {
                let pts = curve.iter().filter(|r| r.0 == *s).map(|r| ((r.2 as f64).log10(), r.3)).collect();
                (s.to_string(), pts)
            })
            .collect();
        let series: Vec<(&str, Vec<(f64, f64)>)> = series.iter().map(|(l, p)| (l.as_str(), p.clone())).collect();
        let file = format!("mmd-{name}.png");
        crate::plot::curves(
            &a.out.join(&file),
            &format!("{name}: MMD^2 against denoiser calls"),
            "log10 denoiser calls",
            "MMD^2",
            &series,
            true,
        )?;
        writeln!(md, "![{name}]({file})\n").ok();
    }
    write_report(a, &md)
}

fn table(md: &mut String, curve: &Curve) {
    md.push_str("| sampler | steps | denoiser calls | MMD^2 |\n|---|---|---|---|\n");
    for (s, k, calls, m) in curve {
        writeln!(md, "| {s} | {k} | {calls} | {m:.3e} |").ok();
    }
    md.push('\n');
}
