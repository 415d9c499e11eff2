"""Monte-Carlo prediction speed and memory: ``vipann.predict`` vs the loop of S full forward passes.

The baseline is what the original VI-PANN code does (``pytorch_utils.forward`` with
``n_samples=S``): S complete forward passes of the model with its stochastic layers on (for Flipout,
bayesian-torch's sampling: one weight draw per pass). Loop and ``predict`` run in this process on the
same weights, inputs and threads, interleaved repeat by repeat; each printed ratio is the median over
repeats of loop time / predict time, timed back to back, next to the machine's load. Peak memory
is measured in fresh child processes (peak resident memory of the run, after building the model).

Targets (ResNet54, S=30, B=2, 5 s clips, 50 classes, 2 threads on the project's CPU):

* ``detflip`` with shared draws >= 25x;
* ``flip`` with shared draws >= 2x, with peak memory <= 2x the loop's;
* ``drop`` >= 1.2x (``--profile`` shows where its time goes).

    python benchmarks/bench_predict.py                  # the targets above (~15 min on 2 idle cores)
    python benchmarks/bench_predict.py --quick          # cnn6, 2 s clips, S=10 (about a minute)
    python benchmarks/bench_predict.py --methods drop --profile
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine

import vipann
from vipann.layers import mc_sampling

TARGETS = {"detflip": 25.0, "drop": 1.2, "flip": 2.0}
MEMORY_TARGET = 2.0  # flip: predict's peak memory <= 2x the loop's


def loop_baseline(model, x, samples):
    """VI-PANN's Monte-Carlo inference: S full forward passes with the stochastic layers on."""
    out = []
    with torch.no_grad(), mc_sampling(model):
        for _ in range(samples):
            out.append(torch.sigmoid(model(x)))
    return torch.stack(out)


def run_predict(model, x, samples, seconds, draws, max_rows=None):
    draws = None if draws == "default" else draws
    return vipann.predict(
        model, x, num_samples=samples, window_seconds=seconds, multilabel=True, draws=draws, max_rows=max_rows
    )


def build(method, args):
    torch.manual_seed(0)
    model = vipann.create_model(f"{method}-{args.arch}", num_classes=args.classes).eval()
    x = 0.1 * torch.randn(args.batch, int(args.seconds * model.sample_rate), generator=torch.Generator().manual_seed(0))
    return model, x


def modes_of(method, args):
    return args.draws.split(",") if method in ("flip", "detflip") else ["default"]


def memory_child(args):
    """Child process: build, warm up, reset the peak, run one configuration, print the peak."""
    torch.set_num_threads(args.threads)
    method, mode = args.memory_child
    model, x = build(method, args)
    if mode == "loop":
        loop_baseline(model, x, 1)
    else:
        run_predict(model, x, 2, args.seconds, mode)
    base = _machine.rss_mb()
    exact = _machine.reset_peak()
    if mode == "loop":
        loop_baseline(model, x, args.samples)
    else:
        run_predict(model, x, args.samples, args.seconds, mode, args.max_rows)
    print(json.dumps({"peak": _machine.peak_rss_mb(), "base": base, "exact": exact}))


def child_args(args, method, mode):
    return [
        __file__,
        *("--arch", args.arch, "--samples", str(args.samples), "--batch", str(args.batch)),
        *("--seconds", str(args.seconds), "--classes", str(args.classes), "--threads", str(args.threads)),
        *("--memory-child", method, mode),
        *(("--max-rows", str(args.max_rows)) if args.max_rows else ()),
    ]


def memory(args, method):
    loop = _machine.run_child(child_args(args, method, "loop"))
    lines = []
    for mode in modes_of(method, args):
        ours = _machine.run_child(child_args(args, method, mode))
        ratio = ours["peak"] / loop["peak"]
        verdict = ""
        if method == "flip" and mode == "shared":
            verdict = f" (target <= {MEMORY_TARGET:g}x: {'MET' if ratio <= MEMORY_TARGET else 'MISSED'})"
        lines.append(
            f"ratio: memory {method}-{args.arch} draws={mode}: peak {ours['peak']:.0f} MiB vs loop "
            f"{loop['peak']:.0f} MiB = {ratio:.2f}x{verdict}; above the built model: "
            f"{ours['peak'] - ours['base']:.0f} vs {loop['peak'] - loop['base']:.0f} MiB"
        )
    return lines


