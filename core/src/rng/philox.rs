//! Counter-based random numbers: the noise of example `i` at draw `k` depends only on
//! `(seed, domain, i, k)`, whatever the batch, the shard, the thread count or the target.
//!
//! The bits come from Philox4x32-10 (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers:
//! as easy as 1, 2, 3", SC'11, Sec. 4.2): a keyed bijection of a 128-bit counter, ten rounds of
//! two 32x32 -> 64-bit multiplies, with the key bumped by the Weyl constants between rounds. It
//! passes TestU01's BigCrush, is the generator of cuRAND, JAX and PyTorch's CUDA path, and needs
//! only 32-bit integer arithmetic (one `UMULL` a multiply on a Cortex-M4, `mul`/`mulhu` on
//! RV32IM).
//!
//! The key is the seed; the counter is `[block, draw, example, domain]`. Element `j` of an
//! example's noise at a draw is lane `j mod 4` of block `j / 4`, so any slice of it can be made
//! alone: a shard makes its examples, a thread its part of a large example.
//!
//! Standard normals are made from a block's four words in two Box-Muller pairs (Box & Muller
//! 1958): `r = sqrt(-2 ln u1)`, `(r cos 2 pi u2, r sin 2 pi u2)`. The logarithm, the square root
//! and the sine and cosine are evaluated here with `+`, `*`, `/` and bit operations only (no
//! branch, no table, no fused multiply-add), so the same bits come out on every target and a
//! compiler can vectorise the loop. `u1 = w 2^-32 + 2^-33` lies in `[2^-33, 1]`: the largest
//! normal is `sqrt(66 ln 2) = 6.76`.

use core::convert::Infallible;
use rand_core::TryRng;

/// Philox's multipliers (Random123's `PHILOX_M4x32_0`, `PHILOX_M4x32_1`).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
/// The key's Weyl increments (the golden ratio and sqrt(3) - 1, as 32-bit fractions).
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// What a draw is for: the counter's last word, so that the noise of one purpose never
/// coincides with another's.
pub mod domain {
    /// The starting noise `x_T` of a sample.
    pub const START: u32 = 0;
    /// A sampler's per-step noise (DDPM, DDIM with `eta > 0`, Langevin).
    pub const SAMPLER: u32 = 1;
    /// The bound's draws: `x_t` (elements `0..D`) and the Monte Carlo term's posterior draw
    /// (elements `D..2D`) at draw `t`.
    pub const BOUND: u32 = 2;
    /// Draws that belong to a whole run rather than to an example (the continuous-time
    /// bound's stratification shift).
    pub const RUN: u32 = 4;
    /// The probability-flow likelihood's draws: Hutchinson's probes (draw 0) and the uniform
    /// dequantisation (draw 1) of an example.
    pub const ODE: u32 = 5;
}

/// One Philox4x32-10 block: the counter `ctr` encrypted under `key`.
#[inline(always)]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [[c0], [c1], [c2], [c3]] = philox_lanes([ctr[0]], [ctr[1]], [ctr[2]], [ctr[3]], key);
    [c0, c1, c2, c3]
}

/// `L` Philox4x32-10 blocks at once, word by word across lanes (one array per word, so that
/// each loop is one vector operation): ten rounds of `(c0, c1, c2, c3) <- (hi(M1 c2) ^ c1 ^ k0,
/// lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0))`, the key bumped by the Weyl constants between
/// rounds (Salmon et al. 2011, Sec. 4.2).
#[inline(always)]
fn philox_lanes<const L: usize>(
    mut c0: [u32; L],
    mut c1: [u32; L],
    mut c2: [u32; L],
    mut c3: [u32; L],
    key: [u32; 2],
) -> [[u32; L]; 4] {
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let (mut n0, mut n1, mut n2, mut n3) = ([0u32; L], [0u32; L], [0u32; L], [0u32; L]);
        for l in 0..L {
            let p0 = u64::from(M0) * u64::from(c0[l]);
            let p1 = u64::from(M1) * u64::from(c2[l]);
            n0[l] = (p1 >> 32) as u32 ^ c1[l] ^ k0;
            n1[l] = p1 as u32;
            n2[l] = (p0 >> 32) as u32 ^ c3[l] ^ k1;
            n3[l] = p0 as u32;
        }
        (c0, c1, c2, c3) = (n0, n1, n2, n3);
    }
    [c0, c1, c2, c3]
}

