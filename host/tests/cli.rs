//! The real binary: `schedule --json` against a float64 reference, and bad input.

use assert_cmd::Command;

fn elbo() -> Command {
    Command::cargo_bin("elbo").unwrap()
}

/// `schedule --json` gives diffusers' table names, each within a few f32 ulps of the float64
/// reference of `core/tests/golden/schedules.json` (cosine schedule, T = 100).
#[test]
fn schedule_json_matches_the_float64_reference() {
    let out =
        elbo().args(["schedule", "--schedule", "squaredcos_cap_v2", "--timesteps", "100", "--json"]).output().unwrap();
    assert!(out.status.success());
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tests/golden/schedules.json")).unwrap(),
    )
    .unwrap();
    let case =
        golden.as_array().unwrap().iter().find(|c| c["schedule"] == "squaredcos_cap_v2" && c["T"] == 100).unwrap();
    for key in ["betas", "alphas_cumprod", "one_minus_alphas_cumprod", "posterior_mean_coef_x0", "log_snr"] {
        let (g, r) = (got[key].as_array().unwrap(), case["f64"][key].as_array().unwrap());
        assert_eq!(g.len(), 100, "{key}");
        for (a, b) in g.iter().zip(r) {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            let ulp = f64::from(f32::EPSILON) * b.abs().max(1e-30);
            assert!((a - b).abs() <= 4.0 * ulp, "{key}: {a} vs {b}");
        }
    }
}

