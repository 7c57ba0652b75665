#!/usr/bin/env python3
"""Goldens for the ONNX tests, from the shipped digits model (models/digits/model.onnx):

1. DDIM (eta = 0, 50 steps, `leading` and `trailing` spacing) from a fixed x_T, class 3, with
   diffusers' DDIMScheduler (clip_sample off) driving the model through onnxruntime for Python.
2. The likelihood bound on 8-bit data (the held-out digits rounded to 256 levels on [-1, 1]),
   following improved-diffusion's `calc_bpd_loop` conventions, implemented here from its
   published formulas in float64: prior term KL(q(x_T|x_0) || N(0, I)); per-step terms
   KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t >= 2 with the model's eps turned into x0 and the
   posterior mean; the discretised decoder at t = 1 (with the exact normal CDF instead of its
   tanh approximation); fixed-small variance = posterior variance with log clipped at t = 1
   (btilde_2), fixed-large = [btilde_2, beta_2, ..., beta_T]. One noise draw per example and
   step, so the parts carry Monte Carlo standard errors, which are written too.

Run: /tmp/peers/bin/python models/digits/make_goldens.py   (needs torch, diffusers, onnxruntime)
"""
import json
import math
import os

import numpy as np
import onnxruntime as ort
import torch
from diffusers import DDIMScheduler

HERE = os.path.dirname(os.path.abspath(__file__))
sess = ort.InferenceSession(os.path.join(HERE, "model.onnx"), providers=["CPUExecutionProvider"])


def model(x, t0, label):
    n = x.shape[0]
    return sess.run(None, {"sample": x.astype(np.float32), "timestep": np.full(n, t0, np.int64),
                           "class_labels": np.full(n, label, np.int64)})[0]


# 1. DDIM through diffusers.
rng = np.random.default_rng(7)
init = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
np.save(os.path.join(HERE, "golden_init.npy"), init)
for spacing in ("leading", "trailing"):
    s = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                      clip_sample=False, timestep_spacing=spacing)
    s.set_timesteps(50)
    x = torch.from_numpy(init.copy())
    for t in s.timesteps:
        eps = torch.from_numpy(model(x.numpy(), int(t), 3))
        x = s.step(eps, int(t), x, eta=0.0).prev_sample
    np.save(os.path.join(HERE, f"golden_ddim_{spacing}.npy"), x.numpy().astype(np.float32))

# 2. The bound on 8-bit data.
x8 = np.load(os.path.join(HERE, "digits_test.npy")).astype(np.float64)
x8 = np.round((x8 + 1.0) * 127.5) / 127.5 - 1.0
x8 = x8[:100]
np.save(os.path.join(HERE, "digits_test_8bit.npy"), x8.astype(np.float32))
x0 = x8.astype(np.float32).astype(np.float64)
T = 1000
betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
alphas = 1.0 - betas
acp = np.cumprod(alphas)
acp_prev = np.append(1.0, acp[:-1])
post_var = betas * (1.0 - acp_prev) / (1.0 - acp)
post_logvar_clipped = np.log(np.append(post_var[1], post_var[1:]))
coef1 = betas * np.sqrt(acp_prev) / (1.0 - acp)
coef2 = (1.0 - acp_prev) * np.sqrt(alphas) / (1.0 - acp)
large_logvar = np.log(np.append(post_var[1], betas[1:]))
erf = np.vectorize(math.erf)


def normal_kl(m1, lv1, m2, lv2):
    return 0.5 * (-1.0 + lv2 - lv1 + np.exp(lv1 - lv2) + (m1 - m2) ** 2 * np.exp(-lv2))


def disc_ll(x, mean, log_scale):
    cdf = lambda z: 0.5 * (1.0 + erf(z / math.sqrt(2.0)))
    inv = np.exp(-log_scale)
    plus, minus = cdf(inv * (x - mean + 1 / 255.0)), cdf(inv * (x - mean - 1 / 255.0))
    with np.errstate(divide="ignore"):
        return np.where(x < -0.999, np.log(np.maximum(plus, 1e-300)),
                        np.where(x > 0.999, np.log(np.maximum(1 - minus, 1e-300)), np.log(np.maximum(plus - minus, 1e-300))))


n, D = x0.shape[0], 64
null = 10
out = {"n": int(n), "dims": D}
prior = 0.5 * (-1.0 + (-np.log(1 - acp[-1])) + (1 - acp[-1]) + acp[-1] * x0 ** 2)
prior = prior.reshape(n, -1).sum(1)
out["prior_nats"] = float(prior.mean())
for name, lv_model in (("small", post_logvar_clipped), ("large", large_logvar)):
    rng = np.random.default_rng(11)
    terms = np.zeros((n, T))
    for i in range(T):
        noise = rng.standard_normal(x0.shape)
        xt = (math.sqrt(acp[i]) * x0 + math.sqrt(1 - acp[i]) * noise).astype(np.float32).astype(np.float64)
        eps = model(xt, i, null).astype(np.float64)
        x0_hat = math.sqrt(1.0 / acp[i]) * xt - math.sqrt(1.0 / acp[i] - 1.0) * eps
        mean = coef1[i] * x0_hat + coef2[i] * xt
        if i == 0:
            terms[:, 0] = -disc_ll(x0, mean, 0.5 * lv_model[0]).reshape(n, -1).sum(1)
        else:
            true_mean = coef1[i] * x0 + coef2[i] * xt
            terms[:, i] = normal_kl(true_mean, post_logvar_clipped[i], mean, lv_model[i]).reshape(n, -1).sum(1)
    diffusion = terms[:, 1:].sum(1)
    total = prior + terms[:, 0] + diffusion
    out[name] = {
        "decoder_nats": float(terms[:, 0].mean()), "decoder_se": float(terms[:, 0].std(ddof=1) / math.sqrt(n)),
        "diffusion_nats": float(diffusion.mean()), "diffusion_se": float(diffusion.std(ddof=1) / math.sqrt(n)),
        "neg_elbo_nats": float(total.mean()), "neg_elbo_se": float(total.std(ddof=1) / math.sqrt(n)),
        "bpd": float(total.mean() / (D * math.log(2))),
    }
    print(name, out[name], flush=True)
with open(os.path.join(HERE, "golden_bpd_8bit.json"), "w") as f:
    json.dump(out, f, indent=1)
