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

:class:`PseudoLabelRule` bundles one such choice (Monte-Carlo passes or a single deterministic pass,
temperature, thresholds) and :class:`PseudoLabelStats` counts what a rule selected: the *quantity*
(share of the unlabelled clips that received a pseudo-label) and the *quality* (accuracy of the
selected pseudo-labels, where the true labels are known), the paper's two measures. The FixMatch
recipe (:mod:`vipann.recipes.fixmatch`) applies the rules inside every training step; the
transfer recipe's round-based self-training applies them between training rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vipann.calibration._checks import as_mc_logits, as_temperature

__all__ = ["PseudoLabelRule", "PseudoLabelStats", "select_pseudo_labels"]


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
    inclusive: bool = False,
) -> tuple[Tensor, Tensor]:
    """Select confident pseudo-labels from Monte-Carlo logits of unlabelled clips.

    With ``p_s = softmax(z_s / T)`` for every pass ``s``, the pseudo-label of a clip is the arg-max
    ``k`` of the mean ``m = mean_s p_s`` and its spread is ``sd = std_s p_{s,k}`` (population standard
    deviation, ddof = 0). The clip is kept when

    * ``m_k - sd > threshold`` (FMUC's single combined threshold), or, when ``std_threshold`` is given,
    * ``m_k > threshold`` and ``sd < std_threshold`` (the two-threshold variant of UPS).

    A single pass (``(B, C)`` logits, or ``S = 1``) has ``sd = 0``: the rule is then FixMatch's
    confidence threshold on the (temperature-scaled) softmax. The comparisons are strict ("above
    the threshold") unless ``inclusive=True``, which uses ``>=`` and ``<=`` as FixMatch's reference
    code does (``max_probs.ge(threshold)``).

    Inputs:
        logits: ``(S, B, C)`` Monte-Carlo logits (MC-dropout passes, clips, classes) or ``(B, C)``.

    Args:
        logits: Raw logits of the weakly augmented clips (multi-class, softmax outputs).
        temperature: Temperature that divides the logits (scalar or ``(C,)``); None (or 1) for none.
        threshold: Threshold on ``mean - std`` (or on the mean with ``std_threshold``).
        std_threshold: Upper bound on the standard deviation for the two-threshold variant.
        inclusive: Keep clips exactly at a threshold (``>=`` / ``<=``) instead of strictly beyond it.

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
        score = top_mean - top_std
        mask = score >= threshold if inclusive else score > threshold
    elif inclusive:
        mask = (top_mean >= threshold) & (top_std <= std_threshold)
    else:
        mask = (top_mean > threshold) & (top_std < std_threshold)
    return mask, labels


@dataclass(frozen=True)
class PseudoLabelRule:
    """One way of turning the weak view's predictions into pseudo-labels.

    Attributes:
        mc: Monte-Carlo passes with the model's stochastic layers sampling (MC dropout; Flipout for
            Bayesian models). False: one deterministic pass.
        passes: Number of Monte-Carlo passes ``N`` (ignored without ``mc``; paper 004: 5).
        temperature: Temperature dividing the logits before the softmax (None: none).
        threshold: Threshold on ``mean - std`` of the top class (or on its mean with ``std_threshold``).
        std_threshold: Upper bound on the top class's standard deviation (the UPS variant), or None.
        inclusive: ``>=`` / ``<=`` comparisons (FixMatch's) instead of strict ones.

    Example:
        >>> import torch
        >>> rule = PseudoLabelRule(mc=False, temperature=None, threshold=0.95)  # FixMatch
        >>> rule.select(torch.tensor([[4.0, 0.0], [1.0, 0.0]]))
        (tensor([ True, False]), tensor([0, 0]))
    """

    mc: bool = True
    passes: int = 5
    temperature: float | None = 2.0
    threshold: float = 0.9
    std_threshold: float | None = None
    inclusive: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.passes, bool) or not isinstance(self.passes, int) or self.passes < 1:
            raise ValueError(f"passes must be an int >= 1, got {self.passes!r}")
        if self.temperature is not None and not float(self.temperature) > 0:
            raise ValueError(f"temperature must be > 0 (or None for none), got {self.temperature!r}")
        _check_probability(self.threshold, "threshold")
        if self.std_threshold is not None:
            _check_probability(self.std_threshold, "std_threshold")

    @property
    def num_passes(self) -> int:
        """Forward passes per clip: ``passes`` with Monte-Carlo sampling, else 1."""
        return self.passes if self.mc else 1

    def select(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """``(mask, labels)`` of :func:`select_pseudo_labels` with this rule's settings.

        Args:
            logits: ``(S, B, C)`` logits of the ``S`` passes (or ``(B, C)`` for one pass).

        Returns:
            ``(B,)`` bool mask of the selected clips and ``(B,)`` int64 pseudo-labels.
        """
        return select_pseudo_labels(
            logits,
            temperature=self.temperature,
            threshold=self.threshold,
            std_threshold=self.std_threshold,
            inclusive=self.inclusive,
        )


@dataclass
class PseudoLabelStats:
    """Running counts of pseudo-label selections: the paper's quantity and quality.

    Attributes:
        candidates: Unlabelled clips that were offered to the rule.
        selected: Clips that received a pseudo-label.
        scored: Selected clips whose true label is known (hidden labels).
        correct: Scored clips whose pseudo-label equals the true label.
    """

    candidates: int = 0
    selected: int = 0
    scored: int = 0
    correct: int = 0

    def add(self, mask: Tensor, labels: Tensor, truth: Tensor) -> PseudoLabelStats:
        """Count one selection.

        Args:
            mask: ``(B,)`` bool, the selected clips.
            labels: ``(B,)`` pseudo-labels.
            truth: ``(B,)`` true class indices, ``-1`` where unknown.

        Returns:
            ``self``.

        Raises:
            ValueError: If the three tensors do not have the same ``(B,)`` shape.
        """
        if not (mask.shape == labels.shape == truth.shape) or mask.dim() != 1:
            raise ValueError(
                f"mask, labels and truth must be (B,) tensors of one shape, got "
                f"{tuple(mask.shape)}, {tuple(labels.shape)}, {tuple(truth.shape)}"
            )
        mask = mask.bool()
        truth = truth.to(labels.device)
        known = mask & (truth >= 0)
        self.candidates += int(mask.numel())
        self.selected += int(mask.sum())
        self.scored += int(known.sum())
        self.correct += int((known & (labels == truth)).sum())
        return self

    def merge(self, other: PseudoLabelStats) -> PseudoLabelStats:
        """The counts of both (e.g. of several processes or epochs)."""
        return PseudoLabelStats(
            self.candidates + other.candidates,
            self.selected + other.selected,
            self.scored + other.scored,
            self.correct + other.correct,
        )

    @property
    def quantity(self) -> float:
        """Share of the candidates that were selected (``nan`` without candidates)."""
        return self.selected / self.candidates if self.candidates else float("nan")

    @property
    def quality(self) -> float:
        """Accuracy of the selected pseudo-labels whose truth is known (``nan`` when none is)."""
        return self.correct / self.scored if self.scored else float("nan")

    def as_tensor(self) -> Tensor:
        """``(candidates, selected, scored, correct)`` as float64 (for summing across processes)."""
        return torch.tensor([self.candidates, self.selected, self.scored, self.correct], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, counts: Tensor) -> PseudoLabelStats:
        """The inverse of :meth:`as_tensor`."""
        values = [round(float(v)) for v in counts.flatten().tolist()]
        return cls(*values)
