//! elbo-core's cross-target test vectors. [`run`] computes schedule tables, posterior
//! coefficients, Gaussian and ELBO terms, weightings, parameterisation conversions, random
//! numbers, timestep draws and whole sampler runs with the exact denoiser of a Gaussian
//! mixture, and writes every result as its exact bits:
//!
//! ```text
//! V <name> <first index> <8 hex words>     (f32: 8 hex digits; f64: 16)
//! C <name> ok|FAIL                          (a check with an independent expectation)
//! END <failures>
//! ```
//!
//! The firmware in `tests/firmware` runs it on Cortex-M4F and RISC-V under QEMU; the host test
//! in `tests/qemu.rs` runs it natively and compares the text line by line, so any difference
//! names the value that differs.

#![no_std]

use core::fmt::Write;

use elbo_core::denoiser::{Condition, Denoiser};
use elbo_core::elbo::{
    Decoder, ElboOptions, ElboOutput, ElboScratch, Estimator, ModelVariance, ReverseVariance, decoder_nll, kl_term_mc,
    kl_term_rb, neg_elbo, prior_term, reverse_log_variance, simple_term, vlb_weight, vlb_weight_x0,
};
use elbo_core::forward::q_sample;
use elbo_core::gaussian::{discretized_log_likelihood, kl, log_density, log_normal_cdf, log_normal_interval, prior_kl};
use elbo_core::gmm::{GaussianMixture, OptimalDenoiser};
use elbo_core::param::{Prediction, from_x0_eps, to_x0_eps};
use elbo_core::rng::{
    Counter, domain, fill_standard_normal, philox_normals, philox4x32_10, standard_normal, uniform_f32, uniform_f64,
};
use elbo_core::sampler::{
    AnnealedLangevin, ClassifierFree, ClassifierGuided, Clip, Ddim, Ddpm, Deis, DpmSolverPP, Euler, FinalSigma, Heun,
    SigmaFamily, Sigmas, Spacing, TimeRounding, Timesteps, UniPc, UniPcVariant,
};
use elbo_core::schedule::{BetaSchedule, CosineLogSnr, LinearGamma, LogSnrSchedule, Schedule, Step, stride};
use elbo_core::timesteps::{LossSecondMomentResampler, TimeSampling};
use elbo_core::weighting::Weighting;
use elbo_core::{NoiseSchedule, RunError};
use rand_core::SeedableRng;
use rand_pcg::Pcg32;

/// The capacity of the schedules here.
const T: usize = 1000;

struct Out<'w, W: Write> {
    w: &'w mut W,
    failures: usize,
}

/// A value written by its exact bits (f32: 8 hex digits, f64: 16).
trait Bits: Copy + Default {
    fn write_hex<W: Write>(self, w: &mut W);
}

impl Bits for f32 {
    fn write_hex<W: Write>(self, w: &mut W) {
        let _ = write!(w, " {:08x}", self.to_bits());
    }
}

impl Bits for f64 {
    fn write_hex<W: Write>(self, w: &mut W) {
        let _ = write!(w, " {:016x}", self.to_bits());
    }
}

impl<W: Write> Out<'_, W> {
    /// Lines `V name first-index` with up to 8 values each.
    fn values<T: Bits>(&mut self, name: &str, first: usize, v: &[T]) {
        for (k, chunk) in v.chunks(8).enumerate() {
            let _ = write!(self.w, "V {name} {}", first + 8 * k);
            for &x in chunk {
                x.write_hex(self.w);
            }
            let _ = writeln!(self.w);
        }
    }

    fn f32s(&mut self, name: &str, v: &[f32]) {
        self.values(name, 0, v);
    }

    fn f64s(&mut self, name: &str, v: &[f64]) {
        self.values(name, 0, v);
    }

    fn check(&mut self, name: &str, ok: bool) {
        let _ = writeln!(self.w, "C {name} {}", if ok { "ok" } else { "FAIL" });
        if !ok {
            self.failures += 1;
        }
    }

    /// Records `n` values produced by `f(i)` through a fixed buffer (no allocation).
    fn values_fn<T: Bits>(&mut self, name: &str, n: usize, mut f: impl FnMut(usize) -> T) {
        let mut buf = [T::default(); 64];
        let mut i = 0;
        while i < n {
            let m = (n - i).min(64);
            for (j, b) in buf[..m].iter_mut().enumerate() {
                *b = f(i + j);
            }
            self.values(name, i, &buf[..m]);
            i += m;
        }
    }

    fn f32_fn(&mut self, name: &str, n: usize, f: impl FnMut(usize) -> f32) {
        self.values_fn(name, n, f);
    }

    fn f64_fn(&mut self, name: &str, n: usize, f: impl FnMut(usize) -> f64) {
        self.values_fn(name, n, f);
    }
}

