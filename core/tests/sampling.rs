//! Samplers with the Bayes-optimal denoiser of a Gaussian mixture reproduce the mixture
//! (two-sample Kolmogorov-Smirnov tests against exact draws on four projections), and guidance
//! behaves as seed 004 eqs. 164-170 say.
//!
//! False-failure rate: each KS test is at level 1e-4 (asymptotic critical value), 4 projections
//! per sampler, so below 2e-3 per run for the whole file; the seeds are fixed, so in practice
//! the outcome is deterministic.

mod common;

use common::{ks_critical, ks_two_sample};
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use elbo_core::elbo::ReverseVariance;
use elbo_core::gmm::{GaussianMixture, OptimalDenoiser};
use elbo_core::rng::Sequential;
use elbo_core::rng::fill_standard_normal;
use elbo_core::sampler::{AnnealedLangevin, ClassifierFree, ClassifierGuided, Ddim, Ddpm, Spacing, Timesteps};
use elbo_core::schedule::{BetaSchedule, Schedule};
use elbo_core::{Error, NoiseSchedule, RunError};
use rand_core::SeedableRng;
use rand_pcg::Pcg32;

const W: [f32; 3] = [0.3, 0.5, 0.2];
const MU: [f32; 6] = [-2.0, 0.0, 1.5, 1.0, 0.0, -2.5];
const SD: [f32; 6] = [0.5, 0.3, 0.4, 0.6, 0.8, 0.2];
const N: usize = 2000;

fn mixture() -> GaussianMixture<'static> {
    GaussianMixture::new(2, &W, &MU, &SD).unwrap()
}

fn schedule() -> Schedule<1000> {
    Schedule::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 1000, false).unwrap()
}

fn projections(x: &[f32]) -> [Vec<f64>; 4] {
    let p = |f: &dyn Fn(f64, f64) -> f64| x.chunks(2).map(|r| f(f64::from(r[0]), f64::from(r[1]))).collect();
    [p(&|a, _| a), p(&|_, b| b), p(&|a, b| a + b), p(&|a, b| a - b)]
}

/// The largest KS statistic over the projections, and the critical value.
fn ks_vs_exact(samples: &[f32], mixture: &GaussianMixture<'_>, seed: u64) -> (f64, f64) {
    let mut exact = vec![0.0f32; samples.len()];
    mixture.sample(&mut Pcg32::seed_from_u64(seed), &mut exact, None).unwrap();
    let (mut a, mut b) = (projections(samples), projections(&exact));
    let d = (0..4).map(|i| ks_two_sample(&mut a[i], &mut b[i])).fold(0.0, f64::max);
    (d, ks_critical(1e-4, N, N))
}

fn prior(seed: u64) -> (Vec<f32>, Pcg32) {
    let mut rng = Pcg32::seed_from_u64(seed);
    let mut x = vec![0.0f32; 2 * N];
    fill_standard_normal(&mut rng, &mut x);
    (x, rng)
}

#[test]
fn ddpm_with_the_optimal_denoiser_reproduces_the_mixture() {
    let s = schedule();
    let mut den = OptimalDenoiser::new(mixture());
    for (variance, seed) in [(ReverseVariance::Small, 1), (ReverseVariance::Large, 2)] {
        let (mut x, mut rng) = prior(seed);
        let mut scratch = vec![0.0; x.len()];
        let ddpm = Ddpm { variance, ..Ddpm::default() };
        ddpm.sample(&mut den, &s, &mut x, &mut scratch, Condition::Unconditional, &mut Sequential(&mut rng)).unwrap();
        let (d, crit) = ks_vs_exact(&x, &mixture(), 100 + seed);
        eprintln!("DDPM {variance:?}: KS {d:.4} (critical {crit:.4})");
        assert!(d < crit, "DDPM {variance:?}: KS {d} >= {crit}");
    }
}

#[test]
fn ddim_with_the_optimal_denoiser_reproduces_the_mixture() {
    let s = schedule();
    let mut den = OptimalDenoiser::new(mixture());
    for (eta, spacing, k, seed) in [(0.0, Spacing::Trailing, 100, 3), (1.0, Spacing::Leading, 250, 4)] {
        let (mut x, mut rng) = prior(seed);
        let mut scratch = vec![0.0; x.len()];
        let ddim = Ddim::new(eta, spacing, k, 1000).unwrap();
        ddim.sample(&mut den, &s, &mut x, &mut scratch, Condition::Unconditional, &mut Sequential(&mut rng)).unwrap();
        let (d, crit) = ks_vs_exact(&x, &mixture(), 200 + seed);
        eprintln!("DDIM eta={eta} {spacing:?} K={k}: KS {d:.4} (critical {crit:.4})");
        assert!(d < crit, "DDIM eta={eta}: KS {d} >= {crit}");
    }
}

