"""Out-of-distribution detection metrics from per-clip scores (higher score = more likely OOD).

Typical scores are the uncertainties of :mod:`vipann.uncertainty` (total, epistemic, aleatoric)
computed on an in-distribution test set and on an OOD set (ShipsEar in VI-PANN).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vipann.metrics._checks import check_scores
from vipann.metrics.classification import average_precision, roc_auc

__all__ = ["ood_aupr", "ood_auroc"]


def _stack(score_id: Tensor, score_ood: Tensor) -> tuple[Tensor, Tensor]:
    check_scores(score_id, "score_id", "(N,) in-distribution scores", (1,))
    check_scores(score_ood, "score_ood", "(M,) out-of-distribution scores", (1,))
    if score_id.device != score_ood.device:
        raise ValueError(f"score_id and score_ood must be on one device; got {score_id.device} and {score_ood.device}")
    dtype = torch.promote_types(score_id.dtype, score_ood.dtype)
    scores = torch.cat([score_id.to(dtype), score_ood.to(dtype)])
    is_ood = torch.cat([torch.zeros_like(score_id, dtype=torch.bool), torch.ones_like(score_ood, dtype=torch.bool)])
    return scores, is_ood


def ood_auroc(score_id: Tensor, score_ood: Tensor) -> Tensor:
    """Area under the ROC curve for telling OOD clips (positives) from in-distribution ones.

    Equals scikit-learn's ``roc_auc_score(is_ood, concat(score_id, score_ood))``; ties count half. The
    value does not depend on which side is called positive.

    Inputs:
        score_id: ``(N,)`` scores of in-distribution clips.
        score_ood: ``(M,)`` scores of OOD clips.

    Args:
        score_id: In-distribution scores.
        score_ood: OOD scores.

    Returns:
        A 0-d float64 tensor in ``[0, 1]``; 0.5 means no separation.

    Raises:
        ValueError: Non-1-d, empty or non-finite inputs, or inputs on different devices.

    References:
        Hendrycks & Gimpel, "A baseline for detecting misclassified and out-of-distribution examples in
        neural networks", ICLR 2017.
    """
    scores, is_ood = _stack(score_id, score_ood)
    return roc_auc(scores, is_ood)


def ood_aupr(score_id: Tensor, score_ood: Tensor, positive: str = "ood") -> Tensor:
    """Area under the precision-recall curve (average precision) for OOD detection.

    Inputs:
        score_id: ``(N,)`` scores of in-distribution clips.
        score_ood: ``(M,)`` scores of OOD clips.

    Args:
        score_id: In-distribution scores.
        score_ood: OOD scores.
        positive: "ood" (AUPR-Out): OOD clips are the positives, ranked by the score. "id" (AUPR-In):
            in-distribution clips are the positives, ranked by the negated score.

    Returns:
        A 0-d float64 tensor; equals scikit-learn's ``average_precision_score`` on the concatenation
        (with the labels and, for "id", the scores flipped).

    Raises:
        ValueError: Invalid inputs, or ``positive`` not in {"ood", "id"}.

    References:
        Hendrycks & Gimpel, "A baseline for detecting misclassified and out-of-distribution examples in
        neural networks", ICLR 2017.
    """
    if positive not in ("ood", "id"):
        raise ValueError(f"positive must be 'ood' or 'id'; got {positive!r}")
    scores, is_ood = _stack(score_id, score_ood)
    if positive == "ood":
        return average_precision(scores, is_ood)
    return average_precision(-scores, ~is_ood)
