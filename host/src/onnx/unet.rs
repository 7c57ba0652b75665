//! The U-Net as a standard ONNX graph (opset 17, dynamic batch): `sample` `[N, C, H, W]`,
//! `timestep` `[N]`, `class_labels` `[N]` if conditional; `out_sample` `[N, C_out, H, W]`.
//! Each layer is the standard operator of the same function: `Conv` (weights transposed to
//! `[cout, cin, k, k]`), GroupNorm as `InstanceNormalization` over `[N, groups, -1]` followed by
//! the per-channel scale and shift (as PyTorch exports it), SiLU as `x * Sigmoid(x)`, nearest
//! upsampling as `Resize` (asymmetric, floor), attention as `MatMul`/`Softmax`, the Fourier
//! features as `Sin`/`Cos` of the input times `2^e 2 pi`.

use super::export::{
    attr_float, attr_int, attr_ints, attr_string, node, node_with, tensor, tensor_i64, time_embedding, value_info,
};
use super::proto::{FLOAT, INT64, NodeProto, TensorProto};
use crate::network::{OnnxGraph, TimeInput};
use crate::nn::unet::layers::{Attention, Conv, GN_EPS, GroupNorm, Linear, fourier_frequency};
use crate::nn::unet::{Op, ResBlock, UNet};

/// A graph under construction.
struct Graph<'a> {
    p: &'a [f32],
    nodes: Vec<NodeProto>,
    init: Vec<TensorProto>,
    next: usize,
}

