//! Direct 3x3 convolutions on channels-last tensors, without an im2col matrix.
//!
//! The input is copied once into a zero-padded tensor (`n x (h+2) x (w+2) x cin`); each output
//! pixel then reads its 3x3 neighbourhood in place. A tile of `R` output pixels and `V * L`
//! output channels is held in registers while the taps and input channels stream past: for
//! each input value, one broadcast and `V` fused multiply-adds with a row of the (packed)
//! weight. This is the loop of a matrix product's micro-kernel with the im2col matrix read
//! where it lies, which is what ONNX Runtime's MLAS (NCHWc) and oneDNN do for small images.
//!
//! **Bits.** Every output is `sum_{ky, kx, ci} x w` accumulated from zero by fused
//! multiply-adds in the one order `(ky, kx, ci)`, then the bias (or the existing value) is
//! added. The tiling changes which outputs are computed together, never the order of an
//! output's sum, and a fused multiply-add is exactly rounded on every machine; so an output's
//! bits depend on its inputs alone: not on the thread count, the chunk size, the batch, the
//! tile, or whether the CPU has AVX-512, AVX2 or neither (the last runs the same code far more
//! slowly, through the library's exactly rounded `fmaf`).
//!
//! **Tasks.** The forward and the data gradient split the output pixels, the weight gradient
//! its rows `(tap, input channel)`, into about eight tasks each on rayon's pool; by the above,
//! the split changes no bits.

// The register tiles are indexed by (pixel or channel, vector, lane), as the algorithm reads.
#![allow(clippy::needless_range_loop)]

/// Lanes of one vector of output channels (one AVX-512 register of f32).
const L: usize = 16;

/// A 3x3 weight packed for [`conv3x3`]: `[ky][kx][ci][cpad]`, the output channels padded with
/// zeros to `cpad`, a multiple of [`L`].
pub(crate) struct Packed {
    w: Vec<f32>,
    cin: usize,
    cout: usize,
    cpad: usize,
}

impl Packed {
    /// Packs a weight laid out `[ky][kx][ci][co]` (the convolution's own layout).
    pub(crate) fn new(weight: &[f32], cin: usize, cout: usize) -> Self {
        let cpad = cout.div_ceil(L) * L;
        let mut w = vec![0.0f32; 9 * cin * cpad];
        for (dst, src) in w.chunks_exact_mut(cpad).zip(weight[..9 * cin * cout].chunks_exact(cout)) {
            dst[..cout].copy_from_slice(src);
        }
        Packed { w, cin, cout, cpad }
    }

    /// Packs the weight of the data gradient of a stride-1 convolution whose weight is laid out
    /// `[ky][kx][ci][co]`: `dx[p, ci] = sum_{ky, kx, co} dy[p + 1 - (ky, kx), co] w[ky, kx, ci, co]`,
    /// a convolution of the padded `dy` with the kernel flipped in both axes and its channels
    /// swapped, `w'[ky][kx][co][ci] = w[2 - ky][2 - kx][ci][co]`.
    pub(crate) fn transposed(weight: &[f32], cin: usize, cout: usize) -> Self {
        let cpad = cin.div_ceil(L) * L;
        let mut w = vec![0.0f32; 9 * cout * cpad];
        for t in 0..9 {
            let src = &weight[(8 - t) * cin * cout..(9 - t) * cin * cout];
            for co in 0..cout {
                let dst = &mut w[(t * cout + co) * cpad..(t * cout + co) * cpad + cin];
                for (ci, d) in dst.iter_mut().enumerate() {
                    *d = src[ci * cout + co];
                }
            }
        }
        Packed { w, cin: cout, cout: cin, cpad }
    }
}

/// `x` (`n x h x w x c`) with a border of one zero pixel: `n x (h + 2) x (w + 2) x c`.
pub(crate) fn pad(x: &[f32], n: usize, h: usize, w: usize, c: usize) -> Vec<f32> {
    let (hp, wp) = (h + 2, w + 2);
    let mut y = Vec::with_capacity(n * hp * wp * c);
    for img in x.chunks_exact(h * w * c) {
        y.resize(y.len() + (wp + 1) * c, 0.0);
        for (r, row) in img.chunks_exact(w * c).enumerate() {
            if r > 0 {
                y.resize(y.len() + 2 * c, 0.0);
            }
            y.extend_from_slice(row);
        }
        y.resize(y.len() + (wp + 1) * c, 0.0);
    }
    y
}

/// Where a 3x3 convolution of stride `s` over `n` images of `h x w` with `c` input channels
/// reads its padded input (see [`pad`]): the one place for these offsets.
#[derive(Clone, Copy)]
struct Grid {
    n: usize,
    h: usize,
    w: usize,
    s: usize,
    c: usize,
}