/// Runs every vector, writing to `w`; returns the number of failed checks.
pub fn run<W: Write>(w: &mut W) -> usize {
    let mut o = Out { w, failures: 0 };
    schedules(&mut o);
    gaussians(&mut o);
    conversions(&mut o);
    terms(&mut o);
    weightings(&mut o);
    randoms(&mut o);
    samplers(&mut o);
    trained_model(&mut o);
    #[cfg(feature = "broken-check")]
    o.check("broken-check (must fail)", false);
    let _ = writeln!(o.w, "END {}", o.failures);
    o.failures
}

/// A named column of the schedule table.
type Field = (&'static str, fn(&Step) -> f32);

fn schedule_fields<W: Write>(o: &mut Out<'_, W>, name: &str, s: &Schedule<T>) {
    let n = s.steps();
    let get = |t: usize| s.step(t + 1).unwrap_or_else(|_| panic!("step"));
    let fields: [Field; 13] = [
        ("beta", |s| s.beta),
        ("alpha", |s| s.alpha),
        ("log_beta", |s| s.log_beta),
        ("abar", |s| s.cur.abar),
        ("one_minus_abar", |s| s.cur.one_minus_abar),
        ("sqrt_abar", |s| s.cur.sqrt_abar),
        ("sqrt_one_minus_abar", |s| s.cur.sqrt_one_minus_abar),
        ("snr", |s| s.snr),
        ("log_snr", |s| s.log_snr),
        ("posterior_variance", |s| s.posterior_variance),
        ("posterior_log_variance_clipped", |s| s.posterior_log_variance_clipped),
        ("posterior_mean_coef_x0", |s| s.posterior_mean_coef_x0),
        ("posterior_mean_coef_xt", |s| s.posterior_mean_coef_xt),
    ];
    let mut label = [0u8; 96];
    for (field, f) in fields {
        let l = concat(&mut label, &[name, "/", field]);
        o.f32_fn(l, n, |i| f(&get(i)));
    }
    let l = concat(&mut label, &[name, "/log_abar"]);
    o.f64_fn(l, n, |i| get(i).cur.log_abar);
    // Checks with independent expectations: abar decreases, 0 <= btilde <= beta, and the
    // posterior mean is unbiased: for x_t = sqrt(abar_t) x0 (no noise) it is sqrt(abar_{t-1}) x0.
    // (f32 abar may round to 1 for several steps; its f64 logarithm must strictly decrease)
    let ok = (1..n).all(|i| get(i).cur.log_abar < get(i - 1).cur.log_abar && get(i).cur.abar <= get(i - 1).cur.abar);
    o.check(concat(&mut label, &[name, "/abar decreases"]), ok);
    let ok = (0..n).all(|i| {
        let s = get(i);
        s.posterior_variance >= 0.0 && s.posterior_variance <= s.beta
    });
    o.check(concat(&mut label, &[name, "/0 <= btilde <= beta"]), ok);
    let ok = (0..n).all(|i| {
        let s = get(i);
        let m = s.posterior_mean_coef_x0 + s.posterior_mean_coef_xt * s.cur.sqrt_abar;
        (m - s.prev.sqrt_abar).abs() <= 1e-5
    });
    o.check(concat(&mut label, &[name, "/posterior mean is unbiased"]), ok);
}

fn concat<'b>(buf: &'b mut [u8; 96], parts: &[&str]) -> &'b str {
    let mut n = 0;
    for p in parts {
        let b = p.as_bytes();
        let m = b.len().min(buf.len() - n);
        buf[n..n + m].copy_from_slice(&b[..m]);
        n += m;
    }
    core::str::from_utf8(&buf[..n]).unwrap_or("?")
}

fn linear() -> Schedule<T> {
    Schedule::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, T, false).unwrap_or_else(|_| panic!())
}

