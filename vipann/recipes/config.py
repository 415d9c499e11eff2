"""Recipe configuration: a dataclass of defaults, overlaid by a YAML file, overlaid by CLI flags."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

from vipann.utils.atomic import write_text_atomic

__all__ = ["add_config_arguments", "load_config", "save_config"]

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
        ValueError: For unknown keys (naming them and the valid ones) or values of the wrong type.
        FileNotFoundError: If the YAML file does not exist.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
