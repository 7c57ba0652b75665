//! Real diffusers exports run from their own `scheduler_config.json` alone: `UNet2DModel`s with
//! random weights (unconditional, class-conditional, a scalar timestep, a float32 timestep),
//! exported as optimum exports UNets, and the shipped two-moons MLP, with the goldens of
//! diffusers' own DDIM, DDPM, DPM-Solver++, UniPC, DEIS, Euler and Heun loops over onnxruntime
//! (Karras sigmas or not), all made by `tests/diffusers/make.py` (see its header). No prediction, spacing or clipping flag is
//! given: what the config says (and diffusers' defaults for what it leaves out) must be what
//! elbo does.
//!
//! Tolerance: relative to max(1, max |golden|), 1e-4; the case with diffusers' default
//! `clip_sample=True` uses 1e-2, because clipping makes diffusers' own loop ill-conditioned on
//! random weights (a 1-ulp change of x_T moves its output by about 3e-3). The cases named `-f64`
//! compare with diffusers' loop run in float64, because its float32 run is further from that
//! than 1e-4 (case.json records how far): a Heun run from sigma_0 = 20291 loses 2e-2 to the
//! cancellation in `x + (x0 - x)`, and diffusers' float32 table moves Karras timesteps by 1e-4.
//!
//! Needs ONNX Runtime: `./test.sh` installs onnxruntime 1.31.1 into `.local/onnxruntime`.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use elbo::data::load_file;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/diffusers")
}

struct Case {
    model: String,
    steps: usize,
    class: Option<u64>,
    classes: Option<u64>,
    tolerance: f64,
}

fn case(name: &str) -> Case {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(name).join("case.json")).unwrap()).unwrap();
    Case {
        model: v["model"].as_str().unwrap().to_string(),
        steps: v["steps"].as_u64().unwrap() as usize,
        class: v["class"].as_u64(),
        classes: v["classes"].as_u64(),
        tolerance: v["tolerance"].as_f64().unwrap(),
    }
}

/// Runs `elbo sample` on a case with `extra` flags; returns the samples and stderr.
fn run(name: &str, config: &Path, extra: &[&str]) -> (Vec<f32>, String) {
    let c = case(name);
    let dir = root().join(name);
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("s.npy");
    let mut cmd = Command::cargo_bin("elbo").unwrap();
    cmd.arg("sample")
        .arg("--model")
        .arg(root().join(&c.model))
        .arg("--scheduler-config")
        .arg(config)
        .arg("--init")
        .arg(dir.join("x_t.npy"))
        .args(["--steps", &c.steps.to_string()])
        .arg("--out")
        .arg(&file)
        .args(extra);
    if let (Some(class), Some(classes)) = (c.class, c.classes) {
        cmd.args(["--class", &class.to_string(), "--classes", &classes.to_string()]);
    }
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{name}: {err}");
    (load_file(&file).unwrap().x, err)
}

/// The largest difference relative to max(1, max |golden|).
fn relative_error(name: &str, got: &[f32]) -> f64 {
    let want = load_file(&root().join(name).join("expected.npy")).unwrap().x;
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1.0f64, |m, v| m.max(f64::from(v.abs())));
    got.iter().zip(&want).map(|(a, b)| f64::from((a - b).abs())).fold(0.0, f64::max) / scale
}

/// Every case folder `make.py` wrote (those with a `case.json`), sorted.
fn cases() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root())
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("case.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn every_export_runs_from_its_own_scheduler_config() {
    let names = cases();
    // DDIM, DDPM, DPM-Solver++, UniPC, Euler, Heun and DEIS on the UNets and the two-moons MLP
    assert_eq!(names.len(), 42, "{names:?}");
    let mut failed = vec![];
    for name in &names {
        // the folder, as diffusers users name it
        let (got, _) = run(name, &root().join(name), &[]);
        let err = relative_error(name, &got);
        eprintln!("{name}: {err:.1e}");
        let tol = case(name).tolerance;
        if err > tol {
            failed.push(format!("{name}: relative error {err:e} above {tol:e}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn a_flag_overrides_the_config_and_the_file_works_as_the_folder() {
    let name = "ddim-eps-noclip";
    let file = root().join(name).join("scheduler_config.json");
    let (same, _) = run(name, &file, &[]);
    assert!(relative_error(name, &same) <= 1e-4);
    // the config says leading spacing and no clipping; the flags say otherwise
    for flags in [&["--spacing", "trailing"][..], &["--clip", "1"], &["--sampler", "ddpm"]] {
        let (other, _) = run(name, &file, flags);
        assert!(relative_error(name, &other) > 1e-2, "{flags:?} changed nothing");
    }
    // and a flag that says what the config says changes nothing
    let (again, _) = run(name, &file, &["--spacing", "leading", "--clip", "off", "--sampler", "ddim"]);
    assert_eq!(again, same);
}

#[test]
fn keys_elbo_does_not_use_are_named_once() {
    let name = "ddim-eps-noclip";
    let dir = tempfile::tempdir().unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(name).join("scheduler_config.json")).unwrap())
            .unwrap();
    v["skip_prk_steps"] = true.into();
    v["timestep_scaling"] = 10.0.into();
    std::fs::write(dir.path().join("scheduler_config.json"), v.to_string()).unwrap();
    let (got, err) = run(name, dir.path(), &[]);
    assert!(relative_error(name, &got) <= 1e-4);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("does not use")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("skip_prk_steps") && lines[0].contains("timestep_scaling"), "{err}");
    // a key of the wrong type is bad input: exit 2, one line naming it
    v["clip_sample"] = "no".into();
    assert_refused(name, &v, &[], "clip_sample should be true or false");
}

/// `elbo sample` of case `name`'s model and start with the scheduler config `config` and
/// `flags` exits 2 with one line containing `says`, and writes nothing.
fn assert_refused(name: &str, config: &serde_json::Value, flags: &[&str], says: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scheduler_config.json"), config.to_string()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = Command::cargo_bin("elbo")
        .unwrap()
        .arg("sample")
        .arg("--model")
        .arg(root().join(case(name).model))
        .arg("--scheduler-config")
        .arg(dir.path())
        .arg("--init")
        .arg(root().join(name).join("x_t.npy"))
        .arg("--out")
        .arg(out.path().join("s.npy"))
        .args(flags)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(says), "{flags:?}: {err}");
    assert!(!out.path().join("s.npy").exists());
}

/// What elbo does not run of the few-step schedulers is refused before work starts: exit 2, one
/// line naming the key or flag, no output.
#[test]
fn unsupported_solver_settings_are_refused_with_one_line() {
    let name = "unipc-defaults";
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(name).join("scheduler_config.json")).unwrap())
            .unwrap();
    let refused = |key: &str, value: serde_json::Value, flags: &[&str], says: &str| {
        let mut v = base.clone();
        if !key.is_empty() {
            v[key] = value;
        }
        assert_refused(name, &v, flags, says);
    };
    refused("predict_x0", false.into(), &[], "predict_x0 false");
    refused("disable_corrector", serde_json::json!([1, 2]), &[], "disable_corrector");
    refused("solver_type", "midpoint".into(), &[], "solver_type");
    refused("solver_order", 4.into(), &[], "solver_order");
    refused("sigma_min", (-1.0).into(), &[], "sigma_min");
    refused("use_exponential_sigmas", true.into(), &[], "use_exponential_sigmas");
    refused("", serde_json::Value::Null, &["--sampler", "ddim", "--karras"], "--karras");
    refused("", serde_json::Value::Null, &["--steps", "1000"], "--steps");
}
