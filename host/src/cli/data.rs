//! `elbo data`: write a sample of a data set.

use std::path::PathBuf;

use clap::Args;

use crate::data::DataSpec;
use crate::error::{Result, input};
use crate::io::write_samples;

/// Arguments of `elbo data`.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// A built-in set, gmm:FILE.json, or a .npy/.csv file.
    #[arg(long)]
    data: String,
    /// Number of examples (generated sets).
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output .npy or .csv.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: &DataArgs) -> Result<()> {
    if a.n == 0 {
        return Err(input("--n: expected at least one example"));
    }
    let spec = DataSpec::parse(&a.data)?;
    let dim = spec.mixture().map_or(2, |m| m.dim());
    crate::io::check_memory("--n", crate::io::product(&[a.n, dim, 2]))?;
    let _lock = crate::io::sample_output(&a.out, "--out")?;
    let d = spec.load(a.n, a.seed)?;
    write_samples(&a.out, &d.x, &d.shape)?;
    crate::note!("wrote {} examples of dimension {} to {}", d.len(), d.dim, a.out.display());
    Ok(())
}
