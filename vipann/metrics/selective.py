"""Selective prediction: the risk-coverage curve, AURC and AUGRC.

A selective classifier answers only the clips it is most certain about. Ranking the ``N`` clips by
uncertainty (least uncertain first) and accepting the first ``k`` gives coverage ``k / N``, the
*selective risk* ``R(k) = L_k / k`` (mean loss of the accepted clips) and the *generalized risk*
``GR(k) = L_k / N`` (share of all clips that are accepted and wrong), with ``L_k`` the summed loss of
the ``k`` accepted clips. Both areas are the mean over the ``N`` coverage levels ``k / N``:

* ``AURC = (1 / N) sum_k R(k)`` (Geifman, Uziel & El-Yaniv 2019), lower is better;
* ``AUGRC = (1 / N) sum_k GR(k)`` (Traub et al. 2024), lower is better. For 0-1 losses with ``E``
  errors the best ranking gives ``E (E + 1) / (2 N^2)`` (Traub et al.'s continuous ``err^2 / 2`` plus
  ``err / (2N)``); their trapezoid over the curve starting at ``(0, 0)`` is this sum minus ``err / (2N)``.

Ties in uncertainty give the expected curve over random tie-breaking, exactly: within a tie group that
the cut splits, the expected loss of the accepted part is the group's loss times the accepted share
(the same rule as :func:`vipann.metrics.retention_curve`'s accuracy, of which AURC is one minus the
mean over every ``k``).

Losses: multi-class, the top-1 error ``1[argmax p != y]``; multi-label, the Hamming loss of the
decisions ``p_c >= threshold`` (share of wrong labels of the clip). Default uncertainty: ``1 - max_c
p_c`` (multi-class, Geifman's softmax response), ``1 - mean_c max(p_c, 1 - p_c)`` (multi-label).
"""

from __future__ import annotations

import torch
from torch import Tensor

import vipann.metrics._retention_kernels as K
from vipann.metrics._checks import check_class_targets, check_multihot, check_probs_2d, check_scores

__all__ = ["augrc", "aurc", "risk_coverage_curve"]


def _losses(probs: Tensor, targets: Tensor, uncertainty: Tensor | None, multilabel: bool, threshold: float):
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must lie in (0, 1); got {threshold!r}")
    p = check_probs_2d(probs, multilabel).double()
    n, c = p.shape
    if multilabel:
        y = check_multihot(targets, (n, c))
        loss = ((p >= threshold) != y).double().mean(1)
        default = 1.0 - torch.maximum(p, 1.0 - p).mean(1)
    else:
        y = check_class_targets(targets, n, c)
        loss = (p.argmax(1) != y).double()
        default = 1.0 - p.max(1).values
    if uncertainty is None:
        return loss, default
    check_scores(uncertainty, "uncertainty", f"(N,) = ({n},) per-clip uncertainty", (1,))
    if uncertainty.shape[0] != n:
        raise ValueError(f"uncertainty must have shape (N,) = ({n},) to match probs; got {tuple(uncertainty.shape)}")
    if uncertainty.device != p.device:
        raise ValueError(f"uncertainty is on {uncertainty.device} but probs on {p.device}; move them to one device")
    return loss, uncertainty.double()


def risk_coverage_curve(
    probs: Tensor,
    targets: Tensor,
    uncertainty: Tensor | None = None,
    *,
    multilabel: bool = False,
    threshold: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """Coverage, selective risk and generalized risk at every coverage level ``k / N``.

    Inputs:
        probs: ``(N, C)`` probabilities (softmax rows, or per-class sigmoids with ``multilabel=True``).
        targets: ``(N,)`` class indices, or ``(N, C)`` multi-hot.
        uncertainty: Optional ``(N,)`` per-clip uncertainty (larger: rejected first).

    Args:
        probs: Predictions.
        targets: Ground truth.
        uncertainty: Ranking score; None uses the default of the module docstring.
        multilabel: Independent sigmoid classes (Hamming loss).
        threshold: Decision threshold of the multi-label labels.

    Returns:
        ``(coverage, risk, generalized_risk)``, each ``(N,)`` float64, in expectation over random
        tie-breaking.

    Raises:
        ValueError: Invalid probabilities, targets or uncertainty, or a threshold outside ``(0, 1)``.

    References:
        Geifman & El-Yaniv, "Selective classification for deep neural networks", NeurIPS 2017.
    """
    loss, unc = _losses(probs, targets, uncertainty, multilabel, threshold)
    n = loss.shape[0]
    k = torch.arange(1, n + 1, device=loss.device)
    risk = K.expected_accuracy_curves(loss[None], unc[None], k)[0][0]  # mean loss of the k accepted clips
    coverage = k.double() / n
    return coverage, risk, risk * coverage


def aurc(
    probs: Tensor,
    targets: Tensor,
    uncertainty: Tensor | None = None,
    *,
    multilabel: bool = False,
    threshold: float = 0.5,
) -> Tensor:
    """Area under the risk-coverage curve ``(1 / N) sum_k R(k)`` (lower is better).

    Inputs:
        probs: ``(N, C)``; targets: ``(N,)`` class indices or ``(N, C)`` multi-hot; uncertainty: ``(N,)``.

    Args:
        probs: Predictions.
        targets: Ground truth.
        uncertainty: Ranking score; None uses the default of the module docstring.
        multilabel: Independent sigmoid classes (Hamming loss).
        threshold: Decision threshold of the multi-label labels.

    Returns:
        A 0-d float64 tensor in ``[0, 1]``.

    Raises:
        ValueError: As :func:`risk_coverage_curve`.

    References:
        Geifman, Uziel & El-Yaniv, "Bias-reduced uncertainty estimation for deep neural classifiers",
        ICLR 2019; Geifman & El-Yaniv, "Selective classification for deep neural networks", NeurIPS 2017.

    Example:
        >>> probs = torch.softmax(torch.randn(100, 5), -1)
        >>> aurc(probs, torch.randint(0, 5, (100,)))
    """
    return risk_coverage_curve(probs, targets, uncertainty, multilabel=multilabel, threshold=threshold)[1].mean()


def augrc(
    probs: Tensor,
    targets: Tensor,
    uncertainty: Tensor | None = None,
    *,
    multilabel: bool = False,
    threshold: float = 0.5,
) -> Tensor:
    """Area under the generalized risk-coverage curve ``(1 / N) sum_k L_k / N`` (lower is better).

    The generalized risk counts the accepted wrong clips among *all* clips, so unlike AURC it does not
    reward rejecting almost everything; AUGRC is the average risk of an undetected failure over all
    working points.

    Inputs:
        probs: ``(N, C)``; targets: ``(N,)`` class indices or ``(N, C)`` multi-hot; uncertainty: ``(N,)``.

    Args:
        probs: Predictions.
        targets: Ground truth.
        uncertainty: Ranking score; None uses the default of the module docstring.
        multilabel: Independent sigmoid classes (Hamming loss).
        threshold: Decision threshold of the multi-label labels.

    Returns:
        A 0-d float64 tensor in ``[0, 1]``.

    Raises:
        ValueError: As :func:`risk_coverage_curve`.

    References:
        Traub, Bungert, Lüth, Baumgartner, Maier-Hein, Maier-Hein & Jaeger, "Overcoming common flaws in
        the evaluation of selective classification systems", NeurIPS 2024.
    """
    return risk_coverage_curve(probs, targets, uncertainty, multilabel=multilabel, threshold=threshold)[2].mean()
