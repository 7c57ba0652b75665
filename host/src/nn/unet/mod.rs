//! The U-Net family: a convolutional denoiser on images in the style of DDPM (Ho et al., 2020,
//! appendix B) and improved-diffusion's `UNetModel` (Nichol and Dhariwal, 2021), with VDM's
//! Fourier features of the input (Kingma et al., 2021, appendix C) for likelihood training.
//!
//! - **Embedding.** The sinusoidal embedding of the time `tau` (the core's
//!   [`elbo_core::mlp::time_embedding`], as the MLP's) goes through `Linear(E, 4B)`, SiLU,
//!   `Linear(4B, 4B)`; a class-conditional network adds a learned row of a table of
//!   `classes + 1` (the last is the null class of classifier-free guidance).
//! - **Input.** The image (with its Fourier features, if any) goes through a 3x3 convolution to
//!   `B` channels.
//! - **Down.** Level `l` has `B * mults[l]` channels: `blocks` residual blocks (each followed by
//!   self-attention at the lowest resolution, if asked), then a 3x3 convolution of stride 2 to
//!   the next level. Every block's output is kept for a skip connection.
//! - **Middle.** A residual block, attention (if asked), a residual block.
//! - **Up.** Per level from the lowest: `blocks + 1` residual blocks, each on the concatenation
//!   of the current features and the last kept skip; then nearest-neighbour upsampling and a 3x3
//!   convolution.
//! - **Output.** GroupNorm, SiLU, a 3x3 convolution to `out_channels` (zero at initialisation).
//!
//! A residual block is `skip(x) + conv2(SiLU(GN(conv1(SiLU(GN(x))) + Linear(SiLU(emb)))))`,
//! with `conv2` zero at initialisation and `skip` a 1x1 convolution where the channels change.
//!
//! Images come in and go out as the data's rows (`C x H x W`, row-major); inside, a chunk of
//! [`CHUNK`] examples is held channels-last (see [`layers`]).
//!
//! **Threads.** Chunks run in parallel, and within a chunk each 3x3 convolution (forward, data
//! and weight gradient) is split into tasks on the same rayon pool, so that a thread that has
//! finished its chunk takes over part of another's, and a batch of one chunk (sampling a few
//! images) uses every thread. No result depends on who runs what: each output of a
//! convolution is one sum in a fixed order, and the chunks' gradients are added in chunk order.

mod direct;
pub mod layers;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use layers::{Attention, AttentionCache, Conv, GroupNorm, GroupNormCache, Linear, silu, silu_backward};

use super::Grads;

/// Examples per chunk of the data-parallel passes (fixed: results do not depend on the thread
/// count).
pub const CHUNK: usize = 32;

/// The architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Image channels `C`.
    pub channels: usize,
    /// Image height `H`.
    pub height: usize,
    /// Image width `W`.
    pub width: usize,
    /// Channels of the first level `B`.
    pub base: usize,
    /// Channel multiplier of each level (their number is the number of resolutions).
    pub mults: Vec<usize>,
    /// Residual blocks per level on the way down.
    pub blocks: usize,
    /// Self-attention at the lowest resolution (and in the middle).
    pub attention: bool,
    /// GroupNorm groups (dividing `B`).
    pub groups: usize,
    /// Sinusoidal time-embedding size `E` (even).
    pub embed: usize,
    /// Classes (0: unconditional).
    pub classes: usize,
    /// Output channels (`C`, or `2C` with learned variance).
    pub out_channels: usize,
    /// Exponents `e` of VDM's Fourier features `sin/cos(2^e 2 pi x)` (empty: none).
    #[serde(default)]
    pub fourier: Vec<i32>,
}

/// Limits against absurd sizes (in flags and files).
const MAX_SIDE: usize = 1024;
const MAX_CHANNELS: usize = 4096;

