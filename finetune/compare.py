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

import argparse
import logging
import sys
from pathlib import Path

from vipann._cli_compare import COMPARE_FLAGS
from vipann.recipes.compare import CompareConfig, run_compare
from vipann.recipes.config import add_config_arguments, load_config
from vipann.train.distributed import init_distributed, shutdown


def main(argv=None) -> int:
    """Parse the config and flags, set up logging and torchrun, and run the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of settings (finetune/configs/compare-*.yaml)")
    add_config_arguments(parser, CompareConfig, COMPARE_FLAGS)
    args = vars(parser.parse_args(argv))
    config = load_config(CompareConfig, args.pop("config"), args)

    ctx = init_distributed(config.device or None)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    handlers = [logging.FileHandler(out / f"log{'' if ctx.rank == 0 else f'.rank{ctx.rank}'}.txt")]
    if ctx.is_main:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers)
    try:
        run_compare(config, ctx)
    finally:
        shutdown()
    if ctx.is_main:
        print((out / "comparison.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
