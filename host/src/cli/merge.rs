//! `elbo merge PART.json...`: the `eval --json` of a run from the parts that `eval --shard I/N
//! --json` wrote, exactly (the same bits as the unsharded run with `--mmd-samples 0`, in any
//! order of the parts).

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::eval::EvalReport;
use crate::error::{Result, input};
use crate::exact::ExactSum;
use crate::kinds::Shard;

/// The format version of a part.
const PART_VERSION: u32 = 1;

/// What every part of one run shares: a part of another run is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoundMeta {
    /// `--model` and `--data` as given.
    pub model: String,
    /// See `model`.
    pub data: String,
    /// `--seed`.
    pub seed: u64,
    /// The examples of the whole run.
    pub n_total: usize,
    /// Dimension.
    pub dims: usize,
    /// `discrete` or `continuous`.
    pub bound: String,
    /// The discrete bound's estimator and variance, the continuous bound's levels.
    pub estimator: Option<String>,
    /// See `estimator`.
    pub variance: Option<String>,
    /// See `estimator`.
    pub times: Option<usize>,
}

/// Exact sums over a part's examples (nats; the normalisation's log-determinant included in
/// `total` and `decoder`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BoundSums {
    /// Examples.
    pub n: usize,
    /// `-ELBO`.
    pub total: ExactSum,
    /// `-ELBO` squared.
    pub total_sq: ExactSum,
    /// The prior term.
    pub prior: ExactSum,
    /// The decoder term.
    pub decoder: ExactSum,
    /// The rest: the diffusion terms.
    pub diffusion: ExactSum,
    /// `L_{t-1}` for t = 2..T (discrete bound; empty for the continuous one).
    pub terms: Vec<ExactSum>,
    /// The exact negative log-likelihood (mixtures' exact denoisers).
    pub exact_nll: Option<ExactSum>,
}

impl BoundSums {
    /// Adds another part's sums (exactly).
    pub fn merge(&mut self, o: &BoundSums) -> Result<()> {
        if self.terms.len() != o.terms.len() || self.exact_nll.is_some() != o.exact_nll.is_some() {
            return Err(input("the parts hold different terms"));
        }
        self.n += o.n;
        for (a, b) in [
            (&mut self.total, &o.total),
            (&mut self.total_sq, &o.total_sq),
            (&mut self.prior, &o.prior),
            (&mut self.decoder, &o.decoder),
            (&mut self.diffusion, &o.diffusion),
        ] {
            a.merge(b);
        }
        for (a, b) in self.terms.iter_mut().zip(&o.terms) {
            a.merge(b);
        }
        if let (Some(a), Some(b)) = (self.exact_nll.as_mut(), o.exact_nll.as_ref()) {
            a.merge(b);
        }
        Ok(())
    }

    /// The report of these sums (means per example, the standard error from the sums of
    /// squares); sample quality is left empty.
    pub fn report(&self, meta: &BoundMeta) -> EvalReport {
        let nf = self.n as f64;
        let mean = self.total.value() / nf;
        // sum (x - mean)^2 = sum x^2 - mean sum x, the product rounded once
        let mut ss = self.total_sq.clone();
        ss.add(-(mean * self.total.value()));
        let var = if self.n > 1 { ss.value().max(0.0) / (nf - 1.0) } else { 0.0 };
        let se = (var / nf).sqrt();
        let per_dim = meta.dims as f64 * std::f64::consts::LN_2;
        EvalReport {
            neg_elbo_nats: mean,
            neg_elbo_nats_se: se,
            bpd: mean / per_dim,
            bpd_se: se / per_dim,
            prior_nats: self.prior.value() / nf,
            decoder_nats: self.decoder.value() / nf,
            terms_nats: self.terms.iter().map(|s| s.value() / nf).collect(),
            n: self.n,
            dims: meta.dims,
            mmd: None,
            mmd_data: None,
            mmd_bandwidth: None,
            mmd_samples: None,
            mmd_sampler: None,
            exact_nll_nats: self.exact_nll.as_ref().map(|s| s.value() / nf),
            ode_nll_nats: None,
            ode_nll_nats_se: None,
            ode_bpd: None,
            ode_bpd_se: None,
            ode_nfe: None,
            ode_probes: None,
            bound: if meta.bound == "continuous" { "continuous" } else { "discrete" },
            estimator: meta.estimator.clone(),
            variance: meta.variance.clone(),
            times: meta.times,
        }
    }

