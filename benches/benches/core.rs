//! The core's hot paths: one sampler update (elements per second, fresh Gaussian noise for
//! DDPM) and table construction. Run: `cargo bench -p elbo-benches --bench core`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use elbo_core::elbo::ReverseVariance;
use elbo_core::rng::{Counter, Noise, domain, fill_standard_normal};
use elbo_core::sampler::{Clip, DdimCoefficients, Sigma, ddim_update, ddpm_sigma, ddpm_update};
use elbo_core::schedule::{BetaSchedule, Schedule};
use elbo_core::{NoiseSchedule, Prediction};
use rand_core::SeedableRng;
use rand_pcg::Pcg32;

fn steps(c: &mut Criterion) {
    let s = Schedule::<1000>::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 1000, false).unwrap();
    let step = s.step(500).unwrap();
    let sigma = Sigma::Fixed(ddpm_sigma(&step, ReverseVariance::Small).unwrap());
    let ddim = DdimCoefficients::new(&step.cur, &s.marginal(480).unwrap(), 0.0);
    let mut group = c.benchmark_group("sampler_step");
    for n in [1usize, 1_000, 1_000_000] {
        let mut rng = Pcg32::seed_from_u64(0);
        let mut x = vec![0.0f32; n];
        let mut eps = vec![0.0f32; n];
        fill_standard_normal(&mut rng, &mut x);
        fill_standard_normal(&mut rng, &mut eps);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("ddpm_eps", n), &n, |b, _| {
            b.iter(|| {
                ddpm_update(&step, Prediction::Eps, black_box(&eps), &mut x, sigma, Clip::Off, |first, out| {
                    Counter::new(0, domain::SAMPLER).normals(0, 7, first, out)
                })
            })
        });
        group.bench_with_input(BenchmarkId::new("ddim_eps", n), &n, |b, _| {
            b.iter(|| ddim_update(&ddim, Prediction::Eps, black_box(&eps), &mut x, Clip::Off, |_, _| {}))
        });
    }
    group.finish();
}

fn tables(c: &mut Criterion) {
    let mut group = c.benchmark_group("schedule_new");
    for (name, kind) in [
        ("linear", BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }),
        ("cosine", BetaSchedule::SquaredCosCapV2),
    ] {
        group.bench_function(BenchmarkId::new(name, 1000), |b| {
            b.iter(|| Schedule::<1000>::new(black_box(&kind), 1000, false).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, steps, tables);
criterion_main!(benches);
