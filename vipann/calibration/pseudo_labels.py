"""Uncertainty-aware pseudo-label selection for semi-supervised training (FixMatch-Uncertainty, "FMUC").

Grollmisch et al. (paper 004) pass every weakly augmented unlabelled clip ``S`` times through a
network with MC dropout, take the mean and standard deviation over the passes of the
temperature-scaled softmax (``T = 2``), and keep the clip's arg-max class as its pseudo-label only
when ``mean - std`` of that class exceeds one threshold (0.9). :func:`select_pseudo_labels`
implements that rule and the paper's variants (its Table I):

===================================  ===========================================================
Variant                              Call
===================================  ===========================================================
FMUC                                 ``select_pseudo_labels(mc_logits)``
FMUC thresh. 0.95                    ``select_pseudo_labels(mc_logits, threshold=0.95)``
FMUC two thresh. (as UPS)            ``select_pseudo_labels(mc_logits, threshold=0.7, std_threshold=0.05)``
FMUC w/o temp.                       ``select_pseudo_labels(mc_logits, temperature=None)``
FMUC w. temp. 4                      ``select_pseudo_labels(mc_logits, temperature=4.0)``
FMUC w/o MC-Dr.                      ``select_pseudo_labels(logits)`` with one deterministic pass ``(B, C)``
FixMatch                             ``select_pseudo_labels(logits, temperature=None, threshold=0.95)``
===================================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vipann.calibration._checks import as_mc_logits, as_temperature

__all__ = ["select_pseudo_labels"]


def _check_probability(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def select_pseudo_labels(
    logits: Tensor,
    temperature: float | Sequence[float] | Tensor | None = 2.0,
    threshold: float = 0.9,
    *,
    std_threshold: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Select confident pseudo-labels from Monte-Carlo logits of unlabelled clips.

    With ``p_s = softmax(z_s / T)`` for every pass ``s``, the pseudo-label of a clip is the arg-max
    ``k`` of the mean ``m = mean_s p_s`` and its spread is ``sd = std_s p_{s,k}`` (population standard
    deviation, ddof = 0). The clip is kept when

    * ``m_k - sd > threshold`` (FMUC's single combined threshold), or, when ``std_threshold`` is given,
    * ``m_k > threshold`` and ``sd < std_threshold`` (the two-threshold variant of UPS).

    A single pass (``(B, C)`` logits, or ``S = 1``) has ``sd = 0``: the rule is then FixMatch's
    confidence threshold on the (temperature-scaled) softmax. The comparisons are strict ("above
    the threshold").

    Inputs:
        logits: ``(S, B, C)`` Monte-Carlo logits (MC-dropout passes, clips, classes) or ``(B, C)``.

    Args:
        logits: Raw logits of the weakly augmented clips (multi-class, softmax outputs).
        temperature: Temperature that divides the logits (scalar or ``(C,)``); None (or 1) for none.
        threshold: Threshold on ``mean - std`` (or on the mean with ``std_threshold``).
        std_threshold: Upper bound on the standard deviation for the two-threshold variant.

    Returns:
        ``(mask, labels)``: ``(B,)`` bool, True for the clips to train on, and ``(B,)`` int64 arg-max
        classes of every clip (meaningful where ``mask`` is True), on the logits' device.

    Raises:
        ValueError: For logits of the wrong shape or with non-finite values, a non-positive
            temperature, or thresholds outside ``[0, 1]``.
        TypeError: For non-tensor logits.

    References:
        Grollmisch, Cano, Lukashevich & Abeßer, "Uncertainty in semi-supervised audio classification -
        A novel extension for FixMatch" (FMUC), 2023. Rizve et al., "In defense of pseudo-labeling: An
        uncertainty-aware pseudo-label selection framework for semi-supervised learning" (UPS), ICLR
        2021. Sohn et al., "FixMatch", NeurIPS 2020.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[9.0, 0.0]], [[8.0, 0.0]]])  # (S=2, B=1, C=2)
        >>> select_pseudo_labels(logits)
        (tensor([True]), tensor([0]))
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    z = as_mc_logits(logits)
    threshold = _check_probability(threshold, "threshold")
    if std_threshold is not None:
        std_threshold = _check_probability(std_threshold, "std_threshold")
    if temperature is not None:
        z = z / as_temperature(temperature, z.shape[-1], z)
    probs = torch.softmax(z, dim=-1)
    mean = probs.mean(0)
    labels = mean.argmax(-1)
    top = probs.gather(-1, labels[None, :, None].expand(probs.shape[0], -1, 1)).squeeze(-1)  # (S, B)
    top_mean, top_std = top.mean(0), top.std(0, correction=0)
    if std_threshold is None:
        mask = top_mean - top_std > threshold
    else:
        mask = (top_mean > threshold) & (top_std < std_threshold)
    return mask, labels
