"""Pre-training input pipeline: HDF5 loading throughput vs training throughput (clips/s).

Writes a temporary PANNs-layout HDF5 file (10 s clips at 32 kHz, int16, as in AudioSet), then
measures in this run: (1) clips/s the DataLoader delivers from it with N workers (random sampler,
batch 32), and (2) clips/s of training steps (forward + backward + Adam) of the model on CPU. The
loader must not be the bottleneck: its rate should exceed the training rate with the workers a
GPU run would use.

    python benchmarks/bench_pretrain_loading.py                       # det-resnet54
    python benchmarks/bench_pretrain_loading.py --model det-cnn10 --workers 0,1,2
    python benchmarks/bench_pretrain_loading.py --quick        # det-cnn6, 32 clips, one training step of 2
"""

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

import vipann
from vipann.datasets.hdf5 import AudioSetHDF5
from vipann.train.samplers import RandomSampler

QUICK = dict(model="det-cnn6", clips=32, train_batch=2, train_steps=1)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"small sizes ({QUICK}); explicit flags still win")
    parser.add_argument("--model", default="det-resnet54")
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=2)
    if parser.parse_args(argv).quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.h5"
        rng = np.random.default_rng(0)
        with h5py.File(path, "w") as fh:
            fh.create_dataset("audio_name", data=np.array([b"Y%010d.wav" % i for i in range(args.clips)], dtype="S20"))
            fh.create_dataset("waveform", data=(rng.standard_normal((args.clips, 320000)) * 3000).astype(np.int16))
            fh.create_dataset("target", data=rng.random((args.clips, 527)) < 0.01)
        dataset = AudioSetHDF5(path, sample_rate=32000, num_classes=527)
        print(f"HDF5: {args.clips} clips of 10 s ({path.stat().st_size / 2**20:.0f} MiB), batch {args.batch}")
        rates = {}
        for workers in [int(w) for w in args.workers.split(",")]:
            loader = torch.utils.data.DataLoader(
                dataset, batch_sampler=RandomSampler(len(dataset), args.batch), num_workers=workers
            )
            it = iter(loader)
            next(it)
            start, n = time.perf_counter(), 0
            for _ in range(max(1, args.clips // args.batch)):
                waves, _ = next(it)
                n += len(waves)
            rate = n / (time.perf_counter() - start)
            rates[workers] = rate
            print(f"  loading, {workers} workers: {rate:8.1f} clips/s")
            del it, loader
        model = vipann.create_model(args.model, num_classes=527).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = 0.1 * torch.randn(args.train_batch, 320000)
        y = (torch.rand(args.train_batch, 527) < 0.01).float()

        def step():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            opt.step()

        step()
        start = time.perf_counter()
        for _ in range(args.train_steps):
            step()
        train_rate = args.train_batch * args.train_steps / (time.perf_counter() - start)
        print(f"  training {args.model} on CPU (batch {args.train_batch}): {train_rate:8.2f} clips/s")
        best = max(rates, key=rates.get)
        print(f"  ratio loading/training: {rates[best] / train_rate:.0f}x ({best} workers); loading must stay > 1x")
        print(
            f"ratio: HDF5 loading ({best} workers) vs {args.model} training on CPU, clips/s = "
            f"{rates[best] / train_rate:.1f}x"
        )


if __name__ == "__main__":
    main()
