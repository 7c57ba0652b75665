//! Training (the optimiser is [`crate::optimizer`]'s AdamW with EMA weights): the losses of the core (simple, VLB with the Rao-Blackwellised or the Monte Carlo
//! estimator, hybrid, every weighting of the weighted-ELBO family) with uniform, antithetic or
//! importance-sampled timesteps. Every random number comes from one seeded generator, drawn in
//! a fixed order before the data-parallel part, so results do not depend on `--threads`; the
//! full state is checkpointed, so a resumed run ends bit-identical to an uninterrupted one.

mod continuous;
mod objective;
mod options;

pub use continuous::{ContinuousBatch, ContinuousGrads, continuous_grads, level_of};
use objective::{Example, Objective};
pub(crate) use options::check_normalized;
pub use options::{Fourier, TrainOptions, UNetOptions, check_quantised, training_data};

use std::path::Path;
use std::time::Instant;

use elbo_core::elbo::ReverseVariance;
use elbo_core::rng::{uniform_below, uniform_f64};
use elbo_core::timesteps::{Resampler, Slot, TimeSampling};
use elbo_core::weighting::Weighting;
use elbo_core::{NoiseSchedule, Prediction, Step};
use rand_core::SeedableRng;
use rand_pcg::Pcg32;

use crate::HostSchedule;
use crate::checkpoint::{Checkpoint, ModelConfig, ModelKind, RunState};
use crate::continuous::Continuous;
use crate::data::Dataset;
use crate::error::{Result, input};
use crate::kinds::ScheduleKind;
use crate::network::Network;
use crate::nn::discrete_tau;
use crate::optimizer::learning_rate;

/// The training objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// `||p - target||^2` averaged over coordinates (Ho et al. 2020; seed 003).
    Simple,
    /// `T L_{t-1} / D` with the Rao-Blackwellised (analytic) KL: an unbiased estimate of the
    /// negative ELBO per coordinate (up to the constant prior term).
    Vlb,
    /// The same bound with the Monte Carlo estimator of seed 000 (one sampled `x_{t-1}`).
    Mc,
    /// `simple + lambda vlb`, lambda = 0.001 (Nichol & Dhariwal 2021).
    Hybrid,
    /// A weighting of the weighted-ELBO family (seed 002 eq. 11), discretised as
    /// `T/2 w(lambda_t) (SNR_{t-1}/SNR_t - 1) ||eps_hat - eps||^2 / D`, which for `w = 1` is the
    /// VLB term with `sigma^2 = btilde` exactly (at t = 1 the factor of t = 2 is used).
    Weighted(Weighting),
    /// A noise-conditional classifier's cross-entropy (`elbo train-classifier`).
    CrossEntropy,
}

/// The weight of the VLB in the hybrid loss.
pub const HYBRID_LAMBDA: f64 = 0.001;

impl Loss {
    /// Parses `simple|vlb|mc|hybrid|weighted:NAME[:PARAM]`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            input(format!(
                "--loss: unknown loss '{s}' (expected simple, vlb, mc, hybrid or weighted:NAME[:PARAM] with NAME one of {})",
                Weighting::NAMES.join(", ")
            ))
        };
        match s {
            "simple" => Ok(Loss::Simple),
            "vlb" => Ok(Loss::Vlb),
            "mc" => Ok(Loss::Mc),
            "hybrid" => Ok(Loss::Hybrid),
            "cross-entropy" => Ok(Loss::CrossEntropy),
            _ => {
                let rest = s.strip_prefix("weighted:").ok_or_else(bad)?;
                let (name, param) = match rest.split_once(':') {
                    Some((n, p)) => {
                        (n, Some(p.parse::<f64>().map_err(|_| input(format!("--loss: '{p}' is not a number")))?))
                    }
                    None => (rest, None),
                };
                Weighting::from_name(name, param).map(Loss::Weighted).map_err(|e| match e {
                    elbo_core::Error::UnknownName { .. } => bad(),
                    e => input(format!("--loss: {e}")),
                })
            }
        }
    }
}

