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
(round-based self-training; FMUC itself is finetune/fixmatch.py). `vipann compare` / finetune/compare.py
compares them on one dataset.
"""

import sys

from vipann.recipes.script import run_recipe_script, script_main
from vipann.recipes.transfer import TransferConfig, run_transfer

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
    "overwrite",
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
    "optimizer",
    "ivon_lr",
    "ivon_ess",
    "ivon_hess_init",
    "ivon_weight_decay",
    "ivon_train_samples",
    "laplace",
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


def _run(argv) -> int:
    run = run_recipe_script(
        __doc__,
        TransferConfig,
        FLAGS,
        run_transfer,
        command="transfer",
        config_help="YAML file of settings (finetune/configs/*.yaml)",
        argv=argv,
    )
    if run.ctx.is_main:
        summary = run.out / "summary.md"
        print(summary.read_text() if summary.exists() else "no results")
    return 0


def main(argv=None) -> int:
    """Parse the config and flags, set up logging and torchrun, and run the recipe (errors: one line, status 2)."""
    return script_main("finetune.py", lambda: _run(argv))


if __name__ == "__main__":
    sys.exit(main())
