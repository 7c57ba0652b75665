//! The terms of the bound against improved-diffusion's formulas (float64 numpy, in
//! `golden/vb_terms.json`), mpmath's normal CDF, closed forms, and the identities of the seeds.

mod common;

use common::{golden, mean_var, num, nums_f32, rel};
use elbo_core::elbo::ModelVariance::{Fixed, LearnedRange};
use elbo_core::elbo::{
    Decoder, ReverseVariance, decoder_nll, kl_term_mc, kl_term_rb, prior_term, reverse_log_variance, vlb_weight,
    vlb_weight_x0,
};
use elbo_core::forward::q_sample;
use elbo_core::gaussian::{discretized_log_likelihood, kl, log_normal_cdf, log_normal_interval};
use elbo_core::param::{from_x0_eps, to_x0_eps};
use elbo_core::rng::standard_normal;
use elbo_core::schedule::{BetaSchedule, Schedule};
use elbo_core::{NoiseSchedule, Prediction};
use rand_core::SeedableRng;
use rand_pcg::Pcg32;

fn linear(t: usize) -> Schedule<1000> {
    Schedule::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, t, false).unwrap()
}

#[test]
fn normal_cdf_in_the_tails_matches_mpmath() {
    let g = golden("normal");
    for c in g["log_cdf"].as_array().unwrap() {
        let (z, want) = (num(&c["z"]), num(&c["log_cdf"]));
        assert!(rel(log_normal_cdf(z), want, 1e-300) < 1e-9, "z={z}: {} vs {want}", log_normal_cdf(z));
    }
    for c in g["log_interval"].as_array().unwrap() {
        let (a, b, want) = (num(&c["a"]), num(&c["b"]), num(&c["log_p"]));
        assert!(
            rel(log_normal_interval(a, b), want, 1e-300) < 1e-8,
            "[{a}, {b}]: {} vs {want}",
            log_normal_interval(a, b)
        );
    }
}

/// The discretised likelihood is a distribution over the K levels: the probabilities sum to 1
/// for any mean and scale.
#[test]
fn discretized_likelihood_sums_to_one() {
    for levels in [2u32, 17, 256] {
        for (mean, log_scale) in [(0.0, -1.0), (0.93, -6.0), (-1.7, 0.5), (0.01, -12.0)] {
            let total: f64 = (0..levels)
                .map(|k| {
                    let x = -1.0 + 2.0 * f64::from(k) / f64::from(levels - 1);
                    discretized_log_likelihood(x, mean, log_scale, levels).exp()
                })
                .sum();
            assert!((total - 1.0).abs() < 1e-12, "K={levels} mean={mean}: {total}");
        }
    }
}

/// KL between Gaussians with unequal variances, against the textbook form.
#[test]
fn gaussian_kl_closed_form() {
    for (m1, v1, m2, v2) in
        [(0.3f64, 0.5f64, -0.2, 2.0), (1.0, 1e-4, 1.0, 1e-3), (0.0, 1.0, 0.0, 1.0), (5.0, 3.0, -1.0, 0.1)]
    {
        let want = 0.5 * ((v2 / v1).ln() + (v1 + (m1 - m2) * (m1 - m2)) / v2 - 1.0);
        let got = kl(m1 - m2, f64::ln(v1), f64::ln(v2));
        assert!((got - want).abs() < 1e-12 * want.abs().max(1.0), "{got} vs {want}");
    }
}

