"""Real diffusers exports and the goldens of diffusers' own sampling loops over them.

Builds small `UNet2DModel`s with random weights (unconditional, class-conditional, and one whose
timestep input is a scalar), exports them with `torch.onnx.export(dynamo=False)` at opset 17 the
way optimum exports UNets (inputs `sample`, `timestep`, `class_labels`; output `out_sample`), saves
each case's scheduler with diffusers' `save_config` (its `scheduler_config.json`), and runs
diffusers' DDIMScheduler / DDPMScheduler loop over onnxruntime from a fixed x_T. The Rust test
`host/tests/diffusers_exports.rs` runs `elbo sample` on each folder with only its saved config.

Run: `benches/peers/setup.sh` (torch 2.15.0, diffusers 0.42.1, onnxruntime 1.31.1 into
.local/peers), then `.local/peers/bin/python tests/diffusers/make.py`. Output: one folder per
case under tests/diffusers/ (model.onnx shared through ../models/), a few hundred KB in all.
"""

import json
import os
import shutil

import numpy as np
import onnxruntime as ort
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

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


def export(m, path, scalar_timestep=False, classes=False):
    x = torch.randn(N, C, H, H)
    t = torch.tensor(10, dtype=torch.int64) if scalar_timestep else torch.full((N,), 10, dtype=torch.int64)
    args = (x, t) + ((torch.zeros(N, dtype=torch.int64),) if classes else ())
    names = ["sample", "timestep"] + (["class_labels"] if classes else [])
    axes = {"sample": {0: "batch"}, "out_sample": {0: "batch"}}
    if not scalar_timestep:
        axes["timestep"] = {0: "batch"}
    if classes:
        axes["class_labels"] = {0: "batch"}
    torch.onnx.export(Wrapped(m), args, path, input_names=names, output_names=["out_sample"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)


def loop(session, scheduler, x_t, steps, scalar_timestep=False, label=None):
    """diffusers' sampling loop (as its pipelines run it) over onnxruntime."""
    scheduler.set_timesteps(steps)
    x = torch.from_numpy(x_t.copy())
    for t in scheduler.timesteps:
        feed = {"sample": x.numpy().astype(np.float32)}
        feed["timestep"] = np.array(int(t), dtype=np.int64) if scalar_timestep else np.full((N,), int(t), dtype=np.int64)
        if label is not None:
            feed["class_labels"] = np.full((N,), label, dtype=np.int64)
        out = torch.from_numpy(session.run(None, feed)[0])
        x = scheduler.step(out, t, x, generator=torch.Generator().manual_seed(0)).prev_sample
    return x.numpy().astype(np.float32)


def main():
    models = os.path.join(HERE, "models")
    shutil.rmtree(models, ignore_errors=True)
    os.makedirs(models)
    specs = {
        "uncond": dict(m=unet(seed=1), scalar=False, classes=False),
        "cond": dict(m=unet(classes=3, seed=2), scalar=False, classes=True),
        "scalar": dict(m=unet(seed=3), scalar=True, classes=False),
    }
    sessions = {}
    for name, s in specs.items():
        path = os.path.join(models, f"{name}.onnx")
        export(s["m"], path, s["scalar"], s["classes"])
        sessions[name] = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

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
    }
    rng = np.random.default_rng(0)
    for name, (model, sched, steps, label, tol) in cases.items():
        d = os.path.join(HERE, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        sched.save_config(d)
        x_t = rng.standard_normal((N, C, H, H)).astype(np.float32)
        np.save(os.path.join(d, "x_t.npy"), x_t)
        np.save(os.path.join(d, "expected.npy"), loop(sessions[model], sched, x_t, steps, specs[model]["scalar"], label))
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump({"model": f"models/{model}.onnx", "steps": steps, "class": label,
                       "classes": 3 if specs[model]["classes"] else None, "tolerance": tol}, f, indent=1)
        print(name, "done")


if __name__ == "__main__":
    main()