/// The key of a seed.
#[inline]
fn key_of(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// A sequential `rand_core` generator over the blocks of one `(seed, domain, example, draw)`:
/// for draws whose number is not fixed in advance (a class label by rejection, say).
#[derive(Debug, Clone)]
pub struct PhiloxStream {
    key: [u32; 2],
    ctr: [u32; 4],
    buf: [u32; 4],
    pos: usize,
}

impl PhiloxStream {
    /// The stream of `(seed, domain, example, draw)`, from its first block.
    pub fn new(seed: u64, domain: u32, example: u32, draw: u32) -> Self {
        PhiloxStream { key: key_of(seed), ctr: [0, draw, example, domain], buf: [0; 4], pos: 4 }
    }
}

impl TryRng for PhiloxStream {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        if self.pos == 4 {
            self.buf = philox4x32_10(self.ctr, self.key);
            self.ctr[0] = self.ctr[0].wrapping_add(1);
            self.pos = 0;
        }
        self.pos += 1;
        Ok(self.buf[self.pos - 1])
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let lo = self.try_next_u32()?;
        let hi = self.try_next_u32()?;
        Ok(u64::from(hi) << 32 | u64::from(lo))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(4) {
            let w = self.try_next_u32()?.to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
        Ok(())
    }
}

/// `ln 2` split for an exact product with small integers: `LN2_HI` has 16 significant bits.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// `ln x` for a finite normal `x > 0`, to about 1 ulp: `x = 2^e m` with `m` in
/// `[sqrt(1/2), sqrt(2))`, and `ln m = 2 atanh(s)`, `s = (m - 1)/(m + 1)`, `|s| <= 0.1716`, by
/// its odd series to `s^9` (the next term is below `2^-27` of the sum).
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    // m in [1, 2): fold [sqrt 2, 2) onto [sqrt(1/2), 1)
    let big = m > core::f32::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += i32::from(big);
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let series = 2.0 + z * (2.0 / 3.0 + z * (0.4 + z * (2.0 / 7.0 + z * (2.0 / 9.0))));
    let ef = e as f32;
    ef * LN2_HI + (s * series + ef * LN2_LO)
}

/// `sqrt(v)` for `v >= 0` by three Newton steps on `1/sqrt(v)` from the bit-level first guess
/// (Lomont 2003; two steps leave 5e-6), then one product: within 2 ulp of the exact root, with
/// `+` and `*` only.
#[inline(always)]
fn sqrt_f32(v: f32) -> f32 {
    let mut y = f32::from_bits(0x5f37_5a86u32.wrapping_sub(v.to_bits() >> 1));
    let h = 0.5 * v;
    y = y * (1.5 - h * y * y);
    y = y * (1.5 - h * y * y);
    y = y * (1.5 - h * y * y);
    // v = 0: y is finite (the guess of +0 is large but finite), the product 0
    v * y
}

/// Two standard normals from two words by Box-Muller: `r = sqrt(-2 ln u1)` with
/// `u1 = a 2^-32 + 2^-33`, and the angle `2 pi b 2^-32`, reduced to the nearest quarter turn `q`
/// and `phi` in `[-pi/4, pi/4)` exactly in integers, with `sin phi` and `cos phi` by their
/// Taylor series to `phi^9` and `phi^10` (remainders below `2e-9`).
#[inline(always)]
pub fn box_muller(a: u32, b: u32) -> (f32, f32) {
    const TWO_M32: f32 = 1.0 / 4_294_967_296.0;
    const TWO_M33: f32 = 0.5 / 4_294_967_296.0;
    let u1 = a as f32 * TWO_M32 + TWO_M33;
    let r = sqrt_f32(-2.0 * ln_f32(u1).min(0.0));
    let q = b.wrapping_add(1 << 29) >> 30;
    let f = b.wrapping_sub(q << 30) as i32;
    let phi = f as f32 * (core::f32::consts::FRAC_PI_2 / 1_073_741_824.0);
    let p2 = phi * phi;
    let sin = phi + phi * p2 * (-1.0 / 6.0 + p2 * (1.0 / 120.0 + p2 * (-1.0 / 5040.0 + p2 * (1.0 / 362_880.0))));
    let cos =
        1.0 + p2 * (-0.5 + p2 * (1.0 / 24.0 + p2 * (-1.0 / 720.0 + p2 * (1.0 / 40_320.0 + p2 * (-1.0 / 3_628_800.0)))));
    // rotate by q quarter turns: (cos, sin) of phi + q pi/2 is (cos, sin), (-sin, cos),
    // (-cos, -sin), (sin, -cos) for q = 0..3: swap on odd q, then flip signs by bits
    let swap = q & 1 == 1;
    let (c, s) = (if swap { sin } else { cos }, if swap { cos } else { sin });
    let c = f32::from_bits(c.to_bits() ^ ((q.wrapping_add(1) & 2) << 30));
    let s = f32::from_bits(s.to_bits() ^ ((q & 2) << 30));
    (r * c, r * s)
}

/// The four normals of one block.
#[inline(always)]
fn block_normals(w: [u32; 4]) -> [f32; 4] {
    let (n0, n1) = box_muller(w[0], w[1]);
    let (n2, n3) = box_muller(w[2], w[3]);
    [n0, n1, n2, n3]
}

/// Blocks made at once, lane by lane, so that the loops vectorise: 32 on 64-bit targets (two
/// AVX-512 registers a word: measured fastest, 0.69 ns a normal against 0.92 with 16 and 0.78
/// with 64), 4 on small ones, whose stacks are small. The bits do not depend on it: each block
/// is its own counter's.
#[cfg(target_pointer_width = "64")]
const LANES: usize = 32;
#[cfg(not(target_pointer_width = "64"))]
const LANES: usize = 4;

