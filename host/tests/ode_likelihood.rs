//! The probability-flow ODE's likelihood against exact ones: with the exact denoiser of a
//! Gaussian mixture the flow transports the data convolved with `N(0, sigma_0^2)` (the ODE's
//! start), whose density is known in closed form. The ODE's NLL of each point must equal that
//! density's to within the solver's tolerance, and Hutchinson's estimate within its Monte Carlo
//! error; the command line reports it next to the bound and the mixture's exact NLL.

use assert_cmd::Command;
use elbo::ode::{OdeOptions, nll};
use elbo_core::gmm::{GaussianMixture, OptimalDenoiser};
use elbo_core::rng::fill_standard_normal;
use elbo_core::sampler::table_sigma;
use elbo_core::schedule::{BetaSchedule, Schedule};
use rand_core::SeedableRng;

const W: [f32; 3] = [0.3, 0.5, 0.2];

/// A mixture of 3 components in `dim` dimensions.
fn mixture(dim: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = rand_pcg::Pcg32::seed_from_u64(7);
    let mut means = vec![0.0f32; 3 * dim];
    fill_standard_normal(&mut rng, &mut means);
    let stds: Vec<f32> = (0..3 * dim).map(|i| 0.3 + 0.1 * (i % 4) as f32).collect();
    (means, stds)
}

fn schedule() -> Schedule<1000> {
    Schedule::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 1000, false).unwrap()
}