fn schedules<W: Write>(o: &mut Out<'_, W>) {
    let kinds = [
        ("linear", BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }),
        ("scaled_linear", BetaSchedule::ScaledLinear { beta_start: 1e-4, beta_end: 0.02 }),
        ("squaredcos_cap_v2", BetaSchedule::SquaredCosCapV2),
        ("sigmoid", BetaSchedule::Sigmoid { beta_start: 1e-4, beta_end: 0.02 }),
    ];
    for (name, kind) in kinds {
        let s = Schedule::<T>::new(&kind, T, false).unwrap_or_else(|_| panic!());
        schedule_fields(o, name, &s);
    }
    let z = Schedule::<T>::new(&kinds[0].1, T, true).unwrap_or_else(|_| panic!());
    schedule_fields(o, "linear_zero_terminal", &z);
    let v = Schedule::<T>::from_log_snr(&LinearGamma::VDM, T).unwrap_or_else(|_| panic!());
    schedule_fields(o, "vdm_linear_gamma", &v);
    let s = linear();
    let pairs = [(500usize, 480usize), (20, 0), (1000, 1), (3, 1), (250, 249)];
    o.f32_fn("stride/beta_c0_ct_var", 4 * pairs.len(), |i| {
        let (t, p) = pairs[i / 4];
        let st = stride(&s, t, p).unwrap_or_else(|_| panic!());
        [st.beta, st.posterior_mean_coef_x0, st.posterior_mean_coef_xt, st.posterior_variance][i % 4]
    });
    let lg = LinearGamma::VDM;
    let cos = CosineLogSnr::new(-5.0, 13.3).unwrap_or_else(|_| panic!());
    o.f64_fn("continuous/linear_gamma", 202, |i| {
        let t = (i / 2) as f64 / 100.0;
        if i % 2 == 0 { lg.log_snr(t) } else { lg.dlog_snr_dt(t) }
    });
    o.f64_fn("continuous/cosine", 202, |i| {
        let t = (i / 2) as f64 / 100.0;
        if i % 2 == 0 { cos.log_snr(t) } else { cos.dlog_snr_dt(t) }
    });
}

fn gaussians<W: Write>(o: &mut Out<'_, W>) {
    let z = |i: usize| -42.0 + 0.35 * i as f64;
    o.f64_fn("gaussian/log_normal_cdf", 241, |i| log_normal_cdf(z(i)));
    o.f64_fn("gaussian/log_normal_interval", 240, |i| log_normal_interval(z(i), z(i) + 0.3));
    o.f64_fn("gaussian/log_density", 100, |i| log_density(z(i) / 10.0, 0.3, -1.0 + 0.02 * i as f64));
    o.f64_fn("gaussian/kl", 100, |i| kl(0.01 * i as f64, -2.0 + 0.04 * i as f64, 0.5));
    o.f64_fn("gaussian/prior_kl", 100, |i| prior_kl(z(i) / 10.0, 1e-5 * (i + 1) as f64));
    o.f64_fn("gaussian/discretized", 256, |i| {
        let x = -1.0 + 2.0 * i as f64 / 255.0;
        discretized_log_likelihood(x, 0.1, -3.0 + 0.01 * i as f64, 256)
    });
    let total: f64 = (0..17).map(|k| libm::exp(discretized_log_likelihood(-1.0 + k as f64 / 8.0, 0.2, -1.5, 17))).sum();
    o.check("gaussian/discretized sums to 1", (total - 1.0).abs() < 1e-12);
}

const KINDS: [Prediction; 4] = [Prediction::Eps, Prediction::X0, Prediction::V, Prediction::Score];

