"""Semi-supervised training as paper 004 does it: FixMatch (FM) and FixMatch-Uncertainty (FMUC).

    python finetune/fixmatch.py --config finetune/configs/esc50-fixmatch.yaml \
        --data-root ESC-50-master --out runs/esc50-fixmatch
    torchrun --nproc_per_node 2 finetune/fixmatch.py --config finetune/configs/esc50-fixmatch.yaml --data-root ...
    python finetune/fixmatch.py --config finetune/configs/demo-fixmatch.yaml --data-root DIR   # generated data

For every test fold and repetition the training folds are split into labelled clips
(--labelled-fraction F or --labelled-per-class K) and an unlabelled pool whose labels are hidden
(used only to score the pseudo-labels). Every method of --methods trains on the same split: fm,
fmuc and the paper's variants (fm-threshold-0.99, fmuc-threshold-0.95, fmuc-two-thresholds,
fmuc-no-temperature, fmuc-temperature-4, fmuc-no-mc-dropout) and the baselines supervised (all
labels) and labelled-only. Each step: B labelled + mu*B unlabelled clips; weak view (time/frequency
shifts of the log-mel input) -> pseudo-label; strong view (shifts, sharpening, Gaussian noise,
optional SpecAugment masking) trained against it. OUT holds per-run epochs.csv and evaluations,
pseudo_labels.{csv,png} (Fig. 2), table1.{csv,md} (Table I) and table2.{csv,md} (Table II).
--resume continues a killed run exactly (refused when a setting that affects results changed);
--overwrite deletes a previous run in --out and starts over. See vipann.recipes.fixmatch.
"""

import sys

from vipann.recipes.fixmatch import FixMatchConfig, run_fixmatch
from vipann.recipes.script import run_recipe_script

FLAGS = [
    "dataset",
    "data_root",
    "out",
    "model",
    "strategy",
    "from_scratch",
    "methods",
    "folds",
    "repetitions",
    "clip_seconds",
    "labelled_fraction",
    "labelled_per_class",
    "unlabelled_root",
    "epochs",
    "iterations_per_epoch",
    "batch_size",
    "mu",
    "lr",
    "unlabelled_weight",
    "head_dropout",
    "moped_delta",
    "kl_reduction",
    "fm_threshold",
    "fmuc_threshold",
    "temperature",
    "mc_passes",
    "ups_mean_threshold",
    "ups_std_threshold",
    "weak_pass",
    "time_shift",
    "freq_shift",
    "shift_fill",
    "noise_std",
    "sharpen",
    "masking",
    "mask_time_width",
    "mask_time_stripes",
    "mask_freq_width",
    "mask_freq_stripes",
    "num_samples",
    "replications",
    "eval_batch_size",
    "ood_root",
    "on_error",
    "device",
    "amp",
    "seed",
    "resume",
    "overwrite",
    "export",
    "cache_dir",
    "progress",
    "plots",
]


def main(argv=None) -> int:
    """Parse the config and flags, set up logging and torchrun, and run the recipe."""
    run = run_recipe_script(
        __doc__,
        FixMatchConfig,
        FLAGS,
        run_fixmatch,
        config_help="YAML file of settings (finetune/configs/*-fixmatch*.yaml)",
        argv=argv,
    )
    if run.ctx.is_main:
        for name in ("table1.md", "table2.md"):
            path = run.out / name
            print(path.read_text() if path.exists() else f"no {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
