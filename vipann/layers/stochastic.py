"""Stochastic modules and the switch that turns their sampling on at inference.

Every source of randomness in a vipann model (MC-dropout sites, Flipout layers) is a module that
derives from :class:`StochasticModule`. Such a module samples when the model is in ``train()``
mode, or when the sampling API (:func:`mc_sampling`) has switched it on; in plain ``eval()`` it is
deterministic (dropout is the identity, a Flipout layer uses its posterior mean). This keeps
``model.eval()(x)`` reproducible and makes Monte-Carlo prediction an explicit request.

A Monte-Carlo pass stacks several samples (and clips) as rows of one batch. How the Flipout layers
draw the weight noise of those rows is the ``draws`` setting (:data:`DRAWS`):

* ``"independent"``: each of ``num_draws`` equal groups of rows gets its own weight perturbation
  ``ΔW`` (rows of a group share it, with bayesian-torch's element-wise sign flips);
* ``"shared"``: one ``ΔW`` per layer and pass serves every row, decorrelated by random sign
  vectors drawn per row and channel (Flipout as Wen et al., 2018 define it); biases, and small
  layers' weights, are drawn per row. Every row is an exact sample of the posterior; two rows are
  uncorrelated but not independent.

MC dropout draws its masks per element in both settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = [
    "DRAWS",
    "StochasticModule",
    "check_draws",
    "mc_sampling",
    "set_mc_sampling",
    "stochastic_modules",
]


#: The ways a Monte-Carlo pass draws the weight noise of its rows (see the module docstring).
DRAWS: tuple[str, ...] = ("independent", "shared")


def check_draws(draws: str, num_draws: int = 1) -> str:
    """Validate a ``draws`` setting (and its combination with ``num_draws``).

    Args:
        draws: ``"independent"`` or ``"shared"``.
        num_draws: Groups of independent draws; must be 1 with ``"shared"``.

    Returns:
        ``draws``.

    Raises:
        ValueError: For an unknown setting or ``num_draws > 1`` with shared draws.
    """
    if draws not in DRAWS:
        raise ValueError(f"draws must be one of {', '.join(map(repr, DRAWS))}, got {draws!r}")
    if int(num_draws) < 1:
        raise ValueError(f"num_draws must be >= 1, got {num_draws}")
    if draws == "shared" and int(num_draws) != 1:
        raise ValueError(
            f"num_draws={num_draws} asks for independent groups, but draws='shared' uses one draw for the "
            "whole pass; pass num_draws=1 or draws='independent'"
        )
    return draws


class StochasticModule(nn.Module):
    """Base class of modules that sample noise.

    Attributes:
        mc_active: When True the module samples even in ``eval()`` mode. Set it through
            :func:`mc_sampling` / :func:`set_mc_sampling`, not by hand.
        generator: Optional :class:`torch.Generator` used for every draw of this module (``None``
            uses torch's global generator). It must live on the same device as the module.
        num_draws: How many independent noise draws one forward pass makes. With ``num_draws=G``
            the batch is read as ``G`` equal groups (``(G*B, ...)``, group-major) and each group
            gets its own draw; the sampling API uses this to batch Monte-Carlo samples.
        draws: ``"independent"`` (the default: ``num_draws`` groups, each its own draw) or
            ``"shared"`` (one weight draw for the pass, per-row sign vectors; see :data:`DRAWS`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.mc_active: bool = False
        self.generator: torch.Generator | None = None
        self.num_draws: int = 1
        self.draws: str = "independent"

    @property
    def stochastic(self) -> bool:
        """Whether the next forward pass samples (training mode or MC sampling switched on)."""
        return self.training or self.mc_active

    def _group_count(self, batch: int) -> int:
        groups = int(self.num_draws)
        if groups < 1:
            raise ValueError(f"num_draws must be >= 1, got {groups}")
        if batch % groups:
            raise ValueError(
                f"{type(self).__name__}: batch of {batch} cannot be split into num_draws={groups} "
                "equal groups; the sampling API must stack the Monte-Carlo samples group-major."
            )
        return groups


def stochastic_modules(model: nn.Module) -> Iterator[StochasticModule]:
    """Yield every :class:`StochasticModule` inside ``model`` (in registration order).

    Args:
        model: Any module.

    Returns:
        An iterator over the stochastic sub-modules.
    """
    for module in model.modules():
        if isinstance(module, StochasticModule):
            yield module


def set_mc_sampling(
    model: nn.Module,
    enabled: bool,
    *,
    generator: torch.Generator | None = None,
    num_draws: int = 1,
    draws: str = "independent",
) -> None:
    """Switch Monte-Carlo sampling of every stochastic module of ``model`` on or off.

    Args:
        model: The model whose MC-dropout sites and Flipout layers are switched.
        enabled: True to sample in ``eval()`` mode, False to restore deterministic evaluation.
        generator: Generator used for all draws while enabled (``None``: global RNG).
        num_draws: Independent draws per forward pass (see :class:`StochasticModule`).
        draws: ``"independent"`` or ``"shared"`` (see :data:`DRAWS`).

    Raises:
        ValueError: For an unknown ``draws`` or ``num_draws > 1`` with shared draws.
    """
    check_draws(draws, num_draws)
    for module in stochastic_modules(model):
        module.mc_active = bool(enabled)
        module.generator = generator if enabled else None
        module.num_draws = int(num_draws) if enabled else 1
        module.draws = draws if enabled else "independent"


@contextlib.contextmanager
def mc_sampling(
    model: nn.Module,
    *,
    generator: torch.Generator | None = None,
    num_draws: int = 1,
    draws: str = "independent",
) -> Iterator[nn.Module]:
    """Context manager under which the model's stochastic modules sample in ``eval()`` mode.

    The previous state of every module is restored on exit, also when an exception is raised.

    Args:
        model: The model to sample from.
        generator: Generator used for all draws (``None``: torch's global generator).
        num_draws: Independent draws per forward pass; the batch must then be ``num_draws`` stacked
            copies of the clips (group-major).
        draws: ``"independent"`` (bayesian-torch's sampling, one draw per group) or ``"shared"``
            (one draw per pass, sign vectors per row; see :data:`DRAWS`).

    Yields:
        The model itself.

    Example:
        >>> import torch, vipann
        >>> model = vipann.create_model("drop-tiny").eval()
        >>> with vipann.layers.mc_sampling(model):
        ...     a, b = model(torch.zeros(1, 16000)), model(torch.zeros(1, 16000))
    """
    saved = [(m, m.mc_active, m.generator, m.num_draws, m.draws) for m in stochastic_modules(model)]
    set_mc_sampling(model, True, generator=generator, num_draws=num_draws, draws=draws)
    try:
        yield model
    finally:
        for module, *state in saved:
            module.mc_active, module.generator, module.num_draws, module.draws = state
