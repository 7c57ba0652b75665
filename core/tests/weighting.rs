//! The weighted-ELBO family (seed 002) and the timestep samplers.

use elbo_core::Error;
use elbo_core::rng::uniform_f64;
use elbo_core::schedule::{CosineLogSnr, LinearGamma, LogSnrSchedule};
use elbo_core::timesteps::{LossSecondMomentResampler, TimeSampling};
use elbo_core::weighting::Weighting;
use rand_core::SeedableRng;
use rand_pcg::Pcg32;

fn all() -> Vec<Weighting> {
    Weighting::NAMES.iter().map(|n| Weighting::from_name(n, None).unwrap()).collect()
}

/// The formulas of seed 002's table at a few points, written out here independently.
#[test]
fn weightings_match_the_table() {
    let sech = |x: f64| 1.0 / x.cosh();
    for l in [-8.0f64, -1.0, 0.0, 0.7, 6.0] {
        let want = [
            1.0,
            sech(l / 2.0),
            (-(l - 2.4f64).powi(2) / (2.0 * 2.4 * 2.4)).exp() / (2.4 * (2.0 * std::f64::consts::PI).sqrt())
                * ((-l).exp() + 0.25),
            (-l / 2.0).exp(),
            (-l / 2.0).exp(),
            (-l).exp() * sech(l / 4.0).powi(2),
            sech(l / 2.0) / (1.0 + l.exp()),
            sech(l / 2.0) * (5.0 * (-l).exp()).min(1.0),
            1.0 / (1.0 + l.exp()),
        ];
        for (w, want) in all().iter().zip(want) {
            let got = w.weight(l);
            assert!((got - want).abs() <= 1e-12 * want.abs().max(1e-300), "{w:?} at {l}: {got} vs {want}");
        }
    }
}

/// The monotone marks of the table, checked numerically on a dense lambda grid.
#[test]
fn monotone_marks_hold_numerically() {
    for w in all() {
        let grid: Vec<f64> = (0..4000).map(|i| -20.0 + i as f64 * 0.01).collect();
        let nonincreasing = grid.windows(2).all(|p| w.weight(p[1]) <= w.weight(p[0]) * (1.0 + 1e-12));
        assert_eq!(nonincreasing, w.is_monotone(), "{w:?}");
    }
}

/// `E_eps ||eps_hat - eps||^2` at log-SNR `lambda` for one data point `x`, when the denoiser
/// is the exact one of N(0, tau^2) data (linear in z): `eps_hat = k z`, `k = s / (a^2 tau^2 + s^2)`,
/// so the error is `(k a x)^2 + (k s - 1)^2`.
fn expected_sq_err(lambda: f64, x: f64, tau: f64) -> f64 {
    let a2 = 1.0 / (1.0 + (-lambda).exp());
    let (a, s) = (a2.sqrt(), (1.0 - a2).sqrt());
    let k = s / (a2 * tau * tau + s * s);
    (k * a * x).powi(2) + (k * s - 1.0).powi(2)
}