fn conversions<W: Write>(o: &mut Out<'_, W>) {
    let s = linear();
    for t in [1usize, 300, 999] {
        let m = s.step(t).unwrap_or_else(|_| panic!()).cur;
        let (a, sd) = (m.sqrt_abar, m.sqrt_one_minus_abar);
        let mut ok = true;
        let mut label = [0u8; 96];
        let mut digits = [0u8; 4];
        let l = concat(&mut label, &["param/t=", num(&mut digits, t)]);
        o.f32_fn(l, 16 * 32, |i| {
            let (from, to) = (KINDS[(i / 32) % 4], KINDS[(i / 128) % 4]);
            let (p, xt) = (-1.5 + 0.1 * (i % 32) as f32, 0.7 - 0.05 * (i % 32) as f32);
            let (x0, eps) = to_x0_eps(from, p, xt, a, sd);
            let q = from_x0_eps(to, x0, eps, a, sd);
            let (x0b, epsb) = to_x0_eps(to, q, xt, a, sd);
            ok &= (x0b - x0).abs() <= 1e-3 * (1.0 + x0.abs()) && (epsb - eps).abs() <= 1e-3 * (1.0 + eps.abs());
            q
        });
        o.check(concat(&mut label, &["param round trips, t=", num(&mut digits, t)]), ok);
    }
}

fn num(buf: &mut [u8; 4], mut v: usize) -> &str {
    let mut n = 4;
    loop {
        n -= 1;
        buf[n] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || n == 0 {
            break;
        }
    }
    core::str::from_utf8(&buf[n..]).unwrap_or("?")
}

fn terms<W: Write>(o: &mut Out<'_, W>) {
    let s = linear();
    let mut rng = Pcg32::seed_from_u64(7);
    let x0 = [0.5f32, -0.25, 1.0, -1.0];
    let pred = [0.1f32, -0.4, 0.9, 0.2];
    let v = [-1.0f32, -0.2, 0.5, 1.0];
    let mut out = [0.0f64; 8 * 6];
    let mut kl_ok = true;
    for (j, t) in [1usize, 2, 10, 200, 700, 1000].into_iter().enumerate() {
        let st = s.step(t).unwrap_or_else(|_| panic!());
        let eps = [
            standard_normal(&mut rng),
            standard_normal(&mut rng),
            standard_normal(&mut rng),
            standard_normal(&mut rng),
        ];
        let mut xt = [0.0f32; 4];
        let _ = q_sample(&st.cur, &x0, &eps, &mut xt);
        let lv = reverse_log_variance(&st, ReverseVariance::Large, 0.0);
        let r = &mut out[8 * j..8 * j + 8];
        r[0] = vlb_weight(&st, f64::from(st.posterior_variance));
        r[1] = vlb_weight_x0(&st);
        r[2] = simple_term(Prediction::V, &st.cur, &pred, &x0, &eps).unwrap_or(f64::NAN);
        if t == 1 {
            r[3] = decoder_nll(&st, Prediction::Eps, &pred, &x0, &xt, ModelVariance::Fixed(lv), Decoder::Continuous)
                .unwrap_or(f64::NAN);
            r[4] = decoder_nll(
                &st,
                Prediction::Eps,
                &pred,
                &x0,
                &xt,
                ModelVariance::Fixed(lv),
                Decoder::Discretized { levels: 17 },
            )
            .unwrap_or(f64::NAN);
            r[5] =
                decoder_nll(&st, Prediction::X0, &pred, &x0, &xt, ModelVariance::LearnedRange(&v), Decoder::Continuous)
                    .unwrap_or(f64::NAN);
        } else {
            r[3] = kl_term_rb(&st, Prediction::Eps, &pred, &x0, &xt, ModelVariance::Fixed(lv)).unwrap_or(f64::NAN);
            let mut z = [0.0f32; 4];
            fill_standard_normal(&mut rng, &mut z);
            r[4] = kl_term_mc(&st, Prediction::X0, &pred, &x0, &xt, ModelVariance::Fixed(lv), &z).unwrap_or(f64::NAN);
            r[5] = kl_term_rb(&st, Prediction::V, &pred, &x0, &xt, ModelVariance::LearnedRange(&v)).unwrap_or(f64::NAN);
            kl_ok &= r[3] >= 0.0 && r[5] >= 0.0;
        }
        r[6] = prior_term(&st.cur, &x0);
        r[7] = reverse_log_variance(&st, ReverseVariance::LearnedRange, 0.3);
    }
    o.f64s("elbo/terms", &out);
    o.check("elbo/KL terms are non-negative", kl_ok);
}