    /// The diffusion part's mean.
    pub fn diffusion_mean(&self) -> f64 {
        self.diffusion.value() / self.n as f64
    }
}

/// What `eval --shard I/N --json` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalPart {
    /// The format version (1).
    pub elbo_eval_part: u32,
    /// `I/N`.
    pub shard: String,
    /// The run.
    pub meta: BoundMeta,
    /// The part's sums.
    pub sums: BoundSums,
}

impl EvalPart {
    /// A part of the current format.
    pub fn new(shard: Shard, meta: BoundMeta, sums: BoundSums) -> Self {
        EvalPart { elbo_eval_part: PART_VERSION, shard: shard.to_string(), meta, sums }
    }
}

/// Arguments of `elbo merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The parts (`eval --shard I/N --json` output), all N of them, in any order.
    #[arg(required = true)]
    pub parts: Vec<PathBuf>,
}

/// Reads, checks and merges the parts: one JSON object on stdout, as `eval --json` prints it.
pub fn run(a: &MergeArgs) -> Result<()> {
    let mut parts = Vec::new();
    for p in &a.parts {
        let text = std::fs::read_to_string(p).map_err(|e| input(format!("{}: {e}", p.display())))?;
        let part: EvalPart = serde_json::from_str(text.trim()).map_err(|e| {
            input(format!("{}: not a part written by `elbo eval --shard I/N --json` ({e})", p.display()))
        })?;
        if part.elbo_eval_part != PART_VERSION {
            return Err(input(format!(
                "{}: part format {} (expected {PART_VERSION})",
                p.display(),
                part.elbo_eval_part
            )));
        }
        let shard: Shard = part.shard.parse().map_err(|e| input(format!("{}: shard: {e}", p.display())))?;
        parts.push((p, shard, part));
    }
    let (first_path, first_shard, first) = &parts[0];
    let count = first_shard.count;
    let mut seen = vec![None; count as usize];
    for (p, shard, part) in &parts {
        if part.meta != first.meta {
            return Err(input(format!(
                "{}: a part of another run than {} (model, data, seed or bound differ)",
                p.display(),
                first_path.display()
            )));
        }
        if shard.count != count {
            return Err(input(format!(
                "{}: part {shard}, but {} is of {count} parts",
                p.display(),
                first_path.display()
            )));
        }
        if let Some(q) = seen[shard.index as usize].replace(*p) {
            return Err(input(format!("{}: part {shard} again (also {})", p.display(), q.display())));
        }
        if part.sums.n != shard.range(part.meta.n_total).len() {
            return Err(input(format!("{}: part {shard} holds {} examples, not its share", p.display(), part.sums.n)));
        }
    }
    if let Some(i) = seen.iter().position(Option::is_none) {
        return Err(input(format!("part {i}/{count} is missing")));
    }
    let mut sums = first.sums.clone();
    for (_, _, part) in &parts[1..] {
        sums.merge(&part.sums)?;
    }
    let report = sums.report(&first.meta);
    super::print_line(serde_json::to_string(&report).map_err(anyhow::Error::from)?)?;
    crate::note!(
        "-ELBO   {:.4} +- {:.4} nats/example   {:.4} +- {:.4} bits/dim   (n = {}, D = {}, {count} parts)",
        report.neg_elbo_nats,
        report.neg_elbo_nats_se,
        report.bpd,
        report.bpd_se,
        report.n,
        report.dims
    );
    Ok(())
}
