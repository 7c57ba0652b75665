use rand_core::SeedableRng;

use super::layers::{Conv, GroupNorm, fourier, fourier_backward};
use super::*;
use crate::network::Network;

/// A small network with every kind of layer: two levels (a stride-2 convolution, an
/// upsampling), attention, a class table, Fourier features and a 1x1 skip.
fn small(classes: usize, fourier: Vec<i32>) -> UNet {
    let cfg = UNetConfig {
        channels: 2,
        height: 4,
        width: 4,
        base: 4,
        mults: vec![1, 2],
        blocks: 1,
        attention: true,
        groups: 2,
        embed: 6,
        classes,
        out_channels: 2,
        fourier,
    };
    cfg.validate().unwrap();
    UNet::new(cfg)
}

/// Parameters with no zero weights, so that every path carries a gradient.
fn params(net: &UNet, seed: u64) -> Vec<f32> {
    let mut rng = rand_pcg::Pcg32::seed_from_u64(seed);
    let mut p = net.init(&mut rng);
    let mut noise = vec![0.0f32; p.len()];
    elbo_core::rng::fill_standard_normal(&mut rng, &mut noise);
    p.iter_mut().zip(&noise).for_each(|(v, &z)| *v += 0.3 * z);
    p
}

fn inputs(net: &UNet, n: usize) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let x: Vec<f32> = (0..n * net.dim()).map(|i| ((i as f32) * 0.731).sin() * 0.9).collect();
    let t: Vec<f32> = (0..n).map(|i| (i * 137 % 1000) as f32).collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % 4) as u32).collect();
    (x, t, labels)
}

/// `loss = sum w . y` with fixed pseudo-random `w`.
fn weights(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i as f32) * 1.37).cos()).collect()
}

/// Backpropagation against central finite differences, for two entries of every parameter
/// tensor (so every layer's backward is checked), with and without a class table and Fourier
/// features. The loss is linear in the output; f32 forward passes with a step of 1e-2 agree
/// with the gradient to about 1e-3 relative where the network is smooth.
#[test]
fn every_layers_gradient_matches_finite_differences() {
    for (classes, four) in [(0, vec![]), (3, vec![0, 2])] {
        let net = small(classes, four);
        let p = params(&net, 1);
        let n = 3;
        let (x, t, labels) = inputs(&net, n);
        let lab = (classes > 0).then_some(&labels[..]);
        let w = weights(n * net.out());
        let lg = |r0: usize, y: &[f32], g: &mut [f32]| {
            let w = &w[r0 * net.out()..r0 * net.out() + y.len()];
            g.copy_from_slice(w);
            y.iter().zip(w).map(|(a, b)| f64::from(a * b)).sum()
        };
        let (_, g) = net.loss_and_grad(&p, &x, &t, lab, &lg);
        let loss = |p: &[f32]| net.loss_and_grad(p, &x, &t, lab, &lg).0;
        let mut checked = 0;
        for (name, shape, o) in net.tensors() {
            let len: usize = shape.iter().product();
            for k in [o, o + len / 2 + len / 3] {
                if name == "class_embedding" && (k - o) / (4 * 4) >= 3 {
                    continue; // the null class's row: no example uses it
                }
                let h = 1e-2f32;
                let (mut pp, mut pm) = (p.clone(), p.clone());
                pp[k] += h;
                pm[k] -= h;
                let fd = (loss(&pp) - loss(&pm)) / (2.0 * f64::from(h));
                let an = f64::from(g[k]);
                assert!(
                    (fd - an).abs() <= 1e-2 * an.abs().max(fd.abs()).max(1e-1),
                    "{name}[{}]: backprop {an}, finite differences {fd}",
                    k - o
                );
                checked += 1;
            }
        }
        assert!(checked > 60, "{checked}");
    }
}

