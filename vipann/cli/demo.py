"""The demo subcommands of the ``vipann`` CLI: ``demo`` (:mod:`vipann.demo`) and ``example-data``."""

from __future__ import annotations

import argparse

from vipann.demo import run_demo
from vipann.demo.example import STRATEGIES, write_example_data

__all__ = ["add_commands"]


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(out=args.out, quick=args.quick)


def _cmd_example_data(args: argparse.Namespace) -> int:
    data = write_example_data(args.out, strategy=args.strategy, quick=args.quick, seed=args.seed)
    print(f"{data.downstream}: the demo's transfer task (ESC-50 layout, 10 classes, 5 folds)")
    print(f"{data.ood}: out-of-distribution clips")
    print(f"{data.transfer}: the transfer run (metrics, predictions, figures)")
    print(f"{data.model}: {args.strategy} transfer of the demo zoo, trained on every fold but {data.test_fold}")
    print("next:")
    for line in data.commands():
        print(f"  {line}")
    return 0


_EXAMPLE_EPILOG = """\
then:
  vipann evaluate -m local-dir:DIR/flip-demo-downstream --dataset synthetic_downstream \\
      --data-root DIR/downstream --folds 1 --out results/
  vipann retention results/predictions.safetensors --out figures/
"""


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``demo`` and ``example-data`` on the ``vipann`` parser.

    Args:
        sub: The subparsers object of the main parser.
    """
    p = sub.add_parser("demo", help="run the embedded end-to-end demo")
    p.add_argument(
        "--out",
        default="vipann-demo",
        help="output directory: new, empty, or an earlier demo output (which is replaced); any other folder is refused",
    )
    p.add_argument("--quick", action="store_true", help="smaller run (for tests)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "example-data",
        help="write the demo's transfer task (ESC-50 layout) and a demo model transferred to it",
        description="Writes DIR/downstream (the generated 10-class task in the ESC-50 layout), DIR/ood, "
        "DIR/transfer (the transfer recipe's run, test fold 1) and DIR/<strategy>-demo-downstream "
        "(the fine-tuned model as a model directory). Under a minute on 2 CPU cores.",
        epilog=_EXAMPLE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", metavar="DIR", help="output folder")
    p.add_argument("--strategy", choices=STRATEGIES, default="flip", help="transfer strategy (default: flip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="the demo's quick sizes (for tests)")
    p.set_defaults(func=_cmd_example_data)
