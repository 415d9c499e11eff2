"""Saving and loading vipann model directories (``config.json`` + ``model.safetensors`` + ``README.md``).

The layout is the Hugging Face Hub's (``huggingface_hub``'s ``ModelHubMixin`` writes the same
three files), so a directory written by :func:`save_pretrained` can be pushed to the Hub as it is
and read back by :func:`vipann.from_pretrained` from the Hub or from disk.

``config.json`` holds everything needed to rebuild the network and to use it correctly:
architecture, method, constructor arguments, classes and their names, the multi-label flag, the
front end (the weights are only valid at its sample rate), the recommended number of Monte-Carlo
samples, the provenance, and the SHA-256 of the weights file. Loading checks all of it and checks
every tensor name and shape; a model is returned only when everything fits.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vipann._version import __version__
from vipann.models.families import build_network, is_network
from vipann.models.pann import PANN
from vipann.utils.atomic import fsync_path
from vipann.zoo.cards import render_card
from vipann.zoo.checkpoint import CheckpointError, check_state_dict
from vipann.zoo.config import (
    CONFIG_NAME,
    FORMAT_VERSION,
    README_NAME,
    WEIGHTS_NAME,
    cfg_from_config,
    read_config,
    validate_config,
)
from vipann.zoo.heads import attach_head
from vipann.zoo.registry import PretrainedCfg, get_pretrained_cfg

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "README_NAME",
    "WEIGHTS_NAME",
    "cfg_from_config",
    "load_pretrained_dir",
    "read_config",
    "save_pretrained",
    "validate_config",
    "verify_pretrained_dir",
]

logger = logging.getLogger(__name__)

_CLASSIFIER = "fc_audioset."


# -- config ------------------------------------------------------------------------------------
def _model_cfg(model: PANN) -> PretrainedCfg:
    """The metadata to write for ``model``: its own ``pretrained_cfg`` or the registry's default."""
    cfg = getattr(model, "pretrained_cfg", None)
    if not isinstance(cfg, PretrainedCfg) or (cfg.arch, cfg.method) != (model.arch, model.method):
        # A bare PANN (or one whose metadata no longer describes it) takes the registry entry of
        # its architecture and method; every (method, arch) pair is registered.
        cfg = get_pretrained_cfg(f"{model.method}-{model.arch}")
    if cfg.num_classes != model.num_classes:
        cfg = cfg.with_classes(model.num_classes)
    return cfg


