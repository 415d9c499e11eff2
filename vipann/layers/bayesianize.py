"""A deterministic ``Conv2d``/``Linear`` into its Flipout counterpart (the layer swap every model family uses)."""

from __future__ import annotations

from torch import nn

from vipann.layers.flipout import Conv2dFlipout, LinearFlipout

__all__ = ["to_flipout"]


def to_flipout(module: nn.Module, prior: dict[str, float]) -> nn.Module:
    """The Flipout counterpart of a ``Conv2d`` (any groups, depthwise included) or ``Linear``, freshly initialised.

    Args:
        module: The deterministic layer (its shape is copied, not its weights: MOPED loads them).
        prior: Keyword arguments of the Flipout layer (``prior_mean``, ``prior_variance``,
            ``posterior_mu_init``, ``posterior_rho_init``; bayesian-torch's defaults when empty).

    Returns:
        A :class:`~vipann.layers.Conv2dFlipout` or :class:`~vipann.layers.LinearFlipout`.

    Raises:
        TypeError: For any other module.
    """
    if isinstance(module, nn.Conv2d):
        return Conv2dFlipout(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            module.bias is not None,
            **prior,
        )
    if isinstance(module, nn.Linear):
        return LinearFlipout(module.in_features, module.out_features, module.bias is not None, **prior)
    raise TypeError(f"to_flipout converts Conv2d and Linear layers, not {type(module).__name__}")
