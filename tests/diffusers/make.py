"""Real diffusers exports and the goldens of diffusers' own sampling loops over them.

Builds small `UNet2DModel`s with random weights (unconditional, class-conditional, one whose
timestep input is a scalar, one whose timestep is float32), exported with
`torch.onnx.export(dynamo=False)` at opset 17 the way optimum exports UNets (inputs `sample`,
`timestep`, `class_labels`; output `out_sample`), saves each case's scheduler with diffusers'
`save_config` (its `scheduler_config.json`), and runs diffusers' own loop of that scheduler
(DDIM, DDPM, DPMSolverMultistep, UniPCMultistep, DEISMultistep, EulerDiscrete, HeunDiscrete)
over onnxruntime from a fixed x_T, on those UNets and on the shipped two-moons MLP. The Rust
test `host/tests/diffusers_exports.rs` runs `elbo sample` on each folder with only its saved
config. Cases named `-f64` keep diffusers' loop run in float64 as the golden (see `loop`).

Run: `benches/peers/setup.sh` (torch 2.15.0, diffusers 0.42.1, onnxruntime 1.31.1 into
.local/peers), then `.local/peers/bin/python tests/diffusers/make.py`. Output: one folder per
case under tests/diffusers/ (model.onnx shared through ../models/), a few hundred KB in all.
"""

import copy
import inspect
import json
import math
import os
import shutil

import numpy as np
import onnxruntime as ort
import torch
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr
from diffusers import (DDIMScheduler, DDPMScheduler, DEISMultistepScheduler, DPMSolverMultistepScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, UNet2DModel, UniPCMultistepScheduler)

HERE = os.path.dirname(os.path.abspath(__file__))
N, C, H = 4, 2, 8  # batch, channels, height = width


def unet(classes=None, seed=0):
    torch.manual_seed(seed)
    m = UNet2DModel(
        sample_size=H,
        in_channels=C,
        out_channels=C,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
        num_class_embeds=classes,
    )
    return m.eval()


class Wrapped(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, sample, timestep, class_labels=None):
        return self.m(sample, timestep, class_labels=class_labels).sample


def export(m, path, scalar_timestep=False, classes=False, float_timestep=False):
    x = torch.randn(N, C, H, H)
    dtype = torch.float32 if float_timestep else torch.int64
    t = torch.tensor(10, dtype=dtype) if scalar_timestep else torch.full((N,), 10, dtype=dtype)
    args = (x, t) + ((torch.zeros(N, dtype=torch.int64),) if classes else ())
    names = ["sample", "timestep"] + (["class_labels"] if classes else [])
    axes = {"sample": {0: "batch"}, "out_sample": {0: "batch"}}
    if not scalar_timestep:
        axes["timestep"] = {0: "batch"}
    if classes:
        axes["class_labels"] = {0: "batch"}
    torch.onnx.export(Wrapped(m), args, path, input_names=names, output_names=["out_sample"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)


def f64_alphas_cumprod(cfg):
    """`abar` of a scheduler config from float64 betas (diffusers builds float32 ones, whose
    cumulative product is off by about 1e-6 relative at the end: enough to move an interpolated
    Karras timestep by 1e-4)."""
    n = cfg.num_train_timesteps
    if cfg.beta_schedule == "linear":
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, n, dtype=torch.float64)
    elif cfg.beta_schedule == "scaled_linear":
        betas = torch.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, n, dtype=torch.float64) ** 2
    elif cfg.beta_schedule == "squaredcos_cap_v2":
        abar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=torch.float64)
    else:
        raise ValueError(cfg.beta_schedule)
    if getattr(cfg, "rescale_betas_zero_snr", False):
        betas = rescale_zero_terminal_snr(betas)
    ac = torch.cumprod(1.0 - betas, dim=0)
    if getattr(cfg, "rescale_betas_zero_snr", False):
        ac[-1] = 2 ** -24
    return ac


