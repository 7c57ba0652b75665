//! Sampling with an ONNX denoiser through ONNX Runtime (CPU): time per denoiser call and per
//! DDPM step (call + update with fresh noise) at batch 1, 512 and 10 000, and the share of a
//! step spent outside `Session::run`. The model is the shipped two-moons MLP (`model.onnx`).
//! Medians over repeated runs. Run: `cargo bench -p elbo-benches --bench onnx_sampling`.

use std::time::{Duration, Instant};

use elbo::onnx::{OnnxDenoiser, OnnxOpts};
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use elbo_core::elbo::ReverseVariance;
use elbo_core::rng::{fill_standard_normal, standard_normal};
use elbo_core::sampler::{Sigma, ddpm_sigma, ddpm_update};
use elbo_core::{BetaSchedule, NoiseSchedule, Schedule};
use rand_core::SeedableRng;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/two-moons/model.onnx");
    let threads = std::env::var("ELBO_BENCH_THREADS").ok().and_then(|t| t.parse().ok());
    let opts = OnnxOpts {
        ep: std::env::var("ELBO_BENCH_EP").unwrap_or_else(|_| "cpu".into()),
        ort_threads: threads,
        ..OnnxOpts::default()
    };
    let mut den = OnnxDenoiser::open(&model, &opts).expect("the model opens (is ONNX Runtime installed? see README)");
    let s = Schedule::<1000>::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 1000, false).unwrap();
    let mut rng = rand_pcg::Pcg32::seed_from_u64(0);
    println!("| batch | denoiser call | DDPM step (call + update) | outside Session::run |");
    println!("|---|---|---|---|");
    for n in [1usize, 512, 10_000] {
        let mut x = vec![0.0f32; 2 * n];
        let mut pred = vec![0.0f32; 2 * n];
        fill_standard_normal(&mut rng, &mut x);
        let reps = if n == 10_000 { 200 } else { 2000 };
        let (mut calls, mut steps) = (Vec::new(), Vec::new());
        let mut run_total = Duration::ZERO;
        let mut step_total = Duration::ZERO;
        for r in 0..reps {
            let t = 1000 - (r % 999);
            let step = s.step(t).unwrap();
            let level = NoiseLevel::of(&step);
            let c0 = Instant::now();
            den.predict(&x, level, Condition::Unconditional, &mut pred).unwrap();
            calls.push(c0.elapsed());
            let before = den.run_time;
            let s0 = Instant::now();
            den.predict(&x, level, Condition::Unconditional, &mut pred).unwrap();
            let sigma = Sigma::Fixed(ddpm_sigma(&step, ReverseVariance::Small).unwrap());
            ddpm_update(&step, den.prediction(), &pred, &mut x, sigma, None, || standard_normal(&mut rng)).unwrap();
            let el = s0.elapsed();
            steps.push(el);
            step_total += el;
            run_total += den.run_time - before;
            if x.iter().any(|v| !v.is_finite()) {
                fill_standard_normal(&mut rng, &mut x);
            }
        }
        let outside = 1.0 - run_total.as_secs_f64() / step_total.as_secs_f64();
        println!(
            "| {n} | {:.1} us | {:.1} us | {:.1}% |",
            median(calls).as_secs_f64() * 1e6,
            median(steps).as_secs_f64() * 1e6,
            100.0 * outside
        );
    }
    println!(
        "\nprovider: {}; ONNX Runtime threads: {}",
        den.provider,
        threads.map_or("default".into(), |t: usize| t.to_string())
    );
}
