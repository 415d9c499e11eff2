"""The ``vipann`` command line (:func:`main`); one module per group of subcommands."""

from vipann.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
