//! The real binary: training is independent of the thread count, an interrupted (SIGKILL) run
//! resumes to the same bits, `eval --model optimal` bounds the exact likelihood, and bad input
//! exits with code 2 and one line.

use std::path::Path;
use std::process::Command as Std;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin;

fn elbo() -> Command {
    Command::cargo_bin("elbo").unwrap()
}

fn files_equal(a: &Path, b: &Path) {
    for f in ["model.safetensors", "optimizer.safetensors", "state.json", "config.json", "loss.csv"] {
        let (x, y) = (std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap());
        assert!(x == y, "{f} differs between {} and {}", a.display(), b.display());
    }
}

#[test]
fn checkpoints_do_not_depend_on_threads() {
    let dir = tempfile::tempdir().unwrap();
    for threads in ["1", "2"] {
        let out = dir.path().join(format!("t{threads}"));
        elbo()
            .args([
                "train",
                "--data",
                "two-moons",
                "--steps",
                "40",
                "--batch",
                "300",
                "--n-train",
                "2000",
                "--threads",
                threads,
            ])
            .args(["--loss", "hybrid", "--checkpoint-every", "20", "--log-every", "10", "--out"])
            .arg(&out)
            .assert()
            .success();
    }
    files_equal(&dir.path().join("t1"), &dir.path().join("t2"));
}

fn step_of(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
}

/// Kill a run with SIGKILL after its first checkpoint, resume it, and compare with a run that
/// was never interrupted: every file of the final checkpoint is identical.
#[test]
fn a_killed_run_resumes_to_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "train",
        "--data",
        "8gaussians",
        "--steps",
        "1500",
        "--batch",
        "128",
        "--n-train",
        "2000",
        "--timesteps",
        "100",
        "--beta-start",
        "1e-3",
        "--beta-end",
        "0.2",
        "--loss",
        "vlb",
        "--t-sampling",
        "importance",
        "--width",
        "64",
        "--checkpoint-every",
        "50",
        "--log-every",
        "25",
        "--threads",
        "2",
        "--out",
    ];
    let whole = dir.path().join("whole");
    elbo().args(args).arg(&whole).assert().success();

    let cut = dir.path().join("cut");
    let mut child = Std::new(cargo_bin("elbo")).args(args).arg(&cut).spawn().unwrap();
    let start = Instant::now();
    while step_of(&cut).is_none_or(|s| s < 100) {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let at = step_of(&cut).unwrap();
    assert!(at < 1500, "the run finished before it could be killed (step {at})");
    elbo().args(args).arg(&cut).arg("--resume").assert().success();
    files_equal(&whole, &cut);
}