impl std::str::FromStr for Loss {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self> {
        Loss::parse(s)
    }
}

impl std::fmt::Display for Loss {
    /// The command line's name: `simple`, ..., `weighted:NAME[:PARAM]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loss::Simple => f.write_str("simple"),
            Loss::Vlb => f.write_str("vlb"),
            Loss::Mc => f.write_str("mc"),
            Loss::Hybrid => f.write_str("hybrid"),
            Loss::CrossEntropy => f.write_str("cross-entropy"),
            Loss::Weighted(w) => match w.param() {
                Some(p) => write!(f, "weighted:{}:{p}", w.name()),
                None => write!(f, "weighted:{}", w.name()),
            },
        }
    }
}

impl serde::Serialize for Loss {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Loss {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Loss::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How timesteps are drawn.
enum Sampler {
    Plain(TimeSampling),
    Importance(Resampler<Vec<Slot<10>>, 10>),
}

/// One example's loss and its gradient with respect to the network output.
#[derive(Clone, Copy)]
struct ExampleCtx<'a> {
    kind: Prediction,
    loss: Loss,
    variance: ReverseVariance,
    step: &'a Step,
    /// `SNR_{t-1}/SNR_t - 1` for weighted losses.
    snr_ratio: f64,
    steps: f64,
}

impl ExampleCtx<'_> {
    /// Returns the (unweighted) loss and writes `d loss / d output` into `g`. `out` holds the
    /// `D` mean outputs, then (for a learned variance) `D` variance outputs `v`.
    fn eval(&self, out: &[f32], x0: &[f32], eps: &[f32], xt: &[f32], z: &[f32], g: &mut [f32]) -> f64 {
        let dim = x0.len();
        let (mean, var_out) = out.split_at(dim);
        let ex = Example {
            kind: self.kind,
            variance: self.variance,
            step: self.step,
            snr_ratio: self.snr_ratio,
            steps: self.steps,
            mean,
            var_out,
            x0,
            eps,
            xt,
            z,
        };
        let mut total = 0.0;
        g.fill(0.0);
        let (gm, gv) = g.split_at_mut(dim);
        self.loss.objectives(!var_out.is_empty()).add(&ex, &mut total, gm, gv);
        total
    }
}

/// `log softmax(logits)_y`, with its gradient `onehot(y) - softmax` written into `g`.
pub fn log_softmax_grad(logits: &[f32], y: usize, g: &mut [f32]) -> f64 {
    let m = logits.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let z: f64 = logits.iter().map(|&v| (f64::from(v) - m).exp()).sum();
    for (k, (gk, &v)) in g.iter_mut().zip(logits).enumerate() {
        let p = (f64::from(v) - m).exp() / z;
        *gk = (f64::from(u8::from(k == y)) - p) as f32;
    }
    f64::from(logits[y]) - m - z.ln()
}

/// The state of a run.
pub struct Trainer {
    /// The network.
    pub net: std::sync::Arc<dyn Network>,
    /// The checkpoint being advanced.
    pub ckpt: Checkpoint,
    /// The table of a discrete-time model (`None` in continuous time).
    schedule: Option<Box<HostSchedule>>,
    data: Dataset,
    loss: Loss,
    variance: ReverseVariance,
    sampler: Sampler,
}

