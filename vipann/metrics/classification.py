"""Classification metrics: accuracy, per-class average precision and ROC AUC, mAP, d-prime.

Ranking metrics sort every class once (``torch.sort`` on the ``(C, N)`` transposed scores, in chunks of
classes so the temporaries stay bounded) and handle tied scores the way scikit-learn does: every
distinct score is one threshold, so tied clips enter the ranking together.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from vipann.metrics._checks import check_class_targets, check_multihot, check_scores, check_tensor

__all__ = [
    "UndefinedMetricWarning",
    "accuracy",
    "average_precision",
    "d_prime",
    "macro_roc_auc",
    "mean_average_precision",
    "roc_auc",
]

# Elements of the (classes, N) block processed at a time by the ranking metrics.
_BLOCK_ELEMENTS = 1 << 21


class UndefinedMetricWarning(UserWarning):
    """A ranking metric is undefined for some classes (no positive clip, or no negative one)."""


def _warn_undefined(values: Tensor, metric: str, lacking: str, outcome: str) -> None:
    """Warn, naming them, about the classes whose ``metric`` is NaN (undefined)."""
    undefined = torch.isnan(values.reshape(-1))
    count = int(undefined.sum())
    if count == 0:
        return
    if values.dim() == 0:
        warnings.warn(f"{metric} is undefined: the labels have {lacking}; it is NaN", UndefinedMetricWarning, 3)
        return
    index = undefined.nonzero().flatten().tolist()
    shown = ", ".join(str(i) for i in index[:20]) + (f" (+{count - 20} more)" if count > 20 else "")
    warnings.warn(
        f"{metric}: {count} of {values.numel()} classes have {lacking} and {outcome}: class indices {shown}",
        UndefinedMetricWarning,
        stacklevel=3,
    )


def accuracy(probs_or_logits: Tensor, targets: Tensor) -> Tensor:
    """Top-1 accuracy: the fraction of clips whose arg-max class equals the target.

    Ties in the arg-max go to the lowest class index (as ``torch.argmax`` and NumPy do).

    Inputs:
        probs_or_logits: ``(N, C)`` probabilities or logits (only the arg-max matters).
        targets: ``(N,)`` integer class indices in ``[0, C)``.

    Args:
        probs_or_logits: Predictions, one row per clip.
        targets: True classes.

    Returns:
        A 0-d float64 tensor in ``[0, 1]``.

    Raises:
        ValueError: Wrong shapes, empty input, NaN/inf, or targets outside ``[0, C)``.
    """
    check_scores(probs_or_logits, "probs_or_logits", "(N, C) = (clips, classes)", (2,))
    n, c = probs_or_logits.shape
    y = check_class_targets(targets, n, c)
    return (probs_or_logits.argmax(1) == y).double().mean()


def _binary_problem(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Return ``(C, N)`` scores and bool labels, and whether the input was a single 1-d problem."""
    check_scores(scores, "scores", "(N, C) = (clips, classes), or (N,) for one binary problem", (1, 2))
    if scores.dim() == 1:
        check_tensor(targets, "targets", f"(N,) = ({scores.shape[0]},) binary labels", (1,))
        y = check_multihot(targets.reshape(-1, 1), (scores.shape[0], 1))
        return scores.reshape(1, -1), y.reshape(1, -1), True
    n, c = scores.shape
    if targets.dim() == 1:
        y = torch.nn.functional.one_hot(check_class_targets(targets, n, c), c).bool()
    else:
        y = check_multihot(targets, (n, c))
    return scores.T, y.T, False


def _tie_bounds(sorted_scores: Tensor) -> tuple[Tensor, Tensor]:
    """First and last index of each position's run of equal values in a row-sorted ``(K, N)`` block."""
    k, n = sorted_scores.shape
    idx = torch.arange(n, device=sorted_scores.device).expand(k, n)
    new_run = torch.ones(k, n, dtype=torch.bool, device=sorted_scores.device)
    new_run[:, 1:] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    end_run = torch.ones_like(new_run)
    end_run[:, :-1] = new_run[:, 1:]
    first = torch.where(new_run, idx, 0).cummax(1).values
    last = torch.where(end_run, idx, n).flip(1).cummin(1).values.flip(1)
    return first, last


