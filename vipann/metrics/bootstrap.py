"""Confidence intervals from resampled statistics: bootstrap (percentile, basic, BCa) and Student-t.

Every function works element-wise on a batch of statistics: ``replicates`` has the resamples on its
first axis and any shape after it (e.g. ``(B, F)``: one statistic per retention point), computes in
float64 and ignores NaN replicates (a resample on which the statistic is undefined). Quantiles use
linear interpolation between order statistics (NumPy's and SciPy's default).

The bootstrap intervals follow Efron & Tibshirani (1993): *percentile* ``[q(a/2), q(1 - a/2)]``;
*basic* (reverse percentile) ``[2 t - q(1 - a/2), 2 t - q(a/2)]``; *BCa* the percentile interval at
levels corrected for the bias ``z0 = Phi^-1(#{t* < t} / B + #{t* = t} / (2B))`` and the acceleration
``a = sum d^3 / (6 (sum d^2)^(3/2))`` with ``d`` the deviations of the jackknife values from their
mean; these are SciPy's ``scipy.stats.bootstrap`` formulas. A bootstrap interval need not contain the
estimate (e.g. when every resample lies on one side of it); :func:`contain` widens it so that it does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vipann.metrics._stats import student_t_quantile

__all__ = ["METHODS", "bootstrap_interval", "contain", "nanquantile", "student_t_interval"]

METHODS = ("percentile", "basic", "bca")


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be a confidence level in (0, 1), e.g. 0.95; got {level!r}")
    return float(level)


def nanquantile(values: Tensor, q: Tensor | float, *, presorted: bool = False) -> Tensor:
    """Quantiles along the first axis, ignoring NaN, each element at its own level.

    Args:
        values: ``(B, *S)`` samples.
        q: A level in ``[0, 1]``, or a ``(*S)`` tensor of levels (one per element).
        presorted: ``values`` are already float64 and sorted along the first axis (NaN last).

    Returns:
        ``(*S)`` float64 quantiles (linear interpolation; NaN where an element has no finite sample
        or its level is NaN).
    """
    x = values if presorted else values.double()
    count = (~torch.isnan(x)).sum(0)
    srt = x if presorted else torch.sort(x, dim=0).values  # NaN sorts last
    q = torch.as_tensor(q, dtype=torch.float64, device=x.device).expand(x.shape[1:])
    pos = q * (count - 1).clamp(min=0)
    lo = pos.floor().nan_to_num(0.0).long().clamp(min=0)
    hi = torch.minimum(lo + 1, (count - 1).clamp(min=0))
    lo = torch.minimum(lo, hi)
    low, high = srt.gather(0, lo[None])[0], srt.gather(0, hi[None])[0]
    out = low + (pos - lo) * (high - low)
    return out.where((count > 0) & ~torch.isnan(q), math.nan)


def contain(estimate: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Widen ``[lower, upper]`` to contain ``estimate`` (a NaN bound stays NaN)."""
    return (
        lower.where(torch.isnan(lower), torch.minimum(lower, estimate)),
        upper.where(torch.isnan(upper), torch.maximum(upper, estimate)),
    )