impl Graph<'_> {
    fn fresh(&mut self, base: &str) -> String {
        self.next += 1;
        format!("{base}_{}", self.next)
    }

    fn op(&mut self, op: &str, inputs: &[&str], base: &str) -> String {
        let out = self.fresh(base);
        self.nodes.push(node(op, inputs, &out, &[]));
        out
    }

    fn silu(&mut self, x: &str) -> String {
        let s = self.op("Sigmoid", &[x], "sig");
        self.op("Mul", &[x, &s], "silu")
    }

    fn conv(&mut self, x: &str, c: &Conv, name: &str) -> String {
        let (k, ci, co) = (c.k, c.cin, c.cout);
        // ours [ky, kx, ci, co] -> ONNX's [co, ci, ky, kx]
        let mut w = vec![0.0f32; k * k * ci * co];
        for ky in 0..k {
            for kx in 0..k {
                for i in 0..ci {
                    for o in 0..co {
                        w[((o * ci + i) * k + ky) * k + kx] = self.p[c.weight + ((ky * k + kx) * ci + i) * co + o];
                    }
                }
            }
        }
        let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
        self.init.push(tensor(&wn, &[co, ci, k, k], &w));
        self.init.push(tensor(&bn, &[co], &self.p[c.bias..c.bias + co]));
        let out = self.fresh(name);
        let p = (k / 2) as i64;
        let s = c.stride as i64;
        self.nodes.push(node_with(
            "Conv",
            &[x, &wn, &bn],
            &out,
            vec![
                attr_ints("kernel_shape", &[k as i64, k as i64]),
                attr_ints("pads", &[p, p, p, p]),
                attr_ints("strides", &[s, s]),
            ],
        ));
        out
    }

    fn linear(&mut self, x: &str, l: &Linear, name: &str) -> String {
        let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
        self.init.push(tensor(&wn, &[l.n_in, l.n_out], &self.p[l.weight..l.weight + l.n_in * l.n_out]));
        self.init.push(tensor(&bn, &[l.n_out], &self.p[l.bias..l.bias + l.n_out]));
        let m = self.op("MatMul", &[x, &wn], name);
        self.op("Add", &[&m, &bn], name)
    }

    /// GroupNorm of `x` `[N, c, h, w]`.
    fn group_norm(&mut self, x: &str, g: &GroupNorm, (h, w): (usize, usize), name: &str) -> String {
        let groups = g.groups;
        let (grouped, back) = (format!("{name}.grouped"), format!("{name}.back"));
        self.init.push(tensor_i64(&grouped, &[3], &[0, groups as i64, -1]));
        self.init.push(tensor_i64(&back, &[4], &[0, g.c as i64, h as i64, w as i64]));
        let (ones, zeros) = (format!("{name}.ones"), format!("{name}.zeros"));
        self.init.push(tensor(&ones, &[groups], &vec![1.0; groups]));
        self.init.push(tensor(&zeros, &[groups], &vec![0.0; groups]));
        let (gn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
        self.init.push(tensor(&gn, &[g.c, 1, 1], &self.p[g.gamma..g.gamma + g.c]));
        self.init.push(tensor(&bn, &[g.c, 1, 1], &self.p[g.beta..g.beta + g.c]));
        let r = self.op("Reshape", &[x, &grouped], name);
        let out = self.fresh(name);
        self.nodes.push(node_with(
            "InstanceNormalization",
            &[&r, &ones, &zeros],
            &out,
            vec![attr_float("epsilon", GN_EPS as f32)],
        ));
        let b = self.op("Reshape", &[&out, &back], name);
        let m = self.op("Mul", &[&b, &gn], name);
        self.op("Add", &[&m, &bn], name)
    }

    fn res(&mut self, x: &str, r: &ResBlock, es: &str, hw: (usize, usize), name: &str) -> String {
        let n1 = self.group_norm(x, &r.norm1, hw, &format!("{name}.norm1"));
        let a1 = self.silu(&n1);
        let h1 = self.conv(&a1, &r.conv1, &format!("{name}.conv1"));
        let eo = self.linear(es, &r.emb, &format!("{name}.emb"));
        let eo4 = self.op("Unsqueeze", &[&eo, "axes23"], name);
        let h1 = self.op("Add", &[&h1, &eo4], name);
        let n2 = self.group_norm(&h1, &r.norm2, hw, &format!("{name}.norm2"));
        let a2 = self.silu(&n2);
        let h2 = self.conv(&a2, &r.conv2, &format!("{name}.conv2"));
        let skip = match &r.skip {
            Some(s) => self.conv(x, s, &format!("{name}.skip")),
            None => x.to_string(),
        };
        self.op("Add", &[&skip, &h2], name)
    }

    fn attention(&mut self, x: &str, a: &Attention, (h, w): (usize, usize), name: &str) -> String {
        let c = a.c;
        let t = h * w;
        let n = self.group_norm(x, &a.norm, (h, w), &format!("{name}.norm"));
        let qkv = self.conv(&n, &a.qkv, &format!("{name}.qkv"));
        let (flat, split, back, scale) =
            (format!("{name}.flat"), format!("{name}.split"), format!("{name}.back"), format!("{name}.scale"));
        self.init.push(tensor_i64(&flat, &[3], &[0, 3 * c as i64, t as i64]));
        self.init.push(tensor_i64(&split, &[3], &[c as i64; 3]));
        self.init.push(tensor_i64(&back, &[4], &[0, c as i64, h as i64, w as i64]));
        self.init.push(tensor(&scale, &[1], &[1.0 / (c as f32).sqrt()]));
        let f = self.op("Reshape", &[&qkv, &flat], name);
        let (q, k, v) = (self.fresh("q"), self.fresh("k"), self.fresh("v"));
        self.nodes.push(NodeProto {
            input: vec![f, split],
            output: vec![q.clone(), k.clone(), v.clone()],
            name: format!("Split_{q}"),
            op_type: "Split".into(),
            attribute: vec![attr_int("axis", 1)],
        });
        let qt = self.fresh("qt");
        self.nodes.push(node_with("Transpose", &[&q], &qt, vec![attr_ints("perm", &[0, 2, 1])]));
        let s = self.op("MatMul", &[&qt, &k], name);
        let s = self.op("Mul", &[&s, &scale], name);
        let att = self.fresh("attn");
        self.nodes.push(node_with("Softmax", &[&s], &att, vec![attr_int("axis", -1)]));
        let at = self.fresh("attn_t");
        self.nodes.push(node_with("Transpose", &[&att], &at, vec![attr_ints("perm", &[0, 2, 1])]));
        let o = self.op("MatMul", &[&v, &at], name);
        let o = self.op("Reshape", &[&o, &back], name);
        let y = self.conv(&o, &a.proj, &format!("{name}.proj"));
        self.op("Add", &[x, &y], name)
    }
}