def _build_config(model: PANN, extra_metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = _model_cfg(model)
    model_config = model.config()
    frontend = model_config.pop("frontend")
    for key in ("arch", "method", "num_classes"):
        model_config.pop(key)
    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "vipann_version": __version__,
        "name": cfg.name,
        "arch": model.arch,
        "method": model.method,
        "num_classes": model.num_classes,
        "labels": list(cfg.labels),
        "label_set": cfg.label_set,
        "multilabel": cfg.multilabel,
        # The model's own front end wins over the entry's: a 16 kHz Cnn14 is valid only at 16 kHz.
        "sample_rate": int(frontend["sample_rate"]),
        "clip_seconds": float(cfg.clip_seconds),
        "frontend": frontend,
        "model_args": model_config,
        "default_num_samples": int(cfg.default_num_samples),
        "metrics": {k: dict(v) for k, v in cfg.metrics.items()},
        "metrics_source": cfg.metrics_source,
        "license": cfg.license,
        "provenance": cfg.provenance,
        "source_checkpoint": cfg.source_checkpoint,
        "tags": list(cfg.tags),
        "description": cfg.description,
        "hf_hub_id": cfg.hf_hub_id,
        "temperature": list(cfg.temperature) if isinstance(cfg.temperature, tuple) else cfg.temperature,
        "head": getattr(model, "head_config", None),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "extra": dict(extra_metadata or {}),
        "weights_sha256": "",
    }
    try:
        json.dumps(config["extra"], allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"extra_metadata must be JSON-serialisable: {exc}") from None
    return config


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _move_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` directory to ``target``, replacing an old one if there is one."""
    if not target.exists():
        os.rename(tmp, target)
        return
    if not any(target.iterdir()):
        target.rmdir()
        os.rename(tmp, target)
        return
    # Two renames: the old directory is moved aside first, so ``target`` is at every instant
    # either the complete old model, absent, or the complete new one, never a mixture.
    backup = tmp.with_name(tmp.name.replace(".tmp-", ".old-", 1))
    os.rename(target, backup)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def save_pretrained(
    model: PANN,
    directory: str | os.PathLike[str],
    *,
    card: bool = True,
    overwrite: bool = False,
    extra_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model as a Hub-ready directory: ``model.safetensors``, ``config.json``, ``README.md``.

    Writing is atomic: the files are written and fsynced in a temporary directory next to
    ``directory``, which is then renamed into place. An interrupted save leaves no directory that
    loads (and removes its temporary directory unless the process itself dies).

    Args:
        model: The model. Its ``pretrained_cfg`` (if any) supplies the metadata; architecture,
            method, classes and front end are always taken from the model itself.
        directory: Target directory (created with its parents).
        card: Also write the model card ``README.md`` (:func:`vipann.zoo.cards.render_card`).
        overwrite: Replace an existing non-empty ``directory`` (atomically swapped).
        extra_metadata: JSON-serialisable recipe metadata stored under ``config["extra"]``
            (e.g. a calibration temperature).

    Returns:
        The directory.

    Raises:
        FileExistsError: If ``directory`` exists and is not empty (and ``overwrite`` is False),
            or is a file.
        TypeError: If ``model`` is not a vipann network (:class:`~vipann.models.PANN`,
            :class:`~vipann.models.EfficientAT`) or ``extra_metadata`` is not JSON-serialisable.

    Example:
        >>> import vipann
        >>> from vipann.zoo.serialization import load_pretrained_dir, save_pretrained
        >>> path = save_pretrained(vipann.create_model("flip-tiny"), "flip-tiny-demo")  # doctest: +SKIP
        >>> model = load_pretrained_dir(path)  # doctest: +SKIP
    """
    if not is_network(model):
        raise TypeError(f"save_pretrained expects a vipann model (PANN, EfficientAT), got {type(model).__name__}")
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{str(target)!r} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{str(target)!r} exists and is not empty; pass overwrite=True to replace it")
    config = _build_config(model, extra_metadata)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        weights = tmp / WEIGHTS_NAME
        save_file(state, str(weights), metadata={"format": "pt"})
        fsync_path(weights)
        config["weights_sha256"] = _sha256(weights)
        validate_config(config, source="the config being saved")
        if card:
            _write_text(tmp / README_NAME, render_card(config))
        # config.json is written last: a directory without it never loads, whatever else is there.
        _write_text(tmp / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=False) + "\n")
        fsync_path(tmp)
        _move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_path(target.parent)
    return target


def _prior_param(key: str, expected: Mapping[str, torch.Tensor]) -> str | None:
    prefix, _, leaf = key.rpartition(".")
    if not leaf.startswith("prior_"):
        return None
    if "bias" in leaf:
        return f"{prefix}.mu_bias"
    for name in ("mu_kernel", "mu_weight"):
        if f"{prefix}.{name}" in expected:
            return f"{prefix}.{name}"
    return None


def _expected_shapes(own: Mapping[str, Any], incoming: Mapping[str, Any]) -> dict[str, Any]:
    """The model's shapes, where a Flipout prior may be 0-d or full-size (MOPED prior='weights')."""
    expected = dict(own)
    for key, value in incoming.items():
        param = _prior_param(key, own) if key in own else None
        if param is not None and param in own:
            shape = tuple(value.shape)
            if shape == () or shape == tuple(own[param].shape):
                expected[key] = value
    return expected


class _Shape:
    """A stand-in with a ``shape`` for header-only checks (no tensor data is read)."""

    def __init__(self, shape: list[int]) -> None:
        self.shape = tuple(shape)


def _build_model(config: Mapping[str, Any], num_classes: int, device: str = "cpu") -> PANN:
    with torch.device(device):
        model = build_network(
            config["arch"],
            config["method"],
            num_classes,
            frontend=dict(config["frontend"]),
            **config["model_args"],
        )
    head = config.get("head")
    if head is not None:
        attach_head(model, head)
    return model


def _check_files(directory: Path) -> tuple[dict[str, Any], Path]:
    config = read_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{str(directory)!r} has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    digest = _sha256(weights)
    if digest != config["weights_sha256"]:
        raise CheckpointError(
            f"{weights} does not match its config: SHA-256 {digest} but config.json records "
            f"{config['weights_sha256']}; the file is corrupt, truncated or was replaced: save it again, or "
            "download it again (from_pretrained(..., force_download=True))"
        )
    return config, weights


def _unreadable(weights: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(f"{weights} is not a readable safetensors file (corrupt or truncated?): {exc}")


def verify_pretrained_dir(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a model directory without loading its tensors.

    Validates ``config.json``, the SHA-256 of ``model.safetensors``, and every tensor name and
    shape in the safetensors header against the network the config describes (built on the
    ``meta`` device, so this is cheap for any architecture).

    Args:
        directory: The directory.

    Returns:
        The config dict.

    Raises:
        FileNotFoundError: If ``config.json`` or ``model.safetensors`` is missing.
        CheckpointError: If anything does not fit, naming what.
    """
    directory = Path(directory)
    config, weights = _check_files(directory)
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: _Shape(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except SafetensorError as exc:
        raise _unreadable(weights, exc) from None
    own = _build_model(config, config["num_classes"], device="meta").state_dict()
    check_state_dict(_expected_shapes(own, shapes), shapes, source=str(weights), target=config["name"])
    return config


def load_pretrained_dir(
    directory: str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
) -> PANN:
    """Load a directory written by :func:`save_pretrained`.

    Everything is checked before the model is returned: the config schema and format version,
    the architecture and method, the SHA-256 of the weights, that the safetensors file is
    complete, and every tensor name and shape. A failure raises and returns nothing.

    Args:
        directory: The directory (or a Hub snapshot of one).
        num_classes: Size of the classifier. When it differs from the checkpoint's, every tensor
            but the classifier (``fc_audioset.*``) is loaded and the new classifier keeps its fresh
            initialisation, of the model's method (Flipout for ``flip``/``detflip``, a linear layer
            behind the MC-dropout site for ``drop``); the dropped keys are logged.
        device: Device to move the model to (default: CPU).

    Returns:
        The model in ``eval()`` mode, with ``model.pretrained_cfg`` (from the config) and
        ``model.pretrained_source`` (``"local-dir:<absolute path>"``).

    Raises:
        FileNotFoundError: If the directory, ``config.json`` or ``model.safetensors`` is missing.
        CheckpointError: For an invalid config, a checksum mismatch, an unreadable weights file, or
            missing/unexpected/mis-shaped tensors.
        ValueError: If ``num_classes`` is not positive.

    Example:
        >>> from vipann.zoo.serialization import load_pretrained_dir
        >>> model = load_pretrained_dir("./flip-resnet54")  # doctest: +SKIP
        >>> model.pretrained_cfg.default_num_samples  # doctest: +SKIP
        30
    """
    directory = Path(directory)
    config, weights = _check_files(directory)
    if num_classes is not None and int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    try:
        state = load_file(str(weights), device="cpu")
    except SafetensorError as exc:
        raise _unreadable(weights, exc) from None
    ckpt_classes = config["num_classes"]
    new_head = num_classes is not None and int(num_classes) != ckpt_classes
    model = _build_model(config, int(num_classes) if new_head else ckpt_classes)
    own = model.state_dict()
    allow_missing: list[str] = []
    dropped: list[str] = []
    if new_head:
        dropped = sorted(k for k in state if k.startswith(_CLASSIFIER))
        state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER)}
        allow_missing = [k for k in own if k.startswith(_CLASSIFIER)]
    check_state_dict(
        _expected_shapes(own, state),
        state,
        source=str(weights),
        target=f"{config['name']} ({config['method']}-{config['arch']})",
        allow_missing=allow_missing,
    )
    full = dict(own)
    full.update(state)
    model.load_state_dict(full, strict=True)
    if new_head:
        logger.info(
            "%s: classifier resized from %d to %d classes; dropped %d checkpoint keys: %s; the new %s head "
            "keeps its fresh initialisation",
            config["name"],
            ckpt_classes,
            model.num_classes,
            len(dropped),
            ", ".join(dropped),
            type(model.fc_audioset).__name__,
        )
    cfg = cfg_from_config(config)
    if new_head:
        cfg = cfg.with_classes(model.num_classes)
    model.pretrained_cfg = cfg
    model.pretrained_source = f"local-dir:{directory.resolve()}"
    if device is not None:
        model = model.to(device)
    return model.eval()