/// `L_{t-1}`, `L_0` and `L_T` against improved-diffusion's `_vb_terms_bpd` (normal_kl of the
/// posterior and model means; discretised decoder with an exact CDF) in float64.
#[test]
fn terms_match_improved_diffusion_formulas() {
    let g = golden("vb_terms");
    let s = linear(1000);
    let levels = g["levels"].as_u64().unwrap() as u32;
    let x0 = nums_f32(&g["x0"]);
    let got_prior = prior_term(&s.marginal(1000).unwrap(), &x0);
    assert!(rel(got_prior, num(&g["prior_kl"]), 1e-12) < 1e-6, "prior {got_prior}");
    for case in g["cases"].as_array().unwrap() {
        let t = case["t"].as_u64().unwrap() as usize;
        let step = s.step(t).unwrap();
        let xt = nums_f32(&case["xt"]);
        let eps_hat = nums_f32(&case["eps_hat"]);
        for (name, var) in [("small", ReverseVariance::Small), ("large", ReverseVariance::Large)] {
            let lv = reverse_log_variance(&step, var, 0.0);
            if t == 1 {
                let d =
                    decoder_nll(&step, Prediction::Eps, &eps_hat, &x0, &xt, Fixed(lv), Decoder::Discretized { levels })
                        .unwrap();
                let want = num(&case[format!("{name}_decoder_nll_discretized")]);
                assert!(rel(d, want, 1e-3) < 1e-5, "{name} decoder: {d} vs {want}");
                let c =
                    decoder_nll(&step, Prediction::Eps, &eps_hat, &x0, &xt, Fixed(lv), Decoder::Continuous).unwrap();
                let want = num(&case[format!("{name}_decoder_nll_continuous")]);
                assert!(rel(c, want, 1e-3) < 1e-5, "{name} continuous decoder: {c} vs {want}");
            } else {
                let k = kl_term_rb(&step, Prediction::Eps, &eps_hat, &x0, &xt, Fixed(lv)).unwrap();
                let want = num(&case[format!("{name}_kl")]);
                assert!(rel(k, want, 1e-9) < 1e-5, "{name} t={t}: {k} vs {want}");
            }
        }
    }
}

/// Seed 003 and seed 004 eqs. 99, 110, 130, 148: with `sigma_t^2 = btilde_t` the KL term is the
/// same number written in the eps-, x0-, SNR- and score-forms. Each form is written out here
/// from the seed, in float64, from the table's f32 entries.
#[test]
fn eps_x0_snr_and_score_forms_of_the_kl_agree() {
    let s = linear(1000);
    let mut rng = Pcg32::seed_from_u64(11);
    for t in [2usize, 3, 10, 100, 500, 999, 1000] {
        let st = s.step(t).unwrap();
        let (a, sd) = (f64::from(st.cur.sqrt_abar), f64::from(st.cur.sqrt_one_minus_abar));
        let d = 16;
        let x0: Vec<f32> = (0..d).map(|_| standard_normal(&mut rng)).collect();
        let eps: Vec<f32> = (0..d).map(|_| standard_normal(&mut rng)).collect();
        let eps_hat: Vec<f32> = eps.iter().map(|&e| e + 0.2 * standard_normal(&mut rng)).collect();
        let mut xt = vec![0.0; d];
        q_sample(&st.cur, &x0, &eps, &mut xt).unwrap();
        let (alpha, beta) = (f64::from(st.alpha), f64::from(st.beta));
        let abar_prev = f64::from(st.prev.abar);
        let oma = f64::from(st.cur.one_minus_abar);
        let sigma2 = f64::from(st.posterior_variance);
        // The true eps of the (rounded) x_t, and x0_hat, scores from eps_hat.
        let mut eps_err = 0.0;
        let mut x0_err = 0.0;
        let mut score_err = 0.0;
        for i in 0..d {
            let (x, xtv) = (f64::from(x0[i]), f64::from(xt[i]));
            let e_true = (xtv - a * x) / sd;
            let eh = f64::from(eps_hat[i]);
            let x0_hat = (xtv - sd * eh) / a;
            eps_err += (e_true - eh).powi(2);
            x0_err += (x - x0_hat).powi(2);
            score_err += (-eh / sd - -e_true / sd).powi(2);
        }
        let eps_form = beta * beta / (2.0 * sigma2 * alpha * oma) * eps_err; // seed 003, eq. 130
        let x0_form = abar_prev * beta * beta / (2.0 * sigma2 * oma * oma) * x0_err; // eq. 99
        let snr_prev = abar_prev / f64::from(st.prev.one_minus_abar);
        let snr = f64::from(st.cur.abar) / oma;
        let snr_form = 0.5 * (snr_prev - snr) * x0_err; // eq. 110
        let score_form = beta * beta / (2.0 * sigma2 * alpha) * score_err; // eq. 148
        let rb =
            kl_term_rb(&st, Prediction::Eps, &eps_hat, &x0, &xt, Fixed(f64::from(st.posterior_log_variance_clipped)))
                .unwrap();
        for (name, v) in [("x0", x0_form), ("snr", snr_form), ("score", score_form), ("rb", rb)] {
            // SNR_{t-1} - SNR_t from rounded f32 tables cancels at large t; allow for it.
            let tol = if name == "snr" { 1e-3 } else { 1e-4 };
            assert!(rel(v, eps_form, 1e-300) < tol, "t={t} {name}: {v} vs eps form {eps_form}");
        }
        assert!(rel(vlb_weight(&st, sigma2) * eps_err, eps_form, 0.0) < 1e-12);
        assert!(rel(vlb_weight_x0(&st) * x0_err, x0_form, 0.0) < 1e-5, "t={t}");
    }
}

