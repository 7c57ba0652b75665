//! Schedule tables against a float64 evaluation of improved-diffusion's formulas and against
//! diffusers (both in `golden/schedules.json`, from `golden/make_goldens.py`).

mod common;

use common::{golden, nums, rel, ulps};
use elbo_core::schedule::{BetaSchedule, CosineLogSnr, LinearGamma, LogSnrSchedule, Schedule, Step, stride};
use elbo_core::{Error, NoiseSchedule};

type S = Schedule<1000>;

fn field(s: &Step, name: &str) -> f32 {
    match name {
        "betas" => s.beta,
        "alphas" => s.alpha,
        "alphas_cumprod" => s.cur.abar,
        "one_minus_alphas_cumprod" => s.cur.one_minus_abar,
        "snr" => s.snr,
        "log_snr" => s.log_snr,
        "posterior_variance" => s.posterior_variance,
        "posterior_log_variance_clipped" => s.posterior_log_variance_clipped,
        "posterior_mean_coef_x0" => s.posterior_mean_coef_x0,
        "posterior_mean_coef_xt" => s.posterior_mean_coef_xt,
        _ => panic!("{name}"),
    }
}

fn build(case: &serde_json::Value) -> S {
    let name = case["schedule"].as_str().unwrap();
    let t = case["T"].as_u64().unwrap() as usize;
    let zts = case["zero_terminal_snr"].as_bool().unwrap();
    S::new(&BetaSchedule::from_name(name, 1e-4, 0.02).unwrap(), t, zts).unwrap()
}

/// Every entry of every table, all four schedules at T = 1000 and 100, within 4 f32 ulps of
/// float64 (improved-diffusion's formulas evaluated by numpy; they form `1 - abar` in f64,
/// which is exact to ~1e-12 here).
#[test]
fn tables_match_float64_within_a_few_ulps() {
    for case in golden("schedules").as_array().unwrap() {
        let s = build(case);
        for (name, reference) in case["f64"].as_object().unwrap() {
            let reference = nums(reference);
            assert_eq!(reference.len(), s.steps());
            let mut worst = (0.0, 0);
            for (i, step) in s.iter().enumerate() {
                // btilde_1 = 0 has no ulp scale; the zero-terminal table's last log-SNR is -inf.
                if reference[i] == 0.0 {
                    assert_eq!(field(step, name), 0.0, "{name} t={}", i + 1);
                    continue;
                }
                let u = ulps(field(step, name), reference[i]);
                if u > worst.0 {
                    worst = (u, i + 1);
                }
            }
            // The zero-terminal rescale goes through sqrt and a shift: allow a little more.
            let tol = if case["zero_terminal_snr"].as_bool().unwrap() { 16.0 } else { 4.0 };
            assert!(
                worst.0 <= tol,
                "{} T={} {name}: {:.2} ulps at t={}",
                case["schedule"],
                case["T"],
                worst.0,
                worst.1
            );
        }
    }
}

/// diffusers builds its tables in float32 (notes: up to 1.3e-5 relative in abar for the cosine
/// schedule); ours are more accurate, so agreement is to diffusers' own error.
#[test]
fn tables_match_diffusers() {
    for case in golden("schedules").as_array().unwrap() {
        let s = build(case);
        let betas = nums(&case["diffusers"]["betas"]);
        let abar = nums(&case["diffusers"]["alphas_cumprod"]);
        // diffusers' zero-terminal rescale forms `beta_t = 1 - abar_t / abar_{t-1}` in float32: an
        // absolute error up to ~5e-7 (a relative 1e-3 at t = 5); our f64 agreement is tested above.
        let floor = if case["zero_terminal_snr"].as_bool().unwrap() { 0.2 } else { 1e-30 };
        for (i, step) in s.iter().enumerate() {
            assert!(
                rel(f64::from(step.beta), betas[i], floor) < 1e-5,
                "{} beta t={}: {} vs {}",
                case["schedule"],
                i + 1,
                step.beta,
                betas[i]
            );
            let tol = if step.cur.abar < 1e-3 { 1e-3 } else { 3e-5 };
            assert!(
                rel(f64::from(step.cur.abar), abar[i], 1e-12) < tol,
                "{} abar t={}: {} vs {}",
                case["schedule"],
                i + 1,
                step.cur.abar,
                abar[i]
            );
        }
    }
}

/// Several Rust ports divide integers in the cosine schedule and get beta = 0 everywhere but
/// the last step. Here every beta is positive and the last is capped at 0.999.
#[test]
fn cosine_schedule_uses_floating_point_division() {
    let s = S::new(&BetaSchedule::SquaredCosCapV2, 1000, false).unwrap();
    assert!(s.iter().all(|st| st.beta > 0.0));
    assert_eq!(s.step(1000).unwrap().beta, 0.999);
    // beta_1 = 1 - abar(1/T)/abar(0), evaluated independently here.
    let f = |x: f64| ((x + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
    assert!(rel(f64::from(s.step(1).unwrap().beta), 1.0 - f(1e-3) / f(0.0), 0.0) < 1e-6);
}

/// `1 - abar` at t = 1 is beta_1 itself: forming it in f32 would lose ~3 digits.
#[test]
fn one_minus_abar_is_exact_at_small_t() {
    let s = S::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 1000, false).unwrap();
    assert_eq!(s.step(1).unwrap().cur.one_minus_abar, 1e-4f32);
    let naive = 1.0f32 - s.step(1).unwrap().cur.abar;
    assert!((naive - 1e-4).abs() > 1e-9, "f32 1 - abar loses digits: {naive}");
}

#[test]
fn zero_terminal_snr_ends_at_zero_signal() {
    let s = S::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 1000, true).unwrap();
    let last = s.step(1000).unwrap();
    assert_eq!(last.cur.abar, 0.0);
    assert_eq!(last.snr, 0.0);
    assert_eq!(last.log_snr, f32::NEG_INFINITY);
    assert_eq!(last.beta, 1.0);
    // abar_1 is kept.
    let plain = S::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 1000, false).unwrap();
    assert!(ulps(s.step(1).unwrap().cur.abar, f64::from(plain.step(1).unwrap().cur.abar)) <= 1.0);
}

