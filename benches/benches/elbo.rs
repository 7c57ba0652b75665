//! The full bound in the core: `neg_elbo` (T = 1000, Rao-Blackwellised, one draw of `x_t` per
//! example and timestep) with the exact denoiser of a two-component mixture, so that the time
//! is the core's own (the denoiser is a few operations per example).
//! Run: `cargo bench -p elbo-benches --bench elbo`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use elbo_core::denoiser::Condition;
use elbo_core::elbo::{Decoder, ElboOptions, ElboOutput, ElboScratch, Estimator, ReverseVariance, neg_elbo};
use elbo_core::gmm::{GaussianMixture, OptimalDenoiser};
use elbo_core::rng::fill_standard_normal;
use elbo_core::{BetaSchedule, Schedule};
use rand_core::SeedableRng;
use rand_pcg::Pcg32;

fn bound(c: &mut Criterion) {
    let s = Box::new(Schedule::<1000>::new(&BetaSchedule::SquaredCosCapV2, 1000, false).unwrap());
    let (w, m, sd) = ([0.5f32, 0.5], [-1.0f32, 0.5, 1.0, -0.5], [0.3f32, 0.3, 0.3, 0.3]);
    let mut den = OptimalDenoiser::new(GaussianMixture::new(2, &w, &m, &sd).unwrap());
    let n = 256;
    let mut rng = Pcg32::seed_from_u64(0);
    let mut x = vec![0.0f32; 2 * n];
    fill_standard_normal(&mut rng, &mut x);
    let (mut xt, mut eps, mut pred) = (vec![0.0; 2 * n], vec![0.0; 2 * n], vec![0.0; 2 * n]);
    let (mut per_example, mut per_step) = (vec![0.0; n], vec![0.0; 1000]);
    let opts = ElboOptions {
        variance: ReverseVariance::Small,
        estimator: Estimator::RaoBlackwell,
        decoder: Decoder::Continuous,
    };
    let mut group = c.benchmark_group("neg_elbo");
    group.throughput(Throughput::Elements((n * 1000) as u64));
    group.sample_size(20);
    group.bench_function("gmm_exact_T1000_n256", |b| {
        b.iter(|| {
            neg_elbo(
                &mut den,
                &*s,
                &x,
                Condition::Unconditional,
                opts,
                &mut elbo_core::rng::Sequential(&mut rng),
                ElboScratch { xt: &mut xt, eps: &mut eps, pred: &mut pred, var: &mut [] },
                ElboOutput { per_example: &mut per_example, per_step: &mut per_step, per_term: &mut [] },
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bound);
criterion_main!(benches);
