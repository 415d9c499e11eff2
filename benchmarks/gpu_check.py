"""The Monte-Carlo table on a GPU, and CPU/GPU agreement: one prepared script for a lent device.

Run it as is on a machine with CUDA (a session that gets the ``device`` tool's GPU):

    python benchmarks/gpu_check.py                      # ResNet54, S=30, B = 8 and 32, fp32 and bf16
    python benchmarks/gpu_check.py --device cpu --quick  # dry run of every step on the CPU (tiny net)

What it does (all on the same weights and inputs; fp32 means TF32 off):

1. The device, torch and CUDA versions; the matmul peak (8192³ fp32 and bf16) measured there.
2. Agreement with the CPU. Deterministic: the ``det`` forward and the posterior-mean forward of
   ``drop``/``flip``/``detflip`` (stochastic modules off) on CPU and device, fp32: max |Δp| must be
   <= 1e-4; bf16 autocast on the device vs fp32: max |Δp| reported, must be <= 2e-2.
   Monte-Carlo: ``predict`` with 64 samples of ``detflip`` and ``flip`` (shared draws) on both: the
   random streams differ, so the mean probabilities are compared in distribution (|Δ| within 5
   standard errors for every clip and class).
3. The table, per dtype (fp32, bf16 autocast) and batch size: ``det`` forward rate as a fraction
   of the measured matmul peak; for ``detflip``, ``drop``, ``flip`` the loop of S full forward
   passes vs ``predict`` with independent and with shared draws: time, speed-up and peak memory
   (``torch.cuda.max_memory_allocated``), each a median of ``--repeats``.

Prints a Markdown table for ``benchmarks/RESULTS.md`` and, when ``$OUT`` is set, writes
``$OUT/gpu_check.json`` and ``$OUT/gpu_check.md``. Exits with status 1 if an agreement check fails.
On a machine without CUDA and without ``--device cpu`` it says so and exits 0 (CI never depends
on it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import vipann
from vipann.layers import mc_sampling

METHODS = ("detflip", "drop", "flip")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    fn()  # warm-up (kernels, allocator)
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory(fn, device):
    if device.type != "cuda":
        return float("nan")
    sync(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def matmul_peak(device, dtype, n):
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    seconds = timed(lambda: torch.mm(a, b), device, 10)
    return 2 * n**3 / seconds / 1e9


def autocast(device, dtype):
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build(method, args, device):
    torch.manual_seed(0)
    return vipann.create_model(f"{method}-{args.arch}", num_classes=args.classes).eval().to(device)


def clips(batch, args, rate, device):
    g = torch.Generator().manual_seed(batch)
    return (0.1 * torch.randn(batch, int(args.seconds * rate), generator=g)).to(device)


def loop(model, x, samples, device, dtype):
    with torch.no_grad(), mc_sampling(model), autocast(device, dtype):
        return torch.stack([torch.sigmoid(model(x).float()) for _ in range(samples)])


def predict(model, x, samples, device, dtype, draws, generator=None):
    with autocast(device, dtype):
        result = vipann.predict(
            model,
            x,
            num_samples=samples,
            window_seconds=x.shape[-1] / model.sample_rate,
            multilabel=True,
            draws=draws,
            generator=generator,
        )
    return result.probs.float()


def agreement(args, device):
    """CPU vs device checks; returns (lines, all passed)."""
    cpu = torch.device("cpu")
    lines, ok = [], True
    x_cpu = clips(2, args, 32000 if args.arch != "tiny" else 16000, cpu)
    for method in ("det", *METHODS):
        ref_model = build(method, args, cpu)
        dev_model = build(method, args, device)
        x_cpu = clips(2, args, ref_model.sample_rate, cpu)
        with torch.no_grad():
            ref = torch.sigmoid(ref_model(x_cpu))
            got = torch.sigmoid(dev_model(x_cpu.to(device))).cpu()
            with autocast(device, "bf16"):
                low = torch.sigmoid(dev_model(x_cpu.to(device)).float()).cpu()
        d32, d16 = (got - ref).abs().max().item(), (low - ref).abs().max().item()
        good = d32 <= 1e-4 and d16 <= 2e-2
        ok &= good
        lines.append(
            f"{method}-{args.arch} mean forward: max|dp| fp32 {d32:.1e} (<= 1e-4), bf16 {d16:.1e} (<= 2e-2): "
            f"{'ok' if good else 'FAILED'}"
        )
        if method in ("detflip", "flip"):
            samples = args.mc_samples
            on_cpu = predict(ref_model, x_cpu, samples, cpu, "fp32", "shared", torch.Generator(cpu).manual_seed(0))
            gen = torch.Generator(device).manual_seed(0)
            on_dev = predict(dev_model, x_cpu.to(device), samples, device, "fp32", "shared", gen).cpu()
            se = torch.sqrt((on_cpu.var(0) + on_dev.var(0)) / samples) + 1e-6
            z = ((on_cpu.mean(0) - on_dev.mean(0)).abs() / se).max().item()
            good = z <= 5
            ok &= good
            lines.append(
                f"{method}-{args.arch} Monte-Carlo mean over {samples} shared draws: max z {z:.2f} (<= 5): "
                f"{'ok' if good else 'FAILED'}"
            )
    return lines, ok


def table(args, device):
    rows = []
    for dtype in args.dtypes.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            det = build("det", args, device)
            x = clips(batch, args, det.sample_rate, device)
            from vipann.models.profile import count_macs

            flop = 2 * count_macs(det, args.seconds, batch_size=batch).total
            t_det = timed(lambda m=det, x=x, t=dtype: loop(m, x, 1, device, t), device, args.repeats)
            peak = args.peaks["bf16" if dtype == "bf16" else "fp32"]
            rows.append(
                {
                    "dtype": dtype,
                    "batch": batch,
                    "method": "det",
                    "forward_s": t_det,
                    "gflops": flop / t_det / 1e9,
                    "fraction_of_peak": flop / t_det / 1e9 / peak,
                }
            )
            del det
            for method in METHODS:
                model = build(method, args, device)
                row = {"dtype": dtype, "batch": batch, "method": method}
                fns = {"loop": lambda m=model, x=x, t=dtype: loop(m, x, args.samples, device, t)}
                for draws in ("independent", "shared"):
                    fns[draws] = lambda m=model, x=x, d=draws, t=dtype: predict(m, x, args.samples, device, t, d)
                for name, fn in fns.items():
                    row[f"{name}_s"] = timed(fn, device, args.repeats)
                    row[f"{name}_mib"] = peak_memory(fn, device)
                for draws in ("independent", "shared"):
                    row[f"{draws}_speedup"] = row["loop_s"] / row[f"{draws}_s"]
                rows.append(row)
                del model
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            print(f"  measured {dtype} B={batch}", flush=True)
    return rows


def markdown(rows, args, env):
    out = [
        f"GPU table: {env['device']}, torch {env['torch']}, CUDA {env['cuda']}; {args.arch}, S={args.samples}, "
        f"{args.seconds:g} s clips, C={args.classes}; matmul peak fp32 {args.peaks['fp32']:.0f} GFLOP/s, "
        f"bf16 {args.peaks['bf16']:.0f} GFLOP/s (TF32 off).",
        "",
        "| dtype | B | method | loop s | predict independent s (x) | predict shared s (x) "
        "| peak MiB loop / ind. / shared |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["method"] == "det":
            out.append(
                f"| {r['dtype']} | {r['batch']} | det forward | {r['forward_s']:.4f} | {r['gflops']:.0f} GFLOP/s = "
                f"{100 * r['fraction_of_peak']:.0f} % of the {r['dtype']} peak | | |"
            )
        else:
            out.append(
                f"| {r['dtype']} | {r['batch']} | {r['method']} | {r['loop_s']:.3f} | {r['independent_s']:.3f} "
                f"({r['independent_speedup']:.1f}x) | {r['shared_s']:.3f} ({r['shared_speedup']:.1f}x) | "
                f"{r['loop_mib']:.0f} / {r['independent_mib']:.0f} / {r['shared_mib']:.0f} |"
            )
    return "\n".join(out)


QUICK = dict(arch="tiny", samples=4, mc_samples=16, batches="2", seconds=1.0, repeats=1)


def parse_args(argv=None):
    """The command line; ``--quick`` changes the defaults to :data:`QUICK`, explicit flags still win."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="resnet54")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--mc-samples", type=int, default=64, help="samples of the CPU/GPU Monte-Carlo check")
    parser.add_argument("--batches", default="8,32")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help=f"small sizes {QUICK}; explicit flags still win")
    if parser.parse_args(argv).quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here, nothing measured (run it on a lent GPU; --device cpu for a dry run)")
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    size = 8192 if device.type == "cuda" else 1024
    args.peaks = {"fp32": matmul_peak(device, torch.float32, size), "bf16": matmul_peak(device, torch.bfloat16, size)}
    print(f"{env}; matmul peak fp32 {args.peaks['fp32']:.0f} GFLOP/s, bf16 {args.peaks['bf16']:.0f} GFLOP/s")
    lines, ok = agreement(args, device)
    print("\n".join(lines))
    rows = table(args, device)
    text = markdown(rows, args, env) + "\n\nAgreement with the CPU:\n\n" + "\n".join(f"- {line}" for line in lines)
    print(text)
    for r in rows:
        if r["method"] != "det":
            print(
                f"ratio: gpu {r['method']}-{args.arch} {r['dtype']} B={r['batch']} S={args.samples} draws=shared: "
                f"{r['shared_speedup']:.2f}x faster than the loop"
            )
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        payload = {"env": env, "args": {k: v for k, v in vars(args).items()}, "rows": rows, "agreement": lines}
        (Path(out) / "gpu_check.json").write_text(json.dumps(payload, indent=1))
        (Path(out) / "gpu_check.md").write_text(text + "\n")
    print("agreement: " + ("all checks passed" if ok else "SOME CHECKS FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
