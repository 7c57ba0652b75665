//! Export refuses what its target cannot express, and everything it writes loads back in elbo:
//! for every model kind, `elbo export` to FILE.onnx and FILE.bin either succeeds and the file
//! samples in elbo (the blob through the device's parser and sampler), or exits 2 with one line
//! and writes nothing.

use std::path::Path;

use assert_cmd::Command;

fn elbo() -> Command {
    Command::cargo_bin("elbo").unwrap()
}

/// `(kind, train flags, ONNX expected to export, blob expected to export)`.
const KINDS: [(&str, &[&str], bool, bool); 9] = [
    ("eps", &["--prediction", "eps"], true, true),
    ("x0", &["--prediction", "x0"], true, true),
    ("v", &["--prediction", "v", "--schedule", "squaredcos_cap_v2"], true, true),
    ("score", &["--prediction", "score"], true, true),
    ("conditional", &["--data", "rings", "--conditional"], true, true),
    ("learned-variance", &["--learn-variance", "--loss", "hybrid"], false, false),
    ("continuous", &["--schedule", "vdm"], false, false),
    ("learned-schedule", &["--schedule", "learned"], false, false),
    ("vae", &["--family", "vae"], false, false),
];

fn blob_samples(path: &Path) {
    use elbo_core::NoiseSchedule;
    use elbo_core::denoiser::Condition;
    use elbo_core::mlp::ModelBlob;
    use elbo_core::sampler::{Ddim, Spacing};
    use rand_core::SeedableRng;
    let bytes = std::fs::read(path).unwrap();
    let blob = ModelBlob::parse(&bytes).unwrap();
    let d = blob.shape().dim;
    let sched = blob.schedule();
    let (mut x, mut s) = (vec![0.0f32; 8 * d], vec![0.0f32; 8 * d]);
    let mut rng = rand_pcg::Pcg32::seed_from_u64(3);
    elbo_core::rng::fill_standard_normal(&mut rng, &mut x);
    let ddim = Ddim::new(0.0, Spacing::Trailing, 10, sched.steps()).unwrap();
    let labels = vec![1u32; 8];
    let cond = if blob.shape().classes > 0 { Condition::Class(&labels) } else { Condition::Unconditional };
    ddim.sample(&mut blob.denoiser(), &sched, &mut x, &mut s, cond, &mut rng).unwrap();
}

#[test]
fn every_kind_exports_what_loads_back_or_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ort = elbo::onnx::find_runtime().is_ok();
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
                blob_samples(&out);
            } else if ort {
                let samples = dir.path().join(format!("{kind}-onnx.npy"));
                let mut s = elbo();
                s.args(["sample", "--sampler", "ddim", "--steps", "10", "--n", "8", "--model"]).arg(&out);
                if kind == "conditional" {
                    s.args(["--class", "1"]);
                }
                s.arg("--out").arg(&samples).assert().success();
                assert!(samples.exists());
            } else {
                eprintln!("SKIPPED loading {kind}.onnx: no ONNX Runtime found (./test.sh installs it)");
            }
        }
    }
}
