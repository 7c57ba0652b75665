//! Random numbers: uniforms and standard normals from any caller-supplied [`rand_core::Rng`],
//! and the counter-based noise of samplers and bounds ([`Counter`], Philox4x32-10), addressed by
//! example and draw through the [`Noise`] trait.
//!
//! The core never owns or picks a generator (as in `rand_distr`): every function takes
//! `&mut R` with `R: Rng + ?Sized`. The arithmetic is f32 with `libm`, without fused
//! multiply-add, so a seed gives the same bits on every target.
//!
//! Normals use the Ziggurat method of Marsaglia & Tsang (2000) with 256 layers: one `u32` per
//! draw in about 99% of cases (8 bits pick the layer, 23 bits the position), the exact density
//! `exp(-x^2/2)` in the wedges and Marsaglia's exponential method in the tail beyond `R`.

mod philox;
mod ziggurat_tables;

pub use philox::{Counter, Noise, PhiloxStream, Sequential, box_muller, domain, ln_f32, philox_normals, philox4x32_10};

use rand_core::Rng;
use ziggurat_tables::{F, R, X};

/// 2^-24.
const TWO_POW_M24: f32 = 1.0 / 16_777_216.0;
/// 2^-23.
const TWO_POW_M23: f32 = 1.0 / 8_388_608.0;

/// A uniform f32 in `[0, 1)` with 24 random bits.
#[inline]
pub fn uniform_f32<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    (rng.next_u32() >> 8) as f32 * TWO_POW_M24
}

/// A uniform f32 in the open interval `(0, 1)`: `(k + 1/2) 2^-23` for a 23-bit `k`.
#[inline]
pub fn uniform_open_f32<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    ((rng.next_u32() >> 9) * 2 + 1) as f32 * TWO_POW_M24
}

/// A uniform f64 in `[0, 1)` with 53 random bits.
#[inline]
pub fn uniform_f64<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// A uniform integer in `0..n` (Lemire's multiply-shift with rejection, exact for any `n > 0`).
/// Returns 0 for `n = 0`.
#[inline]
pub fn uniform_below<R: Rng + ?Sized>(rng: &mut R, n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = u64::from(rng.next_u32()) * u64::from(n);
        if (m as u32) >= threshold {
            return (m >> 32) as u32;
        }
    }
}

/// A standard normal N(0, 1) draw (Ziggurat, 256 layers).
#[inline]
pub fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    loop {
        let bits = rng.next_u32();
        let i = (bits & 0xff) as usize;
        // Signed uniform in (-1, 1): (2k + 1) 2^-23 - 1 for a 23-bit k, exact in f32.
        let u = ((bits >> 9) * 2 + 1) as f32 * TWO_POW_M23 - 1.0;
        let x = u * X[i];
        if libm::fabsf(x) < X[i + 1] {
            return x;
        }
        if i == 0 {
            return tail(rng, u < 0.0);
        }
        let y = F[i + 1] + (F[i] - F[i + 1]) * uniform_f32(rng);
        if y < libm::expf(-0.5 * x * x) {
            return x;
        }
    }
}

/// The tail beyond `R` (Marsaglia 1964): accept `x = -ln(u1)/R` when `-2 ln(u2) >= x^2`.
#[cold]
fn tail<G: Rng + ?Sized>(rng: &mut G, negative: bool) -> f32 {
    loop {
        let x = -libm::logf(uniform_open_f32(rng)) / R;
        let y = -libm::logf(uniform_open_f32(rng));
        if y + y >= x * x {
            return if negative { -(R + x) } else { R + x };
        }
    }
}

/// Fills `out` with independent standard normals.
pub fn fill_standard_normal<R: Rng + ?Sized>(rng: &mut R, out: &mut [f32]) {
    for v in out {
        *v = standard_normal(rng);
    }
}
