//! The counter-based noise: Philox4x32-10 against Random123's published known-answer vectors,
//! the Box-Muller transform against a float64 evaluation of the same formula on the same words,
//! the distribution of the normals, and addressing (any slice of an example's noise equals the
//! same slice of the whole).

use elbo_core::rng::{Counter, Noise, PhiloxStream, box_muller, domain, ln_f32, philox_normals, philox4x32_10};
use rand_core::Rng;

#[test]
fn philox_matches_random123_known_answers() {
    // Random123's kat_vectors: counter, key, expected (Salmon et al. 2011)
    let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        ([0; 4], [0; 2], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
        ([u32::MAX; 4], [u32::MAX; 2], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];
    for (ctr, key, want) in cases {
        assert_eq!(philox4x32_10(ctr, key), want, "counter {ctr:08x?} key {key:08x?}");
    }
}

/// Box-Muller in float64 with std's functions, on the same words.
fn box_muller_f64(a: u32, b: u32) -> (f64, f64) {
    // u1 as the transform defines it, in float32
    let u1 = f64::from(a as f32 * (1.0 / 4_294_967_296.0) + 0.5 / 4_294_967_296.0);
    let r = (-2.0 * u1.ln()).sqrt();
    let th = 2.0 * std::f64::consts::PI * f64::from(b) * 2f64.powi(-32);
    (r * th.cos(), r * th.sin())
}

#[test]
fn box_muller_agrees_with_float64() {
    let mut s = PhiloxStream::new(7, 0, 0, 0);
    let mut worst: f64 = 0.0;
    let mut words: Vec<(u32, u32)> = (0..200_000).map(|_| (s.next_u32(), s.next_u32())).collect();
    // the extremes of both words
    for a in [0, 1, 2, 0xffff, 0xffff_ff00, u32::MAX] {
        for b in [0, 1, 1 << 29, (1 << 29) - 1, 1 << 30, 3 << 30, u32::MAX] {
            words.push((a, b));
        }
    }
    for (a, b) in words {
        let (z0, z1) = box_muller(a, b);
        let (r0, r1) = box_muller_f64(a, b);
        for (z, r) in [(z0, r0), (z1, r1)] {
            // a few f32 ulps of the radius, at least 1 (the angle's rounding is relative to r)
            let err = (f64::from(z) - r).abs() / (r0 * r0 + r1 * r1).sqrt().max(1.0);
            worst = worst.max(err);
        }
    }
    assert!(worst < 6e-7, "worst error relative to the radius: {worst:e}");
}

#[test]
fn ln_agrees_with_float64() {
    let mut worst: f64 = 0.0;
    let mut x = 2f32.powi(-33);
    while x < 4.0 {
        let got = f64::from(ln_f32(x));
        let want = f64::from(x).ln();
        worst = worst.max((got - want).abs() / want.abs().max(1.0));
        x = f32::from_bits(x.to_bits() + 997);
    }
    assert!(worst < 2.5e-7, "worst error: {worst:e}");
}

/// The standard normal CDF (Abramowitz & Stegun 7.1.26 is too coarse: erfc by its continued
/// fraction is not needed; use the complementary error function through std's erf-free route,
/// a high-order series): here the W. J. Cody rational approximation is replaced by numerical
/// integration of the density, accurate to 1e-12 on a fine Simpson grid.
fn normal_cdf(x: f64) -> f64 {
    let f = |t: f64| (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let (a, n) = (-12.0, 20_000);
    if x <= a {
        return 0.0;
    }
    let h = (x - a) / n as f64;
    let mut s = f(a) + f(x);
    for i in 1..n {
        s += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    s * h / 3.0
}

#[test]
fn normals_are_standard_normal() {
    let n = 1 << 20;
    let mut z = vec![0.0f32; n];
    philox_normals(42, domain::SAMPLER, 3, 5, 0, &mut z);
    let mean = z.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let var = z.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n as f64;
    let kurt = z.iter().map(|&v| (f64::from(v) - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
    // standard errors: 1/sqrt(n) = 1e-3 for the mean, sqrt(2/n) = 1.4e-3 for the variance,
    // sqrt(24/n) = 4.8e-3 for the kurtosis; 5 of them
    assert!(mean.abs() < 5e-3, "mean {mean}");
    assert!((var - 1.0).abs() < 7e-3, "variance {var}");
    assert!((kurt - 3.0).abs() < 2.4e-2, "kurtosis {kurt}");
    // Kolmogorov-Smirnov against the exact CDF (critical value 1.63/sqrt(n) at 1%)
    let mut s: Vec<f64> = z.iter().map(|&v| f64::from(v)).collect();
    s.sort_by(f64::total_cmp);
    let mut d: f64 = 0.0;
    for (i, &v) in s.iter().enumerate().step_by(97) {
        let c = normal_cdf(v);
        d = d.max((c - i as f64 / n as f64).abs()).max((c - (i + 1) as f64 / n as f64).abs());
    }
    assert!(d < 1.63 / (n as f64).sqrt(), "KS distance {d}");
    // the tails: P(|z| > 3) = 2.6998e-3
    let tail = z.iter().filter(|v| v.abs() > 3.0).count() as f64 / n as f64;
    assert!((tail - 2.6998e-3).abs() < 5.0 * (2.6998e-3 / n as f64).sqrt(), "P(|z| > 3) = {tail}");
}

#[test]
fn any_slice_equals_the_same_slice_of_the_whole() {
    let mut whole = vec![0.0f32; 301];
    philox_normals(9, domain::BOUND, 11, 2, 0, &mut whole);
    for (first, len) in [(0, 301), (1, 5), (3, 40), (4, 32), (5, 296), (37, 1), (100, 201), (299, 2)] {
        let mut part = vec![0.0f32; len];
        philox_normals(9, domain::BOUND, 11, 2, first, &mut part);
        assert_eq!(part, whole[first..first + len], "elements {first}..{}", first + len);
    }
    // the batch's example 0 of a counter at offset 11 is the run's example 11
    let mut c = Counter::new(9, domain::BOUND).at(11);
    let mut z = vec![0.0f32; 301];
    c.normals(0, 2, 0, &mut z);
    assert_eq!(z, whole);
    // another example, draw, domain or seed gives other numbers
    for (seed, dom, ex, draw) in
        [(10, domain::BOUND, 11, 2), (9, domain::START, 11, 2), (9, domain::BOUND, 12, 2), (9, domain::BOUND, 11, 3)]
    {
        let mut o = vec![0.0f32; 301];
        philox_normals(seed, dom, ex, draw, 0, &mut o);
        assert!(o.iter().zip(&whole).all(|(a, b)| a != b), "{seed} {dom} {ex} {draw}");
    }
}