impl UNetConfig {
    /// Input values per example (`C H W`).
    pub fn dim(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Output values per example.
    pub fn out(&self) -> usize {
        self.out_channels * self.height * self.width
    }

    /// Checks every size before anything is laid out.
    pub fn validate(&self) -> Result<(), String> {
        let small = |v: usize, max: usize| (1..=max).contains(&v);
        if !(small(self.channels, 64) && small(self.out_channels, 128)) {
            return Err("unet: channels must be 1..=64 and out_channels 1..=128".into());
        }
        if !(small(self.height, MAX_SIDE) && small(self.width, MAX_SIDE)) {
            return Err(format!("unet: height and width must be 1..={MAX_SIDE}"));
        }
        if !small(self.mults.len(), 6) || self.mults.iter().any(|&m| !small(m, 16)) {
            return Err("unet: mults must have 1 to 6 levels, each 1..=16".into());
        }
        if !small(self.base, MAX_CHANNELS) || self.base * self.mults.iter().max().unwrap_or(&1) > MAX_CHANNELS {
            return Err(format!("unet: base x mult must be 1..={MAX_CHANNELS} channels"));
        }
        if !small(self.blocks, 8) {
            return Err("unet: blocks must be 1..=8".into());
        }
        if self.groups == 0 || !self.base.is_multiple_of(self.groups) {
            return Err(format!("unet: groups ({}) must divide the base channels ({})", self.groups, self.base));
        }
        if self.embed < 2 || !self.embed.is_multiple_of(2) || self.embed > MAX_CHANNELS {
            return Err("unet: embed must be an even number >= 2".into());
        }
        let down = 1usize << (self.mults.len() - 1);
        if !(self.height.is_multiple_of(down) && self.width.is_multiple_of(down)) {
            return Err(format!(
                "unet: {} levels halve the image {} times: height and width ({} x {}) must be multiples of {down}",
                self.mults.len(),
                self.mults.len() - 1,
                self.height,
                self.width
            ));
        }
        if self.fourier.len() > 8 || self.fourier.iter().any(|e| !(-8..=12).contains(e)) {
            return Err("unet: at most 8 Fourier exponents, each in -8..=12".into());
        }
        if self.classes > 1 << 20 {
            return Err("unet: classes is above the limit of 2^20".into());
        }
        Ok(())
    }

    /// The number of parameters (the sizes must have passed [`UNetConfig::validate`]).
    pub fn n_params(&self) -> usize {
        Layout::new(self).n
    }
}

/// How a parameter tensor starts.
#[derive(Debug, Clone, Copy)]
enum Init {
    Zero,
    One,
    /// Uniform on `[-bound, bound]`.
    Uniform(f32),
    /// Standard normal.
    Normal,
}

/// A residual block.
#[derive(Debug, Clone)]
pub(crate) struct ResBlock {
    pub(crate) norm1: GroupNorm,
    pub(crate) conv1: Conv,
    pub(crate) emb: Linear,
    pub(crate) norm2: GroupNorm,
    pub(crate) conv2: Conv,
    pub(crate) skip: Option<Conv>,
}

/// One step of the network between the input convolution and the output head.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Res(ResBlock),
    Attn(Attention),
    /// A 3x3 convolution of stride 2.
    Down(Conv),
    /// Nearest-neighbour upsampling, then a 3x3 convolution.
    Up(Conv),
    /// Keep the current features for a skip connection.
    Push,
    /// Concatenate the last kept features after the current ones.
    Concat,
}

/// The parameters' layout, built in one pass over the architecture.
struct Layout {
    n: usize,
    tensors: Vec<(String, Vec<usize>, usize, Init)>,
}

impl Layout {
    fn new(cfg: &UNetConfig) -> Self {
        let mut l = Layout { n: 0, tensors: Vec::new() };
        l.build(cfg);
        l
    }

    fn take(&mut self, name: String, shape: Vec<usize>, init: Init) -> usize {
        let o = self.n;
        self.n += shape.iter().product::<usize>();
        self.tensors.push((name, shape, o, init));
        o
    }

    /// A convolution; `zero`: zero weights at initialisation (improved-diffusion's `zero_module`),
    /// otherwise PyTorch's default bound `1 / sqrt(fan_in)`.
    fn conv(&mut self, name: &str, cin: usize, cout: usize, k: usize, stride: usize, zero: bool) -> Conv {
        let bound = 1.0 / ((k * k * cin) as f32).sqrt();
        let weight = self.take(
            format!("{name}.weight"),
            vec![k, k, cin, cout],
            if zero { Init::Zero } else { Init::Uniform(bound) },
        );
        let bias = self.take(format!("{name}.bias"), vec![cout], Init::Zero);
        Conv { cin, cout, k, stride, weight, bias }
    }

    fn linear(&mut self, name: &str, n_in: usize, n_out: usize) -> Linear {
        let bound = 1.0 / (n_in as f32).sqrt();
        let weight = self.take(format!("{name}.weight"), vec![n_in, n_out], Init::Uniform(bound));
        let bias = self.take(format!("{name}.bias"), vec![n_out], Init::Zero);
        Linear { n_in, n_out, weight, bias }
    }

    fn norm(&mut self, name: &str, c: usize, groups: usize) -> GroupNorm {
        let gamma = self.take(format!("{name}.weight"), vec![c], Init::One);
        let beta = self.take(format!("{name}.bias"), vec![c], Init::Zero);
        GroupNorm { c, groups, gamma, beta }
    }

