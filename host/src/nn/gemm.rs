//! Matrix products of both network families, through the `gemm` crate (its AVX-512 kernels
//! where the CPU has them), single-threaded: the families run their chunks in parallel, and the
//! same inputs give the same bits.

/// `c = a b (+ c when accumulate)` through the `gemm` crate, single-threaded (the chunks run
/// in parallel), so the same inputs give the same bits; `a` is `m x k` row-major (`k x m` read
/// transposed when `ta`), `b` `k x n` (`n x k` when `tb`), `c` `m x n` at row stride `n`.
///
/// # Safety
/// `a` and `b` hold at least `m k` and `k n` values, and `c` points to `m n` writable values
/// (initialised when `accumulate`) that alias neither input.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    ta: bool,
    b: &[f32],
    tb: bool,
    accumulate: bool,
    c: *mut f32,
) {
    let (a_rs, a_cs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let dst_scale = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: the caller's contract; at these strides every element read or written lies inside
    // the buffers it names.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            dst_scale,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `c = a b + beta c` for row-major `a` (`m x k`, or `k x m` read transposed when `ta`), `b`
/// (`k x n`, or `n x k` when `tb`) and `c` (`m x n`), `beta` 0 or 1.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(m: usize, k: usize, n: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, beta: f32, c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm: buffers too short");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the sizes are asserted above; `c` is borrowed mutably, so it aliases neither input.
    unsafe { product(m, k, n, a, ta, b, tb, beta != 0.0, c.as_mut_ptr()) }
}

/// `a b` as a new `m x n` matrix (see [`gemm`]), its memory written once by the product (not
/// zeroed first: a product's output is most of a step's memory traffic).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_new(m: usize, k: usize, n: usize, a: &[f32], ta: bool, b: &[f32], tb: bool) -> Vec<f32> {
    assert!(k > 0 && a.len() >= m * k && b.len() >= k * n, "gemm: buffers too short");
    let mut c: Vec<f32> = Vec::with_capacity(m * n);
    if m == 0 || n == 0 {
        return c;
    }
    // SAFETY: `c` has room for `m n` values; without accumulation the product writes every one
    // of them (k > 0) without reading any, and only then is the length set.
    unsafe {
        product(m, k, n, a, ta, b, tb, false, c.as_mut_ptr());
        c.set_len(m * n);
    }
    c
}
