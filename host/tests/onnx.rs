//! ONNX: the exported MLP run through ONNX Runtime matches the native forward pass to 1e-5
//! (int64 and float32 timesteps, conditional models with the null class); the command line
//! reports a missing runtime and an unavailable CUDA provider as bad input.
//!
//! Needs ONNX Runtime: `./test.sh` installs onnxruntime 1.31.1 into `.local/onnxruntime`.

use assert_cmd::Command;
use elbo::model::Trained;
use elbo::onnx::{OnnxDenoiser, OnnxOpts, export};
use elbo_core::NoiseSchedule;
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};

fn opts() -> OnnxOpts {
    OnnxOpts::default()
}

fn compare(model: &mut Trained, onnx: &mut OnnxDenoiser, labels: Option<&[u32]>) {
    let sched = model.schedule().unwrap();
    let n = 37;
    let x: Vec<f32> = (0..2 * n).map(|i| ((i as f32) * 0.61).cos() * 2.0).collect();
    let mut worst = 0.0f32;
    for t in [1usize, 2, 100, 500, 1000] {
        let level = NoiseLevel::of(&sched.step(t).unwrap());
        for cond in [Condition::Unconditional, labels.map_or(Condition::Unconditional, Condition::Class)] {
            let (mut a, mut b) = (vec![0.0f32; 2 * n], vec![0.0f32; 2 * n]);
            model.predict(&x, level, cond, &mut a).unwrap();
            onnx.predict(&x, level, cond, &mut b).unwrap();
            for (p, q) in a.iter().zip(&b) {
                worst = worst.max((p - q).abs() / (1.0 + p.abs()));
            }
        }
    }
    assert!(worst < 1e-5, "worst relative difference {worst}");
}

#[test]
fn exported_models_match_the_native_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut shipped = Trained::load(&root.join("models/two-moons")).unwrap();
    for float_t in [false, true] {
        let path = dir.path().join(format!("m{float_t}.onnx"));
        std::fs::write(&path, export::onnx_bytes_with(&shipped, float_t).unwrap()).unwrap();
        let mut onnx = OnnxDenoiser::open(&path, &opts()).unwrap();
        assert_eq!(onnx.shape, vec![2]);
        assert_eq!(onnx.prediction(), elbo_core::Prediction::Eps);
        assert_eq!(onnx.normalization.as_ref(), Some(&shipped.normalization));
        assert_eq!(onnx.schedule.as_ref(), Some(&shipped.config.schedule));
        compare(&mut shipped, &mut onnx, None);
    }
    // A class-conditional model: the labels and the null class reach the graph.
    let ckpt = dir.path().join("cond");
    Command::cargo_bin("elbo")
        .unwrap()
        .args([
            "train",
            "--data",
            "two-moons",
            "--conditional",
            "--steps",
            "30",
            "--batch",
            "64",
            "--width",
            "32",
            "--out",
        ])
        .arg(&ckpt)
        .assert()
        .success();
    let mut cond = Trained::load(&ckpt).unwrap();
    let path = dir.path().join("cond.onnx");
    std::fs::write(&path, export::onnx_bytes(&cond).unwrap()).unwrap();
    let mut onnx = OnnxDenoiser::open(&path, &opts()).unwrap();
    assert_eq!(onnx.classes(), 2);
    let labels: Vec<u32> = (0..37).map(|i| i % 2).collect();
    compare(&mut cond, &mut onnx, Some(&labels));
}

#[test]
fn missing_runtime_and_unavailable_cuda_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/two-moons");
    let onnx = dir.path().join("m.onnx");
    Command::cargo_bin("elbo")
        .unwrap()
        .args(["export", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&onnx)
        .assert()
        .success();
    let out = dir.path().join("s.csv");
    let run = |env: Option<&str>, ep: &str| {
        let mut c = Command::cargo_bin("elbo").unwrap();
        c.args(["sample", "--n", "4", "--ep", ep, "--model"]).arg(&onnx).arg("--out").arg(&out);
        if let Some(v) = env {
            c.env("ORT_DYLIB_PATH", v);
        }
        c.output().unwrap()
    };
    let o = run(Some("/nonexistent/libonnxruntime.so"), "cpu");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ORT_DYLIB_PATH") && err.contains("pip install"), "{err}");
    // The CPU package has no CUDA provider: --ep cuda must fail loudly, not fall back.
    let o = run(None, "cuda");
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        // A machine with onnxruntime-gpu and a GPU: the samples were drawn on CUDA.
        assert!(out.exists());
    } else {
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("--ep cuda"), "{err}");
        assert!(!out.exists());
    }
    let o = run(None, "auto");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--ep auto: using the"));
}

/// The shipped `model.onnx` is the export of the shipped checkpoint (export is deterministic).
#[test]
fn shipped_onnx_is_the_export_of_the_shipped_checkpoint() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/two-moons");
    let model = Trained::load(&dir).unwrap();
    assert!(export::onnx_bytes(&model).unwrap() == std::fs::read(dir.join("model.onnx")).unwrap());
}
