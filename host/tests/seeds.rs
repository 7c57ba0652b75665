//! The systems of the seeds through the real binary at quick sizes: continuous-time training
//! with a learned schedule, classifier guidance, the VAE baselines, and the experiments whose
//! reports must hold sane numbers (guidance sharpens, the learned schedule stays monotone).

use assert_cmd::Command;

fn elbo() -> Command {
    Command::cargo_bin("elbo").unwrap()
}

/// The table rows of a report (without header and rule), split into trimmed cells.
fn rows(report: &str) -> Vec<Vec<String>> {
    report
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("---"))
        .skip(1)
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

fn number(cell: &str) -> f64 {
    cell.split_whitespace().next().unwrap().parse().unwrap()
}

fn run(args: &[&str], out: &std::path::Path) -> String {
    let o = elbo().args(args).arg("--out").arg(out).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(out.join("report.md")).unwrap_or_default()
}

#[test]
fn learned_schedule_trains_samples_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    let o = elbo()
        .args(["train", "--data", "two-moons", "--schedule", "learned", "--steps", "40", "--batch", "128", "--out"])
        .arg(&m)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = elbo()
        .args(["sample", "--n", "50", "--timesteps", "100", "--model"])
        .arg(&m)
        .arg("--out")
        .arg(dir.path().join("s.csv"))
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let e = elbo()
        .args(["eval", "--data", "two-moons", "--n", "200", "--mmd-samples", "0", "--json", "--model"])
        .arg(&m)
        .output()
        .unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    let bpd = v["bpd"].as_f64().unwrap();
    assert!(bpd.is_finite() && bpd > -1.0 && bpd < 10.0, "{v}");
    // bad input: a learned schedule wants the ELBO and eps prediction
    let bad = elbo()
        .args(["train", "--data", "two-moons", "--schedule", "learned", "--loss", "simple", "--out"])
        .arg(dir.path().join("bad"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);
}

#[test]
fn classifier_guidance_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (c, m) = (dir.path().join("c"), dir.path().join("m"));
    for (cmd, out) in [("train-classifier", &c), ("train", &m)] {
        let o = elbo()
            .args([cmd, "--data", "8gaussians", "--steps", "30", "--batch", "128", "--out"])
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let s = elbo()
        .args(["sample", "--n", "20", "--sampler", "ddim", "--class", "3", "--guidance", "2", "--model"])
        .arg(&m)
        .arg("--classifier")
        .arg(&c)
        .arg("--out")
        .arg(dir.path().join("s.npy"))
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let bad = elbo()
        .args(["sample", "--model"])
        .arg(&m)
        .arg("--classifier")
        .arg(&c)
        .arg("--out")
        .arg(dir.path().join("b.npy"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    let bad = elbo().args(["sample", "--model"]).arg(&c).arg("--out").arg(dir.path().join("b.npy")).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// Seed 004: guidance raises the Bayes classifier's accuracy and lowers the spread.
#[test]
fn guidance_experiment_trades_diversity_for_adherence() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(&["experiment", "guidance", "--steps", "400", "--n", "150"], dir.path());
    let r = rows(&report);
    assert_eq!(r.len(), 12, "{report}");
    for method in ["classifier-free", "classifier"] {
        let of = |g: &str| r.iter().find(|row| row[0] == method && row[1] == g).unwrap().clone();
        let (lo, hi) = (of("0"), of("8"));
        assert!(number(&hi[2]) > number(&lo[2]) + 0.2, "{method}: {report}");
        assert!(number(&hi[3]) < number(&lo[3]), "{method}: {report}");
    }
    for f in ["accuracy.png", "spread.png"] {
        assert!(dir.path().join(f).is_file());
    }
}

/// The learned schedule stays monotone; every model's bound is a finite number.
#[test]
fn vdm_and_vae_experiments_report_sane_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(&["experiment", "vdm", "--steps", "60", "--n", "200"], &dir.path().join("vdm"));
    let r = rows(&report);
    assert_eq!(r.len(), 4, "{report}");
    assert!(r.iter().all(|row| number(&row[1]).is_finite() && number(&row[1]) < 20.0), "{report}");
    assert!(r[2][4].starts_with("yes"), "{report}");
    let report = run(&["experiment", "vae", "--steps", "60", "--n", "200"], &dir.path().join("vae"));
    let r = rows(&report);
    assert_eq!(r.len(), 4, "{report}");
    assert!(r.iter().all(|row| number(&row[1]).is_finite() && number(&row[1]) < 20.0), "{report}");
}

/// The weighting experiment marks the ELBO weighting monotone and EDM's not (seed 002).
#[test]
fn weighting_and_parameterization_experiments_run() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(&["experiment", "weighting", "--steps", "40", "--n", "100"], &dir.path().join("w"));
    let r = rows(&report);
    assert_eq!(r.len(), 8, "{report}");
    assert_eq!(r.iter().find(|row| row[0].contains("weighted:elbo")).unwrap()[1], "yes");
    assert_eq!(r.iter().find(|row| row[0].contains("weighted:edm")).unwrap()[1], "no");
    let report = run(&["experiment", "parameterization", "--steps", "40", "--n", "100"], &dir.path().join("p"));
    assert_eq!(rows(&report).len(), 8, "{report}");
}

#[test]
fn samplers_experiment_measures_every_sampler_and_the_ode() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(&["experiment", "samplers", "--data", "two-moons", "--steps", "1500", "--n", "400"], dir.path());
    for s in ["ddpm", "ddim", "dpmpp2m", "dpmpp3m", "unipc", "deis", "euler", "heun"] {
        assert!(report.contains(&format!("| {s} | 10 |")), "{s} missing:\n{report}");
    }
    assert!(dir.path().join("mmd-two-moons.png").is_file());
    // Heun's 10 steps are 19 calls; every row's MMD is finite and positive
    assert!(report.contains("| heun | 10 | 19 |"), "{report}");
    let mmd = |s: &str, k: usize| -> f64 {
        let row = report.lines().find(|l| l.starts_with(&format!("| {s} | {k} |"))).unwrap();
        row.trim_matches('|').split('|').nth(3).unwrap().trim().parse().unwrap()
    };
    for s in ["dpmpp2m", "unipc", "heun"] {
        assert!(mmd(s, 20) > 0.0 && mmd(s, 20).is_finite());
        // 20 steps of a second-order solver beat 5 Euler steps
        assert!(mmd(s, 20) < mmd("euler", 5), "{s}: {} vs euler-5 {}", mmd(s, 20), mmd("euler", 5));
    }
    // the bound and the ODE NLL of the same model (two densities: neither bounds the other)
    let row = report.lines().find(|l| l.starts_with("| two-moons (MLP)")).unwrap();
    let cells: Vec<f64> = row
        .trim_matches('|')
        .split('|')
        .skip(1)
        .map(|c| c.split("+-").next().unwrap().trim().parse::<f64>().unwrap())
        .collect();
    assert!(cells.len() == 2 && cells.iter().all(|v| v.is_finite()), "{row}");
}
