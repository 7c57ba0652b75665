"""The peers' side of the comparison: PyTorch, diffusers and onnxruntime doing the work that
`measure` (benches/src/bin/measure.rs) does, with the same sizes, threads and model file.
One workload per call; prints one JSON object (times in seconds, medians).

    peers.py train       --threads N [--reps R]   PyTorch training of the default two-moons MLP
    peers.py step        --n ELEMENTS --threads N  diffusers DDPMScheduler / DDIMScheduler step()
    peers.py onnx-sample --batch B --threads N     onnxruntime + diffusers DDPM loop, 1000 steps
    peers.py forward     --batch B --threads N     onnxruntime Session.run of the same MLP
    peers.py bound       --data FILE --threads N   improved-diffusion's calc_bpd_loop over onnxruntime
    peers.py unet-forward --model FILE.onnx --batch B --threads N   onnxruntime on an exported U-Net
    peers.py dpm-sample  --batch B --threads N     onnxruntime + diffusers DPMSolverMultistepScheduler, 10 steps
    peers.py ode         --data FILE --threads N   score_sde's ODE likelihood (VP SDE, scipy's solve_ivp RK45)

Run by benches/compare.py inside the environment that benches/peers/setup.sh makes.
"""

import argparse
import json
import math
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
ONNX = os.path.join(ROOT, "models", "two-moons", "model.onnx")
T = 1000


