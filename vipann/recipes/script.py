"""The shared ``main`` of the recipe scripts in ``finetune/`` (plain Python or ``torchrun``).

Each script parses ``--config FILE`` plus its flags into a recipe config, sets up the process group
when launched by ``torchrun``, claims the output directory (:func:`vipann.recipes.config.prepare_run_dir`:
never a folder of anything else, a previous run only with ``--resume`` or ``--overwrite``), logs to
``OUT/log.txt`` (``log.rank<k>.txt`` on the other ranks) and to stderr on rank 0, runs the recipe and
always shuts the process group down. :func:`script_main` is the scripts' entry point: the library's
own errors end as one line on stderr and exit status 2 (``VIPANN_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from vipann.recipes.config import add_config_arguments, load_config, prepare_run_dir
from vipann.train.distributed import DistContext, init_distributed, shutdown
from vipann.utils.entry import DEBUG_VARIABLE, run_entry_point

__all__ = ["EPILOG", "ScriptRun", "run_recipe_script", "script_main"]

EPILOG = f"Errors are reported in one line (exit status 2); set {DEBUG_VARIABLE}=1 to see the traceback."

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
    command: str = "",
    config_help: str = "YAML file of settings",
    argv: Sequence[str] | None = None,
) -> ScriptRun[C]:
    """Parse the settings, set up torchrun and logging, and run a recipe.

    Args:
        description: The script's ``--help`` text (its module docstring).
        config_cls: The recipe's config dataclass (it must have ``out`` and ``device`` fields).
        flags: Config fields exposed as ``--flags`` (see :func:`add_config_arguments`).
        run: The recipe, called as ``run(config, ctx)``.
        command: The recipe's name for its output directory's marker (default: the config class's
            name without ``Config``, lower case).
        config_help: Help text of ``--config``.
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        A :class:`ScriptRun`.
    """
    parser = argparse.ArgumentParser(
        description=description, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help=config_help)
    add_config_arguments(parser, config_cls, flags)
    args = vars(parser.parse_args(argv))
    config = load_config(config_cls, args.pop("config"), args)
    ctx = init_distributed(config.device or None)
    try:
        # Before the log file is opened in it: OUT must be new, empty or a previous run of this recipe.
        out = prepare_run_dir(
            config, command or config_cls.__name__.removesuffix("Config").lower(), check_only=not ctx.is_main
        )
        ctx.barrier()
        handlers: list[logging.Handler] = [
            logging.FileHandler(out / f"log{'' if ctx.rank == 0 else f'.rank{ctx.rank}'}.txt")
        ]
        if ctx.is_main:
            handlers.append(logging.StreamHandler(sys.stderr))
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers
        )
        result = run(config, ctx)
    finally:
        shutdown()
    return ScriptRun(config, ctx, out, result)


def script_main(prog: str, body: Callable[[], int | None]) -> int:
    """Run a recipe script's body with vipann's error reporting (:func:`vipann.utils.entry.run_entry_point`).

    Args:
        prog: The script's name in messages (``"finetune.py"``).
        body: Parses, runs and prints; returns the exit status.

    Returns:
        The exit status: the body's, or 2 after one line on stderr for the library's own errors
        (``VIPANN_DEBUG=1``: the traceback instead).
    """
    return run_entry_point(prog, body)
