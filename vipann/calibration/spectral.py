"""Spectral normalisation with a norm bound, and the distance-preserving hidden layers of an SNGP head.

SNGP (Liu et al., 2020) keeps the hidden mapping bi-Lipschitz so that distances between inputs
survive into the feature space of the Gaussian-process output layer: every hidden weight is
rescaled to spectral norm at most ``c < 1`` (and left alone when it is already below ``c``, unlike
:func:`torch.nn.utils.parametrizations.spectral_norm`, which always divides by the norm), and
layers of equal width are residual, ``h = x + relu(W x + b)``, so
``(1 - c) |x - y| <= |h(x) - h(y)| <= (1 + c) |x - y|``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["SpectralNormBound", "SpectralNormMLP", "bounded_spectral_norm"]


class SpectralNormBound(nn.Module):
    """Parametrisation ``W -> W / max(1, sigma(W) / bound)`` with ``sigma`` from power iteration.

    One power-iteration step per training forward pass refines the singular vectors (kept as
    buffers, so they are saved with the model); in ``eval()`` mode the stored vectors are used as is
    and the weight is deterministic.

    Args:
        weight: The weight to parametrise (its shape and device initialise the singular vectors).
        bound: Upper bound ``c`` on the spectral norm.
        n_power_iterations: Power-iteration steps per training forward pass.
        eps: Numerical floor of the vector norms.

    Raises:
        ValueError: For a non-positive bound or fewer than one iteration.

    References:
        Miyato, Kataoka, Koyama & Yoshida, "Spectral normalization for generative adversarial
        networks", ICLR 2018. Liu et al., "Simple and principled uncertainty estimation with
        deterministic deep learning via distance awareness", NeurIPS 2020 (the norm bound).
    """

    def __init__(self, weight: Tensor, bound: float = 0.95, n_power_iterations: int = 1, eps: float = 1e-12) -> None:
        super().__init__()
        if not float(bound) > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        if int(n_power_iterations) < 1:
            raise ValueError(f"n_power_iterations must be >= 1, got {n_power_iterations}")
        self.bound, self.n_power_iterations, self.eps = float(bound), int(n_power_iterations), float(eps)
        w = weight.detach().flatten(1)
        u = F.normalize(torch.randn(w.shape[0], dtype=w.dtype, device=w.device), dim=0, eps=self.eps)
        v = F.normalize(torch.randn(w.shape[1], dtype=w.dtype, device=w.device), dim=0, eps=self.eps)
        self.register_buffer("_u", u)
        self.register_buffer("_v", v)
        with torch.no_grad():
            self._power_iteration(w, 15)  # start from a converged estimate

    def extra_repr(self) -> str:
        """Summary shown by ``repr(module)``."""
        return f"bound={self.bound}, n_power_iterations={self.n_power_iterations}"

    @torch.no_grad()
    def _power_iteration(self, w: Tensor, steps: int) -> None:
        u, v = self._u, self._v
        for _ in range(steps):
            v = F.normalize(w.t() @ u, dim=0, eps=self.eps)
            u = F.normalize(w @ v, dim=0, eps=self.eps)
        self._u.copy_(u)
        self._v.copy_(v)

    def sigma(self, weight: Tensor) -> Tensor:
        """The current spectral-norm estimate ``u^T W v`` (differentiable in ``weight``)."""
        w = weight.flatten(1)
        # Clones: the buffers change in place at the next step, the autograd graph must not see that.
        return torch.dot(self._u.clone(), w @ self._v.clone())

    def forward(self, weight: Tensor) -> Tensor:
        """The bounded weight."""
        if self.training:
            self._power_iteration(weight.detach().flatten(1), self.n_power_iterations)
        return weight / torch.clamp(self.sigma(weight) / self.bound, min=1.0)


def bounded_spectral_norm(module: nn.Module, bound: float = 0.95, n_power_iterations: int = 1) -> nn.Module:
    """Register :class:`SpectralNormBound` on ``module.weight`` (in place) and return the module.

    Args:
        module: A layer with a ``weight`` (e.g. :class:`torch.nn.Linear`).
        bound: Upper bound on the spectral norm.
        n_power_iterations: Power-iteration steps per training forward pass.

    Returns:
        The same module; its weight now lives in ``module.parametrizations.weight.original``.
    """
    parametrize.register_parametrization(module, "weight", SpectralNormBound(module.weight, bound, n_power_iterations))
    return module


class SpectralNormMLP(nn.Module):
    """Hidden layers with bounded spectral norm: ``Linear -> ReLU``, residual where widths match.

    Args:
        in_features: Input width.
        hidden: Widths of the hidden layers (may be empty: the identity).
        bound: Spectral-norm bound ``c`` of every layer (``< 1`` keeps residual layers bi-Lipschitz).
        n_power_iterations: Power-iteration steps per training forward pass.

    Raises:
        ValueError: For non-positive widths.

    References:
        Liu et al., "Simple and principled uncertainty estimation with deterministic deep learning via
        distance awareness", NeurIPS 2020.
    """

    def __init__(
        self, in_features: int, hidden: Sequence[int] = (), *, bound: float = 0.95, n_power_iterations: int = 1
    ) -> None:
        super().__init__()
        widths = [int(in_features), *(int(h) for h in hidden)]
        if min(widths) < 1:
            raise ValueError(f"in_features and hidden widths must be positive, got {widths}")
        self.layers = nn.ModuleList(
            bounded_spectral_norm(nn.Linear(a, b), bound, n_power_iterations) for a, b in itertools.pairwise(widths)
        )
        self.residual = tuple(a == b for a, b in itertools.pairwise(widths))
        self.in_features, self.out_features = widths[0], widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(..., in_features)`` to ``(..., out_features)``."""
        for layer, residual in zip(self.layers, self.residual):
            h = F.relu(layer(x))
            x = x + h if residual else h
        return x