impl Grid {
    /// Checks the stride and that `xp` is the padded input of this grid.
    fn new(xp: &[f32], n: usize, h: usize, w: usize, s: usize, c: usize) -> Self {
        assert!(h > 0 && w > 0 && (s == 1 || s == 2), "conv3x3: a stride of 1 or 2 on a non-empty image");
        assert!(xp.len() == n * (h + 2) * (w + 2) * c, "conv3x3: a padded input of the wrong size");
        Grid { n, h, w, s, c }
    }

    /// The output's height and width.
    fn out(&self) -> (usize, usize) {
        ((self.h - 1) / self.s + 1, (self.w - 1) / self.s + 1)
    }

    /// Output pixels.
    fn pixels(&self) -> usize {
        let (ho, wo) = self.out();
        self.n * ho * wo
    }

    /// The offset of tap `t = 3 ky + kx`'s first channel from a pixel's top-left neighbour.
    fn tap(&self, t: usize) -> usize {
        ((t / 3) * (self.w + 2) + t % 3) * self.c
    }

    /// The offset in the padded input of output pixel `q`'s top-left neighbour (`q` in the order
    /// `(b, oy, ox)`); increasing in `q`, so every read of a convolution is below
    /// `origin(pixels - 1) + tap(8) + c`.
    fn origin(&self, q: usize) -> usize {
        let (ho, wo) = self.out();
        let (b, r) = (q / (ho * wo), q % (ho * wo));
        ((b * (self.h + 2) + (r / wo) * self.s) * (self.w + 2) + (r % wo) * self.s) * self.c
    }
}

/// The tile sink: called with the first pixel of each tile and its rows of output values
/// (`rows x cout`, the sums plus the bias if one was given), in order.
type Sink<'a> = &'a mut dyn FnMut(usize, &[f32]);

/// Output pixels per parallel task of a convolution of `m` output pixels: about an eighth of
/// them, a whole number of tiles (24 is a multiple of every tile's `R`). The tasks run on
/// rayon's pool, so a thread that has finished its own chunk of the batch takes over part of
/// another's convolution; an output's bits do not depend on the task it falls in (module docs).
fn task_pixels(m: usize) -> usize {
    m.div_ceil(8).div_ceil(24).max(1) * 24
}

/// `y[b, oy, ox, co] = bias[co] + sum_{ky, kx, ci} xp[b, oy s + ky, ox s + kx, ci] w[ky, kx, ci, co]`
/// for the padded input `xp` of `n` images of `h x w` (see [`pad`]) and stride `s` (1 or 2):
/// PyTorch's `Conv2d(cin, cout, 3, s, padding=1)`. Returns `y`, `n x ho x wo x cout`, written
/// once (never zeroed first), in parallel tasks of pixels. The sum's order is fixed (module
/// docs).
pub(crate) fn conv3x3(xp: &[f32], n: usize, h: usize, w: usize, s: usize, wt: &Packed, bias: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    assert!(bias.len() == wt.cout, "conv3x3: a bias per output channel");
    let g = Grid::new(xp, n, h, w, s, wt.cin);
    let (m, cout) = (g.pixels(), wt.cout);
    let mut y = Vec::with_capacity(m * cout);
    if m > 0 && cout > 0 {
        let per = task_pixels(m);
        y.spare_capacity_mut()[..m * cout].par_chunks_mut(per * cout).enumerate().for_each(|(k, yk)| {
            let q_lo = k * per;
            run(xp, g, q_lo..q_lo + yk.len() / cout, wt, Some(bias), &mut |q0, rows| {
                let o = (q0 - q_lo) * cout;
                yk[o..o + rows.len()].iter_mut().zip(rows).for_each(|(d, &v)| {
                    d.write(v);
                });
            });
        });
    }
    // SAFETY: the tasks above wrote every one of the `m * cout` outputs: the tiles of a task
    // cover its pixels and each tile's rows hold all the output channels.
    unsafe { y.set_len(m * cout) };
    y
}

/// `y += sum_{ky, kx, ci} xp[b, oy s + ky, ox s + kx, ci] w[ky, kx, ci, co]` ([`conv3x3`]'s sums
/// added to what `y` holds), in parallel tasks of pixels.
pub(crate) fn conv3x3_add(xp: &[f32], n: usize, h: usize, w: usize, s: usize, wt: &Packed, y: &mut [f32]) {
    use rayon::prelude::*;
    let g = Grid::new(xp, n, h, w, s, wt.cin);
    let (m, cout) = (g.pixels(), wt.cout);
    assert!(y.len() == m * cout, "conv3x3: an output of the wrong size");
    if m == 0 || cout == 0 {
        return;
    }
    let per = task_pixels(m);
    y.par_chunks_mut(per * cout).enumerate().for_each(|(k, yk)| {
        let q_lo = k * per;
        run(xp, g, q_lo..q_lo + yk.len() / cout, wt, None, &mut |q0, rows| {
            let o = (q0 - q_lo) * cout;
            yk[o..o + rows.len()].iter_mut().zip(rows).for_each(|(d, &v)| *d += v);
        });
    });
}

