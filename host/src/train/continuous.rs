//! The continuous-time objective (VDM; seed 002 eqs. 8-10, seed 004 eqs. 111-114): the
//! diffusion loss `-1/2 dlambda/dt ||eps - eps_hat||^2` at drawn times, with the prior and
//! decoder terms of the core, and the gradients of a learned schedule (its end points on the
//! bound, its shape on the estimator's second moment, as VDM trains it).

use elbo_core::Prediction;
use elbo_core::param::to_x0_eps;

use super::Loss;
use crate::continuous::Continuous;
use crate::network::Network;

/// One batch of continuous-time training: clean examples, their times in `[0, 1]`, noise and
/// labels.
pub struct ContinuousBatch<'a> {
    /// `B x D` examples.
    pub x0: &'a [f32],
    /// `B` times.
    pub tc: &'a [f64],
    /// `B x D` standard normals.
    pub eps: &'a [f32],
    /// Labels (conditional models).
    pub labels: Option<&'a [u32]>,
    /// Quantised data on these many levels of [-1, 1]: VDM's discrete decoder (else the
    /// Gaussian density's).
    pub bins: Option<usize>,
}

/// The result of [`continuous_grads`].
pub struct ContinuousGrads {
    /// The batch mean of the loss per coordinate (for `vlb`: the `-ELBO` estimate, prior and
    /// decoder included).
    pub loss: f64,
    /// The diffusion loss `L_i` of every example (per coordinate).
    pub per_example: Vec<f64>,
    /// `d loss / d network parameters`.
    pub net: Vec<f32>,
    /// A learned schedule: `d loss / d theta` (bound, prior and decoder).
    pub sched_mean: Vec<f64>,
    /// A learned schedule: `d mean(L_i^2) / d theta` (the second moment of the diffusion
    /// loss estimator, whose mean does not depend on the shape; seed 002 eq. 12).
    pub sched_second: Vec<f64>,
}

