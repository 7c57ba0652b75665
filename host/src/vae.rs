//! The family diffusion belongs to (seed 004 sections 1-2): a Gaussian VAE and a two-level
//! Markovian hierarchical VAE, trained by the same trainer (AdamW, EMA, checkpoints) on the
//! same data, with their ELBO in the same units as the diffusion models'.
//!
//! - VAE: `q(z|x) = N(mu(x), diag exp(lv(x)))`, `p(z) = N(0, I)`,
//!   `p(x|z) = N(m(z), diag exp(2 s))` with a learned per-coordinate `s`; the negative ELBO
//!   `E_q[-log p(x|z)] + KL(q(z|x) || p(z))` (seed 004 eq. 19), the KL in closed form.
//! - HVAE (two levels, Markovian; seed 004 eq. 27): `q(z1|x) q(z2|z1)`, `p(z2) p(z1|z2) p(x|z1)`;
//!   `-ELBO = E_q[-log p(x|z1)] + E_q[log q(z1|x) - log p(z1|z2)] + E_q KL(q(z2|z1) || p(z2))`.
//!
//! Every network is an [`Mlp`] without time embedding; gradients pass through the
//! reparameterised draws `z = mu + exp(lv / 2) eps` by the networks' input gradients.

use serde::{Deserialize, Serialize};

use crate::nn::{Mlp, MlpConfig};
use elbo_core::gaussian::LN_2PI;

/// The latent structure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    /// Latent dimension of every level.
    pub latent: usize,
    /// 1 (VAE) or 2 (two-level HVAE).
    pub levels: usize,
}

/// The networks and their places in the flat parameter vector: `encoder1`, `decoder1`,
/// `decoder_log_std` (`D`), then for two levels `encoder2`, `decoder2`.
#[derive(Debug, Clone)]
pub struct Vae {
    dim: usize,
    latent: usize,
    nets: Vec<(String, Mlp, usize)>,
    log_std: usize,
    n_params: usize,
}

fn net(n_in: usize, n_out: usize, width: usize, depth: usize) -> Mlp {
    Mlp::new(MlpConfig { dim: n_in, width, depth, embed: 0, classes: 0, out: n_out })
}

/// Per-example values of one pass.
pub struct VaeLoss {
    /// The batch mean of `-ELBO / D` (nats).
    pub loss: f64,
    /// `-ELBO` of every example (nats).
    pub per_example: Vec<f64>,
    /// `d loss / d params` (present when asked for).
    pub grad: Vec<f32>,
}

impl Vae {
    /// The layout for data of dimension `dim` and hidden layers `width x depth`.
    pub fn new(dim: usize, cfg: &VaeConfig, width: usize, depth: usize) -> Self {
        let l = cfg.latent;
        let mut shapes = vec![("encoder1", dim, 2 * l), ("decoder1", l, dim)];
        if cfg.levels == 2 {
            shapes.push(("encoder2", l, 2 * l));
            shapes.push(("decoder2", l, 2 * l));
        }
        let mut off = 0;
        let mut nets = Vec::new();
        for (name, i, o) in shapes {
            let m = net(i, o, width, depth);
            let n = m.n_params();
            nets.push((name.to_string(), m, off));
            off += n;
        }
        let log_std = off;
        Vae { dim, latent: l, nets, log_std, n_params: off + dim }
    }

    /// The number of parameters.
    pub fn n_params(&self) -> usize {
        self.n_params
    }