def loop(session, scheduler, x_t, steps, scalar_timestep=False, label=None, f64=False):
    """diffusers' sampling loop (as its pipelines run it) over onnxruntime: the start scaled by
    init_noise_sigma, each input by scale_model_input (both identities for DDIM, DDPM and the
    multistep solvers), and the timestep cast to the model's input type as diffusers' ONNX
    pipelines cast it (`np.array(t, dtype=...)`: a fractional Euler/Heun timestep is truncated
    for an int64 input, fed whole to a float32 one). With `f64` the scheduler runs in float64:
    its table from float64 betas (`f64_alphas_cumprod`), its sigmas, the sample and the model's
    outputs (the model stays float32)."""
    if f64:
        scheduler.alphas_cumprod = f64_alphas_cumprod(scheduler.config)
    scheduler.set_timesteps(steps)
    if hasattr(scheduler, "set_begin_index"):
        # step i is the i-th timestep even where Karras' timesteps repeat (diffusers' own
        # lookup of the first one would skip a step there)
        scheduler.set_begin_index(0)
    t_type = {"tensor(int64)": np.int64, "tensor(float)": np.float32}[
        next(i.type for i in session.get_inputs() if i.name == "timestep")]
    n = x_t.shape[0]
    x = torch.from_numpy(x_t.copy()) * scheduler.init_noise_sigma
    if f64:
        scheduler.sigmas = scheduler.sigmas.double()
        x = torch.from_numpy(x_t.astype(np.float64)) * scheduler.init_noise_sigma.double()
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        feed = {"sample": inp.numpy().astype(np.float32)}
        tv = np.array(t.item()).astype(t_type)
        feed["timestep"] = tv if scalar_timestep else np.full((n,), tv, dtype=t_type)
        if label is not None:
            feed["class_labels"] = np.full((n,), label, dtype=np.int64)
        out = torch.from_numpy(session.run(None, feed)[0].astype(np.float64 if f64 else np.float32))
        extra = {"generator": torch.Generator().manual_seed(0)} if "generator" in inspect.signature(scheduler.step).parameters else {}
        x = scheduler.step(out, t, x, **extra).prev_sample
    return x.numpy().astype(np.float32)