/// Seed 003: `L_simple` is the VLB reweighted by `w_t = 1 / (T w_t^VLB)`: for every t,
/// `KL_t / w_t^VLB` is the squared eps error, so `sum_t w_t KL_t` equals `L_simple`.
#[test]
fn l_simple_is_a_reweighted_vlb() {
    let s = linear(1000);
    let mut rng = Pcg32::seed_from_u64(3);
    let d = 4;
    let x0: Vec<f32> = (0..d).map(|_| standard_normal(&mut rng)).collect();
    let (mut simple, mut reweighted) = (0.0, 0.0);
    for t in 2..=1000 {
        let st = s.step(t).unwrap();
        let eps: Vec<f32> = (0..d).map(|_| standard_normal(&mut rng)).collect();
        let eps_hat: Vec<f32> = eps.iter().map(|&e| 0.9 * e + 0.1 * standard_normal(&mut rng)).collect();
        let mut xt = vec![0.0; d];
        q_sample(&st.cur, &x0, &eps, &mut xt).unwrap();
        let (a, sd) = (f64::from(st.cur.sqrt_abar), f64::from(st.cur.sqrt_one_minus_abar));
        let sq: f64 =
            (0..d).map(|i| ((f64::from(xt[i]) - a * f64::from(x0[i])) / sd - f64::from(eps_hat[i])).powi(2)).sum();
        let lv = f64::from(st.posterior_log_variance_clipped);
        let kl_t = kl_term_rb(&st, Prediction::Eps, &eps_hat, &x0, &xt, Fixed(lv)).unwrap();
        let w_t = 1.0 / (999.0 * vlb_weight(&st, f64::from(st.posterior_variance)));
        simple += sq / 999.0;
        reweighted += w_t * kl_t;
    }
    assert!(rel(reweighted, simple, 0.0) < 1e-4, "{reweighted} vs {simple}");
}

/// Seed 000: the RB and MC estimators of `L_{t-1}` are unbiased for the same value and RB has
/// the smaller variance. The denoiser is the exact one of N(0, I) data (`x0_hat = a x_t`),
/// applied to data that is not N(0, I), so `E[L_{t-1}]` has a closed form:
/// `E[(x_0 - x0_hat)^2] = s^4 x_0^2 + a^2 s^2` per coordinate.
/// False-failure rate: each mean check is a 4.5-sigma two-sided z-test (6.8e-6); with 2 x 5
/// checks the suite fails by chance with probability below 1e-4 (and, being seeded, never).
#[test]
fn rao_blackwell_and_monte_carlo_agree_and_rb_has_less_variance() {
    let s = linear(1000);
    let mut rng = Pcg32::seed_from_u64(2024);
    let x0 = [1.5f32, -0.7];
    let m = 20_000;
    for t in [2usize, 10, 100, 500, 900] {
        let st = s.step(t).unwrap();
        let (a, sd) = (st.cur.sqrt_abar, st.cur.sqrt_one_minus_abar);
        let lv_p = reverse_log_variance(&st, ReverseVariance::Large, 0.0);
        let lv_q = f64::from(st.posterior_log_variance_clipped);
        let c0 = f64::from(st.posterior_mean_coef_x0);
        let (af, sf) = (f64::from(a), f64::from(sd));
        let expected: f64 = x0
            .iter()
            .map(|&x| {
                let e2 = sf.powi(4) * f64::from(x).powi(2) + af * af * sf * sf;
                0.5 * (lv_p - lv_q + (lv_q - lv_p).exp() - 1.0 + c0 * c0 * e2 * (-lv_p).exp())
            })
            .sum();
        let (mut rb, mut mc) = (Vec::with_capacity(m), Vec::with_capacity(m));
        for _ in 0..m {
            let eps = [standard_normal(&mut rng), standard_normal(&mut rng)];
            let mut xt = [0.0f32; 2];
            q_sample(&st.cur, &x0, &eps, &mut xt).unwrap();
            let pred = [a * xt[0], a * xt[1]];
            rb.push(kl_term_rb(&st, Prediction::X0, &pred, &x0, &xt, Fixed(lv_p)).unwrap());
            let z: Vec<f32> = (0..x0.len()).map(|_| standard_normal(&mut rng)).collect();
            mc.push(kl_term_mc(&st, Prediction::X0, &pred, &x0, &xt, Fixed(lv_p), &z).unwrap());
        }
        let (rb_mean, rb_var) = mean_var(&rb);
        let (mc_mean, mc_var) = mean_var(&mc);
        let z_rb = (rb_mean - expected) / (rb_var / m as f64).sqrt();
        let z_mc = (mc_mean - expected) / (mc_var / m as f64).sqrt();
        assert!(z_rb.abs() < 4.5, "t={t}: RB mean {rb_mean} vs {expected} (z = {z_rb:.2})");
        assert!(z_mc.abs() < 4.5, "t={t}: MC mean {mc_mean} vs {expected} (z = {z_mc:.2})");
        assert!(mc_var > rb_var, "t={t}: var MC {mc_var} <= var RB {rb_var}");
        eprintln!("t={t}: E={expected:.4e} RB {rb_mean:.4e} (var {rb_var:.3e})  MC {mc_mean:.4e} (var {mc_var:.3e})");
    }
}

