"""Applying a temperature to logits (fitting one is :mod:`vipann.calibration`'s job)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["apply_temperature", "as_temperature"]


def as_temperature(temperature: float | Sequence[float] | Tensor, num_classes: int, like: Tensor) -> Tensor:
    """A positive, finite temperature as a 0-d or ``(C,)`` tensor with the dtype and device of ``like``.

    Args:
        temperature: A positive scalar, or ``C`` per-class values.
        num_classes: ``C``.
        like: A tensor whose dtype and device the result takes.

    Returns:
        The temperature tensor.

    Raises:
        TypeError: For a bool.
        ValueError: For a wrong shape, or a non-positive or non-finite value.
    """
    if isinstance(temperature, bool):
        raise TypeError("temperature must be a number, a sequence of numbers or a tensor; got a bool")
    t = torch.as_tensor(temperature, dtype=like.dtype, device=like.device)
    if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != num_classes):
        raise ValueError(f"temperature must be a scalar or have shape ({num_classes},); got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"temperature must be positive and finite; got {temperature!r}")
    return t


def apply_temperature(logits: Tensor, temperature: float | Sequence[float] | Tensor) -> Tensor:
    """Divide logits by a temperature.

    Inputs:
        logits: ``(..., C)`` logits, e.g. ``(N, C)`` or Monte-Carlo ``(S, N, C)``.
        temperature: A positive scalar, or ``(C,)`` per-class temperatures.

    Args:
        logits: The logits.
        temperature: The temperature.

    Returns:
        ``logits / temperature`` (broadcast over the class axis), same shape, dtype and device.

    Raises:
        TypeError: If ``logits`` is not a floating-point tensor.
        ValueError: For a non-positive or non-finite temperature, or a per-class temperature whose
            length is not ``C``.

    References:
        Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural networks", ICML 2017.
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() < 1:
        raise TypeError("logits must be a floating-point torch.Tensor of shape (..., C)")
    return logits / as_temperature(temperature, logits.shape[-1], logits)