def profile_predict(model, x, args, draws):
    """torch.profiler over one ``predict`` call: the operators that take the time, and the FLOP rate."""
    from torch.profiler import ProfilerActivity, profile

    from vipann.models.profile import count_macs

    report = count_macs(model, args.seconds)
    split = model.first_stochastic_stage()
    names = list(report.per_stage)
    first = names.index(model.stage_names[split])
    prefix, suffix = sum(list(report.per_stage.values())[:first]), sum(list(report.per_stage.values())[first:])
    macs = args.batch * (prefix + args.samples * suffix)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        sample = _machine.timed(lambda: run_predict(model, x, args.samples, args.seconds, draws))
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    groups = {
        "convolution": ("conv", "mkldnn_convolution"),
        "batch norm": ("batch_norm",),
        "dropout masks": ("bernoulli", "rand", "dropout", "uniform_"),
        "matmul": ("mm", "addmm", "linear", "bmm"),
        "pooling": ("pool", "mean", "amax", "max"),
    }
    shares = dict.fromkeys([*groups, "elementwise and other"], 0.0)
    for event in events:
        key = next((g for g, keys in groups.items() if any(k in event.key for k in keys)), "elementwise and other")
        shares[key] += event.self_cpu_time_total
    print(
        f"  profile of predict (S={args.samples}, B={args.batch}, draws={draws}): {sample.seconds:.2f} s, "
        f"{2 * macs / sample.seconds / 1e9:.0f} GFLOP/s over {macs / 1e9:.1f} GMACs "
        f"(prefix {prefix / 1e9:.2f} GMACs/clip once, suffix {suffix / 1e9:.2f} GMACs/clip/sample)"
    )
    print("  self CPU time by kind: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in shares.items()))
    print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))
    return 2 * macs / sample.seconds / 1e9


QUICK = dict(arch="cnn6", seconds=2.0, samples=10, repeats=2)


def parse_args(argv=None):
    """The command line; ``--quick`` changes the defaults to :data:`QUICK`, explicit flags still win."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet54")
    parser.add_argument("--methods", default="detflip,drop,flip")
    parser.add_argument("--draws", default="shared,independent", help="predict's draws for flip/detflip")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-rows", type=int, default=None, help="predict's max_rows (default: its own)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--profile", action="store_true", help="profile predict of each method (torch.profiler)")
    parser.add_argument("--quick", action="store_true", help=f"small sizes {QUICK}; explicit flags still win")
    parser.add_argument("--memory-child", nargs=2, metavar=("METHOD", "MODE"), help=argparse.SUPPRESS)
    if parser.parse_args(argv).quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        return memory_child(args)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.arch}, S={args.samples}, B={args.batch}, "
        f"{args.seconds:g} s clips, C={args.classes}, {args.repeats} repeats; {_machine.load_average()}"
    )
    for method in args.methods.split(","):
        model, x = build(method, args)
        modes = modes_of(method, args)
        fns = {"loop": lambda m=model, x=x: loop_baseline(m, x, args.samples)}
        for mode in modes:
            fns[mode] = lambda m=model, x=x, d=mode: run_predict(m, x, args.samples, args.seconds, d, args.max_rows)
        loop_baseline(model, x, 1)  # warm-up
        for mode in modes:
            run_predict(model, x, 2, args.seconds, mode)
        series = _machine.interleaved(fns, args.repeats)
        loop = series["loop"]
        print(f"{method}-{args.arch}: loop of {args.samples} forwards {loop.median:.2f} s (foreign {loop.foreign:.2f})")
        for mode in modes:
            ratio = _machine.paired_ratio(loop, series[mode])
            target = TARGETS.get(method) if mode == "shared" or method == "drop" else None
            verdict = f" (target >= {target:g}x: {'MET' if ratio >= target else 'MISSED'})" if target else ""
            print(f"  predict draws={mode}: {series[mode].median:.2f} s (foreign {series[mode].foreign:.2f})")
            print(
                f"ratio: {method}-{args.arch} S={args.samples} B={args.batch} draws={mode}: {ratio:.2f}x "
                f"faster than the loop{verdict}"
            )
        if args.profile:
            profile_predict(model, x, args, modes[0])
        del model
        if not args.no_memory:
            for line in memory(args, method):
                print(line)
    print(f"done; {_machine.load_average()}")


if __name__ == "__main__":
    main()
