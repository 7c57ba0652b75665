//! Sample-quality metrics.

/// The squared maximum mean discrepancy between samples `x` and `y` (rows of dimension `dim`)
/// with the Gaussian kernel `k(a, b) = exp(-|a - b|^2 / (2 h^2))`: the biased V-statistic of
/// Gretton et al. 2012 (eq. 5), which keeps the `k(a, a) = 1` terms. It is positive, with a
/// floor of order `1/n` for two draws of one distribution, so "samples vs data" can be read as
/// a multiple of "data vs data" of the same sizes.
pub fn mmd2(x: &[f32], y: &[f32], dim: usize, h: f64) -> f64 {
    let k = |a: &[f32], b: &[f32]| {
        let d2: f64 = a.iter().zip(b).map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2)).sum();
        (-d2 / (2.0 * h * h)).exp()
    };
    let within = |z: &[f32]| {
        let rows: Vec<&[f32]> = z.chunks_exact(dim).collect();
        let n = rows.len() as f64;
        let mut s = 0.0;
        for i in 0..rows.len() {
            for j in 0..i {
                s += k(rows[i], rows[j]);
            }
        }
        (2.0 * s + n) / (n * n)
    };
    let (xr, yr): (Vec<&[f32]>, Vec<&[f32]>) = (x.chunks_exact(dim).collect(), y.chunks_exact(dim).collect());
    let cross: f64 = xr.iter().map(|a| yr.iter().map(|b| k(a, b)).sum::<f64>()).sum::<f64>();
    within(x) + within(y) - 2.0 * cross / (xr.len() as f64 * yr.len() as f64)
}

/// The median heuristic bandwidth: the median distance between pairs of rows of `x` (over at
/// most the first 1000 rows).
pub fn median_bandwidth(x: &[f32], dim: usize) -> f64 {
    let rows: Vec<&[f32]> = x.chunks_exact(dim).take(1000).collect();
    let mut d: Vec<f64> = Vec::with_capacity(rows.len() * rows.len() / 2);
    for i in 0..rows.len() {
        for j in 0..i {
            let d2: f64 = rows[i].iter().zip(rows[j]).map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2)).sum();
            d.push(d2.sqrt());
        }
    }
    d.sort_by(f64::total_cmp);
    d.get(d.len() / 2).copied().unwrap_or(1.0)
}

/// The independent per-pixel histogram baseline of quantised images: for each coordinate, the
/// frequencies of the `levels` values `2k / (levels - 1) - 1` in `train` with `alpha` added to
/// every count (add-alpha smoothing), and the mean negative log-likelihood of `test` under
/// their product, in bits per dimension.
pub fn histogram_bpd(train: &[f32], test: &[f32], dim: usize, levels: usize, alpha: f64) -> f64 {
    let level =
        |v: f32| (((f64::from(v) + 1.0) * 0.5 * (levels - 1) as f64).round().clamp(0.0, (levels - 1) as f64)) as usize;
    let mut counts = vec![alpha; dim * levels];
    for row in train.chunks_exact(dim) {
        for (i, &v) in row.iter().enumerate() {
            counts[i * levels + level(v)] += 1.0;
        }
    }
    let total = (train.len() / dim) as f64 + alpha * levels as f64;
    let mut nll = 0.0;
    for row in test.chunks_exact(dim) {
        for (i, &v) in row.iter().enumerate() {
            nll -= (counts[i * levels + level(v)] / total).log2();
        }
    }
    nll / test.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For two unit Gaussians in 1-D whose means differ by `m`, with kernel bandwidth `h`, the
    /// population MMD^2 is `2 h / sqrt(h^2 + 2) (1 - exp(-m^2 / (2 (h^2 + 2))))` (closed form of
    /// Gaussian convolutions); the V-statistic adds `2 (1 - h / sqrt(h^2 + 2)) / n` in expectation.
    #[test]
    fn mmd_matches_the_gaussian_closed_form() {
        use elbo_core::rng::standard_normal;
        use rand_core::SeedableRng;
        let mut rng = rand_pcg::Pcg32::seed_from_u64(1);
        let (n, m, h) = (2000, 1.0f64, 1.0f64);
        let x: Vec<f32> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        let y: Vec<f32> = (0..n).map(|_| standard_normal(&mut rng) + m as f32).collect();
        let want = 2.0 * h / (h * h + 2.0).sqrt() * (1.0 - (-m * m / (2.0 * (h * h + 2.0))).exp());
        let floor = 2.0 * (1.0 - h / (h * h + 2.0).sqrt()) / n as f64;
        let got = mmd2(&x, &y, 1, h);
        assert!((got - want - floor).abs() < 0.02, "{got} vs {want}");
        let same: Vec<f32> = (0..n).map(|_| standard_normal(&mut rng)).collect();
        let s = mmd2(&x, &same, 1, h);
        assert!(s > 0.0 && (s - floor).abs() < 0.003, "{s} vs floor {floor}");
    }

    /// The histogram baseline against a hand count: one pixel, levels {-1, 1}, train
    /// [-1, -1, 1], alpha 0.5: p(-1) = 2.5 / 4, p(1) = 1.5 / 4.
    #[test]
    fn histogram_baseline_by_hand() {
        let bpd = histogram_bpd(&[-1.0, -1.0, 1.0], &[1.0, -1.0], 1, 2, 0.5);
        let want = -((1.5f64 / 4.0).log2() + (2.5f64 / 4.0).log2()) / 2.0;
        assert!((bpd - want).abs() < 1e-12, "{bpd} vs {want}");
    }
}
