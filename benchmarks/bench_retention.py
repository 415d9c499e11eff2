"""Retention-curve and uncertainty-decomposition timings: vipann versus the scikit-learn reference loop.

The reference method (REFERENCE.md §5, ``plot_ratio_data_retained``) sorts the clips by uncertainty and
calls scikit-learn (``accuracy_score`` or macro ``average_precision_score``) once per retention point.
Its full multi-label job (60 curves at AudioSet scale) takes about 1.7 h, so the scikit-learn side of
that case is timed on a few retention points (and optionally one whole curve) and extrapolated; the
output says which numbers are extrapolated. Everything else is measured side by side in this run.

Synthetic data as in perf-baseline.md §5: multi-label with 59 * exp(Exp(mean 0.4)) positives per class
(about 98) plus two classes with 5000 positives (about 3.2 labels per clip), uniform scores; multi-class
with about 80 % accurate predictions. Timings do not depend on the values beyond label density.

Usage:
    python benchmarks/bench_retention.py            # full sizes (about 3-5 minutes on 2 cores)
    python benchmarks/bench_retention.py --quick    # small sizes (N=1000, C=200), about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import torch

from vipann.metrics import retention_curve, retention_curves
from vipann.uncertainty import decompose, decompose_variance

MEASURES = ("entropy", "epistemic", "aleatoric")


def best_of(fn, repeats: int) -> float:
    """Minimum wall time of ``repeats`` calls (after one warm-up), in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def multilabel_data(n: int, c: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    rate = torch.distributions.Exponential(torch.tensor(1 / 0.4))
    scale = n / 20000  # keep AudioSet's label density at smaller N
    counts = (59 * scale * torch.exp(rate.sample((c,)))).long().clamp(1, n)
    counts[:2] = int(5000 * scale)
    labels = torch.zeros(n, c, dtype=torch.bool)
    for k in range(c):
        labels[torch.randperm(n, generator=g)[: int(counts[k])], k] = True
    return torch.rand(n, c, generator=g), labels


def multiclass_data(n: int, c: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, c, (n,), generator=g)
    logits = torch.randn(n, c, generator=g)
    right = torch.rand(n, generator=g) < 0.8
    logits[right, y[right]] += 10.0
    return torch.softmax(logits, -1), y


def sklearn_curve(probs, targets, unc, points, metric) -> None:
    """The reference loop: drop p * floor(0.01 N) most uncertain clips, then call scikit-learn."""
    from sklearn.metrics import accuracy_score, average_precision_score

    p, t = probs.numpy(), targets.numpy()
    order = unc.numpy().argsort()[::-1]
    step = len(order) // 100
    for q in points:
        keep = order[q * step :]
        if metric == "accuracy":
            accuracy_score(t[keep], p[keep].argmax(1))
        else:
            average_precision_score(t[keep], p[keep], average="macro")


def bench_multilabel(args, g) -> None:
    n, c, reps = args.n_ml, args.c_ml, args.reps
    probs, labels = multilabel_data(n, c, g)
    uncs = {m: torch.rand(n, generator=g) for m in MEASURES}
    print(f"\n## Multi-label mAP retention, N={n}, C={c}, 100 points, R={reps}, {len(MEASURES)} measures")
    print(f"   labels per clip {labels.sum(1).double().mean():.2f}")

    def boot():
        retention_curves(probs, labels, uncs, "map", bootstrap=reps, generator=torch.Generator().manual_seed(0))

    t_boot = best_of(boot, args.repeats)

    def boot_separate():
        for u in uncs.values():
            retention_curve(probs, labels, u, "map", bootstrap=reps, generator=torch.Generator().manual_seed(0))

    t_sep = best_of(boot_separate, 1)
    runs = torch.rand(reps, n, c, generator=g)
    run_uncs = {m: torch.rand(reps, n, generator=g) for m in MEASURES}
    t_runs = best_of(lambda: retention_curves(runs, labels, run_uncs, "map"), 1)

    # scikit-learn: a few points at full and small retained sizes, extrapolated linearly in kept n.
    # The reference code evaluates bootstrap resamples; a resample has the same size as the data.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = torch.randint(0, n, (n,), generator=g)
        p_s, y_s, u_s = probs[sample], labels[sample], uncs["entropy"][sample]
        points = [0, 50, 99] if not args.quick else [0, 99]
        per_point = {q: best_of(lambda q=q: sklearn_curve(p_s, y_s, u_s, [q], "map"), 1) for q in points}
        kept = {q: n - q * (n // 100) for q in points}
        slope = (per_point[points[0]] - per_point[points[-1]]) / (kept[points[0]] - kept[points[-1]])
        intercept = per_point[points[-1]] - slope * kept[points[-1]]
        est_curve = sum(intercept + slope * (n - q * (n // 100)) for q in range(100))
        measured_curve = None
        if args.sklearn_curve:
            t0 = time.perf_counter()
            sklearn_curve(p_s, y_s, u_s, range(100), "map")
            measured_curve = time.perf_counter() - t0
    curves = reps * len(MEASURES)
    per_curve = measured_curve if measured_curve is not None else est_curve
    sk_job = per_curve * curves
    pts = ", ".join(f"p={q} (n={kept[q]}): {per_point[q]:.3f} s" for q in points)
    print(f"   sklearn per-point calls (measured): {pts}")
    print(f"   sklearn one curve: {est_curve:.1f} s extrapolated from those points", end="")
    print(f"; {measured_curve:.1f} s measured" if measured_curve is not None else " (whole curve not timed)")
    print(f"   sklearn full job ({curves} curves): {sk_job:.0f} s = {sk_job / 3600:.2f} h  [EXTRAPOLATED x{curves}]")
    print(f"   vipann bootstrap, 3 measures in one retention_curves call: {t_boot:.2f} s  ->  {sk_job / t_boot:.0f}x")
    print(f"   vipann bootstrap, 3 separate retention_curve calls:        {t_sep:.2f} s  ->  {sk_job / t_sep:.0f}x")
    print(f"   vipann {reps} independent runs (R, N, C), 3 measures:        {t_runs:.2f} s  ->  {sk_job / t_runs:.0f}x")
    verdict = "n/a (--quick)" if args.quick else ("MET" if t_boot < 5 and sk_job / t_boot >= 100 else "MISSED")
    print(f"   target at full size: >= 100x and < 5 s for the full job -> bootstrap {verdict}")
    sk = "scikit-learn loop (extrapolated)" if measured_curve is None else "scikit-learn loop (one curve measured)"
    args.ratios += [
        f"ratio: mAP retention N={n} C={c}, bootstrap, one call, vs {sk} = {sk_job / t_boot:.0f}x",
        f"ratio: mAP retention N={n} C={c}, {reps} runs, vs {sk} = {sk_job / t_runs:.0f}x",
    ]
    if args.device != "cpu":
        dev = torch.device(args.device)
        p_d, y_d = probs.to(dev), labels.to(dev)
        u_d = {m: u.to(dev) for m, u in uncs.items()}

        def boot_dev():
            retention_curves(p_d, y_d, u_d, "map", bootstrap=reps, generator=torch.Generator().manual_seed(0))
            torch.cuda.synchronize()

        runs_d, ru_d = runs.to(dev), {m: u.to(dev) for m, u in run_uncs.items()}

        def runs_dev():
            retention_curves(runs_d, y_d, ru_d, "map")
            torch.cuda.synchronize()

        t_bd, t_rd = best_of(boot_dev, args.repeats), best_of(runs_dev, args.repeats)
        print(f"   on {dev}: bootstrap {t_bd:.2f} s ({sk_job / t_bd:.0f}x), independent runs {t_rd:.2f} s")


def bench_multiclass(args, g) -> None:
    n, c, reps = args.n_mc, args.c_mc, args.reps
    probs, y = multiclass_data(n, c, g)
    uncs = {m: torch.rand(n, generator=g) for m in MEASURES}
    print(f"\n## Multi-class accuracy retention, N={n}, C={c}, 100 points, R={reps}, {len(MEASURES)} measures")

    def boot():
        retention_curves(probs, y, uncs, "accuracy", bootstrap=reps, generator=torch.Generator().manual_seed(0))

    t_boot = best_of(boot, args.repeats)
    runs = torch.softmax(torch.randn(reps, n, c, generator=g) + 10 * torch.nn.functional.one_hot(y, c), -1)
    run_uncs = {m: torch.rand(reps, n, generator=g) for m in MEASURES}
    t_runs = best_of(lambda: retention_curves(runs, y, run_uncs, "accuracy"), args.repeats)

    def sk_job():
        for u in uncs.values():
            for _ in range(reps):
                s = torch.randint(0, n, (n,), generator=g)
                sklearn_curve(probs[s], y[s], u[s], range(100), "accuracy")

    t_sk = best_of(sk_job, 1)
    print(f"   sklearn full job ({reps * len(MEASURES)} curves, measured): {t_sk:.2f} s")
    print(f"   vipann bootstrap, one retention_curves call: {t_boot * 1e3:.1f} ms  ->  {t_sk / t_boot:.0f}x")
    print(f"   vipann {reps} independent runs:                 {t_runs * 1e3:.1f} ms  ->  {t_sk / t_runs:.0f}x")
    print(f"   target: < 0.5 s -> {'MET' if max(t_boot, t_runs) < 0.5 else 'MISSED'}")
    args.ratios += [
        f"ratio: accuracy retention N={n}, bootstrap, vs scikit-learn loop (measured) = {t_sk / t_boot:.0f}x",
        f"ratio: accuracy retention N={n}, {reps} runs, vs scikit-learn loop (measured) = {t_sk / t_runs:.0f}x",
    ]


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return -1


def decomposition_child(s: int, n: int, c: int, kind: str, device: str) -> None:
    """Runs in a fresh process so that the peak-RSS reading belongs to this measurement alone."""
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(s, n, c, generator=g).to(device)
    fn = decompose if kind == "entropy" else decompose_variance
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_kib("VmRSS:") * 1024
    t0 = time.perf_counter()
    fn(probs, multilabel=True)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else _rss_kib("VmHWM:") * 1024
    print(json.dumps({"time": elapsed, "extra": peak - base, "input": probs.numel() * 4}))


def bench_decomposition(args) -> None:
    s, n, c = args.s_dec, args.n_ml, args.c_ml
    print(f"\n## Multi-label decomposition, S={s}, N={n}, C={c}, float32 ({s * n * c * 4 / 2**30:.2f} GiB input)")
    for kind in ("entropy", "variance"):
        cmd = [sys.executable, __file__, "--_child", kind, str(s), str(n), str(c), args.device]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        results = [
            json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
            for _ in range(2)
        ]
        best = min(results, key=lambda r: r["time"])
        extra = max(r["extra"] for r in results)
        print(
            f"   {kind:8s}: {best['time']:.2f} s (best of 2 fresh processes); peak extra memory "
            f"{extra / 2**20:.0f} MiB = {extra / best['input']:.2f}x the input"
        )
        args.ratios.append(
            f"ratio: {kind} decomposition S={s} N={n} C={c}, peak extra memory / input = {extra / best['input']:.2f}x"
        )


FULL = dict(n_ml=20000, c_ml=527, s_dec=30, n_mc=2000, repeats=3)
QUICK = dict(n_ml=1000, c_ml=200, s_dec=10, n_mc=1000, repeats=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"small sizes ({QUICK}; about a minute)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the targets are for 2 cores)")
    parser.add_argument("--n-ml", type=int, help=f"multi-label clips N (default {FULL['n_ml']})")
    parser.add_argument("--c-ml", type=int, help=f"multi-label classes C (default {FULL['c_ml']})")
    parser.add_argument(
        "--s-dec", type=int, help=f"Monte-Carlo samples S of the decomposition (default {FULL['s_dec']})"
    )
    parser.add_argument("--n-mc", type=int, help=f"multi-class clips N (default {FULL['n_mc']})")
    parser.add_argument("--repeats", type=int, help="timed repeats for fast cases, the best is kept (default 3)")
    parser.add_argument("--sklearn-curve", action="store_true", help="also time one whole sklearn mAP curve (~100 s)")
    parser.add_argument("--device", default="cpu", help="also time mAP retention and the decomposition on this device")
    parser.add_argument("--only", nargs="+", choices=["mc", "ml", "dec"], help="run only these sections")
    parser.add_argument("--_child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:  # explicit flags win over either size
            setattr(args, name, value)
    args.reps, args.c_mc = 20, 50
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args._child:
        kind, s, n, c, device = args._child
        decomposition_child(int(s), int(n), int(c), kind, device)
        return
    args.ratios = []
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, quick={args.quick}")
    only = set(args.only or ["mc", "ml", "dec"])
    if "mc" in only:
        bench_multiclass(args, g)
    if "ml" in only:
        bench_multilabel(args, g)
    if "dec" in only:
        bench_decomposition(args)
    print("\n" + "\n".join(args.ratios))


if __name__ == "__main__":
    main()