#[test]
fn bad_input_exits_2_with_one_line() {
    for args in [
        vec!["schedule", "--schedule", "nope"],
        vec!["schedule", "--timesteps", "0"],
        vec!["schedule", "--timesteps", "100000"],
        vec!["schedule", "--beta-start", "1.5"],
        vec!["schedule", "--timesteps", "ten"],
        vec!["demo", "--n", "1"],
    ] {
        let out = elbo().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("error:"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// The demo (here with a short training run, and without its image part, whose pieces
/// `images.rs` tests) writes its files atomically into the output folder.
#[test]
fn demo_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("demo");
    let out = elbo()
        .args(["demo", "--n", "300", "--steps", "100", "--image-steps", "0", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in [
        "summary.md",
        "heldout.csv",
        "samples_ddpm.csv",
        "samples_ddim.csv",
        "samples_ddpm.png",
        "loss.png",
        "elbo_terms.png",
    ] {
        assert!(out_dir.join(f).is_file(), "{f}");
    }
    let csv = std::fs::read_to_string(out_dir.join("samples_ddpm.csv")).unwrap();
    assert_eq!(csv.lines().count(), 301);
    assert!(std::fs::read_dir(&out_dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
}

/// The help texts name what the commands take: every export format, every experiment, ONNX
/// files and VAE baselines as models, where each schedule flag applies, the experiments' real
/// data defaults, and the two commands' different `--variance auto`.
#[test]
fn help_texts_tell_the_truth() {
    let help = |args: &[&str]| {
        let o = elbo().args(args).arg("--help").output().unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap()
    };
    let top = help(&[]);
    for word in ["FILE.onnx", "FILE.bin", "FILE.safetensors", "rb-variance", "guidance", "vae"] {
        assert!(top.contains(word), "elbo --help lacks {word}");
    }
    let sample = help(&["sample"]);
    for word in ["FILE.onnx", "VAE", "a checkpoint uses its own", "learned is trained by elbo train only"] {
        assert!(sample.contains(word), "sample --help lacks {word}");
    }
    assert!(help(&["eval"]).contains("FILE.onnx"));
    // --variance auto: small when sampling, large in the bound, each saying so
    assert!(sample.contains("`elbo eval`'s auto"));
    assert!(help(&["eval"]).contains("`elbo sample`'s auto"));
    let exp = help(&["experiment"]);
    assert!(!exp.contains("[default: 8gaussians]"), "no single data default");
    for word in ["two-moons", "8gaussians", "vae)"] {
        assert!(exp.contains(word), "experiment --help lacks {word}");
    }
}

/// `--quiet` silences stderr (progress and summaries) in any position, the output files are
/// the same; without a terminal, progress comes as one-line notes at the interval
/// `ELBO_PROGRESS_SECS` sets, with counts and a rate written for people.
#[test]
fn quiet_and_progress_notes() {
    let dir = tempfile::tempdir().unwrap();
    for (i, args) in [&["--quiet", "train"][..], &["train", "-q"]].iter().enumerate() {
        let o = elbo()
            .args(*args)
            .args(["--data", "two-moons", "--steps", "50", "--out"])
            .arg(dir.path().join(format!("q{i}")))
            .output()
            .unwrap();
        assert!(o.status.success());
        assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(dir.path().join(format!("q{i}/model.safetensors")).is_file());
    }
    let o = elbo()
        .env("ELBO_PROGRESS_SECS", "0")
        .args(["train", "--data", "two-moons", "--steps", "200", "--log-every", "50", "--out"])
        .arg(dir.path().join("notes"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let notes: Vec<&str> = err.lines().filter(|l| l.starts_with("train: ")).collect();
    assert!(notes.len() >= 3, "one note per logged step: {err}");
    assert!(notes.iter().any(|l| l.contains("/200 steps (") && l.contains("steps/s")), "{err}");
    // rates are rounded for people (no 147.7943/s)
    assert!(!err.contains(".0000/s") && err.lines().last().unwrap().contains("examples/s"), "{err}");
    // --quiet and --verbose together are refused
    let o = elbo().args(["--quiet", "--verbose", "schedule"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// Reports name their sources at the first citation and weightings by their command-line names
/// (`p2:1`, not a Rust debug form), saying that `v` and `fm-ot` are one function.
#[test]
fn reports_name_sources_and_weightings() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("inv");
    elbo().args(["-q", "experiment", "invariance", "--n", "200", "--out"]).arg(&out).assert().success();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("seed 002 [D. P. Kingma and R. Gao"), "{md}");
    assert_eq!(md.matches("Kingma and R. Gao").count(), 1, "named once: {md}");
    assert!(md.contains("| p2:1 |") && md.contains("| min-snr:5 |") && md.contains("| fm-ot |"), "{md}");
    assert!(!md.contains("P2 {") && !md.contains("MinSnr"), "{md}");
    assert!(md.contains("`v` and `fm-ot` are the same"), "{md}");
}

/// `experiment rb-variance|likelihood --model` measure a given model on given data: the
/// Rao-Blackwellised estimate's variance is at most the Monte Carlo one's at every timestep
/// (it is its conditional expectation: the law of total variance), and the exact denoiser's
/// bound lies above the data's exact NLL (the gap is a KL divergence, >= 0).
#[test]
fn experiments_run_on_a_given_model() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/two-moons");
    let out = dir.path().join("rb");
    elbo()
        .args(["-q", "experiment", "rb-variance", "--model", shipped, "--data", "two-moons", "--n", "400"])
        .args(["--t-list", "2,10,100,500", "--out"])
        .arg(&out)
        .assert()
        .success();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let rows: Vec<Vec<f64>> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| t "))
        .map(|l| l.split('|').filter_map(|c| c.trim().parse::<f64>().ok()).collect())
        .collect();
    assert_eq!(rows.iter().map(|r| r[0]).collect::<Vec<_>>(), [2.0, 10.0, 100.0, 500.0], "{md}");
    assert!(rows.iter().all(|r| r[2] >= r[1]), "var MC >= var RB: {md}");
    assert!(out.join("variance.png").is_file());

    let out = dir.path().join("lik");
    elbo()
        .args(["-q", "experiment", "likelihood", "--model", "optimal", "--data", "8gaussians", "--n", "500", "--out"])
        .arg(&out)
        .assert()
        .success();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let gap = md.lines().find(|l| l.starts_with("| gap")).unwrap();
    let v: Vec<f64> = gap.split(['|', ' ']).filter_map(|c| c.parse::<f64>().ok()).collect();
    assert!(v[0] > -3.0 * v[1], "the bound is above the NLL: {gap}");

    let o = elbo()
        .args(["experiment", "weighting", "--model", shipped, "--data", "two-moons", "--out"])
        .arg(dir.path().join("w"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!dir.path().join("w").exists());
}
