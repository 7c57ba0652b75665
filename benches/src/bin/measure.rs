//! Our side of the comparison with the peers: one workload per call, printed as one JSON object
//! (times in seconds, medians over repetitions). `benches/compare.py` runs it alternately with
//! `benches/peers/peers.py` and writes `benches/RESULTS.md`.
//!
//! ```text
//! measure train      --threads N [--reps R]          training steps of the default two-moons run
//! measure step       --n ELEMENTS [--threads N]       one DDPM and one DDIM update (eps prediction)
//! measure bandwidth                                    STREAM-style triad over 3 x 64 MiB
//! measure onnx-sample --batch B --threads N           1000-step DDPM sampling with the shipped ONNX MLP
//! measure forward    --batch B --threads N            native MLP forward of the shipped weights
//! measure bound      --data FILE.npy --threads N      the full bound, T = 1000, with the ONNX MLP
//! measure unet-train --data digits|mnist5k --threads N  training steps of the default U-Net, batch 64
//! measure unet-scaling --data digits|mnist5k --threads N [--rounds R]  the same steps on 1 and N
//!                                                      threads in alternating blocks of one process
//! measure unet-forward --model DIR --batch B --threads N  the native forward of a U-Net checkpoint
//! measure dpm-sample --batch B --threads N           10-step DPM-Solver++ 2M sampling with the ONNX MLP
//! measure ode        --data FILE.npy --threads N      the probability-flow ODE's NLL (RK45, rtol = atol =
//!                                                      1e-5, exact divergence) with the ONNX MLP
//! measure mmd        FILE                              MMD^2 of two-moons points (rows "x y") against
//!                                                      2 000 draws of the data, and the mean of that
//!                                                      of 8 draws of as many data points (the floor)
//! ```

use std::time::{Duration, Instant};

/// The allocator of the `elbo` binary (host/src/main.rs), so that the figures are its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use elbo::onnx::{OnnxDenoiser, OnnxOpts};
use elbo_benches::{median, shipped, times, two_moons_trainer};
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use elbo_core::elbo::{Decoder, ElboOptions, ElboOutput, ElboScratch, Estimator, ReverseVariance, neg_elbo};
use elbo_core::rng::{Counter, Noise, domain, fill_standard_normal};
use elbo_core::sampler::{Clip, DdimCoefficients, Sigma, ddim_update, ddpm_sigma, ddpm_update};
use elbo_core::{BetaSchedule, NoiseSchedule, Prediction, Schedule};
use rand_core::SeedableRng;
use rand_pcg::Pcg32;
use serde_json::json;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: not a valid value")))
        .unwrap_or(default)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool")
}

fn onnx(threads: usize) -> OnnxDenoiser {
    let opts = OnnxOpts { ort_threads: Some(threads), ..OnnxOpts::default() };
    OnnxDenoiser::open(&shipped().1, &opts).expect("the shipped model opens (is ONNX Runtime installed? see README)")
}

fn linear() -> Box<Schedule<1000>> {
    Box::new(Schedule::<1000>::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 1000, false).unwrap())
}

fn train(args: &[String]) -> serde_json::Value {
    let threads = arg(args, "--threads", 1usize);
    let reps = arg(args, "--reps", 200usize);
    pool(threads).install(|| {
        let mut tr = two_moons_trainer(100_000);
        for _ in 0..20 {
            tr.step().unwrap();
        }
        let t = median(times(reps, || {
            tr.step().unwrap();
        }));
        json!({"work": "train", "threads": threads, "step_s": secs(t), "examples_per_s": 512.0 / secs(t)})
    })
}

