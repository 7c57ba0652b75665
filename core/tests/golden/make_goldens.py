#!/usr/bin/env python3
"""Independent reference values for the elbo-core tests.

Sources (none of them is the code under test):
  * diffusers (PyPI, 0.42.1, float32): schedule tables, timestep spacings, DDPM/DDIM step outputs.
  * A float64 numpy re-implementation of improved-diffusion's published formulas
    (gaussian_diffusion.py: the tables of GaussianDiffusion.__init__, q_posterior_mean_variance,
    _predict_xstart_from_eps, normal_kl, and the discretised likelihood with an exact normal CDF
    instead of its tanh approximation). Written here from the formulas, not copied.
  * mpmath at 50 digits: the normal CDF in the tails.

Run in a scratch virtual environment:
    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install torch diffusers numpy mpmath
    /tmp/peers/bin/python core/tests/golden/make_goldens.py
"""
import json
import math
import os

import mpmath
import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler

HERE = os.path.dirname(os.path.abspath(__file__))
mpmath.mp.dps = 50
SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]


def f64_betas(name, T, b0=1e-4, b1=0.02):
    if name == "linear":
        return np.linspace(b0, b1, T, dtype=np.float64)
    if name == "scaled_linear":
        return np.linspace(b0**0.5, b1**0.5, T, dtype=np.float64) ** 2
    if name == "squaredcos_cap_v2":
        f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)])
    if name == "sigmoid":
        x = np.linspace(-6, 6, T, dtype=np.float64)
        return 1 / (1 + np.exp(-x)) * (b1 - b0) + b0
    raise ValueError(name)


def rescale_zero_snr_f64(betas):
    abar_sqrt = np.sqrt(np.cumprod(1 - betas))
    a0, aT = abar_sqrt[0], abar_sqrt[-1]
    abar_sqrt = (abar_sqrt - aT) * a0 / (a0 - aT)
    abar = abar_sqrt**2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return 1 - alphas


def improved_diffusion_tables(betas):
    """improved-diffusion's GaussianDiffusion.__init__ tables, in float64."""
    alphas = 1.0 - betas
    acp = np.cumprod(alphas)
    acp_prev = np.append(1.0, acp[:-1])
    with np.errstate(divide="ignore"):
        pv = betas * (1.0 - acp_prev) / (1.0 - acp)
        tables = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": acp,
            "one_minus_alphas_cumprod": 1.0 - acp,
            "snr": acp / (1.0 - acp),
            "log_snr": np.log(acp) - np.log(1.0 - acp),
            "posterior_variance": pv,
            "posterior_log_variance_clipped": np.log(np.append(pv[1], pv[1:])),
            "posterior_mean_coef_x0": betas * np.sqrt(acp_prev) / (1.0 - acp),
            "posterior_mean_coef_xt": (1.0 - acp_prev) * np.sqrt(alphas) / (1.0 - acp),
        }
    return tables


def fl(a):
    return [float("%.12g" % v) if np.isfinite(v) else (None if np.isnan(v) else ("inf" if v > 0 else "-inf")) for v in np.asarray(a, dtype=np.float64).ravel()]


def schedules():
    out = []
    for name in SCHEDULES:
        for T in (1000, 100):
            sch = DDPMScheduler(num_train_timesteps=T, beta_schedule=name)
            ref = improved_diffusion_tables(f64_betas(name, T))
            out.append({
                "schedule": name, "T": T, "zero_terminal_snr": False,
                "diffusers": {"betas": fl(sch.betas.numpy()), "alphas_cumprod": fl(sch.alphas_cumprod.numpy())},
                "f64": {k: fl(v) for k, v in ref.items()},
            })
    # zero terminal SNR (linear, T = 1000)
    sch = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", rescale_betas_zero_snr=True)
    betas = rescale_zero_snr_f64(f64_betas("linear", 1000))
    ref = improved_diffusion_tables(betas)
    out.append({
        "schedule": "linear", "T": 1000, "zero_terminal_snr": True,
        "diffusers": {"betas": fl(sch.betas.numpy()), "alphas_cumprod": fl(sch.alphas_cumprod.numpy())},
        "f64": {k: fl(ref[k]) for k in ("betas", "alphas_cumprod", "one_minus_alphas_cumprod", "posterior_variance",
                                        "posterior_mean_coef_x0", "posterior_mean_coef_xt")},
    })
    return out


