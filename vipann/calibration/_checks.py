"""Input checks shared by the calibration modules (private)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vipann.inference.temperature import as_temperature
from vipann.metrics._checks import check_class_targets, check_multihot, check_scores

__all__ = ["as_mc_logits", "as_temperature", "check_bounds", "check_targets", "work_dtype"]


def as_mc_logits(logits: Tensor, name: str = "logits") -> Tensor:
    """Validate ``(N, C)`` or ``(S, N, C)`` logits and return them as ``(S, N, C)`` (``S = 1`` for 2-d)."""
    check_scores(logits, name, "(N, C) or (S, N, C) = ([samples,] clips, classes)", (2, 3))
    return logits[None] if logits.dim() == 2 else logits


def check_targets(targets: Tensor, n: int, c: int, multilabel: bool) -> Tensor:
    """``(N,)`` int64 class indices (multi-class) or ``(N, C)`` bool multi-hot targets (multi-label)."""
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor; got {type(targets).__name__}")
    if multilabel:
        return check_multihot(targets, (n, c))
    return check_class_targets(targets, n, c)


def check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    """Validate ``(low, high)`` temperature bounds with ``0 < low < high < inf``."""
    lo, hi = (float(b) for b in bounds)
    if not (0.0 < lo < hi < math.inf):
        raise ValueError(f"bounds must satisfy 0 < low < high < inf; got {bounds!r}")
    return lo, hi


def work_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device supports it (the optimiser and log-sum-exps are then exact enough)."""
    return torch.float32 if device.type == "mps" else torch.float64
