"""Runs our benchmarks and the peers' side by side, alternately, and writes benches/RESULTS.md.

    benches/compare.sh            (sets up the peers' environment, builds, then runs this)

Each row is measured by `measure` (ours, benches/src/bin/measure.rs) and `peers/peers.py`
(PyTorch, diffusers, onnxruntime) in the same run, on the same machine and threads, taking
turns: ours, theirs, ours, theirs, ... (--rounds times). A side's figure is the median over
rounds of its per-round medians.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MEASURE = os.path.join(ROOT, "target", "release", "measure")
ELBO = os.path.join(ROOT, "target", "release", "elbo")
PEERS = [sys.executable, os.path.join(HERE, "peers", "peers.py")]


def call(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def pair(args_ours, args_theirs, rounds):
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(call([MEASURE] + args_ours))
        theirs.append(call(PEERS + args_theirs))
    return ours, theirs


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def machine():
    model = "unknown CPU"
    flags = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    simd = "AVX-512" if "avx512f" in flags else ("AVX2 + FMA" if "avx2" in flags and "fma" in flags else "SSE")
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{model}, {os.cpu_count()} logical cores, {simd}; {platform.system()} {platform.release()}; {rustc}"


def fmt_t(s):
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def few_step(a, th, log):
    """10-step DPM-Solver++ 2M sampling with the ONNX MLP against diffusers' loop over
    onnxruntime, and the probability-flow ODE's likelihood against score_sde's (its VP SDE's
    ODE with scipy's RK45) on the same ONNX model and points."""
    rows = []
    log("few-step sampling ...")
    for b, g in ((1, 3.0), (10_000, 1.05)):
        o, t = pair(["dpm-sample", "--batch", str(b), "--threads", th],
                    ["dpm-sample", "--batch", str(b), "--threads", th, "--steps", "10"], a.rounds)
        ours, peer = med(o, "run_s"), med(t, "run_s")
        rows.append((f"10-step DPM-Solver++ 2M sampling, ONNX MLP, batch {b:,}: the whole run", fmt_t(ours),
                     f"diffusers DPMSolverMultistepScheduler loop {fmt_t(peer)}", peer / ours, f">= {g}x",
                     peer / ours >= g))
    log("ODE likelihood ...")
    data = os.path.join(ROOT, "target", "bench-moons-500.npy")
    subprocess.run([ELBO, "data", "--data", "two-moons", "--n", "500", "--seed", "1", "--out", data], check=True,
                   capture_output=True)
    o, t = pair(["ode", "--data", data, "--threads", th], ["ode", "--data", data, "--threads", th], a.rounds)
    ours, peer = med(o, "ode_s"), med(t, "ode_s")
    rows.append((f"probability-flow ODE NLL, 500 two-moons points, ONNX MLP, RK45 rtol = atol = 1e-5, exact divergence "
                 f"(NLL of the normalised data: ours {med(o, 'nll_normalised'):.5f} in {o[0]['nfe']} evaluations, "
                 f"theirs {med(t, 'nll_normalised'):.5f} in {t[0]['nfe']}; the model's runs are "
                 f"{100 * med(o, 'model_s') / ours:.0f}% of ours)", fmt_t(ours),
                 f"score_sde's VP-SDE likelihood, scipy solve_ivp RK45 {fmt_t(peer)}", peer / ours, ">= 2x",
                 peer / ours >= 2))
    o, t = pair(["ode", "--data", data, "--threads", th, "--native"], ["ode", "--data", data, "--threads", th], a.rounds)
    ours, peer = med(o, "ode_s"), med(t, "ode_s")
    rows.append((f"the same, ours with the checkpoint's native forward of the same weights (its fractional timesteps: "
                 f"NLL {med(o, 'nll_normalised'):.5f} in {o[0]['nfe']} evaluations)", fmt_t(ours),
                 f"score_sde's VP-SDE likelihood over the ONNX file {fmt_t(peer)}", peer / ours, ">= 2x",
                 peer / ours >= 2))
    return rows


def unet(a, th, log):
    """The U-Net: training (the same architecture and objective in PyTorch, benches/peers/unet.py),
    thread scaling and peak memory on digits and mnist5k, and the native forward of each shipped
    U-Net against ONNX Runtime on its export. Returns the rows and the training rates (for the
    equal-wall-clock bound)."""
    rows = []
    log("U-Net ...")
    unet_py = [sys.executable, os.path.join(HERE, "peers", "unet.py"), "train", "--batch", "64", "--steps", "25"]
    rates = {}
    for data, side, levels in (("digits", 8, 17), ("mnist5k", 28, 256)):
        o2, p2 = [], []
        for _ in range(a.rounds):
            o2.append(call([MEASURE, "unet-train", "--data", data, "--threads", th]))
            p2.append(call(unet_py + ["--side", str(side), "--levels", str(levels), "--threads", th]))
        ours2, peer2 = med(o2, "examples_per_s"), med(p2, "examples_per_s")
        rates[data] = (ours2, peer2)
        n_params = o2[0]["params"]
        rows.append((f"U-Net training, {data} ({side}x{side}, elbo's default U-Net: {n_params / 1e6:.2f} M parameters + "
                     f"the schedule's, PyTorch {p2[0]['params'] / 1e6:.2f} M), batch 64, VDM's bound, examples/s, {th} threads",
                     f"{ours2:,.0f}/s", f"PyTorch {peer2:,.0f}/s", ours2 / peer2, ">= 1.0x", ours2 / peer2 >= 1.0))
        # thread scaling in one process per side: blocks of steps on 1 and on `th` threads in
        # turn, so that the machine's slow spells fall on both sides of each ratio
        so = call([MEASURE, "unet-scaling", "--data", data, "--threads", th, "--rounds", str(a.scaling_rounds)])
        sp = call(unet_py[:2] + ["scaling", "--batch", "64", "--side", str(side), "--levels", str(levels),
                                 "--threads", th, "--rounds", str(a.scaling_rounds)])
        log(f"  {data} scaling, per-round ratios: ours {[round(r, 2) for r in so['ratios']]}, "
            f"PyTorch {[round(r, 2) for r in sp['ratios']]}")
        rows.append((f"U-Net training, {data}, {th} threads vs 1 (one process each, {a.scaling_rounds} rounds of "
                     f"4-step blocks on 1 and {th} threads in turn, median of the rounds' ratios; 1 thread: "
                     f"ours {so['examples_per_s_1']:,.0f}/s, PyTorch {sp['examples_per_s_1']:,.0f}/s)",
                     f"{so['scaling']:.2f}x", f"PyTorch {sp['scaling']:.2f}x", None, ">= 1.8x", so["scaling"] >= 1.8))
        mem_o, mem_p = med(o2, "peak_rss_mib"), med(p2, "peak_rss_mib")
        rows.append((f"U-Net training, {data}, peak resident memory (whole process)", f"{mem_o:,.0f} MiB",
                     f"PyTorch {mem_p:,.0f} MiB", mem_p / mem_o, "<= 1.5x PyTorch's", mem_o <= 1.5 * mem_p))
    for name in ("digits-unet", "mnist5k-unet"):
        shipped_unet = os.path.join(ROOT, "models", name)
        if not os.path.isdir(shipped_unet):
            continue
        onnx_file = os.path.join(ROOT, "target", f"bench-{name}.onnx")
        if os.path.exists(onnx_file):
            os.remove(onnx_file)
        subprocess.run([ELBO, "export", "--model", shipped_unet, "--out", onnx_file], check=True, capture_output=True)
        o, t = pair(["unet-forward", "--model", shipped_unet, "--batch", "64", "--threads", th],
                    ["unet-forward", "--model", onnx_file, "--batch", "64", "--threads", th], a.rounds)
        ours, peer = med(o, "native_s"), med(t, "ort_s")
        rows.append((f"native U-Net forward vs ONNX Runtime on its export (models/{name}), batch 64, {th} threads",
                     fmt_t(ours), f"ONNX Runtime {fmt_t(peer)}", peer / ours, ">= 1x", peer / ours >= 1))
    return rows, rates


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--scaling-rounds", type=int, default=25,
                   help="rounds of the U-Net's thread-scaling measurement (blocks on 1 and N threads in turn)")
    p.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    p.add_argument("--bound-minutes", type=float, default=7,
                   help="training time of the equal-wall-clock bound row (0: skip it)")
    p.add_argument("--only", choices=["few-step", "unet"],
                   help="run one section and print its rows (RESULTS.md is left alone unless --merge)")
    p.add_argument("--merge", action="store_true",
                   help="with --only: replace that section's rows in RESULTS.md (and its notes)")
    a = p.parse_args()
    th = str(a.threads)
    rows = []  # (work, ours, peer, ratio text, goal text, met)
    log = lambda *m: print(*m, file=sys.stderr, flush=True)
    if a.only:
        section = few_step(a, th, log) if a.only == "few-step" else unet(a, th, log)[0]
        lines = [table_row(*r) for r in section]
        print("\n".join(lines))
        if a.merge:
            merge(a.out, a.only, lines)
        return

    # 1. training
    log("training ...")
    # each round measures both thread counts back to back, so that the scaling is a ratio of
    # neighbouring measurements (a noisy neighbour on a shared machine shifts both)
    o2, p2, o1, p1 = [], [], [], []
    for _ in range(max(a.rounds, 5)):
        o2.append(call([MEASURE, "train", "--threads", th]))
        o1.append(call([MEASURE, "train", "--threads", "1"]))
        p2.append(call(PEERS + ["train", "--threads", th]))
        p1.append(call(PEERS + ["train", "--threads", "1"]))
    ours2, peer2, ours1, peer1 = (med(r, "examples_per_s") for r in (o2, p2, o1, p1))
    scale_o = statistics.median(x["examples_per_s"] / y["examples_per_s"] for x, y in zip(o2, o1))
    scale_p = statistics.median(x["examples_per_s"] / y["examples_per_s"] for x, y in zip(p2, p1))
    versions = {"torch": p2[0]["torch"]}
    rows.append((f"training, default two-moons MLP, batch 512, examples/s, {th} threads", f"{ours2:,.0f}/s",
                 f"PyTorch {peer2:,.0f}/s", ours2 / peer2, ">= 2x", ours2 / peer2 >= 2))
    rows.append(("training, 1 thread, examples/s", f"{ours1:,.0f}/s", f"PyTorch {peer1:,.0f}/s", ours1 / peer1,
                 "(information)", None))
    rows.append((f"training, {th} threads vs 1 (scaling; median of per-round ratios)", f"{scale_o:.2f}x",
                 f"PyTorch {scale_p:.2f}x", None, ">= 1.8x", scale_o >= 1.8))

    # 2. sampler updates
    log("sampler steps ...")
    bw = statistics.median(call([MEASURE, "bandwidth"])["bytes_per_s"] for _ in range(3))
    for n in (1, 1000, 1_000_000):
        o, t = pair(["step", "--n", str(n)], ["step", "--n", str(n), "--threads", th], a.rounds)
        versions["diffusers"] = t[0]["diffusers"]
        bound = 12.0 * n / bw  # read x and eps, write x (f32)
        for kind in ("ddpm", "ddim"):
            # a large DDPM update runs on every thread (elbo::noise::par_ddpm_update, the same bits)
            key = "ddpm_par_s" if kind == "ddpm" and n == 1_000_000 else kind + "_s"
            ours, peer = med(o, key), med(t, kind + "_s")
            ratio = peer / ours
            if n < 1_000_000:
                goal, met = ">= 50x", ratio >= 50
            else:
                in_bw = ours <= 2 * bound
                if kind == "ddpm":
                    goal, met = f">= 10x, and <= 2x the bandwidth bound {fmt_t(bound)}", ratio >= 10 and in_bw
                else:
                    goal, met = f"<= 2x the bandwidth bound {fmt_t(bound)}", in_bw
            what = f"one {kind.upper()} update (eps), {n:,} elements"
            if kind == "ddpm" and n == 1_000_000:
                what += (f", {th} threads (one thread: {fmt_t(med(o, 'ddpm_s'))}; the {n:,} counter-based normals "
                         f"alone: {fmt_t(med(o, 'noise_par_s'))}; PCG32's {n:,} raw 32-bit draws, one thread: "
                         f"{fmt_t(med(o, 'bits_s'))})")
            rows.append((what, fmt_t(ours),
                         f"diffusers {fmt_t(peer)}", ratio, goal, met))

    # 3. ONNX sampling
    log("ONNX sampling ...")
    goals = {1: 3.0, 512: 1.4, 10_000: 1.05}
    for b, g in goals.items():
        o, t = pair(["onnx-sample", "--batch", str(b), "--threads", th],
                    ["onnx-sample", "--batch", str(b), "--threads", th], a.rounds)
        versions["onnxruntime"] = t[0]["onnxruntime"]
        ours, peer = med(o, "step_s"), med(t, "step_s")
        out_o, out_p = med(o, "outside_run"), med(t, "outside_run")
        met = peer / ours >= g
        goal = f">= {g}x"
        if b == 10_000:
            goal += ", < 5% outside run"
            met = met and out_o < 0.05
        rows.append((f"1000-step DDPM sampling, ONNX MLP, batch {b:,}: per step (outside Session::run)",
                     f"{fmt_t(ours)} ({100 * out_o:.1f}%)", f"Python loop {fmt_t(peer)} ({100 * out_p:.0f}%)",
                     peer / ours, goal, met))

    # 3b. few-step sampling and the ODE likelihood
    rows += few_step(a, th, log)

    # 4. native forward vs ONNX Runtime
    log("forward ...")
    o, t = pair(["forward", "--batch", "10000", "--threads", th], ["forward", "--batch", "10000", "--threads", th],
                a.rounds)
    ours, peer = med(o, "native_s"), med(t, "ort_s")
    rows.append(("native MLP forward vs ONNX Runtime run, same weights, batch 10,000", fmt_t(ours),
                 f"ONNX Runtime {fmt_t(peer)}", peer / ours, ">= 1x", peer / ours >= 1))

    # 5. the full bound
    log("bound ...")
    data = os.path.join(ROOT, "target", "bench-moons-2000.npy")
    subprocess.run([ELBO, "data", "--data", "two-moons", "--n", "2000", "--seed", "1", "--out", data], check=True,
                   capture_output=True)
    o, t = pair(["bound", "--data", data, "--threads", th], ["bound", "--data", data, "--threads", th], a.rounds)
    ours, peer = med(o, "bound_s"), med(t, "bound_s")
    bpd_o, bpd_p = med(o, "bpd_normalised"), med(t, "bpd_normalised")
    rows.append((f"full bound, T = 1000, 2,000 points, ONNX MLP (bits/dim of the normalised data: ours {bpd_o:.4f}, "
                 f"theirs {bpd_p:.4f})", fmt_t(ours), f"calc_bpd_loop {fmt_t(peer)}", peer / ours, ">= 2x",
                 peer / ours >= 2))

    unet_rows, rates = unet(a, th, log)
    rows += unet_rows
    # 7. the bound at equal wall-clock time: each side trains on mnist5k's training split for the
    # steps its own throughput above fits in --bound-minutes (the same settings: batch 64, lr 1e-3,
    # warm-up 100 then cosine decay, EMA 0.999), then the EMA model's held-out bits/dim with 20
    # stratified log-SNR levels
    if a.bound_minutes > 0:
        log(f"U-Net bound after {a.bound_minutes} minutes ...")
        ours_rate, peer_rate = rates["mnist5k"]
        secs = a.bound_minutes * 60
        s_ours, s_peer = int(secs * ours_rate / 64), int(secs * peer_rate / 64)
        run_dir = os.path.join(ROOT, "target", "bench-bound-mnist5k")
        subprocess.run(["rm", "-rf", run_dir], check=True)
        t0 = datetime.datetime.now()
        subprocess.run([ELBO, "train", "--data", "mnist5k", "--schedule", "learned", "--batch", "64", "--lr", "1e-3",
                        "--ema-decay", "0.999", "--steps", str(s_ours), "--threads", th, "--out", run_dir],
                       check=True, capture_output=True)
        train_ours = (datetime.datetime.now() - t0).total_seconds()
        ev = subprocess.run([ELBO, "eval", "--model", run_dir, "--data", "mnist5k", "--split", "test", "--times", "20",
                             "--mmd-samples", "0", "--threads", th, "--json"], check=True, capture_output=True, text=True)
        ev = json.loads(ev.stdout.strip().splitlines()[-1])
        pb = call([sys.executable, os.path.join(HERE, "peers", "unet.py"), "bound", "--data", "mnist5k",
                   "--steps", str(s_peer), "--threads", th, "--times", "20"])
        rows.append((f"U-Net held-out bound, mnist5k (1,000 test images, 256 levels), bits/dim after {a.bound_minutes} minutes "
                     f"of training on {th} threads (ours {s_ours} steps in {train_ours:.0f} s, PyTorch {s_peer} steps in "
                     f"{pb['train_s']:.0f} s; batch 64, the same settings)", f"{ev['bpd']:.3f} +- {ev['bpd_se']:.3f}",
                     f"PyTorch {pb['bpd']:.3f} +- {pb['bpd_se']:.3f}", None, "below the peer's",
                     ev["bpd"] < pb["bpd"]))

    lines = [
        "# Benchmarks against the peers",
        "",
        "Regenerate (installs the peers into `.local/peers`, builds, runs both sides alternately; about 30 minutes; `--bound-minutes 0` skips the 15-minute bound row):",
        "",
        "```sh",
        "benches/compare.sh",
        "```",
        "",
        f"- Machine: {machine()}",
        f"- Peers: PyTorch {versions['torch']}, diffusers {versions['diffusers']}, onnxruntime {versions['onnxruntime']} "
        f"(ours loads the same onnxruntime library); {th} threads on both sides unless the row says otherwise.",
        f"- Memory bandwidth (STREAM-style triad over 3 x 64 MiB, measured in this run): {bw / 1e9:.1f} GB/s.",
        f"- {a.rounds} rounds ({max(a.rounds, 5)} for training), ours and theirs in turn; each figure is the median "
        "over rounds of per-round medians.",
        f"- Written {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "| work | elbo | peer | ratio (peer time / ours) | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    lines += [table_row(*r) for r in rows]
    lines.append("")
    write_with_notes(a.out, lines)
    print("\n".join(lines))


def table_row(work, ours, peer, ratio, goal, met):
    r = "" if ratio is None else f"{ratio:.2f}x"
    m = "" if met is None else ("yes" if met else "**no**")
    return f"| {work} | {ours} | {peer} | {r} | {goal} | {m} |"


# the first words of each section's rows, as the table writes them
SECTION_ROWS = {
    "few-step": ("| 10-step DPM-Solver++ 2M sampling", "| probability-flow ODE NLL", "| the same, ours with the checkpoint"),
    "unet": ("| U-Net training, digits", "| U-Net training, mnist5k", "| native U-Net forward"),
}


def write_with_notes(out, lines):
    """Writes the table lines, then benches/RESULTS-notes.md, to `out` (atomically)."""
    notes = os.path.join(HERE, "RESULTS-notes.md")
    if os.path.exists(notes):
        lines = lines + [open(notes).read()]
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, out)


def merge(out, section, new_rows):
    """Replaces `section`'s rows of the table in `out` by `new_rows` (where its first row stood),
    says in the header when and where they were measured, and appends the current notes."""
    old = open(out).read().split("\n")
    h0 = next(i for i, l in enumerate(old) if l.startswith("| work |"))
    t_end = next((i for i in range(h0, len(old)) if not old[i].startswith("|")), len(old))
    table, inserted = [], False
    for row in old[h0:t_end]:
        if row.startswith(SECTION_ROWS[section]):
            if not inserted:
                table += new_rows
                inserted = True
        else:
            table.append(row)
    if not inserted:
        table += new_rows
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pre = [l for l in old[:h0] if not l.startswith(f"- The {section} rows: measured")]
    last_item = max(i for i, l in enumerate(pre) if l.startswith("- "))
    pre.insert(last_item + 1, f"- The {section} rows: measured {when} by `benches/compare.sh --only {section} --merge` "
                              f"on {machine()}.")
    write_with_notes(out, pre + table + [""])

if __name__ == "__main__":
    main()
