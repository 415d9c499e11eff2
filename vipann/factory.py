"""Building models by name: :func:`create_model` (architecture) and :func:`from_pretrained` (weights)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from vipann._registry import PretrainedCfg, get_pretrained_cfg
from vipann.models.pann import PANN

__all__ = ["create_model", "from_pretrained"]


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
        **kwargs: Overrides of :class:`vipann.models.PANN` arguments (``conv_dropout``,
            ``prior_sigma``, ``frontend``, ...).

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
        model = PANN(cfg.arch, cfg.method, cfg.num_classes, **args)
    model.pretrained_cfg = cfg
    return model


def _unpublished_message(cfg: PretrainedCfg) -> str:
    if cfg.weights == "none":
        return (
            f"{cfg.name!r} is an architecture without pretrained weights; build it with "
            f"vipann.create_model({cfg.name!r}) and train it."
        )
    lines = [
        f"the weights of {cfg.name!r} are not published on the Hugging Face Hub yet "
        f"(tried repository {cfg.hf_hub_id!r}).",
    ]
    command = cfg.convert_command()
    if command:
        lines.append(
            f"Build them locally from the original checkpoint {cfg.source_checkpoint} and load the result:\n"
            f"    {command}\n"
            f"    vipann.from_pretrained('local-dir:./{cfg.name}')"
        )
    return "\n".join(lines)


def from_pretrained(name_or_source: str, **kwargs: Any) -> PANN:
    """Load a pretrained model by registry name.

    Args:
        name_or_source: A registry name such as ``"flip-resnet54"``.
        **kwargs: Loading options (reserved for Hub and local sources).

    Returns:
        The model in ``eval()`` mode with ``model.pretrained_cfg`` attached.

    Raises:
        ValueError: For an unknown name (listing the closest registered names), or a name with
            ``/`` (Hub repositories are written ``hf-hub:org/repo``).
        RuntimeError: When the weights are not published yet; the message gives the repository
            tried and the ``vipann convert`` command that builds the model locally.
    """
    if "/" in name_or_source and ":" not in name_or_source:
        raise ValueError(
            f"{name_or_source!r} looks like a repository or path; write 'hf-hub:{name_or_source}' for a Hub "
            f"repository or 'local-dir:{name_or_source}' for a local directory"
        )
    cfg = get_pretrained_cfg(name_or_source)
    raise RuntimeError(_unpublished_message(cfg))
