"""The ``vipann`` command line: one argparse parser, one module per group of subcommands.

* :mod:`vipann.cli.zoo`: ``list``, ``info``, ``convert``, ``push``, ``card``;
* :mod:`vipann.cli.zoo_build`: ``zoo build``, ``zoo publish``, ``zoo import``;
* :mod:`vipann.cli.evaluate`: ``predict``, ``evaluate``, ``retention``;
* :mod:`vipann.cli.compare`: ``compare``;
* :mod:`vipann.cli.demo`: ``demo``.

Every subcommand is a small function on top of the public API, so everything the CLI does can also
be done from Python.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import vipann.cli.compare
import vipann.cli.demo
import vipann.cli.evaluate
import vipann.cli.zoo
import vipann.cli.zoo_build

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``vipann`` command.

    Returns:
        The parser with one subcommand per task.
    """
    parser = argparse.ArgumentParser(
        prog="vipann", description="Uncertainty-aware audio classification with PANNs (det, drop, flip, detflip)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (vipann.cli.zoo, vipann.cli.zoo_build, vipann.cli.evaluate, vipann.cli.compare, vipann.cli.demo):
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vipann`` command.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, RuntimeError, FileNotFoundError, OSError) as exc:
        print(f"vipann {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
