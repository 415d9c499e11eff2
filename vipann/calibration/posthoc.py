"""Post-hoc calibration of a model: collect its validation logits, fit ``T``, store it in its metadata.

The temperature lives in ``model.pretrained_cfg.temperature`` (a float, a tuple of per-class floats,
or None), so it is saved with the model and :func:`vipann.predict` divides every Monte-Carlo
sample's logits by it before the softmax/sigmoid. For an :class:`~vipann.Ensemble` the temperature
is stored on the ensemble and overrides the members' own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vipann.calibration.temperature import fit_temperature
from vipann.inference.sampler import make_sampler
from vipann.inference.windows import as_clips, batch_windows, cut_windows

__all__ = ["calibrate", "collect_logits", "get_temperature", "set_temperature", "with_temperature"]


def with_temperature(cfg: Any, temperature: float | Sequence[float] | Tensor | None) -> Any:
    """A copy of a :class:`~vipann.PretrainedCfg` with its ``temperature`` field replaced.

    Args:
        cfg: The metadata (a frozen dataclass with a ``temperature`` field).
        temperature: A positive scalar, per-class values, or None (no scaling).

    Returns:
        The new metadata; the temperature is stored as a float or a tuple of floats (JSON-friendly).

    Raises:
        TypeError: If ``cfg`` has no ``temperature`` field.
    """
    if not dataclasses.is_dataclass(cfg) or "temperature" not in {f.name for f in dataclasses.fields(cfg)}:
        raise TypeError(f"{type(cfg).__name__} has no `temperature` field: this vipann cannot store a temperature")
    value: float | tuple[float, ...] | None
    if temperature is None:
        value = None
    else:
        t = torch.as_tensor(temperature, dtype=torch.float64).detach().cpu()
        value = float(t) if t.dim() == 0 else tuple(float(v) for v in t.flatten())
    return dataclasses.replace(cfg, temperature=value)


def get_temperature(model: nn.Module) -> float | tuple[float, ...] | None:
    """The temperature stored in ``model.pretrained_cfg`` (None when there is none)."""
    return getattr(getattr(model, "pretrained_cfg", None), "temperature", None)


def set_temperature(model: nn.Module, temperature: float | Sequence[float] | Tensor | None) -> None:
    """Store a temperature in ``model.pretrained_cfg`` (None removes it).

    Args:
        model: A vipann model or :class:`~vipann.Ensemble` with a ``pretrained_cfg``.
        temperature: A positive scalar, ``C`` per-class values, or None.

    Raises:
        ValueError: If the model has no ``pretrained_cfg``, or for an invalid temperature.
        TypeError: If the metadata has no ``temperature`` field.
    """
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        raise ValueError(
            "the model has no pretrained_cfg to store the temperature in; build it with vipann.create_model"
        )
    if temperature is not None:
        t = torch.as_tensor(temperature, dtype=torch.float64)
        if t.dim() > 1 or (t.dim() == 1 and t.numel() != model.num_classes):
            raise ValueError(
                f"temperature must be a scalar or have {model.num_classes} values; got shape {tuple(t.shape)}"
            )
        if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
            raise ValueError(f"temperature must be positive and finite; got {temperature!r}")
    model.pretrained_cfg = with_temperature(cfg, temperature)


@torch.no_grad()
def collect_logits(
    model: nn.Module,
    waveforms: Tensor | np.ndarray | Sequence,
    num_samples: int | None = None,
    *,
    batch_size: int = 8,
    generator: torch.Generator | int | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Raw Monte-Carlo logits ``(S, N, C)`` of whole clips, with no temperature applied.

    Each clip goes through the network in one piece (zero-padded to the model's minimum length; clips
    are not windowed as :func:`vipann.predict` windows long audio), with the same Monte-Carlo
    sampling as :func:`vipann.predict`. For an :class:`~vipann.Ensemble` the members' logits are
    concatenated: ``(M·S, N, C)``.

    Args:
        model: A vipann model or ensemble.
        waveforms: ``(N, T)`` float audio at the model's sample rate, or a list of 1-D clips.
        num_samples: Monte-Carlo samples ``S`` (default: the model's ``default_num_samples``).
        batch_size: Clips per pass.
        generator: A generator on the model's device, or an int seed.
        device: Device to run on (the model is moved there).

    Returns:
        The logits on the model's device.

    Raises:
        ValueError: On invalid audio or ``num_samples < 1``.
    """
    cfg = getattr(model, "pretrained_cfg", None)
    if num_samples is None:
        num_samples = cfg.default_num_samples if cfg is not None else (1 if model.method == "det" else 30)
    if int(num_samples) < 1 or int(batch_size) < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples} and {batch_size}")
    if device is not None:
        model.to(device)
    param = next(model.parameters())
    if isinstance(generator, int):
        generator = torch.Generator(device=param.device).manual_seed(generator)
    clips = as_clips(waveforms, None, model)
    longest = max(max(c.numel() for c in clips), model.min_samples)
    pieces, _ = cut_windows(clips, longest, longest, model.min_samples)
    model.eval()
    # temperature=1.0: raw logits, whatever temperature the model (or an ensemble's members) stores.
    sampler = make_sampler(model, int(num_samples), generator=generator, temperature=1.0)
    out: Tensor | None = None
    for wave, index in batch_windows(pieces, int(batch_size)):
        logits = sampler(wave.to(device=param.device, dtype=param.dtype))
        if out is None:
            out = logits.new_empty(logits.shape[0], len(pieces), *logits.shape[2:])
        out[:, index] = logits
    assert out is not None  # as_clips refuses an empty batch
    return out