fn step(args: &[String]) -> serde_json::Value {
    let n = arg(args, "--n", 1000usize);
    let reps = arg(args, "--reps", if n >= 100_000 { 200 } else { 20_000 });
    let s = linear();
    let st = s.step(500).unwrap();
    let sigma = Sigma::Fixed(ddpm_sigma(&st, ReverseVariance::Small).unwrap());
    let ddim = DdimCoefficients::new(&st.cur, &s.marginal(480).unwrap(), 0.0);
    let mut rng = Pcg32::seed_from_u64(0);
    let (mut x, mut eps) = (vec![0.0f32; n], vec![0.0f32; n]);
    fill_standard_normal(&mut rng, &mut x);
    fill_standard_normal(&mut rng, &mut eps);
    let x_init = x.clone();
    // elbo's update of one example: the core's update with the counter-based noise made wide
    // (one thread), and the same bits on every thread (elbo::noise::par_ddpm_update)
    let counter = Counter::new(0, domain::SAMPLER);
    let mut wide = elbo::noise::Wide(counter);
    let ddpm = median(times(reps, || {
        ddpm_update(&st, Prediction::Eps, std::hint::black_box(&eps), &mut x, sigma, Clip::Off, |first, out| {
            wide.normals(0, 7, first, out)
        })
        .unwrap();
        if n >= 100_000 {
            x.copy_from_slice(&x_init);
        }
    }));
    let one_thread = x.clone();
    let Sigma::Fixed(sd) = sigma else { unreachable!() };
    let ddpm_par = median(times(reps, || {
        elbo::noise::par_ddpm_update(&st, Prediction::Eps, std::hint::black_box(&eps), &mut x, sd, counter, 0, 7)
            .unwrap();
        if n >= 100_000 {
            x.copy_from_slice(&x_init);
        }
    }));
    if n >= 100_000 {
        // the last timed run of each left x_init + one update: the same bits
        let mut a = x_init.clone();
        ddpm_update(&st, Prediction::Eps, &eps, &mut a, sigma, Clip::Off, |f, o| wide.normals(0, 7, f, o)).unwrap();
        let mut b = x_init.clone();
        elbo::noise::par_ddpm_update(&st, Prediction::Eps, &eps, &mut b, sd, counter, 0, 7).unwrap();
        assert_eq!(a, b, "the threaded update differs from the one-thread update");
        let _ = one_thread;
    }
    // (the reset copy is timed with the update at large n: subtract its own median)
    let reset = if n >= 100_000 {
        median(times(reps, || x.copy_from_slice(std::hint::black_box(&x_init))))
    } else {
        Duration::ZERO
    };
    let ddim_t = median(times(reps, || {
        ddim_update(&ddim, Prediction::Eps, std::hint::black_box(&eps), &mut x, Clip::Off, |_, _| {}).unwrap();
    }));
    // the DDPM update's share that is drawing the noise (one thread, and every thread)
    let mut z = vec![0.0f32; n];
    let noise = median(times(reps, || wide.normals(0, 7, 0, &mut z)));
    let noise_par = median(times(reps, || elbo::noise::par_normals(counter, 0, 7, 0, &mut z)));
    // and the floor under any transform of a caller-supplied generator: its raw 32-bit draws
    // (one per normal at the least), one after another as its state dictates
    let mut bits = vec![0u32; n];
    let raw = median(times(reps, || bits.iter_mut().for_each(|b| *b = rand_core::Rng::next_u32(&mut rng))));
    std::hint::black_box(&bits);
    json!({"work": "step", "n": n, "ddpm_s": secs(ddpm.saturating_sub(reset)), "ddim_s": secs(ddim_t),
           "ddpm_par_s": secs(ddpm_par.saturating_sub(reset)), "noise_par_s": secs(noise_par),
           "threads": rayon::current_num_threads(), "noise_s": secs(noise), "bits_s": secs(raw)})
}

fn bandwidth() -> serde_json::Value {
    let n = 16 << 20;
    let (a, b) = (vec![1.0f32; n], vec![2.0f32; n]);
    let mut c = vec![0.0f32; n];
    let t = median(times(21, || {
        for ((c, &a), &b) in c.iter_mut().zip(std::hint::black_box(&a)).zip(&b) {
            *c = a + 0.5 * b;
        }
        std::hint::black_box(&mut c);
    }));
    json!({"work": "bandwidth", "bytes_per_s": 12.0 * n as f64 / secs(t)})
}