/// Strided steps: beta_eff = 1 - prod of the alphas of the stride (evaluated here in f64 from the
/// betas), and the table entry itself when the stride is one.
#[test]
fn strided_step_uses_the_effective_beta() {
    let s = S::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 1000, false).unwrap();
    assert_eq!(stride(&s, 500, 499).unwrap(), s.step(500).unwrap());
    for (t, p) in [(500, 480), (20, 0), (1000, 1), (3, 1)] {
        let st = stride(&s, t, p).unwrap();
        let prod: f64 = (p + 1..=t).map(|i| 1.0 - f64::from(s.step(i).unwrap().beta)).product();
        assert!(rel(f64::from(st.beta), 1.0 - prod, 0.0) < 1e-6, "t={t} p={p}");
        assert_eq!(st.prev, s.marginal(p).unwrap());
    }
    assert!(stride(&s, 5, 7).is_err());
}

#[test]
fn constructors_reject_bad_input() {
    let lin = BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 };
    assert_eq!(S::new(&lin, 0, false).unwrap_err(), Error::ZeroSteps);
    assert_eq!(S::new(&lin, 1001, false).unwrap_err(), Error::Capacity { requested: 1001, capacity: 1000 });
    assert!(matches!(
        S::new(&BetaSchedule::Linear { beta_start: 0.0, beta_end: 0.02 }, 10, false),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(S::new(&BetaSchedule::Custom(&[0.1, 1.5]), 2, false), Err(Error::InvalidBeta { t: 2, .. })));
    assert!(matches!(S::new(&BetaSchedule::Custom(&[0.1, f64::NAN]), 2, false), Err(Error::InvalidBeta { .. })));
    assert!(matches!(S::new(&BetaSchedule::Custom(&[0.1]), 2, false), Err(Error::DimensionMismatch { .. })));
    assert_eq!(BetaSchedule::from_name("cosinus", 1e-4, 0.02).unwrap_err(), Error::UnknownName { what: "schedule" });
    assert!(s_step_out_of_range());
    assert!(LinearGamma::new(5.0, -13.3).is_err());
    assert!(CosineLogSnr::new(1.0, f64::INFINITY).is_err());
}

fn s_step_out_of_range() -> bool {
    let s = S::new(&BetaSchedule::SquaredCosCapV2, 10, false).unwrap();
    s.step(0).is_err() && s.step(11).is_err() && s.step(10).is_ok()
}

#[test]
fn custom_betas_reproduce_a_named_schedule() {
    let betas: Vec<f64> = (0..100).map(|i| 1e-4 + (0.02 - 1e-4) * i as f64 / 99.0).collect();
    let a = S::new(&BetaSchedule::Custom(&betas), 100, false).unwrap();
    let b = S::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 100, false).unwrap();
    for (x, y) in a.iter().zip(b.iter()) {
        assert!(ulps(x.cur.abar, f64::from(y.cur.abar)) <= 1.0);
    }
}

/// Continuous schedules: end points, and `d lambda/dt` against a central finite difference.
#[test]
fn continuous_schedules_and_their_derivatives() {
    let lg = LinearGamma::VDM;
    assert_eq!(lg.end_points(), (13.3, -5.0));
    let cos = CosineLogSnr::new(-5.0, 13.3).unwrap();
    let (hi, lo) = cos.end_points();
    assert!((hi - 13.3).abs() < 1e-9 && (lo + 5.0).abs() < 1e-9, "{hi} {lo}");
    for sched in [&lg as &dyn LogSnrSchedule, &cos] {
        for t in [0.01, 0.2, 0.5, 0.77, 0.99] {
            let h = 1e-6;
            let fd = (sched.log_snr(t + h) - sched.log_snr(t - h)) / (2.0 * h);
            assert!(rel(sched.dlog_snr_dt(t), fd, 1e-9) < 1e-6, "t={t}: {} vs {fd}", sched.dlog_snr_dt(t));
        }
    }
}

/// Discretising a log-SNR schedule: `abar_i = sigmoid(lambda(i/T))` (seed 004 eq. 113).
#[test]
fn discretised_log_snr_schedule() {
    let lg = LinearGamma::VDM;
    let s = S::from_log_snr(&lg, 1000).unwrap();
    for t in [1usize, 10, 500, 1000] {
        let lambda = lg.log_snr(t as f64 / 1000.0);
        let abar = 1.0 / (1.0 + (-lambda).exp());
        let st = s.step(t).unwrap();
        assert!(ulps(st.cur.abar, abar) <= 2.0, "t={t}");
        assert!(ulps(st.cur.one_minus_abar, 1.0 / (1.0 + lambda.exp())) <= 2.0, "t={t}");
        assert!((f64::from(st.log_snr) - lambda).abs() < 1e-5, "t={t}");
    }
    struct Bad;
    impl LogSnrSchedule for Bad {
        fn log_snr(&self, t: f64) -> f64 {
            (t - 0.5).abs()
        }
        fn dlog_snr_dt(&self, _: f64) -> f64 {
            0.0
        }
    }
    assert!(matches!(S::from_log_snr(&Bad, 10), Err(Error::NonMonotoneSnr { .. })));
}