/// Every parameterisation converts to every other and back (seed 004 eqs. 69, 115, 133; v).
#[test]
fn parameterisations_round_trip() {
    let kinds = [Prediction::Eps, Prediction::X0, Prediction::V, Prediction::Score];
    let (x0, eps) = (0.37f64, -1.21f64);
    for abar in [0.999f64, 0.5, 0.01] {
        let (a, s) = (abar.sqrt(), (1.0 - abar).sqrt());
        let xt = a * x0 + s * eps;
        // Definitions, written out: v and the Tweedie score.
        assert!((from_x0_eps(Prediction::V, x0, eps, a, s) - (a * eps - s * x0)).abs() < 1e-15);
        assert!((from_x0_eps(Prediction::Score, x0, eps, a, s) - (a * x0 - xt) / (s * s)).abs() < 1e-12);
        for from in kinds {
            let p = from_x0_eps(from, x0, eps, a, s);
            let (x0b, epsb) = to_x0_eps(from, p, xt, a, s);
            assert!((x0b - x0).abs() < 1e-12 && (epsb - eps).abs() < 1e-12, "{from:?} abar={abar}");
        }
    }
}

/// `L_simple` for each kind: the squared error against the kind's own target (eps, x0, v and the
/// true score), written out here; for eps models it is `||eps - eps_hat||^2`.
#[test]
fn simple_term_uses_each_kinds_target() {
    use elbo_core::elbo::simple_term;
    let s = linear(1000);
    let m = s.step(300).unwrap().cur;
    let (a, sd) = (f64::from(m.sqrt_abar), f64::from(m.sqrt_one_minus_abar));
    let (x0, eps, pred) = ([0.5f32, -1.0], [1.2f32, 0.3], [0.1f32, 0.2]);
    let targets = |k: Prediction| -> Vec<f64> {
        (0..2)
            .map(|i| {
                let (x, e) = (f64::from(x0[i]), f64::from(eps[i]));
                match k {
                    Prediction::Eps => e,
                    Prediction::X0 => x,
                    Prediction::V => a * e - sd * x,
                    Prediction::Score => -e / sd,
                }
            })
            .collect()
    };
    for k in [Prediction::Eps, Prediction::X0, Prediction::V, Prediction::Score] {
        let want: f64 = targets(k).iter().zip(pred).map(|(t, p)| (f64::from(p) - t).powi(2)).sum();
        assert!((simple_term(k, &m, &pred, &x0, &eps).unwrap() - want).abs() < 1e-9, "{k:?}");
    }
    assert!(elbo_core::gaussian::discretized_log_likelihood(0.0, 0.0, 0.0, 1).is_nan());
}