def spacings():
    out = []
    for spacing in ("leading", "trailing", "linspace"):
        for T in (1000, 100):
            for K in (1, 3, 7, 10, 50, 64, 100, 999):
                if K > T:
                    continue
                s = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
                s.set_timesteps(K)
                out.append({"spacing": spacing, "T": T, "K": K, "timesteps": [int(v) for v in s.timesteps]})
    return out


def steps():
    """DDPM and DDIM steps of diffusers for given model outputs and noise (linear, T = 1000)."""
    g = torch.Generator().manual_seed(1234)
    n = 64
    sample = torch.randn(1, n, generator=g) * 1.5  # diffusers wants [N, C, ...]
    model_output = torch.randn(1, n, generator=g)
    out = []
    pred_names = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
    for pred in ("epsilon", "sample", "v_prediction"):
        for variance in ("fixed_small", "fixed_large"):
            for t0 in (999, 500, 37, 1, 0):
                s = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type=pred,
                                  variance_type=variance, clip_sample=False)
                gen = torch.Generator().manual_seed(77 + t0)
                prev = s.step(model_output, t0, sample, generator=gen).prev_sample
                noise = torch.randn(1, n, generator=torch.Generator().manual_seed(77 + t0))
                out.append({"sampler": "ddpm", "prediction": pred_names[pred], "variance": variance, "t": t0 + 1,
                            "prev_t": t0, "noise": fl(noise), "prev_sample": fl(prev)})
        for eta in (0.0, 1.0, 0.3):
            for spacing, K in (("leading", 50), ("trailing", 10), ("linspace", 7)):
                s = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type=pred,
                                  clip_sample=False, timestep_spacing=spacing)
                s.set_timesteps(K)
                for i in (0, len(s.timesteps) // 2, len(s.timesteps) - 1):
                    t0 = int(s.timesteps[i])
                    noise = torch.randn(1, n, generator=torch.Generator().manual_seed(99 + t0))
                    prev = s.step(model_output, t0, sample, eta=eta, variance_noise=noise).prev_sample
                    out.append({"sampler": "ddim", "prediction": pred_names[pred], "eta": eta, "spacing": spacing,
                                "K": K, "index": i, "t": t0 + 1, "noise": fl(noise), "prev_sample": fl(prev)})
    return {"sample": fl(sample), "model_output": fl(model_output), "cases": out}


def normal_cdf_refs():
    zs = [-40.0, -30.0, -20.5, -19.5, -10.0, -5.0, -1.0, 0.0, 0.5, 3.0, 5.5, 8.0, 12.0, 30.0]
    log_cdf = lambda z: mpmath.log1p(-mpmath.ncdf(-z)) if z > 0 else mpmath.log(mpmath.ncdf(z))
    cdf = [{"z": z, "log_cdf": float(log_cdf(z))} for z in zs]
    pairs = [(-41.0, -40.0), (-12.0, -11.99), (-3.0, -2.0), (-0.1, 0.2), (1.0, 1.5), (9.0, 9.5), (25.0, 26.0),
             (-1e-3, 1e-3), (0.0, 40.0), (-40.0, 0.0)]
    # mass of [a, b], taken from the lower tail so that 50 digits suffice
    mass = lambda a, b: mpmath.ncdf(-a) - mpmath.ncdf(-b) if a > 0 else mpmath.ncdf(b) - mpmath.ncdf(a)
    interval = [{"a": a, "b": b, "log_p": float(mpmath.log(mass(a, b)))} for a, b in pairs]
    return {"log_cdf": cdf, "log_interval": interval}


def normal_kl(m1, lv1, m2, lv2):
    return 0.5 * (-1.0 + lv2 - lv1 + np.exp(lv1 - lv2) + (m1 - m2) ** 2 * np.exp(-lv2))


def exact_cdf(x):
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def discretized_ll(x, mean, log_scale, levels):
    """improved-diffusion's discretized_gaussian_log_likelihood generalised to K levels, with
    the exact CDF (thresholds at the outer bins; bin half-width 1/(K-1))."""
    delta = 1.0 / (levels - 1)
    inv = np.exp(-log_scale)
    plus = exact_cdf(inv * (x - mean + delta))
    minus = exact_cdf(inv * (x - mean - delta))
    return np.where(x < -1 + delta, np.log(plus), np.where(x > 1 - delta, np.log(1 - minus), np.log(plus - minus)))


def vb_terms():
    """improved-diffusion's _vb_terms_bpd for given x0, x_t and eps predictions (float64)."""
    rng = np.random.default_rng(5)
    T = 1000
    tab = improved_diffusion_tables(f64_betas("linear", T))
    acp = tab["alphas_cumprod"]
    d = 8
    levels = 17
    x0 = (rng.integers(0, levels, size=d) / (levels - 1) * 2 - 1).astype(np.float32).astype(np.float64)
    cases = []
    for t in (1, 2, 10, 500, 1000):
        i = t - 1
        noise = rng.standard_normal(d).astype(np.float32).astype(np.float64)
        xt = (math.sqrt(acp[i]) * x0 + math.sqrt(1 - acp[i]) * noise).astype(np.float32).astype(np.float64)
        eps_hat = (noise + 0.3 * rng.standard_normal(d)).astype(np.float32).astype(np.float64)
        # model mean via predicted x0 (_predict_xstart_from_eps, q_posterior_mean_variance)
        x0_hat = np.sqrt(1.0 / acp[i]) * xt - np.sqrt(1.0 / acp[i] - 1) * eps_hat
        model_mean = tab["posterior_mean_coef_x0"][i] * x0_hat + tab["posterior_mean_coef_xt"][i] * xt
        true_mean = tab["posterior_mean_coef_x0"][i] * x0 + tab["posterior_mean_coef_xt"][i] * xt
        true_lv = tab["posterior_log_variance_clipped"][i]
        entry = {"t": t, "x0": fl(x0), "xt": fl(xt), "eps_hat": fl(eps_hat)}
        for variance in ("small", "large"):
            if variance == "small":
                model_lv = tab["posterior_log_variance_clipped"][i]
            else:
                model_lv = np.log(np.append(tab["posterior_variance"][1], tab["betas"][1:]))[i]
            if t == 1:
                entry[variance + "_decoder_nll_discretized"] = float(-discretized_ll(x0, model_mean, 0.5 * model_lv, levels).sum())
                d2 = (x0 - model_mean) ** 2
                entry[variance + "_decoder_nll_continuous"] = float((0.5 * (math.log(2 * math.pi) + model_lv + d2 * math.exp(-model_lv))).sum())
            else:
                entry[variance + "_kl"] = float(normal_kl(true_mean, true_lv, model_mean, model_lv).sum())
        cases.append(entry)
    prior = float((0.5 * (-1.0 + (-np.log(1 - acp[-1])) + (1 - acp[-1]) + acp[-1] * x0**2)).sum())
    return {"schedule": "linear", "T": T, "levels": levels, "cases": cases, "x0": fl(x0), "prior_kl": prior}


def main():
    for name, fn in (("schedules", schedules), ("spacing", spacings), ("steps", steps), ("normal", normal_cdf_refs),
                     ("vb_terms", vb_terms)):
        with open(os.path.join(HERE, name + ".json"), "w") as f:
            json.dump(fn(), f, separators=(",", ":"))
        print("wrote", name + ".json")


if __name__ == "__main__":
    main()