/// Seed 002 eq. 12: for a fixed denoiser the weighted loss depends on the schedule only through
/// its end points. Two schedules of different shape with the same end points (VDM's linear gamma
/// and the cosine log-SNR) give the same loss by quadrature in t, and it equals the integral over
/// lambda. A Monte Carlo estimate with t ~ U(0, 1) agrees within 4.5 standard errors for each,
/// with different variances (the schedule is the importance distribution, eq. 13).
#[test]
fn weighted_loss_depends_on_the_schedule_only_through_its_end_points() {
    let (x, tau) = (1.3, 0.5);
    let lg = LinearGamma::VDM;
    let (hi, lo) = lg.end_points();
    let cos = CosineLogSnr::new(lo, hi).unwrap();
    let simpson = |f: &dyn Fn(f64) -> f64, a: f64, b: f64, n: usize| {
        let h = (b - a) / n as f64;
        let mut s = f(a) + f(b);
        for i in 1..n {
            s += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0
    };
    for w in all() {
        let in_lambda = 0.5 * simpson(&|l| w.weight(l) * expected_sq_err(l, x, tau), lo, hi, 20_000);
        let mut estimates = Vec::new();
        for sched in [&lg as &dyn LogSnrSchedule, &cos] {
            let integrand = |t: f64| {
                let l = sched.log_snr(t);
                w.loss_term(l, sched.dlog_snr_dt(t), expected_sq_err(l, x, tau), 1.0)
            };
            let quad = simpson(&integrand, 1e-9, 1.0 - 1e-9, 200_000);
            assert!((quad - in_lambda).abs() < 1e-5 * in_lambda.abs().max(1e-3), "{w:?}: {quad} vs {in_lambda}");
            let mut rng = Pcg32::seed_from_u64(9);
            let m = 100_000;
            let draws: Vec<f64> = (0..m).map(|_| integrand(uniform_f64(&mut rng))).collect();
            let mean = draws.iter().sum::<f64>() / m as f64;
            let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (m - 1) as f64;
            let z = (mean - in_lambda) / (var / m as f64).sqrt();
            assert!(z.abs() < 4.5, "{w:?}: MC {mean} vs {in_lambda} (z = {z:.2})");
            estimates.push(var);
        }
        assert!((estimates[0] / estimates[1] - 1.0).abs() > 0.01, "{w:?}: equal variances {estimates:?}");
    }
}

#[test]
fn weighting_names_and_parameters() {
    assert_eq!(Weighting::from_name("p2", Some(0.5)).unwrap(), Weighting::P2 { gamma: 0.5 });
    assert_eq!(Weighting::from_name("sigmoid", Some(-2.0)).unwrap(), Weighting::Sigmoid { bias: -2.0 });
    assert_eq!(Weighting::from_name("elbow", None).unwrap_err(), Error::UnknownName { what: "weighting" });
    assert!(Weighting::from_name("elbo", Some(1.0)).is_err());
    assert!(Weighting::from_name("min-snr", Some(-5.0)).is_err());
    assert!(Weighting::from_name("p2", Some(f64::NAN)).is_err());
}

/// Discrete samplers: every marginal is uniform on 1..=T (chi-square, 1e-6 level), antithetic
/// pairs mirror each other, stratified batches cover every stratum once.
#[test]
fn timestep_samplers_are_uniform() {
    let steps = 10;
    for kind in [TimeSampling::Uniform, TimeSampling::Antithetic, TimeSampling::Stratified] {
        let mut rng = Pcg32::seed_from_u64(4);
        let mut counts = [0u32; 10];
        let mut batch = [0usize; 10];
        for _ in 0..10_000 {
            kind.fill_discrete(&mut rng, steps, &mut batch).unwrap();
            for &t in &batch {
                assert!((1..=steps).contains(&t));
                counts[t - 1] += 1;
            }
            if kind == TimeSampling::Stratified {
                let mut sorted = batch;
                sorted.sort();
                assert_eq!(sorted.to_vec(), (1..=10).collect::<Vec<_>>());
            }
            if kind == TimeSampling::Antithetic {
                assert!(
                    batch
                        .chunks(2)
                        .all(|p| p[0] + p[1] == steps + 1 || p[0] + p[1] == steps + 2 || p[0] + p[1] == steps)
                );
            }
        }
        // chi2(9) 1e-6 quantile: 46.3
        let chi2: f64 = counts.iter().map(|&c| (f64::from(c) - 10_000.0).powi(2) / 10_000.0).sum();
        assert!(chi2 < 46.3, "{kind:?}: {counts:?}");
    }
    assert_eq!(TimeSampling::Uniform.fill_discrete(&mut Pcg32::seed_from_u64(0), 0, &mut [0]), Err(Error::ZeroSteps));
}

/// improved-diffusion's resampler: uniform before warm-up; afterwards `p(t)` proportional to
/// `sqrt(E[L_t^2])` mixed with `uniform_prob`, and the importance weights `1 / (T p(t))` make the
/// weighted mean of any f(t) an unbiased estimate of its uniform mean (4.5-sigma test).
#[test]
fn loss_second_moment_resampler() {
    let steps = 20;
    let mut r = LossSecondMomentResampler::<32, 10>::new(steps, 0.001).unwrap();
    assert!((r.probability(7).unwrap() - 0.05).abs() < 1e-15);
    for _ in 0..10 {
        for t in 1..=steps {
            r.update(t, t as f64).unwrap();
        }
    }
    assert!(r.warmed_up());
    let total: f64 = (1..=steps).map(|t| t as f64).sum();
    for t in [1usize, 7, 20] {
        let want = 0.999 * t as f64 / total + 0.001 / steps as f64;
        assert!((r.probability(t).unwrap() - want).abs() < 1e-12, "t={t}");
    }
    let mut rng = Pcg32::seed_from_u64(8);
    let (mut ts, mut ws) = ([0usize; 1000], [0f64; 1000]);
    let f = |t: usize| (t as f64).sqrt() + if t == 3 { 10.0 } else { 0.0 };
    let uniform_mean = (1..=steps).map(f).sum::<f64>() / steps as f64;
    let mut draws = Vec::new();
    for _ in 0..200 {
        r.sample(&mut rng, &mut ts, &mut ws).unwrap();
        draws.extend(ts.iter().zip(&ws).map(|(&t, &w)| w * f(t)));
    }
    let m = draws.len() as f64;
    let mean = draws.iter().sum::<f64>() / m;
    let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (m - 1.0);
    assert!(((mean - uniform_mean) / (var / m).sqrt()).abs() < 4.5, "{mean} vs {uniform_mean}");
    assert!(r.update(0, 1.0).is_err() && r.update(3, f64::NAN).is_err());
    assert!(LossSecondMomentResampler::<8, 10>::new(9, 0.001).is_err());
}

/// The resampler over a heap `Vec` of slots (the host's) draws what the fixed-capacity one
/// (a device's) draws, and saves and restores its history exactly.
#[test]
fn resampler_storage_does_not_change_the_draws() {
    use elbo_core::timesteps::{Resampler, Slot};
    let steps = 12;
    let mut fixed = LossSecondMomentResampler::<16, 10>::new(steps, 0.001).unwrap();
    let mut heap = Resampler::with_slots(vec![Slot::<10>::EMPTY; steps], steps, 0.001).unwrap();
    for k in 0..13 {
        for t in 1..=steps {
            let l = (t as f64).sqrt() + 0.1 * k as f64;
            fixed.update(t, l).unwrap();
            heap.update(t, l).unwrap();
        }
    }
    let (mut t1, mut w1, mut t2, mut w2) = ([0usize; 64], [0f64; 64], [0usize; 64], [0f64; 64]);
    fixed.sample(&mut Pcg32::seed_from_u64(3), &mut t1, &mut w1).unwrap();
    heap.sample(&mut Pcg32::seed_from_u64(3), &mut t2, &mut w2).unwrap();
    assert_eq!((t1, w1), (t2, w2));
    // save and restore: the oldest-first history and the count
    let mut restored = Resampler::with_slots(vec![Slot::<10>::EMPTY; steps], steps, 0.001).unwrap();
    for t in 1..=steps {
        let (h, n) = heap.entry(t).unwrap();
        let h: Vec<f64> = h.collect();
        assert_eq!(h.len(), 10);
        assert_eq!(h[9], (t as f64).sqrt() + 0.1 * 12.0, "newest last");
        restored.restore(t, &h, n).unwrap();
    }
    restored.sample(&mut Pcg32::seed_from_u64(3), &mut t2, &mut w2).unwrap();
    assert_eq!((t1, w1), (t2, w2));
    assert!(Resampler::with_slots(vec![Slot::<10>::EMPTY; 4], 5, 0.001).is_err());
}
