"""Transfer learning with uncertainty: VI-PANN Section 3.5 (Tables 4-5) as a recipe.

    python finetune/finetune.py --config finetune/configs/esc50-flip.yaml \
        --data-root ESC-50-master --out runs/esc50-flip
    torchrun --nproc_per_node 2 finetune/finetune.py --config finetune/configs/esc50-flip.yaml --data-root ...

The YAML config sets the defaults of a run (dataset, strategies, epochs, ...); flags override it;
the resolved config is written to OUT/config.yaml. For each strategy and test fold the recipe
(1) builds the model from the backbone with a new head, (2) trains the head on features cached once
(fixed-feature), (3) trains everything at lr/10 (fine-tuned), and after each stage writes metrics,
retention curves with 95 % CIs, reliability diagrams, ID-vs-OOD box plots and every Monte-Carlo
prediction. OUT/summary.md holds the paper's Table 4 layout. See vipann.recipes.transfer.

Calibration options (off by default): --head sngp, --mixup-alpha A, --loss focal, --ensemble-members M
(members trained in parallel under torchrun), --val-fraction F (temperature scaling on a validation
split; --calibrated stores T in exported models), --pseudo-label-root DIR / --pseudo-label-folds K
(FMUC pseudo-label rounds). `vipann compare` / finetune/compare.py compares them on one dataset.
"""

import argparse
import logging
import sys
from pathlib import Path

from vipann.recipes.config import add_config_arguments, load_config
from vipann.recipes.transfer import TransferConfig, run_transfer
from vipann.train.distributed import init_distributed, shutdown

FLAGS = [
    "dataset",
    "data_root",
    "out",
    "model",
    "strategies",
    "from_scratch",
    "folds",
    "clip_seconds",
    "fixed_epochs",
    "finetune_epochs",
    "lr",
    "batch_size",
    "feature_draws",
    "num_samples",
    "replications",
    "ood_root",
    "on_error",
    "device",
    "amp",
    "seed",
    "resume",
    "export",
    "cache_dir",
    "kl_reduction",
    "loss",
    "label_smoothing",
    "focal_alpha",
    "focal_gamma",
    "stages",
    "head",
    "sngp_features",
    "sngp_lengthscale",
    "mixup_alpha",
    "ensemble_members",
    "val_fraction",
    "calibrated",
    "pseudo_label_root",
    "pseudo_label_folds",
    "pseudo_label_variant",
    "pseudo_label_temperature",
    "pseudo_label_threshold",
    "pseudo_label_std_threshold",
    "pseudo_label_rounds",
    "progress",
    "plots",
]


def main(argv=None) -> int:
    """Parse the config and flags, set up logging and torchrun, and run the recipe."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of settings (finetune/configs/*.yaml)")
    add_config_arguments(parser, TransferConfig, FLAGS)
    args = vars(parser.parse_args(argv))
    config = load_config(TransferConfig, args.pop("config"), args)

    ctx = init_distributed(config.device or None)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    handlers = [logging.FileHandler(out / f"log{'' if ctx.rank == 0 else f'.rank{ctx.rank}'}.txt")]
    if ctx.is_main:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers)
    try:
        run_transfer(config, ctx)
    finally:
        shutdown()
    if ctx.is_main:
        print((out / "summary.md").read_text() if (out / "summary.md").exists() else "no results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