def _ap_block(scores: Tensor, labels: Tensor) -> Tensor:
    """Average precision of every row of a ``(K, N)`` block (NaN for rows without positives)."""
    s, order = torch.sort(scores, dim=1, descending=True)
    y = labels.gather(1, order).double()
    _, last = _tie_bounds(s)
    # Precision at each clip's threshold counts every clip tied with it (the end of its run).
    tp = y.cumsum(1).gather(1, last)
    precision = tp / (last + 1).double()
    n_pos = y.sum(1)
    return (y * precision).sum(1) / n_pos.where(n_pos > 0, math.nan)


def _auc_block(scores: Tensor, labels: Tensor) -> Tensor:
    """ROC AUC of every row of a ``(K, N)`` block via mid-ranks (NaN unless both labels occur)."""
    s, order = torch.sort(scores, dim=1)
    y = labels.gather(1, order).double()
    first, last = _tie_bounds(s)
    # Mid-ranks give P(score_pos > score_neg) + P(tie) / 2, the trapezoid rule over distinct thresholds.
    ranks = (first + last).double() * 0.5 + 1.0
    n = s.shape[1]
    n_pos = y.sum(1)
    n_neg = n - n_pos
    u = (y * ranks).sum(1) - n_pos * (n_pos + 1) * 0.5
    denom = n_pos * n_neg
    return u / denom.where(denom > 0, math.nan)