fn weightings<W: Write>(o: &mut Out<'_, W>) {
    let ws = [
        Weighting::Elbo,
        Weighting::Iddpm,
        Weighting::Edm,
        Weighting::VPrediction,
        Weighting::FlowMatchingOt,
        Weighting::Indi,
        Weighting::P2 { gamma: 0.5 },
        Weighting::MinSnr { gamma: 5.0 },
        Weighting::Sigmoid { bias: -1.0 },
    ];
    o.f64_fn("weighting/w", 9 * 41, |i| ws[i / 41].weight(-10.0 + 0.5 * (i % 41) as f64));
    let ok = ws.iter().all(|w| {
        let mono = (1..400)
            .all(|k| w.weight(-20.0 + 0.1 * k as f64) <= w.weight(-20.0 + 0.1 * (k - 1) as f64) * (1.0 + 1e-12));
        mono == w.is_monotone()
    });
    o.check("weighting/monotone marks", ok);
}

fn randoms<W: Write>(o: &mut Out<'_, W>) {
    let mut rng = Pcg32::seed_from_u64(42);
    let mut sum = 0.0f64;
    let mut sq = 0.0f64;
    o.f32_fn("rng/normal", 4000, |_| {
        let z = standard_normal(&mut rng);
        sum += f64::from(z);
        sq += f64::from(z) * f64::from(z);
        z
    });
    o.check("rng/normal moments", (sum / 4000.0).abs() < 0.1 && (sq / 4000.0 - 1.0).abs() < 0.1);
    // the counter-based noise: Random123's known answer (an independent expectation), then
    // normals at a few addresses, aligned and not, of a large example and a late draw
    o.check(
        "rng/philox4x32-10 known answer",
        philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])
            == [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    );
    let mut z = [0.0f32; 77];
    for (k, (ex, draw, first)) in
        [(0u32, 0u32, 0usize), (3, 999, 5), (4_000_000_000, 17, 1_000_001)].into_iter().enumerate()
    {
        philox_normals(0x5eed_0000_0000_0001, domain::SAMPLER, ex, draw, first, &mut z);
        let mut label = [0u8; 96];
        o.f32s(concat(&mut label, &["rng/philox normals ", ["a", "b", "c"][k]]), &z);
    }
    o.f32_fn("rng/uniform", 256, |_| uniform_f32(&mut rng));
    o.f64_fn("rng/uniform_f64", 256, |_| uniform_f64(&mut rng));
    let mut ts = [0usize; 64];
    for (name, kind) in [
        ("uniform", TimeSampling::Uniform),
        ("antithetic", TimeSampling::Antithetic),
        ("stratified", TimeSampling::Stratified),
    ] {
        let _ = kind.fill_discrete(&mut rng, T, &mut ts);
        let mut label = [0u8; 96];
        o.f32_fn(concat(&mut label, &["timesteps/", name]), 64, |i| ts[i] as f32);
    }
    let mut r = LossSecondMomentResampler::<T, 10>::new(100, 0.001).unwrap_or_else(|_| panic!());
    for k in 0..10 {
        for t in 1..=100 {
            let _ = r.update(t, libm::sqrt(t as f64) + 0.1 * k as f64);
        }
    }
    let mut w = [0.0f64; 64];
    let _ = r.sample(&mut rng, &mut ts, &mut w);
    o.f64s("timesteps/importance_weights", &w);
    o.f32_fn("timesteps/importance_t", 64, |i| ts[i] as f32);
}

const W3: [f32; 3] = [0.3, 0.5, 0.2];
const MU: [f32; 6] = [-2.0, 0.0, 1.5, 1.0, 0.0, -2.5];
const SD: [f32; 6] = [0.5, 0.3, 0.4, 0.6, 0.8, 0.2];
const N: usize = 16;

fn fresh(seed: u64) -> ([f32; 2 * N], Pcg32) {
    let mut rng = Pcg32::seed_from_u64(seed);
    let mut x = [0.0f32; 2 * N];
    fill_standard_normal(&mut rng, &mut x);
    (x, rng)
}

fn finite(x: &[f32]) -> bool {
    x.iter().all(|v| v.is_finite())
}

