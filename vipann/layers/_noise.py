"""The random draws and the KL term behind the Flipout layers (private to :mod:`vipann.layers`).

The two forward passes of shared draws (``draws="shared"``, see :mod:`vipann.layers.flipout`) are
here too, as functions of the layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["gaussian_kl", "normal", "per_row_forward", "rademacher", "row_shape", "row_signs", "shared_forward"]


def rademacher(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Rademacher signs of ``like``'s shape, drawn as bayesian-torch does (``uniform(-1, 1).sign()``)."""
    return torch.empty_like(like).uniform_(-1.0, 1.0, generator=generator).sign()


def row_shape(like: torch.Tensor, channel_dim: int) -> list[int]:
    """``like``'s shape with every axis but the rows (0) and ``channel_dim`` set to 1."""
    shape = [1] * like.dim()
    shape[0], shape[channel_dim] = like.shape[0], like.shape[channel_dim]
    return shape


def row_signs(like: torch.Tensor, channel_dim: int, generator: torch.Generator | None) -> torch.Tensor:
    """One Rademacher sign per row and channel of ``like`` (size 1 on every other axis)."""
    bits = torch.randint(0, 2, row_shape(like, channel_dim), generator=generator, device=like.device)
    return bits.to(like.dtype).mul_(2).sub_(1)


def normal(like: torch.Tensor, groups: int, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal draws of ``like``'s shape, with a leading axis of ``groups`` when it is > 1."""
    shape = like.shape if groups == 1 else (groups, *like.shape)
    return torch.empty(shape, dtype=like.dtype, device=like.device).normal_(generator=generator)


def gaussian_kl(mu_q: torch.Tensor, sigma_q: torch.Tensor, mu_p: torch.Tensor, sigma_p: torch.Tensor) -> torch.Tensor:
    """Element-wise KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2))."""
    return torch.log(sigma_p) - torch.log(sigma_q) + (sigma_q**2 + (mu_q - mu_p) ** 2) / (2.0 * sigma_p**2) - 0.5


def per_row_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Shared draws in a small layer: an exact weight draw of its own for every row.

    Draw order per chunk of rows: the weight eps of every row, then the bias eps. The rows are
    applied in one grouped operation (``layer._apply_grouped``), with at most
    ``layer.max_draw_elements`` sampled weights held at once.

    Args:
        layer: A Flipout layer.
        x: Its input batch.

    Returns:
        The output batch.
    """
    gen, rows, mu, rho = layer.generator, x.shape[0], layer.mu_w, layer.rho_w
    per_chunk = max(1, layer.max_draw_elements // mu.numel())
    parts = []
    for start in range(0, rows, per_chunk):
        count = min(per_chunk, rows - start)
        weight = mu + F.softplus(rho) * normal(mu, count, gen).reshape(count, *mu.shape)
        bias = None
        if layer.mu_bias is not None:
            eps_b = normal(layer.mu_bias, count, gen).reshape(count, -1)
            bias = layer.mu_bias + F.softplus(layer.rho_bias) * eps_b
        parts.append(layer._apply_grouped(x[start : start + count], weight, bias, count))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def shared_forward(layer: nn.Module, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Shared draws: one weight draw for the pass, flipped per row and channel; the bias per row.

    Draw order: the weight eps, the input signs, the output signs, then one bias eps per row and
    output channel (the bias is a few values per row, so it is drawn independently for each).

    Args:
        layer: A Flipout layer.
        x: Its input batch.
        mean: ``op(x, mu_w, mu_bias)``.

    Returns:
        The output batch.
    """
    gen, dim = layer.generator, layer._channel_dim
    delta_w = F.softplus(layer.rho_w) * normal(layer.mu_w, 1, gen)
    sign_in, sign_out = row_signs(x, dim, gen), row_signs(mean, dim, gen)
    out = torch.addcmul(mean, layer._apply_op(x * sign_in, delta_w, None), sign_out)
    if layer.mu_bias is None:
        return out
    eps_b = torch.empty(row_shape(mean, dim), dtype=mean.dtype, device=mean.device).normal_(generator=gen)
    return out + eps_b * F.softplus(layer.rho_bias).reshape(eps_b.shape[1:])
