"""Multi-label calibration error and the signed miscalibration score.

A multi-label tagger makes one binary forecast per (clip, class) pair: probability ``p`` that the
label is present, outcome ``y`` in {0, 1}. :func:`multilabel_calibration_error` reads those pairs
three ways (``average``):

* ``"marginal"``: the ECE of each class's own pairs, averaged over the classes that have pairs
  (every class counts the same, rare ones included);
* ``"weighted"``: the same per-class ECEs averaged with weights equal to each class's number of
  positives among its pairs (frequent labels count more);
* ``"global"``: one ECE over all (clip, class) pairs pooled (dominated by the many confident
  negatives of a sparse label set; what ``expected_calibration_error(..., multilabel=True)`` gives).

``top_k=k`` keeps only the pairs of each clip's ``k`` most probable classes (ties: lower class index
first), i.e. the calibration of the labels a tagger would show. Bins are ``n_bins`` equal-width
intervals ``[b / n_bins, (b + 1) / n_bins)`` over ``[0, 1]``, the last one closed (1.0 falls in it).

:func:`miscalibration_score` is the signed ``sum_b (n_b / N) (mean confidence_b - accuracy_b)``:
positive when over-confident, negative when under-confident. Because the bin weights are the bin
shares, the bins cancel and it equals mean confidence minus accuracy; it is reported next to the ECE,
which cannot tell the two directions apart.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vipann.metrics._checks import check_multihot, check_probs_2d
from vipann.metrics.calibration import _check_binning, _events

__all__ = ["AVERAGES", "miscalibration_score", "multilabel_calibration_error"]

AVERAGES = ("marginal", "weighted", "global")


def _bins(conf: Tensor, n_bins: int) -> Tensor:
    edges = torch.arange(1, n_bins, dtype=torch.float64, device=conf.device) / n_bins
    return torch.searchsorted(edges, conf.contiguous(), right=True)


def multilabel_calibration_error(
    probs: Tensor,
    targets: Tensor,
    *,
    average: str = "marginal",
    n_bins: int = 15,
    top_k: int | None = None,
) -> Tensor:
    """Expected calibration error of a multi-label tagger's per-class forecasts.

    Inputs:
        probs: ``(N, C)`` independent per-class probabilities (sigmoid outputs).
        targets: ``(N, C)`` multi-hot (bool or 0/1).

    Args:
        probs: Predicted probabilities.
        targets: Ground truth.
        average: "marginal", "weighted" or "global" (see the module docstring).
        n_bins: Number of equal-width bins over ``[0, 1]``.
        top_k: Keep only each clip's ``k`` most probable classes; None keeps every pair.

    Returns:
        A 0-d float64 tensor in ``[0, 1]``; NaN for "weighted" when the kept pairs hold no positive.

    Raises:
        ValueError: Invalid probabilities or targets, an unknown ``average``, ``n_bins < 1`` or
            ``top_k`` outside ``[1, C]``.

    References:
        Naeini, Cooper & Hauskrecht, "Obtaining well calibrated probabilities using Bayesian binning",
        AAAI 2015 (ECE); Kull et al., "Beyond temperature scaling", NeurIPS 2019 (classwise ECE);
        Nixon et al., "Measuring calibration in deep learning", CVPR Workshops 2019 (marginal and top-k
        readings).

    Example:
        >>> probs = torch.rand(100, 20)
        >>> targets = torch.rand(100, 20) < 0.1
        >>> multilabel_calibration_error(probs, targets, average="weighted", top_k=3)
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}; got {average!r}")
    _check_binning(n_bins, "uniform")
    p = check_probs_2d(probs, True).double()
    n, c = p.shape
    y = check_multihot(targets, (n, c)).double()
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= c:
            raise ValueError(f"top_k must be an integer in [1, {c}] (classes per clip) or None; got {top_k!r}")
        chosen = torch.argsort(-p, dim=1, stable=True)[:, :top_k]
        keep = torch.zeros_like(p, dtype=torch.bool).scatter_(1, chosen, True)
    else:
        keep = torch.ones_like(p, dtype=torch.bool)
    cls = torch.arange(c, device=p.device).expand(n, c)[keep]
    conf, hit = p[keep], y[keep]
    bins = _bins(conf, n_bins)
    if average == "global":
        count = torch.bincount(bins, minlength=n_bins).double()
        gap = torch.bincount(bins, weights=conf - hit, minlength=n_bins).abs()
        return gap.sum() / count.sum()
    flat = cls * n_bins + bins
    gap = torch.bincount(flat, weights=conf - hit, minlength=c * n_bins).view(c, n_bins).abs()
    pairs = torch.bincount(cls, minlength=c).double()
    ece = gap.sum(1) / pairs.clamp(min=1)
    has = pairs > 0
    if average == "marginal":
        return ece[has].mean()
    weight = torch.bincount(cls, weights=hit, minlength=c)
    return (ece * weight).sum() / weight.sum() if bool(weight.sum() > 0) else torch.tensor(float("nan"))


def miscalibration_score(probs: Tensor, targets: Tensor, *, multilabel: bool, n_bins: int = 15) -> Tensor:
    """Signed calibration error ``sum_b (n_b / N) (mean confidence_b - accuracy_b)``; > 0: over-confident.

    Multi-label: over all (clip, class) pairs (confidence ``p``, outcome ``y``). Multi-class: the
    top-label confidence ``max_c p_c`` and whether the arg-max is right. Equal-width bins over
    ``[0, 1]`` as :func:`vipann.metrics.expected_calibration_error`.

    Inputs:
        probs: ``(N, C)``; targets: ``(N,)`` class indices (multi-class) or ``(N, C)`` multi-hot.

    Args:
        probs: Predicted probabilities.
        targets: Ground truth.
        multilabel: Independent sigmoid classes (True) or one softmax (False).
        n_bins: Number of bins.

    Returns:
        A 0-d float64 tensor in ``[-1, 1]``.

    Raises:
        ValueError: Invalid probabilities or targets, or ``n_bins < 1``.

    References:
        Ao, Rueger & Siddiqui, "Two sides of miscalibration: identifying over and under-confidence
        prediction for network calibration", UAI 2023.
    """
    _check_binning(n_bins, "uniform")
    conf, hit = _events(probs, targets, multilabel, False)
    conf, hit = conf.reshape(-1), hit.reshape(-1)
    bins = _bins(conf, n_bins)
    count = torch.bincount(bins, minlength=n_bins).double()
    signed = torch.bincount(bins, weights=conf - hit, minlength=n_bins)
    return (count / count.sum() * signed / count.clamp(min=1)).sum()