/// `learned_range` (Nichol & Dhariwal 2021 eq. 15): per coordinate
/// `log sigma^2 = f log beta_t + (1 - f) log btilde_t` (clipped), `f = (v + 1)/2`; the KL with
/// those variances, written out here, and the DDPM update's noise scale at v = 1 is `sqrt(beta_t)`.
#[test]
fn learned_range_variance() {
    use elbo_core::sampler::{Clip, Sigma, ddpm_update};
    let s = linear(1000);
    let st = s.step(200).unwrap();
    let (x0, xt, pred, v) = ([0.4f32, -0.2, 1.0], [0.5f32, 0.1, 0.7], [0.3f32, -0.6, 0.2], [-1.0f32, 0.25, 1.0]);
    let got = kl_term_rb(&st, Prediction::Eps, &pred, &x0, &xt, LearnedRange(&v)).unwrap();
    let (a, sd) = (f64::from(st.cur.sqrt_abar), f64::from(st.cur.sqrt_one_minus_abar));
    let (lb, lc) = (f64::from(st.beta).ln(), f64::from(st.posterior_variance).ln());
    let c0 = f64::from(st.posterior_mean_coef_x0);
    let want: f64 = (0..3)
        .map(|i| {
            let f = (f64::from(v[i]) + 1.0) / 2.0;
            let lv = f * lb + (1.0 - f) * lc;
            let x0_hat = (f64::from(xt[i]) - sd * f64::from(pred[i])) / a;
            let dm = c0 * (f64::from(x0[i]) - x0_hat);
            0.5 * (lv - lc + (lc - lv).exp() - 1.0 + dm * dm * (-lv).exp())
        })
        .sum();
    assert!(rel(got, want, 1e-12) < 1e-5, "{got} vs {want}");
    assert!(kl_term_rb(&st, Prediction::Eps, &pred, &x0, &xt, LearnedRange(&v[..2])).is_err());
    // v = 1 everywhere: sigma = sqrt(beta_t); with unit noise the update moves by sigma.
    let ones = [1.0f32; 3];
    let (mut with_noise, mut without) = (xt, xt);
    ddpm_update(
        &st,
        Prediction::Eps,
        &pred,
        &mut with_noise,
        Sigma::LearnedRange(&ones),
        Clip::Off,
        |_, z: &mut [f32]| z.fill(1.0),
    )
    .unwrap();
    ddpm_update(
        &st,
        Prediction::Eps,
        &pred,
        &mut without,
        Sigma::LearnedRange(&ones),
        Clip::Off,
        |_, z: &mut [f32]| z.fill(0.0),
    )
    .unwrap();
    for i in 0..3 {
        let moved = f64::from(with_noise[i] - without[i]);
        assert!((moved - f64::from(st.beta).sqrt()).abs() < 1e-6, "{moved}");
    }
}

/// The derivatives training back-propagates (`kl_grad`, `nll_grad`, `mc_log_ratio_grad`)
/// against central finite differences of the values, in f64, over a grid that includes
/// tiny and large variances.
#[test]
fn term_derivatives_match_finite_differences() {
    use elbo_core::gaussian::{TermGrad, kl_grad, mc_log_ratio, mc_log_ratio_grad, nll_grad};
    let fd = |f: &dyn Fn(f64) -> f64, at: f64| {
        let h = 1e-6 * at.abs().max(1.0);
        (f(at + h) - f(at - h)) / (2.0 * h)
    };
    let close = |a: f64, b: f64, what: &str| {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{what}: analytic {a}, finite difference {b}");
    };
    let check = |g: TermGrad, value: &dyn Fn(f64, f64) -> f64, m: f64, lv: f64, what: &str| {
        close(g.value, value(m, lv), what);
        close(g.d_mean, fd(&|mm| value(mm, lv), m), &format!("{what} d/dmean"));
        close(g.d_log_var, fd(&|ll| value(m, ll), lv), &format!("{what} d/dlogvar"));
    };
    for &mq in &[-1.3, 0.0, 0.4, 2.5] {
        for &mp in &[-0.7, 0.1, 3.0] {
            for &lvq in &[-9.0, -2.0, 0.3] {
                for &lvp in &[-8.5, -1.0, 0.5] {
                    let kl_of = |m: f64, lv: f64| kl(mq - m, lvq, lv);
                    check(kl_grad(mq - mp, lvq, lvp), &kl_of, mp, lvp, "kl");
                    let nll_of =
                        |m: f64, lv: f64| 0.5 * (1.837_877_066_409_345_5 + lv + (mq - m).powi(2) * (-lv).exp());
                    check(nll_grad(mq, mp, lvp), &nll_of, mp, lvp, "nll");
                    let z = 0.37 * mq - 0.2;
                    let y = mq + (0.5 * lvq).exp() * z;
                    let mc_of = |m: f64, lv: f64| mc_log_ratio(y - m, z, lvq, lv);
                    check(mc_log_ratio_grad(y - mp, z, lvq, lvp), &mc_of, mp, lvp, "mc");
                }
            }
        }
    }
}