/// The input gradient (through the Fourier features) against central finite differences.
#[test]
fn input_gradient_matches_finite_differences() {
    let net = small(3, vec![-1, 1]);
    let p = params(&net, 2);
    let n = 2;
    let (x, t, labels) = inputs(&net, n);
    let w = weights(n * net.out());
    let lg = |r0: usize, y: &[f32], g: &mut [f32]| {
        let w = &w[r0 * net.out()..r0 * net.out() + y.len()];
        g.copy_from_slice(w);
        y.iter().zip(w).map(|(a, b)| f64::from(a * b)).sum()
    };
    let dx = net.loss_and_grads(&p, &x, &t, Some(&labels), true, &lg).input.unwrap();
    for k in (0..x.len()).step_by(3) {
        let h = 1e-2f32;
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[k] += h;
        xm[k] -= h;
        let f = |x: &[f32]| net.loss_and_grad(&p, x, &t, Some(&labels), &lg).0;
        let fd = (f(&xp) - f(&xm)) / (2.0 * f64::from(h));
        let an = f64::from(dx[k]);
        assert!((fd - an).abs() <= 1e-2 * an.abs().max(fd.abs()).max(1e-1), "x[{k}]: {an} vs {fd}");
    }
}

/// A convolution against the definition `y[o, co] = b[co] + sum w[ky, kx, ci, co] x[o s + k - p, ci]`
/// in f64, for 1x1 and 3x3 kernels, strides 1 and 2, on an odd-sized image.
#[test]
fn convolution_matches_its_definition() {
    let (n, h, w, cin, cout) = (2, 5, 7, 3, 4);
    for (k, s) in [(1, 1), (3, 1), (3, 2)] {
        let conv = Conv { cin, cout, k, stride: s, weight: 0, bias: k * k * cin * cout };
        let p: Vec<f32> = (0..k * k * cin * cout + cout).map(|i| ((i as f32) * 0.37).sin()).collect();
        let x: Vec<f32> = (0..n * h * w * cin).map(|i| ((i as f32) * 0.11).cos()).collect();
        let y = conv.forward(&p, &x, n, h, w);
        let (ho, wo) = conv.out_size(h, w);
        assert_eq!((ho, wo), ((h + 2 * (k / 2) - k) / s + 1, (w + 2 * (k / 2) - k) / s + 1));
        for b in 0..n {
            for oy in 0..ho {
                for ox in 0..wo {
                    for co in 0..cout {
                        let mut acc = f64::from(p[conv.bias + co]);
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) =
                                    ((oy * s + ky) as i64 - (k / 2) as i64, (ox * s + kx) as i64 - (k / 2) as i64);
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                    continue;
                                }
                                for ci in 0..cin {
                                    let wv = p[((ky * k + kx) * cin + ci) * cout + co];
                                    let xv = x[((b * h + iy as usize) * w + ix as usize) * cin + ci];
                                    acc += f64::from(wv) * f64::from(xv);
                                }
                            }
                        }
                        let got = y[((b * ho + oy) * wo + ox) * cout + co];
                        assert!((f64::from(got) - acc).abs() < 1e-5, "k {k} s {s}: {got} vs {acc}");
                    }
                }
            }
        }
    }
}

/// Group normalisation against its definition in f64 (biased variance, eps 1e-5).
#[test]
fn group_norm_matches_its_definition() {
    let (n, pix, c, groups) = (2, 6, 6, 3);
    let gn = GroupNorm { c, groups, gamma: 0, beta: c };
    let p: Vec<f32> = (0..2 * c).map(|i| 0.5 + (i as f32) * 0.1).collect();
    let x: Vec<f32> = (0..n * pix * c).map(|i| ((i as f32) * 0.77).sin() * 3.0 + 1.0).collect();
    let (y, _) = gn.forward(&p, &x, n);
    let cg = c / groups;
    for b in 0..n {
        for q in 0..groups {
            let vals: Vec<f64> = (0..pix)
                .flat_map(|k| (q * cg..(q + 1) * cg).map(move |j| (k, j)))
                .map(|(k, j)| f64::from(x[(b * pix + k) * c + j]))
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            for k in 0..pix {
                for j in q * cg..(q + 1) * cg {
                    let i = (b * pix + k) * c + j;
                    let want = (f64::from(x[i]) - mean) / (var + 1e-5).sqrt() * f64::from(p[j]) + f64::from(p[c + j]);
                    assert!((f64::from(y[i]) - want).abs() < 1e-5, "{} vs {want}", y[i]);
                }
            }
        }
    }
}

