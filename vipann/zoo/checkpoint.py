"""Strict state-dict loading: every key and every shape is checked, and failures name them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "check_finite",
    "check_state_dict",
    "load_state_dict_strict",
    "read_torch_checkpoint",
]

_SHOW = 8


class CheckpointError(ValueError):
    """A checkpoint does not fit the model: missing, unexpected or mis-shaped keys, or bad content."""


def _listing(kind: str, names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    more = f" (+{len(names) - _SHOW} more)" if len(names) > _SHOW else ""
    return f"{len(names)} {kind}: {shown}{more}"


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "checkpoint",
    target: str = "model",
    allow_missing: Iterable[str] = (),
) -> None:
    """Compare a state dict with the expected one key by key and shape by shape.

    Args:
        expected: The model's own ``state_dict()`` (or any name -> tensor mapping).
        state_dict: The tensors to load.
        source: How to name the state dict in messages (e.g. the file name).
        target: How to name the model in messages (e.g. ``"flip-resnet54"``).
        allow_missing: Keys that may be absent (the model keeps its own values).

    Raises:
        CheckpointError: Listing the missing, unexpected and mis-shaped keys.
    """
    allowed = set(allow_missing)
    missing = [k for k in expected if k not in state_dict and k not in allowed]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(_listing("missing keys", missing))
    if unexpected:
        problems.append(_listing("unexpected keys", unexpected))
    if mismatched:
        problems.append(_listing("shape mismatches (checkpoint vs model)", mismatched))
    if problems:
        hint = ""
        if any(k.startswith("fc_audioset.") for k in (*missing, *unexpected)) or any(
            m.startswith("fc_audioset.") for m in mismatched
        ):
            hint = " (the classifier differs: pass num_classes= to match the checkpoint, or load a new head)"
        raise CheckpointError(f"{source} does not fit {target}: " + "; ".join(problems) + hint)


def check_finite(state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Refuse weights holding NaN or infinite values (they would make every prediction NaN).

    Args:
        state_dict: The tensors.
        source: How to name them in the message.

    Raises:
        CheckpointError: Naming the tensors with non-finite values.
    """
    bad = [
        name
        for name, tensor in state_dict.items()
        if tensor.is_floating_point() and tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        raise CheckpointError(
            f"{source} holds NaN or infinite weights in {_listing('tensors', bad)}; the model would predict NaN. "
            "The file is damaged or the training diverged: use another checkpoint"
        )


def load_state_dict_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "checkpoint",
    target: str | None = None,
) -> None:
    """Load ``state_dict`` into ``model`` after checking every key and shape.

    Nothing is loaded when the check fails (the model is left as it was).

    Args:
        model: The model.
        state_dict: Tensors to load.
        source: Name of the state dict in error messages.
        target: Name of the model in error messages (default: its class name).

    Raises:
        CheckpointError: On any missing, unexpected or mis-shaped key.
    """
    check_state_dict(model.state_dict(), state_dict, source=source, target=target or type(model).__name__)
    model.load_state_dict(dict(state_dict), strict=True)


def read_torch_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a foreign pickled checkpoint (``.pth``) safely and return its state dict.

    Uses ``torch.load(weights_only=True)``: only tensors and plain containers are unpickled.
    Accepts a bare state dict or PANNs' ``{'iteration', 'model', 'sampler'}`` layout (also
    ``'state_dict'``).

    Args:
        path: File to read.

    Returns:
        The ``name -> tensor`` state dict.

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointError: If the file cannot be unpickled safely, holds no state dict, or holds
            NaN or infinite weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / unsafe pickles
        # torch's message runs over several lines (and suggests weights_only=False, which would run any
        # code the file holds); keep the line that says what was found.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if "nsupported" in line), lines[0] if lines else "")
        raise CheckpointError(
            f"cannot read {path.name} as a PyTorch checkpoint with weights_only=True ({type(exc).__name__}: "
            f"{detail}); the file is damaged, is not a .pth state dict, or holds Python objects besides tensors, "
            "which vipann never unpickles (they could run code)"
        ) from exc
    state = state_dict_from_object(obj, source=path.name)
    check_finite(state, source=path.name)
    return state


def state_dict_from_object(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Extract the state dict from a loaded checkpoint object.

    Args:
        obj: A state dict, or a dict holding one under ``'model'`` or ``'state_dict'``.
        source: Name used in error messages.

    Returns:
        The state dict.

    Raises:
        CheckpointError: If no state dict is found.
    """
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
    raise CheckpointError(
        f"{source} holds no state dict (expected a name->tensor mapping, or a dict with a 'model' entry as PANNs saves)"
    )
