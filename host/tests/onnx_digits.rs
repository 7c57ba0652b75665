//! The PyTorch-exported digits model (`models/digits`) through the command line, against goldens
//! from `models/digits/make_goldens.py` (diffusers + onnxruntime for Python; a float64
//! implementation of improved-diffusion's bound conventions), and bad ONNX input.

use assert_cmd::Command;
use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits")
}

fn npy(path: &std::path::Path) -> ArrayD<f32> {
    ArrayD::<f32>::read_npy(std::fs::File::open(path).unwrap()).unwrap()
}

/// DDIM (eta 0, 50 steps) from a given x_T, class 3: the same trajectory as diffusers'
/// DDIMScheduler driving the same ONNX model through onnxruntime for Python, to 1e-4.
#[test]
fn ddim_matches_diffusers_driving_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    for spacing in ["leading", "trailing"] {
        let out = dir.path().join(format!("{spacing}.npy"));
        Command::cargo_bin("elbo")
            .unwrap()
            .args(["sample", "--model"])
            .arg(root().join("model.onnx"))
            .arg("--init")
            .arg(root().join("golden_init.npy"))
            .args(["--sampler", "ddim", "--steps", "50", "--eta", "0", "--spacing", spacing, "--class", "3", "--out"])
            .arg(&out)
            .assert()
            .success();
        let (got, want) = (npy(&out), npy(&root().join(format!("golden_ddim_{spacing}.npy"))));
        assert_eq!(got.shape(), want.shape());
        let worst = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        eprintln!("{spacing}: worst difference from diffusers {worst:.2e}");
        assert!(worst < 1e-4, "{spacing}: {worst}");
    }
}

/// `eval --bins 256` on 8-bit data, fixed-small and fixed-large: the prior term exactly, and
/// the decoder term, the sum of the per-step terms and the total within 4.5 combined standard
/// errors of the float64 reference (independent noise on each side).
#[test]
fn eight_bit_bound_matches_improved_diffusion_conventions() {
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("golden_bpd_8bit.json")).unwrap()).unwrap();
    for variance in ["small", "large"] {
        let out = Command::cargo_bin("elbo")
            .unwrap()
            .args(["eval", "--model"])
            .arg(root().join("model.onnx"))
            .arg("--data")
            .arg(root().join("digits_test_8bit.npy"))
            .args(["--bins", "256", "--variance", variance, "--mmd-samples", "0", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let g = &golden[variance];
        let f = |v: &serde_json::Value| v.as_f64().unwrap();
        assert!(
            (f(&r["prior_nats"]) - f(&golden["prior_nats"])).abs() < 1e-6 * f(&golden["prior_nats"]).abs().max(1e-3)
        );
        let diffusion: f64 = r["terms_nats"].as_array().unwrap().iter().map(f).sum();
        let se = f(&r["neg_elbo_nats_se"]);
        for (name, ours, theirs, their_se) in [
            ("decoder", f(&r["decoder_nats"]), f(&g["decoder_nats"]), f(&g["decoder_se"])),
            ("diffusion", diffusion, f(&g["diffusion_nats"]), f(&g["diffusion_se"])),
            ("total", f(&r["neg_elbo_nats"]), f(&g["neg_elbo_nats"]), f(&g["neg_elbo_se"])),
        ] {
            // Our per-part standard errors are not reported; the reference's serve for both sides.
            let tol = 4.5 * (2.0f64).sqrt() * their_se.max(if name == "total" { se } else { 0.0 });
            eprintln!("{variance} {name}: {ours:.3} vs {theirs:.3} (tolerance {tol:.3})");
            assert!((ours - theirs).abs() < tol, "{variance} {name}: {ours} vs {theirs} +- {tol}");
        }
    }
}

#[test]
fn bad_onnx_input_gets_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bytes = std::fs::read(root().join("model.onnx")).unwrap();
    std::fs::write(d.join("truncated.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(d.join("text.onnx"), "not a model").unwrap();
    std::fs::write(d.join("wide.onnx"), elbo::onnx::export::broken_model("wide")).unwrap();
    std::fs::write(d.join("nan.onnx"), elbo::onnx::export::broken_model("nan")).unwrap();
    let out = d.join("out.npy");
    let digits = root().join("model.onnx");
    let cases: Vec<Vec<String>> = vec![
        vec!["--model".into(), d.join("missing.onnx").display().to_string()],
        vec!["--model".into(), d.join("truncated.onnx").display().to_string()],
        vec!["--model".into(), d.join("text.onnx").display().to_string()],
        vec!["--model".into(), digits.display().to_string(), "--input-sample".into(), "x".into()],
        vec!["--model".into(), digits.display().to_string(), "--output".into(), "nope".into()],
        vec!["--model".into(), d.join("wide.onnx").display().to_string()],
        vec!["--model".into(), d.join("nan.onnx").display().to_string()],
    ];
    for c in cases {
        let o = Command::cargo_bin("elbo")
            .unwrap()
            .args(["sample", "--n", "3", "--sampler", "ddim", "--steps", "5"])
            .args(&c)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{c:?}: {err}");
        assert!(err.starts_with("error:") && err.trim_end().lines().count() == 1, "{c:?}: {err}");
        assert!(!out.exists(), "{c:?} left an output");
    }
}
