//! One call of an ONNX denoiser through ONNX Runtime (CPU): `OnnxDenoiser::predict` of the
//! shipped two-moons MLP at batch 1, 512 and 10 000 (input tensors, `Session::run`, output
//! checks and copy), 2 intra-op threads. `ELBO_BENCH_EP=cuda` (or `auto`) takes the CUDA
//! execution provider. Needs ONNX Runtime (see the README); without it, says so and measures
//! nothing. Run: `cargo bench -p elbo-benches --bench onnx`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use elbo::onnx::{OnnxDenoiser, OnnxOpts};
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use elbo_core::rng::fill_standard_normal;
use elbo_core::{BetaSchedule, NoiseSchedule, Schedule};
use rand_core::SeedableRng;

fn call(c: &mut Criterion) {
    let opts = OnnxOpts {
        ort_threads: Some(2),
        ep: match std::env::var("ELBO_BENCH_EP").as_deref() {
            Ok("cuda") => elbo::kinds::ExecutionProvider::Cuda,
            Ok("auto") => elbo::kinds::ExecutionProvider::Auto,
            _ => elbo::kinds::ExecutionProvider::Cpu,
        },
        ..OnnxOpts::default()
    };
    let mut den = match OnnxDenoiser::open(&elbo_benches::shipped().1, &opts) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("onnx bench skipped: {e}");
            return;
        }
    };
    let s = Schedule::<1000>::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 1000, false).unwrap();
    let level = NoiseLevel::of(&s.step(500).unwrap());
    let mut rng = rand_pcg::Pcg32::seed_from_u64(0);
    let mut group = c.benchmark_group("onnx_call");
    for n in [1usize, 512, 10_000] {
        let mut x = vec![0.0f32; 2 * n];
        fill_standard_normal(&mut rng, &mut x);
        let mut out = vec![0.0f32; 2 * n];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("predict", n), &n, |b, _| {
            b.iter(|| den.predict(&x, level, Condition::Unconditional, &mut out).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, call);
criterion_main!(benches);
