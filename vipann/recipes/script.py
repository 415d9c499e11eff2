"""The shared ``main`` of the recipe scripts in ``finetune/`` (plain Python or ``torchrun``).

Each script parses ``--config FILE`` plus its flags into a recipe config, sets up the process group
when launched by ``torchrun``, logs to ``OUT/log.txt`` (``log.rank<k>.txt`` on the other ranks) and to
stderr on rank 0, runs the recipe and always shuts the process group down.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from vipann.recipes.config import add_config_arguments, load_config
from vipann.train.distributed import DistContext, init_distributed, shutdown

__all__ = ["ScriptRun", "run_recipe_script"]

C = TypeVar("C")


@dataclass
class ScriptRun(Generic[C]):
    """What a recipe script ran.

    Attributes:
        config: The parsed settings.
        ctx: The process's distributed context (rank, world size, device).
        out: The output directory.
        result: What the recipe returned.
    """

    config: C
    ctx: DistContext
    out: Path
    result: Any


def run_recipe_script(
    description: str | None,
    config_cls: type[C],
    flags: Sequence[str],
    run: Callable[[C, DistContext], Any],
    *,
    config_help: str = "YAML file of settings",
    argv: Sequence[str] | None = None,
) -> ScriptRun[C]:
    """Parse the settings, set up torchrun and logging, and run a recipe.

    Args:
        description: The script's ``--help`` text (its module docstring).
        config_cls: The recipe's config dataclass (it must have ``out`` and ``device`` fields).
        flags: Config fields exposed as ``--flags`` (see :func:`add_config_arguments`).
        run: The recipe, called as ``run(config, ctx)``.
        config_help: Help text of ``--config``.
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        A :class:`ScriptRun`.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help=config_help)
    add_config_arguments(parser, config_cls, flags)
    args = vars(parser.parse_args(argv))
    config = load_config(config_cls, args.pop("config"), args)
    ctx = init_distributed(config.device or None)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [
        logging.FileHandler(out / f"log{'' if ctx.rank == 0 else f'.rank{ctx.rank}'}.txt")
    ]
    if ctx.is_main:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers)
    try:
        result = run(config, ctx)
    finally:
        shutdown()
    return ScriptRun(config, ctx, out, result)
