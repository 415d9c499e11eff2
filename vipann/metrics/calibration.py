"""Calibration metrics: ECE, MCE, reliability diagrams, Brier score (with Murphy's decomposition), NLL.

Three readings of the predictions, chosen per call:

* multi-class top-label (default): each clip is one binary event "the arg-max class is right" with
  confidence ``max_c p_c`` (Guo et al. 2017).
* ``multilabel=True``: every (clip, class) pair is a binary event with probability ``p`` and outcome
  ``y`` in {0, 1}; the "accuracy" of a bin is then the observed frequency of positives.
* ``classwise=True`` (ECE/MCE/MAE): the binary event "clip belongs to class c" is calibrated separately
  per class (probability ``p_c``) and the per-class errors are averaged ("classwise-ECE", Kull et al.
  2019). Works for multi-class (one-hot events) and multi-label targets.

Binning: ``n_bins`` intervals ``[e_b, e_{b+1})`` (the last one closed), edges ``k / n_bins`` for
``strategy="uniform"`` or the empirical quantiles of the confidences (linear interpolation) for
``strategy="quantile"``; bins are assigned like scikit-learn's ``calibration_curve``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from vipann.metrics._checks import check_class_targets, check_multihot, check_probs_2d

__all__ = [
    "BrierDecomposition",
    "ReliabilityData",
    "brier_decomposition",
    "brier_score",
    "expected_calibration_error",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "reliability_diagram",
    "reliability_mae",
]

_STRATEGIES = ("uniform", "quantile")


@dataclass(frozen=True)
class ReliabilityData:
    """Per-bin statistics of a reliability diagram.

    Attributes:
        edges: ``(n_bins + 1,)`` bin edges.
        confidence: ``(n_bins,)`` mean predicted probability per bin (NaN for empty bins).
        accuracy: ``(n_bins,)`` observed accuracy (top-label) or positive frequency (binary events) per
            bin (NaN for empty bins).
        counts: ``(n_bins,)`` events per bin (int64).
    """

    edges: Tensor
    confidence: Tensor
    accuracy: Tensor
    counts: Tensor


class BrierDecomposition(NamedTuple):
    """Murphy's decomposition ``binned Brier = reliability - resolution + uncertainty``."""

    reliability: Tensor
    resolution: Tensor
    uncertainty: Tensor


def _events(probs: Tensor, targets: Tensor, multilabel: bool, per_class: bool) -> tuple[Tensor, Tensor]:
    """Binary events as ``(G, M)`` confidences and 0/1 outcomes (float64), G groups of M events."""
    p = check_probs_2d(probs, multilabel)
    n, c = p.shape
    if multilabel:
        y = check_multihot(targets, (n, c)).double()
    else:
        idx = check_class_targets(targets, n, c)
        if not per_class:
            conf, pred = p.max(1)
            return conf.double()[None], (pred == idx).double()[None]
        y = torch.nn.functional.one_hot(idx, c).double()
    if per_class:
        return p.T.double(), y.T
    return p.reshape(1, -1).double(), y.reshape(1, -1)


def _check_binning(n_bins: int, strategy: str) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}; got {strategy!r}")


