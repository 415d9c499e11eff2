"""The ``config.json`` of a vipann model directory: its schema, validation and reading.

:func:`validate_config` checks every field's presence and JSON type, the architecture, method,
front end, model arguments and weights checksum, and names every problem at once;
:func:`read_config` reads and validates a directory's file; :func:`cfg_from_config` builds the
:class:`~vipann.PretrainedCfg` a loaded model carries. Writing lives in :mod:`vipann.zoo.serialization`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vipann.datasets.labels import get_labels
from vipann.models.families import all_architectures, family_of
from vipann.models.pann import METHODS
from vipann.utils.integrity import IntegrityError, check_json_seal
from vipann.zoo.checkpoint import CheckpointError
from vipann.zoo.registry import PretrainedCfg, get_pretrained_cfg, is_model

__all__ = [
    "CONFIG_NAME",
    "CONFIG_SHA256",
    "FORMAT_VERSION",
    "MODEL_FILES",
    "README_NAME",
    "WEIGHTS_NAME",
    "cfg_from_config",
    "is_model_dir",
    "read_config",
    "validate_config",
]

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
README_NAME = "README.md"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
#: The field of ``config.json`` holding the SHA-256 of the rest of the file (see
#: :func:`vipann.utils.integrity.seal_json`). With ``weights_sha256`` it covers every file that
#: changes what a model computes or reports; ``README.md`` (the model card) is documentation, never read.
CONFIG_SHA256 = "config_sha256"
#: The files of a model directory.
MODEL_FILES = frozenset({CONFIG_NAME, WEIGHTS_NAME, README_NAME})

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NoneType = type(None)
# Field -> accepted JSON types. bool is rejected where an int is expected (JSON true is not 1 class).
_REQUIRED: dict[str, tuple[type, ...]] = {
    "format_version": (int,),
    "vipann_version": (str,),
    "name": (str,),
    "arch": (str,),
    "method": (str,),
    "num_classes": (int,),
    "labels": (list,),
    "multilabel": (bool,),
    "sample_rate": (int,),
    "clip_seconds": (int, float),
    "frontend": (dict,),
    "model_args": (dict,),
    "default_num_samples": (int,),
    "metrics": (dict,),
    "metrics_source": (str,),
    "license": (str,),
    "provenance": (str,),
    "source_checkpoint": (str, _NoneType),
    "tags": (list,),
    "weights_sha256": (str,),
}
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "description": (str,),
    "hf_hub_id": (str, _NoneType),
    "label_set": (str, _NoneType),
    "created": (str,),
    "extra": (dict,),
    "temperature": (int, float, list, _NoneType),
    "head": (dict, _NoneType),
    CONFIG_SHA256: (str,),
}


def validate_config(config: Any, source: str = CONFIG_NAME) -> dict[str, Any]:
    """Check a ``config.json`` dict against the schema.

    Args:
        config: The parsed JSON.
        source: How to name the config in messages.

    Returns:
        ``config`` (unchanged).

    Raises:
        CheckpointError: Naming every field that is missing, of the wrong type or inconsistent.
    """
    if not isinstance(config, dict):
        raise CheckpointError(f"{source} must hold a JSON object, got {type(config).__name__}")
    version = config.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has format_version {version}, written by vipann {config.get('vipann_version', '?')}; "
            f"this vipann reads format_version <= {FORMAT_VERSION}: upgrade vipann"
        )
    problems: list[str] = []
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        problems.append(f"missing fields {missing}")
    for key, types in (*_REQUIRED.items(), *_OPTIONAL.items()):
        if key not in config:
            continue
        value = config[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("null" if t is _NoneType else t.__name__ for t in types)
            problems.append(f"{key!r} must be {names}, got {type(value).__name__}")
    if problems:
        raise CheckpointError(f"{source} is not a valid vipann config: " + "; ".join(problems))

    if config["format_version"] < 1:
        problems.append(f"format_version must be >= 1, got {config['format_version']}")
    known_arch = config["arch"] in all_architectures()
    if not known_arch:
        problems.append(f"unknown architecture {config['arch']!r} (known: {', '.join(all_architectures())})")
    if config["method"] not in METHODS:
        problems.append(f"unknown method {config['method']!r} (known: {', '.join(METHODS)})")
    if config["num_classes"] < 1:
        problems.append(f"num_classes must be >= 1, got {config['num_classes']}")
    for key in ("labels", "tags"):
        if not all(isinstance(item, str) for item in config[key]):
            problems.append(f"{key!r} must be a list of strings")
    if len(config["labels"]) != config["num_classes"]:
        problems.append(f"{len(config['labels'])} labels for num_classes={config['num_classes']}")
    if known_arch:
        family = family_of(config["arch"])
        try:
            frontend = family.frontend_config.from_dict(dict(config["frontend"]))
            if frontend.sample_rate != config["sample_rate"]:
                problems.append(f"sample_rate {config['sample_rate']} differs from frontend {frontend.sample_rate}")
        except (TypeError, ValueError) as exc:
            problems.append(f"invalid frontend: {exc}")
        unknown_args = sorted(set(config["model_args"]) - family.model_args)
        if unknown_args:
            problems.append(f"unknown model_args {unknown_args} (known: {sorted(family.model_args - {'frontend'})})")
    if config["default_num_samples"] < 1:
        problems.append("default_num_samples must be >= 1")
    if not _SHA256.fullmatch(config["weights_sha256"]):
        problems.append("weights_sha256 must be 64 lower-case hex digits")
    if problems:
        raise CheckpointError(f"{source} is not a valid vipann config: " + "; ".join(problems))
    return config


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate the ``config.json`` of a model directory.

    Args:
        directory: A directory written by :func:`save_pretrained` (or a Hub snapshot of one).

    Returns:
        The config dict.

    Raises:
        FileNotFoundError: If the directory or its ``config.json`` does not exist.
        CheckpointError: If the file is not valid JSON, does not follow the schema, or does not match
            its own checksum (``config_sha256``: edited or corrupted after it was saved).
    """
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory {str(directory)!r} does not exist")
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(directory)!r} has no {CONFIG_NAME}: it is not a directory written by vipann.save_pretrained "
            f"(which holds {CONFIG_NAME}, {WEIGHTS_NAME} and {README_NAME})"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    validate_config(config, source=str(path))
    try:
        sealed = check_json_seal(config, CONFIG_SHA256, source=str(path))
    except IntegrityError as exc:
        raise CheckpointError(
            f"{exc}; labels, the multi-label flag, the front end or other settings may have changed, which changes "
            "what the model computes or reports. Download or save the model again (to change its metadata, load it, "
            "edit model.pretrained_cfg and save_pretrained it)"
        ) from None
    if not sealed:
        logger.warning(
            "%s has no %s (written by an earlier vipann): its content is not covered by a checksum; save the model "
            "again to add one",
            path,
            CONFIG_SHA256,
        )
    return config


