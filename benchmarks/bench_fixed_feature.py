"""Fixed-feature training: features cached once vs the frozen backbone recomputed every epoch.

Both are measured in this run on the same model and clips: (a) the vipann way — one pass of the
frozen backbone over the training clips (``extract_features``), then E epochs of head training on
the cached features; (b) the naive way — every epoch runs the frozen backbone again. (b) is timed
for one epoch and multiplied by E (each of its epochs costs the same). The ratio is printed for the
measured clip count and extrapolated to ESC-50 (1,600 training clips per fold).

    python benchmarks/bench_fixed_feature.py                     # det-resnet54, 32 clips, 200 epochs
    python benchmarks/bench_fixed_feature.py --arch cnn10 --clips 64
    python benchmarks/bench_fixed_feature.py --quick            # det-cnn6, 8 clips of 2 s, 20 epochs
"""

import argparse
import time

import torch

import vipann
from vipann.train import FitConfig, fit
from vipann.train.transfer import build_transfer_model, extract_features, head_forward, head_parameters

QUICK = dict(arch="cnn6", clips=8, epochs=20, seconds=2.0, batch=8)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"small sizes ({QUICK}); explicit flags still win")
    parser.add_argument("--arch", default="resnet54")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    if parser.parse_args(argv).quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = vipann.create_model(f"det-{args.arch}")
    model = build_transfer_model("det", backbone, 50)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head_parameters(model):
        p.requires_grad_(True)
    waves = 0.1 * torch.randn(args.clips, int(args.seconds * model.sample_rate))
    targets = torch.randint(0, 50, (args.clips,))

    def batches_of(inputs):
        def batches(epoch):
            order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(epoch))
            for i in range(0, len(order), args.batch):
                yield inputs[order[i : i + args.batch]], targets[order[i : i + args.batch]]

        return batches

    config = FitConfig(epochs=args.epochs, lr=1e-3)
    start = time.perf_counter()
    feats = extract_features(model, waves, batch_size=8)[0]
    t_features = time.perf_counter() - start
    start = time.perf_counter()
    fit(
        model,
        head_parameters(model),
        batches_of(feats),
        config,
        multilabel=False,
        num_train=args.clips,
        forward=head_forward,
        progress=False,
    )
    t_head = time.perf_counter() - start
    cached = t_features + t_head

    def recompute(m, x):
        with torch.no_grad():
            m.eval()
            pooled = m.pooled(x)
        m.train()
        return head_forward(m, pooled)

    start = time.perf_counter()
    fit(
        model,
        head_parameters(model),
        batches_of(waves),
        FitConfig(epochs=1, lr=1e-3),
        multilabel=False,
        num_train=args.clips,
        forward=recompute,
        progress=False,
    )
    naive = (time.perf_counter() - start) * args.epochs
    per_clip_feature = t_features / args.clips
    per_clip_head_epoch = t_head / args.clips / args.epochs
    n = 1600
    esc_cached = n * (per_clip_feature + per_clip_head_epoch * args.epochs)
    esc_naive = naive / args.clips * n
    print(f"det-{args.arch}, {args.clips} clips of {args.seconds} s, {args.epochs} epochs, {args.threads} threads")
    print(f"  cached features: backbone once {t_features:.1f} s + head {t_head:.1f} s = {cached:.1f} s")
    print(f"  recomputed each epoch: {naive:.1f} s (1 epoch measured x {args.epochs})")
    print(
        f"  speed-up {naive / cached:.1f}x; extrapolated to ESC-50 (1,600 clips): "
        f"{esc_cached / 60:.1f} min vs {esc_naive / 3600:.1f} h ({esc_naive / esc_cached:.0f}x)"
    )
    print(
        f"ratio: det-{args.arch} fixed-feature training, cached features vs backbone every epoch "
        f"({args.clips} clips, {args.epochs} epochs) = {naive / cached:.2f}x"
    )


if __name__ == "__main__":
    main()
