//! Workloads shared by the criterion benches and the side-by-side comparison with the peers
//! (`benches/compare.py`, which runs `measure` and `peers/peers.py` alternately).
//!
//! Every workload here is the one the peers' script measures: the same sizes, data shapes,
//! threads and model files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use elbo::train::Trainer;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shipped two-moons denoiser (checkpoint folder) and its ONNX export.
pub fn shipped() -> (PathBuf, PathBuf) {
    let dir = root().join("models/two-moons");
    let onnx = dir.join("model.onnx");
    (dir, onnx)
}

/// The default two-moons training run of `elbo train` (MLP: 2-D input and a 32-dim sinusoidal
/// time embedding, 3 hidden layers of 128, SiLU; batch 512, AdamW with warm-up and cosine
/// decay, gradient clipping, EMA; `L_simple`, uniform timesteps, linear schedule, T = 1000).
pub fn two_moons_trainer(steps: u64) -> Trainer {
    elbo::train::TrainOptions { data: "two-moons".into(), steps, seed: 0, ..elbo::train::TrainOptions::DEFAULT }
        .trainer()
        .expect("the default two-moons run builds")
}

/// The median of `v`.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `f` `reps` times and returns the time of each run.
pub fn times(reps: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}