impl Trainer {
    /// A fresh run (step 0) on normalised `data`; `schedule` is the table of a discrete-time
    /// model.
    pub fn new(config: ModelConfig, schedule: Option<Box<HostSchedule>>, data: Dataset) -> Result<Self> {
        let mut rng = Pcg32::seed_from_u64(config.train.seed);
        let mut params = match config.vae_net() {
            Some(v) => v.init(&mut rng),
            None => config.network().init(&mut rng),
        };
        if config.schedule.name == ScheduleKind::Learned {
            let [hi, lo] = config.schedule.log_snr_range.ok_or_else(|| input("schedule learned: no log-SNR range"))?;
            let mut noise = vec![0.0f32; 3 * crate::continuous::FEATURES];
            elbo_core::rng::fill_standard_normal(&mut rng, &mut noise);
            params.extend(crate::continuous::LearnedGamma::init(-hi, -lo, &noise));
        }
        let n = params.len();
        let ckpt = Checkpoint {
            config,
            ema: params.clone(),
            params,
            adam_m: vec![0.0; n],
            adam_v: vec![0.0; n],
            state: RunState { step: 0, rng, resampler: None, loss_log: vec![], pending_loss: (0.0, 0) },
        };
        Trainer::resume(ckpt, schedule, data)
    }

    /// Continues from a checkpoint.
    pub fn resume(ckpt: Checkpoint, schedule: Option<Box<HostSchedule>>, data: Dataset) -> Result<Self> {
        let train = &ckpt.config.train;
        // (a classifier's cross-entropy is not a diffusion loss: its value here is unused)
        let loss = match ckpt.config.kind {
            ModelKind::Denoiser { .. } => train.loss,
            _ => Loss::Simple,
        };
        if loss == Loss::CrossEntropy {
            return Err(input("config.json: the cross-entropy trains classifiers, not denoisers"));
        }
        let variance = ReverseVariance::from(train.variance);
        let sampler = if let (Some(schedule), None) = (&schedule, train.t_sampling.plain()) {
            // the history on the heap: one slot per timestep
            let slots = vec![Slot::EMPTY; schedule.steps()];
            let mut r = Resampler::with_slots(slots, schedule.steps(), 0.001)
                .map_err(|e| input(format!("--t-sampling: {e}")))?;
            if let Some((hist, counts)) = &ckpt.state.resampler {
                if hist.len() != schedule.steps() || counts.len() != schedule.steps() {
                    return Err(input("state.json: the importance sampler's history does not fit the schedule"));
                }
                for (t, (h, &c)) in hist.iter().zip(counts).enumerate() {
                    r.restore(t + 1, h, c).map_err(|e| input(format!("state.json: {e}")))?;
                }
            }
            Sampler::Importance(r)
        } else {
            Sampler::Plain(train.t_sampling.plain().unwrap_or(TimeSampling::Uniform))
        };
        let net = ckpt.config.network();
        Ok(Trainer { net, ckpt, schedule, data, loss, variance, sampler })
    }

    /// Draws the batch's examples and (conditional models) their labels, the null class with
    /// probability `cond_dropout`.
    fn draw_examples(&mut self) -> (Vec<usize>, Option<Vec<u32>>) {
        let args = &self.ckpt.config.train;
        let rng = &mut self.ckpt.state.rng;
        let n = self.data.len() as u32;
        let idx: Vec<usize> = (0..args.batch).map(|_| uniform_below(rng, n) as usize).collect();
        let labels: Option<Vec<u32>> = match (&self.data.labels, self.net.classes()) {
            (Some(l), c) if c > 0 => {
                Some(idx.iter().map(|&i| if uniform_f64(rng) < args.cond_dropout { c as u32 } else { l[i] }).collect())
            }
            _ => None,
        };
        (idx, labels)
    }