/// The test has power: the exact denoiser of a mixture shifted by 0.3 is rejected.
#[test]
fn the_two_sample_test_rejects_a_wrong_denoiser() {
    let s = schedule();
    let shifted: Vec<f32> = MU.iter().map(|m| m + 0.3).collect();
    let wrong = GaussianMixture::new(2, &W, &shifted, &SD).unwrap();
    let mut den = OptimalDenoiser::new(wrong);
    let (mut x, mut rng) = prior(5);
    let mut scratch = vec![0.0; x.len()];
    Ddim::new(0.0, Spacing::Trailing, 50, 1000)
        .unwrap()
        .sample(&mut den, &s, &mut x, &mut scratch, Condition::Unconditional, &mut Sequential(&mut rng))
        .unwrap();
    let (d, crit) = ks_vs_exact(&x, &mixture(), 300);
    assert!(d > crit, "a shifted mixture was not detected: KS {d} < {crit}");
}

/// Annealed Langevin dynamics (seed 004 eq. 158) with the exact score: 100 levels, 20 steps each.
#[test]
fn annealed_langevin_reproduces_the_mixture() {
    let s = schedule();
    let mut den = OptimalDenoiser::new(mixture());
    let (mut x, mut rng) = prior(6);
    let mut scratch = vec![0.0; x.len()];
    let langevin = AnnealedLangevin {
        levels: Timesteps::new(Spacing::Leading, 100, 1000, 0).unwrap(),
        steps_per_level: 20,
        step_size: 0.5,
        denoise: false,
    };
    langevin.sample(&mut den, &s, &mut x, &mut scratch, Condition::Unconditional, &mut Sequential(&mut rng)).unwrap();
    let (d, crit) = ks_vs_exact(&x, &mixture(), 400);
    eprintln!("Langevin: KS {d:.4} (critical {crit:.4})");
    assert!(d < crit, "Langevin: KS {d} >= {crit}");
}

fn level(s: &Schedule<1000>, t: usize) -> NoiseLevel {
    NoiseLevel::of(&s.step(t).unwrap())
}

/// Classifier-free guidance, eq. 170: gamma = 1 is the conditional model, gamma = 0 the
/// unconditional one, and other gammas the affine combination.
#[test]
fn classifier_free_guidance_combines_conditional_and_unconditional() {
    let s = schedule();
    let mut den = OptimalDenoiser::new(mixture());
    let x = [0.3f32, -0.4, 1.0, 2.0];
    let labels = [0u32, 2];
    for t in [1usize, 300, 900] {
        let lv = level(&s, t);
        let (mut cond, mut uncond) = ([0.0f32; 4], [0.0f32; 4]);
        den.predict(&x, lv, Condition::Class(&labels), &mut cond).unwrap();
        den.predict(&x, lv, Condition::Unconditional, &mut uncond).unwrap();
        for gamma in [0.0f32, 1.0, 3.0] {
            let mut scratch = [0.0f32; 4];
            let mut g = ClassifierFree::new(&mut den, gamma, &mut scratch).unwrap();
            let mut out = [0.0f32; 4];
            g.predict(&x, lv, Condition::Class(&labels), &mut out).unwrap();
            for i in 0..4 {
                let want = gamma * cond[i] + (1.0 - gamma) * uncond[i];
                assert!((out[i] - want).abs() <= 1e-6 * (1.0 + want.abs()), "t={t} gamma={gamma}");
            }
        }
    }
}

/// Classifier guidance with the exact classifier p(k | x_t) at gamma = 1 turns the
/// unconditional score into the conditional one (eqs. 164-166).
#[test]
fn classifier_guidance_with_the_exact_classifier_is_the_conditional_model() {
    let s = schedule();
    let mut den = OptimalDenoiser::new(mixture());
    let x = [0.3f32, -0.4, 1.0, 2.0, -1.9, 0.1];
    let labels = [0u32, 2, 1];
    for t in [20usize, 300, 900] {
        let lv = level(&s, t);
        let mut cond = [0.0f32; 6];
        den.predict(&x, lv, Condition::Class(&labels), &mut cond).unwrap();
        let mut scratch = [0.0f32; 6];
        let mut g = ClassifierGuided::new(OptimalDenoiser::new(mixture()), mixture(), 3, 1.0, &mut scratch).unwrap();
        let mut out = [0.0f32; 6];
        g.predict(&x, lv, Condition::Class(&labels), &mut out).unwrap();
        for i in 0..6 {
            assert!((out[i] - cond[i]).abs() < 2e-4 * (1.0 + cond[i].abs()), "t={t} i={i}: {} vs {}", out[i], cond[i]);
        }
    }
}

/// Guided sampling towards class k with gamma = 1 reproduces component k.
#[test]
fn conditional_sampling_reproduces_the_component() {
    let s = schedule();
    let mut den = OptimalDenoiser::new(mixture());
    let (mut x, mut rng) = prior(7);
    let mut scratch = vec![0.0; x.len()];
    let labels = vec![1u32; N];
    let mut cfg_scratch = vec![0.0; x.len()];
    let mut guided = ClassifierFree::new(&mut den, 1.0, &mut cfg_scratch).unwrap();
    Ddim::new(0.0, Spacing::Trailing, 100, 1000)
        .unwrap()
        .sample(&mut guided, &s, &mut x, &mut scratch, Condition::Class(&labels), &mut Sequential(&mut rng))
        .unwrap();
    let component = GaussianMixture::new(2, &W[1..2], &MU[2..4], &SD[2..4]).unwrap();
    let (d, crit) = ks_vs_exact(&x, &component, 500);
    assert!(d < crit, "class 1: KS {d} >= {crit}");
}

