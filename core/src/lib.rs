//! # elbo-core
//!
//! Denoising diffusion models read the variational way: latent-variable models trained by the
//! evidence lower bound. `no_std`, no allocation, no `unsafe`; f32 arithmetic without fused
//! multiply-add and `libm` for every transcendental function, so a seed gives the same bits on
//! x86-64, Cortex-M4F and RISC-V.
//!
//! The modules follow the math, in the order of seed 004:
//!
//! - [`schedule`]: discrete schedules as fixed-size tables (beta, abar, SNR, posterior), and
//!   continuous log-SNR schedules with `d lambda / dt`;
//! - [`gaussian`]: densities, KL divergences, the prior term, the discretised likelihood;
//! - [`forward`]: `q(x_t | x_0)` and the posterior `q(x_{t-1} | x_t, x_0)`;
//! - [`param`]: eps / x0 / v / score predictions and the conversions between them;
//! - [`elbo`]: the terms of the bound with the Rao-Blackwellised and Monte Carlo estimators,
//!   reverse variances, and a full evaluation;
//! - [`weighting`]: the weighted-ELBO family of Kingma & Gao;
//! - [`timesteps`]: uniform, antithetic, stratified and importance sampling of training times;
//! - [`denoiser`]: the trait a network implements, and the classifier trait for guidance;
//! - [`gmm`]: Gaussian mixtures and their exact (Bayes-optimal) denoiser;
//! - [`mlp`]: an MLP denoiser read in place from a flat weight blob (flash), with its schedule;
//! - [`sampler`]: DDPM, DDIM, annealed Langevin, classifier and classifier-free guidance;
//! - [`rng`]: uniforms and Ziggurat normals from any `rand_core` generator, and the
//!   counter-based (Philox4x32-10) noise of samplers and bounds, addressed by example and draw.
//!
//! ## Example
//!
//! Sample a two-component mixture with DDPM and its exact denoiser:
//!
//! ```
//! use elbo_core::gmm::{GaussianMixture, OptimalDenoiser};
//! use elbo_core::rng::{Counter, Noise, domain};
//! use elbo_core::sampler::Ddpm;
//! use elbo_core::{BetaSchedule, Condition, Schedule};
//!
//! let schedule = Schedule::<1000>::new(&BetaSchedule::SquaredCosCapV2, 1000, false)?;
//! let mixture = GaussianMixture::new(1, &[0.5, 0.5], &[-1.0, 1.0], &[0.2, 0.2])?;
//! let mut denoiser = OptimalDenoiser::new(mixture);
//! let (mut x, mut scratch) = ([0.0f32; 64], [0.0f32; 64]);
//! // 64 one-dimensional examples: x_T of example e from the counter-based noise of seed 0
//! for (e, xe) in x.chunks_mut(1).enumerate() {
//!     Counter::new(0, domain::START).normals(e, 0, 0, xe);
//! }
//! Ddpm::default()
//!     .sample(&mut denoiser, &schedule, &mut x, &mut scratch, Condition::Unconditional, &mut Counter::new(0, domain::SAMPLER))
//!     .map_err(|e| format!("{e}"))?;
//! assert!(x.iter().all(|v| v.abs() < 3.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Conventions (time index, table definitions, names) are those of the project's design notes:
//! `t = 1..T`, `abar_0 = 1`, and diffusers' 0-based `timestep = t - 1`.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod denoiser;
pub mod elbo;
pub mod error;
pub mod forward;
pub mod gaussian;
pub mod gmm;
pub mod mlp;
pub mod param;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod timesteps;
pub mod weighting;

pub use denoiser::{Classifier, Condition, Denoiser, NoiseLevel};
pub use error::{Error, Result, RunError};
pub use param::Prediction;
pub use schedule::{BetaSchedule, Marginal, NoiseSchedule, Schedule, Step};