fn onnx_sample(args: &[String]) -> serde_json::Value {
    let batch = arg(args, "--batch", 1usize);
    let threads = arg(args, "--threads", 1usize);
    let steps = arg(args, "--steps", 1000usize);
    let mut den = onnx(threads);
    let s = linear();
    let mut rng = Pcg32::seed_from_u64(0);
    let (mut x, mut pred) = (vec![0.0f32; 2 * batch], vec![0.0f32; 2 * batch]);
    let mut run = || {
        fill_standard_normal(&mut rng, &mut x);
        let before = den.run_time;
        let start = Instant::now();
        for t in (1..=steps).rev() {
            let st = s.step(t).unwrap();
            den.predict(&x, NoiseLevel::of(&st), Condition::Unconditional, &mut pred).unwrap();
            let sigma = Sigma::Fixed(ddpm_sigma(&st, ReverseVariance::Small).unwrap());
            ddpm_update(&st, den.prediction(), &pred, &mut x, sigma, Clip::Off, |_, z: &mut [f32]| {
                fill_standard_normal(&mut rng, z)
            })
            .unwrap();
        }
        (start.elapsed(), den.run_time - before)
    };
    run();
    let mut all: Vec<(Duration, Duration)> = (0..3).map(|_| run()).collect();
    all.sort();
    let (total, inside) = all[1];
    json!({"work": "onnx-sample", "batch": batch, "threads": threads, "step_s": secs(total) / steps as f64,
           "outside_run": 1.0 - secs(inside) / secs(total)})
}

/// 10 steps of DPM-Solver++ 2M (diffusers' defaults: linspace, lower_order_final) with the
/// shipped ONNX MLP: the whole run, median of 5 after a warm-up.
fn dpm_sample(args: &[String]) -> serde_json::Value {
    let batch = arg(args, "--batch", 1usize);
    let threads = arg(args, "--threads", 1usize);
    let steps = arg(args, "--steps", 10usize);
    let mut den = onnx(threads);
    let s = linear();
    let dpm = elbo_core::sampler::DpmSolverPP::new(2, elbo_core::sampler::Spacing::Linspace, steps, 1000, 0).unwrap();
    let mut rng = Pcg32::seed_from_u64(0);
    let (mut x, mut scratch, mut history) = (vec![0.0f32; 2 * batch], vec![0.0f32; 2 * batch], vec![0.0f32; 2 * batch]);
    let mut run = || {
        fill_standard_normal(&mut rng, &mut x);
        let start = Instant::now();
        dpm.sample(&mut den, s.as_ref(), &mut x, &mut scratch, &mut history, Condition::Unconditional).unwrap();
        start.elapsed()
    };
    run();
    let t = median((0..5).map(|_| run()).collect());
    json!({"work": "dpm-sample", "batch": batch, "threads": threads, "steps": steps, "run_s": secs(t)})
}

/// The ODE likelihood of the points of `--data` (normalised as the model says) with the shipped
/// ONNX MLP, as `elbo eval --likelihood ode` computes it: batches of 250, exact divergence.
fn ode(args: &[String]) -> serde_json::Value {
    let threads = arg(args, "--threads", 1usize);
    let path: String = arg(args, "--data", String::new());
    let native = args.iter().any(|a| a == "--native");
    let data = elbo::data::load_file(std::path::Path::new(&path)).expect("--data FILE.npy");
    let mut z = data.x.clone();
    let s = linear();
    let o = elbo::ode::OdeOptions { rtol: 1e-5, atol: 1e-5, probes: None, batch: 250, bins: None };
    let mut inside = None;
    let (r, t) = if native {
        // the same weights, the native forward (the checkpoint's EMA weights)
        let mut den = elbo::model::Trained::load(&shipped().0).expect("the shipped checkpoint loads");
        den.normalization.apply(&mut z);
        pool(threads).install(|| {
            let start = Instant::now();
            let r = elbo::ode::nll(&mut den, s.as_ref(), &z, o, 0, 0, &mut |_, _| {}).unwrap();
            (r, start.elapsed())
        })
    } else {
        let mut den = onnx(threads);
        if let Some(nm) = &den.normalization {
            nm.apply(&mut z);
        }
        let start = Instant::now();
        let r = elbo::ode::nll(&mut den, s.as_ref(), &z, o, 0, 0, &mut |_, _| {}).unwrap();
        inside = Some(secs(den.run_time));
        (r, start.elapsed())
    };
    let mean = r.per_example.iter().sum::<f64>() / r.per_example.len() as f64;
    json!({"work": "ode", "threads": threads, "native": native, "n": r.per_example.len(), "ode_s": secs(t),
           "nfe": r.nfe, "nll_normalised": mean, "model_s": inside})
}

