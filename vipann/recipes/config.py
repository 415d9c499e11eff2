"""Recipe configuration: a dataclass of defaults, overlaid by a YAML file, overlaid by CLI flags.

:func:`prepare_run_dir` claims a run's output directory: a new or empty one, a previous run of the
same recipe to continue (``resume``, only with the settings it was made with) or to delete and
start over (``overwrite``), never a directory of anything else.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

from vipann.utils.atomic import write_text_atomic
from vipann.utils.outdirs import OutputDirError, claim_output_dir, clear_output_dir, describe_files

__all__ = ["RUN_ONLY", "add_config_arguments", "load_config", "prepare_run_dir", "save_config", "settings_differences"]

#: Settings that change how a run proceeds, not what it computes: they may differ on ``--resume``.
RUN_ONLY = frozenset(
    {
        "out",
        "resume",
        "overwrite",
        "device",
        "progress",
        "plots",
        "export",
        "cache_dir",
        "num_workers",
        "checkpoint_every",
        "eval_every",
    }
)

C = TypeVar("C")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    text = str(hint)
    if value is None:
        return None
    if "list" in text or "tuple" in text:
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        else:
            items = list(value)
        inner = int if "int" in text else (float if "float" in text else str)
        return [inner(v) for v in items]
    if "bool" in text:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"config {name}: expected a boolean, got {value!r}")
        return bool(value)
    if "int" in text and "float" not in text:
        return int(value)
    if "float" in text:
        return float(value)
    return value if "str" not in text else str(value)


def load_config(cls: type[C], path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> C:
    """Build a config dataclass: defaults, then the YAML file, then the overrides.

    Args:
        cls: The dataclass type.
        path: Optional YAML file with a mapping of field names to values.
        overrides: Field values that win over the file (e.g. parsed CLI flags; None values are
            ignored).

    Returns:
        The config.

    Raises:
        ValueError: For a file that is not valid YAML (naming the file, line and column), unknown keys
            (naming them and the valid ones) or values of the wrong type.
        FileNotFoundError: If the YAML file does not exist.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"config file {path} is not valid YAML{where}: {problem}; fix the file") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a mapping of settings, got {type(loaded).__name__}")
        unknown = sorted(set(loaded) - fields)
        if unknown:
            raise ValueError(f"{path}: unknown settings {unknown}; valid settings are {sorted(fields)}")
        values.update(loaded)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in fields:
            raise ValueError(f"unknown setting {key!r}; valid settings are {sorted(fields)}")
        values[key] = value
    coerced = {}
    for key, value in values.items():
        try:
            coerced[key] = _coerce(key, value, hints[key])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"setting {key}={value!r}: {exc}") from exc
    return cls(**coerced)