    /// Names, shapes and offsets of the parameter tensors.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, usize)> {
        let mut v = Vec::new();
        for (name, m, off) in &self.nets {
            for (n, s, o) in m.tensors() {
                v.push((format!("{name}.{n}"), s, off + o));
            }
        }
        v.push(("decoder_log_std".into(), vec![self.dim], self.log_std));
        v
    }

    /// Initial parameters (each network's own initialisation, `s = 0`).
    pub fn init(&self, rng: &mut rand_pcg::Pcg32) -> Vec<f32> {
        let mut p = vec![0.0f32; self.n_params];
        for (_, m, off) in &self.nets {
            let q = m.init(rng);
            p[*off..off + q.len()].copy_from_slice(&q);
        }
        p
    }

    fn part<'p>(&self, i: usize, p: &'p [f32]) -> (&Mlp, &'p [f32]) {
        let (_, m, off) = &self.nets[i];
        (m, &p[*off..off + m.n_params()])
    }

    fn fwd(&self, i: usize, p: &[f32], x: &[f32], rows: usize) -> Vec<f32> {
        let (m, q) = self.part(i, p);
        let mut out = vec![0.0f32; rows * m.config().out];
        m.forward(q, x, &vec![0.0; rows], None, &mut out);
        out
    }

    /// Backward through network `i` at inputs `x` with output gradient `dy`: adds the parameter
    /// gradient into `grad`, returns the input gradient.
    fn bwd(&self, i: usize, p: &[f32], x: &[f32], dy: &[f32], grad: &mut [f32]) -> Vec<f32> {
        let (m, q) = self.part(i, p);
        let o = m.config().out;
        let rows = dy.len() / o;
        let g = m.loss_and_grads(q, x, &vec![0.0; rows], None, true, |r0, _, g| {
            g.copy_from_slice(&dy[r0 * o..r0 * o + g.len()]);
            0.0
        });
        let off = self.nets[i].2;
        for (a, b) in grad[off..off + m.n_params()].iter_mut().zip(&g.params) {
            *a += b;
        }
        g.input.unwrap_or_default()
    }

    /// Reparameterised draws from `(mu, lv)` rows of `2 L`: `z = mu + exp(lv / 2) eps`.
    fn draw(&self, stats: &[f32], eps: &[f32]) -> Vec<f32> {
        let l = self.latent;
        stats
            .chunks_exact(2 * l)
            .zip(eps.chunks_exact(l))
            .flat_map(|(s, e)| (0..l).map(move |k| s[k] + (0.5 * s[l + k]).exp() * e[k]))
            .collect()
    }

    /// `-ELBO` of a batch `x` (`B x D`) with the standard normals `eps` (`B x L` per level),
    /// and (with `want_grad`) its gradient.
    pub fn loss(&self, p: &[f32], x: &[f32], eps: &[f32], want_grad: bool) -> VaeLoss {
        let (d, l) = (self.dim, self.latent);
        let b = x.len() / d;
        let two = self.nets.len() == 4;
        let mut grad = vec![0.0f32; if want_grad { self.n_params } else { 0 }];
        let mut per = vec![0.0f64; b];
        let s1 = self.fwd(0, p, x, b);
        let z1 = self.draw(&s1, &eps[..b * l]);
        let m = self.fwd(1, p, &z1, b);
        let ls = &p[self.log_std..self.log_std + d];
        // reconstruction -log N(x; m, exp(2 s))
        let mut dm = vec![0.0f32; b * d];
        let mut dls = vec![0.0f64; d];
        for i in 0..b {
            for k in 0..d {
                let s = f64::from(ls[k]);
                let r = f64::from(x[i * d + k]) - f64::from(m[i * d + k]);
                let iv = (-2.0 * s).exp();
                per[i] += 0.5 * (LN_2PI + 2.0 * s + r * r * iv);
                dm[i * d + k] = (-r * iv) as f32;
                dls[k] += 1.0 - r * r * iv;
            }
        }
        // d/d(mu1, lv1) of everything but the reconstruction, and the z1 path
        let mut ds1 = vec![0.0f32; b * 2 * l];
        let mut gz1 = vec![0.0f64; b * l];
        let (mut s2, mut z2, mut pz) = (vec![], vec![], vec![]);
        if two {
            s2 = self.fwd(2, p, &z1, b);
            z2 = self.draw(&s2, &eps[b * l..2 * b * l]);
            pz = self.fwd(3, p, &z2, b);
        }
        let mut ds2 = vec![0.0f32; if two { b * 2 * l } else { 0 }];
        let mut dpz = vec![0.0f32; if two { b * 2 * l } else { 0 }];
        for i in 0..b {
            for k in 0..l {
                let (mu1, lv1) = (f64::from(s1[i * 2 * l + k]), f64::from(s1[i * 2 * l + l + k]));
                if !two {
                    // KL(N(mu, e^lv) || N(0, 1))
                    per[i] += 0.5 * (mu1 * mu1 + lv1.exp() - 1.0 - lv1);
                    ds1[i * 2 * l + k] = mu1 as f32;
                    ds1[i * 2 * l + l + k] = (0.5 * (lv1.exp() - 1.0)) as f32;
                    continue;
                }
                let e1 = f64::from(eps[i * l + k]);
                let z = f64::from(z1[i * l + k]);
                // log q(z1|x) = -1/2 (ln 2 pi + lv1 + e1^2)
                per[i] += -0.5 * (LN_2PI + lv1 + e1 * e1);
                ds1[i * 2 * l + l + k] = -0.5;
                // -log p(z1|z2) = 1/2 (ln 2 pi + lvp + (z1 - mup)^2 e^-lvp)
                let (mup, lvp) = (f64::from(pz[i * 2 * l + k]), f64::from(pz[i * 2 * l + l + k]));
                let r = z - mup;
                let iv = (-lvp).exp();
                per[i] += 0.5 * (LN_2PI + lvp + r * r * iv);
                gz1[i * l + k] += r * iv;
                dpz[i * 2 * l + k] = (-r * iv) as f32;
                dpz[i * 2 * l + l + k] = (0.5 * (1.0 - r * r * iv)) as f32;
                // KL(q(z2|z1) || N(0, 1))
                let (mu2, lv2) = (f64::from(s2[i * 2 * l + k]), f64::from(s2[i * 2 * l + l + k]));
                per[i] += 0.5 * (mu2 * mu2 + lv2.exp() - 1.0 - lv2);
                ds2[i * 2 * l + k] = mu2 as f32;
                ds2[i * 2 * l + l + k] = (0.5 * (lv2.exp() - 1.0)) as f32;
            }
        }
        let loss = per.iter().sum::<f64>() / (b * d) as f64;
        if want_grad {
            let scale = 1.0 / (b * d) as f32;
            let sc = |v: &mut Vec<f32>| v.iter_mut().for_each(|g| *g *= scale);
            sc(&mut dm);
            let gz_rec = self.bwd(1, p, &z1, &dm, &mut grad);
            for (g, v) in gz1.iter_mut().zip(&gz_rec) {
                *g = *g * f64::from(scale) + f64::from(*v);
            }
            for (k, v) in dls.iter().enumerate() {
                grad[self.log_std + k] = (v * f64::from(scale)) as f32;
            }
            if two {
                sc(&mut dpz);
                let gz2 = self.bwd(3, p, &z2, &dpz, &mut grad);
                // through z2 = mu2 + exp(lv2 / 2) e2 into (mu2, lv2)
                sc(&mut ds2);
                for i in 0..b {
                    for k in 0..l {
                        let lv2 = f64::from(s2[i * 2 * l + l + k]);
                        let e2 = f64::from(eps[b * l + i * l + k]);
                        let g = f64::from(gz2[i * l + k]);
                        ds2[i * 2 * l + k] += g as f32;
                        ds2[i * 2 * l + l + k] += (g * e2 * 0.5 * (0.5 * lv2).exp()) as f32;
                    }
                }
                let gz_enc2 = self.bwd(2, p, &z1, &ds2, &mut grad);
                for (g, v) in gz1.iter_mut().zip(&gz_enc2) {
                    *g += f64::from(*v);
                }
            }
            sc(&mut ds1);
            for i in 0..b {
                for k in 0..l {
                    let lv1 = f64::from(s1[i * 2 * l + l + k]);
                    let e1 = f64::from(eps[i * l + k]);
                    let g = gz1[i * l + k];
                    ds1[i * 2 * l + k] += g as f32;
                    ds1[i * 2 * l + l + k] += (g * e1 * 0.5 * (0.5 * lv1).exp()) as f32;
                }
            }
            self.bwd(0, p, x, &ds1, &mut grad);
        }
        VaeLoss { loss, per_example: per, grad }
    }

    /// Ancestral samples: `z_top ~ N(0, I)`, down the decoders; returns the decoder means plus
    /// their Gaussian noise (`normals`: `B x (L (levels) + D)` standard normals).
    pub fn sample(&self, p: &[f32], n: usize, normals: &[f32]) -> Vec<f32> {
        let (d, l) = (self.dim, self.latent);
        let mut z: Vec<f32> = normals[..n * l].to_vec();
        let mut used = n * l;
        if self.nets.len() == 4 {
            let pz = self.fwd(3, p, &z, n);
            z = self.draw(&pz, &normals[used..used + n * l]);
            used += n * l;
        }
        let m = self.fwd(1, p, &z, n);
        let ls = &p[self.log_std..self.log_std + d];
        m.iter().enumerate().map(|(j, &v)| v + ls[j % d].exp() * normals[used + j]).collect()
    }

    /// `-ELBO` of every example of `x` (nats, on the model's data), the mean of `draws`
    /// single-sample estimates.
    pub fn neg_elbo(&self, p: &[f32], x: &[f32], draws: usize, rng: &mut rand_pcg::Pcg32) -> Vec<f64> {
        let b = x.len() / self.dim;
        let mut acc = vec![0.0f64; b];
        let mut eps = vec![0.0f32; b * self.normals_per_example()];
        for _ in 0..draws {
            elbo_core::rng::fill_standard_normal(rng, &mut eps);
            for (a, v) in acc.iter_mut().zip(self.loss(p, x, &eps, false).per_example) {
                *a += v / draws as f64;
            }
        }
        acc
    }

    /// The standard normals one training pass uses per example.
    pub fn normals_per_example(&self) -> usize {
        self.latent * (self.nets.len() / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    /// The reparameterised gradient of the single-sample `-ELBO` (fixed eps) against central
    /// differences, for one and two levels.
    #[test]
    fn gradients_match_finite_differences() {
        for levels in [1, 2] {
            let v = Vae::new(2, &VaeConfig { latent: 2, levels }, 8, 1);
            let mut rng = rand_pcg::Pcg32::seed_from_u64(4);
            let mut p = v.init(&mut rng);
            for (i, q) in p.iter_mut().enumerate() {
                *q += 0.05 * ((i as f32) * 0.7).sin();
            }
            let x = [0.4f32, -1.1, 1.3, 0.2, -0.6, 0.9];
            let mut eps = vec![0.0f32; 3 * v.normals_per_example()];
            elbo_core::rng::fill_standard_normal(&mut rng, &mut eps);
            let g = v.loss(&p, &x, &eps, true).grad;
            for k in (0..v.n_params()).step_by(3) {
                let h = 1e-2f32;
                let (mut up, mut dn) = (p.clone(), p.clone());
                up[k] += h;
                dn[k] -= h;
                let fd =
                    (v.loss(&up, &x, &eps, false).loss - v.loss(&dn, &x, &eps, false).loss) / f64::from(up[k] - dn[k]);
                let an = f64::from(g[k]);
                assert!(
                    (fd - an).abs() <= 2e-2 * an.abs().max(fd.abs()).max(1e-3),
                    "levels {levels} p{k}: {an} vs {fd}"
                );
            }
        }
    }
}