/// The continuous-time loss of a batch (VDM; seed 002 eq. 10, weighted by `w(lambda)` for
/// `weighted:` losses): per example `w(lambda_t) 1/2 (-d lambda/dt) ||eps - eps_hat(z_t, t)||^2 / D`
/// with `z_t = alpha_t x + sigma_t eps`, `alpha_t^2 = sigmoid(lambda_t)`,
/// `sigma_t^2 = sigmoid(-lambda_t)` (seed 004 eqs. 113-114); for `vlb` the prior and decoder
/// terms of the continuous-time bound are added. With a learned schedule (eps prediction, `vlb`)
/// the gradient reaches `gamma = -lambda` through the weight `gamma'(t)` and through `z_t`
/// (the network's input gradient).
pub fn continuous_grads(
    net: &dyn Network,
    params: &[f32],
    sched: &Continuous,
    kind: Prediction,
    loss: Loss,
    batch: &ContinuousBatch<'_>,
) -> ContinuousGrads {
    use elbo_core::elbo::{
        continuous_decoder_term, continuous_diffusion_term, continuous_prior_term, discrete_decoder_nll,
    };
    use elbo_core::schedule::LogSnrSchedule;
    let b = batch.tc.len();
    let dim = batch.x0.len() / b.max(1);
    let d = dim as f64;
    let sig = |l: f64| 1.0 / (1.0 + (-l).exp());
    // (lambda, d lambda / dt, alpha, sigma, w(lambda)) per example
    let at: Vec<(f64, f64, f64, f64, f64)> = batch
        .tc
        .iter()
        .map(|&t| {
            let (l, dl) = (sched.log_snr(t), sched.dlog_snr_dt(t));
            let w = match loss {
                Loss::Weighted(w) => w.weight(l),
                _ => 1.0,
            };
            (l, dl, sig(l).sqrt(), sig(-l).sqrt(), w)
        })
        .collect();
    let mut z = vec![0.0f32; batch.x0.len()];
    for (i, &(_, _, a, s, _)) in at.iter().enumerate() {
        let r = i * dim..(i + 1) * dim;
        for ((zk, &x), &e) in z[r.clone()].iter_mut().zip(&batch.x0[r.clone()]).zip(&batch.eps[r]) {
            *zk = (a * f64::from(x) + s * f64::from(e)) as f32;
        }
    }
    let tau: Vec<f32> = batch.tc.iter().map(|&t| crate::nn::continuous_tau(t)).collect();
    let learned = match sched {
        Continuous::Learned(l) => Some(l),
        _ => None,
    };
    let per_example = std::sync::Mutex::new(vec![0.0f64; b]);
    let grads = net.loss_and_grads(params, &z, &tau, batch.labels, learned.is_some(), &|r0, out, g| {
        let mut sum = 0.0;
        for (j, (oc, gc)) in out.chunks_exact(dim).zip(g.chunks_exact_mut(dim)).enumerate() {
            let i = r0 + j;
            let (_, dl, a, s, w) = at[i];
            let (_, deps) = to_x0_eps(kind, 1.0, 0.0, a, s);
            let mut sq = 0.0;
            for k in 0..dim {
                let zk = f64::from(z[i * dim + k]);
                let (_, eps_hat) = to_x0_eps(kind, f64::from(oc[k]), zk, a, s);
                let r = eps_hat - f64::from(batch.eps[i * dim + k]);
                sq += r * r;
                gc[k] = (w * (-dl) * r * deps / d / b as f64) as f32;
            }
            let l = w * continuous_diffusion_term(dl, sq) / d;
            per_example.lock().expect("no panic holds the lock")[i] = l;
            sum += l / b as f64;
        }
        sum
    });
    let per_example = per_example.into_inner().expect("no panic holds the lock");
    let (l_max, l_min) = sched.end_points();
    let mut total = grads.loss;
    // the decoder term per coordinate and its derivative with respect to gamma_0 = -lambda_max
    let (decoder, ddecoder_dg0) = match batch.bins {
        // the draw z_0 = alpha_0 x + sigma_0 eps shares the diffusion term's noise (as VDM)
        Some(k) => {
            let (mut v, mut dv) = (0.0, 0.0);
            for (&x, &e) in batch.x0.iter().zip(batch.eps) {
                let (nll, dnll) = discrete_decoder_nll(level_of(x, k), k, f64::from(e), l_max).unwrap_or((0.0, 0.0));
                v += nll;
                dv += dnll;
            }
            (v / (b as f64 * d), -dv / (b as f64 * d))
        }
        None => (continuous_decoder_term(dim, l_max) / d, 0.5),
    };
    if loss == Loss::Vlb {
        let prior: f64 = batch.x0.chunks_exact(dim).map(|x| continuous_prior_term(x, l_min)).sum::<f64>();
        total += prior / (b as f64 * d) + decoder;
    }
    let (mut sched_mean, mut sched_second) = (vec![], vec![]);
    if let (Some(l), Some(gz)) = (learned, &grads.input) {
        use crate::continuous::N_PARAMS;
        sched_mean = vec![0.0; N_PARAMS];
        sched_second = vec![0.0; N_PARAMS];
        for (i, &(_, dl, a, s, _)) in at.iter().enumerate() {
            let gg = l.grad(batch.tc[i]);
            let li = per_example[i];
            // d L_i / d gamma' (L_i is linear in gamma' = -d lambda/dt) and d L_i / d gamma
            // (through z_t: dz/dgamma = -a s^2 x / 2 + s a^2 eps / 2; gz holds dL_i/dz / B).
            let dl_dgp = if dl != 0.0 { li / (-dl) } else { 0.0 };
            let mut dl_dg = 0.0;
            let r = i * dim..(i + 1) * dim;
            for ((&g, &x), &e) in gz[r.clone()].iter().zip(&batch.x0[r.clone()]).zip(&batch.eps[r]) {
                let dz = -0.5 * a * s * s * f64::from(x) + 0.5 * s * a * a * f64::from(e);
                dl_dg += b as f64 * f64::from(g) * dz;
            }
            for p in 0..N_PARAMS {
                let dli = dl_dg * gg.gamma[p] + dl_dgp * gg.dgamma[p];
                sched_mean[p] += dli / b as f64;
                sched_second[p] += 2.0 * li * dli / b as f64;
            }
        }
        // The prior depends on gamma_1 = gamma(1), the decoder on gamma_0 = gamma(0).
        let (g1_0, g1_1) = {
            let g = l.grad(1.0);
            (g.gamma[0], g.gamma[1])
        };
        let abar = sig(l_min);
        let dprior_dg1: f64 = batch
            .x0
            .iter()
            .map(|&x| {
                let x2 = f64::from(x) * f64::from(x);
                -0.5 * abar * ((x2 - 1.0) * (1.0 - abar) + 1.0)
            })
            .sum::<f64>()
            / (b as f64 * d);
        sched_mean[0] += dprior_dg1 * g1_0 + ddecoder_dg0;
        sched_mean[1] += dprior_dg1 * g1_1;
    }
    ContinuousGrads { loss: total, per_example, net: grads.params, sched_mean, sched_second }
}

/// The level `j` of a value `x = 2j / (levels - 1) - 1` of quantised data (the nearest one).
pub fn level_of(x: f32, levels: usize) -> usize {
    let j = ((f64::from(x) + 1.0) * 0.5 * (levels - 1) as f64).round();
    j.clamp(0.0, (levels - 1) as f64) as usize
}