/// The widest kernel this CPU runs.
#[cfg(target_arch = "x86_64")]
enum Isa {
    /// AVX-512F: the intrinsics kernels of [`avx512`].
    Avx512,
    /// AVX2 with FMA: the portable kernels compiled for them.
    Avx2,
    /// Neither: the portable kernels as built.
    Plain,
}

#[cfg(target_arch = "x86_64")]
impl Isa {
    fn detect() -> Self {
        if std::arch::is_x86_feature_detected!("avx512f") {
            Isa::Avx512
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            Isa::Avx2
        } else {
            Isa::Plain
        }
    }
}

/// What the forward tiles read.
#[derive(Clone)]
struct ConvArgs<'a> {
    /// The padded input.
    xp: &'a [f32],
    g: Grid,
    /// The output pixels to compute.
    q: std::ops::Range<usize>,
    wt: &'a Packed,
    bias: Option<&'a [f32]>,
}

/// Runs the tiles of the output pixels `q` with the kernel for the output channels' blocking.
fn run(xp: &[f32], g: Grid, q: std::ops::Range<usize>, wt: &Packed, bias: Option<&[f32]>, sink: Sink) {
    assert!(wt.w.len() == 9 * wt.cin * wt.cpad, "conv3x3: a packed weight of the wrong size");
    assert!(q.end <= g.pixels(), "conv3x3: pixels outside the output");
    if q.is_empty() || wt.cout == 0 {
        return;
    }
    let a = ConvArgs { xp, g, q, wt, bias };
    // channel blocks of V vectors and tiles of R pixels: R V accumulators in registers
    let vectors = wt.cpad / L;
    match vectors {
        v if v.is_multiple_of(4) => dispatch::<6, 4>(&a, sink),
        v if v.is_multiple_of(3) => dispatch::<8, 3>(&a, sink),
        v if v.is_multiple_of(2) => dispatch::<8, 2>(&a, sink),
        _ => dispatch::<8, 1>(&a, sink),
    }
}

/// Runs [`tiles`] with the AVX-512F kernel ([`avx512::tile`]) where the CPU has it, else the
/// portable kernel ([`tile`]) compiled for AVX2 with FMA, else as built: the same operations
/// (each multiply-add exactly rounded, in the same order) and so the same bits in every case.
fn dispatch<const R: usize, const V: usize>(a: &ConvArgs, sink: Sink) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn with_avx512<const R: usize, const V: usize>(a: &ConvArgs, sink: Sink) {
            tiles::<R, V>(a, sink, |xp, offs, taps, cin, wp, cpad, co0| {
                // SAFETY: this function runs only where the CPU has AVX-512F, and `tiles` has
                // checked the bounds that `avx512::tile` requires.
                unsafe { avx512::tile::<R, V>(xp, offs, taps, cin, wp, cpad, co0) }
            })
        }
        #[target_feature(enable = "avx2,fma")]
        fn with_avx2<const R: usize, const V: usize>(a: &ConvArgs, sink: Sink) {
            tiles::<R, V>(a, sink, tile::<R, V>)
        }
        match Isa::detect() {
            // SAFETY: the CPU has AVX-512F.
            Isa::Avx512 => return unsafe { with_avx512::<R, V>(a, sink) },
            // SAFETY: the CPU has AVX2 and FMA.
            Isa::Avx2 => return unsafe { with_avx2::<R, V>(a, sink) },
            Isa::Plain => {}
        }
    }
    tiles::<R, V>(a, sink, tile::<R, V>)
}