def calibrate(
    model: nn.Module,
    targets: Tensor,
    *,
    waveforms: Tensor | np.ndarray | Sequence | None = None,
    logits: Tensor | None = None,
    per_class: bool = False,
    num_samples: int | None = None,
    batch_size: int = 8,
    generator: torch.Generator | int | None = None,
    max_iter: int = 200,
    bounds: tuple[float, float] = (0.05, 20.0),
) -> Tensor:
    """Fit a temperature on a validation split and store it in the model's metadata.

    Give either the validation ``waveforms`` (their raw Monte-Carlo logits are collected with
    :func:`collect_logits`) or precomputed raw ``logits`` ``(N, C)`` / ``(S, N, C)``. Any temperature
    already stored is ignored while fitting and replaced. Multi-class or multi-label is read from the
    model's metadata.

    Args:
        model: A vipann model or :class:`~vipann.Ensemble` with a ``pretrained_cfg``.
        targets: ``(N,)`` class indices or ``(N, C)`` multi-hot validation targets.
        waveforms: Validation audio.
        logits: Raw validation logits instead of audio.
        per_class: One temperature per class (multi-label models only).
        num_samples: Monte-Carlo samples when collecting logits (default: the model's).
        batch_size: Clips per pass when collecting logits.
        generator: Generator or int seed for the Monte-Carlo sampling.
        max_iter: L-BFGS iterations.
        bounds: Range of the temperature.

    Returns:
        The fitted temperature (0-d, or ``(C,)`` with ``per_class``); ``model.pretrained_cfg.temperature``
        now holds it.

    Raises:
        ValueError: Unless exactly one of ``waveforms`` / ``logits`` is given, or for invalid inputs.
        TypeError: If the model's metadata cannot store a temperature.

    References:
        Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural networks", ICML 2017.

    Example:
        >>> import vipann
        >>> from vipann.calibration import calibrate, temperature_report
        >>> t = calibrate(model, y_val, waveforms=x_val, generator=0)  # doctest: +SKIP
        >>> vipann.predict(model, x_test).probs  # now temperature-scaled  # doctest: +SKIP
    """
    if (waveforms is None) == (logits is None):
        raise ValueError("pass exactly one of waveforms= (validation audio) or logits= (raw validation logits)")
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        raise ValueError(
            "the model has no pretrained_cfg to store the temperature in; build it with vipann.create_model"
        )
    with_temperature(cfg, None)  # fail before any work if the metadata cannot hold a temperature
    if logits is None:
        logits = collect_logits(model, waveforms, num_samples, batch_size=batch_size, generator=generator)
    if isinstance(targets, Tensor):
        targets = targets.to(logits.device)
    t = fit_temperature(logits, targets, bool(cfg.multilabel), per_class, max_iter=max_iter, bounds=bounds)
    set_temperature(model, t)
    return t
