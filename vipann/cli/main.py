"""The ``vipann`` command line: one argparse parser, one module per group of subcommands.

* :mod:`vipann.cli.zoo`: ``list``, ``info``, ``convert``, ``push``, ``card``;
* :mod:`vipann.cli.zoo_build`: ``zoo build``, ``zoo publish``, ``zoo import``;
* :mod:`vipann.cli.evaluate`: ``predict``, ``evaluate``, ``retention``;
* :mod:`vipann.cli.compare`: ``compare``;
* :mod:`vipann.cli.demo`: ``demo``, ``example-data``.

Every subcommand is a small function on top of the public API, so everything the CLI does can also
be done from Python. Errors of the library (bad arguments, missing or corrupt files, refused
settings) and of the environment (no permission, a full disk) end as one line on stderr,
``vipann COMMAND: error: ...``, with exit status 2; ``VIPANN_DEBUG=1`` shows the traceback instead
(:func:`vipann.utils.entry.run_entry_point`).
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
from vipann.utils.entry import DEBUG_VARIABLE, run_entry_point

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``vipann`` command.

    Returns:
        The parser with one subcommand per task.
    """
    parser = argparse.ArgumentParser(
        prog="vipann",
        description="Uncertainty-aware audio classification with PANNs (det, drop, flip, detflip).",
        epilog=f"Errors are reported in one line (exit status 2); set {DEBUG_VARIABLE}=1 to see the traceback.",
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
        The process exit code: 0, 1 when some inputs failed (``predict``), 2 after an error, 130
        after Ctrl-C, 141 when stdout was closed early (``vipann list --json | head``).
    """
    args = build_parser().parse_args(argv)
    return run_entry_point(f"vipann {args.command}", lambda: args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