/// Every tile of `R` output pixels of `a.q` (in the order `(b, oy, ox)`; the last tile repeats
/// its last pixel, whose copies are not passed on) and all output channels, `V L` at a time,
/// summed by `kernel`; each tile's rows go to `sink`.
#[inline(always)]
fn tiles<const R: usize, const V: usize>(
    a: &ConvArgs,
    sink: Sink,
    kernel: impl Fn(&[f32], &[usize; R], &[usize; 9], usize, &[f32], usize, usize) -> [[[f32; L]; V]; R],
) {
    let ConvArgs { xp, g, ref q, wt, bias } = *a;
    let (cin, cout, cpad) = (wt.cin, wt.cout, wt.cpad);
    let taps: [usize; 9] = std::array::from_fn(|t| g.tap(t));
    // every read is below this (the last pixel's last tap): checked once for the unchecked
    // reads of the kernel
    assert!(g.origin(q.end - 1) + taps[8] + cin <= xp.len(), "conv3x3: the padded input is too short");
    let mut rows_out = vec![0.0f32; R * cout];
    for q0 in q.clone().step_by(R) {
        let mut offs = [0usize; R];
        for (r, o) in offs.iter_mut().enumerate() {
            *o = g.origin((q0 + r).min(q.end - 1));
        }
        let rows = R.min(q.end - q0);
        for co0 in (0..cpad).step_by(V * L) {
            let acc = kernel(xp, &offs, &taps, cin, &wt.w, cpad, co0);
            let width = (cout - co0.min(cout)).min(V * L);
            for (r, a) in acc.iter().enumerate().take(rows) {
                let out = &mut rows_out[r * cout + co0..r * cout + co0 + width];
                let sums = &a.as_flattened()[..width];
                match bias {
                    Some(b) => {
                        let b = &b[co0..co0 + width];
                        out.iter_mut().zip(sums).zip(b).for_each(|((o, &v), &bb)| *o = v + bb);
                    }
                    None => out.copy_from_slice(sums),
                }
            }
        }
        sink(q0, &rows_out[..rows * cout]);
    }
}

/// The sums of one tile: for pixels `offs` (their top-left neighbours' offsets in `xp`) and
/// output channels `co0..co0 + V L`, over the taps and the input channels in that order. The
/// caller has checked that every read is inside `xp` and `wp` (see [`tiles`]).
#[inline(always)]
fn tile<const R: usize, const V: usize>(
    xp: &[f32],
    offs: &[usize; R],
    taps: &[usize; 9],
    cin: usize,
    wp: &[f32],
    cpad: usize,
    co0: usize,
) -> [[[f32; L]; V]; R] {
    let mut acc = [[[0.0f32; L]; V]; R];
    for (t, &toff) in taps.iter().enumerate() {
        let mut base = [0usize; R];
        for r in 0..R {
            base[r] = offs[r] + toff;
        }
        let wrow0 = t * cin * cpad + co0;
        for ci in 0..cin {
            let mut wv = [[0.0f32; L]; V];
            for (v, wvv) in wv.iter_mut().enumerate() {
                let o = wrow0 + ci * cpad + v * L;
                // SAFETY: o + L <= 9 cin cpad = wp.len() (asserted in `conv3x3`): t < 9,
                // ci < cin, co0 + V L <= cpad.
                *wvv = unsafe { *(wp.get_unchecked(o..o + L).as_ptr() as *const [f32; L]) };
            }
            for r in 0..R {
                // SAFETY: base[r] + ci < g.origin(m - 1) + taps[8] + cin <= xp.len() (asserted in
                // `tiles`): every tile pixel is at most the last, and taps[t] <= taps[8].
                let xv = unsafe { *xp.get_unchecked(base[r] + ci) };
                for v in 0..V {
                    for l in 0..L {
                        acc[r][v][l] = xv.mul_add(wv[v][l], acc[r][v][l]);
                    }
                }
            }
        }
    }
    acc
}

/// The weight gradient of [`conv3x3`]: `g[ky][kx][ci][co] += sum_q xp[b, oy s + ky, ox s + kx, ci]
/// dy[q, co]` over the output pixels `q = (b, oy, ox)`, for the padded input `xp` (`cin`
/// channels) and the output gradient `dy` (`n x ho x wo x cout`). Each entry's sum runs over
/// `q` in order from zero by fused multiply-adds and is then added to `g`, so its bits depend
/// on the inputs alone (module docs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3_weight_grad(
    xp: &[f32],
    n: usize,
    h: usize,
    w: usize,
    s: usize,
    cin: usize,
    dy: &[f32],
    cout: usize,
    g: &mut [f32],
) {
    let grid = Grid::new(xp, n, h, w, s, cin);
    let m = grid.pixels();
    assert!(dy.len() == m * cout && g.len() == 9 * cin * cout, "conv3x3: buffers of the wrong size");
    if m == 0 || cin == 0 || cout == 0 {
        return;
    }
    let cpad = cout.div_ceil(L) * L;
    // dy with its rows padded to whole vectors
    let dyp: std::borrow::Cow<[f32]> = if cpad == cout {
        std::borrow::Cow::Borrowed(dy)
    } else {
        let mut v = vec![0.0f32; m * cpad];
        for (d, r) in v.chunks_exact_mut(cpad).zip(dy.chunks_exact(cout)) {
            d[..cout].copy_from_slice(r);
        }
        std::borrow::Cow::Owned(v)
    };
    let origins: Vec<usize> = (0..m).map(|q| grid.origin(q)).collect();
    // every read of xp is below this (the last pixel's last tap)
    assert!(origins[m - 1] + grid.tap(8) + cin <= xp.len(), "conv3x3: the padded input is too short");
    let mut gp = vec![0.0f32; 9 * cin * cpad];
    let vectors = cpad / L;
    let args = WgradArgs { xp, origins: &origins, grid, cin, dy: &dyp, cpad };
    // R input channels (dividing cin) by V vectors of output channels in registers
    match (cin % 8, cin % 4, cin % 2, vectors % 3, vectors % 2) {
        (0, _, _, 0, _) => wgrad_tasks::<8, 3>(&args, &mut gp),
        (0, _, _, _, 0) => wgrad_tasks::<8, 2>(&args, &mut gp),
        (0, _, _, _, _) => wgrad_tasks::<8, 1>(&args, &mut gp),
        (_, 0, _, _, 0) => wgrad_tasks::<4, 2>(&args, &mut gp),
        (_, 0, _, _, _) => wgrad_tasks::<4, 1>(&args, &mut gp),
        (_, _, 0, _, 0) => wgrad_tasks::<2, 2>(&args, &mut gp),
        (_, _, 0, _, _) => wgrad_tasks::<2, 1>(&args, &mut gp),
        _ => wgrad_tasks::<1, 1>(&args, &mut gp),
    }
    for (gr, pr) in g.chunks_exact_mut(cout).zip(gp.chunks_exact(cpad)) {
        gr.iter_mut().zip(pr).for_each(|(a, &v)| *a += v);
    }
}

