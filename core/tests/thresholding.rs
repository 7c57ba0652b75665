//! Dynamic thresholding (Imagen, Sec. 2.3) against a reference that sorts: `torch.quantile`'s
//! linear interpolation over the sorted `|x0_hat|` of each example, as diffusers'
//! `_threshold_sample` computes it, then `clamp(x0, -s, s) / s`.

use elbo_core::Prediction;
use elbo_core::sampler::{Clip, DdimCoefficients, ddim_update};

/// `torch.quantile(|x|, q)` in f32 (rank `q (n - 1)`, floor and ceiling, torch's `lerp`).
fn quantile_by_sorting(x: &[f32], q: f32) -> f32 {
    let mut a: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    a.sort_by(f32::total_cmp);
    let rank = q * (a.len() - 1) as f32;
    let (lo, hi) = (a[rank.floor() as usize], a[rank.ceil() as usize]);
    let w = rank - rank.floor();
    if w < 0.5 { lo + w * (hi - lo) } else { hi - (hi - lo) * (1.0 - w) }
}

/// With `sqrt(abar_prev) = 1`, no direction and no noise, a DDIM update of an x0-prediction
/// returns the mapped `x0_hat` itself.
fn mapped(pred: &[f32], clip: Clip) -> Vec<f32> {
    let c = DdimCoefficients { a_t: 0.5, s_t: 0.75, a_p: 1.0, direction: 0.0, sigma: 0.0 };
    let mut x = vec![0.25f32; pred.len()];
    ddim_update(&c, Prediction::X0, pred, &mut x, clip, |_, _| unreachable!()).unwrap();
    x
}

#[test]
fn the_threshold_is_torch_quantile_of_the_absolute_values() {
    // a deterministic spread of values with ties, signs and a heavy tail
    let mut state = 12345u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
    };
    for (n, ratio, max) in
        [(784usize, 0.995f32, 1.0f32), (784, 0.995, 3.0), (64, 0.9, 2.5), (7, 0.5, 10.0), (1, 0.995, 4.0)]
    {
        let mut pred: Vec<f32> = (0..n).map(|_| next()).collect();
        if n > 4 {
            pred[1] = pred[0]; // a tie
            pred[2] = -pred[3];
        }
        let s = quantile_by_sorting(&pred, ratio).clamp(1.0, max);
        let want: Vec<f32> = pred.iter().map(|&v| v.clamp(-s, s) / s).collect();
        let got = mapped(&pred, Clip::Dynamic { ratio, max });
        assert_eq!(got, want, "n = {n}, ratio = {ratio}, max = {max}, s = {s}");
    }
    // small values: s clamps to 1 and nothing changes
    let small = [0.1f32, -0.2, 0.3];
    assert_eq!(mapped(&small, Clip::Dynamic { ratio: 0.995, max: 1.0 }), small);
}

#[test]
fn static_clipping_clamps() {
    assert_eq!(mapped(&[-3.0, 0.5, 2.0], Clip::Range(1.5)), [-1.5, 0.5, 1.5]);
    assert_eq!(mapped(&[-3.0, 0.5, 2.0], Clip::Off), [-3.0, 0.5, 2.0]);
}

#[test]
fn bad_parameters_are_refused() {
    for c in [
        Clip::Range(0.0),
        Clip::Range(f32::INFINITY),
        Clip::Dynamic { ratio: 1.5, max: 1.0 },
        Clip::Dynamic { ratio: 0.9, max: 0.5 },
    ] {
        assert!(c.check().is_err(), "{c:?}");
    }
}
