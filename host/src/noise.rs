//! The command line's random numbers for sampling and evaluation: the core's counter-based
//! noise ([`Counter`], Philox4x32-10), so that example `i` of a run gets the same numbers
//! whatever the batch, the shard, the thread count or the machine. Here it is made with the
//! widest vector extension of the CPU ([`fill`]: the same IEEE operations, so the
//! same bits as the core's and the firmware's) and, for large arrays, on every thread.

use elbo_core::rng::{Counter, Noise, domain};
use rayon::prelude::*;

/// Elements a thread makes at a time in [`par_normals`].
const PAR_CHUNK: usize = 1 << 14;

/// A [`Counter`] made wide (see the module's note). Example `e` of the batch is the run's
/// example `offset + e`.
#[derive(Debug, Clone, Copy)]
pub struct Wide(pub Counter);

impl Wide {
    /// The noise of `domain` for a run seeded `seed`, for a batch starting at the run's
    /// example `offset`.
    pub fn new(seed: u64, domain: u32, offset: u64) -> Self {
        Wide(Counter::new(seed, domain).at(offset))
    }
}

impl Noise for Wide {
    fn normals(&mut self, example: usize, draw: u32, first: usize, out: &mut [f32]) {
        if out.len() >= 2 * PAR_CHUNK {
            return par_normals(self.0, example, draw, first, out);
        }
        fill(self.0, example, draw, first, out);
    }
}

/// [`Counter`]'s normals, with the core's loop compiled for AVX-512F or AVX2 where the CPU has
/// them (the core's function is always inlined, so here it is compiled with those features;
/// no fused multiply-add is enabled, so the bits are the same as on any target).
pub fn fill(c: Counter, example: usize, draw: u32, first: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(mut c: Counter, example: usize, draw: u32, first: usize, out: &mut [f32]) {
            c.normals(example, draw, first, out);
        }
        #[target_feature(enable = "avx2")]
        fn avx2(mut c: Counter, example: usize, draw: u32, first: usize, out: &mut [f32]) {
            c.normals(example, draw, first, out);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { avx512(c, example, draw, first, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { avx2(c, example, draw, first, out) };
        }
    }
    let mut c = c;
    c.normals(example, draw, first, out);
}

/// [`Noise::normals`] of a large slice, a chunk per thread (the bits do not depend on how
/// the slice is cut: element `j` is always the same counter's lane).
pub fn par_normals(c: Counter, example: usize, draw: u32, first: usize, out: &mut [f32]) {
    out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(k, o)| fill(c, example, draw, first + k * PAR_CHUNK, o));
}

/// `x_T` of a batch of rows of `dim` values: row `r` is the run's example `offset + r`, its
/// values the [`domain::START`] normals of that example.
pub fn starts(seed: u64, offset: u64, dim: usize, x: &mut [f32]) {
    let c = Counter::new(seed, domain::START).at(offset);
    x.par_chunks_mut(dim.max(1)).enumerate().for_each(|(r, row)| fill(c, r, 0, 0, row));
}

/// The sampler noise of a run seeded `seed` for a batch starting at the run's example
/// `offset`.
pub fn sampler(seed: u64, offset: u64) -> Wide {
    Wide::new(seed, domain::SAMPLER, offset)
}

/// The bound's draws of a run seeded `seed` for a batch starting at the run's example
/// `offset`.
pub fn bound(seed: u64, offset: u64) -> Wide {
    Wide::new(seed, domain::BOUND, offset)
}

/// One DDPM update of one large example (the core's [`elbo_core::sampler::ddpm_update`] with
/// a fixed sigma) on every thread: `x` is cut into parts, each updated with its own elements'
/// noise (example `example`'s draw `draw`), so the bits are those of the one-thread update.
#[allow(clippy::too_many_arguments)]
pub fn par_ddpm_update(
    step: &elbo_core::Step,
    kind: elbo_core::Prediction,
    pred: &[f32],
    x: &mut [f32],
    sigma: f32,
    noise: Counter,
    example: usize,
    draw: u32,
) -> elbo_core::Result<()> {
    use elbo_core::sampler::{Clip, Sigma, ddpm_update};
    if x.len() != pred.len() {
        return Err(elbo_core::Error::DimensionMismatch { expected: x.len(), got: pred.len() });
    }
    x.par_chunks_mut(PAR_CHUNK).zip(pred.par_chunks(PAR_CHUNK)).enumerate().try_for_each(|(k, (xc, pc))| {
        ddpm_update(step, kind, pc, xc, Sigma::Fixed(sigma), Clip::Off, |first, out| {
            fill(noise, example, draw, k * PAR_CHUNK + first, out);
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector builds give the core's bits (its plain build here, as on the devices).
    #[test]
    fn wide_and_threaded_noise_equal_the_cores() {
        let c = Counter::new(0x1234_5678_9abc, domain::SAMPLER).at(41);
        for (first, len) in [(0, 3), (1, 77), (6, 1000), (0, 3 * PAR_CHUNK + 5)] {
            let mut plain = vec![0.0f32; len];
            elbo_core::rng::philox_normals(c.seed, c.domain, 41 + 2, 9, first, &mut plain);
            let mut wide = vec![0.0f32; len];
            Wide(c).normals(2, 9, first, &mut wide);
            assert!(plain.iter().zip(&wide).all(|(a, b)| a.to_bits() == b.to_bits()), "{first} {len}");
            let mut filled = vec![0.0f32; len];
            fill(c, 2, 9, first, &mut filled);
            assert_eq!(filled, plain);
        }
    }
}