/// What the weight-gradient tiles read.
struct WgradArgs<'a> {
    xp: &'a [f32],
    /// The offset in `xp` of each output pixel's top-left neighbour.
    origins: &'a [usize],
    grid: Grid,
    cin: usize,
    /// `dy`, rows of `cpad` values.
    dy: &'a [f32],
    cpad: usize,
}

/// The weight gradient's rows `(tap, input channel)` in parallel tasks of about an eighth of
/// them (whole tiles of `R`): each entry is still one sum over the pixels in order, whichever
/// task computes it.
fn wgrad_tasks<const R: usize, const V: usize>(a: &WgradArgs, gp: &mut [f32]) {
    use rayon::prelude::*;
    let per = (gp.len() / a.cpad / R).div_ceil(8).max(1) * R;
    gp.par_chunks_mut(per * a.cpad).enumerate().for_each(|(k, gk)| wgrad_dispatch::<R, V>(a, k * per, gk));
}

/// Runs [`wgrad_tiles`] on the rows from `row0` that `gp` holds, with the AVX-512F kernel
/// where the CPU has it, else the portable one (compiled for AVX2 with FMA where the CPU has
/// those): the same bits in every case.
fn wgrad_dispatch<const R: usize, const V: usize>(a: &WgradArgs, row0: usize, gp: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn with_avx512<const R: usize, const V: usize>(a: &WgradArgs, row0: usize, gp: &mut [f32]) {
            wgrad_tiles::<R, V>(a, row0, gp, |a, q0, q1, off, co0, acc| {
                // SAFETY: this function runs only where the CPU has AVX-512F, and
                // `conv3x3_weight_grad` has checked the bounds that the kernel requires.
                unsafe { avx512::wgrad::<R, V>(a.xp, &a.origins[q0..q1], off, a.dy, a.cpad, co0, q0, acc) }
            })
        }
        #[target_feature(enable = "avx2,fma")]
        fn with_avx2<const R: usize, const V: usize>(a: &WgradArgs, row0: usize, gp: &mut [f32]) {
            wgrad_tiles::<R, V>(a, row0, gp, wgrad::<R, V>)
        }
        match Isa::detect() {
            // SAFETY: the CPU has AVX-512F.
            Isa::Avx512 => return unsafe { with_avx512::<R, V>(a, row0, gp) },
            // SAFETY: the CPU has AVX2 and FMA.
            Isa::Avx2 => return unsafe { with_avx2::<R, V>(a, row0, gp) },
            Isa::Plain => {}
        }
    }
    wgrad_tiles::<R, V>(a, row0, gp, wgrad::<R, V>)
}

/// Output pixels per block of the weight gradient's sums: a block of `dy` (and the input rows
/// it reads) stays in cache while every tile of the gradient passes over it.
const QB: usize = 256;