    fn res(&mut self, name: &str, cin: usize, cout: usize, cfg: &UNetConfig) -> ResBlock {
        let temb = 4 * cfg.base;
        ResBlock {
            norm1: self.norm(&format!("{name}.norm1"), cin, cfg.groups),
            conv1: self.conv(&format!("{name}.conv1"), cin, cout, 3, 1, false),
            emb: self.linear(&format!("{name}.emb"), temb, cout),
            norm2: self.norm(&format!("{name}.norm2"), cout, cfg.groups),
            conv2: self.conv(&format!("{name}.conv2"), cout, cout, 3, 1, true),
            skip: (cin != cout).then(|| self.conv(&format!("{name}.skip"), cin, cout, 1, 1, false)),
        }
    }

    fn attn(&mut self, name: &str, c: usize, groups: usize) -> Attention {
        Attention {
            c,
            norm: self.norm(&format!("{name}.norm"), c, groups),
            qkv: self.conv(&format!("{name}.qkv"), c, 3 * c, 1, 1, false),
            proj: self.conv(&format!("{name}.proj"), c, c, 1, 1, true),
        }
    }

    /// Lays out every tensor in the order of the forward pass; returns the network's parts.
    fn build(&mut self, cfg: &UNetConfig) -> Parts {
        let (b, e) = (cfg.base, cfg.embed);
        let temb = [self.linear("time.0", e, 4 * b), self.linear("time.1", 4 * b, 4 * b)];
        let class_table =
            (cfg.classes > 0).then(|| self.take("class_embedding".into(), vec![cfg.classes + 1, 4 * b], Init::Normal));
        let cin = cfg.channels * (1 + 2 * cfg.fourier.len());
        let input = self.conv("input", cin, b, 3, 1, false);
        let mut ops = vec![Op::Push];
        let mut skips = vec![b];
        let mut ch = b;
        let last = cfg.mults.len() - 1;
        for (level, &m) in cfg.mults.iter().enumerate() {
            for i in 0..cfg.blocks {
                ops.push(Op::Res(self.res(&format!("down.{level}.{i}"), ch, m * b, cfg)));
                ch = m * b;
                if cfg.attention && level == last {
                    ops.push(Op::Attn(self.attn(&format!("down.{level}.{i}.attn"), ch, cfg.groups)));
                }
                ops.push(Op::Push);
                skips.push(ch);
            }
            if level != last {
                ops.push(Op::Down(self.conv(&format!("down.{level}.downsample"), ch, ch, 3, 2, false)));
                ops.push(Op::Push);
                skips.push(ch);
            }
        }
        ops.push(Op::Res(self.res("middle.0", ch, ch, cfg)));
        if cfg.attention {
            ops.push(Op::Attn(self.attn("middle.attn", ch, cfg.groups)));
        }
        ops.push(Op::Res(self.res("middle.1", ch, ch, cfg)));
        for (level, &m) in cfg.mults.iter().enumerate().rev() {
            for i in 0..=cfg.blocks {
                let s = skips.pop().expect("a skip per up block");
                ops.push(Op::Concat);
                ops.push(Op::Res(self.res(&format!("up.{level}.{i}"), ch + s, m * b, cfg)));
                ch = m * b;
                if cfg.attention && level == last {
                    ops.push(Op::Attn(self.attn(&format!("up.{level}.{i}.attn"), ch, cfg.groups)));
                }
            }
            if level != 0 {
                ops.push(Op::Up(self.conv(&format!("up.{level}.upsample"), ch, ch, 3, 1, false)));
            }
        }
        let out_norm = self.norm("out.norm", ch, cfg.groups);
        let out_conv = self.conv("out.conv", ch, cfg.out_channels, 3, 1, true);
        Parts { temb, class_table, input, ops, out_norm, out_conv }
    }
}

/// The layers of a network.
#[derive(Debug, Clone)]
pub(crate) struct Parts {
    pub(crate) temb: [Linear; 2],
    pub(crate) class_table: Option<usize>,
    pub(crate) input: Conv,
    pub(crate) ops: Vec<Op>,
    pub(crate) out_norm: GroupNorm,
    pub(crate) out_conv: Conv,
}

/// The network: configuration, parameter layout and layers.
#[derive(Debug, Clone)]
pub struct UNet {
    cfg: UNetConfig,
    n_params: usize,
    tensors: Vec<(String, Vec<usize>, usize, Init)>,
    parts: Parts,
    /// The chunks' gradient buffers, kept between calls: a fresh allocation of this size
    /// costs a page fault per 4 KiB at its first write, which is most of a step's time.
    scratch: std::sync::Arc<std::sync::Mutex<Vec<f32>>>,
}

/// A chunk's features: values (`n x h*w x c`) and their spatial size.
struct Features {
    v: Vec<f32>,
    h: usize,
    w: usize,
    c: usize,
}

/// What backward needs of a residual block.
struct ResCache {
    x: Vec<f32>,
    norm1: GroupNormCache,
    y1: Vec<f32>,
    a1: Vec<f32>,
    norm2: GroupNormCache,
    y2: Vec<f32>,
    a2: Vec<f32>,
}