    /// One optimisation step; returns the batch loss.
    pub fn step(&mut self) -> Result<f64> {
        let (loss, grad) = if let Some(v) = self.ckpt.config.vae_net() {
            self.grad_vae(&v)
        } else if self.ckpt.config.is_classifier() {
            self.grad_classifier()?
        } else {
            let kind = self.ckpt.config.prediction().ok_or_else(|| input("config.json: not a denoiser"))?;
            if self.ckpt.config.schedule.is_continuous() {
                self.grad_continuous(kind)?
            } else {
                self.grad_discrete(kind)?
            }
        };
        if !loss.is_finite() {
            return Err(crate::error::Error::Internal(anyhow::anyhow!(
                "the loss became {loss} at step {}: lower --lr or change --loss (the last checkpoint is kept)",
                self.ckpt.state.step + 1
            )));
        }
        if let Some(i) = self.update(grad) {
            return Err(crate::error::Error::Internal(anyhow::anyhow!(
                "weight {i} became non-finite at step {}: lower --lr or raise --grad-clip \
                 (the last checkpoint is kept)",
                self.ckpt.state.step
            )));
        }
        Ok(loss)
    }

    /// A VAE baseline: the single-sample reparameterised `-ELBO` per coordinate.
    fn grad_vae(&mut self, v: &crate::vae::Vae) -> (f64, Vec<f32>) {
        let (b, dim) = (self.ckpt.config.train.batch, self.data.dim);
        let rng = &mut self.ckpt.state.rng;
        let n = self.data.len() as u32;
        let idx: Vec<usize> = (0..b).map(|_| uniform_below(rng, n) as usize).collect();
        let mut eps = vec![0.0f32; b * v.normals_per_example()];
        elbo_core::rng::fill_standard_normal(rng, &mut eps);
        let x: Vec<f32> = idx.iter().flat_map(|&i| self.data.x[i * dim..(i + 1) * dim].iter().copied()).collect();
        let r = v.loss(&self.ckpt.params, &x, &eps, true);
        (r.loss, r.grad)
    }

    /// A noise-conditional classifier (for classifier guidance, seed 004 eq. 166): the
    /// cross-entropy of the true label at a noised example `x_t ~ q(x_t | x_0)`, `t` uniform.
    fn grad_classifier(&mut self) -> Result<(f64, Vec<f32>)> {
        let schedule = self.schedule.as_ref().ok_or_else(|| input("a classifier needs a discrete schedule"))?;
        let labels = self.data.labels.as_ref().ok_or_else(|| input("train-classifier: the data has no labels"))?;
        let args = &self.ckpt.config.train;
        let (b, dim) = (args.batch, self.data.dim);
        let rng = &mut self.ckpt.state.rng;
        let n = self.data.len() as u32;
        let idx: Vec<usize> = (0..b).map(|_| uniform_below(rng, n) as usize).collect();
        let t: Vec<usize> = (0..b).map(|_| 1 + uniform_below(rng, schedule.steps() as u32) as usize).collect();
        let mut eps = vec![0.0f32; b * dim];
        elbo_core::rng::fill_standard_normal(rng, &mut eps);
        let mut xt = vec![0.0f32; b * dim];
        for i in 0..b {
            let st = schedule.step(t[i]).map_err(|e| input(format!("{e}")))?;
            let r = i * dim..(i + 1) * dim;
            elbo_core::forward::q_sample(
                &st.cur,
                &self.data.x[idx[i] * dim..(idx[i] + 1) * dim],
                &eps[r.clone()],
                &mut xt[r],
            )
            .map_err(|e| input(format!("{e}")))?;
        }
        let y: Vec<u32> = idx.iter().map(|&i| labels[i]).collect();
        let tau: Vec<f32> = t.iter().map(|&ti| discrete_tau(ti)).collect();
        let c = self.net.out();
        let (loss, grad) = self.net.loss_and_grad(&self.ckpt.params, &xt, &tau, None, &|r0, out, g| {
            let mut sum = 0.0;
            for (j, (oc, gc)) in out.chunks_exact(c).zip(g.chunks_exact_mut(c)).enumerate() {
                // the loss is -log softmax_y: its gradient is -(onehot - softmax)
                sum -= log_softmax_grad(oc, y[r0 + j] as usize, gc) / b as f64;
                gc.iter_mut().for_each(|v| *v = -*v / b as f32);
            }
            sum
        });
        Ok((loss, grad))
    }

