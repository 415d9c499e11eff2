"""Calibration methods compared on one footing: the script form of `vipann compare`.

    python finetune/compare.py                                    # the embedded demo data
    python finetune/compare.py --config finetune/configs/compare-esc50.yaml \
        --data-root ESC-50-master --ood-root ShipsEar --out runs/compare-esc50
    torchrun --nproc_per_node 2 finetune/compare.py --config finetune/configs/compare-esc50.yaml --data-root ...

Trains base (det), focal loss, MC dropout, a deep ensemble, SNGP, Flip and Det-Flip on the same
dataset, folds and backbone (temperature scaling reuses the base networks with a temperature fitted
on the validation split), and writes OUT/comparison.{csv,md,json}: accuracy, ECE, OOD AUROC / AUPR
(total predictive entropy; epistemic where the method has it), NLL and Brier score, mean ± std over
folds. Under torchrun every training is data-parallel and the ensemble members train in parallel.
See vipann.recipes.compare.
"""

import sys

from vipann.cli.compare import COMPARE_FLAGS
from vipann.recipes.compare import CompareConfig, run_compare
from vipann.recipes.script import run_recipe_script, script_main


def _run(argv) -> int:
    run = run_recipe_script(
        __doc__,
        CompareConfig,
        COMPARE_FLAGS,
        run_compare,
        command="compare",
        config_help="YAML file of settings (finetune/configs/compare-*.yaml)",
        argv=argv,
    )
    if run.ctx.is_main:
        print((run.out / "comparison.md").read_text(encoding="utf-8"))
    return 0


def main(argv=None) -> int:
    """Parse the config and flags, set up logging and torchrun, and run the comparison (errors: one line, status 2)."""
    return script_main("compare.py", lambda: _run(argv))


if __name__ == "__main__":
    sys.exit(main())