def median_time(reps, f):
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def timestep_embedding(t, dim=32, max_period=10000):
    """improved-diffusion's sinusoidal embedding (nn.py): [cos(t f_k), sin(t f_k)]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def two_moons(n, g):
    """scikit-learn's make_moons with noise 0.05 (the data's values do not change the timing)."""
    n_out = n // 2
    n_in = n - n_out
    a = np.pi * torch.rand(n_out, generator=g, dtype=torch.float64)
    b = np.pi * torch.rand(n_in, generator=g, dtype=torch.float64)
    x = torch.cat([torch.stack([torch.cos(a), torch.sin(a)], 1), torch.stack([1 - torch.cos(b), 1 - torch.sin(b) - 0.5], 1)])
    x = x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return ((x - x.mean(0)) / x.std(0)).float()


def train(a):
    """The default `elbo train` run: MLP [x, emb(t)] -> 128 -> 128 -> 128 -> 2 with SiLU, He
    init, batch 512, L_simple with eps prediction, uniform t, linear betas, AdamW (lr 2e-3,
    warm-up 100 steps then cosine decay, no weight decay), gradient clipping at norm 1, EMA."""
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    data = two_moons(20000, g)
    layers = []
    n_in = 2 + 32
    for _ in range(3):
        layers += [torch.nn.Linear(n_in, 128), torch.nn.SiLU()]
        n_in = 128
    layers.append(torch.nn.Linear(n_in, 2))
    model = torch.nn.Sequential(*layers)
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params]
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    sa, s1a = abar.sqrt().float(), (1 - abar).sqrt().float()
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    total = 100_000

    def lr_at(k):
        k = k + 1
        if k <= 100:
            return k / 100
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (k - 100) / (total - 100))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    step_no = [0]

    def step():
        idx = torch.randint(0, data.shape[0], (512,), generator=g)
        x0 = data[idx]
        t = torch.randint(0, T, (512,), generator=g)
        eps = torch.randn(512, 2, generator=g)
        xt = sa[t, None] * x0 + s1a[t, None] * eps
        out = model(torch.cat([xt, timestep_embedding(t)], 1))
        loss = F.mse_loss(out, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        k = step_no[0] = step_no[0] + 1
        decay = min(0.995, (1 + k) / (10 + k))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)

    for _ in range(20):
        step()
    t = median_time(a.reps, step)
    return {"work": "train", "threads": a.threads, "step_s": t, "examples_per_s": 512 / t, "torch": torch.__version__}


def schedulers():
    from diffusers import DDIMScheduler, DDPMScheduler

    kw = dict(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    return DDPMScheduler(**kw), DDIMScheduler(**kw)


def step(a):
    """One scheduler update with eps prediction at t = 500 (0-based 499): DDPM with fresh noise
    (variance fixed_small), DDIM (eta 0) from 499 to 479."""
    import diffusers

    torch.set_num_threads(a.threads)
    ddpm, ddim = schedulers()
    ddpm.set_timesteps(T)
    ddim.set_timesteps(50)
    g = torch.Generator().manual_seed(0)
    # diffusers wants [batch, channels, ...]: one example of n values
    x = torch.randn(1, a.n, generator=g)
    eps = torch.randn(1, a.n, generator=g)
    reps = 200 if a.n >= 100_000 else 2000
    t_ddim = int([t for t in ddim.timesteps if int(t) <= 499][0])
    r_ddpm = median_time(reps, lambda: ddpm.step(eps, 499, x, generator=g).prev_sample)
    r_ddim = median_time(reps, lambda: ddim.step(eps, t_ddim, x, eta=0.0).prev_sample)
    return {"work": "step", "n": a.n, "ddpm_s": r_ddpm, "ddim_s": r_ddim, "diffusers": diffusers.__version__}


def session(threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(ONNX, so, providers=["CPUExecutionProvider"])


def onnx_sample(a):
    """The sampling loop a Python user writes: onnxruntime for the denoiser, diffusers'
    DDPMScheduler (1000 steps) for the update, torch tensors in between."""
    import onnxruntime as ort

    torch.set_num_threads(a.threads)
    sess = session(a.threads)
    ddpm, _ = schedulers()
    ddpm.set_timesteps(T)
    g = torch.Generator().manual_seed(0)

    def run():
        x = torch.randn(a.batch, 2, generator=g)
        inside = 0.0
        t0 = time.perf_counter()
        for t in ddpm.timesteps[: a.steps]:
            ts = np.full(a.batch, int(t), dtype=np.int64)
            r0 = time.perf_counter()
            eps = sess.run(None, {"sample": x.numpy(), "timestep": ts})[0]
            inside += time.perf_counter() - r0
            x = ddpm.step(torch.from_numpy(eps), t, x, generator=g).prev_sample
        return time.perf_counter() - t0, inside

    run()
    total, inside = sorted(run() for _ in range(3))[1]
    return {"work": "onnx-sample", "batch": a.batch, "threads": a.threads, "step_s": total / a.steps,
            "outside_run": 1 - inside / total, "onnxruntime": ort.__version__}


def dpm_sample(a):
    """The few-step loop a Python user writes: onnxruntime for the denoiser, diffusers'
    DPMSolverMultistepScheduler (its defaults: 2M, linspace) for the update."""
    from diffusers import DPMSolverMultistepScheduler

    torch.set_num_threads(a.threads)
    sess = session(a.threads)
    sched = DPMSolverMultistepScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4,
                                        beta_end=0.02)
    g = torch.Generator().manual_seed(0)

    def run():
        x = torch.randn(a.batch, 2, generator=g)
        t0 = time.perf_counter()
        sched.set_timesteps(a.steps)
        for t in sched.timesteps:
            ts = np.full(a.batch, int(t), dtype=np.int64)
            eps = sess.run(None, {"sample": x.numpy(), "timestep": ts})[0]
            x = sched.step(torch.from_numpy(eps), t, x).prev_sample
        return time.perf_counter() - t0

    run()
    return {"work": "dpm-sample", "batch": a.batch, "threads": a.threads, "steps": a.steps,
            "run_s": statistics.median(run() for _ in range(5))}


def ode(a):
    """score_sde's likelihood computation (`likelihood.py` with its `VPSDE`: the probability-flow
    ODE of the continuous-time VP SDE with beta(t) linear from 0.1 to 20, the DDPM model fed
    `int(t * 999)`, integrated from t = 1e-5 to 1 by scipy's solve_ivp RK45 over the flattened
    batch and its divergence, the prior N(0, I)), on the same ONNX model and points; the
    divergence from central differences of the model (step 2^-9 on its input, exact: 2
    dimensions), as elbo's; batches of 250, rtol = atol = 1e-5."""
    import onnx
    import scipy
    from scipy.integrate import solve_ivp

    sess = session(a.threads)
    meta = {p.key: p.value for p in onnx.load(ONNX).metadata_props}
    norm = json.loads(meta["elbo.normalization"])
    x = np.load(a.data).astype(np.float64)
    z = (x - np.array(norm["mean"])) / np.array(norm["std"])
    bmin, bmax, h = 0.1, 20.0, 1.0 / 512

    def solve(batch):
        n, d = batch.shape
        nfe = [0]

        def f(t, y):
            nfe[0] += 1
            log_mean = -0.25 * t * t * (bmax - bmin) - 0.5 * t * bmin
            std = math.sqrt(1.0 - math.exp(2.0 * log_mean))
            beta = bmin + t * (bmax - bmin)
            xs = y[: n * d].reshape(n, d)
            x32 = xs.astype(np.float32)
            copies = [x32] + [x32 + sgn * h * np.eye(d, dtype=np.float32)[k] for k in range(d) for sgn in (1, -1)]
            inp = np.concatenate(copies)
            ts = np.full(len(inp), int(t * (T - 1)), dtype=np.int64)
            eps = sess.run(None, {"sample": inp, "timestep": ts})[0].astype(np.float64).reshape(1 + 2 * d, n, d)
            score = -eps / std
            drift = -0.5 * beta * (xs + score[0])
            div_score = sum((score[1 + 2 * k, :, k] - score[2 + 2 * k, :, k]) / (2 * h) for k in range(d))
            return np.concatenate([drift.ravel(), -0.5 * beta * (d + div_score)])

        y0 = np.concatenate([batch.ravel(), np.zeros(n)])
        sol = solve_ivp(f, (1e-5, 1.0), y0, rtol=1e-5, atol=1e-5, method="RK45")
        y = sol.y[:, -1]
        xe = y[: n * d].reshape(n, d)
        prior = 0.5 * (d * np.log(2 * np.pi) + (xe ** 2).sum(1))
        return prior - y[n * d:], nfe[0]

    t0 = time.perf_counter()
    out, nfe = [], 0
    for i in range(0, len(z), 250):
        nll, k = solve(z[i:i + 250])
        out.append(nll)
        nfe += k
    t = time.perf_counter() - t0
    return {"work": "ode", "threads": a.threads, "n": len(z), "ode_s": t, "nfe": nfe,
            "nll_normalised": float(np.concatenate(out).mean()), "scipy": scipy.__version__}


