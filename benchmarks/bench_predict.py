"""Monte-Carlo prediction speed: ``vipann.predict`` vs the loop of S full forward passes.

The baseline is what the original VI-PANN code does (``pytorch_utils.forward`` with
``n_samples=S``): S complete forward passes of the model with its stochastic layers on. Both run
in this process, on the same weights, inputs and threads, and the script prints the ratio.

    python benchmarks/bench_predict.py                 # ResNet54, S=30, 5 s clips (minutes on 2 cores)
    python benchmarks/bench_predict.py --arch cnn10    # quicker
    python benchmarks/bench_predict.py --quick         # Cnn6, S=8, 1 s clips (seconds; targets: full run)
"""

import argparse
import resource
import statistics
import time

import torch

import vipann
from vipann.layers import mc_sampling


def loop_baseline(model, x, samples):
    out = []
    with torch.no_grad(), mc_sampling(model):
        for _ in range(samples):
            out.append(torch.sigmoid(model(x)))
    return torch.stack(out)


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


QUICK = dict(arch="cnn6", samples=8, seconds=1.0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"small sizes ({QUICK}); explicit flags still win")
    parser.add_argument("--arch", default="resnet54")
    parser.add_argument("--methods", default="detflip,drop,flip")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    if parser.parse_args(argv).quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.arch}, S={args.samples}, "
        f"B={args.batch}, {args.seconds} s clips, C={args.classes}" + (" (--quick)" if args.quick else "")
    )
    ratios = []
    targets = {"detflip": 10.0, "drop": 1.2, "flip": 1.0}
    for method in args.methods.split(","):
        torch.manual_seed(0)
        model = vipann.create_model(f"{method}-{args.arch}", num_classes=args.classes).eval()
        rate = model.sample_rate
        x = 0.1 * torch.randn(args.batch, int(args.seconds * rate), generator=torch.Generator().manual_seed(0))
        vipann.predict(model, x, num_samples=2, window_seconds=args.seconds, multilabel=True)  # warm-up
        t_loop = timed(lambda m=model, x=x: loop_baseline(m, x, args.samples), args.repeats)
        rss_loop = peak_rss_mb()
        t_ours = timed(
            lambda m=model, x=x: vipann.predict(
                m, x, num_samples=args.samples, window_seconds=args.seconds, multilabel=True
            ),
            args.repeats,
        )
        rss = peak_rss_mb()
        ratio = t_loop / t_ours
        target = f"target >= {targets.get(method, 1.0)}x" + (" at full size" if args.quick else "")
        print(
            f"{method:8s} loop {t_loop:8.2f} s   predict {t_ours:8.2f} s   speed-up {ratio:6.2f}x "
            f"({target})   peak RSS {rss_loop:.0f} MB -> {rss:.0f} MB"
        )
        ratios.append(f"ratio: {method}-{args.arch} vipann.predict vs loop of {args.samples} passes = {ratio:.2f}x")
    print("\n".join(ratios))


if __name__ == "__main__":
    main()