/// Every tile of `R` input channels and `V L` output channels of the rows `(tap, input
/// channel)` (row `tap cin + ci`) from `row0` that `gp` holds,
/// block of pixels by block: the tile's running sums are loaded from `gp`, continued over the
/// block by `kernel` and stored back, so each sum still runs over the pixels in order.
#[inline(always)]
fn wgrad_tiles<const R: usize, const V: usize>(
    a: &WgradArgs,
    row0: usize,
    gp: &mut [f32],
    kernel: impl Fn(&WgradArgs, usize, usize, usize, usize, &mut [[[f32; L]; V]; R]),
) {
    let (cin, cpad) = (a.cin, a.cpad);
    let m = a.origins.len();
    let rows = gp.len() / cpad;
    for q0 in (0..m).step_by(QB) {
        let q1 = (q0 + QB).min(m);
        // (R divides cin, so a tile's R rows share one tap)
        for r0 in (0..rows).step_by(R) {
            let (t, ci0) = ((row0 + r0) / cin, (row0 + r0) % cin);
            let off = a.grid.tap(t) + ci0;
            for co0 in (0..cpad).step_by(V * L) {
                let mut acc = [[[0.0f32; L]; V]; R];
                for (r, ar) in acc.iter_mut().enumerate() {
                    ar.as_flattened_mut().copy_from_slice(&gp[(r0 + r) * cpad + co0..][..V * L]);
                }
                kernel(a, q0, q1, off, co0, &mut acc);
                for (r, ar) in acc.iter().enumerate() {
                    gp[(r0 + r) * cpad + co0..][..V * L].copy_from_slice(ar.as_flattened());
                }
            }
        }
    }
}

/// Continues a weight-gradient tile's sums over the pixels `q0..q1`: `acc[r][co] += x[q, ci0 + r]
/// dy[q, co0 + co]`, where `x[q, ..]` starts at `origins[q] + off` in `xp`.
#[inline(always)]
fn wgrad<const R: usize, const V: usize>(
    a: &WgradArgs,
    q0: usize,
    q1: usize,
    off: usize,
    co0: usize,
    acc: &mut [[[f32; L]; V]; R],
) {
    for (k, &o) in a.origins[q0..q1].iter().enumerate() {
        let d = &a.dy[(q0 + k) * a.cpad + co0..][..V * L];
        let x = &a.xp[o + off..][..R];
        for r in 0..R {
            for v in 0..V {
                for l in 0..L {
                    acc[r][v][l] = x[r].mul_add(d[v * L + l], acc[r][v][l]);
                }
            }
        }
    }
}