def is_model_dir(directory: str | os.PathLike[str]) -> bool:
    """Whether a directory is a vipann model directory (its ``config.json`` is a vipann config).

    Only the file's identity is checked (a JSON object with ``vipann_version`` and
    ``weights_sha256``), not its validity: a damaged model directory is still one.

    Args:
        directory: The directory.

    Returns:
        True for a vipann model directory.
    """
    try:
        config = json.loads((Path(directory) / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and "vipann_version" in config and "weights_sha256" in config


def cfg_from_config(config: Mapping[str, Any]) -> PretrainedCfg:
    """The :class:`PretrainedCfg` a loaded model carries, built from its ``config.json``.

    ``weights`` is the registry entry's value when the name is registered and ``"none"``
    otherwise; :func:`vipann.from_pretrained` sets ``"hub"`` for models it downloads.

    Args:
        config: A validated config dict.

    Returns:
        The metadata.
    """
    name = config["name"]
    labels = tuple(config["labels"])
    label_set = config.get("label_set")
    if label_set is not None:
        try:
            label_set = label_set if get_labels(label_set) == labels else None
        except (KeyError, ValueError):
            label_set = None
    tag = name.partition(".")[2] or None
    return PretrainedCfg(
        name=name,
        arch=config["arch"],
        method=config["method"],
        tag=tag,
        num_classes=config["num_classes"],
        label_set=label_set,
        label_names=() if label_set is not None else labels,
        multilabel=config["multilabel"],
        sample_rate=config["sample_rate"],
        clip_seconds=float(config["clip_seconds"]),
        frontend=dict(config["frontend"]),
        default_num_samples=config["default_num_samples"],
        license=config["license"],
        provenance=config["provenance"],
        weights=get_pretrained_cfg(name).weights if is_model(name) else "none",
        description=config.get("description") or f"{config['method']}-{config['arch']} model",
        metrics={k: dict(v) for k, v in config["metrics"].items()},
        metrics_source=config["metrics_source"],
        source_checkpoint=config["source_checkpoint"],
        hf_hub_id=config.get("hf_hub_id"),
        model_args=dict(config["model_args"]),
        tags=tuple(config["tags"]),
        temperature=tuple(t) if isinstance(t := config.get("temperature"), list) else t,
    )


# -- files -------------------------------------------------------------------------------------
