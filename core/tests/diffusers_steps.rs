//! DDPM and DDIM updates and timestep spacings against diffusers (`golden/steps.json`,
//! `golden/spacing.json`; model outputs and noise are given, so only the arithmetic is compared).

mod common;

use common::{golden, nums, nums_f32};
use elbo_core::elbo::ReverseVariance;
use elbo_core::sampler::{Clip, DdimCoefficients, Sigma, Spacing, Timesteps, ddim_update, ddpm_sigma, ddpm_update};
use elbo_core::schedule::{BetaSchedule, Schedule, stride};
use elbo_core::{NoiseSchedule, Prediction};

#[test]
fn spacings_match_diffusers_exactly() {
    for case in golden("spacing").as_array().unwrap() {
        let spacing = Spacing::from_name(case["spacing"].as_str().unwrap()).unwrap();
        let t = case["T"].as_u64().unwrap() as usize;
        let k = case["K"].as_u64().unwrap() as usize;
        let ts = Timesteps::new(spacing, k, t, 0).unwrap();
        let expected: Vec<usize> = nums(&case["timesteps"]).iter().map(|&v| v as usize + 1).collect();
        let got: Vec<usize> = ts.iter().collect();
        assert_eq!(got, expected, "{spacing:?} T={t} K={k}");
    }
}

/// diffusers recomputes `beta_t = 1 - abar_t / abar_{t-1}` and the posterior coefficients in
/// float32 (notes: ~2e-4 relative at small t); ours come from float64. The tolerance allows that.
const TOL: f64 = 5e-4;

fn close(got: &[f32], expected: &[f64], what: &str) {
    let worst = got.iter().zip(expected).map(|(&g, &e)| (f64::from(g) - e).abs() / (1.0 + e.abs())).fold(0.0, f64::max);
    assert!(worst < TOL, "{what}: worst error {worst:.2e}");
}

#[test]
fn ddpm_and_ddim_steps_match_diffusers() {
    let g = golden("steps");
    let sample = nums_f32(&g["sample"]);
    let model_output = nums_f32(&g["model_output"]);
    let s = Schedule::<1000>::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 1000, false).unwrap();
    let mut worst = 0.0f64;
    for case in g["cases"].as_array().unwrap() {
        let kind = Prediction::from_name(case["prediction"].as_str().unwrap()).unwrap();
        let t = case["t"].as_u64().unwrap() as usize;
        let noise = nums_f32(&case["noise"]);
        let expected = nums(&case["prev_sample"]);
        let mut x = sample.clone();
        let what = if case["sampler"] == "ddpm" {
            let variance = match case["variance"].as_str().unwrap() {
                "fixed_small" => ReverseVariance::Small,
                _ => ReverseVariance::Large,
            };
            let step = stride(&s, t, t - 1).unwrap();
            let sigma = ddpm_sigma(&step, variance).unwrap();
            ddpm_update(
                &step,
                kind,
                &model_output,
                &mut x,
                Sigma::Fixed(sigma),
                Clip::Off,
                |first, out: &mut [f32]| out.copy_from_slice(&noise[first..first + out.len()]),
            )
            .unwrap();
            format!("ddpm {kind:?} {variance:?} t={t}")
        } else {
            let spacing = Spacing::from_name(case["spacing"].as_str().unwrap()).unwrap();
            let k = case["K"].as_u64().unwrap() as usize;
            let i = case["index"].as_u64().unwrap() as usize;
            let eta = case["eta"].as_f64().unwrap() as f32;
            let ts = Timesteps::new(spacing, k, 1000, 0).unwrap();
            assert_eq!(ts.get(i).unwrap(), t);
            let c =
                DdimCoefficients::new(&s.step(t).unwrap().cur, &s.marginal(ts.ddim_previous(i).unwrap()).unwrap(), eta);
            ddim_update(&c, kind, &model_output, &mut x, Clip::Off, |first, out: &mut [f32]| {
                out.copy_from_slice(&noise[first..first + out.len()])
            })
            .unwrap();
            format!("ddim {kind:?} eta={eta} {spacing:?} K={k} t={t}")
        };
        close(&x, &expected, &what);
        for (&g, &e) in x.iter().zip(&expected) {
            worst = worst.max((f64::from(g) - e).abs() / (1.0 + e.abs()));
        }
    }
    eprintln!("worst deviation from diffusers over all step cases: {worst:.2e}");
}
