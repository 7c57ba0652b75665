"""The PyTorch peer of elbo's U-Net (host/src/nn/unet): the same architecture, layer for
layer, trained with VDM's continuous-time ELBO on the same batch size, for the training
throughput, thread scaling and peak memory rows of benches/RESULTS.md.

    unet.py train --side 8 --levels 17 --threads N --batch 64 --steps S   (digits-sized)
    unet.py train --side 28 --levels 256 --threads N --batch 64 --steps S (MNIST-sized)
    unet.py scaling --side 8 --levels 17 --threads N [--rounds R]        (1 vs N threads, one process)

Architecture (elbo's defaults for the image size; see UNetOptions::config): a sinusoidal time
embedding [cos, sin] of tau = 1000 t, Linear(E, 4B), SiLU, Linear(4B, 4B); VDM's Fourier
features [x, sin(2^e 2 pi x), cos(...)] channel-major; a 3x3 input convolution; per level
`blocks` residual blocks (GroupNorm, SiLU, conv3x3, + Linear(SiLU(emb)), GroupNorm, SiLU,
conv3x3, 1x1 skip where channels change), single-head attention at the lowest resolution,
stride-2 3x3 convolutions down; middle res/attn/res; up with skip concatenation, nearest
upsampling and a 3x3 convolution; GroupNorm, SiLU, conv3x3 out. The loss is VDM's diffusion
term with a linear gamma between two learned end points (elbo learns a monotone network; the
difference in cost is a few scalars), plus the prior and a discrete decoder, as elbo trains it.

`train` prints one JSON object: examples per second (median over steps after a warm-up), the
total parameter count and the peak resident memory (ru_maxrss); it draws random images.

    unet.py bound --data mnist5k --steps S --threads N [--lr 1e-3 --ema-decay 0.999 --times 20]

trains the same network on the training split of a built-in set (read from host/data, split as
host/data/README.md says) with elbo's optimiser settings (AdamW, linear warm-up over 100 steps
then cosine decay to 0, gradient-norm clip 1, the EMA with elbo's warm-up), then reports the
EMA model's held-out bound in bits/dim (mean and standard error over the test split): the
prior, VDM's discrete decoder at one draw of z_0, and the diffusion loss at `--times` levels
stratified in log-SNR (one shift), as `elbo eval` computes it. Its schedule is VDM's linear
gamma with learned end points; elbo's learned schedule also learns a monotone shape, which
changes only the variance of the training loss (VDM eq. 12), not the bound's value.
"""

import argparse
import gzip
import json
import os
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def time_embedding(tau, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = tau[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class Res(nn.Module):
    def __init__(self, cin, cout, temb, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, es):
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(es)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.skip(x) if self.skip is not None else x) + h


class Attn(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3 * c, h * w).chunk(3, dim=1)
        a = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)
        return x + self.proj((v @ a.transpose(1, 2)).reshape(n, c, h, w))


class UNet(nn.Module):
    def __init__(self, channels, base, mults, blocks, attention, groups, embed, fourier):
        super().__init__()
        self.embed, self.fourier = embed, fourier
        temb = 4 * base
        self.time = nn.Sequential(nn.Linear(embed, temb), nn.SiLU(), nn.Linear(temb, temb))
        cin = channels * (1 + 2 * len(fourier))
        self.input = nn.Conv2d(cin, base, 3, padding=1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        skips, ch, last = [base], base, len(mults) - 1
        self.plan_down, self.plan_up = [], []
        for level, m in enumerate(mults):
            for _ in range(blocks):
                self.down.append(Res(ch, m * base, temb, groups))
                ch = m * base
                self.plan_down.append(("res", len(self.down) - 1))
                if attention and level == last:
                    self.down.append(Attn(ch, groups))
                    self.plan_down.append(("attn", len(self.down) - 1))
                self.plan_down.append(("push", None))
                skips.append(ch)
            if level != last:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                self.plan_down.append(("conv", len(self.down) - 1))
                self.plan_down.append(("push", None))
                skips.append(ch)
        self.mid = nn.ModuleList([Res(ch, ch, temb, groups)] + ([Attn(ch, groups)] if attention else []) + [Res(ch, ch, temb, groups)])
        for level, m in reversed(list(enumerate(mults))):
            for _ in range(blocks + 1):
                s = skips.pop()
                self.up.append(Res(ch + s, m * base, temb, groups))
                ch = m * base
                self.plan_up.append(("cat_res", len(self.up) - 1))
                if attention and level == last:
                    self.up.append(Attn(ch, groups))
                    self.plan_up.append(("attn", len(self.up) - 1))
            if level != 0:
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))
                self.plan_up.append(("upsample", len(self.up) - 1))
        self.out_norm = nn.GroupNorm(groups, ch)
        self.out = nn.Conv2d(ch, channels, 3, padding=1)

    def forward(self, x, tau):
        es = F.silu(self.time(time_embedding(tau, self.embed)))
        if self.fourier:
            w = torch.tensor([2.0 ** e * 2 * math.pi for e in self.fourier])
            a = (x[:, :, None] * w[None, None, :, None, None]).flatten(1, 2)
            x = torch.cat([x, torch.sin(a), torch.cos(a)], dim=1)
        h = self.input(x)
        stack = [h]
        for kind, i in self.plan_down:
            if kind == "res":
                h = self.down[i](h, es)
            elif kind == "attn":
                h = self.down[i](h)
            elif kind == "conv":
                h = self.down[i](h)
            else:
                stack.append(h)
        for m in self.mid:
            h = m(h, es) if isinstance(m, Res) else m(h)
        for kind, i in self.plan_up:
            if kind == "cat_res":
                h = self.up[i](torch.cat([h, stack.pop()], dim=1), es)
            elif kind == "attn":
                h = self.up[i](h)
            else:
                h = self.up[i](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))