/// What backward needs of an op (with the op's input size).
enum OpCache {
    Res(ResCache),
    Attn(AttentionCache),
    Down(Vec<f32>),
    Up(Vec<f32>),
    /// The channels of the current features and of the skip.
    Concat(usize, usize),
    Push,
}

/// The activations of a chunk's forward pass that its backward pass reads.
struct Tape {
    /// The images channels-last (for the Fourier features' gradient).
    x: Vec<f32>,
    /// The input convolution's input.
    feat: Vec<f32>,
    te: Vec<f32>,
    l1: Vec<f32>,
    s1: Vec<f32>,
    emb: Vec<f32>,
    es: Vec<f32>,
    ops: Vec<(OpCache, usize, usize, usize)>,
    out_norm: GroupNormCache,
    out_y: Vec<f32>,
    out_a: Vec<f32>,
}

impl ResBlock {
    fn forward(&self, p: &[f32], x: Vec<f32>, n: usize, h: usize, w: usize, es: &[f32]) -> (Vec<f32>, ResCache) {
        let (y1, norm1) = self.norm1.forward(p, &x, n);
        let a1 = silu(&y1);
        let mut h1 = self.conv1.forward(p, &a1, n, h, w);
        self.add_embedding(p, es, &mut h1, h * w);
        let (y2, norm2) = self.norm2.forward(p, &h1, n);
        let a2 = silu(&y2);
        let mut out = self.conv2.forward(p, &a2, n, h, w);
        match &self.skip {
            Some(s) => {
                let sk = s.forward(p, &x, n, h, w);
                out.iter_mut().zip(&sk).for_each(|(a, &v)| *a += v);
            }
            None => out.iter_mut().zip(&x).for_each(|(a, &v)| *a += v),
        }
        (out, ResCache { x, norm1, y1, a1, norm2, y2, a2 })
    }

    /// [`ResBlock::forward`] for inference: the same arithmetic (so the same bits) without the
    /// cache, GroupNorm and SiLU fused, reading `x` in place.
    fn infer(&self, p: &[f32], x: &[f32], n: usize, h: usize, w: usize, es: &[f32]) -> Vec<f32> {
        let a1 = self.norm1.forward_silu_padded(p, x, n, h, w);
        let mut h1 = self.conv1.forward_padded(p, &a1, n, h, w);
        drop(a1);
        self.add_embedding(p, es, &mut h1, h * w);
        let a2 = self.norm2.forward_silu_padded(p, &h1, n, h, w);
        drop(h1);
        let mut out = self.conv2.forward_padded(p, &a2, n, h, w);
        drop(a2);
        match &self.skip {
            Some(s) => {
                let sk = s.forward(p, x, n, h, w);
                out.iter_mut().zip(&sk).for_each(|(a, &v)| *a += v);
            }
            None => out.iter_mut().zip(x).for_each(|(a, &v)| *a += v),
        }
        out
    }

    /// Adds each example's projection of `SiLU(emb)` to every one of its `pixels` (the time,
    /// and class, embedding in every block).
    fn add_embedding(&self, p: &[f32], es: &[f32], h1: &mut [f32], pixels: usize) {
        let eo = self.emb.forward(p, es);
        let co = self.conv1.cout;
        for (b, img) in h1.chunks_exact_mut(pixels * co).enumerate() {
            let e = &eo[b * co..(b + 1) * co];
            for px in img.chunks_exact_mut(co) {
                px.iter_mut().zip(e).for_each(|(v, &a)| *v += a);
            }
        }
    }

    /// Backward from `dy`; adds to `des` (the gradient of `SiLU(emb)`) and returns `dx`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        c: &ResCache,
        n: usize,
        h: usize,
        w: usize,
        es: &[f32],
        des: &mut [f32],
        dy: &[f32],
    ) -> Vec<f32> {
        let mut dx = vec![0.0f32; c.x.len()];
        match &self.skip {
            Some(s) => s.backward(p, g, &c.x, n, h, w, dy, Some(&mut dx)),
            None => dx.iter_mut().zip(dy).for_each(|(a, &v)| *a += v),
        }
        let mut da2 = vec![0.0f32; c.a2.len()];
        self.conv2.backward(p, g, &c.a2, n, h, w, dy, Some(&mut da2));
        silu_backward(&c.y2, &mut da2);
        let dh1 = self.norm2.backward(p, g, &c.norm2, n, &da2);
        let co = self.conv1.cout;
        let mut deo = vec![0.0f32; n * co];
        for (b, img) in dh1.chunks_exact(h * w * co).enumerate() {
            let d = &mut deo[b * co..(b + 1) * co];
            for px in img.chunks_exact(co) {
                d.iter_mut().zip(px).for_each(|(a, &v)| *a += v);
            }
        }
        self.emb.backward(p, g, es, &deo, des);
        let mut da1 = vec![0.0f32; c.a1.len()];
        self.conv1.backward(p, g, &c.a1, n, h, w, &dh1, Some(&mut da1));
        silu_backward(&c.y1, &mut da1);
        let d = self.norm1.backward(p, g, &c.norm1, n, &da1);
        dx.iter_mut().zip(&d).for_each(|(a, &v)| *a += v);
        dx
    }
}

