"""Monte-Carlo throughput of the EfficientAT models against the PANN ResNet54 baseline.

``vipann.predict`` with S Monte-Carlo samples on 5 s clips, for ``drop-mn10`` (MC dropout before
the classifier: the backbone runs once per clip, the head S times), ``detflip-mn10`` (Flipout head:
the same) and the baseline ``drop-resnet54`` (its first dropout site follows the first conv block,
so nearly the whole network runs S times). Throughput is clip-samples per second (clips x S /
seconds); every model runs in this process, on the same clips and threads, and the script prints
each one's ratio to the baseline. Weights are freshly initialised (speed does not depend on them).

    python benchmarks/bench_efficientat_mc.py              # S=30, 4 clips of 5 s (a few minutes on 2 cores)
    python benchmarks/bench_efficientat_mc.py --quick      # S=8, 1 clip of 2 s (seconds)
    python benchmarks/bench_efficientat_mc.py --models drop-mn10,flip-mn10,drop-dymn10
"""

import argparse
import statistics
import time

import torch

import vipann
from vipann.models.profile import count_macs

BASELINE = "drop-resnet54"


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="drop-mn10,detflip-mn10", help="comma-separated registry names")
    parser.add_argument("--samples", type=int, help="Monte-Carlo samples S (default 30; --quick: 8)")
    parser.add_argument("--clips", type=int, help="clips per batch (default 4; --quick: 1)")
    parser.add_argument("--seconds", type=float, help="clip length in seconds (default 5; --quick: 2)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="S=8, 1 clip of 2 s: a smoke run")
    args = parser.parse_args(argv)
    sizes = dict(samples=8, clips=1, seconds=2.0) if args.quick else dict(samples=30, clips=4, seconds=5.0)
    for name, value in sizes.items():
        if getattr(args, name) is None:  # explicit flags win over either size
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {args.threads} threads, device {device}, S={args.samples}, "
        f"{args.clips} clips of {args.seconds:g} s"
    )
    x = 0.1 * torch.randn(args.clips, int(args.seconds * 32000), generator=torch.Generator().manual_seed(0))
    rates = {}
    for name in [BASELINE, *args.models.split(",")]:
        torch.manual_seed(0)
        model = vipann.create_model(name, device=device).eval()
        macs = count_macs(vipann.create_model(name, device="meta"), args.seconds).total

        def run(m=model, samples=args.samples):
            return vipann.predict(m, x, num_samples=samples, window_seconds=args.seconds, generator=0, device=device)

        run(samples=2)  # warm-up
        seconds = timed(run, args.repeats)
        rates[name] = args.clips * args.samples / seconds
        split = model.stage_names[model.first_stochastic_stage()]
        ratio = rates[name] / rates[BASELINE]
        print(
            f"{name:15s} {seconds:8.2f} s  {rates[name]:9.1f} clip-samples/s  x{ratio:6.2f} vs {BASELINE}  "
            f"(sampled from stage {split!r}; {macs / 1e9:.2f} GMACs per {args.seconds:g} s pass)"
        )
        if name != BASELINE:
            print(f"ratio: {name} vs {BASELINE}, S={args.samples}, clip-samples per second = {ratio:.2f}x")


if __name__ == "__main__":
    main()