fn samplers<W: Write>(o: &mut Out<'_, W>) {
    let s = linear();
    let g = GaussianMixture::new(2, &W3, &MU, &SD).unwrap_or_else(|_| panic!());
    let mut den = OptimalDenoiser::new(g);
    let mut scratch = [0.0f32; 2 * N];
    let uncond = Condition::Unconditional;
    let run = |o: &mut Out<'_, W>, name: &str, x: &[f32], r: Result<(), RunError<elbo_core::Error>>| {
        o.f32s(name, x);
        let mut label = [0u8; 96];
        o.check(concat(&mut label, &[name, " ran and is finite"]), r.is_ok() && finite(x));
    };
    for (name, variance, seed) in [("ddpm/small", ReverseVariance::Small, 1), ("ddpm/large", ReverseVariance::Large, 2)]
    {
        let (mut x, _) = fresh(seed);
        let r = Ddpm { variance, ..Ddpm::default() }.sample(
            &mut den,
            &s,
            &mut x,
            &mut scratch,
            uncond,
            &mut Counter::new(seed, domain::SAMPLER),
        );
        run(o, name, &x, r);
    }
    {
        let (mut x, _) = fresh(3);
        let ts = Timesteps::new(Spacing::Linspace, 100, T, 0).ok();
        let r = Ddpm { timesteps: ts, clip: Clip::Range(3.0), ..Ddpm::default() }.sample(
            &mut den,
            &s,
            &mut x,
            &mut scratch,
            uncond,
            &mut Counter::new(3, domain::SAMPLER),
        );
        run(o, "ddpm/strided_linspace_100_clip", &x, r);
    }
    for (name, eta, spacing, k, seed) in [
        ("ddim/eta0_trailing_50", 0.0, Spacing::Trailing, 50, 4),
        ("ddim/eta1_leading_100", 1.0, Spacing::Leading, 100, 5),
    ] {
        let (mut x, _) = fresh(seed);
        let r = match Ddim::new(eta, spacing, k, T) {
            Ok(d) => d.sample(&mut den, &s, &mut x, &mut scratch, uncond, &mut Counter::new(seed, domain::SAMPLER)),
            Err(e) => Err(RunError::Core(e)),
        };
        run(o, name, &x, r);
    }
    // DPM-Solver++ multistep (deterministic: x_T is the only draw)
    for (name, order, spacing, k, seed) in
        [("dpmpp/2m_linspace_10", 2, Spacing::Linspace, 10, 10), ("dpmpp/3m_trailing_20", 3, Spacing::Trailing, 20, 11)]
    {
        let (mut x, _) = fresh(seed);
        let mut history = [0.0f32; 2 * 2 * N];
        let r = match DpmSolverPP::new(order, spacing, k, T, 0) {
            Ok(d) => d.sample(&mut den, &s, &mut x, &mut scratch, &mut history[..(order - 1) * 2 * N], uncond),
            Err(e) => Err(RunError::Core(e)),
        };
        run(o, name, &x, r);
    }
    // the other few-step solvers, on the table's levels and on Karras' (fractional timesteps)
    let table = |family, spacing, k| Sigmas::new(family, spacing, k, T, 0);
    let karras = |family, spacing, k, rounding| {
        Sigmas::new(family, spacing, k, T, 0).and_then(|s| s.karras(None, None, rounding))
    };
    let mut history = [0.0f32; 3 * 2 * N];
    for (name, sigmas, seed) in [
        ("unipc/bh2_2_linspace_10", table(SigmaFamily::Multistep, Spacing::Linspace, 10), 12),
        ("unipc/bh2_2_karras_10", karras(SigmaFamily::Multistep, Spacing::Linspace, 10, TimeRounding::Nearest), 13),
    ] {
        let (mut x, _) = fresh(seed);
        let r = match sigmas.and_then(|s| UniPc::new(2, s)) {
            Ok(u) => u.sample(&mut den, &s, &mut x, &mut scratch, &mut history[..2 * 2 * N], uncond),
            Err(e) => Err(RunError::Core(e)),
        };
        run(o, name, &x, r);
    }
    {
        let (mut x, _) = fresh(14);
        let r = match table(SigmaFamily::Multistep, Spacing::Trailing, 20).and_then(|s| UniPc::new(3, s)) {
            Ok(mut u) => {
                u.variant = UniPcVariant::Bh1;
                u.sample(&mut den, &s, &mut x, &mut scratch, &mut history, uncond)
            }
            Err(e) => Err(RunError::Core(e)),
        };
        run(o, "unipc/bh1_3_trailing_20", &x, r);
    }
    for (name, order, sigmas, seed) in [
        ("deis/2_linspace_10", 2, table(SigmaFamily::Multistep, Spacing::Linspace, 10), 15),
        ("deis/3_karras_20", 3, karras(SigmaFamily::Multistep, Spacing::Linspace, 20, TimeRounding::Nearest), 16),
    ] {
        let (mut x, _) = fresh(seed);
        let r = match sigmas.map(|s| s.ending(FinalSigma::First)).and_then(|s| Deis::new(order, s)) {
            Ok(d) => d.sample(&mut den, &s, &mut x, &mut scratch, &mut history[..(order - 1) * 2 * N], uncond),
            Err(e) => Err(RunError::Core(e)),
        };
        run(o, name, &x, r);
    }
    for (name, sigmas, seed) in [
        ("euler/linspace_20", table(SigmaFamily::Discrete, Spacing::Linspace, 20), 17),
        ("euler/karras_10", karras(SigmaFamily::Discrete, Spacing::Linspace, 10, TimeRounding::Exact), 18),
    ] {
        let (mut x, _) = fresh(seed);
        let r = match sigmas {
            Ok(sg) => Euler::new(sg).sample(&mut den, &s, &mut x, &mut scratch, uncond),
            Err(e) => Err(RunError::Core(e)),
        };
        run(o, name, &x, r);
    }
    for (name, sigmas, seed) in [
        ("heun/trailing_10", table(SigmaFamily::Discrete, Spacing::Trailing, 10), 19),
        ("heun/karras_10", karras(SigmaFamily::Discrete, Spacing::Leading, 10, TimeRounding::Exact), 20),
    ] {
        let (mut x, _) = fresh(seed);
        let r = match sigmas {
            Ok(sg) => Heun::new(sg).sample(&mut den, &s, &mut x, &mut scratch, &mut history[..2 * 2 * N], uncond),
            Err(e) => Err(RunError::Core(e)),
        };
        run(o, name, &x, r);
    }
    {
        // DPM-Solver++ on Karras' levels, ending on the table's first
        let (mut x, _) = fresh(21);
        let sigmas = karras(SigmaFamily::Multistep, Spacing::Linspace, 10, TimeRounding::Nearest);
        let r = match sigmas.map(|s| s.ending(FinalSigma::First)).and_then(|s| DpmSolverPP::with_sigmas(2, s)) {
            Ok(d) => d.sample(&mut den, &s, &mut x, &mut scratch, &mut history[..2 * N], uncond),
            Err(e) => Err(RunError::Core(e)),
        };
        run(o, "dpmpp/2m_karras_sigma_min_10", &x, r);
    }
    {
        let (mut x, _) = fresh(6);
        let r = match Timesteps::new(Spacing::Leading, 20, T, 0) {
            Ok(levels) => AnnealedLangevin { levels, steps_per_level: 5, step_size: 0.5, denoise: true }.sample(
                &mut den,
                &s,
                &mut x,
                &mut scratch,
                uncond,
                &mut Counter::new(6, domain::SAMPLER),
            ),
            Err(e) => Err(RunError::Core(e)),
        };
        run(o, "langevin/20x5", &x, r);
    }
    let labels = [1u32; N];
    {
        let (mut x, _) = fresh(7);
        let mut buf = [0.0f32; 2 * N];
        let r = match (ClassifierFree::new(&mut den, 3.0, &mut buf), Ddim::new(0.0, Spacing::Trailing, 50, T)) {
            (Ok(mut g), Ok(d)) => d
                .sample(
                    &mut g,
                    &s,
                    &mut x,
                    &mut scratch,
                    Condition::Class(&labels),
                    &mut Counter::new(7, domain::SAMPLER),
                )
                .map_err(|_| RunError::Core(elbo_core::Error::Unsupported("cfg"))),
            _ => Err(RunError::Core(elbo_core::Error::Unsupported("cfg"))),
        };
        run(o, "guidance/classifier_free_3", &x, r);
    }
    {
        let (mut x, _) = fresh(8);
        let mut buf = [0.0f32; 2 * N];
        let r = match (
            ClassifierGuided::new(OptimalDenoiser::new(g), g, 3, 2.0, &mut buf),
            Ddim::new(0.0, Spacing::Trailing, 50, T),
        ) {
            (Ok(mut gd), Ok(d)) => d
                .sample(
                    &mut gd,
                    &s,
                    &mut x,
                    &mut scratch,
                    Condition::Class(&labels),
                    &mut Counter::new(8, domain::SAMPLER),
                )
                .map_err(|_| RunError::Core(elbo_core::Error::Unsupported("classifier"))),
            _ => Err(RunError::Core(elbo_core::Error::Unsupported("classifier"))),
        };
        run(o, "guidance/classifier_2", &x, r);
    }
    // The full bound with the exact denoiser, both estimators.
    for (name, estimator) in [("elbo/rb", Estimator::RaoBlackwell), ("elbo/mc", Estimator::MonteCarlo)] {
        let mut rng = Pcg32::seed_from_u64(9);
        let mut x0 = [0.0f32; 2 * 8];
        let _ = g.sample(&mut rng, &mut x0, None);
        let (mut xt, mut eps, mut pred) = ([0.0f32; 16], [0.0f32; 16], [0.0f32; 16]);
        let mut per_example = [0.0f64; 8];
        let mut per_step = [0.0f64; T];
        let opts = ElboOptions { variance: ReverseVariance::Large, estimator, decoder: Decoder::Continuous };
        let r = neg_elbo(
            &mut den,
            &s,
            &x0,
            uncond,
            opts,
            &mut Counter::new(9, domain::BOUND),
            ElboScratch { xt: &mut xt, eps: &mut eps, pred: &mut pred, var: &mut [] },
            ElboOutput { per_example: &mut per_example, per_step: &mut per_step, per_term: &mut [] },
        );
        let mut label = [0u8; 96];
        o.f64s(concat(&mut label, &[name, "/per_example"]), &per_example);
        o.f64s(concat(&mut label, &[name, "/per_step"]), &per_step);
        o.check(concat(&mut label, &[name, " ran"]), r.is_ok());
    }
    let _ = den.dim();
}

