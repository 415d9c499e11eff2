"""Training losses: cross-entropy / BCE with label smoothing or focal weighting, and the ELBO."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipann.layers import flipout_layers

__all__ = ["LossConfig", "classification_loss", "elbo_loss", "focal_loss"]


@dataclass(frozen=True)
class LossConfig:
    """Which data term the training engine uses.

    Attributes:
        kind: ``"ce"`` (cross-entropy / BCE) or ``"focal"``.
        label_smoothing: Label smoothing for ``"ce"`` (multi-class: torch's definition; multi-label:
            targets pulled towards 0.5 by this amount).
        focal_gamma: Focal-loss focusing parameter (paper 000 uses 2).
        focal_alpha: Focal-loss class balance (paper 000 uses 0.25); None disables it.
        kl_reduction: ``"mean"`` (bayesian-torch's ``get_kl_loss``, what VI-PANN trained with) or
            ``"sum"`` (the full KL of a proper ELBO).
        kl_weight: Extra multiplier on the KL term (1 for the ELBO).
    """

    kind: str = "ce"
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    focal_alpha: float | None = 0.25
    kl_reduction: str = "mean"
    kl_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("ce", "focal"):
            raise ValueError(f"loss kind must be 'ce' or 'focal', got {self.kind!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {self.focal_gamma}")
        if self.kl_reduction not in ("mean", "sum"):
            raise ValueError(f"kl_reduction must be 'mean' or 'sum', got {self.kl_reduction!r}")


def focal_loss(
    logits: Tensor, targets: Tensor, *, multilabel: bool, gamma: float = 2.0, alpha: float | None = 0.25
) -> Tensor:
    """Focal loss (Lin et al., 2017), mean over the batch.

    Multi-class: ``-alpha (1 - p_y)^gamma log p_y`` on the softmax probability of the target class
    (targets are class indices, or soft targets ``(B, C)`` from mixup, in which case the loss is the
    target-weighted sum over classes). Multi-label: the binary form per class, summed over classes,
    with ``alpha`` weighting positives and ``1 - alpha`` negatives. With ``gamma = 0`` and
    ``alpha = None`` it equals cross-entropy (BCE summed over classes for multi-label, which is
    ``C`` times torch's mean BCE).

    Args:
        logits: ``(B, C)`` logits.
        targets: ``(B,)`` class indices, or ``(B, C)`` (soft or multi-hot) targets.
        multilabel: Independent sigmoid outputs (True) or one softmax (False).
        gamma: Focusing parameter.
        alpha: Class-balance weight, or None.

    Returns:
        A scalar tensor.

    References:
        T.-Y. Lin, P. Goyal, R. Girshick, K. He, P. Dollár, "Focal loss for dense object detection",
        ICCV 2017.
    """
    if multilabel:
        targets = targets.to(logits.dtype)
        logp = F.logsigmoid(logits)
        log1mp = F.logsigmoid(-logits)
        p = logp.exp()
        pos = -targets * (1 - p).pow(gamma) * logp
        neg = -(1 - targets) * p.pow(gamma) * log1mp
        if alpha is not None:
            pos, neg = alpha * pos, (1 - alpha) * neg
        return (pos + neg).sum(-1).mean()
    logp = F.log_softmax(logits, dim=-1)
    soft = targets if targets.dim() == 2 else F.one_hot(targets, logits.shape[-1]).to(logits.dtype)
    weight = (1 - logp.exp()).pow(gamma)
    loss = -(soft * weight * logp).sum(-1)
    if alpha is not None:
        loss = alpha * loss
    return loss.mean()


def classification_loss(
    logits: Tensor, targets: Tensor, *, multilabel: bool, config: LossConfig | None = None
) -> Tensor:
    """The data term: softmax cross-entropy (multi-class) or BCE on sigmoid outputs (multi-label).

    Args:
        logits: ``(B, C)``.
        targets: ``(B,)`` class indices or ``(B, C)`` soft/multi-hot targets.
        multilabel: Which output model.
        config: Loss options (default: plain cross-entropy / BCE).

    Returns:
        The mean loss over the batch (a scalar).
    """
    config = config or LossConfig()
    if config.kind == "focal":
        return focal_loss(logits, targets, multilabel=multilabel, gamma=config.focal_gamma, alpha=config.focal_alpha)
    if multilabel:
        targets = targets.to(logits.dtype)
        if config.label_smoothing:
            targets = targets * (1 - config.label_smoothing) + 0.5 * config.label_smoothing
        return F.binary_cross_entropy_with_logits(logits, targets)
    return F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)


def elbo_loss(
    logits: Tensor,
    targets: Tensor,
    model: nn.Module,
    num_train: int,
    *,
    multilabel: bool,
    config: LossConfig | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Negative ELBO: data term + KL / N_train (VI-PANN Section 3.5), for any model.

    The KL sums over the Flipout layers whose parameters are being trained (all of them unless a
    backbone is frozen); models without Flipout layers get a zero KL, so the same code trains every
    method.

    Args:
        logits: ``(B, C)``.
        targets: Class indices or ``(B, C)`` targets.
        model: The model whose Flipout layers carry the KL (a DDP wrapper is fine).
        num_train: Number of training examples N.
        multilabel: Which output model.
        config: Loss options (``kl_reduction``, ``kl_weight``, data term).

    Returns:
        ``(loss, data_term, kl_term)``, scalars; ``kl_term`` is already divided by N.

    Raises:
        ValueError: If ``num_train`` is not positive.
    """
    if num_train < 1:
        raise ValueError(f"num_train must be >= 1, got {num_train}")
    config = config or LossConfig()
    data = classification_loss(logits, targets, multilabel=multilabel, config=config)
    module = getattr(model, "module", model)
    # Only the Bayesian layers being trained contribute: a frozen Flipout backbone's KL is a
    # constant that would only shift the reported loss.
    layers = [layer for _, layer in flipout_layers(module) if layer.mu_w.requires_grad]
    if not layers:
        kl = torch.zeros((), device=logits.device, dtype=logits.dtype)
    else:
        total = sum(layer.kl_divergence(config.kl_reduction) for layer in layers)
        kl = total * (config.kl_weight / num_train)
    return data + kl, data, kl