    /// The continuous-time loss and its gradient (network, and a learned schedule's).
    fn grad_continuous(&mut self, kind: Prediction) -> Result<(f64, Vec<f32>)> {
        let (idx, labels) = self.draw_examples();
        let args = &self.ckpt.config.train;
        let (b, dim) = (args.batch, self.data.dim);
        let rng = &mut self.ckpt.state.rng;
        // the core's draw: uniform, or VDM's low-discrepancy (stratified) times
        let mut tc = vec![0.0f64; b];
        args.t_sampling.plain().unwrap_or(TimeSampling::Uniform).fill_continuous(rng, &mut tc);
        let mut eps = vec![0.0f32; b * dim];
        elbo_core::rng::fill_standard_normal(rng, &mut eps);
        let x0: Vec<f32> = idx.iter().flat_map(|&i| self.data.x[i * dim..(i + 1) * dim].iter().copied()).collect();
        let n_net = self.net.n_params();
        let sched = crate::model::continuous_schedule(&self.ckpt.config.schedule, &self.ckpt.params[n_net..])?;
        let batch = ContinuousBatch { x0: &x0, tc: &tc, eps: &eps, labels: labels.as_deref(), bins: args.bins };
        let r = continuous_grads(self.net.as_ref(), &self.ckpt.params, &sched, kind, self.loss, &batch);
        let mut grad = r.net;
        if let Continuous::Learned(_) = sched {
            // The end points descend the bound, the shape the estimator's second moment (VDM).
            grad.extend(r.sched_mean[..2].iter().chain(&r.sched_second[2..]).map(|&g| g as f32));
        }
        Ok((r.loss, grad))
    }

    /// The discrete-time loss and its gradient.
    fn grad_discrete(&mut self, kind: Prediction) -> Result<(f64, Vec<f32>)> {
        let (idx, labels) = self.draw_examples();
        let args = self.ckpt.config.train.clone();
        let (b, dim) = (args.batch, self.data.dim);
        let schedule = self.schedule.as_ref().ok_or_else(|| input("a discrete step needs a schedule table"))?;
        let steps = schedule.steps();
        let rng = &mut self.ckpt.state.rng;
        // 1. Every random number, in a fixed order.
        let mut t = vec![0usize; b];
        let mut w = vec![1.0f64; b];
        match &mut self.sampler {
            Sampler::Plain(s) => s.fill_discrete(rng, steps, &mut t).map_err(|e| input(format!("{e}")))?,
            Sampler::Importance(r) => r.sample(rng, &mut t, &mut w).map_err(|e| input(format!("{e}")))?,
        }
        let mut eps = vec![0.0f32; b * dim];
        let mut z = vec![0.0f32; if self.loss == Loss::Mc { b * dim } else { 0 }];
        elbo_core::rng::fill_standard_normal(rng, &mut eps);
        elbo_core::rng::fill_standard_normal(rng, &mut z);
        let mut x0 = vec![0.0f32; b * dim];
        let mut xt = vec![0.0f32; b * dim];
        let mut step_of = Vec::with_capacity(b);
        for i in 0..b {
            let st = schedule.step(t[i]).map_err(|e| input(format!("{e}")))?;
            x0[i * dim..(i + 1) * dim].copy_from_slice(&self.data.x[idx[i] * dim..(idx[i] + 1) * dim]);
            elbo_core::forward::q_sample(
                &st.cur,
                &x0[i * dim..(i + 1) * dim],
                &eps[i * dim..(i + 1) * dim],
                &mut xt[i * dim..(i + 1) * dim],
            )
            .map_err(|e| input(format!("{e}")))?;
            step_of.push(st);
        }
        // (only the weighted losses read it)
        let weighted = matches!(self.loss, Loss::Weighted(_));
        let snr_ratio: Vec<f64> = t
            .iter()
            .map(|&ti| {
                if !weighted {
                    return 0.0;
                }
                let tt = ti.max(2).min(steps);
                match (schedule.step(tt), schedule.step(tt - 1)) {
                    (Ok(cur), Ok(prev)) => (f64::from(prev.log_snr) - f64::from(cur.log_snr)).exp_m1(),
                    _ => 0.0,
                }
            })
            .collect();
        // 2. Forward and backward, data-parallel.
        let tau: Vec<f32> = t.iter().map(|&ti| discrete_tau(ti)).collect();
        let per_example = std::sync::Mutex::new(vec![0.0f64; b]);
        let (loss_sum, grad) =
            self.net.loss_and_grad(&self.ckpt.params, &xt, &tau, labels.as_deref(), &|r0, out, g| {
                let o = self.net.out();
                let mut sum = 0.0;
                let mut local = Vec::with_capacity(out.len() / o);
                for (j, (oc, gc)) in out.chunks_exact(o).zip(g.chunks_exact_mut(o)).enumerate() {
                    let i = r0 + j;
                    let ctx = ExampleCtx {
                        kind,
                        loss: self.loss,
                        variance: self.variance,
                        step: &step_of[i],
                        snr_ratio: snr_ratio[i],
                        steps: steps as f64,
                    };
                    let zz = if z.is_empty() { &z[..] } else { &z[i * dim..(i + 1) * dim] };
                    let l = ctx.eval(
                        oc,
                        &x0[i * dim..(i + 1) * dim],
                        &eps[i * dim..(i + 1) * dim],
                        &xt[i * dim..(i + 1) * dim],
                        zz,
                        gc,
                    );
                    let scale = (w[i] / b as f64) as f32;
                    gc.iter_mut().for_each(|v| *v *= scale);
                    local.push(l);
                    sum += w[i] * l / b as f64;
                }
                per_example.lock().expect("no panic holds the lock")[r0..r0 + local.len()].copy_from_slice(&local);
                sum
            });
        if let Sampler::Importance(r) = &mut self.sampler {
            for (&ti, &l) in t.iter().zip(per_example.lock().expect("no panic holds the lock").iter()) {
                r.update(ti, l).map_err(|e| input(format!("{e}")))?;
            }
        }
        Ok((loss_sum, grad))
    }

