"""The ``demo`` subcommand of the ``vipann`` CLI: the embedded end-to-end job (:mod:`vipann.demo`)."""

from __future__ import annotations

import argparse

from vipann.demo import run_demo

__all__ = ["add_commands"]


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(out=args.out, quick=args.quick)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``demo`` on the ``vipann`` parser.

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