def bootstrap_interval(
    estimate: Tensor | float,
    replicates: Tensor,
    *,
    method: str = "percentile",
    level: float = 0.95,
    jackknife: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Two-sided bootstrap confidence interval of a statistic, element-wise.

    Inputs:
        estimate: ``(*S)`` the statistic on the data.
        replicates: ``(B, *S)`` the statistic on ``B`` bootstrap resamples (NaN: undefined, ignored).
        jackknife: ``(N, *S)`` the statistic with each of the ``N`` observations left out (BCa only).

    Args:
        estimate: See Inputs.
        replicates: See Inputs.
        method: "percentile", "basic" or "bca".
        level: Confidence level, e.g. 0.95.
        jackknife: See Inputs; required for "bca". When every jackknife value is the same the
            acceleration is taken as 0.

    Returns:
        ``(lower, upper)``, each ``(*S)`` float64. Not widened to contain ``estimate``; see
        :func:`contain`.

    Raises:
        ValueError: An unknown method, a level outside ``(0, 1)``, a missing jackknife for "bca", or
            shapes that disagree.

    References:
        Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (chapters 13-14; BCa: Eq. 14.9-14.15);
        Davison & Hinkley, "Bootstrap Methods and their Application", 1997 (basic interval, Eq. 5.6).

    Example:
        >>> reps = torch.randn(1000, 3) * 0.1 + 0.5
        >>> lower, upper = bootstrap_interval(torch.full((3,), 0.5), reps)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    alpha = 1.0 - _check_level(level)
    if not isinstance(replicates, Tensor) or replicates.dim() < 1 or replicates.shape[0] == 0:
        raise ValueError("replicates must be a (B, ...) tensor with at least one resample")
    reps = replicates.double()
    est = torch.as_tensor(estimate, dtype=torch.float64, device=reps.device)
    if tuple(est.shape) != tuple(reps.shape[1:]):
        raise ValueError(f"estimate has shape {tuple(est.shape)} but replicates (B, ...) = {tuple(reps.shape)}")
    srt = torch.sort(reps, dim=0).values  # one sort for both ends
    if method == "percentile":
        return nanquantile(srt, alpha / 2, presorted=True), nanquantile(srt, 1 - alpha / 2, presorted=True)
    if method == "basic":
        lo, hi = nanquantile(srt, alpha / 2, presorted=True), nanquantile(srt, 1 - alpha / 2, presorted=True)
        return 2 * est - hi, 2 * est - lo
    if jackknife is None:
        raise ValueError("method='bca' needs the jackknife values (the statistic with each observation left out)")
    jack = jackknife.double().to(reps.device)
    if tuple(jack.shape[1:]) != tuple(reps.shape[1:]) or jack.shape[0] < 2:
        raise ValueError(f"jackknife must have shape (N, ...) = (N, {tuple(reps.shape[1:])}) with N >= 2")
    finite = ~torch.isnan(reps)
    count = finite.sum(0).double()
    below = ((reps < est) & finite).sum(0) + ((reps <= est) & finite).sum(0)
    z0 = torch.special.ndtri(below / (2 * count))
    dev = jack.nanmean(0) - jack
    num = dev.pow(3).nansum(0)
    den = 6 * dev.square().nansum(0).pow(1.5)
    accel = torch.where(den > 0, num / den.where(den > 0, 1.0), 0.0)
    z = torch.special.ndtri(torch.tensor(alpha / 2, dtype=torch.float64))
    levels = []
    for zz in (z, -z):
        shift = z0 + zz
        levels.append(torch.special.ndtr(z0 + shift / (1 - accel * shift)))
    return nanquantile(srt, levels[0], presorted=True), nanquantile(srt, levels[1], presorted=True)


def student_t_interval(values: Tensor, level: float = 0.95) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and Student-t interval ``mean +- t_{1 - a/2, n - 1} s / sqrt(n)`` over the first axis.

    NaN values are left out element-wise (``n`` counts the finite ones); the quantiles and the whole
    computation are float64. Elements with fewer than two finite values get a NaN interval.

    Args:
        values: ``(R, *S)`` independent replications (e.g. prediction runs).
        level: Confidence level.

    Returns:
        ``(mean, lower, upper)``, each ``(*S)`` float64.

    Raises:
        ValueError: A level outside ``(0, 1)``.
    """
    alpha = 1.0 - _check_level(level)
    x = values.double()
    valid = ~torch.isnan(x)
    count = valid.sum(0)
    mean = x.nansum(0) / count.double()
    dev = torch.where(valid, x - mean, 0.0)
    std = (dev.square().sum(0) / (count - 1).double()).sqrt()
    dfs = (count - 1).clamp(min=1)
    quantiles = {int(d): student_t_quantile(1 - alpha / 2, int(d)) for d in torch.unique(dfs).tolist()}
    t = torch.tensor([quantiles[int(d)] for d in dfs.reshape(-1).tolist()], dtype=torch.float64)
    half = t.reshape(dfs.shape).to(x.device) * std / count.double().sqrt()
    half = half.where(count > 1, math.nan)
    return mean, mean - half, mean + half