def main():
    models = os.path.join(HERE, "models")
    shutil.rmtree(models, ignore_errors=True)
    os.makedirs(models)
    specs = {
        "uncond": dict(m=unet(seed=1), scalar=False, classes=False),
        "cond": dict(m=unet(classes=3, seed=2), scalar=False, classes=True),
        "scalar": dict(m=unet(seed=3), scalar=True, classes=False),
        "float": dict(m=unet(seed=4), scalar=False, classes=False, float=True),
    }
    sessions = {}
    paths = {}
    for name, s in specs.items():
        path = os.path.join(models, f"{name}.onnx")
        export(s["m"], path, s["scalar"], s["classes"], s.get("float", False))
        sessions[name] = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        paths[name] = f"models/{name}.onnx"
    # the shipped two-moons MLP (eps, linear betas, T = 1000): elbo un-normalises its samples
    # with the model's elbo.normalization, so the goldens are diffusers' output mapped the same way
    moons = os.path.join(HERE, "..", "..", "models", "two-moons", "model.onnx")
    sessions["moons"] = ort.InferenceSession(moons, providers=["CPUExecutionProvider"])
    paths["moons"] = "../../models/two-moons/model.onnx"
    specs["moons"] = dict(scalar=False, classes=False, shape=(64, 2))
    meta = sessions["moons"].get_modelmeta().custom_metadata_map
    norm = json.loads(meta["elbo.normalization"])
    specs["moons"]["unnormalize"] = lambda x: x * np.array(norm["std"], np.float32) + np.array(norm["mean"], np.float32)

    # case: (model, scheduler, steps, class label, tolerance relative to max(1, max|golden|), why)
    cases = {
        # diffusers' defaults: leading spacing, clip_sample=True (ill-conditioned: see README)
        "ddim-defaults": ("uncond", DDIMScheduler(), 10, None, 1e-2),
        "ddim-eps-noclip": ("uncond", DDIMScheduler(clip_sample=False), 10, None, 1e-4),
        "ddim-v-cosine-zero-snr": ("cond", DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                                                         timestep_spacing="trailing", rescale_betas_zero_snr=True,
                                                         clip_sample=False), 10, 1, 1e-4),
        "ddim-x0-linspace": ("uncond", DDIMScheduler(prediction_type="sample", timestep_spacing="linspace",
                                                     clip_sample=False), 20, None, 1e-4),
        # Stable Diffusion's settings: scaled_linear, steps_offset 1, set_alpha_to_one False
        "ddim-sd-scalar-timestep": ("scalar", DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                                            beta_end=0.012, steps_offset=1, set_alpha_to_one=False,
                                                            clip_sample=False), 10, None, 1e-4),
        "ddim-thresholding": ("uncond", DDIMScheduler(prediction_type="sample", thresholding=True,
                                                      dynamic_thresholding_ratio=0.9, sample_max_value=2.0),
                              10, None, 1e-4),
        # one DDPM step lands on the data: no noise (diffusers adds sqrt(1e-20) z there), so the
        # loop is deterministic; it checks steps_offset and the spacing of DDPM's timesteps
        "ddpm-one-step-offset": ("uncond", DDPMScheduler(steps_offset=1, clip_sample=False), 1, None, 1e-4),
        # DPM-Solver++ multistep: its defaults (order 2, linspace over K + 1 points, midpoint,
        # lower_order_final, final sigma zero), and the other settings
        "dpmpp2m-defaults": ("uncond", DPMSolverMultistepScheduler(), 10, None, 1e-4),
        "dpmpp2m-v-cosine-zero-snr-trailing": ("cond", DPMSolverMultistepScheduler(
            beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", timestep_spacing="trailing",
            rescale_betas_zero_snr=True), 20, 2, 1e-4),
        "dpmpp3m-leading-offset": ("uncond", DPMSolverMultistepScheduler(solver_order=3, timestep_spacing="leading",
                                                                         steps_offset=1), 20, None, 1e-4),
        "dpmpp2m-heun-sigma-min-x0": ("scalar", DPMSolverMultistepScheduler(
            solver_type="heun", final_sigmas_type="sigma_min", prediction_type="sample"), 12, None, 1e-4),
        "dpmpp3m-thresholding": ("uncond", DPMSolverMultistepScheduler(solver_order=3, prediction_type="sample",
                                                                       thresholding=True, dynamic_thresholding_ratio=0.9,
                                                                       sample_max_value=2.0), 10, None, 1e-4),
        # DPM-Solver++ on Karras sigmas: rounded timesteps (linear), truncated ones (cosine)
        "dpmpp2m-karras": ("uncond", DPMSolverMultistepScheduler(use_karras_sigmas=True), 10, None, 1e-4),
        "dpmpp2m-karras-v-cosine": ("cond", DPMSolverMultistepScheduler(
            beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", use_karras_sigmas=True), 20, 0, 1e-4),
        # UniPC (bh2, order 2 by default; corrector on every step)
        "unipc-defaults": ("uncond", UniPCMultistepScheduler(), 10, None, 1e-4),
        "unipc-karras": ("uncond", UniPCMultistepScheduler(use_karras_sigmas=True), 20, None, 1e-4),
        "unipc-v-cosine-zero-snr-trailing": ("cond", UniPCMultistepScheduler(
            beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", timestep_spacing="trailing",
            rescale_betas_zero_snr=True), 20, 1, 1e-4),
        # (bh1 with final sigma zero is NaN in diffusers: B(h) = -h = -inf times a zero sum on the
        # last step; elbo leaves the empty sum out and lands on the data prediction)
        "unipc-bh1-order3-x0-sigma-min": ("scalar", UniPCMultistepScheduler(
            solver_order=3, solver_type="bh1", prediction_type="sample", final_sigmas_type="sigma_min"), 12, None, 1e-4),
        "unipc-karras-sigma-min-thresholding": ("uncond", UniPCMultistepScheduler(
            use_karras_sigmas=True, final_sigmas_type="sigma_min", prediction_type="sample", thresholding=True,
            dynamic_thresholding_ratio=0.9, sample_max_value=2.0), 10, None, 1e-4),
        # Euler: linspace over 20 steps falls between integer timesteps (the int64 model gets
        # them truncated, the float32 one whole)
        "euler-defaults": ("uncond", EulerDiscreteScheduler(), 10, None, 1e-4),
        "euler-fractional-int64": ("uncond", EulerDiscreteScheduler(), 20, None, 1e-4),
        "euler-fractional-float": ("float", EulerDiscreteScheduler(), 20, None, 1e-4),
        "euler-karras-float": ("float", EulerDiscreteScheduler(use_karras_sigmas=True), 10, None, 1e-4),
        "euler-karras-leading-sigma-min": ("uncond", EulerDiscreteScheduler(
            use_karras_sigmas=True, timestep_spacing="leading", steps_offset=1, final_sigmas_type="sigma_min"),
                                           20, None, 1e-4),
        "euler-v-cosine-zero-snr-trailing": ("cond", EulerDiscreteScheduler(
            beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", timestep_spacing="trailing",
            rescale_betas_zero_snr=True), 10, 2, 1e-4),
        # Heun: 2K - 1 calls; diffusers' Heun defaults to Stable Diffusion's betas
        "heun-defaults": ("uncond", HeunDiscreteScheduler(), 10, None, 1e-4),
        # (diffusers' float32 table moves Karras' timesteps by up to 1e-4, which a data-predicting
        # model turns into 2e-4 of its output)
        "heun-karras-float-x0-clip-f64": ("float", HeunDiscreteScheduler(
            use_karras_sigmas=True, prediction_type="sample", clip_sample=True), 10, None, 1e-4),
        # -f64: the golden is diffusers' loop in float64, and case.json records how far its
        # float32 run is from it. Here from sigma_0 = 20291 its float32 step x + (x0 - x) loses
        # 4e-3 to cancellation (elbo steps on the VP sample and loses nothing there)
        "heun-v-cosine-trailing-f64": ("cond", HeunDiscreteScheduler(
            beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", timestep_spacing="trailing"),
                                   20, 0, 1e-4),
        # DEIS (order 2 by default; lands on the first table level, not on sigma 0)
        "deis-defaults": ("uncond", DEISMultistepScheduler(), 10, None, 1e-4),
        "deis-order3-karras": ("uncond", DEISMultistepScheduler(solver_order=3, use_karras_sigmas=True), 20, None, 1e-4),
        # the shipped two-moons model, 10 and 20 steps, with and without Karras sigmas
        "moons-dpmpp2m-10": ("moons", DPMSolverMultistepScheduler(), 10, None, 1e-4),
        "moons-dpmpp2m-20-karras": ("moons", DPMSolverMultistepScheduler(use_karras_sigmas=True), 20, None, 1e-4),
        "moons-unipc-10": ("moons", UniPCMultistepScheduler(), 10, None, 1e-4),
        "moons-unipc-10-karras": ("moons", UniPCMultistepScheduler(use_karras_sigmas=True), 10, None, 1e-4),
        "moons-unipc-20": ("moons", UniPCMultistepScheduler(), 20, None, 1e-4),
        "moons-euler-20": ("moons", EulerDiscreteScheduler(), 20, None, 1e-4),
        "moons-euler-10-karras": ("moons", EulerDiscreteScheduler(use_karras_sigmas=True), 10, None, 1e-4),
        "moons-heun-10-karras": ("moons", HeunDiscreteScheduler(beta_start=0.0001, beta_end=0.02,
                                                                use_karras_sigmas=True), 10, None, 1e-4),
        "moons-heun-20": ("moons", HeunDiscreteScheduler(beta_start=0.0001, beta_end=0.02), 20, None, 1e-4),
        "moons-deis-10-karras": ("moons", DEISMultistepScheduler(use_karras_sigmas=True), 10, None, 1e-4),
        "moons-deis-20": ("moons", DEISMultistepScheduler(), 20, None, 1e-4),
        "deis-v-cosine-leading": ("cond", DEISMultistepScheduler(
            beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", timestep_spacing="leading"),
                                  20, 1, 1e-4),
    }
    # case folders of earlier versions go
    for old in os.listdir(HERE):
        if os.path.isfile(os.path.join(HERE, old, "case.json")) and old not in cases:
            shutil.rmtree(os.path.join(HERE, old))
    rng = np.random.default_rng(0)
    for name, (model, sched, steps, label, tol) in cases.items():
        d = os.path.join(HERE, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        sched.save_config(d)
        x_t = rng.standard_normal(specs[model].get("shape", (N, C, H, H))).astype(np.float32)
        np.save(os.path.join(d, "x_t.npy"), x_t)
        run = lambda f64: loop(sessions[model], copy.deepcopy(sched), x_t, steps, specs[model]["scalar"], label, f64)
        case = {"model": paths[model], "steps": steps, "class": label,
                "classes": 3 if specs[model]["classes"] else None, "tolerance": tol}
        expected = run(False)
        if name.endswith("-f64"):
            golden = run(True)
            scale = max(1.0, float(np.abs(golden).max()))
            case["diffusers_float32_distance"] = float(np.abs(expected - golden).max()) / scale
            expected = golden.astype(np.float32)
        if "unnormalize" in specs[model]:
            expected = specs[model]["unnormalize"](expected)
        np.save(os.path.join(d, "expected.npy"), expected)
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=1)
        print(name, "done")


if __name__ == "__main__":
    main()