def defaults(side, levels):
    """elbo's UNetOptions::config for a square image of `side` with `levels` grey levels."""
    n, s = 1, side
    while n < 3 and s % 2 == 0 and s >= 8 and side % (1 << n) == 0:
        s //= 2
        n += 1
    e = round(math.log2((levels - 1) / 2))
    return dict(base=64 if side * side <= 256 else 32, mults=[1, 2, 2][:n], fourier=[e - 1, e])


def vdm_loss(model, g_ends, x, k):
    """VDM's bound per dimension, averaged over the batch: the diffusion loss at one uniform time
    with a linear gamma between the learned end points, the prior KL(q(z_1 | x) || N(0, 1)), and
    the discrete decoder over k levels at one draw of z_0."""
    t = torch.rand(x.shape[0])
    g0, g1 = g_ends[0], g_ends[1]
    gamma = g0 + (g1 - g0) * t
    alpha, sigma = torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()
    eps = torch.randn_like(x)
    z = alpha[:, None, None, None] * x + sigma[:, None, None, None] * eps
    eps_hat = model(z, 1000.0 * t)
    diffusion = 0.5 * (g1 - g0) * ((eps - eps_hat) ** 2).flatten(1).sum(1)
    return (diffusion + prior_kl(x, g1) + decoder_nll(x, g0, torch.randn_like(x), k)).mean() / x[0].numel()


def trainer(a):
    """The model, its optimiser and random images of the size; returns a function that takes
    one training step and returns its wall time."""
    torch.manual_seed(0)
    d = defaults(a.side, a.levels)
    model = UNet(1, d["base"], d["mults"], 2, True, 8, 32, d["fourier"])
    g_ends = nn.Parameter(torch.tensor([-13.3, 5.0]))  # gamma(0), gamma(1)
    opt = torch.optim.AdamW(list(model.parameters()) + [g_ends], lr=1e-3, weight_decay=0.0)
    k = a.levels
    x_all = (torch.randint(0, k, (4096, 1, a.side, a.side)).float() * (2.0 / (k - 1)) - 1.0)

    def step():
        t0 = time.perf_counter()
        x = x_all[torch.randint(0, len(x_all), (a.batch,))]
        loss = vdm_loss(model, g_ends, x, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + [g_ends], 1.0)
        opt.step()
        return time.perf_counter() - t0

    return model, step


def scaling(a):
    """Thread scaling measured in one process, as elbo's `measure unet-scaling`: blocks of 4
    steps on one thread and on `--threads` (torch.set_num_threads), alternating for `--rounds`
    rounds, the first step of a block not timed; the median over rounds of the ratio of the
    blocks' median step times."""
    _, step = trainer(a)

    def block(n):
        torch.set_num_threads(n)
        step()
        return statistics.median(step() for _ in range(3))

    block(a.threads)
    t1, tn, ratios = [], [], []
    for _ in range(a.rounds):
        x, y = block(1), block(a.threads)
        t1.append(x)
        tn.append(y)
        ratios.append(x / y)
    print(json.dumps({
        "scaling": statistics.median(ratios), "ratios": sorted(ratios), "threads": a.threads,
        "examples_per_s_1": a.batch / statistics.median(t1), "examples_per_s_n": a.batch / statistics.median(tn),
    }))


def train(a):
    torch.set_num_threads(a.threads)
    model, step = trainer(a)
    times = [step() for _ in range(a.steps)]
    warm = times[len(times) // 5:]
    print(json.dumps({
        "examples_per_s": a.batch / statistics.median(warm),
        "params": sum(p.numel() for p in model.parameters()),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": a.threads,
        "batch": a.batch,
        "side": a.side,
    }))


HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "host", "data")