    /// Clips the network's gradient (a learned schedule's is left to Adam's scaling), takes an
    /// AdamW step and updates the EMA; returns the first parameter that is not finite after
    /// it, if any.
    fn update(&mut self, grad: Vec<f32>) -> Option<usize> {
        // the network's parameters are clipped; a learned schedule's (after them) are not
        let clipped =
            if self.ckpt.config.schedule.name == ScheduleKind::Learned { self.net.n_params() } else { grad.len() };
        let k = self.ckpt.state.step + 1;
        let c = &mut self.ckpt;
        let bad = crate::optimizer::step(
            &c.config.train,
            k,
            &grad,
            clipped,
            &mut c.params,
            &mut c.adam_m,
            &mut c.adam_v,
            &mut c.ema,
        );
        c.state.step = k;
        c.config.step = k;
        bad
    }

    /// Brings the checkpoint's run state up to date with what lives outside it (the importance
    /// sampler's history), before it is saved.
    pub fn sync_state(&mut self) {
        if let Sampler::Importance(r) = &self.sampler {
            let steps = self.schedule.as_ref().map_or(0, |s| s.steps());
            let (hist, counts) =
                (1..=steps).filter_map(|t| r.entry(t).ok().map(|(h, n)| (h.collect::<Vec<f64>>(), n))).unzip();
            self.ckpt.state.resampler = Some((hist, counts));
        }
    }