/// The AVX-512F kernel: [`tile`]'s loop written with the intrinsics, so that the tile's
/// `R V` accumulators stay in registers (LLVM's vectoriser kept some of the portable loop's
/// accumulators on the stack). `_mm512_fmadd_ps` is the exactly rounded multiply-add of
/// [`f32::mul_add`], in the same order: the same bits.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use super::L;

    /// # Safety
    /// The CPU has AVX-512F, and every read of [`super::tile`] is inside `xp` and `wp`:
    /// `offs[r] + taps[8] + cin <= xp.len()` and `9 cin cpad <= wp.len()` with
    /// `co0 + V L <= cpad`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn tile<const R: usize, const V: usize>(
        xp: &[f32],
        offs: &[usize; R],
        taps: &[usize; 9],
        cin: usize,
        wp: &[f32],
        cpad: usize,
        co0: usize,
    ) -> [[[f32; L]; V]; R] {
        let mut acc: [[__m512; V]; R] = [[_mm512_setzero_ps(); V]; R];
        for (t, &toff) in taps.iter().enumerate() {
            // SAFETY (all reads below): the function's contract.
            let x: [*const f32; R] = std::array::from_fn(|r| unsafe { xp.as_ptr().add(offs[r] + toff) });
            let mut wrow = unsafe { wp.as_ptr().add(t * cin * cpad + co0) };
            for ci in 0..cin {
                let wv: [__m512; V] = std::array::from_fn(|v| unsafe { _mm512_loadu_ps(wrow.add(v * L)) });
                for r in 0..R {
                    let xv = _mm512_set1_ps(unsafe { *x[r].add(ci) });
                    for v in 0..V {
                        acc[r][v] = _mm512_fmadd_ps(xv, wv[v], acc[r][v]);
                    }
                }
                wrow = unsafe { wrow.add(cpad) };
            }
        }
        let mut out = [[[0.0f32; L]; V]; R];
        for r in 0..R {
            for v in 0..V {
                // SAFETY: `out[r][v]` holds L values.
                unsafe { _mm512_storeu_ps(out[r][v].as_mut_ptr(), acc[r][v]) };
            }
        }
        out
    }

    /// [`super::wgrad`] with the intrinsics.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `o + off + R <= xp.len()` for every `o` in `origins`, and
    /// `(q0 + origins.len() - 1) cpad + co0 + V L <= dy.len()`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn wgrad<const R: usize, const V: usize>(
        xp: &[f32],
        origins: &[usize],
        off: usize,
        dy: &[f32],
        cpad: usize,
        co0: usize,
        q0: usize,
        acc: &mut [[[f32; L]; V]; R],
    ) {
        // SAFETY (all reads below): the function's contract.
        let mut a: [[__m512; V]; R] =
            std::array::from_fn(|r| std::array::from_fn(|v| unsafe { _mm512_loadu_ps(acc[r][v].as_ptr()) }));
        let mut d = unsafe { dy.as_ptr().add(q0 * cpad + co0) };
        for &o in origins {
            let x = unsafe { xp.as_ptr().add(o + off) };
            let dv: [__m512; V] = std::array::from_fn(|v| unsafe { _mm512_loadu_ps(d.add(v * L)) });
            for r in 0..R {
                let xv = _mm512_set1_ps(unsafe { *x.add(r) });
                for v in 0..V {
                    a[r][v] = _mm512_fmadd_ps(xv, dv[v], a[r][v]);
                }
            }
            d = unsafe { d.add(cpad) };
        }
        for r in 0..R {
            for v in 0..V {
                // SAFETY: `acc[r][v]` holds L values.
                unsafe { _mm512_storeu_ps(acc[r][v].as_mut_ptr(), a[r][v]) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, a: f32, b: f32) -> Vec<f32> {
        (0..len).map(|i| ((i as f32) * a + b).sin()).collect()
    }

    /// The definition in f64: `y[b, o, co] = bias[co] + sum w[ky, kx, ci, co] x[o s + k - 1, ci]`.
    #[allow(clippy::too_many_arguments)]
    fn reference(x: &[f32], wgt: &[f32], bias: &[f32], n: usize, h: usize, w: usize, s: usize, cin: usize) -> Vec<f64> {
        let cout = bias.len();
        let (ho, wo) = ((h - 1) / s + 1, (w - 1) / s + 1);
        let mut y = vec![0.0f64; n * ho * wo * cout];
        for b in 0..n {
            for oy in 0..ho {
                for ox in 0..wo {
                    for co in 0..cout {
                        let mut acc = f64::from(bias[co]);
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = ((oy * s + ky) as i64 - 1, (ox * s + kx) as i64 - 1);
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                    continue;
                                }
                                for ci in 0..cin {
                                    let xv = x[((b * h + iy as usize) * w + ix as usize) * cin + ci];
                                    acc += f64::from(xv) * f64::from(wgt[((ky * 3 + kx) * cin + ci) * cout + co]);
                                }
                            }
                        }
                        y[((b * ho + oy) * wo + ox) * cout + co] = acc;
                    }
                }
            }
        }
        y
    }

    /// Every tile and channel-block shape (output channels 1, 5, 16, 33, 48, 64; strides 1 and
    /// 2; odd and even sizes) against the definition in f64.
    #[test]
    fn direct_convolution_matches_the_definition() {
        for (cout, cin, h, w, s) in
            [(1, 3, 5, 7, 1), (5, 2, 4, 4, 2), (16, 7, 3, 9, 1), (33, 4, 6, 5, 2), (48, 5, 5, 5, 1), (64, 6, 7, 3, 1)]
        {
            let n = 3;
            let x = values(n * h * w * cin, 0.37, 0.1);
            let wgt = values(9 * cin * cout, 0.11, 0.7);
            let bias = values(cout, 1.3, 0.2);
            let (ho, wo) = ((h - 1) / s + 1, (w - 1) / s + 1);
            let y = conv3x3(&pad(&x, n, h, w, cin), n, h, w, s, &Packed::new(&wgt, cin, cout), &bias);
            assert_eq!(y.len(), n * ho * wo * cout);
            let want = reference(&x, &wgt, &bias, n, h, w, s, cin);
            for (i, (&g, &r)) in y.iter().zip(&want).enumerate() {
                assert!((f64::from(g) - r).abs() < 1e-5 * r.abs().max(1.0), "cout {cout} s {s} [{i}]: {g} vs {r}");
            }
        }
    }

    /// The data gradient is the adjoint of the convolution: `<conv(x) - bias, dy> = <x, dx>`
    /// (in f64), where `dx` is the transposed convolution of `dy`, added to what `dx` held.
    #[test]
    fn data_gradient_is_the_adjoint() {
        for (cin, cout, h, w) in [(3, 20, 5, 6), (17, 4, 4, 4), (32, 32, 3, 5)] {
            let n = 2;
            let x = values(n * h * w * cin, 0.29, 0.3);
            let wgt = values(9 * cin * cout, 0.13, 0.5);
            let dy = values(n * h * w * cout, 0.71, 0.9);
            let zero = vec![0.0f32; cout];
            let y = reference(&x, &wgt, &zero, n, h, w, 1, cin);
            let lhs: f64 = y.iter().zip(&dy).map(|(&a, &b)| a * f64::from(b)).sum();
            let held = values(x.len(), 0.05, 0.0);
            let mut dx = held.clone();
            conv3x3_add(&pad(&dy, n, h, w, cout), n, h, w, 1, &Packed::transposed(&wgt, cin, cout), &mut dx);
            let rhs: f64 =
                x.iter().zip(dx.iter().zip(&held)).map(|(&a, (&d, &h0))| f64::from(a) * f64::from(d - h0)).sum();
            assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
        }
    }

    /// An example's outputs are the same bits whether it is convolved alone or in a batch (the
    /// tiles then group other pixels with it), and the build without AVX (the plain loop,
    /// through `fmaf`) gives the bits of the dispatched kernel.
    #[test]
    fn bits_depend_on_the_example_alone() {
        let (n, h, w, cin, cout) = (5, 7, 7, 9, 40);
        let x = values(n * h * w * cin, 0.37, 0.1);
        let wt = Packed::new(&values(9 * cin * cout, 0.11, 0.7), cin, cout);
        let bias = values(cout, 1.3, 0.2);
        let all = conv3x3(&pad(&x, n, h, w, cin), n, h, w, 1, &wt, &bias);
        let per = h * w * cout;
        for b in 0..n {
            let xb = &x[b * h * w * cin..(b + 1) * h * w * cin];
            let one = conv3x3(&pad(xb, 1, h, w, cin), 1, h, w, 1, &wt, &bias);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&one), bits(&all[b * per..(b + 1) * per]), "example {b}");
        }
        let mut plain = Vec::new();
        let xp = pad(&x, n, h, w, cin);
        let a = ConvArgs { xp: &xp, g: Grid::new(&xp, n, h, w, 1, cin), q: 0..n * h * w, wt: &wt, bias: Some(&bias) };
        tiles::<6, 1>(&a, &mut |_, r| plain.extend_from_slice(r), tile::<6, 1>);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&plain), bits(&all));
    }

    /// The weight gradient's parallel tasks (rows of taps and input channels) give the bits of
    /// one pass over all the rows, on any number of threads.
    #[test]
    fn weight_gradient_tasks_give_the_bits_of_one_pass() {
        let (n, h, w, cin, cout) = (3, 6, 6, 16, 32);
        let xp = pad(&values(n * h * w * cin, 0.29, 0.5), n, h, w, cin);
        let dy = values(n * h * w * cout, 0.53, 0.9);
        let grid = Grid::new(&xp, n, h, w, 1, cin);
        let origins: Vec<usize> = (0..n * h * w).map(|q| grid.origin(q)).collect();
        let a = WgradArgs { xp: &xp, origins: &origins, grid, cin, dy: &dy, cpad: cout };
        let mut one = vec![0.0f32; 9 * cin * cout];
        wgrad_tiles::<8, 2>(&a, 0, &mut one, wgrad::<8, 2>);
        for threads in [1, 2, 3] {
            let mut tasks = vec![0.0f32; 9 * cin * cout];
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| wgrad_tasks::<8, 2>(&a, &mut tasks));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&tasks), bits(&one), "{threads} threads");
        }
    }

    /// The weight gradient against its definition in f64, for strides 1 and 2, output channels
    /// that fill whole vectors and ones that do not, and every input-channel blocking (8, 4, 2
    /// and 1), over more pixels than one block of the sums; added to what `g` held.
    #[test]
    fn weight_gradient_matches_the_definition() {
        for (cin, cout, h, w, s, n) in
            [(8, 48, 9, 9, 1, 5), (12, 32, 6, 7, 2, 3), (6, 16, 5, 5, 1, 12), (5, 20, 4, 6, 1, 2), (16, 64, 4, 4, 2, 2)]
        {
            let (ho, wo) = ((h - 1) / s + 1, (w - 1) / s + 1);
            let x = values(n * h * w * cin, 0.23, 0.4);
            let dy = values(n * ho * wo * cout, 0.61, 0.8);
            let held = values(9 * cin * cout, 0.07, 0.3);
            let mut g = held.clone();
            conv3x3_weight_grad(&pad(&x, n, h, w, cin), n, h, w, s, cin, &dy, cout, &mut g);
            for t in 0..9 {
                let (ky, kx) = (t / 3, t % 3);
                for ci in 0..cin {
                    for co in 0..cout {
                        let mut want = 0.0f64;
                        for b in 0..n {
                            for oy in 0..ho {
                                for ox in 0..wo {
                                    let (iy, ix) = ((oy * s + ky) as i64 - 1, (ox * s + kx) as i64 - 1);
                                    if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                        continue;
                                    }
                                    let xv = x[((b * h + iy as usize) * w + ix as usize) * cin + ci];
                                    want += f64::from(xv) * f64::from(dy[((b * ho + oy) * wo + ox) * cout + co]);
                                }
                            }
                        }
                        let k = (t * cin + ci) * cout + co;
                        let got = f64::from(g[k] - held[k]);
                        assert!(
                            (got - want).abs() < 1e-4 * want.abs().max(1.0),
                            "cin {cin} cout {cout} s {s}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