def save_config(config: Any, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML (atomically) next to the results.

    Args:
        config: A config dataclass.
        path: Target file.

    Returns:
        The path.
    """
    return write_text_atomic(path, yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, names: Sequence[str]) -> None:
    """Add ``--field-name`` flags for the given config fields (type-checked when the config is built).

    Args:
        parser: The parser.
        cls: The config dataclass (its field docs are not repeated here; see the dataclass).
        names: Field names to expose.
    """
    hints = get_type_hints(cls)
    for name in names:
        flag = "--" + name.replace("_", "-")
        kind = str(hints[name])
        if "bool" in kind:
            parser.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction)
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper())


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return old is new or (isinstance(old, bool) and isinstance(new, bool) and old == new)
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return float(old) == float(new)
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return len(old) == len(new) and all(_same(a, b) for a, b in zip(old, new))
    if isinstance(old, dict) and isinstance(new, dict):
        return old.keys() == new.keys() and all(_same(old[k], new[k]) for k in old)
    return old == new


def settings_differences(config: Any, previous: str | os.PathLike[str]) -> list[str]:
    """The settings that affect results and differ between ``config`` and a run's ``config.yaml``.

    Settings in :data:`RUN_ONLY` (output folder, device, progress bars, ...) are not compared; a
    setting the file lacks (added in a later vipann) counts as its default. Settings a recipe lists
    in its config class's ``RESUME_MAY_INCREASE`` (the pre-training's ``steps``: training longer
    continues the same run) may grow, not shrink.

    Args:
        config: The new settings (a config dataclass).
        previous: The ``config.yaml`` the run was made with.

    Returns:
        One ``"name: OLD in the run, NEW now"`` line per difference (empty when they agree).

    Raises:
        ValueError: If the file cannot be read as the settings of a run.
    """
    path = Path(previous)
    try:
        stored = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the settings of the previous run ({path}): {exc}") from None
    if not isinstance(stored, dict):
        raise ValueError(f"{path} does not hold the settings of a run")
    current = dataclasses.asdict(config)
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        for f in dataclasses.fields(config)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    may_increase = set(getattr(type(config), "RESUME_MAY_INCREASE", ()))
    lines = []
    for name, value in current.items():
        if name in RUN_ONLY:
            continue
        old = stored.get(name, defaults.get(name))
        if name in may_increase and isinstance(old, (int, float)) and isinstance(value, (int, float)) and value >= old:
            continue
        if not _same(old, value):
            lines.append(f"{name}: {old!r} in the run, {value!r} now")
    return lines


def _is_run_of(cls: type) -> Any:
    """Recognises a run of the recipe ``cls`` written before output folders carried a marker."""
    fields = {f.name for f in dataclasses.fields(cls)}

    def recognise(directory: Path) -> bool:
        try:
            stored = yaml.safe_load((directory / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return False
        return isinstance(stored, dict) and set(stored) <= fields and len(set(stored) & fields) >= len(fields) // 2

    return recognise


def prepare_run_dir(config: Any, command: str, *, check_only: bool = False) -> Path:
    """Claim the output directory of a recipe run before anything is written there.

    * A new or empty directory: claimed (marker file ``.vipann-output.json``).
    * A previous run of the same recipe (its ``config.yaml``): with ``config.resume`` it is
      continued if every setting that affects results is the same, and refused, listing the
      differences, otherwise; with ``config.overwrite`` it is deleted and the run starts over;
      with neither it is refused.
    * Anything else (files vipann did not write): refused, naming them; nothing is changed.

    Args:
        config: The run's settings (a dataclass with ``out``, ``resume`` and ``overwrite``).
        command: The recipe's name (``"transfer"``, ``"compare"``, ``"pretrain"``).
        check_only: Check without writing or deleting anything (the other processes of a torchrun job).

    Returns:
        The output directory.

    Raises:
        ValueError: For ``resume`` with ``overwrite``, or a resume with other settings.
        vipann.utils.outdirs.OutputDirError: For a directory that holds another run or other files.
    """
    out = Path(config.out)
    resume, overwrite = bool(config.resume), bool(getattr(config, "overwrite", False))
    if resume and overwrite:
        raise ValueError(
            "resume and overwrite exclude each other: --resume continues the run in OUT, --overwrite deletes it "
            "and starts over"
        )
    if check_only:
        return out
    claim_output_dir(out, command, recognise=_is_run_of(type(config)))
    previous = out / "config.yaml"
    if not previous.is_file():
        return out
    if overwrite:
        clear_output_dir(out)
        return out
    if not resume:
        listing, count = describe_files(out, skip=(".vipann-output.json",))
        raise OutputDirError(
            f"--out {str(out)!r} holds a previous {command} run ({count} files: {listing}); pass --resume to "
            "continue it, --overwrite to delete it and start over, or choose another --out"
        )
    differences = settings_differences(config, previous)
    if differences:
        raise ValueError(
            f"cannot resume the run in {str(out)!r}: its results were made with other settings ("
            + "; ".join(differences)
            + "). Resume with the run's settings, pass --overwrite to delete it and start over, or choose another --out"
        )
    return out