/// The ONNX graph of `net` with `params`; the timestep input declared float32 or int64.
pub(crate) fn unet_graph(net: &UNet, params: &[f32], time: TimeInput) -> OnnxGraph {
    let cfg = net.config();
    let parts = net.parts();
    let mut g = Graph { p: params, nodes: vec![], init: vec![], next: 0 };
    let (c, hh, ww) = (cfg.channels, cfg.height, cfg.width);
    g.init.push(tensor_i64("axes23", &[2], &[2, 3]));
    time_embedding(cfg.embed, time, &mut g.init, &mut g.nodes);
    let l1 = g.linear("t_emb", &parts.temb[0], "time.0");
    let s1 = g.silu(&l1);
    let mut emb = g.linear(&s1, &parts.temb[1], "time.1");
    let mut inputs = vec![
        value_info("sample", FLOAT, &[None, Some(c), Some(hh), Some(ww)]),
        value_info("timestep", if time.float { FLOAT } else { INT64 }, &[None]),
    ];
    if let Some(off) = parts.class_table {
        let w = 4 * cfg.base;
        g.init.push(tensor("class_embedding", &[cfg.classes + 1, w], &params[off..off + (cfg.classes + 1) * w]));
        g.nodes.push(node("Gather", &["class_embedding", "class_labels"], "c_emb", &[("axis", 0)]));
        emb = g.op("Add", &[&emb, "c_emb"], "emb");
        inputs.push(value_info("class_labels", INT64, &[None]));
    }
    let es = g.silu(&emb);
    // VDM's Fourier features: [x, sin(w x) channel-major, cos(w x)]
    let mut x = "sample".to_string();
    if !cfg.fourier.is_empty() {
        let f = cfg.fourier.len();
        let ws: Vec<f32> = cfg.fourier.iter().map(|&e| fourier_frequency(e)).collect();
        g.init.push(tensor("fourier.w", &[1, 1, f, 1, 1], &ws));
        g.init.push(tensor_i64("fourier.axis2", &[1], &[2]));
        g.init.push(tensor_i64("fourier.flat", &[4], &[0, (c * f) as i64, hh as i64, ww as i64]));
        let u = g.op("Unsqueeze", &["sample", "fourier.axis2"], "fourier");
        let a = g.op("Mul", &[&u, "fourier.w"], "fourier");
        let a = g.op("Reshape", &[&a, "fourier.flat"], "fourier");
        let sn = g.op("Sin", &[&a], "fourier");
        let cs = g.op("Cos", &[&a], "fourier");
        let out = g.fresh("features");
        g.nodes.push(node("Concat", &["sample", &sn, &cs], &out, &[("axis", 1)]));
        x = out;
    }
    let mut h = g.conv(&x, &parts.input, "input");
    let (mut hgt, mut wid) = (hh, ww);
    let mut stack: Vec<String> = vec![];
    let mut k = 0;
    for op in &parts.ops {
        k += 1;
        h = match op {
            Op::Push => {
                stack.push(h.clone());
                h
            }
            Op::Concat => {
                let s = stack.pop().expect("a kept skip per concatenation");
                let out = g.fresh("concat");
                g.nodes.push(node("Concat", &[&h, &s], &out, &[("axis", 1)]));
                out
            }
            Op::Res(r) => g.res(&h, r, &es, (hgt, wid), &format!("op{k}")),
            Op::Attn(a) => g.attention(&h, a, (hgt, wid), &format!("op{k}")),
            Op::Down(conv) => {
                let y = g.conv(&h, conv, &format!("op{k}.down"));
                (hgt, wid) = conv.out_size(hgt, wid);
                y
            }
            Op::Up(conv) => {
                if !g.init.iter().any(|t| t.name == "up.scales") {
                    g.init.push(tensor("up.scales", &[4], &[1.0, 1.0, 2.0, 2.0]));
                }
                let u = g.fresh("up");
                g.nodes.push(node_with(
                    "Resize",
                    &[&h, "", "up.scales"],
                    &u,
                    vec![
                        attr_string("mode", "nearest"),
                        attr_string("coordinate_transformation_mode", "asymmetric"),
                        attr_string("nearest_mode", "floor"),
                    ],
                ));
                (hgt, wid) = (2 * hgt, 2 * wid);
                g.conv(&u, conv, &format!("op{k}.up"))
            }
        };
    }
    let n = g.group_norm(&h, &parts.out_norm, (hh, ww), "out.norm");
    let a = g.silu(&n);
    let y = g.conv(&a, &parts.out_conv, "out.conv");
    g.nodes.push(node("Identity", &[&y], "out_sample", &[]));
    OnnxGraph {
        family: "U-Net",
        nodes: g.nodes,
        initializers: g.init,
        inputs,
        output: value_info("out_sample", FLOAT, &[None, Some(cfg.out_channels), Some(hh), Some(ww)]),
    }
}
