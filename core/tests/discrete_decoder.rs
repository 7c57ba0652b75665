//! VDM's discrete decoder against its definition in f64 over every level (no truncation),
//! its derivative against central differences, and its limits: `ln K` when the noise
//! swamps the levels, 0 when it vanishes.

use elbo_core::elbo::discrete_decoder_nll;

/// `-ln p(x_j | z_0)` straight from the definition: a softmax over all `levels` values.
fn reference(j: usize, levels: usize, eps: f64, lambda_max: f64) -> f64 {
    let s = (-0.5 * lambda_max).exp();
    let x = |k: usize| 2.0 * k as f64 / (levels - 1) as f64 - 1.0;
    let z = x(j) + s * eps;
    let logits: Vec<f64> = (0..levels).map(|k| -(z - x(k)).powi(2) / (2.0 * s * s)).collect();
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
    lse - logits[j]
}

#[test]
fn matches_the_definition_and_its_derivative() {
    for &levels in &[2usize, 17, 256] {
        for &lambda in &[-6.0, 0.0, 4.0, 8.0, 11.0, 16.0] {
            for &eps in &[-2.7, -0.4, 0.0, 0.9, 3.1] {
                for &j in &[0, levels / 3, levels - 1] {
                    let (v, dv) = discrete_decoder_nll(j, levels, eps, lambda).unwrap();
                    let want = reference(j, levels, eps, lambda);
                    assert!(
                        (v - want).abs() <= 1e-9 * want.abs().max(1.0),
                        "K {levels} l {lambda} e {eps} j {j}: {v} vs {want}"
                    );
                    let h = 1e-5;
                    let fd =
                        (reference(j, levels, eps, lambda + h) - reference(j, levels, eps, lambda - h)) / (2.0 * h);
                    assert!(
                        (dv - fd).abs() <= 1e-5 * fd.abs().max(1.0),
                        "derivative K {levels} l {lambda}: {dv} vs {fd}"
                    );
                }
            }
        }
    }
}

#[test]
fn limits() {
    // noise far wider than [-1, 1]: every level equally likely
    let (v, _) = discrete_decoder_nll(3, 17, 0.5, -30.0).unwrap();
    assert!((v - 17f64.ln()).abs() < 1e-6, "{v}");
    // no noise: the right level with certainty
    let (v, dv) = discrete_decoder_nll(3, 17, 0.5, 30.0).unwrap();
    assert!(v.abs() < 1e-12 && dv.abs() < 1e-12, "{v} {dv}");
    assert!(discrete_decoder_nll(17, 17, 0.0, 0.0).is_none());
    assert!(discrete_decoder_nll(0, 1, 0.0, 0.0).is_none());
}
