//! The few-step solvers against the closed-form probability-flow ODE of Gaussian data (as
//! `dpm_solver.rs`): for data `N(mu, s^2)` and the exact denoiser the ODE carries `x_u` at one
//! level to `x_t = alpha_t mu + sqrt(alpha_t^2 s^2 + sigma_t^2) z` at another, with
//! `z = (x_u - alpha_u mu) / sqrt(alpha_u^2 s^2 + sigma_u^2)`.
//!
//! On a schedule linear in `lambda`, with every `r`-th timestep down to the first (so every
//! step has the same `h`), the error of each solver falls with the number of steps at its
//! order: Euler's halves when the steps double, Heun's falls about 4-fold; the multistep
//! solvers start with a first-order step (local error `O(h^2)`), so theirs falls about 4-fold
//! at least, and the higher orders are the more accurate. UniPC's corrector adds one order to
//! its predictor's (UniPC of order 1 converges as a second-order method).

use elbo_core::NoiseSchedule;
use elbo_core::denoiser::Condition;
use elbo_core::gmm::{GaussianMixture, OptimalDenoiser};
use elbo_core::sampler::{Deis, Euler, FinalSigma, Heun, SigmaFamily, Sigmas, Spacing, UniPc, UniPcVariant};
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

#[derive(Clone, Copy, Debug)]
enum Solver {
    Euler,
    Heun,
    UniPc(usize, UniPcVariant),
    Deis(usize),
}

/// The largest error over a grid of starts, in the VP scale at the last level.
fn error(solver: Solver, steps: usize) -> f64 {
    let sched = schedule();
    let g = GaussianMixture::new(1, &[1.0], &MU, &SD).unwrap();
    let mut den = OptimalDenoiser::new(g);
    let x_u: Vec<f32> = (0..41).map(|i| -2.5 + 0.125 * i as f32).collect();
    let mut x = x_u.clone();
    let mut scratch = vec![0.0f32; x.len()];
    let mut history = vec![0.0f32; 3 * x.len()];
    let sigmas = Sigmas::new(SigmaFamily::Multistep, Spacing::Leading, steps, T, 0).unwrap().ending(FinalSigma::First);
    let c = Condition::Unconditional;
    // Euler and Heun return x_sigma = x / alpha
    let mut sigma_scale = false;
    match solver {
        Solver::Euler => {
            Euler::new(sigmas).sample(&mut den, &sched, &mut x, &mut scratch, c).unwrap();
            sigma_scale = true;
        }
        Solver::Heun => {
            Heun::new(sigmas).sample(&mut den, &sched, &mut x, &mut scratch, &mut history[..2 * 41], c).unwrap();
            sigma_scale = true;
        }
        Solver::UniPc(order, variant) => {
            let mut u = UniPc::new(order, sigmas).unwrap();
            u.variant = variant;
            u.lower_order_final = false;
            u.sample(&mut den, &sched, &mut x, &mut scratch, &mut history[..order * 41], c).unwrap();
        }
        Solver::Deis(order) => {
            let mut d = Deis::new(order, sigmas).unwrap();
            d.lower_order_final = false;
            d.sample(&mut den, &sched, &mut x, &mut scratch, &mut history[..(order - 1) * 41], c).unwrap();
        }
    }
    let alpha_var = |t: usize| {
        let m = sched.marginal(t).unwrap();
        let a = (0.5 * m.log_abar).exp();
        (a, a * a * f64::from(SD[0]).powi(2) - m.log_abar.exp_m1())
    };
    let first = sigmas.get(&sched, 0).unwrap().timestep as usize + 1;
    let ((a_u, v_u), (a_1, v_1)) = (alpha_var(first), alpha_var(1));
    let mu = f64::from(MU[0]);
    x_u.iter()
        .zip(&x)
        .map(|(&xu, &got)| {
            let z = (f64::from(xu) - a_u * mu) / v_u.sqrt();
            let got = if sigma_scale { f64::from(got) * a_1 } else { f64::from(got) };
            (got - (a_1 * mu + v_1.sqrt() * z)).abs()
        })
        .fold(0.0, f64::max)
}

#[test]
fn each_solver_converges_at_its_order_on_the_probability_flow_of_gaussian_data() {
    let solvers = [
        (Solver::Euler, 1.8),
        (Solver::Heun, 3.5),
        (Solver::UniPc(1, UniPcVariant::Bh2), 3.2),
        (Solver::UniPc(2, UniPcVariant::Bh2), 3.5),
        (Solver::UniPc(2, UniPcVariant::Bh1), 3.5),
        (Solver::UniPc(3, UniPcVariant::Bh2), 3.5),
        (Solver::Deis(1), 1.8),
        (Solver::Deis(2), 3.2),
        (Solver::Deis(3), 3.5),
    ];
    let mut errors = vec![];
    for (s, min_ratio) in solvers {
        // K + 1 = 10, 20, 40 divides T - 1 = 960: uniform steps of h = 9 / (K + 1)
        let e: Vec<f64> = [9, 19, 39].iter().map(|&k| error(s, k)).collect();
        eprintln!("{s:?}: errors at 9, 19, 39 steps: {e:?}");
        // (below 1e-4 the float32 samples' rounding is what is left)
        for w in e.windows(2).filter(|w| w[1] > 1e-4) {
            assert!(w[0] / w[1] > min_ratio, "{s:?}: {:e} -> {:e}", w[0], w[1]);
        }
        assert!(e[2] < 1e-4 || e.windows(2).all(|w| w[1] > 1e-4), "{s:?}: {e:?}");
        errors.push(e[1]);
    }
    // at 19 steps: Heun beats Euler, and each higher order beats the lower
    let [euler, heun, u1, u2, _, u3, d1, d2, d3] = errors[..] else { unreachable!() };
    assert!(heun < euler && u3 < u2 && u2 < u1 && d3 < d2 && d2 < d1, "{errors:?}");
}