/// The shipped two-moons model (`models/two-moons/model.bin`), read in place.
pub static TWO_MOONS: &[u8] = include_bytes!("../../../models/two-moons/model.bin");

/// Samples from the shipped model with DDIM (50 steps) and DDPM (all 1000 steps), with the
/// blob's own schedule table (no table in RAM), de-normalised to data units.
fn trained_model<W: Write>(o: &mut Out<'_, W>) {
    let blob = match elbo_core::mlp::ModelBlob::parse(TWO_MOONS) {
        Ok(b) => b,
        Err(_) => {
            o.check("model/blob parses", false);
            return;
        }
    };
    let schedule = blob.schedule();
    let mut den = blob.denoiser();
    let mut scratch = [0.0f32; 2 * N];
    let denorm = |x: &mut [f32]| {
        for row in x.chunks_exact_mut(2) {
            for (d, v) in row.iter_mut().enumerate() {
                let (m, s) = blob.normalization(d);
                *v = *v * s + m;
            }
        }
    };
    // Two moons lie in [-1.3, 2.3] x [-0.8, 1.3] (noise 0.05): a loose box checks the samples.
    let in_box = |x: &[f32]| x.chunks_exact(2).all(|r| r[0] > -2.0 && r[0] < 3.0 && r[1] > -1.5 && r[1] < 2.0);
    {
        let (mut x, _) = fresh(11);
        let r = match Ddim::new(0.0, Spacing::Trailing, 50, schedule.steps()) {
            Ok(d) => d.sample(
                &mut den,
                &schedule,
                &mut x,
                &mut scratch,
                Condition::Unconditional,
                &mut Counter::new(11, domain::SAMPLER),
            ),
            Err(e) => Err(RunError::Core(e)),
        };
        denorm(&mut x);
        o.f32s("model/two-moons/ddim50", &x);
        o.check("model/two-moons/ddim50 samples lie near the moons", r.is_ok() && in_box(&x));
    }
    {
        let (mut x, _) = fresh(12);
        let (x, scratch) = (&mut x[..8], &mut scratch[..8]);
        let r = Ddpm::default().sample(
            &mut den,
            &schedule,
            x,
            scratch,
            Condition::Unconditional,
            &mut Counter::new(12, domain::SAMPLER),
        );
        denorm(x);
        o.f32s("model/two-moons/ddpm1000", x);
        o.check("model/two-moons/ddpm1000 samples lie near the moons", r.is_ok() && in_box(x));
    }
}