/// (ODE NLLs, exact NLLs of the smoothed mixture) of 64 of the mixture's points.
fn run(dim: usize, probes: Option<usize>, rtol: f64) -> (Vec<f64>, Vec<f64>, u64) {
    let (means, stds) = mixture(dim);
    let g = GaussianMixture::new(dim, &W, &means, &stds).unwrap();
    let mut rng = rand_pcg::Pcg32::seed_from_u64(11);
    let mut x = vec![0.0f32; 64 * dim];
    g.sample(&mut rng, &mut x, None).unwrap();
    let s = schedule();
    let sigma0 = table_sigma(&s, 0).unwrap();
    let mut den = OptimalDenoiser::new(g);
    let o = OdeOptions { rtol, atol: rtol, probes, batch: 32, bins: None };
    let r = nll(&mut den, &s, &x, o, 3, 0, &mut |_, _| {}).unwrap();
    let exact = x.chunks_exact(dim).map(|p| -g.noisy_log_density(p, 1.0, sigma0).unwrap()).collect();
    (r.per_example, exact, r.nfe)
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// The mean and the largest absolute difference.
fn diffs(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mean = a.iter().zip(b).map(|(x, y)| x - y).sum::<f64>() / a.len() as f64;
    (mean, max_diff(a, b))
}

#[test]
fn the_exact_divergence_gives_the_mixture_density_within_the_tolerance() {
    // Per point the ODE's NLL also carries the prior's approximation: N(0, (1 + sigma_1^2) I) in
    // place of the mixture convolved with N(0, sigma_1^2), off by about |mu| |x| / sigma_1^2
    // (3e-3 nats here); over the points that averages out, and the solver's error is left.
    let (ode, exact, nfe) = run(2, None, 1e-5);
    let (mean, max) = diffs(&ode, &exact);
    eprintln!("2-D, exact divergence, rtol 1e-5: mean {mean:.2e}, max {max:.2e} nats ({nfe} evaluations)");
    assert!(mean.abs() < 3e-4 && max < 1e-2, "{mean} {max}");
    // a looser tolerance is further off, with fewer evaluations
    let (loose, _, nfe_loose) = run(2, None, 1e-2);
    let (mean_loose, max_loose) = diffs(&loose, &exact);
    eprintln!("rtol 1e-2: mean {mean_loose:.2e}, max {max_loose:.2e} nats ({nfe_loose} evaluations)");
    assert!(max_loose > 3.0 * max && nfe_loose < nfe, "{max_loose} vs {max}, {nfe_loose} vs {nfe}");
}

#[test]
fn hutchinson_agrees_within_its_monte_carlo_error() {
    let dim = 20;
    let (exact_div, exact, _) = run(dim, None, 1e-5);
    let (mean, max) = diffs(&exact_div, &exact);
    eprintln!("{dim}-D, exact divergence: mean {mean:.2e}, max {max:.2e} nats");
    assert!(mean.abs() < 3e-3 && max < 0.1, "{mean} {max}");
    let mut spread = vec![];
    for k in [1, 4] {
        let (h, _, _) = run(dim, Some(k), 1e-5);
        // against the exact divergence's run: the difference is Hutchinson's noise alone
        let d: Vec<f64> = h.iter().zip(&exact_div).map(|(a, b)| a - b).collect();
        let n = d.len() as f64;
        let mean = d.iter().sum::<f64>() / n;
        let sd = (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        eprintln!("{dim}-D, {k} probes: mean difference {mean:.3e} +- {:.3e}, spread {sd:.3e}", sd / n.sqrt());
        // unbiased: the mean difference within 4 standard errors
        assert!(mean.abs() < 4.0 * sd / n.sqrt(), "{mean} {sd}");
        spread.push(sd);
    }
    // and more probes, less noise (about 1/sqrt(k))
    assert!(spread[0] > 1e-3 && spread[1] < 0.75 * spread[0], "{spread:?}");
}

#[test]
fn eval_reports_the_ode_likelihood_next_to_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mix = dir.path().join("mix.json");
    std::fs::write(
        &mix,
        r#"{"weights": [0.3, 0.7], "means": [[-1.5, 0.5], [1.0, -0.5]], "stds": [[0.4, 0.6], [0.5, 0.3]]}"#,
    )
    .unwrap();
    let o = Command::cargo_bin("elbo")
        .unwrap()
        .args(["eval", "--model", "optimal", "--data"])
        .arg(format!("gmm:{}", mix.display()))
        .args(["--n", "100", "--mmd-samples", "0", "--likelihood", "ode", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (ode, exact, bound) = (
        v["ode_nll_nats"].as_f64().unwrap(),
        v["exact_nll_nats"].as_f64().unwrap(),
        v["neg_elbo_nats"].as_f64().unwrap(),
    );
    // the smoothing by sigma_0 = 0.01 moves the NLL by about 1e-4 nats
    assert!((ode - exact).abs() < 2e-3, "{ode} vs {exact}");
    assert!(bound > ode, "the bound {bound} must be above the NLL {ode}");
    assert!(v["ode_nfe"].as_u64().unwrap() > 10 && v["ode_probes"].is_null());
    assert!((v["ode_bpd"].as_f64().unwrap() - ode / (2.0 * std::f64::consts::LN_2)).abs() < 1e-12);
    // optimal:FILE.json with other data: the mixture's denoiser on two-moons points
    let o = Command::cargo_bin("elbo")
        .unwrap()
        .arg("eval")
        .arg("--model")
        .arg(format!("optimal:{}", mix.display()))
        .args(["--data", "two-moons", "--n", "50", "--mmd-samples", "0", "--likelihood", "ode", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["ode_nll_nats"].as_f64().unwrap() < v["neg_elbo_nats"].as_f64().unwrap());
}

#[test]
fn bad_ode_flags_are_refused_with_one_line() {
    for (flags, says) in [
        (&["--rtol", "0"][..], "--rtol"),
        (&["--atol", "nan"], "--rtol, --atol"),
        (&["--probes", "0"], "--probes"),
        (&["--ode-batch", "0"], "--ode-batch"),
        (&["--shard", "0/2", "--json"], "--shard"),
    ] {
        let o = Command::cargo_bin("elbo")
            .unwrap()
            .args(["eval", "--model", "optimal", "--data", "8gaussians", "--n", "10", "--likelihood", "ode"])
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{flags:?}: {err}");
    }
}