def _bin_stats(conf: Tensor, hit: Tensor, n_bins: int, strategy: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Edges ``(G, n_bins + 1)`` and per-bin count, confidence sum and outcome sum, each ``(G, n_bins)``."""
    conf = conf.contiguous()
    g, m = conf.shape
    if strategy == "uniform":
        edges = (torch.arange(n_bins + 1, dtype=torch.float64, device=conf.device) / n_bins).expand(g, -1)
    else:
        # Linear-interpolation quantiles (NumPy's default) of each group's confidences.
        srt = conf.sort(1).values
        h = (m - 1) * torch.arange(n_bins + 1, dtype=torch.float64, device=conf.device) / n_bins
        lo = h.floor().long()
        hi = (lo + 1).clamp(max=m - 1)
        edges = srt[:, lo] + (h - lo) * (srt[:, hi] - srt[:, lo])
    bins = torch.searchsorted(edges[:, 1:-1].contiguous(), conf, right=True)
    flat = (bins + torch.arange(g, device=conf.device)[:, None] * n_bins).reshape(-1)
    size = g * n_bins
    count = torch.bincount(flat, minlength=size).view(g, n_bins)
    conf_sum = torch.bincount(flat, weights=conf.reshape(-1), minlength=size).view(g, n_bins)
    hit_sum = torch.bincount(flat, weights=hit.reshape(-1), minlength=size).view(g, n_bins)
    return edges, count, conf_sum, hit_sum


def _gaps(probs, targets, n_bins, strategy, multilabel, classwise) -> tuple[Tensor, Tensor, int]:
    _check_binning(n_bins, strategy)
    conf, hit = _events(probs, targets, multilabel, classwise)
    _, count, conf_sum, hit_sum = _bin_stats(conf, hit, n_bins, strategy)
    gap = (hit_sum - conf_sum).abs() / count.clamp(min=1)
    return gap, count, conf.shape[1]


def expected_calibration_error(
    probs: Tensor,
    targets: Tensor,
    n_bins: int = 15,
    strategy: str = "uniform",
    *,
    multilabel: bool = False,
    classwise: bool = False,
) -> Tensor:
    """Expected calibration error ``sum_b (n_b / n) |acc_b - conf_b|``.

    Inputs:
        probs: ``(N, C)`` probabilities: softmax rows (multi-class) or independent sigmoids
        (``multilabel=True``).
        targets: ``(N,)`` class indices (multi-class) or ``(N, C)`` multi-hot (multi-label).

    Args:
        probs: Predicted probabilities.
        targets: Ground truth.
        n_bins: Number of bins (15 as in Guo et al.).
        strategy: "uniform" (equal-width bins) or "quantile" (equal-count bins).
        multilabel: Treat every (clip, class) pair as a binary event (see the module docstring).
        classwise: Average the per-class binary ECE over classes (classwise-ECE).

    Returns:
        A 0-d float64 tensor in ``[0, 1]``.

    Raises:
        ValueError: Invalid probabilities or targets, ``n_bins < 1`` or an unknown strategy.

    References:
        Naeini, Cooper & Hauskrecht, "Obtaining well calibrated probabilities using Bayesian binning",
        AAAI 2015; Guo et al., "On calibration of modern neural networks", ICML 2017; Kull et al.,
        "Beyond temperature scaling", NeurIPS 2019 (classwise-ECE).
    """
    gap, count, m = _gaps(probs, targets, n_bins, strategy, multilabel, classwise)
    return ((gap * count).sum(1) / m).mean()


def maximum_calibration_error(
    probs: Tensor,
    targets: Tensor,
    n_bins: int = 15,
    strategy: str = "uniform",
    *,
    multilabel: bool = False,
    classwise: bool = False,
) -> Tensor:
    """Maximum calibration error ``max_b |acc_b - conf_b|`` over non-empty bins.

    Inputs:
        probs: ``(N, C)``; targets: ``(N,)`` class indices or ``(N, C)`` multi-hot.

    Args:
        probs: Predicted probabilities.
        targets: Ground truth.
        n_bins: Number of bins.
        strategy: "uniform" or "quantile".
        multilabel: Treat every (clip, class) pair as a binary event.
        classwise: Average the per-class MCE over classes.

    Returns:
        A 0-d float64 tensor.

    Raises:
        ValueError: As :func:`expected_calibration_error`.

    References:
        Naeini, Cooper & Hauskrecht, "Obtaining well calibrated probabilities using Bayesian binning",
        AAAI 2015.
    """
    gap, count, _ = _gaps(probs, targets, n_bins, strategy, multilabel, classwise)
    return gap.where(count > 0, 0.0).amax(1).mean()


def reliability_mae(
    probs: Tensor,
    targets: Tensor,
    n_bins: int = 15,
    strategy: str = "uniform",
    *,
    multilabel: bool = False,
    classwise: bool = False,
    weighted: bool = False,
) -> Tensor:
    """Mean absolute distance between the reliability curve and the diagonal.

    The unweighted mean over non-empty bins of ``|acc_b - conf_b|`` (every bin counts the same,
    whatever its size), as used to compare temperatures by Lukashevich et al.; ``weighted=True``
    weights bins by their size, which is the ECE.

    Inputs:
        probs: ``(N, C)``; targets: ``(N,)`` class indices or ``(N, C)`` multi-hot.

    Args:
        probs: Predicted probabilities.
        targets: Ground truth.
        n_bins: Number of bins.
        strategy: "uniform" or "quantile".
        multilabel: Treat every (clip, class) pair as a binary event.
        classwise: Average the per-class value over classes.
        weighted: Weight bins by their counts (gives the ECE).

    Returns:
        A 0-d float64 tensor.

    Raises:
        ValueError: As :func:`expected_calibration_error`.

    References:
        Lukashevich, Grollmisch & Abeßer, "Temperature scaling for reliable uncertainty estimation:
        Application to automatic music genre classification", 2023.
    """
    gap, count, m = _gaps(probs, targets, n_bins, strategy, multilabel, classwise)
    if weighted:
        return ((gap * count).sum(1) / m).mean()
    filled = count > 0
    return (gap.where(filled, 0.0).sum(1) / filled.sum(1)).mean()


def reliability_diagram(
    probs: Tensor,
    targets: Tensor,
    n_bins: int = 15,
    strategy: str = "uniform",
    *,
    multilabel: bool = False,
) -> ReliabilityData:
    """Per-bin confidence, accuracy and counts for a reliability diagram.

    For binary events (``multilabel=True``) the confidences/accuracies equal scikit-learn's
    ``calibration_curve(y, p, n_bins, strategy)`` (``prob_pred``/``prob_true``) on the non-empty bins.

    Inputs:
        probs: ``(N, C)``; targets: ``(N,)`` class indices or ``(N, C)`` multi-hot.

    Args:
        probs: Predicted probabilities.
        targets: Ground truth.
        n_bins: Number of bins.
        strategy: "uniform" or "quantile".
        multilabel: Treat every (clip, class) pair as a binary event.

    Returns:
        A :class:`ReliabilityData`.

    Raises:
        ValueError: As :func:`expected_calibration_error`.

    References:
        DeGroot & Fienberg, "The comparison and evaluation of forecasters", The Statistician 32, 1983;
        Guo et al., "On calibration of modern neural networks", ICML 2017.
    """
    _check_binning(n_bins, strategy)
    conf, hit = _events(probs, targets, multilabel, False)
    edges, count, conf_sum, hit_sum = _bin_stats(conf, hit, n_bins, strategy)
    denom = count[0].double().where(count[0] > 0, math.nan)
    return ReliabilityData(edges[0], conf_sum[0] / denom, hit_sum[0] / denom, count[0])


def brier_score(probs: Tensor, targets: Tensor, *, multilabel: bool = False) -> Tensor:
    """Brier score (mean squared error of the probabilities).

    Multi-class: ``mean_n sum_c (p_nc - y_nc)^2`` with one-hot ``y`` (range ``[0, 2]``; for two classes
    it is twice scikit-learn's binary ``brier_score_loss``). Multi-label: the mean over all (clip, class)
    pairs of ``(p - y)^2`` (scikit-learn's binary Brier on the flattened pairs).

    Inputs:
        probs: ``(N, C)``; targets: ``(N,)`` class indices or ``(N, C)`` multi-hot.

    Args:
        probs: Predicted probabilities.
        targets: Ground truth.
        multilabel: Treat the classes as independent Bernoullis.

    Returns:
        A 0-d float64 tensor.

    Raises:
        ValueError: Invalid probabilities or targets.

    References:
        Brier, "Verification of forecasts expressed in terms of probability", Monthly Weather Review 78,
        1950.
    """
    conf, y = _events(probs, targets, multilabel, True)  # (C, N) per-class events
    sq = (conf - y).square()
    return sq.mean() if multilabel else sq.sum(0).mean()


def brier_decomposition(
    probs: Tensor,
    targets: Tensor,
    n_bins: int = 15,
    strategy: str = "uniform",
    *,
    multilabel: bool = False,
) -> BrierDecomposition:
    """Murphy's decomposition of the Brier score into reliability, resolution and uncertainty.

    Per class ``c`` (binary event "label c", forecast ``p_c``, binned on ``p_c``):
    ``REL_c = sum_b (n_b / N) (f_b - o_b)^2``, ``RES_c = sum_b (n_b / N) (o_b - o)^2`` and
    ``UNC_c = o (1 - o)``, with ``f_b`` the mean forecast and ``o_b`` the event frequency in bin ``b``, and
    ``o`` the overall frequency. The class terms are summed (multi-class) or averaged (multi-label),
    matching :func:`brier_score`. With binning, ``REL - RES + UNC`` equals exactly the *binned* Brier
    score (every forecast replaced by its bin's mean forecast); it equals :func:`brier_score` itself when
    the forecasts are constant within bins. Lower REL is better calibrated; higher RES is sharper.

    Inputs:
        probs: ``(N, C)``; targets: ``(N,)`` class indices or ``(N, C)`` multi-hot.

    Args:
        probs: Predicted probabilities.
        targets: Ground truth.
        n_bins: Number of bins per class.
        strategy: "uniform" or "quantile".
        multilabel: Treat the classes as independent Bernoullis.

    Returns:
        A :class:`BrierDecomposition` of 0-d float64 tensors.

    Raises:
        ValueError: As :func:`expected_calibration_error`.

    References:
        Murphy, "A new vector partition of the probability score", Journal of Applied Meteorology 12,
        1973.
    """
    _check_binning(n_bins, strategy)
    conf, y = _events(probs, targets, multilabel, True)
    _, count, conf_sum, hit_sum = _bin_stats(conf, y, n_bins, strategy)
    n = conf.shape[1]
    safe = count.clamp(min=1)
    f_b, o_b = conf_sum / safe, hit_sum / safe
    o = y.mean(1, keepdim=True)
    w = count.double() / n
    rel = (w * (f_b - o_b).square()).sum(1)
    res = (w * (o_b - o).square()).sum(1)
    unc = (o * (1 - o)).squeeze(1)
    reduce = torch.mean if multilabel else torch.sum
    return BrierDecomposition(reduce(rel), reduce(res), reduce(unc))


def negative_log_likelihood(
    probs: Tensor, targets: Tensor, *, multilabel: bool = False, eps: float | None = None
) -> Tensor:
    """Negative log-likelihood (log loss) in nats.

    Multi-class: ``-mean_n log p_{n, y_n}``. Multi-label: the mean binary cross-entropy over all
    (clip, class) pairs. Probabilities are clipped to ``[eps, 1 - eps]`` first (``eps`` defaults to the
    dtype's machine epsilon, as scikit-learn's ``log_loss`` does), so a confident mistake gives a large
    finite loss rather than inf.

    Inputs:
        probs: ``(N, C)``; targets: ``(N,)`` class indices or ``(N, C)`` multi-hot.

    Args:
        probs: Predicted probabilities.
        targets: Ground truth.
        multilabel: Treat the classes as independent Bernoullis.
        eps: Clipping constant; None uses ``torch.finfo(probs.dtype).eps``.

    Returns:
        A 0-d float64 tensor.

    Raises:
        ValueError: Invalid probabilities or targets, or ``eps`` outside ``[0, 0.5)``.

    References:
        Quiñonero-Candela et al., "Evaluating predictive uncertainty challenge", MLCW 2005.
    """
    p = check_probs_2d(probs, multilabel)
    n, c = p.shape
    e = torch.finfo(p.dtype).eps if eps is None else float(eps)
    if not 0.0 <= e < 0.5:
        raise ValueError(f"eps must lie in [0, 0.5); got {eps!r}")
    pc = p.double().clamp(e, 1.0 - e)
    if multilabel:
        y = check_multihot(targets, (n, c))
        return -torch.where(y, pc.log(), torch.log1p(-pc)).mean()
    idx = check_class_targets(targets, n, c)
    return -pc.gather(1, idx[:, None]).log().mean()