fn forward(args: &[String]) -> serde_json::Value {
    let batch = arg(args, "--batch", 10_000usize);
    let threads = arg(args, "--threads", 1usize);
    let reps = arg(args, "--reps", 200usize);
    let mut model = elbo::model::Trained::load(&shipped().0).expect("the shipped checkpoint loads");
    let s = model.schedule().unwrap();
    let level = NoiseLevel::of(&s.step(500).unwrap());
    let mut rng = Pcg32::seed_from_u64(0);
    let (mut x, mut out) = (vec![0.0f32; 2 * batch], vec![0.0f32; 2 * batch]);
    fill_standard_normal(&mut rng, &mut x);
    pool(threads).install(|| {
        model.predict(&x, level, Condition::Unconditional, &mut out).unwrap();
        let t = median(times(reps, || model.predict(&x, level, Condition::Unconditional, &mut out).unwrap()));
        json!({"work": "forward", "batch": batch, "threads": threads, "native_s": secs(t)})
    })
}

fn bound(args: &[String]) -> serde_json::Value {
    let threads = arg(args, "--threads", 1usize);
    let path: String = arg(args, "--data", String::new());
    let data = elbo::data::load_file(std::path::Path::new(&path)).expect("--data: a .npy file of 2-D points");
    let mut den = onnx(threads);
    let mut x = data.x.clone();
    den.normalization.clone().expect("the shipped model is normalised").apply(&mut x);
    let s = linear();
    let n = x.len() / 2;
    let opts = ElboOptions {
        variance: ReverseVariance::Small,
        estimator: Estimator::RaoBlackwell,
        decoder: Decoder::Continuous,
    };
    let mut rng = Pcg32::seed_from_u64(0);
    let (mut xt, mut eps, mut pred) = (vec![0.0; x.len()], vec![0.0; x.len()], vec![0.0; x.len()]);
    let (mut per_example, mut per_step) = (vec![0.0; n], vec![0.0; 1000]);
    let mut value = 0.0;
    let mut run = || {
        let start = Instant::now();
        let parts = neg_elbo(
            &mut den,
            &*s,
            &x,
            Condition::Unconditional,
            opts,
            &mut elbo_core::rng::Sequential(&mut rng),
            ElboScratch { xt: &mut xt, eps: &mut eps, pred: &mut pred, var: &mut [] },
            ElboOutput { per_example: &mut per_example, per_step: &mut per_step, per_term: &mut [] },
        )
        .unwrap();
        value = parts.total;
        start.elapsed()
    };
    run();
    let t = median((0..3).map(|_| run()).collect());
    // nats per example of the normalised data -> bits/dim
    json!({"work": "bound", "n": n, "threads": threads, "bound_s": secs(t), "bpd_normalised": value / (2.0 * std::f64::consts::LN_2)})
}

/// The largest resident memory of this process so far (`VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A fresh `elbo train --data DATA --schedule learned --batch 64` (`--data`: digits or mnist5k).
fn unet_trainer(args: &[String]) -> elbo::train::Trainer {
    let data: String = arg(args, "--data", "digits".to_string());
    let mut opts = elbo::train::TrainOptions { data, steps: 100_000, batch: 64, ..elbo::train::TrainOptions::DEFAULT };
    opts.schedule.schedule = elbo::kinds::ScheduleKind::Learned;
    opts.trainer().expect("the built-in image data")
}

/// Steps of `elbo train --data DATA --schedule learned --batch 64` (the default U-Net for the
/// image size: the architecture of benches/peers/unet.py), median over steps after a warm-up.
fn unet_train(args: &[String]) -> serde_json::Value {
    let threads = arg(args, "--threads", 1usize);
    let reps = arg(args, "--reps", 20usize);
    pool(threads).install(|| {
        let mut tr = unet_trainer(args);
        for _ in 0..3 {
            tr.step().unwrap();
        }
        let t = median(times(reps, || {
            tr.step().unwrap();
        }));
        json!({"work": "unet-train", "threads": threads, "step_s": secs(t), "examples_per_s": 64.0 / secs(t),
               "params": tr.net.n_params(), "peak_rss_mib": peak_rss_mib()})
    })
}

