"""Saving and loading vipann model directories (``config.json`` + ``model.safetensors`` + ``README.md``).

The layout is the Hugging Face Hub's (``huggingface_hub``'s ``ModelHubMixin`` writes the same
three files), so a directory written by :func:`save_pretrained` can be pushed to the Hub as it is
and read back by :func:`vipann.from_pretrained` from the Hub or from disk.

``config.json`` holds everything needed to rebuild the network and to use it correctly:
architecture, method, constructor arguments, classes and their names, the multi-label flag, the
front end (the weights are only valid at its sample rate), the recommended number of Monte-Carlo
samples, the provenance, the SHA-256 of the weights file and (``config_sha256``) of its own content.
Loading checks all of it, every tensor name and shape, and that every weight is finite; a model is
returned only when everything fits.
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vipann._version import __version__
from vipann.models.families import build_network, is_network
from vipann.models.pann import PANN
from vipann.utils.atomic import fsync_path, set_default_mode
from vipann.utils.dirswap import make_staging_dir, recover_dir, swap_into_place
from vipann.utils.integrity import seal_json, sha256_file
from vipann.utils.outdirs import check_replaceable
from vipann.zoo.cards import render_card
from vipann.zoo.checkpoint import CheckpointError, check_finite, check_state_dict
from vipann.zoo.config import (
    CONFIG_NAME,
    CONFIG_SHA256,
    FORMAT_VERSION,
    MODEL_FILES,
    README_NAME,
    WEIGHTS_NAME,
    cfg_from_config,
    is_model_dir,
    read_config,
    validate_config,
)
from vipann.zoo.heads import attach_head, wrap_head
from vipann.zoo.registry import PretrainedCfg, get_pretrained_cfg

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "README_NAME",
    "WEIGHTS_NAME",
    "cfg_from_config",
    "is_model_dir",
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


def _build_config(
    model: PANN, extra_metadata: Mapping[str, Any] | None, head: Mapping[str, Any] | None
) -> dict[str, Any]:
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
        "head": None if head is None else dict(head),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "extra": dict(extra_metadata or {}),
        "weights_sha256": "",
    }
    try:
        json.dumps(config["extra"], allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"extra_metadata must be JSON-serialisable: {exc}") from None
    return config


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _check_complete(weights: Path, target: Path) -> None:
    """Check that the weights file holds every byte its header promises (a writer can fail silently)."""
    try:
        with weights.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        complete = weights.stat().st_size == 8 + size + end
    except (OSError, ValueError, KeyError, TypeError):
        complete = False
    if not complete:
        raise _write_failed(target, OSError(errno.EIO, "the weights file was not written completely"))


def _write_failed(target: Path, exc: BaseException) -> OSError:
    """One clear error for a write that failed (a full disk, a read-only folder, a quota)."""
    code = getattr(exc, "errno", None)
    if code is None:  # safetensors reports I/O errors as SafetensorError("... Os { code: 28, ... }")
        match = re.search(r"(?:code: |os error )(\d+)", str(exc))
        code = int(match.group(1)) if match else None
    reason = getattr(exc, "strerror", None) or (os.strerror(code) if code else str(exc))
    hint = {
        errno.ENOSPC: "free some space or save elsewhere",
        errno.EDQUOT: "free some of your quota or save elsewhere",
        errno.EACCES: "save to a folder you can write to",
        errno.EROFS: "save to a writable file system",
    }.get(code or 0, "check the folder and save again")
    return OSError(
        code or errno.EIO,
        f"cannot write the model to {target}: {reason}; {hint}. Nothing was changed: "
        + ("the previous model there is intact" if target.exists() else "no directory was created"),
    )


def save_pretrained(
    model: PANN,
    directory: str | os.PathLike[str],
    *,
    card: bool = True,
    overwrite: bool = False,
    extra_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model as a Hub-ready directory: ``model.safetensors``, ``config.json``, ``README.md``.

    Writing is atomic: the files are written and fsynced in a staging directory next to
    ``directory``, which is then swapped into place (:mod:`vipann.utils.dirswap`). An interrupted
    save leaves no directory that loads; what a killed save leaves (its staging directory, or a
    swap cut between its two renames) is cleaned up, finished or rolled back by the next save or
    load of ``directory``. ``config.json`` records the SHA-256 of the weights and of itself, so
    every file that changes what the model computes or reports is checked on load. Permissions
    follow the umask.

    Args:
        model: The model. Its ``pretrained_cfg`` (if any) supplies the metadata; architecture,
            method, classes and front end are always taken from the model itself. A wrapper with a
            ``pretrained_parts()`` method (a Laplace or IVON model) is saved as its network, its
            head config and its extra tensors.
        directory: Target directory (created with its parents).
        card: Also write the model card ``README.md`` (:func:`vipann.zoo.cards.render_card`).
        overwrite: Replace an existing non-empty ``directory`` (atomically swapped), which must be a
            vipann model directory holding nothing but its own files; anything else is refused,
            naming the files that would be lost.
        extra_metadata: JSON-serialisable recipe metadata stored under ``config["extra"]``
            (e.g. a calibration temperature).

    Returns:
        The directory.

    Raises:
        FileExistsError: If ``directory`` exists and is not empty (and ``overwrite`` is False),
            or is a file; :class:`vipann.utils.outdirs.OutputDirError` (a ``FileExistsError``) if it
            is not a model directory, holds other files, or is the working directory.
        OSError: If the disk is full or the folder not writable (one clear message; nothing changed).
        CheckpointError: If the model's weights hold NaN or infinite values.
        TypeError: If ``model`` is not a vipann network (:class:`~vipann.models.PANN`,
            :class:`~vipann.models.EfficientAT`) or ``extra_metadata`` is not JSON-serialisable.

    Example:
        >>> import vipann
        >>> from vipann.zoo.serialization import load_pretrained_dir, save_pretrained
        >>> path = save_pretrained(vipann.create_model("flip-tiny"), "flip-tiny-demo")  # doctest: +SKIP
        >>> model = load_pretrained_dir(path)  # doctest: +SKIP
    """
    head = getattr(model, "head_config", None)
    extra_state: dict[str, torch.Tensor] = {}
    if not is_network(model) and callable(getattr(model, "pretrained_parts", None)):
        model, head, extra_state = model.pretrained_parts()
    if not is_network(model):
        raise TypeError(f"save_pretrained expects a vipann model (PANN, EfficientAT), got {type(model).__name__}")
    target = Path(directory).absolute()
    recover_dir(target)  # a save of this directory killed earlier: finish or roll it back first
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{str(directory)!r} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{str(directory)!r} exists and is not empty; pass overwrite=True (vipann convert --overwrite) to "
            "replace it, or choose another directory"
        )
    # Only an empty directory or a vipann model directory is replaced; anything else is refused, naming
    # the files that would be lost.
    check_replaceable(target, recognise=is_model_dir, own_names=MODEL_FILES, what="a vipann model directory")
    config = _build_config(model, extra_metadata, head)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    clash = sorted(set(state) & set(extra_state))
    if clash:
        raise ValueError(f"the head's tensors {clash[:3]} clash with the network's")
    state.update({k: v.detach().to("cpu").contiguous() for k, v in extra_state.items()})
    check_finite(state, source=f"the model being saved to {directory}")

    tmp = make_staging_dir(target)
    try:
        weights = tmp / WEIGHTS_NAME
        try:
            save_file(state, str(weights), metadata={"format": "pt"})
        except SafetensorError as exc:
            raise _write_failed(target, exc) from None
        _check_complete(weights, target)
        set_default_mode(weights)  # safetensors writes 0600; a model directory follows the umask
        fsync_path(weights)
        config["weights_sha256"] = sha256_file(weights)
        validate_config(config, source="the config being saved")
        config = seal_json(config, CONFIG_SHA256)  # config.json is covered by its own checksum
        if card:
            _write_text(tmp / README_NAME, render_card(config))
        # config.json is written last: a directory without it never loads, whatever else is there.
        _write_text(tmp / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=False) + "\n")
        fsync_path(tmp)
        swap_into_place(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise _write_failed(target, exc) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(directory)


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
    recover_dir(directory.absolute())  # a save killed between its two renames: finish or roll it back
    config = read_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{str(directory)!r} has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    digest = sha256_file(weights)
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
        ``model.pretrained_source`` (``"local-dir:<absolute path>"``); for a head registered with a
        wrapper (Laplace, IVON) the wrapper around it.

    Raises:
        FileNotFoundError: If the directory, ``config.json`` or ``model.safetensors`` is missing.
        CheckpointError: For an invalid config, a config or weights file that does not match its
            checksum, an unreadable weights file, NaN or infinite weights, or missing/unexpected/
            mis-shaped tensors.
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
    check_finite(state, source=str(weights))
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
    return wrap_head(model.eval(), config.get("head"))
