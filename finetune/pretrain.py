"""AudioSet pre-training (VI-PANN Section 3.4): how the zoo's det, drop and flip checkpoints are made.

    python finetune/pretrain.py --config finetune/configs/audioset-det.yaml \
        --train balanced_train.h5,unbalanced_train.h5 --eval eval.h5 --out runs/det-resnet54
    python finetune/pretrain.py --config finetune/configs/audioset-flip.yaml \
        --init local-dir:runs/det-resnet54/model --train ... --out runs/flip-resnet54
    torchrun --nnodes 2 --nproc_per_node 8 ... finetune/pretrain.py --config ...   # a cluster

The result is OUT/model in the zoo layout (ready for `vipann card` and `vipann push`), with the
evaluation (mAP, AUC, d-prime, uncertainty, retention curves, OOD box plots) in OUT/evaluation.
"""

import sys

from vipann.recipes.pretrain import PretrainConfig, run_pretraining
from vipann.recipes.script import run_recipe_script, script_main

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
    "overwrite",
    "progress",
]


def _run(argv) -> int:
    run = run_recipe_script(
        __doc__,
        PretrainConfig,
        FLAGS,
        run_pretraining,
        command="pretrain",
        config_help="YAML file of settings (finetune/configs/audioset-*.yaml)",
        argv=argv,
    )
    if run.ctx.is_main and run.result:
        keys = ("mAP", "AUC", "d_prime", "ECE", "mean_epistemic")
        print({k: round(v, 4) for k, v in run.result.items() if k in keys})
    return 0


def main(argv=None) -> int:
    """Parse the config and flags, set up logging and torchrun, and run the recipe (errors: one line, status 2)."""
    return script_main("pretrain.py", lambda: _run(argv))


if __name__ == "__main__":
    sys.exit(main())