#[test]
fn samplers_reject_bad_input() {
    let s = schedule();
    let mut den = OptimalDenoiser::new(mixture());
    let mut rng = Pcg32::seed_from_u64(0);
    let (mut x, mut scratch) = (vec![0.0f32; 5], vec![0.0f32; 5]);
    let r =
        Ddpm::default().sample(&mut den, &s, &mut x, &mut scratch, Condition::Unconditional, &mut Sequential(&mut rng));
    assert!(matches!(r, Err(RunError::Core(Error::DimensionMismatch { .. }))));
    let (mut x, mut scratch) = (vec![0.0f32; 4], vec![0.0f32; 4]);
    let r = Ddpm::default().sample(
        &mut den,
        &s,
        &mut x,
        &mut scratch,
        Condition::Class(&[0, 3]),
        &mut Sequential(&mut rng),
    );
    assert_eq!(r, Err(RunError::Core(Error::ClassOutOfRange { class: 3, classes: 3 })));
    x[1] = f32::NAN;
    let r =
        Ddpm::default().sample(&mut den, &s, &mut x, &mut scratch, Condition::Unconditional, &mut Sequential(&mut rng));
    assert!(matches!(r, Err(RunError::Core(Error::InvalidParameter { .. }))));
    assert_eq!(
        Ddim::new(0.0, Spacing::Leading, 1001, 1000).unwrap_err(),
        Error::TooManySteps { steps: 1001, timesteps: 1000 }
    );
    assert!(Ddim::new(-1.0, Spacing::Leading, 10, 1000).is_err());
    // Guidance needs a model with classes.
    struct Uncond;
    impl Denoiser for Uncond {
        type Error = ();
        fn dim(&self) -> usize {
            2
        }
        fn prediction(&self) -> elbo_core::Prediction {
            elbo_core::Prediction::Eps
        }
        fn predict(&mut self, _: &[f32], _: NoiseLevel, _: Condition<'_>, out: &mut [f32]) -> Result<(), ()> {
            out.fill(0.0);
            Ok(())
        }
    }
    let mut buf = [0.0f32; 4];
    assert_eq!(ClassifierFree::new(Uncond, 2.0, &mut buf).err(), Some(Error::Unconditional));
    let mut un = Uncond;
    let r =
        Ddpm::default().sample(&mut un, &s, &mut x, &mut scratch, Condition::Class(&[0, 0]), &mut Sequential(&mut rng));
    assert_eq!(r, Err(RunError::Core(Error::Unconditional)));
    // eps prediction cannot sample from zero terminal SNR.
    let zts = Schedule::<1000>::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 1000, true).unwrap();
    let (mut x, mut scratch) = (vec![0.0f32; 4], vec![0.0f32; 4]);
    let r = Ddpm::default().sample(
        &mut un,
        &zts,
        &mut x,
        &mut scratch,
        Condition::Unconditional,
        &mut Sequential(&mut rng),
    );
    assert!(matches!(r, Err(RunError::Core(Error::Unsupported(_)))));
    assert_eq!(zts.steps(), 1000);
}

/// The exact posterior mean against 1-D numerical integration over x_0.
#[test]
fn optimal_denoiser_matches_quadrature() {
    let (w, mu, sd) = ([0.6f32, 0.4], [-1.0f32, 2.0], [0.3f32, 0.7]);
    let g = GaussianMixture::new(1, &w, &mu, &sd).unwrap();
    let s = schedule();
    let mut den = OptimalDenoiser::new(g);
    for t in [5usize, 200, 700] {
        let lv = level(&s, t);
        let (a, sn) = (f64::from(lv.sqrt_abar), f64::from(lv.sqrt_one_minus_abar));
        for xt in [-1.5f32, 0.2, 2.5] {
            let (mut num, mut den_q) = (0.0, 0.0);
            let h = 1e-4;
            let mut x0 = -8.0;
            while x0 < 10.0 {
                let p: f64 = (0..2)
                    .map(|k| {
                        let z = (x0 - f64::from(mu[k])) / f64::from(sd[k]);
                        f64::from(w[k]) * (-0.5 * z * z).exp() / f64::from(sd[k])
                    })
                    .sum();
                let r = (f64::from(xt) - a * x0) / sn;
                let lik = (-0.5 * r * r).exp();
                num += x0 * p * lik;
                den_q += p * lik;
                x0 += h;
            }
            let mut out = [0.0f32];
            den.predict(&[xt], lv, Condition::Unconditional, &mut out).unwrap();
            let want = num / den_q;
            assert!((f64::from(out[0]) - want).abs() < 1e-5, "t={t} xt={xt}: {} vs {want}", out[0]);
        }
    }
    // And the mixture density integrates to 1.
    let total: f64 = (0..180_000).map(|i| g.log_density(&[-8.0 + i as f32 * 1e-4]).unwrap().exp() * 1e-4).sum();
    assert!((total - 1.0).abs() < 1e-4, "{total}");
}