/// VDM's Fourier features: values and their derivative.
#[test]
fn fourier_features_match_their_definition() {
    let x = [0.25f32, -0.5, 0.125];
    let e = [0, 2];
    let y = fourier(&x, 3, &e);
    assert_eq!(y.len(), 3 * 5);
    for (ci, &v) in x.iter().enumerate() {
        assert_eq!(y[ci], v);
        for (k, &ek) in e.iter().enumerate() {
            let a = f64::from(v) * 2f64.powi(ek) * 2.0 * std::f64::consts::PI;
            assert!((f64::from(y[3 + ci * 2 + k]) - a.sin()).abs() < 1e-6);
            assert!((f64::from(y[3 + 6 + ci * 2 + k]) - a.cos()).abs() < 1e-6);
        }
    }
    let dy = vec![1.0f32; 15];
    let dx = fourier_backward(&x, 3, &e, &dy);
    for (ci, &v) in x.iter().enumerate() {
        let want: f64 = 1.0
            + e.iter()
                .map(|&ek| {
                    let w = 2f64.powi(ek) * 2.0 * std::f64::consts::PI;
                    w * (f64::from(v) * w).cos() - w * (f64::from(v) * w).sin()
                })
                .sum::<f64>();
        assert!((f64::from(dx[ci]) - want).abs() < 1e-4 * want.abs().max(1.0), "{} vs {want}", dx[ci]);
    }
}

/// Forward outputs and gradients are the same bits with 1 and 3 threads.
#[test]
fn results_do_not_depend_on_threads() {
    let net = small(3, vec![1]);
    let p = params(&net, 3);
    let n = 21;
    let (x, t, labels) = inputs(&net, n);
    let lg = |_: usize, y: &[f32], g: &mut [f32]| {
        g.copy_from_slice(y);
        y.iter().map(|v| f64::from(v * v)).sum()
    };
    let run = |threads| {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
            let mut out = vec![0.0f32; n * net.out()];
            net.forward(&p, &x, &t, Some(&labels), &mut out);
            let g = net.loss_and_grads(&p, &x, &t, Some(&labels), true, &lg);
            (out, g.loss, g.params, g.input.unwrap())
        })
    };
    let a = run(1);
    let b = run(3);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.0), bits(&b.0));
    assert_eq!(a.1.to_bits(), b.1.to_bits());
    assert_eq!(bits(&a.2), bits(&b.2));
    assert_eq!(bits(&a.3), bits(&b.3));
}

/// The inference path (no tape, GroupNorm and SiLU fused, skips moved) gives the training
/// path's forward output to the bit, with and without a class table and Fourier features, and
/// with two blocks per level (two kept skips in a row).
#[test]
fn inference_equals_the_training_forward_bit_for_bit() {
    let two_blocks = {
        let mut cfg = small(0, vec![]).config().clone();
        cfg.blocks = 2;
        UNet::new(cfg)
    };
    for net in [small(3, vec![1, 2]), small(0, vec![]), two_blocks] {
        let p = params(&net, 5);
        let n = 5;
        let (x, t, labels) = inputs(&net, n);
        let lab = (net.classes() > 0).then_some(&labels[..]);
        let (want, _) = net.forward_chunk(&p, &x, &t, lab);
        let got = net.infer_chunk(&p, &x, &t, lab);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want));
    }
}

/// Bad sizes are refused by `validate`, each with its reason.
#[test]
fn bad_configurations_are_refused() {
    let good = small(0, vec![]).config().clone();
    let cases: Vec<(UNetConfig, &str)> = vec![
        (UNetConfig { height: 5, ..good.clone() }, "multiples of 2"),
        (UNetConfig { groups: 3, ..good.clone() }, "groups"),
        (UNetConfig { mults: vec![], ..good.clone() }, "mults"),
        (UNetConfig { embed: 5, ..good.clone() }, "embed"),
        (UNetConfig { base: 100_000, ..good.clone() }, "base"),
        (UNetConfig { fourier: vec![40], ..good.clone() }, "Fourier"),
    ];
    for (cfg, want) in cases {
        let e = cfg.validate().unwrap_err();
        assert!(e.contains(want), "{e}");
    }
}