    /// Runs to `steps`, logging every `log_every` steps, checkpointing into `dir`.
    pub fn run(&mut self, dir: &Path, log_every: u64, mut progress: impl FnMut(u64, f64, f64)) -> Result<()> {
        let total = self.ckpt.config.train.steps;
        let every = self.ckpt.config.train.checkpoint_every.max(1);
        let start = Instant::now();
        while self.ckpt.state.step < total {
            let l = self.step()?;
            let (acc, count) = &mut self.ckpt.state.pending_loss;
            *acc += l;
            *count += 1;
            let (acc, count) = (*acc, *count);
            let k = self.ckpt.state.step;
            if k.is_multiple_of(log_every) || k == total {
                let lr = learning_rate(&self.ckpt.config.train, k);
                self.ckpt.state.loss_log.push((k, acc / count as f64, lr));
                progress(k, acc / count as f64, k as f64 / start.elapsed().as_secs_f64().max(1e-9));
                self.ckpt.state.pending_loss = (0.0, 0);
            }
            if k.is_multiple_of(every) || k == total {
                self.sync_state();
                self.ckpt.save(dir)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elbo_core::BetaSchedule;

    /// The learned schedule's gradients (mean loss for the end points, second moment for the
    /// shape) and the network's, against central differences of `continuous_grads`' own values.
    #[test]
    fn continuous_gradients_match_finite_differences() {
        use crate::continuous::{FEATURES, LearnedGamma, N_PARAMS};
        use crate::nn::MlpConfig;
        let mlp = crate::nn::Mlp::new(MlpConfig { dim: 2, width: 16, depth: 2, embed: 8, classes: 0, out: 2 });
        let mut rng = Pcg32::seed_from_u64(5);
        let mut params = mlp.init(&mut rng);
        let mut noise = vec![0.0f32; 3 * FEATURES];
        elbo_core::rng::fill_standard_normal(&mut rng, &mut noise);
        params.extend(LearnedGamma::init(-6.0, 4.0, &noise));
        let n_net = mlp.n_params();
        let b = 5;
        // Gaussian decoder on real values; VDM's discrete decoder on 17 levels (s = sigma_0 /
        // alpha_0 = e^-3 is 0.4 level steps, so its gradient on gamma_0 is far from zero)
        for bins in [None, Some(17)] {
            let x0: Vec<f32> = match bins {
                None => (0..2 * b).map(|i| ((i as f32) * 0.9).sin() * 1.5).collect(),
                Some(_) => (0..2 * b).map(|i| ((i * 7) % 17) as f32 / 8.0 - 1.0).collect(),
            };
            let tc: Vec<f64> = (0..b).map(|i| (i as f64 + 0.37) / b as f64).collect();
            let mut eps = vec![0.0f32; 2 * b];
            elbo_core::rng::fill_standard_normal(&mut rng, &mut eps);
            let batch = ContinuousBatch { x0: &x0, tc: &tc, eps: &eps, labels: None, bins };
            let eval = |p: &[f32]| {
                let sched = Continuous::Learned(Box::new(LearnedGamma::from_params(&p[n_net..]).unwrap()));
                continuous_grads(&mlp, p, &sched, Prediction::Eps, Loss::Vlb, &batch)
            };
            let r = eval(&params);
            let second = |r: &ContinuousGrads| r.per_example.iter().map(|l| l * l).sum::<f64>() / b as f64;
            for i in (0..N_PARAMS).step_by(5).chain([0, 1, 2]) {
                // f32 rounding of z_t limits the step from below
                let h = 2e-2f32;
                let (mut up, mut dn) = (params.clone(), params.clone());
                up[n_net + i] += h;
                dn[n_net + i] -= h;
                let (ru, rd) = (eval(&up), eval(&dn));
                let hh = f64::from(up[n_net + i]) - f64::from(dn[n_net + i]);
                let fd_mean = (ru.loss - rd.loss) / hh;
                let fd_second = (second(&ru) - second(&rd)) / hh;
                for (what, an, fd) in [("mean", r.sched_mean[i], fd_mean), ("second", r.sched_second[i], fd_second)] {
                    if what == "mean" && i >= 2 {
                        // the shape's mean gradient is not used: only check the end points' here
                        continue;
                    }
                    assert!((an - fd).abs() <= 2e-2 * an.abs().max(fd.abs()).max(1e-3), "{what} p{i}: {an} vs {fd}");
                }
            }
            for k in (0..n_net).step_by(37) {
                let h = 1e-2f32;
                let (mut up, mut dn) = (params.clone(), params.clone());
                up[k] += h;
                dn[k] -= h;
                let fd = (eval(&up).loss - eval(&dn).loss) / f64::from(2.0 * h);
                let an = f64::from(r.net[k]);
                assert!((an - fd).abs() <= 2e-2 * an.abs().max(fd.abs()).max(1e-3), "net {k}: {an} vs {fd}");
            }
        }
    }

    /// Every loss's gradient with respect to the outputs (mean and learned variance) against
    /// central finite differences of the loss value, in f64.
    #[test]
    fn loss_gradients_match_finite_differences() {
        let s = HostSchedule::new(&BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 1000, false).unwrap();
        let (x0, eps, z) = ([0.3f32, -0.8], [1.1f32, -0.4], [0.5f32, -1.3]);
        let losses = [
            Loss::Simple,
            Loss::Vlb,
            Loss::Mc,
            Loss::Hybrid,
            Loss::Weighted(Weighting::Sigmoid { bias: 1.0 }),
            Loss::Weighted(Weighting::Edm),
        ];
        for kind in [Prediction::Eps, Prediction::X0, Prediction::V] {
            for loss in losses {
                for t in [1usize, 2, 300, 999] {
                    for learned in [false, true] {
                        if learned && !matches!(loss, Loss::Vlb | Loss::Mc | Loss::Hybrid) {
                            continue;
                        }
                        let st = s.step(t).unwrap();
                        let mut xt = [0.0f32; 2];
                        elbo_core::forward::q_sample(&st.cur, &x0, &eps, &mut xt).unwrap();
                        let ctx = ExampleCtx {
                            kind,
                            loss,
                            variance: ReverseVariance::Large,
                            step: &st,
                            snr_ratio: 0.7,
                            steps: 1000.0,
                        };
                        let out: Vec<f32> = if learned { vec![0.2, -0.1, 0.3, -0.6] } else { vec![0.2, -0.1] };
                        let mut g = vec![0.0f32; out.len()];
                        let f0 = ctx.eval(&out, &x0, &eps, &xt, &z, &mut g);
                        assert!(f0.is_finite());
                        for k in 0..out.len() {
                            // A frozen mean in the hybrid loss: the VLB part has no mean gradient.
                            let h = 1e-3f32;
                            let (mut up, mut dn) = (out.clone(), out.clone());
                            up[k] += h;
                            dn[k] -= h;
                            let mut scratch = vec![0.0f32; out.len()];
                            let fd = (ctx.eval(&up, &x0, &eps, &xt, &z, &mut scratch)
                                - ctx.eval(&dn, &x0, &eps, &xt, &z, &mut scratch))
                                / (2.0 * f64::from(h));
                            let fd = if learned && loss == Loss::Hybrid && k < 2 {
                                // only the simple part reaches the mean
                                let simple = ExampleCtx { loss: Loss::Simple, ..ctx };
                                (simple.eval(&up[..2], &x0, &eps, &xt, &z, &mut scratch[..2])
                                    - simple.eval(&dn[..2], &x0, &eps, &xt, &z, &mut scratch[..2]))
                                    / (2.0 * f64::from(h))
                            } else {
                                fd
                            };
                            let an = f64::from(g[k]);
                            assert!(
                                (fd - an).abs() <= 2e-3 * an.abs().max(fd.abs()).max(1e-3),
                                "{kind:?} {loss:?} t={t} learned={learned} k={k}: {an} vs {fd}"
                            );
                        }
                    }
                }
            }
        }
    }
}
