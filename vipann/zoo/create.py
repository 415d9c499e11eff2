"""Building a registered model with fresh weights: :func:`create_model`."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from vipann.models.families import build_network
from vipann.models.pann import PANN
from vipann.zoo.registry import get_pretrained_cfg

__all__ = ["create_model"]


def create_model(
    name: str,
    num_classes: int | None = None,
    *,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> PANN:
    """Build a registered model with freshly initialised weights.

    Args:
        name: Registry name ``<method>-<arch>[.<tag>]`` (see :func:`vipann.list_models`).
        num_classes: Number of outputs; defaults to the entry's.
        device: Device to build the model on (default: torch's default device).
        **kwargs: Overrides of the family's constructor arguments (:class:`vipann.models.PANN`,
            :class:`vipann.models.EfficientAT`: ``conv_dropout``, ``prior_sigma``, ``frontend``, ...).

    Returns:
        The model in training mode, with its metadata in ``model.pretrained_cfg``.

    Raises:
        ValueError: For an unknown name (with the closest matches) or invalid arguments.

    Example:
        >>> import vipann
        >>> model = vipann.create_model("flip-tiny", num_classes=5)
        >>> model.pretrained_cfg.method
        'flip'
    """
    cfg = get_pretrained_cfg(name)
    if num_classes is not None:
        cfg = cfg.with_classes(int(num_classes))
    args = {"frontend": dict(cfg.frontend), **cfg.model_args, **kwargs}
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = build_network(cfg.arch, cfg.method, cfg.num_classes, **args)
    model.pretrained_cfg = cfg
    return model