/// Thread scaling of `unet-train`'s steps, measured in one process: blocks of 4 steps on one
/// thread and on `--threads`, alternating for `--rounds` rounds (the first step of a block is
/// not timed). A slow spell of the machine then falls on both sides of a round instead of on a
/// whole run of one of them; the scaling is the median over rounds of the ratio of the blocks'
/// median step times.
fn unet_scaling(args: &[String]) -> serde_json::Value {
    let threads = arg(args, "--threads", 2usize);
    let rounds = arg(args, "--rounds", 8usize);
    let (one, many) = (pool(1), pool(threads));
    let mut tr = unet_trainer(args);
    let mut block = |p: &rayon::ThreadPool| {
        p.install(|| {
            tr.step().unwrap();
            median(times(3, || {
                tr.step().unwrap();
            }))
        })
    };
    block(&many);
    let (mut t1, mut tn, mut ratios) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        let (a, b) = (block(&one), block(&many));
        ratios.push(a.as_secs_f64() / b.as_secs_f64());
        t1.push(a);
        tn.push(b);
    }
    ratios.sort_by(f64::total_cmp);
    json!({"work": "unet-scaling", "threads": threads, "rounds": rounds, "scaling": ratios[rounds / 2],
           "ratios": ratios, "examples_per_s_1": 64.0 / secs(median(t1)), "examples_per_s_n": 64.0 / secs(median(tn))})
}

/// The native forward of a U-Net checkpoint on a batch of standard normals at t = T / 2.
fn unet_forward(args: &[String]) -> serde_json::Value {
    let batch = arg(args, "--batch", 64usize);
    let threads = arg(args, "--threads", 1usize);
    let reps = arg(args, "--reps", 50usize);
    let dir: String = arg(args, "--model", String::new());
    let mut model = elbo::model::Trained::load(std::path::Path::new(&dir)).expect("--model: a checkpoint");
    let s = model.schedule().unwrap();
    let level = NoiseLevel::of(&s.step(s.steps() / 2).unwrap());
    let d = model.net.dim();
    let mut rng = Pcg32::seed_from_u64(0);
    let (mut x, mut out) = (vec![0.0f32; d * batch], vec![0.0f32; d * batch]);
    fill_standard_normal(&mut rng, &mut x);
    pool(threads).install(|| {
        model.predict(&x, level, Condition::Unconditional, &mut out).unwrap();
        let t = median(times(reps, || model.predict(&x, level, Condition::Unconditional, &mut out).unwrap()));
        json!({"work": "unet-forward", "batch": batch, "threads": threads, "native_s": secs(t)})
    })
}

/// MMD^2 (the median-heuristic Gaussian kernel of `elbo eval`) of the points in a text file
/// against the two-moons data, as `elbo eval` reports it for generated sets.
fn mmd(args: &[String]) -> serde_json::Value {
    let path = args.get(1).expect("measure mmd FILE");
    let text = std::fs::read_to_string(path).expect("readable FILE");
    let x: Vec<f32> = text
        .lines()
        .filter(|l| l.split_whitespace().count() == 2)
        .flat_map(|l| l.split_whitespace().map(|v| v.parse::<f32>().expect("numbers")).collect::<Vec<_>>())
        .collect();
    let spec = elbo::data::DataSpec::parse("two-moons").unwrap();
    // the reference draw (not the training set, which is seed 0's), and the floor: the mean over
    // 8 other draws of as many data points as there are samples
    let data = spec.load(2000, 12_345).unwrap();
    let h = elbo::metrics::median_bandwidth(&data.x, 2);
    let floor =
        (1..=8u64).map(|s| elbo::metrics::mmd2(&spec.load(x.len() / 2, s).unwrap().x, &data.x, 2, h)).sum::<f64>()
            / 8.0;
    json!({"work": "mmd", "points": x.len() / 2, "mmd2": elbo::metrics::mmd2(&x, &data.x, 2, h),
           "mmd2_data_vs_data": floor})
}

fn main() {
    elbo::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.first().map(String::as_str) {
        Some("train") => train(&args),
        Some("step") => step(&args),
        Some("bandwidth") => bandwidth(),
        Some("onnx-sample") => onnx_sample(&args),
        Some("forward") => forward(&args),
        Some("bound") => bound(&args),
        Some("unet-train") => unet_train(&args),
        Some("unet-scaling") => unet_scaling(&args),
        Some("unet-forward") => unet_forward(&args),
        Some("mmd") => mmd(&args),
        Some("dpm-sample") => dpm_sample(&args),
        Some("ode") => ode(&args),
        _ => {
            eprintln!(
                "usage: measure train|step|bandwidth|onnx-sample|forward|bound|unet-train|unet-scaling|unet-forward|mmd|dpm-sample|ode [flags] (see the source's header)"
            );
            std::process::exit(2);
        }
    };
    println!("{out}");
}