/// `eval --model optimal` on a Gaussian mixture: the bound is above the exact NLL (computed by
/// the mixture density, independently of the bound), and the gap is small at T = 1000.
#[test]
fn optimal_model_bounds_the_exact_likelihood() {
    let dir = tempfile::tempdir().unwrap();
    let gmm = dir.path().join("mix.json");
    std::fs::write(&gmm, r#"{"weights":[0.3,0.7],"means":[[-1.0,0.5],[1.0,-0.5]],"stds":[[0.3,0.4],[0.5,0.2]]}"#)
        .unwrap();
    let spec = format!("gmm:{}", gmm.display());
    for (t, b0, b1) in [("100", "1e-3", "0.2"), ("1000", "1e-4", "0.02")] {
        let out = elbo()
            .args(["eval", "--model", "optimal", "--data", &spec, "--n", "1000", "--timesteps", t])
            .args(["--beta-start", b0, "--beta-end", b1, "--mmd-samples", "0", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let (bound, se, exact) = (
            r["neg_elbo_nats"].as_f64().unwrap(),
            r["neg_elbo_nats_se"].as_f64().unwrap(),
            r["exact_nll_nats"].as_f64().unwrap(),
        );
        eprintln!("T={t}: -ELBO {bound:.4} +- {se:.4}, exact NLL {exact:.4}, gap {:.4}", bound - exact);
        assert!(bound - exact > -4.5 * se, "T={t}: bound below the likelihood");
        assert!(bound - exact < 0.5, "T={t}: gap {}", bound - exact);
        assert_eq!(r["terms_nats"].as_array().unwrap().len(), t.parse::<usize>().unwrap() - 1);
    }
}

fn assert_bad(args: &[&str], out_file: Option<&Path>) {
    let out = elbo().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.starts_with("error:"), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    if let Some(f) = out_file {
        assert!(!f.exists(), "{args:?} left {}", f.display());
    }
}

#[test]
fn bad_input_gets_exit_code_2_one_line_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).to_string_lossy().into_owned();
    std::fs::write(d.join("bad.csv"), "1,2\n3,x\n").unwrap();
    std::fs::write(d.join("ragged.csv"), "1,2\n3\n").unwrap();
    std::fs::write(d.join("nan.csv"), "1,2\nnan,3\n").unwrap();
    std::fs::write(d.join("three.csv"), "1,2,3\n4,5,6\n").unwrap();
    std::fs::write(d.join("bad.npy"), b"\x93NUMPY garbage").unwrap();
    let model = d.join("model");
    elbo()
        .args(["train", "--data", "two-moons", "--steps", "5", "--batch", "64", "--n-train", "500", "--out"])
        .arg(&model)
        .assert()
        .success();
    let m = model.to_string_lossy().into_owned();
    let out = p("out.csv");
    let out_path = d.join("out.csv");
    let (bad_csv, ragged, nan, three, bad_npy, txt, nowhere) =
        (p("bad.csv"), p("ragged.csv"), p("nan.csv"), p("three.csv"), p("bad.npy"), p("out.txt"), p("nowhere"));
    let cases: Vec<Vec<&str>> = vec![
        vec!["train", "--data", "missing.csv", "--out", &out],
        vec!["train", "--data", &bad_csv, "--out", &out],
        vec!["train", "--data", &ragged, "--out", &out],
        vec!["train", "--data", &nan, "--out", &out],
        vec!["train", "--data", &bad_npy, "--out", &out],
        vec!["train", "--data", "two-moons", "--schedule", "cosinus", "--out", &out],
        vec!["train", "--data", "two-moons", "--loss", "weighted:nope", "--out", &out],
        vec!["train", "--data", "two-moons", "--loss", "weighted:p2:abc", "--out", &out],
        vec!["train", "--data", "two-moons", "--prediction", "z", "--out", &out],
        vec!["train", "--data", "two-moons", "--learn-variance", "--out", &out],
        vec!["eval", "--model", &m, "--data", "two-moons", "--variance", "learned"],
        vec!["train", "--data", "two-moons", "--out", &m],
        vec!["eval", "--model", &m, "--data", &three],
        vec!["eval", "--model", &m, "--data", "two-moons", "--bins", "17"],
        vec!["eval", "--model", "optimal", "--data", "two-moons"],
        vec!["sample", "--model", &m, "--n", "10", "--sampler", "ddim", "--steps", "2000", "--out", &out],
        vec!["sample", "--model", &m, "--n", "10", "--guidance", "3", "--class", "1", "--out", &out],
        vec!["sample", "--model", &m, "--n", "10", "--sampler", "lms", "--out", &out],
        vec!["sample", "--model", &m, "--init", &three, "--out", &out],
        vec!["sample", "--model", &m, "--n", "10", "--out", &txt],
        vec!["sample", "--model", &nowhere, "--n", "10", "--out", &out],
    ];
    for c in &cases {
        assert_bad(c, Some(&out_path));
    }
    // A corrupt or truncated checkpoint.
    let bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    std::fs::write(model.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    assert_bad(&["sample", "--model", &m, "--n", "10", "--out", &out], Some(&out_path));
    std::fs::write(model.join("model.safetensors"), &bytes).unwrap();
    let cfg = std::fs::read(model.join("config.json")).unwrap();
    std::fs::write(model.join("config.json"), &cfg[..cfg.len() / 3]).unwrap();
    assert_bad(&["eval", "--model", &m, "--data", "two-moons"], None);
    assert_bad(&["train", "--data", "two-moons", "--resume", "--out", &m], None);
}

/// Samples of every sampler land in the file with the right shape; guidance works on a
/// conditional model.
#[test]
fn samplers_and_guidance_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("cond");
    elbo()
        .args([
            "train",
            "--data",
            "two-moons",
            "--conditional",
            "--steps",
            "20",
            "--batch",
            "128",
            "--n-train",
            "1000",
            "--out",
        ])
        .arg(&model)
        .assert()
        .success();
    for (sampler, extra) in
        [("ddpm", vec![]), ("ddim", vec!["--eta", "0.5", "--steps", "20"]), ("langevin", vec!["--steps", "10"])]
    {
        let out = dir.path().join(format!("{sampler}.npy"));
        elbo()
            .args(["sample", "--model"])
            .arg(&model)
            .args(["--n", "33", "--sampler", sampler, "--guidance", "2", "--class", "1"])
            .args(&extra)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let bytes = std::fs::read(&out).unwrap();
        let header = String::from_utf8_lossy(&bytes[..128]);
        assert!(header.contains("'shape': (33, 2)"), "{header}");
    }
}

/// A learned-variance model (hybrid loss): eval uses its variance (and reports so), and every
/// sampler runs with it.
#[test]
fn learned_variance_model_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("lv");
    elbo()
        .args([
            "train",
            "--data",
            "two-moons",
            "--learn-variance",
            "--loss",
            "hybrid",
            "--steps",
            "20",
            "--batch",
            "128",
        ])
        .args(["--n-train", "1000", "--out"])
        .arg(&model)
        .assert()
        .success();
    let out = elbo()
        .args(["eval", "--model"])
        .arg(&model)
        .args(["--data", "two-moons", "--n", "200", "--mmd-samples", "50", "--timesteps", "1000", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["variance"], "learned");
    assert!(r["neg_elbo_nats"].as_f64().unwrap().is_finite());
    // flat vectors: the MMD's samples by DDPM over every step
    assert_eq!((r["mmd_samples"].as_u64(), r["mmd_sampler"].as_str()), (Some(50), Some("ddpm-1000")), "{r}");
    let samples = dir.path().join("s.csv");
    elbo().args(["sample", "--model"]).arg(&model).args(["--n", "20", "--out"]).arg(&samples).assert().success();
    assert_eq!(std::fs::read_to_string(&samples).unwrap().lines().count(), 21);
}

/// Quantised data (17 levels on [-1, 1]) with a model trained without normalisation: the
/// discretised bound is a probability, so it is non-negative.
#[test]
fn discretised_bound_on_quantised_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("q.csv");
    let rows: String =
        (0..400).map(|i| format!("{},{}\n", (i % 17) as f32 / 8.0 - 1.0, ((i * 7) % 17) as f32 / 8.0 - 1.0)).collect();
    std::fs::write(&data, rows).unwrap();
    let model = dir.path().join("m");
    elbo()
        .args(["train", "--data"])
        .arg(&data)
        .args(["--normalize", "none", "--steps", "20", "--batch", "128", "--out"])
        .arg(&model)
        .assert()
        .success();
    let out = elbo()
        .args(["eval", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .args(["--bins", "17", "--mmd-samples", "0", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["neg_elbo_nats"].as_f64().unwrap() >= 0.0, "{r}");
    assert!(r["decoder_nats"].as_f64().unwrap() >= 0.0, "{r}");
}

/// `experiment likelihood`: the bound of the exact denoiser holds for every T, is looser at
/// T = 10 than at T = 100, and in continuous time it is tight (gap within 4.5 standard errors
/// of zero).
#[test]
fn likelihood_experiment_reports_the_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let out = elbo().args(["experiment", "likelihood", "--n", "400", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(report.contains("the bound holds"), "{report}");
    assert!(dir.path().join("gap.png").is_file());
    let gap = |row: &str| -> (f64, f64) {
        let line = report.lines().find(|l| l.starts_with(&format!("| {row} |"))).unwrap();
        let cell = line.split('|').nth(3).unwrap().trim().to_string();
        let (g, se) = cell.split_once(" +- ").unwrap();
        (g.parse().unwrap(), se.parse().unwrap())
    };
    assert!(gap("T = 10").0 > gap("T = 100").0);
    let (g, se) = gap("continuous (VDM linear gamma)");
    assert!(g.abs() < 4.5 * se.max(1e-3), "continuous-time gap {g} +- {se}");
}

/// `experiment rb-variance` (seed 000): the Rao-Blackwellised estimator has the smaller
/// variance at every reported timestep, at initialisation and after training.
#[test]
fn rb_variance_experiment_shows_the_variance_reduction() {
    let dir = tempfile::tempdir().unwrap();
    let out = elbo()
        .args(["experiment", "rb-variance", "--n", "300", "--steps", "60", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    let ratios: Vec<f64> = report
        .lines()
        .filter(|l| l.starts_with("| ") && l.split('|').count() == 6 && !l.contains("var RB") && !l.contains("---"))
        .map(|l| l.split('|').nth(4).unwrap().trim().parse::<f64>().unwrap())
        .collect();
    assert_eq!(ratios.len(), 26, "{report}");
    assert!(ratios.iter().all(|&r| r > 1.0), "{ratios:?}");
    for f in ["variance.png", "mmd.png"] {
        assert!(dir.path().join(f).is_file());
    }
}

/// `experiment invariance` (seed 002 eq. 12): the weighted losses agree across schedule shapes.
#[test]
fn invariance_experiment_agrees_across_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let out = elbo().args(["experiment", "invariance", "--n", "8000", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(report.contains("Every weighting gives the same loss"), "{report}");
}

/// `elbo sample` of a VAE and an HVAE baseline draws from the prior through the decoders, in
/// the data's units: on two-moons the samples' moments are near the data's closed form (mean
/// (1/2, 1/4): each moon's mean is (0, 2/pi) or (1, 1/2 - 2/pi); standard deviations about
/// sqrt(3/4) and 1/2 plus the data's noise), which a decoder left in normalised units or an
/// untrained one misses. `--class` does not apply and is refused.
#[test]
fn vae_baselines_sample_from_the_prior() {
    use ndarray_npy::ReadNpyExt;
    let dir = tempfile::tempdir().unwrap();
    for family in ["vae", "hvae"] {
        let model = dir.path().join(family);
        elbo()
            .args(["train", "--data", "two-moons", "--family", family, "--steps", "800", "--out"])
            .arg(&model)
            .assert()
            .success();
        let out = dir.path().join(format!("{family}.npy"));
        elbo().args(["sample", "--n", "4000", "--model"]).arg(&model).arg("--out").arg(&out).assert().success();
        let x = ndarray::Array2::<f32>::read_npy(std::fs::File::open(&out).unwrap()).unwrap();
        assert_eq!(x.dim(), (4000, 2));
        let mean = x.mean_axis(ndarray::Axis(0)).unwrap();
        let std = x.std_axis(ndarray::Axis(0), 0.0);
        for (got, want, tol) in [(mean[0], 0.5, 0.1), (mean[1], 0.25, 0.1), (std[0], 0.87, 0.15), (std[1], 0.5, 0.12)] {
            assert!((got - want).abs() < tol, "{family}: mean {mean}, std {std}");
        }
        let o = elbo()
            .args(["sample", "--class", "1", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(dir.path().join("c.npy"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("does not apply to a VAE"));
    }
}
