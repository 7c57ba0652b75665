//! Export refuses what its target cannot express, and everything it writes loads back in elbo
//! (continuous-time models go to ONNX as their discretisation: `trained_betas` and the mapped
//! timestep input):
//! for every model kind, `elbo export` to FILE.onnx and FILE.bin either succeeds and the file
//! samples in elbo (the blob through the device's parser and sampler), or exits 2 with one line
//! and writes nothing.

use std::path::Path;

use assert_cmd::Command;

fn elbo() -> Command {
    Command::cargo_bin("elbo").unwrap()
}

/// `(kind, train flags, ONNX expected to export, blob expected to export)`: every model kind
/// and every schedule family.
const KINDS: [(&str, &[&str], bool, bool); 13] = [
    ("eps", &["--prediction", "eps"], true, true),
    ("scaled-linear", &["--schedule", "scaled_linear", "--beta-start", "0.001", "--beta-end", "0.03"], true, true),
    ("sigmoid", &["--schedule", "sigmoid"], true, true),
    ("zero-snr-v", &["--schedule", "squaredcos_cap_v2", "--zero-terminal-snr", "--prediction", "v"], true, true),
    ("cosine-logsnr", &["--schedule", "cosine-logsnr"], true, false),
    ("x0", &["--prediction", "x0"], true, true),
    ("v", &["--prediction", "v", "--schedule", "squaredcos_cap_v2"], true, true),
    ("score", &["--prediction", "score"], true, true),
    ("conditional", &["--data", "rings", "--conditional"], true, true),
    ("learned-variance", &["--learn-variance", "--loss", "hybrid"], false, false),
    ("continuous", &["--schedule", "vdm"], true, false),
    ("learned-schedule", &["--schedule", "learned"], true, false),
    ("vae", &["--family", "vae"], false, false),
];

/// DDIM with eta 0 from the same start through the device blob and through the checkpoint:
/// they agree to 1e-4 (relative to max(1, |x|)).
fn blob_agrees_with_checkpoint(path: &Path, model: &Path) {
    use elbo_core::NoiseSchedule;
    use elbo_core::denoiser::Condition;
    use elbo_core::mlp::ModelBlob;
    use elbo_core::sampler::{Ddim, Spacing};
    use rand_core::SeedableRng;
    let bytes = std::fs::read(path).unwrap();
    let blob = ModelBlob::parse(&bytes).unwrap();
    let d = blob.shape().dim;
    let sched = blob.schedule();
    let mut start = vec![0.0f32; 8 * d];
    elbo_core::rng::fill_standard_normal(&mut rand_pcg::Pcg32::seed_from_u64(3), &mut start);
    let ddim = Ddim::new(0.0, Spacing::Trailing, 10, sched.steps()).unwrap();
    let labels = vec![1u32; 8];
    let cond = if blob.shape().classes > 0 { Condition::Class(&labels) } else { Condition::Unconditional };
    let (mut x, mut s) = (start.clone(), vec![0.0f32; 8 * d]);
    let mut rng = rand_pcg::Pcg32::seed_from_u64(4);
    ddim.sample(&mut blob.denoiser(), &sched, &mut x, &mut s, cond, &mut elbo_core::rng::Sequential(&mut rng)).unwrap();
    let mut host = elbo::model::Trained::load(model).unwrap();
    let host_sched = host.schedule().unwrap();
    let mut y = start;
    ddim.sample(&mut host, host_sched.as_ref(), &mut y, &mut s, cond, &mut elbo_core::rng::Sequential(&mut rng))
        .unwrap();
    for (a, b) in x.iter().zip(&y) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{}: blob {a}, checkpoint {b}", path.display());
    }
}

/// The largest difference between two `.npy` sample files relative to max(1, |x|).
fn npy_close(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(x.len(), y.len());
    let f =
        |v: &[u8]| v[128..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>();
    for (p, q) in f(&x).iter().zip(f(&y)) {
        assert!((p - q).abs() <= 1e-4 * q.abs().max(1.0), "{}: {p} against the checkpoint's {q}", a.display());
    }
}

#[test]
fn every_kind_exports_what_loads_back_or_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ort = elbo::onnx::find_runtime().is_ok();
    // starting points x_T: standard normal draws in two dimensions
    std::fs::write(dir.path().join("init.json"), r#"{"weights": [1], "means": [[0, 0]], "stds": [[1, 1]]}"#).unwrap();
    for (kind, flags, onnx_ok, blob_ok) in KINDS {
        let model = dir.path().join(kind);
        let mut cmd = elbo();
        cmd.args(["train", "--steps", "3", "--batch", "16", "--n-train", "100", "--width", "16", "--timesteps", "40"]);
        if !flags.contains(&"--data") {
            cmd.args(["--data", "two-moons"]);
        }
        cmd.args(flags).arg("--out").arg(&model).assert().success();
        for (ext, ok) in [("onnx", onnx_ok), ("bin", blob_ok)] {
            let out = dir.path().join(format!("{kind}.{ext}"));
            let o = elbo().args(["export", "--model"]).arg(&model).arg("--out").arg(&out).output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            if !ok {
                assert_eq!(o.status.code(), Some(2), "{kind}.{ext} should be refused: {err}");
                assert_eq!(err.trim_end().lines().count(), 1, "{kind}.{ext}: {err}");
                assert!(!out.exists(), "{kind}.{ext}: a refused export wrote a file");
                continue;
            }
            assert!(o.status.success(), "{kind}.{ext}: {err}");
            if ext == "bin" {
                blob_agrees_with_checkpoint(&out, &model);
            } else if ort {
                // the same DDIM run (eta 0, the same x_T) from the ONNX file and the checkpoint
                let init = dir.path().join(format!("{kind}-init.npy"));
                let spec = format!("gmm:{}", dir.path().join("init.json").display());
                elbo().args(["data", "--n", "8", "--data", &spec, "--out"]).arg(&init).assert().success();
                let mut runs = vec![];
                for (src, name) in [(&out, "onnx"), (&model, "ckpt")] {
                    let samples = dir.path().join(format!("{kind}-{name}.npy"));
                    let mut s = elbo();
                    s.args(["sample", "--sampler", "ddim", "--eta", "0", "--steps", "10", "--model"]).arg(src);
                    s.arg("--init").arg(&init);
                    if kind == "conditional" {
                        s.args(["--class", "1"]);
                    }
                    s.arg("--out").arg(&samples).assert().success();
                    runs.push(samples);
                }
                npy_close(&runs[0], &runs[1]);
            } else {
                eprintln!("SKIPPED loading {kind}.onnx: no ONNX Runtime found (./test.sh installs it)");
            }
        }
    }
}
