"""Estimator quality per second: Monte-Carlo error of shared vs independent weight draws.

For ``detflip`` and ``flip``, at S = 10 / 30 / 100, ``vipann.predict`` is run with ``--seeds``
different seeds on the same clips, and the spread over seeds of what a user reads off a prediction
is measured: the mean probabilities, and the total and epistemic uncertainty (entropy
decomposition) of every clip. Three ways of drawing the weight noise:

* ``independent``: one weight draw per sample, bayesian-torch's element-wise signs (a plain
  forward pass's noise, VI-PANN's inference);
* ``shared``: one draw per layer and pass serving all samples and clips of the pass, sign vectors
  per row (Flipout as Wen et al. 2018 define it);
* ``shared/1``: shared draws with one sample per pass, i.e. independent exact draws of the weight
  posterior: the same target distribution as ``shared`` without its within-pass correlation.

Printed per (method, S, mode): median wall time of one ``predict`` call (``--time-repeats``
uncached calls; the seeds' calls reuse the deterministic backbone, which only the noise
follows); Var over seeds of the
mean probabilities (averaged over clips and classes), of the total and of the epistemic
uncertainty (averaged over clips); the mean epistemic uncertainty (the target, and the small-S
bias); the *effective sample size* of the mean, ``S_eff = sigma² / Var(mean)`` with ``sigma²`` the
per-sample variance of the probabilities (``S_eff = S`` for independent samples); the implied mean
pairwise correlation of the samples ``rho = (S / S_eff - 1) / (S - 1)``; and effective samples
per second ``S_eff / time``. For ``shared``, the variance ratios to ``shared/1`` at the same S
quantify what sharing one draw costs in precision (1.0: nothing).

The posterior is MOPED (``--delta``) around a randomly initialised deterministic network whose
classifier is scaled so that predictions are confident (``--logit-scale``); no trained weights
are needed, and the comparison between draw modes does not depend on them.

    python benchmarks/bench_mc_quality.py             # detflip-resnet54 (64 seeds), flip-cnn6 (16 seeds)
    python benchmarks/bench_mc_quality.py --quick     # tiny network, S = 10 / 30, 6 seeds (~1 min)
    python benchmarks/bench_mc_quality.py --arch resnet54 --methods detflip --seconds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _machine

import vipann
from vipann.zoo.convert import moped

MODES = (("independent", "independent", None), ("shared", "shared", None), ("shared/1", "shared", "batch"))


def cache_prefix(model):
    """Memoise the deterministic prefix ``run_stages(x, 0, split)`` (its input keyed by content).

    Only the noise differs between seeds, so the statistics need not recompute the backbone of
    ``detflip`` every time; the wall times come from separate, uncached ``predict`` calls.
    """
    run_stages = type(model).run_stages
    split = model.first_stochastic_stage()
    cache = {}

    def cached(x, start=0, stop=None):
        if start != 0 or stop is None or stop > split:  # only the deterministic prefix is cached
            return run_stages(model, x, start, stop)
        key = (tuple(x.shape), stop, float(x.double().sum()), float(x.double().square().sum()))
        if key not in cache:
            cache[key] = run_stages(model, x, start, stop)
        return cache[key]

    model.run_stages = cached
    return lambda: model.__dict__.pop("run_stages", None)


def posterior(method, args):
    torch.manual_seed(0)
    det = vipann.create_model(f"det-{args.arch}", num_classes=args.classes).eval()
    with torch.no_grad():
        det.fc_audioset.weight.mul_(args.logit_scale)
    return moped(det, method, delta=args.delta).eval()


def run(model, x, samples, seed, draws, max_rows, args):
    result = vipann.predict(
        model,
        x,
        num_samples=samples,
        generator=seed,
        draws=draws,
        max_rows=max_rows,
        window_seconds=args.seconds,
        multilabel=False,
    )
    return result.probs.double()


def estimates(probs):
    from vipann.uncertainty import decompose

    parts = decompose(probs, multilabel=False)
    return probs.mean(0), parts.total, parts.epistemic, probs.var(0)


def measure(model, x, samples, mode, args):
    _, draws, rows = mode
    max_rows = x.shape[0] if rows == "batch" else None
    times = [_machine.timed(lambda: run(model, x, samples, 0, draws, max_rows, args)) for _ in range(args.time_repeats)]
    uncache = cache_prefix(model)
    try:
        parts = [estimates(run(model, x, samples, 1000 + seed, draws, max_rows, args)) for seed in range(args.seeds)]
    finally:
        uncache()
    means, totals, epis, sigma2 = (list(p) for p in zip(*parts))
    means, totals, epis = torch.stack(means), torch.stack(totals), torch.stack(epis)
    var_mean = means.var(0).mean().item()
    per_sample = torch.stack(sigma2).mean().item()
    s_eff = per_sample / var_mean
    return {
        "time": statistics.median(t.seconds for t in times),
        "foreign": statistics.median(t.foreign for t in times),
        "var_mean": var_mean,
        "var_total": totals.var(0).mean().item(),
        "var_epi": epis.var(0).mean().item(),
        "epi": epis.mean().item(),
        "total": totals.mean().item(),
        "s_eff": s_eff,
        "rho": (samples / s_eff - 1) / (samples - 1),
    }


QUICK = dict(arch="tiny", samples="10,30", seeds=6, time_repeats=1)


def parse_args(argv=None):
    """The command line; ``--quick`` changes the defaults to :data:`QUICK`, explicit flags still win."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="auto", help="auto: resnet54 for detflip (one backbone pass), cnn6 for flip")
    parser.add_argument("--methods", default="detflip,flip")
    parser.add_argument("--samples", default="10,30,100")
    parser.add_argument("--seeds", type=int, default=None, help="default: 64 for detflip, 16 for flip")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--delta", type=float, default=0.1, help="MOPED: posterior sigma = delta * |w|")
    parser.add_argument("--logit-scale", type=float, default=30.0, help="scale of the classifier's weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-repeats", type=int, default=3, help="uncached predict calls timed per row")
    parser.add_argument("--quick", action="store_true", help=f"small sizes {QUICK}; explicit flags still win")
    if parser.parse_args(argv).quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.samples.split(",")]
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.clips} clips of {args.seconds:g} s, "
        f"C={args.classes}, MOPED delta {args.delta:g}; {_machine.load_average()}"
    )
    auto, seeds = args.arch == "auto", args.seeds
    for method in args.methods.split(","):
        if auto:
            args.arch = "resnet54" if method == "detflip" else "cnn6"
        if seeds is None:  # detflip's seeds only re-run the head (the backbone is cached): cheap
            args.seeds = 64 if method == "detflip" else 16
        model = posterior(method, args)
        rate = model.sample_rate
        x = 0.1 * torch.randn(args.clips, int(args.seconds * rate), generator=torch.Generator().manual_seed(1))
        run(model, x, 2, 0, "shared", None, args)  # warm-up
        print(f"\n## {method}-{args.arch}, {args.seeds} seeds")
        print(
            f"{'S':>4} {'draws':>11} {'time s':>7} {'Var mean p':>10} {'Var total':>10} {'Var epist':>10} "
            f"{'E[epist]':>8} {'S_eff':>6} {'rho':>7} {'eff/s':>7} {'Var ratios vs shared/1':>24}"
        )
        for samples in sizes:
            rows = {name: measure(model, x, samples, mode, args) for mode in MODES for name in [mode[0]]}
            for name, r in rows.items():
                ratios = ""
                if name == "shared":
                    ref = rows["shared/1"]
                    ratios = (
                        f"mean {r['var_mean'] / ref['var_mean']:.2f} total {r['var_total'] / ref['var_total']:.2f} "
                        f"epist {r['var_epi'] / ref['var_epi']:.2f}"
                    )
                print(
                    f"{samples:>4} {name:>11} {r['time']:7.2f} {r['var_mean']:10.2e} {r['var_total']:10.2e} "
                    f"{r['var_epi']:10.2e} {r['epi']:8.4f} {r['s_eff']:6.1f} {r['rho']:7.4f} "
                    f"{r['s_eff'] / r['time']:7.1f} {ratios:>24}"
                )
            shared, independent = rows["shared"], rows["independent"]
            gain = (shared["s_eff"] / shared["time"]) / (independent["s_eff"] / independent["time"])
            print(
                f"ratio: {method}-{args.arch} S={samples} effective samples per second, shared / independent: "
                f"{gain:.2f}x (foreign load {statistics.median(r['foreign'] for r in rows.values()):.2f})"
            )
    print(f"\ndone; {_machine.load_average()}")


if __name__ == "__main__":
    main()
