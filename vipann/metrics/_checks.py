"""Input checks shared by the metric modules (private)."""

from __future__ import annotations

import torch
from torch import Tensor

from vipann.uncertainty import validate_probs


def check_tensor(x: Tensor, name: str, shape_hint: str, ndims: tuple[int, ...]) -> None:
    """Raise unless ``x`` is a non-empty tensor with one of the allowed numbers of dimensions."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.dim() not in ndims:
        raise ValueError(f"{name} must have shape {shape_hint}; got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must be non-empty; got shape {tuple(x.shape)}")


def check_scores(x: Tensor, name: str, shape_hint: str, ndims: tuple[int, ...]) -> None:
    """Raise unless ``x`` is a non-empty, finite, floating-point tensor of the right rank."""
    check_tensor(x, name, shape_hint, ndims)
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_probs_2d(probs: Tensor, multilabel: bool, name: str = "probs") -> Tensor:
    """Validate ``(N, C)`` probabilities (categorical rows, or independent Bernoullis)."""
    check_tensor(probs, name, "(N, C) = (clips, classes)", (2,))
    return validate_probs(probs, multilabel, name=name)[0]


def check_class_targets(targets: Tensor, n: int, num_classes: int, name: str = "targets") -> Tensor:
    """Validate ``(N,)`` integer class indices in ``[0, C)`` and return them as int64."""
    check_tensor(targets, name, f"(N,) = ({n},) class indices", (1,))
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(
            f"{name} must hold integer class indices of shape (N,); got dtype {targets.dtype}. "
            "Multi-hot (N, C) targets need multilabel=True."
        )
    if targets.shape[0] != n:
        raise ValueError(f"{name} must have shape (N,) = ({n},) to match the predictions; got {tuple(targets.shape)}")
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{name} must be class indices in [0, {num_classes}); found values in [{lo}, {hi}]")
    return targets.long()


def check_multihot(targets: Tensor, shape: tuple[int, int], name: str = "targets") -> Tensor:
    """Validate ``(N, C)`` multi-hot targets (bool, or numbers in {0, 1}) and return a bool tensor."""
    check_tensor(targets, name, f"(N, C) = {tuple(shape)} multi-hot", (2,))
    if tuple(targets.shape) != tuple(shape):
        raise ValueError(
            f"{name} must have shape (N, C) = {tuple(shape)} to match the predictions; got {tuple(targets.shape)}"
        )
    if targets.dtype == torch.bool:
        return targets
    if not bool(((targets == 0) | (targets == 1)).all()):
        raise ValueError(f"{name} must be multi-hot: every entry 0 or 1 (or bool)")
    return targets != 0
