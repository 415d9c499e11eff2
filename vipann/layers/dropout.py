"""Monte-Carlo dropout as a module the sampling API can find and switch on."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vipann.layers.stochastic import StochasticModule

__all__ = ["MCDropout"]


class MCDropout(StochasticModule):
    """Dropout that stays active at inference while Monte-Carlo sampling is switched on.

    In ``train()`` mode it is ordinary inverted dropout. In ``eval()`` mode it is the identity
    unless :func:`vipann.layers.mc_sampling` is active, in which case it keeps dropping units, so
    repeated forward passes sample from the MC-dropout predictive distribution (Gal & Ghahramani,
    2016). Plain ``torch.nn.Dropout`` sites (such as the p=0.1 dropout inside PANN residual blocks)
    stay training-only, as in VI-PANN.

    Args:
        p: Probability of zeroing an element, in ``[0, 1)``.

    References:
        Y. Gal and Z. Ghahramani, "Dropout as a Bayesian approximation: representing model
        uncertainty in deep learning", ICML 2016.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def extra_repr(self) -> str:
        """Summary shown by ``repr(module)``."""
        return f"p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Drop elements of ``x`` when sampling, else return it unchanged.

        Args:
            x: Any tensor.

        Returns:
            A tensor of the same shape.
        """
        if not self.stochastic or self.p == 0.0:
            return x
        if self.generator is None:
            return F.dropout(x, self.p, training=True)
        keep = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)
