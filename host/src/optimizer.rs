//! The optimiser: AdamW (Loshchilov & Hutter: decoupled weight decay) with linear warm-up and
//! cosine decay, global-norm gradient clipping of a leading parameter group, and the EMA of the
//! weights. Every pass runs in fixed blocks of [`PARAM_BLOCK`] parameters, element by element,
//! so the result is the same bits for any number of threads.

use rayon::prelude::*;

use crate::checkpoint::TrainArgs;
use crate::nn::PARAM_BLOCK;

/// The AdamW learning rate at `step` (1-based): linear warm-up, then cosine decay to 0.
pub fn learning_rate(args: &TrainArgs, step: u64) -> f64 {
    if step <= args.warmup {
        return args.lr * step as f64 / args.warmup.max(1) as f64;
    }
    let progress = step.saturating_sub(args.warmup) as f64 / args.steps.saturating_sub(args.warmup).max(1) as f64;
    args.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// The constants of one AdamW step (Loshchilov & Hutter: decoupled weight decay) and the EMA
/// decay.
struct AdamW {
    lr: f64,
    b1: f64,
    b2: f64,
    /// `1 - b1^k`, `1 - b2^k`: the bias corrections at step `k`.
    c1: f64,
    c2: f64,
    eps: f64,
    weight_decay: f64,
    ema: f32,
}

/// One AdamW step on a block of parameters (the gradient scaled by `clip` first, if given;
/// moments in f32, arithmetic in f64), then the EMA
/// of the new parameters. Element by element, so any split into blocks gives the same bits;
/// compiled for the CPU's widest vectors, chosen at run time. Returns whether every new
/// parameter is finite.
#[multiversion::multiversion(targets("x86_64+avx2+fma", "x86_64+avx", "aarch64+neon"))]
fn adamw_ema(
    h: &AdamW,
    clip: Option<f32>,
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    p: &mut [f32],
    ema: &mut [f32],
) -> bool {
    let mut finite = true;
    for ((((&g, m), v), p), e) in grad.iter().zip(m.iter_mut()).zip(v.iter_mut()).zip(p.iter_mut()).zip(ema.iter_mut())
    {
        let g = f64::from(match clip {
            Some(c) => g * c,
            None => g,
        });
        let m1 = h.b1 * f64::from(*m) + (1.0 - h.b1) * g;
        let v1 = h.b2 * f64::from(*v) + (1.0 - h.b2) * g * g;
        *m = m1 as f32;
        *v = v1 as f32;
        let p0 = f64::from(*p);
        let update = (m1 / h.c1) / ((v1 / h.c2).sqrt() + h.eps) + h.weight_decay * p0;
        *p = (p0 - h.lr * update) as f32;
        *e = h.ema * *e + (1.0 - h.ema) * *p;
        finite &= p.is_finite();
    }
    finite
}

/// One optimiser step `k` (1-based) on the flat parameters: the first `clipped` entries of the
/// gradient (the network's) are scaled to the global norm `args.grad_clip`, the rest (a learned
/// schedule's) are not; then AdamW and the EMA, in parallel fixed blocks. Returns the first
/// parameter that is not finite after the step, if any.
#[allow(clippy::too_many_arguments)]
pub fn step(
    args: &TrainArgs,
    k: u64,
    grad: &[f32],
    clipped: usize,
    params: &mut [f32],
    adam_m: &mut [f32],
    adam_v: &mut [f32],
    ema: &mut [f32],
) -> Option<usize> {
    // the norm in fixed blocks, summed in order (the same for any thread count)
    let norm = grad[..clipped]
        .par_chunks(PARAM_BLOCK)
        .map(|b| b.iter().map(|g| f64::from(*g) * f64::from(*g)).sum::<f64>())
        .collect::<Vec<f64>>()
        .iter()
        .sum::<f64>()
        .sqrt();
    // the clipping factor of the clipped group, applied in the optimiser's pass
    let clip = (args.grad_clip > 0.0 && norm > args.grad_clip).then_some((args.grad_clip / norm) as f32);
    let lr = learning_rate(args, k);
    let b = (0.9f64, 0.999f64);
    let h = AdamW {
        lr,
        b1: b.0,
        b2: b.1,
        c1: 1.0 - b.0.powi(k as i32),
        c2: 1.0 - b.1.powi(k as i32),
        eps: 1e-8,
        weight_decay: args.weight_decay,
        ema: args.ema_decay.min((1.0 + k as f64) / (10.0 + k as f64)) as f32,
    };
    params
        .par_chunks_mut(PARAM_BLOCK)
        .zip(adam_m.par_chunks_mut(PARAM_BLOCK))
        .zip(adam_v.par_chunks_mut(PARAM_BLOCK))
        .zip(ema.par_chunks_mut(PARAM_BLOCK))
        .zip(grad.par_chunks(PARAM_BLOCK))
        .enumerate()
        .map(|(k, ((((p, m), v), e), g))| {
            let net = clipped.saturating_sub(k * PARAM_BLOCK).min(g.len());
            let (gn, gs) = g.split_at(net);
            let (pn, ps) = p.split_at_mut(net);
            let (mn, ms) = m.split_at_mut(net);
            let (vn, vs) = v.split_at_mut(net);
            let (en, es) = e.split_at_mut(net);
            let finite = adamw_ema(&h, clip, gn, mn, vn, pn, en) & adamw_ema(&h, None, gs, ms, vs, ps, es);
            // (the rare case searches its block)
            if finite { None } else { p.iter().position(|x| !x.is_finite()).map(|i| k * PARAM_BLOCK + i) }
        })
        // (min, not find_first: every block takes its step, a bad one or not)
        .flatten()
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The step reports the first parameter that overflows, wherever its block falls, and the
    /// same one for any thread count: every gradient is -1, so AdamW moves every parameter up
    /// by `lr` (its first step is `m / sqrt(v) = -1` exactly, up to `eps`); with `lr = 1e38`
    /// the parameters set to 3e38 pass f32's largest value (3.4e38) and no other does.
    #[test]
    fn reports_the_first_parameter_that_is_not_finite() {
        let opts = crate::train::TrainOptions { data: "two-moons".into(), ..crate::train::TrainOptions::DEFAULT };
        let mut args = opts.trainer().unwrap().ckpt.config.train.clone();
        (args.lr, args.warmup, args.weight_decay, args.grad_clip) = (1e38, 0, 0.0, 0.0);
        let n = 3 * PARAM_BLOCK + 17;
        for (big, first) in [(vec![], None), (vec![2 * PARAM_BLOCK + 5, PARAM_BLOCK + 9], Some(PARAM_BLOCK + 9))] {
            for threads in [1, 2, 3] {
                let mut p = vec![0.0f32; n];
                big.iter().for_each(|&i| p[i] = 3e38);
                let (mut m, mut v, mut e, g) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![-1.0f32; n]);
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let bad = pool.install(|| step(&args, 1, &g, n, &mut p, &mut m, &mut v, &mut e));
                assert_eq!(bad, first, "{threads} threads");
                // every block took its step, the ones after a bad one too
                for i in [0, n - 1] {
                    assert!((p[i] - 1e38).abs() <= 1e32, "p[{i}] = {}", p[i]);
                }
            }
        }
    }
}
