#!/usr/bin/env python3
"""Train a small class-conditional convolutional eps-denoiser on the 8x8 handwritten digits that
ship inside the scikit-learn wheel, and export it to ONNX for `elbo sample/eval --model`.

Data: scikit-learn's `load_digits` (1 797 images, 8x8, 17 grey levels 0..16; the UCI "Optical
Recognition of Handwritten Digits" test set, E. Alpaydin and C. Kaynak, CC BY 4.0), scaled to
the 17 levels k/8 - 1 on [-1, 1]. 297 images (seed 0) are held out as `digits_test.npy`.

Model: conv 1->32, three residual 3x3 conv blocks (32 channels, SiLU) with the time embedding
(sinusoidal of the 0-based timestep, then an MLP) and a class embedding (10 digits + a null
class 10 for classifier-free guidance, dropped with probability 0.1) added, conv 32->1.
Schedule: linear, beta 1e-4 .. 0.02, T = 1000; prediction eps; L_simple; AdamW 2e-3, batch 256.

Run (CPU, a few minutes):
    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install torch scikit-learn onnx onnxscript
    /tmp/peers/bin/python models/digits/train_digits.py
"""
import json
import math
import os

import numpy as np
import onnx
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

HERE = os.path.dirname(os.path.abspath(__file__))
T, STEPS, BATCH, CH, EMB, CLASSES, NULL = 1000, 4000, 256, 32, 64, 10, 10
torch.manual_seed(0)
rng = np.random.default_rng(0)
torch.set_num_threads(2)

digits = load_digits()
x_all = (digits.images / 8.0 - 1.0).astype(np.float32)[:, None]  # [N, 1, 8, 8], 17 levels
y_all = digits.target.astype(np.int64)
perm = rng.permutation(len(x_all))
test, train = perm[:297], perm[297:]
np.save(os.path.join(HERE, "digits_test.npy"), x_all[test])
np.save(os.path.join(HERE, "digits_test_labels.npy"), y_all[test])
x_train, y_train = torch.from_numpy(x_all[train]), torch.from_numpy(y_all[train])

betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
abar = torch.cumprod(1 - betas, 0).float()


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(CH, CH, 3, padding=1), nn.Conv2d(CH, CH, 3, padding=1)
        self.e = nn.Linear(EMB, CH)

    def forward(self, h, emb):
        z = torch.nn.functional.silu(self.c1(h)) + self.e(emb)[:, :, None, None]
        return h + self.c2(torch.nn.functional.silu(z))


class Denoiser(nn.Module):
    def __init__(self):
        super().__init__()
        self.t_mlp = nn.Sequential(nn.Linear(EMB, EMB), nn.SiLU(), nn.Linear(EMB, EMB))
        self.cls = nn.Embedding(CLASSES + 1, EMB)
        self.inp = nn.Conv2d(1, CH, 3, padding=1)
        self.blocks = nn.ModuleList([Block() for _ in range(3)])
        self.out = nn.Conv2d(CH, 1, 3, padding=1)

    def forward(self, sample, timestep, class_labels):
        emb = self.t_mlp(timestep_embedding(timestep, EMB)) + self.cls(class_labels)
        h = self.inp(sample)
        for b in self.blocks:
            h = b(h, emb)
        return self.out(torch.nn.functional.silu(h))


model = Denoiser()
opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=STEPS, pct_start=0.05)
ema = [p.detach().clone() for p in model.parameters()]
for step in range(STEPS):
    idx = torch.randint(0, len(x_train), (BATCH,))
    x0, y = x_train[idx], y_train[idx].clone()
    y[torch.rand(BATCH) < 0.1] = NULL
    t = torch.randint(0, T, (BATCH,))
    eps = torch.randn_like(x0)
    a = abar[t][:, None, None, None]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    loss = ((model(xt, t, y) - eps) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    with torch.no_grad():
        for e, p in zip(ema, model.parameters()):
            e.mul_(0.995).add_(p.detach(), alpha=0.005)
    if step % 500 == 0 or step == STEPS - 1:
        print(f"step {step} loss {loss.item():.4f}", flush=True)

with torch.no_grad():
    for e, p in zip(ema, model.parameters()):
        p.copy_(e)
model.eval()
path = os.path.join(HERE, "model.onnx")
args = (torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))
torch.onnx.export(
    model, args, path, input_names=["sample", "timestep", "class_labels"], output_names=["out_sample"],
    dynamic_axes={"sample": {0: "N"}, "timestep": {0: "N"}, "class_labels": {0: "N"}, "out_sample": {0: "N"}},
    opset_version=17, dynamo=False,
)
m = onnx.load(path)
meta = {
    "elbo.prediction": "eps",
    "elbo.schedule": json.dumps({"_class_name": "DDPMScheduler", "num_train_timesteps": T, "beta_schedule": "linear",
                                 "beta_start": 1e-4, "beta_end": 0.02, "prediction_type": "epsilon"}),
    "elbo.classes": str(CLASSES),
}
for k, v in meta.items():
    m.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
onnx.checker.check_model(m, full_check=True)
onnx.save(m, path)
print("wrote", path)
