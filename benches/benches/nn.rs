//! The host network and trainer: MLP forward (batch 512 and 10 000), forward + backward
//! (batch 512), and one whole training step of the default two-moons run (batch 512: data,
//! noise, forward, backward, AdamW, EMA). Threads: rayon's default (all cores) unless
//! `RAYON_NUM_THREADS` says otherwise. Run: `cargo bench -p elbo-benches --bench nn`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use elbo::nn::{Mlp, MlpConfig};
use rand_core::SeedableRng;

fn mlp(c: &mut Criterion) {
    let m = Mlp::new(MlpConfig { dim: 2, width: 128, depth: 3, embed: 32, classes: 0, out: 2 });
    let p = m.init(&mut rand_pcg::Pcg32::seed_from_u64(0));
    let mut group = c.benchmark_group("mlp");
    for n in [512usize, 10_000] {
        let x: Vec<f32> = (0..2 * n).map(|i| (i as f32 * 0.37).sin()).collect();
        let t: Vec<f32> = (0..n).map(|i| ((i * 7) % 1000) as f32).collect();
        let mut out = vec![0.0f32; 2 * n];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
            b.iter(|| m.forward(&p, &x, &t, None, &mut out))
        });
        if n == 512 {
            let lg = |_: usize, y: &[f32], g: &mut [f32]| {
                g.copy_from_slice(y);
                y.iter().map(|v| f64::from(v * v)).sum()
            };
            group.bench_with_input(BenchmarkId::new("forward_backward", n), &n, |b, _| {
                b.iter(|| m.loss_and_grad(&p, &x, &t, None, lg))
            });
        }
    }
    group.finish();
}

fn train_step(c: &mut Criterion) {
    let mut tr = elbo_benches::two_moons_trainer(1_000_000);
    let mut group = c.benchmark_group("train");
    group.throughput(Throughput::Elements(512));
    group.bench_function("step_two_moons_batch512", |b| b.iter(|| tr.step().unwrap()));
    group.finish();
}

criterion_group!(benches, mlp, train_step);
criterion_main!(benches);