def load(name):
    """(train, test) images in [-1, 1] of a built-in set, split as host/data/README.md says."""
    if name == "mnist5k":
        rows = [list(map(int, l.split(","))) for l in gzip.open(os.path.join(DATA, "mnist_5k.csv.gz"), "rt")]
        side, top = 28, 255
        train, test = [], []
        for c in range(10):
            of_c = [r for r in rows if r[-1] == c]
            train += of_c[:400]
            test += of_c[400:]
    elif name == "digits":
        rows = [list(map(int, l.split(","))) for l in gzip.open(os.path.join(DATA, "digits.csv.gz"), "rt")]
        side, top = 8, 16
        held = [int(l) for l in open(os.path.join(DATA, "digits_test_index.txt")) if l.strip()]
        hs = set(held)
        train = [r for i, r in enumerate(rows) if i not in hs]
        test = [rows[i] for i in held]
    else:
        raise SystemExit(f"--data: digits or mnist5k, not {name!r}")

    def images(rs):
        return torch.tensor([r[:-1] for r in rs], dtype=torch.float32).reshape(-1, 1, side, side) * (2.0 / top) - 1.0

    return images(train), images(test), side, top + 1


def decoder_nll(x, g0, eps, k):
    """VDM's discrete decoder -log p(x | z_0) per image (nats), z_0 = alpha_0 x + sigma_0 eps,
    the softmax over all k levels of -(z_0 / alpha_0 - level)^2 / (2 sigma_0^2 / alpha_0^2)."""
    levels = torch.arange(k, dtype=torch.float32) * (2.0 / (k - 1)) - 1.0
    s0 = torch.exp(0.5 * g0)
    u = (x + s0 * eps)[..., None]
    logits = -0.5 * ((u - levels) / s0) ** 2
    j = torch.round((x + 1) * (k - 1) / 2).long()[..., None]
    return -(torch.log_softmax(logits, -1).gather(-1, j)).flatten(1).sum(1)


def prior_kl(x, g1):
    a1, s1 = torch.sigmoid(-g1), torch.sigmoid(g1)
    return 0.5 * (a1 * x * x + s1 - torch.log(s1) - 1).flatten(1).sum(1)


def bound(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train_x, test_x, side, k = load(a.data)
    d = defaults(side, k)
    model = UNet(1, d["base"], d["mults"], 2, True, 8, 32, d["fourier"])
    g_ends = nn.Parameter(torch.tensor([-13.3, 5.0]))  # gamma(0), gamma(1)
    params = list(model.parameters()) + [g_ends]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    warm = min(100, a.steps)

    def lr_at(step):  # 1-based, elbo's learning_rate
        if step <= warm:
            return a.lr * step / max(warm, 1)
        prog = (step - warm) / max(a.steps - warm, 1)
        return a.lr * 0.5 * (1.0 + math.cos(math.pi * min(prog, 1.0)))

    ema = [p.detach().clone() for p in params]
    start = time.perf_counter()
    model.train()
    for step in range(1, a.steps + 1):
        x = train_x[torch.randint(0, len(train_x), (a.batch,))]
        loss = vdm_loss(model, g_ends, x, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.step()
        decay = min(a.ema_decay, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
    train_s = time.perf_counter() - start
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
        g0, g1 = float(g_ends[0]), float(g_ends[1])
        per = prior_kl(test_x, torch.tensor(g1)) + decoder_nll(test_x, torch.tensor(g0), torch.randn_like(test_x), k)
        u = float(torch.rand(()))
        diff = torch.zeros(len(test_x))
        for j in range(a.times):
            # stratified in log-SNR lambda = -gamma, from lambda_max = -g0 to lambda_min = -g1
            gamma = g0 + (j + u) / a.times * (g1 - g0)
            t = (gamma - g0) / (g1 - g0)
            al, sg = math.sqrt(1 / (1 + math.exp(gamma))), math.sqrt(1 / (1 + math.exp(-gamma)))
            for lo in range(0, len(test_x), 250):
                x = test_x[lo:lo + 250]
                eps = torch.randn_like(x)
                eps_hat = model(al * x + sg * eps, torch.full((len(x),), 1000.0 * t))
                diff[lo:lo + 250] += 0.5 * (g1 - g0) / a.times * ((eps - eps_hat) ** 2).flatten(1).sum(1)
        bpd = (per + diff) / (test_x[0].numel() * math.log(2.0))
    print(json.dumps({
        "data": a.data, "steps": a.steps, "batch": a.batch, "threads": a.threads, "train_s": train_s,
        "bpd": float(bpd.mean()), "bpd_se": float(bpd.std() / math.sqrt(len(bpd))),
        "gamma_0": g0, "gamma_1": g1, "test_images": len(test_x),
    }))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t, c = sub.add_parser("train"), sub.add_parser("scaling")
    for q in (t, c):
        q.add_argument("--side", type=int, default=8)
        q.add_argument("--levels", type=int, default=17)
        q.add_argument("--threads", type=int, default=2)
        q.add_argument("--batch", type=int, default=64)
    t.add_argument("--steps", type=int, default=30)
    c.add_argument("--rounds", type=int, default=8)
    b = sub.add_parser("bound")
    b.add_argument("--data", default="mnist5k")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--steps", type=int, required=True)
    b.add_argument("--lr", type=float, default=1e-3)
    b.add_argument("--ema-decay", type=float, default=0.999)
    b.add_argument("--times", type=int, default=20)
    b.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    {"train": train, "scaling": scaling, "bound": bound}[a.cmd](a)
