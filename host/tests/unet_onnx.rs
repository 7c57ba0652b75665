//! The U-Net's ONNX export computes the native network's function: a model with random weights
//! everywhere (no zero-initialised layer left), exported by `elbo export`, run by ONNX Runtime,
//! agrees with the native forward to 1e-5 (relative to the largest output), for a conditional
//! model with attention and Fourier features, at several noise levels.

use assert_cmd::Command;
use elbo::train::{TrainOptions, UNetOptions};
use elbo_core::NoiseSchedule;
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use rand_core::SeedableRng;

/// A discrete, class-conditional model.
#[test]
fn exported_unet_matches_the_native_forward() {
    let mut opts = small();
    opts.conditional = true;
    check(opts, &[0, 3, 9, 10, 5]);
}

/// A continuous-time model with VDM's learned schedule: the graph maps its 0-based timestep
/// `k` to `tau = 1000 (k + 1) / T`, and the file's `trained_betas` give the native
/// discretisation's table (to 1e-6).
#[test]
fn exported_continuous_unet_matches_the_native_forward() {
    let mut opts = small();
    opts.schedule.schedule = elbo::kinds::ScheduleKind::Learned;
    check(opts, &[]);
}

fn small() -> TrainOptions {
    let mut opts = TrainOptions {
        data: "digits".into(),
        steps: 1,
        batch: 8,
        checkpoint_every: 1,
        embed: 8,
        unet: UNetOptions { channels: Some(8), blocks: 1, groups: 4, ..UNetOptions::DEFAULT },
        ..TrainOptions::DEFAULT
    };
    opts.schedule.timesteps = 50;
    opts
}

fn check(opts: TrainOptions, labels: &[u32]) {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("m");
    let mut t = opts.trainer().unwrap();
    let mut rng = rand_pcg::Pcg32::seed_from_u64(9);
    let mut noise = vec![0.0f32; t.ckpt.params.len()];
    elbo_core::rng::fill_standard_normal(&mut rng, &mut noise);
    for (p, z) in t.ckpt.params.iter_mut().zip(&noise) {
        *p += 0.2 * z;
    }
    t.ckpt.ema = t.ckpt.params.clone();
    t.ckpt.save(&ckpt).unwrap();
    let onnx = dir.path().join("m.onnx");
    Command::cargo_bin("elbo")
        .unwrap()
        .args(["export", "--model"])
        .arg(&ckpt)
        .arg("--out")
        .arg(&onnx)
        .assert()
        .success();

    let mut native = elbo::model::Trained::load(&ckpt).unwrap();
    let mut ort = elbo::onnx::OnnxDenoiser::open(&onnx, &elbo::onnx::OnnxOpts::default()).unwrap();
    let sched = native.schedule().unwrap();
    let n = 5;
    let mut x = vec![0.0f32; n * 64];
    elbo_core::rng::fill_standard_normal(&mut rng, &mut x);
    let ort_sched = elbo::model::build_schedule(ort.schedule.as_ref().expect("the file's schedule")).unwrap();
    for t in [1, 17, 50] {
        let level = NoiseLevel::of(&sched.step(t).unwrap());
        let other = NoiseLevel::of(&ort_sched.step(t).unwrap());
        assert!((level.sqrt_abar - other.sqrt_abar).abs() <= 1e-6, "t {t}: {level:?} vs {other:?}");
        assert!(
            (level.sqrt_one_minus_abar - other.sqrt_one_minus_abar).abs() <= 1e-6 * level.sqrt_one_minus_abar.max(1e-3)
        );
        let conds = if labels.is_empty() {
            vec![Condition::Unconditional]
        } else {
            vec![Condition::Class(labels), Condition::Unconditional]
        };
        for cond in conds {
            let (mut a, mut b) = (vec![0.0f32; n * 64], vec![0.0f32; n * 64]);
            native.predict(&x, level, cond, &mut a).unwrap();
            ort.predict(&x, level, cond, &mut b).unwrap();
            let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-5 * scale, "t {t}: largest difference {worst}, scale {scale}");
            assert!(a.iter().any(|v| v.abs() > 1e-3), "the outputs are not trivial");
        }
    }
}

/// The shipped U-Nets' `model.onnx` are the exports of the shipped weights (the cards'
/// commands), byte for byte, and ONNX Runtime runs them as the native forward does (to 1e-5 of
/// the largest output) at three noise levels.
#[test]
fn shipped_unet_onnx_files_are_the_exports_of_their_weights() {
    for name in ["digits-unet", "mnist5k-unet"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(name);
        let mut model = elbo::model::Trained::load(&dir).unwrap();
        let bytes = elbo::onnx::export::onnx_bytes(&model).unwrap();
        let file = dir.join("model.onnx");
        assert!(bytes == std::fs::read(&file).unwrap(), "{name}: re-export differs from the shipped file");
        let mut ort = elbo::onnx::OnnxDenoiser::open(&file, &elbo::onnx::OnnxOpts::default()).unwrap();
        let sched = model.schedule().unwrap();
        let d = model.net.dim();
        let mut x = vec![0.0f32; 4 * d];
        elbo_core::rng::fill_standard_normal(&mut rand_pcg::Pcg32::seed_from_u64(3), &mut x);
        for t in [1, 500, sched.steps()] {
            let level = NoiseLevel::of(&sched.step(t).unwrap());
            let (mut a, mut b) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
            model.predict(&x, level, Condition::Unconditional, &mut a).unwrap();
            ort.predict(&x, level, Condition::Unconditional, &mut b).unwrap();
            let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-5 * scale, "{name}, t {t}: largest difference {worst}, scale {scale}");
        }
    }
}