def _per_class(scores: Tensor, targets: Tensor, block_fn) -> Tensor:
    s, y, single = _binary_problem(scores, targets)
    c, n = s.shape
    step = max(1, _BLOCK_ELEMENTS // n)
    out = torch.cat([block_fn(s[i : i + step], y[i : i + step]) for i in range(0, c, step)])
    return out[0] if single else out


def average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """Per-class average precision, identical to scikit-learn's ``average_precision_score``.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds in decreasing order (the
    step-wise, non-interpolated definition): tied scores form one threshold, so a positive tied with
    negatives gets the precision of the whole tied group.

    Inputs:
        scores: ``(N, C)`` scores (probabilities or logits; higher means more likely positive), or
        ``(N,)`` for a single binary problem.
        targets: ``(N, C)`` multi-hot labels (bool or 0/1), or ``(N,)`` class indices (one-hot
        encoded), or ``(N,)`` 0/1 labels when ``scores`` is 1-d.

    Args:
        scores: Ranking scores.
        targets: Ground truth.

    Returns:
        ``(C,)`` float64 APs, or a 0-d tensor for 1-d input. Classes without any positive get NaN
        (scikit-learn returns 0), with an :class:`UndefinedMetricWarning` naming them; see
        :func:`mean_average_precision`.

    Raises:
        ValueError: Wrong shapes, empty input, NaN/inf scores, or non-binary targets.

    References:
        Zhu, "Recall, precision and average precision", 2004; scikit-learn ``average_precision_score``.
    """
    ap = _per_class(scores, targets, _ap_block)
    _warn_undefined(ap, "average precision", "no positive clip", "get NaN")
    return ap


def mean_average_precision(scores: Tensor, targets: Tensor, *, ignore_empty: bool = True) -> Tensor:
    """Macro-averaged average precision (mAP), as reported for AudioSet.

    Inputs:
        scores: ``(N, C)`` scores; targets: ``(N, C)`` multi-hot or ``(N,)`` class indices.

    Args:
        scores: Ranking scores.
        targets: Ground truth.
        ignore_empty: True (default): average over the classes with at least one positive (AP is
            undefined for the others). False: count such classes as AP = 0, which is what scikit-learn's
            ``average_precision_score(average="macro")`` does (with a warning).

    Returns:
        A 0-d float64 tensor (NaN if no class has a positive and ``ignore_empty`` is True). Classes
        without a positive are named in an :class:`UndefinedMetricWarning` (skipped, or counted as 0).

    Raises:
        ValueError: Invalid input (see :func:`average_precision`).

    References:
        Gemmeke et al., "Audio Set: An ontology and human-labeled dataset for audio events", ICASSP 2017;
        Kong et al., "PANNs: Large-scale pretrained audio neural networks", IEEE/ACM TASLP 2020.
    """
    ap = _per_class(scores, targets, _ap_block).reshape(-1)
    outcome = "are left out of the mean" if ignore_empty else "are counted as AP = 0"
    _warn_undefined(ap, "mAP", "no positive clip", outcome)
    return ap.nanmean() if ignore_empty else ap.nan_to_num(0.0).mean()


def roc_auc(scores: Tensor, targets: Tensor) -> Tensor:
    """Per-class area under the ROC curve, identical to scikit-learn's ``roc_auc_score``.

    Tied scores are one threshold and the curve is integrated with the trapezoid rule, which equals the
    Mann-Whitney statistic with mid-ranks: ``P(s_pos > s_neg) + P(s_pos = s_neg) / 2``.

    Inputs:
        scores: ``(N, C)`` scores or ``(N,)``; targets: ``(N, C)`` multi-hot, ``(N,)`` class indices, or
        ``(N,)`` 0/1 labels for 1-d scores.

    Args:
        scores: Ranking scores.
        targets: Ground truth.

    Returns:
        ``(C,)`` float64 AUCs (0-d for 1-d input); NaN for classes lacking positives or negatives,
        named in an :class:`UndefinedMetricWarning`.

    Raises:
        ValueError: Invalid input (see :func:`average_precision`).

    References:
        Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 27, 2006.
    """
    auc = _per_class(scores, targets, _auc_block)
    _warn_undefined(auc, "ROC AUC", "no positive or no negative clip", "get NaN")
    return auc


def macro_roc_auc(scores: Tensor, targets: Tensor, *, ignore_empty: bool = True) -> Tensor:
    """Macro-averaged ROC AUC.

    Inputs:
        scores: ``(N, C)`` scores; targets: ``(N, C)`` multi-hot or ``(N,)`` class indices.

    Args:
        scores: Ranking scores.
        targets: Ground truth.
        ignore_empty: True: average over the classes with both positives and negatives. False: raise
            if any class lacks one of them (as scikit-learn does).

    Returns:
        A 0-d float64 tensor. Classes left out are named in an :class:`UndefinedMetricWarning`.

    Raises:
        ValueError: Invalid input, or an undefined class with ``ignore_empty=False``.

    References:
        Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 27, 2006.
    """
    auc = _per_class(scores, targets, _auc_block).reshape(-1)
    undefined = torch.isnan(auc)
    if not ignore_empty and bool(undefined.any()):
        bad = undefined.nonzero().flatten()[:10].tolist()
        raise ValueError(f"ROC AUC is undefined for classes without both positives and negatives: {bad}")
    _warn_undefined(auc, "macro ROC AUC", "no positive or no negative clip", "are left out of the mean")
    return auc.nanmean()


def d_prime(auc: Tensor | float) -> Tensor:
    """Sensitivity index ``d' = sqrt(2) * Phi^{-1}(AUC)``, as reported for AudioSet.

    Args:
        auc: ROC AUC value(s) in ``[0, 1]`` (AUC 0.5 gives 0; 1 gives +inf).

    Returns:
        A float64 tensor shaped like ``auc``.

    Raises:
        ValueError: Values outside ``[0, 1]``.

    References:
        Gemmeke et al., "Audio Set: An ontology and human-labeled dataset for audio events", ICASSP 2017.
    """
    a = torch.as_tensor(auc, dtype=torch.float64)
    finite = a[~torch.isnan(a)]
    if finite.numel() and (bool((finite < 0).any()) or bool((finite > 1).any())):
        raise ValueError("auc must lie in [0, 1]")
    return math.sqrt(2.0) * torch.special.ndtri(a)
