//! The command line's random numbers for sampling and evaluation: the core's counter-based
//! noise ([`Counter`], Philox4x32-10), so that example `i` of a run gets the same numbers
//! whatever the batch, the shard, the thread count or the machine. Here it is made with the
//! widest vector extension of the CPU ([`crate::nn::wide`]: the same IEEE operations, so the
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
        let mut c = self.0;
        if out.len() >= 2 * PAR_CHUNK {
            return par_normals(c, example, draw, first, out);
        }
        crate::nn::wide(|| c.normals(example, draw, first, out));
    }
}

/// [`Noise::normals`] of a large slice, a chunk per thread (the bits do not depend on how
/// the slice is cut: element `j` is always the same counter's lane).
pub fn par_normals(c: Counter, example: usize, draw: u32, first: usize, out: &mut [f32]) {
    out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(k, o)| {
        let mut c = c;
        crate::nn::wide(|| c.normals(example, draw, first + k * PAR_CHUNK, o));
    });
}

/// `x_T` of a batch of rows of `dim` values: row `r` is the run's example `offset + r`, its
/// values the [`domain::START`] normals of that example.
pub fn starts(seed: u64, offset: u64, dim: usize, x: &mut [f32]) {
    let c = Counter::new(seed, domain::START).at(offset);
    x.par_chunks_mut(dim.max(1)).enumerate().for_each(|(r, row)| {
        let mut c = c;
        crate::nn::wide(|| c.normals(r, 0, 0, row));
    });
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
        crate::nn::wide(|| {
            ddpm_update(step, kind, pc, xc, Sigma::Fixed(sigma), Clip::Off, |first, out| {
                let mut c = noise;
                c.normals(example, draw, k * PAR_CHUNK + first, out);
            })
        })
    })
}
