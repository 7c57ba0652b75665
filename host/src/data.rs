//! Data sets: the built-in 2-D sets (generated from a seed) and Gaussian mixtures.

use elbo_core::gmm::GaussianMixture;
use elbo_core::rng::{standard_normal, uniform_f64};
use rand_pcg::Pcg32;

use crate::error::{Result, flag};

/// A Gaussian mixture that owns its parameters (`means` and `stds` are `K x D`, row-major).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Mixture {
    /// Component weights (normalised on use).
    pub weights: Vec<f32>,
    /// Component means.
    pub means: Vec<Vec<f32>>,
    /// Component standard deviations per coordinate.
    pub stds: Vec<Vec<f32>>,
}

impl Mixture {
    /// `8gaussians`: eight components on a circle of radius 2, standard deviation 0.2.
    pub fn eight_gaussians() -> Self {
        let means = (0..8)
            .map(|k| {
                let a = std::f32::consts::TAU * k as f32 / 8.0;
                vec![2.0 * a.cos(), 2.0 * a.sin()]
            })
            .collect();
        Mixture { weights: vec![1.0; 8], means, stds: vec![vec![0.2, 0.2]; 8] }
    }

    /// The data dimension.
    pub fn dim(&self) -> usize {
        self.means.first().map_or(0, Vec::len)
    }

    /// Flat `(means, stds)` buffers for the core.
    pub fn flat(&self) -> (Vec<f32>, Vec<f32>) {
        (self.means.concat(), self.stds.concat())
    }

    /// Runs `f` with the core's borrowed view (validated).
    pub fn with_core<T>(&self, f: impl FnOnce(&GaussianMixture<'_>) -> T) -> Result<T> {
        let (means, stds) = self.flat();
        if self.means.iter().chain(&self.stds).any(|r| r.len() != self.dim()) || self.stds.len() != self.means.len() {
            return Err(crate::error::input("mixture: every mean and std row needs the same dimension"));
        }
        let g = GaussianMixture::new(self.dim(), &self.weights, &means, &stds).map_err(|e| flag("mixture", e))?;
        Ok(f(&g))
    }
}

/// Draws `n` points of a built-in 2-D set other than the mixtures (row-major, `n x 2`).
pub fn two_moons(n: usize, rng: &mut Pcg32) -> Vec<f32> {
    // scikit-learn's make_moons: outer arc (cos, sin) on [0, pi], inner arc (1 - cos, 1/2 - sin),
    // Gaussian noise 0.05; centred and scaled by 1/... as is usual for 2-D toy diffusion.
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        let u = uniform_f64(rng) * std::f64::consts::PI;
        let (x, y) = if i % 2 == 0 { (u.cos(), u.sin()) } else { (1.0 - u.cos(), 0.5 - u.sin()) };
        out.push((x - 0.5) as f32 + 0.05 * standard_normal(rng));
        out.push((y - 0.25) as f32 + 0.05 * standard_normal(rng));
    }
    out
}
