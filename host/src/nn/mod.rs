//! The network families and what they share.
//!
//! - [`mlp`]: an MLP on flat vectors (the layout of the core's device network);
//! - [`unet`]: a convolutional U-Net on images.
//!
//! Both run forward and backward on fixed chunks of examples in parallel with rayon, and sum the
//! chunks' gradients in chunk order, so results do not depend on the number of threads.

pub mod gemm;
pub mod mlp;
pub mod unet;

pub use elbo_core::mlp::{continuous_tau, discrete_tau};
pub use mlp::{Batch, Mlp, MlpConfig};
pub use unet::{UNet, UNetConfig};

/// Rows per chunk of the data-parallel forward/backward pass (fixed: results do not depend on
/// the thread count).
pub const CHUNK: usize = 128;

/// Parameters per block of the element-wise parallel passes over the parameter vector (the
/// chunk gradients' sum here, the optimiser step in [`crate::train`]); any split gives the same
/// bits.
pub const PARAM_BLOCK: usize = 4096;

/// The sum of `n_chunks` gradients of `np` parameters stored one after another in `grads`,
/// in chunk order (`g_0 + g_1 + ...`, element by element), in parallel over blocks of
/// [`PARAM_BLOCK`] parameters: the same bits for any thread count. The result is written once,
/// in parallel, with room for [`crate::continuous::N_PARAMS`] more entries (a learned
/// schedule's gradient, which the trainer appends without moving this one).
pub(crate) fn sum_chunk_gradients(grads: &[f32], np: usize, n_chunks: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut grad = Vec::with_capacity(np + crate::continuous::N_PARAMS);
    grad.spare_capacity_mut()[..np].par_chunks_mut(PARAM_BLOCK).enumerate().for_each(|(k, block)| {
        // in tiles of 64 summed in registers, each entry g_0 + g_1 + ... in chunk order
        for (j, out) in block.chunks_mut(64).enumerate() {
            let (o, n) = (k * PARAM_BLOCK + j * 64, out.len());
            let mut acc = [0.0f32; 64];
            acc[..n].copy_from_slice(&grads[o..o + n]);
            for c in 1..n_chunks {
                acc[..n].iter_mut().zip(&grads[c * np + o..c * np + o + n]).for_each(|(a, &g)| *a += g);
            }
            out.iter_mut().zip(&acc).for_each(|(v, &a)| {
                v.write(a);
            });
        }
    });
    // SAFETY: the loop above wrote every one of the first `np` entries.
    unsafe { grad.set_len(np) };
    grad
}

/// The result of a forward and backward pass ([`crate::network::Network::loss_and_grads`]).
pub struct Grads {
    /// The summed loss.
    pub loss: f64,
    /// `d loss / d params`.
    pub params: Vec<f32>,
    /// `d loss / d x` (`rows x D`), if asked for.
    pub input: Option<Vec<f32>>,
}

/// Runs `f` compiled for the widest vector extension this x86-64 CPU has (AVX-512F, else
/// AVX2), else as built (SSE2). Element-wise loops written with [`exp`] and [`sigmoid`] then use
/// 16 or 8 lanes instead of 4. The arithmetic is the same IEEE operations in every case (no
/// fused multiply-add is enabled), so the results are the same bits on every machine.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `sigmoid(z) = 1 / (1 + e^-z)`, with [`exp`]; SiLU is `z sigmoid(z)` and its derivative
/// `sigmoid(z) (1 + z (1 - sigmoid(z)))`.
#[inline(always)]
pub(crate) fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z))
}

/// `e^x` in f32 without a library call, so that loops over it vectorise: Cephes' `expf`
/// (`x = n ln 2 + r`, `|r| <= ln 2 / 2`, `e^r` by its degree-7 minimax polynomial, `2^n` put
/// into the exponent bits), within 2 ulp of the exact value (tested against f64). Arguments
/// are clamped to `[-87.3, 88.3]`, where `2^n` stays a normal f32: below that the result is
/// ~1e-38 (not 0), above it ~2e38 (not infinity), which the sigmoid does not tell apart.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    // the integer n read off the mantissa bits (an `as` cast would not vectorise)
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which rounds to 0.5 in f32
    let er = p * r * r + r + 1.0;
    er * f32::from_bits(((n_int + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `exp` against f64's `exp` over its whole range (and at the clamps): within 2 ulp.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        let n = 2_000_000;
        for k in 0..=n {
            let x = -87.3 + (88.3 + 87.3) * k as f32 / n as f32;
            let exact = f64::from(x).exp();
            let ulp = f64::from(f32::EPSILON) * 2f64.powi(exact.log2().floor() as i32);
            worst = worst.max((f64::from(exp(x)) - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1.3e-38);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
        assert!(exp(f32::NAN).is_nan());
        assert!(sigmoid(-200.0) < 1e-37 && sigmoid(200.0) == 1.0);
    }
}
