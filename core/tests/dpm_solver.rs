//! DPM-Solver++ against the closed-form probability-flow ODE of Gaussian data: for data
//! `N(mu, s^2)` and the exact denoiser, the ODE carries `x_u` at one time to
//! `x_t = alpha_t mu + sqrt(alpha_t^2 s^2 + sigma_t^2) z` at another, with
//! `z = (x_u - alpha_u mu) / sqrt(alpha_u^2 s^2 + sigma_u^2)` (the marginals stay Gaussian and
//! the flow is the monotone affine map between them).
//!
//! The schedule is made linear in the half log-SNR `lambda` (custom betas), and the solver
//! visits every `r`-th timestep down to the first (`leading` spacing, `final_sigmas_type =
//! "sigma_min"`, no lower-order final steps), so every step has the same `h`. The error of the
//! first-order method halves when the steps double; the multistep methods start with a
//! first-order step (local error `O(h^2)`), so theirs falls about 4-fold (more while the
//! higher-order steps dominate), and order 3 is the most accurate.

use elbo_core::NoiseSchedule;
use elbo_core::denoiser::Condition;
use elbo_core::gmm::{GaussianMixture, OptimalDenoiser};
use elbo_core::sampler::{DpmSolverPP, FinalSigma, Spacing};
use elbo_core::schedule::{BetaSchedule, Schedule};

const MU: [f32; 1] = [0.7];
const SD: [f32; 1] = [0.25];
const T: usize = 961;

/// `lambda` from 5 at t = 1 down to -4 at t = T, linearly.
fn schedule() -> Schedule<T> {
    let lambda = |t: usize| 5.0 - 9.0 * (t - 1) as f64 / (T - 1) as f64;
    let abar = |t: usize| if t == 0 { 1.0 } else { 1.0 / (1.0 + (-2.0 * lambda(t)).exp()) };
    let betas: Vec<f64> = (1..=T).map(|t| 1.0 - abar(t) / abar(t - 1)).collect();
    Schedule::new(&BetaSchedule::Custom(&betas), T, false).unwrap()
}

fn error(order: usize, steps: usize) -> f64 {
    let sched = schedule();
    let g = GaussianMixture::new(1, &[1.0], &MU, &SD).unwrap();
    let mut den = OptimalDenoiser::new(g);
    let x_u: Vec<f32> = (0..41).map(|i| -2.5 + 0.125 * i as f32).collect();
    let mut x = x_u.clone();
    let mut scratch = vec![0.0f32; x.len()];
    let mut history = vec![0.0f32; (order - 1) * x.len()];
    let mut dpm = DpmSolverPP::new(order, Spacing::Leading, steps, T, 0).unwrap();
    dpm.sigmas = dpm.sigmas.ending(FinalSigma::First);
    dpm.lower_order_final = false;
    dpm.sample(&mut den, &sched, &mut x, &mut scratch, &mut history, Condition::Unconditional).unwrap();
    let alpha_var = |t: usize| {
        let m = sched.marginal(t).unwrap();
        let a = (0.5 * m.log_abar).exp();
        (a, a * a * f64::from(SD[0]).powi(2) - m.log_abar.exp_m1())
    };
    let ((a_u, v_u), (a_1, v_1)) = (alpha_var(dpm.sigmas.get(&sched, 0).unwrap().timestep as usize + 1), alpha_var(1));
    let mu = f64::from(MU[0]);
    x_u.iter()
        .zip(&x)
        .map(|(&xu, &got)| {
            let z = (f64::from(xu) - a_u * mu) / v_u.sqrt();
            (f64::from(got) - (a_1 * mu + v_1.sqrt() * z)).abs()
        })
        .fold(0.0, f64::max)
}

#[test]
fn dpm_solver_converges_at_its_order_on_the_probability_flow_of_gaussian_data() {
    // K + 1 = 10, 20, 40 divides T - 1 = 960: uniform steps of h = 9 / (K + 1)
    let e: Vec<[f64; 3]> = [9, 19, 39].iter().map(|&k| [error(1, k), error(2, k), error(3, k)]).collect();
    eprintln!("errors (order 1, 2, 3) at 9, 19, 39 steps: {e:?}");
    for (p, first, last) in [(0, 1.8, 1.8), (1, 2.5, 3.5), (2, 2.5, 3.5)] {
        for (w, min_ratio) in e.windows(2).zip([first, last]) {
            assert!(w[0][p] / w[1][p] > min_ratio, "order {}: {:e} -> {:e}", p + 1, w[0][p], w[1][p]);
        }
    }
    // and the higher orders are the more accurate
    assert!(e[2][2] < e[2][1] && e[2][1] < e[2][0], "{:?}", e[2]);
}
