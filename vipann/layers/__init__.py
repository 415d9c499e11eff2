"""Stochastic layers: Flipout variational layers and MC dropout, plus the sampling switch."""

from vipann.layers.dropout import MCDropout
from vipann.layers.flipout import (
    Conv2dFlipout,
    FlipoutLayer,
    LinearFlipout,
    flipout_layers,
    kl_loss,
    rho_from_sigma,
    set_mean_only,
)
from vipann.layers.stochastic import StochasticModule, mc_sampling, set_mc_sampling, stochastic_modules

__all__ = [
    "Conv2dFlipout",
    "FlipoutLayer",
    "LinearFlipout",
    "MCDropout",
    "StochasticModule",
    "flipout_layers",
    "kl_loss",
    "mc_sampling",
    "rho_from_sigma",
    "set_mc_sampling",
    "set_mean_only",
    "stochastic_modules",
]