impl UNet {
    /// Lays out the parameters of `cfg` (which must have passed [`UNetConfig::validate`]).
    pub fn new(cfg: UNetConfig) -> Self {
        let mut l = Layout { n: 0, tensors: Vec::new() };
        let parts = l.build(&cfg);
        UNet { cfg, n_params: l.n, tensors: l.tensors, parts, scratch: Default::default() }
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// The layers (for the ONNX export).
    pub(crate) fn parts(&self) -> &Parts {
        &self.parts
    }

    /// `x` (`n x C x H x W`) channels-last (`n x H*W x C`).
    fn to_channels_last(&self, x: &[f32], c: usize) -> Vec<f32> {
        let hw = self.cfg.height * self.cfg.width;
        let mut y = vec![0.0f32; x.len()];
        for (img, out) in x.chunks_exact(c * hw).zip(y.chunks_exact_mut(c * hw)) {
            for ch in 0..c {
                for px in 0..hw {
                    out[px * c + ch] = img[ch * hw + px];
                }
            }
        }
        y
    }

    /// The inverse of [`UNet::to_channels_last`].
    fn to_channels_first(&self, y: &[f32], c: usize, out: &mut [f32]) {
        let hw = self.cfg.height * self.cfg.width;
        for (img, o) in y.chunks_exact(c * hw).zip(out.chunks_exact_mut(c * hw)) {
            for px in 0..hw {
                for ch in 0..c {
                    o[ch * hw + px] = img[px * c + ch];
                }
            }
        }
    }

    /// The time (and class) embedding of a chunk: the time features, the first linear layer's
    /// output and its SiLU, the embedding, and its SiLU (what every block reads).
    #[allow(clippy::type_complexity)]
    fn embed(
        &self,
        p: &[f32],
        tau: &[f32],
        labels: Option<&[u32]>,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let (cfg, parts) = (&self.cfg, &self.parts);
        let e = cfg.embed;
        let mut te = vec![0.0f32; tau.len() * e];
        for (row, &t) in te.chunks_exact_mut(e).zip(tau) {
            elbo_core::mlp::time_embedding(t, row);
        }
        let l1 = parts.temb[0].forward(p, &te);
        let s1 = silu(&l1);
        let mut emb = parts.temb[1].forward(p, &s1);
        if let (Some(o), Some(labels)) = (parts.class_table, labels) {
            let w = 4 * cfg.base;
            for (row, &c) in emb.chunks_exact_mut(w).zip(labels) {
                let r = &p[o + c as usize * w..o + (c as usize + 1) * w];
                row.iter_mut().zip(r).for_each(|(v, &a)| *v += a);
            }
        }
        let es = silu(&emb);
        (te, l1, s1, emb, es)
    }

    /// The input convolution's input: the images channels-last, and with VDM's Fourier
    /// features where configured.
    fn features(&self, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let cfg = &self.cfg;
        let xl = self.to_channels_last(x, cfg.channels);
        let feat = if cfg.fourier.is_empty() { xl.clone() } else { layers::fourier(&xl, cfg.channels, &cfg.fourier) };
        (xl, feat)
    }

    /// The concatenation, pixel by pixel, of `a` (`c` channels) and `b` (`cs`).
    fn concat(a: &[f32], c: usize, b: &[f32], cs: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(a.len() + b.len());
        for (x, y) in a.chunks_exact(c).zip(b.chunks_exact(cs)) {
            v.extend_from_slice(x);
            v.extend_from_slice(y);
        }
        v
    }

    /// The forward pass of one chunk for inference: [`UNet::forward_chunk`]'s arithmetic (the
    /// same bits, tested) without its tape, a kept skip moved rather than copied.
    fn infer_chunk(&self, p: &[f32], x: &[f32], tau: &[f32], labels: Option<&[u32]>) -> Vec<f32> {
        let (cfg, parts) = (&self.cfg, &self.parts);
        let n = tau.len();
        let (hh, ww) = (cfg.height, cfg.width);
        let (_, _, _, _, es) = self.embed(p, tau, labels);
        let (_, feat) = self.features(x);
        let mut f = Features { v: parts.input.forward(p, &feat, n, hh, ww), h: hh, w: ww, c: cfg.base };
        drop(feat);
        let mut stack: Vec<Features> = Vec::new();
        // after a Push, the current features are the top of the stack until the next op
        let mut pushed = false;
        for op in &parts.ops {
            let (h, w, c) = (f.h, f.w, f.c);
            let cur: &[f32] = if pushed { &stack.last().expect("pushed").v } else { &f.v };
            let next = match op {
                Op::Push => {
                    if !pushed {
                        stack.push(Features { v: std::mem::take(&mut f.v), h, w, c });
                        pushed = true;
                    } else {
                        let v = cur.to_vec();
                        stack.push(Features { v, h, w, c });
                    }
                    continue;
                }
                Op::Concat => {
                    let s = stack.pop().expect("a kept skip per concatenation");
                    // (the current features themselves if they were just kept)
                    let cur: &[f32] = if pushed { &s.v } else { &f.v };
                    Features { v: Self::concat(cur, c, &s.v, s.c), h, w, c: c + s.c }
                }
                Op::Res(r) => Features { v: r.infer(p, cur, n, h, w, &es), h, w, c: r.conv1.cout },
                Op::Attn(a) => Features { v: a.forward(p, cur, n, h, w).0, h, w, c },
                Op::Down(conv) => {
                    let (ho, wo) = conv.out_size(h, w);
                    Features { v: conv.forward(p, cur, n, h, w), h: ho, w: wo, c }
                }
                Op::Up(conv) => {
                    let up = layers::upsample(cur, n, h, w, c);
                    Features { v: conv.forward(p, &up, n, 2 * h, 2 * w), h: 2 * h, w: 2 * w, c }
                }
            };
            f = next;
            pushed = false;
        }
        let out_a = parts.out_norm.forward_silu_padded(p, &f.v, n, hh, ww);
        drop(f);
        let y = parts.out_conv.forward_padded(p, &out_a, n, hh, ww);
        let mut out = vec![0.0f32; n * cfg.out()];
        self.to_channels_first(&y, cfg.out_channels, &mut out);
        out
    }

    /// The forward pass of one chunk for training: the output (`n x out`, the data's layout)
    /// and the tape for backward.
    fn forward_chunk(&self, p: &[f32], x: &[f32], tau: &[f32], labels: Option<&[u32]>) -> (Vec<f32>, Tape) {
        let cfg = &self.cfg;
        let parts = &self.parts;
        let n = tau.len();
        let (hh, ww) = (cfg.height, cfg.width);
        let (te, l1, s1, emb, es) = self.embed(p, tau, labels);
        let (xl, feat) = self.features(x);
        let mut f = Features { v: parts.input.forward(p, &feat, n, hh, ww), h: hh, w: ww, c: cfg.base };
        let mut stack: Vec<Features> = Vec::new();
        let mut caches = Vec::with_capacity(parts.ops.len());
        for op in &parts.ops {
            let (h, w, c) = (f.h, f.w, f.c);
            let cache = match op {
                Op::Push => {
                    stack.push(Features { v: f.v.clone(), h, w, c });
                    OpCache::Push
                }
                Op::Concat => {
                    let s = stack.pop().expect("a kept skip per concatenation");
                    f = Features { v: Self::concat(&f.v, c, &s.v, s.c), h, w, c: c + s.c };
                    OpCache::Concat(c, s.c)
                }
                Op::Res(r) => {
                    let x = std::mem::take(&mut f.v);
                    let (y, rc) = r.forward(p, x, n, h, w, &es);
                    f = Features { v: y, h, w, c: r.conv1.cout };
                    OpCache::Res(rc)
                }
                Op::Attn(a) => {
                    let (y, ac) = a.forward(p, &f.v, n, h, w);
                    f.v = y;
                    OpCache::Attn(ac)
                }
                Op::Down(conv) => {
                    let y = conv.forward(p, &f.v, n, h, w);
                    let (ho, wo) = conv.out_size(h, w);
                    let x = std::mem::replace(&mut f, Features { v: y, h: ho, w: wo, c });
                    OpCache::Down(x.v)
                }
                Op::Up(conv) => {
                    let up = layers::upsample(&f.v, n, h, w, c);
                    let y = conv.forward(p, &up, n, 2 * h, 2 * w);
                    f = Features { v: y, h: 2 * h, w: 2 * w, c };
                    OpCache::Up(up)
                }
            };
            caches.push((cache, h, w, c));
        }
        let (out_y, out_norm) = parts.out_norm.forward(p, &f.v, n);
        let out_a = silu(&out_y);
        let y = parts.out_conv.forward(p, &out_a, n, hh, ww);
        let mut out = vec![0.0f32; n * cfg.out()];
        self.to_channels_first(&y, cfg.out_channels, &mut out);
        let tape = Tape { x: xl, feat, te, l1, s1, emb, es, ops: caches, out_norm, out_y, out_a };
        (out, tape)
    }

    /// The backward pass of one chunk from `dy` (`n x out`, the data's layout): adds the
    /// parameter gradient to `g`; returns the input gradient (`n x dim`) when `want_input`.
    #[allow(clippy::too_many_arguments)]
    fn backward_chunk(
        &self,
        p: &[f32],
        g: &mut [f32],
        tape: Tape,
        labels: Option<&[u32]>,
        n: usize,
        dy: &[f32],
        want_input: bool,
    ) -> Option<Vec<f32>> {
        let cfg = &self.cfg;
        let parts = &self.parts;
        let (hh, ww) = (cfg.height, cfg.width);
        let dyl = self.to_channels_last(dy, cfg.out_channels);
        let mut da = vec![0.0f32; tape.out_a.len()];
        parts.out_conv.backward(p, g, &tape.out_a, n, hh, ww, &dyl, Some(&mut da));
        silu_backward(&tape.out_y, &mut da);
        let mut d = parts.out_norm.backward(p, g, &tape.out_norm, n, &da);
        let mut des = vec![0.0f32; tape.es.len()];
        let mut dstack: Vec<Vec<f32>> = Vec::new();
        for (op, (cache, h, w, c)) in parts.ops.iter().zip(tape.ops).rev() {
            d = match (op, cache) {
                (Op::Push, OpCache::Push) => {
                    let ds = dstack.pop().expect("a skip gradient per kept skip");
                    d.iter_mut().zip(&ds).for_each(|(a, &v)| *a += v);
                    d
                }
                (Op::Concat, OpCache::Concat(c0, cs)) => {
                    let rows = d.len() / (c0 + cs);
                    let (mut a, mut b) = (vec![0.0f32; rows * c0], vec![0.0f32; rows * cs]);
                    for ((src, x), y) in d.chunks_exact(c0 + cs).zip(a.chunks_exact_mut(c0)).zip(b.chunks_exact_mut(cs))
                    {
                        x.copy_from_slice(&src[..c0]);
                        y.copy_from_slice(&src[c0..]);
                    }
                    dstack.push(b);
                    a
                }
                (Op::Res(r), OpCache::Res(rc)) => r.backward(p, g, &rc, n, h, w, &tape.es, &mut des, &d),
                (Op::Attn(a), OpCache::Attn(ac)) => a.backward(p, g, &ac, n, h, w, &d),
                (Op::Down(conv), OpCache::Down(x)) => {
                    let mut dx = vec![0.0f32; x.len()];
                    conv.backward(p, g, &x, n, h, w, &d, Some(&mut dx));
                    dx
                }
                (Op::Up(conv), OpCache::Up(up)) => {
                    let mut dup = vec![0.0f32; up.len()];
                    conv.backward(p, g, &up, n, 2 * h, 2 * w, &d, Some(&mut dup));
                    layers::upsample_backward(&dup, n, h, w, c)
                }
                _ => unreachable!("the tape follows the ops"),
            };
        }
        let mut dfeat = want_input.then(|| vec![0.0f32; tape.feat.len()]);
        parts.input.backward(p, g, &tape.feat, n, hh, ww, &d, dfeat.as_deref_mut());
        // the embedding
        silu_backward(&tape.emb, &mut des);
        if let (Some(o), Some(labels)) = (parts.class_table, labels) {
            let w = 4 * cfg.base;
            for (row, &c) in des.chunks_exact(w).zip(labels) {
                let r = &mut g[o + c as usize * w..o + (c as usize + 1) * w];
                r.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
        }
        let mut ds1 = vec![0.0f32; tape.s1.len()];
        parts.temb[1].backward(p, g, &tape.s1, &des, &mut ds1);
        silu_backward(&tape.l1, &mut ds1);
        let mut dte = vec![0.0f32; tape.te.len()];
        parts.temb[0].backward(p, g, &tape.te, &ds1, &mut dte);
        let dfeat = dfeat?;
        let dxl = if cfg.fourier.is_empty() {
            dfeat
        } else {
            layers::fourier_backward(&tape.x, cfg.channels, &cfg.fourier, &dfeat)
        };
        let mut dx = vec![0.0f32; dxl.len()];
        self.to_channels_first(&dxl, cfg.channels, &mut dx);
        Some(dx)
    }
}

impl crate::network::Network for UNet {
    fn dim(&self) -> usize {
        self.cfg.dim()
    }

    fn out(&self) -> usize {
        self.cfg.out()
    }

    fn classes(&self) -> usize {
        self.cfg.classes
    }

    fn n_params(&self) -> usize {
        self.n_params
    }

    fn tensors(&self) -> Vec<(String, Vec<usize>, usize)> {
        self.tensors.iter().map(|(n, s, o, _)| (n.clone(), s.clone(), *o)).collect()
    }

    /// PyTorch's default initialisation (uniform with bound `1 / sqrt(fan_in)`), zero biases,
    /// zero last convolutions of each residual branch and of the output, GroupNorm's
    /// `gamma = 1`, `beta = 0`, and a standard normal class table.
    fn init(&self, rng: &mut rand_pcg::Pcg32) -> Vec<f32> {
        let mut p = vec![0.0f32; self.n_params];
        for (_, shape, o, init) in &self.tensors {
            let t = &mut p[*o..*o + shape.iter().product::<usize>()];
            match *init {
                Init::Zero => {}
                Init::One => t.fill(1.0),
                Init::Uniform(b) => {
                    t.iter_mut().for_each(|v| *v = (2.0 * elbo_core::rng::uniform_f32(rng) - 1.0) * b);
                }
                Init::Normal => elbo_core::rng::fill_standard_normal(rng, t),
            }
        }
        p
    }

    fn forward(&self, params: &[f32], x: &[f32], tau: &[f32], labels: Option<&[u32]>, out: &mut [f32]) {
        let (d, o) = (self.cfg.dim(), self.cfg.out());
        out.par_chunks_mut(CHUNK * o).enumerate().for_each(|(c, oc)| {
            let r0 = c * CHUNK;
            let rows = oc.len() / o;
            let lab = labels.map(|l| &l[r0..r0 + rows]);
            if rows == CHUNK {
                let y = self.infer_chunk(params, &x[r0 * d..(r0 + rows) * d], &tau[r0..r0 + rows], lab);
                oc.copy_from_slice(&y);
                return;
            }
            // A short chunk is padded to CHUNK rows (copies of its last row): the matrix
            // products' blocking depends on their sizes, so an example's bits would otherwise
            // depend on how many others share its chunk, and a sharded run would differ from
            // the whole one.
            let pad = |v: &[f32], w: usize| -> Vec<f32> {
                let mut p = v.to_vec();
                let last = v[v.len() - w..].to_vec();
                for _ in rows..CHUNK {
                    p.extend_from_slice(&last);
                }
                p
            };
            let (xp, tp) = (pad(&x[r0 * d..(r0 + rows) * d], d), pad(&tau[r0..r0 + rows], 1));
            let lp: Option<Vec<u32>> = lab.map(|l| {
                let mut p = l.to_vec();
                p.resize(CHUNK, l[rows - 1]);
                p
            });
            let y = self.infer_chunk(params, &xp, &tp, lp.as_deref());
            oc.copy_from_slice(&y[..rows * o]);
        });
    }

    fn loss_and_grads(
        &self,
        params: &[f32],
        x: &[f32],
        tau: &[f32],
        labels: Option<&[u32]>,
        want_input: bool,
        loss_grad: crate::network::LossGrad<'_>,
    ) -> Grads {
        let (d, o, np) = (self.cfg.dim(), self.cfg.out(), self.n_params);
        let n = tau.len();
        let n_chunks = n.div_ceil(CHUNK);
        let mut grads = std::mem::take(&mut *self.scratch.lock().unwrap_or_else(|e| e.into_inner()));
        // each chunk zeroes its own gradient, on the thread that then writes it
        grads.resize(n_chunks * np, 0.0);
        let chunks: Vec<(f64, Option<Vec<f32>>)> = grads
            .par_chunks_mut(np.max(1))
            .enumerate()
            .map(|(c, g)| {
                g.fill(0.0);
                let r0 = c * CHUNK;
                let rows = CHUNK.min(n - r0);
                let lab = labels.map(|l| &l[r0..r0 + rows]);
                let (y, tape) = self.forward_chunk(params, &x[r0 * d..(r0 + rows) * d], &tau[r0..r0 + rows], lab);
                let mut dy = vec![0.0f32; rows * o];
                let loss = loss_grad(r0, &y, &mut dy);
                let dx = self.backward_chunk(params, g, tape, lab, rows, &dy, want_input);
                (loss, dx)
            })
            .collect();
        let grad = super::sum_chunk_gradients(&grads, np, n_chunks);
        *self.scratch.lock().unwrap_or_else(|e| e.into_inner()) = grads;
        let mut loss = 0.0;
        let mut input = want_input.then(|| Vec::with_capacity(n * d));
        for (l, dx) in chunks {
            loss += l;
            if let (Some(v), Some(dx)) = (&mut input, dx) {
                v.extend_from_slice(&dx);
            }
        }
        Grads { loss, params: grad, input }
    }

    fn onnx_graph(&self, params: &[f32], time: crate::network::TimeInput) -> Option<crate::network::OnnxGraph> {
        Some(crate::onnx::unet::unet_graph(self, params, time))
    }

    fn device_shape(&self) -> Option<elbo_core::mlp::Shape> {
        None
    }
}

#[cfg(test)]
mod tests;