def forward(a):
    sess = session(a.threads)
    x = np.random.default_rng(0).standard_normal((a.batch, 2)).astype(np.float32)
    ts = np.full(a.batch, 499, dtype=np.int64)
    feed = {"sample": x, "timestep": ts}
    sess.run(None, feed)
    return {"work": "forward", "batch": a.batch, "threads": a.threads, "ort_s": median_time(a.reps, lambda: sess.run(None, feed))}


def unet_forward(a):
    """onnxruntime Session.run of an exported U-Net (`elbo export`) on standard normals."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else a.batch for d in sess.get_inputs()[0].shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    t_type = sess.get_inputs()[1].type
    ts = np.full(a.batch, 499, dtype=np.float32 if "float" in t_type else np.int64)
    feed = {"sample": x, "timestep": ts}
    sess.run(None, feed)
    return {"work": "unet-forward", "batch": a.batch, "threads": a.threads, "ort_s": median_time(a.reps, lambda: sess.run(None, feed))}


def normal_kl(mean1, logvar1, mean2, logvar2):
    """improved-diffusion losses.normal_kl: KL(N(mean1, e^logvar1) || N(mean2, e^logvar2))."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def bound(a):
    """improved-diffusion's GaussianDiffusion.calc_bpd_loop (gaussian_diffusion.py), written out
    here because improved-diffusion is not on PyPI: float64 numpy tables, indexed per timestep
    and cast to float32 torch tensors; for t = T-1 .. 0 draw x_t ~ q(x_t | x_0) (q_sample), run
    the model, form pred_xstart and the posterior mean (p_mean_variance, fixed_small variance:
    posterior_log_variance_clipped), take _vb_terms_bpd (normal_kl against q_posterior_mean_variance,
    the decoder NLL at t = 0) and the xstart and eps MSEs; then _prior_bpd. The data are
    continuous 2-D points, so the decoder is the Gaussian density (the discretised one is for
    8-bit images); everything else follows the published code. The model is the same ONNX file,
    run by onnxruntime, so both sides evaluate the same network."""
    import onnxruntime as ort

    torch.set_num_threads(a.threads)
    sess = session(a.threads)
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["elbo.normalization"])
    x = np.load(a.data).astype(np.float32)
    x = (x - np.array(meta["mean"], dtype=np.float32)) / np.array(meta["std"], dtype=np.float32)
    x_start = torch.from_numpy(x)
    n = x.shape[0]
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    alphas_cumprod = np.cumprod(1.0 - betas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    sqrt_ac = np.sqrt(alphas_cumprod)
    sqrt_1mac = np.sqrt(1.0 - alphas_cumprod)
    sqrt_recip_ac = np.sqrt(1.0 / alphas_cumprod)
    sqrt_recipm1_ac = np.sqrt(1.0 / alphas_cumprod - 1)
    post_var = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    post_logvar = np.log(np.append(post_var[1], post_var[1:]))
    coef1 = betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    coef2 = (1.0 - alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod)

    def ext(arr, t):
        return torch.from_numpy(arr)[torch.full((n,), t)].float()[:, None]

    def mean_flat(v):
        return v.mean(dim=1)

    g = torch.Generator().manual_seed(0)

    def loop():
        vb, xstart_mse, mse = [], [], []
        for t in list(range(T))[::-1]:
            noise = torch.randn(x_start.shape, generator=g)
            x_t = ext(sqrt_ac, t) * x_start + ext(sqrt_1mac, t) * noise
            eps = torch.from_numpy(sess.run(None, {"sample": x_t.numpy(), "timestep": np.full(n, t, dtype=np.int64)})[0])
            pred_xstart = ext(sqrt_recip_ac, t) * x_t - ext(sqrt_recipm1_ac, t) * eps
            model_mean = ext(coef1, t) * pred_xstart + ext(coef2, t) * x_t
            model_logvar = ext(post_logvar, t)
            true_mean = ext(coef1, t) * x_start + ext(coef2, t) * x_t
            true_logvar = ext(post_logvar, t)
            if t == 0:
                nll = 0.5 * (math.log(2 * math.pi) + model_logvar + (x_start - model_mean) ** 2 * torch.exp(-model_logvar))
                out = mean_flat(nll) / math.log(2.0)
            else:
                out = mean_flat(normal_kl(true_mean, true_logvar, model_mean, model_logvar)) / math.log(2.0)
            vb.append(out)
            xstart_mse.append(mean_flat((pred_xstart - x_start) ** 2))
            mse.append(mean_flat((eps - noise) ** 2))
        vb = torch.stack(vb, dim=1)
        qt_mean = float(sqrt_ac[-1]) * x_start
        qt_logvar = torch.full_like(x_start, float(np.log(1.0 - alphas_cumprod[-1])))
        prior_bpd = mean_flat(normal_kl(qt_mean, qt_logvar, torch.zeros_like(x_start), torch.zeros_like(x_start))) / math.log(2.0)
        total_bpd = vb.sum(dim=1) + prior_bpd
        return float(total_bpd.mean())

    loop()
    times, value = [], 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        value = loop()
        times.append(time.perf_counter() - t0)
    return {"work": "bound", "n": n, "threads": a.threads, "bound_s": statistics.median(times), "bpd_normalised": value}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("work", choices=["train", "step", "onnx-sample", "forward", "bound", "unet-forward", "dpm-sample",
                                    "ode"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=T)
    p.add_argument("--data", default="")
    p.add_argument("--model", default="")
    a = p.parse_args()
    torch.set_num_interop_threads(1)
    work = {"train": train, "step": step, "onnx-sample": onnx_sample, "forward": forward, "bound": bound,
            "unet-forward": unet_forward, "dpm-sample": dpm_sample, "ode": ode}[a.work]
    print(json.dumps(work(a)))


if __name__ == "__main__":
    main()