/// The standard normals of elements `first..first + out.len()` of `(seed, domain, example,
/// draw)`: element `j` is lane `j mod 4` of block `j / 4`'s normals. (Always inlined, so that
/// a caller compiled for a wider vector extension vectorises it.)
#[inline(always)]
pub fn philox_normals(seed: u64, domain: u32, example: u32, draw: u32, first: usize, out: &mut [f32]) {
    let key = key_of(seed);
    let block = |b: usize| block_normals(philox4x32_10([b as u32, draw, example, domain], key));
    let mut j = first;
    let mut rest = out;
    // a head up to the next block boundary
    if !j.is_multiple_of(4) && !rest.is_empty() {
        let z = block(j / 4);
        let take = (4 - j % 4).min(rest.len());
        rest[..take].copy_from_slice(&z[j % 4..j % 4 + take]);
        rest = &mut rest[take..];
        j += take;
    }
    // whole groups of LANES blocks at once
    let mut groups = rest.chunks_exact_mut(4 * LANES);
    for g in &mut groups {
        let b0 = (j / 4) as u32;
        let mut c0 = [0u32; LANES];
        for (l, v) in c0.iter_mut().enumerate() {
            *v = b0.wrapping_add(l as u32);
        }
        let [c0, c1, c2, c3] = philox_lanes(c0, [draw; LANES], [example; LANES], [domain; LANES], key);
        let (mut z0, mut z1, mut z2, mut z3) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
        for l in 0..LANES {
            (z0[l], z1[l]) = box_muller(c0[l], c1[l]);
        }
        for l in 0..LANES {
            (z2[l], z3[l]) = box_muller(c2[l], c3[l]);
        }
        for (l, o) in g.chunks_exact_mut(4).enumerate() {
            o[0] = z0[l];
            o[1] = z1[l];
            o[2] = z2[l];
            o[3] = z3[l];
        }
        j += 4 * LANES;
    }
    // the tail, block by block
    for o in groups.into_remainder().chunks_mut(4) {
        let z = block(j / 4);
        o.copy_from_slice(&z[..o.len()]);
        j += o.len();
    }
}

/// Where a sampler's and a bound's standard normals come from, addressed by example (its index
/// in the batch), draw (the sampler's step, or the bound's `t`) and element. The core asks for
/// noise through this trait only, so a device can bring its own source: [`Counter`] (the
/// command line's: the same numbers for an example whatever the batch or target) or
/// [`Sequential`] (any `rand_core` generator, in call order).
pub trait Noise {
    /// Fills `out` with the normals of elements `first..first + out.len()` of `example` at
    /// `draw`.
    fn normals(&mut self, example: usize, draw: u32, first: usize, out: &mut [f32]);
}

impl<N: Noise + ?Sized> Noise for &mut N {
    fn normals(&mut self, example: usize, draw: u32, first: usize, out: &mut [f32]) {
        (**self).normals(example, draw, first, out);
    }
}

/// Counter-based noise ([`philox_normals`]) of one domain; the batch's example 0 is example
/// `offset` of the whole run (a shard's first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// The seed (Philox's key).
    pub seed: u64,
    /// The purpose ([`domain`]).
    pub domain: u32,
    /// The run's index of the batch's first example.
    pub offset: u64,
}

impl Counter {
    /// The noise of `domain` for a run seeded `seed`, from its first example.
    pub fn new(seed: u64, domain: u32) -> Self {
        Counter { seed, domain, offset: 0 }
    }

    /// The same noise for a batch that starts at the run's example `offset`.
    pub fn at(self, offset: u64) -> Self {
        Counter { offset, ..self }
    }

    /// The run's index of the batch's example `example`, as the counter holds it (runs of
    /// more than 2^32 examples repeat their noise: the command line refuses them).
    #[inline]
    fn index(&self, example: usize) -> u32 {
        self.offset.wrapping_add(example as u64) as u32
    }

    /// A sequential generator for `example`'s draw `draw` of this domain.
    pub fn stream(&self, example: usize, draw: u32) -> PhiloxStream {
        PhiloxStream::new(self.seed, self.domain, self.index(example), draw)
    }
}

impl Noise for Counter {
    #[inline(always)]
    fn normals(&mut self, example: usize, draw: u32, first: usize, out: &mut [f32]) {
        philox_normals(self.seed, self.domain, self.index(example), draw, first, out);
    }
}

/// Any `rand_core` generator as a [`Noise`]: Ziggurat normals in call order, whatever the
/// address (a device's own generator; the numbers then depend on the batch).
#[derive(Debug, Clone)]
pub struct Sequential<R>(pub R);

impl<R: rand_core::Rng> Noise for Sequential<R> {
    fn normals(&mut self, _example: usize, _draw: u32, _first: usize, out: &mut [f32]) {
        super::fill_standard_normal(&mut self.0, out);
    }
}
