"""MOPED: deterministic weights into Flipout layers, and whole deterministic models into ``flip``/``detflip``.

* :func:`load_deterministic_weights`: a deterministic state dict into a model of any method and
  family; each Flipout layer takes its deterministic counterpart's weights as posterior mean.
* :func:`moped`: a ``det``/``drop`` model into its ``flip`` or ``detflip`` counterpart.

Both are re-exported by :mod:`vipann.zoo.convert`, whose converters (PANNs, VI-PANN, EfficientAT)
use them for the Bayesian methods.

References:
    R. Krishnan, M. Subedar, O. Tickoo, "Specifying weight priors in Bayesian deep neural networks
    with empirical Bayes" (MOPED), AAAI 2020.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from vipann.layers import FlipoutLayer, flipout_layers
from vipann.models.families import build_network
from vipann.zoo.checkpoint import check_state_dict
from vipann.zoo.registry import get_pretrained_cfg, split_model_name

__all__ = ["load_deterministic_weights", "moped"]


def load_deterministic_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    moped_delta: float = 0.5,
    moped_prior: str = "zero",
    source: str = "checkpoint",
    target: str | None = None,
) -> nn.Module:
    """Load deterministic weights into a model of any method (MOPED for its Flipout layers).

    Each Flipout layer ``P`` of ``model`` takes ``P.weight``/``P.bias`` from ``state_dict`` as its
    posterior mean, with ``sigma = moped_delta * |w|``; every other key is loaded as it is.
    Every key and shape is checked before anything is written.

    Args:
        model: The target model (``det``, ``drop``, ``flip`` or ``detflip``).
        state_dict: A deterministic state dict in vipann/PANNs names, without front-end keys.
        moped_delta: MOPED's delta (VI-PANN uses 0.5).
        moped_prior: ``"zero"`` (prior N(0, prior_sigma), as bayesian-torch's ``dnn_to_bnn``) or
            ``"weights"`` (prior centred on the weights; empirical-Bayes MOPED).
        source: Name of the state dict in messages.
        target: Name of the model in messages.

    Returns:
        The model (loaded in place).

    Raises:
        CheckpointError: Listing missing, unexpected or mis-shaped keys.
    """
    target = target or f"{model.method}-{model.arch}"
    remaining = dict(state_dict)
    layers: dict[str, FlipoutLayer] = dict(flipout_layers(model))
    expected: dict[str, torch.Tensor] = {}
    own = model.state_dict()
    flip_prefixes = tuple(p + "." for p in layers)
    for key, value in own.items():
        if not key.startswith(flip_prefixes):
            expected[key] = value
    for prefix, layer in layers.items():
        expected[prefix + ".weight"] = layer.mu_w
        if layer.mu_bias is not None:
            expected[prefix + ".bias"] = layer.mu_bias
    check_state_dict(expected, remaining, source=source, target=target)
    for prefix, layer in layers.items():
        layer.init_from_deterministic(
            remaining.pop(prefix + ".weight"), remaining.pop(prefix + ".bias", None), moped_delta, moped_prior
        )
    full = model.state_dict()
    full.update(remaining)
    model.load_state_dict(full, strict=True)
    return model


def moped(model: nn.Module, method: str = "flip", *, delta: float = 0.5, prior: str = "zero") -> nn.Module:
    """Turn a deterministic (``det``/``drop``) model into its ``flip`` or ``detflip`` counterpart.

    Args:
        model: The source model; its weights become posterior means.
        method: ``"flip"`` (every conv and linear layer) or ``"detflip"`` (fc1 and classifier).
        delta: MOPED delta: posterior sigma = delta * |w|.
        prior: ``"zero"`` or ``"weights"`` (see :func:`load_deterministic_weights`). The choice is
            stored in the priors, which persist through save/load.

    Returns:
        A new model in the source's train/eval mode, on the source's device.

    Raises:
        ValueError: If ``model`` is not deterministic or ``method`` is not a Flipout method.

    References:
        R. Krishnan, M. Subedar, O. Tickoo, "Specifying weight priors in Bayesian deep neural
        networks with empirical Bayes" (MOPED), AAAI 2020.
    """
    if model.method not in ("det", "drop"):
        raise ValueError(f"MOPED converts a det or drop model, got a {model.method!r} model")
    if method not in ("flip", "detflip"):
        raise ValueError(f"MOPED produces 'flip' or 'detflip', got {method!r}")
    config = model.config()
    device = next(model.parameters()).device
    with torch.device(device):
        target = build_network(
            config.pop("arch"),
            method,
            config.pop("num_classes"),
            **{k: v for k, v in config.items() if k != "method"},
        )
    load_deterministic_weights(
        target,
        model.state_dict(),
        moped_delta=delta,
        moped_prior=prior,
        source=f"{model.method}-{model.arch}",
        target=f"{method}-{model.arch}",
    )
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is not None:
        _, arch, tag = split_model_name(cfg.name)
        new_name = f"{method}-{arch}" + (f".{tag}" if tag else "")
        try:
            base = get_pretrained_cfg(new_name)
            target.pretrained_cfg = base.with_classes(
                target.num_classes, cfg.labels if cfg.num_classes != base.num_classes else None
            )
        except ValueError:
            target.pretrained_cfg = cfg
    return target.train(model.training)
