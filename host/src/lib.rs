//! # elbo
//!
//! The host side of elbo: the `elbo` command-line tool and the library behind it. The math
//! lives in [`elbo_core`]; this crate adds what a workstation has: files, data sets, the command
//! line.
//!
//! - [`cli`]: one module per subcommand, and the validated options they share;
//! - [`data`]: the built-in data sets and Gaussian mixtures;
//! - [`nn`], [`train`], [`checkpoint`], [`model`]: the network, its training and its files;
//! - [`continuous`]: continuous-time (VDM) schedules, the learned one included;
//! - [`vae`]: the VAE and two-level HVAE baselines;
//! - [`metrics`]: sample quality (MMD);
//! - [`io`]: atomic file writes;
//! - [`alloc`]: the binaries' allocator settings;
//! - [`error`]: bad input (exit code 2) versus internal failures (exit code 1).

pub mod alloc;
pub mod checkpoint;
pub mod cli;
pub mod continuous;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod exact;
pub mod experiments;
pub mod io;
pub mod kinds;
pub mod metrics;
pub mod model;
pub mod network;
pub mod nn;
pub mod noise;
pub mod ode;
pub mod onnx;
pub mod optimizer;
pub mod plot;
pub mod progress;
pub mod sampling;
pub mod schedule;
pub mod train;
pub mod vae;

/// The largest number of timesteps a host schedule holds.
pub const MAX_STEPS: usize = 4096;

pub use schedule::HostSchedule;
