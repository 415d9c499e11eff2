"""The ``vipann compare`` subcommand: calibration methods on one dataset (:mod:`vipann.recipes.compare`)."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

__all__ = ["COMPARE_FLAGS", "add_commands"]

# CompareConfig fields exposed as --flags (a YAML file given with --config sets any of them).
COMPARE_FLAGS = [
    "dataset",
    "data_root",
    "ood_root",
    "out",
    "model",
    "methods",
    "folds",
    "stage",
    "clip_seconds",
    "fixed_epochs",
    "finetune_epochs",
    "lr",
    "batch_size",
    "feature_draws",
    "num_samples",
    "replications",
    "ensemble_members",
    "val_fraction",
    "sngp_features",
    "on_error",
    "device",
    "seed",
    "resume",
    "overwrite",
    "export",
    "plots",
    "cache_dir",
    "progress",
]

_EPILOG = """\
examples:
  vipann compare                                   # the embedded demo data (under 2 min on 2 CPU cores)
  vipann compare --dataset esc50 --data-root ESC-50-master --ood-root ShipsEar --out runs/compare-esc50 \\
      --config finetune/configs/compare-esc50.yaml
  vipann compare --methods base,temperature,ensemble --stage finetuned

methods: base, focal, mc-dropout, ensemble, sngp, temperature, flip, detflip, laplace, laplace-head,
ivon (default: all). Writes OUT/comparison.csv, comparison.md and comparison.json (mean ± std over the
test folds of accuracy, ECE, OOD AUROC / AUPR, NLL, Brier score, marginal ECE, MCS, AURC, AUGRC,
retention area and the costs: training and post-hoc fitting time, prediction time per clip, extra
memory) and every method's run under OUT/methods/.
"""


def _field_help(cls: type) -> dict[str, str]:
    """Field name -> its description in the dataclass's Google-style ``Attributes:`` section."""
    docs: dict[str, str] = {}
    name = None
    for line in (cls.__doc__ or "").split("Attributes:", 1)[-1].splitlines():
        text = line.strip()
        if not text:
            continue
        head, sep, rest = text.partition(": ")
        if sep and head.isidentifier() and line.startswith(" " * 8) and not line.startswith(" " * 9):
            name = head
            docs[name] = rest
        elif name is not None:
            docs[name] += " " + text
    return {k: re.sub(r":\w+:`([^`]+)`", r"\1", v).replace("``", "") for k, v in docs.items()}


def _cmd_compare(args: argparse.Namespace) -> int:
    from vipann.recipes.compare import CompareConfig, run_compare
    from vipann.recipes.config import load_config

    values = {name: getattr(args, name) for name in COMPARE_FLAGS}
    config = load_config(CompareConfig, args.config, values)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rows = run_compare(config)
    if rows:
        print((Path(config.out) / "comparison.md").read_text(encoding="utf-8"))
        print(f"written to {config.out}/comparison.{{csv,md,json}}", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``compare`` on the ``vipann`` parser.

    Args:
        sub: The subparsers object of the main parser.
    """
    from vipann.recipes.compare import METHODS, CompareConfig
    from vipann.recipes.config import add_config_arguments

    p = sub.add_parser(
        "compare",
        help="compare calibration methods (base, focal, MC dropout, ensemble, SNGP, temperature, Flip, Det-Flip, "
        "Laplace, IVON)",
        description="Train and evaluate calibration methods on the same dataset, folds and backbone, and write "
        "the comparison table (paper 000's columns plus NLL and Brier). With no dataset it runs on the embedded "
        "demo data. Every setting is a field of vipann.recipes.compare.CompareConfig.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML file of settings (finetune/configs/compare-*.yaml); flags override it")
    add_config_arguments(p, CompareConfig, COMPARE_FLAGS)
    docs = _field_help(CompareConfig)
    docs["methods"] = "comma-separated methods to compare (default: all): " + ",".join(METHODS)
    docs["folds"] = "comma-separated test folds (default: 1,2 for the demo data, every fold otherwise)"
    for action in p._actions:
        if action.dest in docs:
            action.help = docs[action.dest].replace("%", "%%")
    p.set_defaults(func=_cmd_compare)
