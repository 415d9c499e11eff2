"""AudioSet pre-training (VI-PANN Section 3.4): how the zoo's det, drop and flip checkpoints are made.

    python finetune/pretrain.py --config finetune/configs/audioset-det.yaml \
        --train balanced_train.h5,unbalanced_train.h5 --eval eval.h5 --out runs/det-resnet54
    python finetune/pretrain.py --config finetune/configs/audioset-flip.yaml \
        --init local-dir:runs/det-resnet54/model --train ... --out runs/flip-resnet54
    torchrun --nnodes 2 --nproc_per_node 8 ... finetune/pretrain.py --config ...   # a cluster

The result is OUT/model in the zoo layout (ready for `vipann card` and `vipann push`), with the
evaluation (mAP, AUC, d-prime, uncertainty, retention curves, OOD box plots) in OUT/evaluation.
"""

import argparse
import logging
import sys
from pathlib import Path

from vipann.recipes.config import add_config_arguments, load_config
from vipann.recipes.pretrain import PretrainConfig, run_pretraining
from vipann.train.distributed import init_distributed, shutdown

FLAGS = [
    "model",
    "init",
    "train",
    "eval",
    "labels_csv",
    "clip_seconds",
    "ood",
    "out",
    "steps",
    "batch_size",
    "lr",
    "mixup_alpha",
    "sampler",
    "moped_delta",
    "kl_reduction",
    "grad_accum",
    "eval_every",
    "checkpoint_every",
    "num_samples",
    "replications",
    "num_workers",
    "file_sample_rate",
    "device",
    "amp",
    "seed",
    "resume",
    "progress",
]


def main(argv=None) -> int:
    """Parse the config and flags, set up logging and torchrun, and run the recipe."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of settings (finetune/configs/audioset-*.yaml)")
    add_config_arguments(parser, PretrainConfig, FLAGS)
    args = vars(parser.parse_args(argv))
    config = load_config(PretrainConfig, args.pop("config"), args)
    ctx = init_distributed(config.device or None)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    handlers = [logging.FileHandler(out / f"log{'' if ctx.rank == 0 else f'.rank{ctx.rank}'}.txt")]
    if ctx.is_main:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers)
    try:
        scalars = run_pretraining(config, ctx)
    finally:
        shutdown()
    if ctx.is_main and scalars:
        print({k: round(v, 4) for k, v in scalars.items() if k in ("mAP", "AUC", "d_prime", "ECE", "mean_epistemic")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
