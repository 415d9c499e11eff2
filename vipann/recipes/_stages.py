"""Training one stage of one transfer model (private to :mod:`vipann.recipes.transfer`).

* ``fixed``: backbone frozen; the head is trained on pooled features computed once per clip
  (:func:`vipann.train.transfer.extract_features`), never on the backbone again.
* ``finetuned``: every weight trained on the waveforms at ``lr / finetune_lr_factor``.

With ``mixup_alpha > 0`` every training batch is mixed (Zhang et al., 2018) with
:func:`vipann.models.frontend.do_mixup`, the pre-training recipe's PANNs-style pairwise mixing: each clip
of the batch is paired with a partner drawn from the same batch, ``lam ~ Beta(alpha, alpha)``, and
inputs and targets are mixed with the same ``lam`` (one-hot class targets become soft targets, which
the cross-entropy and focal losses accept). The mixed inputs are what the stage trains on: the
cached pooled features in the fixed-feature stage, the waveforms in the fine-tuned stage. Partners
and coefficients depend only on ``(seed, epoch)``, so a resumed run draws the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipann.calibration.sngp import RandomFeatureGP
from vipann.models.augment import Mixup, do_mixup
from vipann.models.pann import PANN
from vipann.train.distributed import DistContext
from vipann.train.engine import FitConfig, ddp_wrap, fit, shuffled_batches
from vipann.train.ivon import IVONConfig
from vipann.train.losses import LossConfig
from vipann.train.transfer import extract_features, head_parameters

__all__ = [
    "HeadModule",
    "feature_batches",
    "loss_config",
    "mix_batch",
    "set_sngp_lengthscale",
    "stage_features",
    "train_stage",
    "wave_batches",
]


class HeadModule(nn.Module):
    """fc1 → classifier of a model as its own module, so DDP sees the head's forward."""

    def __init__(self, model: PANN) -> None:
        super().__init__()
        self.model = model

    def forward(self, pooled: Tensor) -> Tensor:
        """Logits from pooled features ``(B, D)``."""
        return self.model.run_stages(pooled, len(self.model.trunk_names))


def loss_config(config: Any) -> LossConfig:
    """The data term and KL options of a :class:`~vipann.recipes.transfer.TransferConfig`."""
    return LossConfig(
        kind=config.loss,
        label_smoothing=config.label_smoothing,
        kl_reduction=config.kl_reduction,
        focal_gamma=config.focal_gamma,
        focal_alpha=config.focal_alpha,
    )


def mix_batch(
    take: Callable[[Tensor], Tensor],
    index: Tensor,
    targets: Tensor,
    num_classes: int,
    alpha: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Mixup of one batch: every clip with a partner from the same batch, inputs and targets alike.

    Args:
        take: ``take(indices)`` returns the inputs of those clips.
        index: ``(B,)`` the batch's clip indices.
        targets: ``(N,)`` class indices or ``(N, C)`` multi-hot targets of every clip.
        num_classes: ``C`` (for one-hot class targets).
        alpha: Beta concentration (> 0).
        generator: CPU generator of the partners and coefficients.

    Returns:
        ``(inputs, soft_targets)`` of ``B`` mixed examples; targets are ``(B, C)`` float.
    """
    partner = index[torch.randperm(len(index), generator=generator)]
    both = torch.stack([index, partner], 1).reshape(-1)  # pairs (2i, 2i+1) for do_mixup
    lam = Mixup(alpha, generator=generator).lambdas(len(both))
    y = targets[both]
    y = F.one_hot(y.long(), num_classes).float() if y.dim() == 1 else y.float()
    x = take(both)
    return do_mixup(x, lam.to(x.dtype)), do_mixup(y, lam)


def _mix_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_033 + int(epoch) * 9973 + 17)


def feature_batches(
    features: Tensor, targets: Tensor, config: Any, ctx: DistContext, seed: int, num_classes: int
) -> Callable[[int], Iterator[tuple[Tensor, Tensor]]]:
    """``batches(epoch)`` over cached ``(K, N, D)`` features: one of each clip's K draws per epoch."""

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(seed * 7919 + epoch)
        draw = torch.randint(features.shape[0], (features.shape[1],), generator=g)
        mix = _mix_generator(seed, epoch) if config.mixup_alpha > 0 else None
        for index in shuffled_batches(features.shape[1], config.batch_size, seed, epoch, ctx.rank, ctx.world_size):
            if mix is None:
                yield features[draw[index], index], targets[index]
            else:
                yield mix_batch(lambda i: features[draw[i], i], index, targets, num_classes, config.mixup_alpha, mix)

    return batches


def wave_batches(
    waves: Tensor, targets: Tensor, config: Any, ctx: DistContext, seed: int, num_classes: int
) -> Callable[[int], Iterator[tuple[Tensor, Tensor]]]:
    """``batches(epoch)`` over ``(N, T)`` waveforms."""

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        mix = _mix_generator(seed, epoch) if config.mixup_alpha > 0 else None
        for index in shuffled_batches(len(waves), config.batch_size, seed, epoch, ctx.rank, ctx.world_size):
            if mix is None:
                yield waves[index], targets[index]
            else:
                yield mix_batch(lambda i: waves[i], index, targets, num_classes, config.mixup_alpha, mix)

    return batches


def stage_features(model: PANN, waves: Tensor, config: Any, ctx: DistContext, seed: int) -> Tensor:
    """Pooled features ``(K, N, D)`` of ``waves`` for the fixed-feature stage (computed once)."""
    gen = torch.Generator(device=ctx.device).manual_seed(seed)
    return extract_features(
        model,
        waves,
        draws=config.feature_draws,
        batch_size=config.eval_batch_size,
        ctx=ctx,
        generator=gen,
        progress=config.progress,
    ).cpu()


@torch.no_grad()
def set_sngp_lengthscale(model: PANN, value: float) -> float | None:
    """Set the RBF length scale of a model's SNGP layer (``value > 0``; 0 keeps the layer's default).

    The random projection is rescaled (``W ~ N(0, 1 / l^2)``) and ``model.head_config`` updated, so
    a saved model records the length scale it was trained with.

    Args:
        model: The model (nothing happens without an SNGP head).
        value: The length scale, or 0 for the default ``sqrt(width of the GP input)``.

    Returns:
        The length scale in use, or None for a model without SNGP head.
    """
    layers = [m for m in model.modules() if isinstance(m, RandomFeatureGP)]
    if not layers:
        return None
    if value > 0:
        for layer in layers:
            layer.rff_weight.mul_(layer.lengthscale / float(value))
            layer.lengthscale = float(value)
        if isinstance(getattr(model, "head_config", None), dict):
            model.head_config["lengthscale"] = float(value)
    return layers[0].lengthscale


def train_stage(
    model: PANN,
    stage: str,
    waves: Tensor,
    targets: Tensor,
    config: Any,
    ctx: DistContext,
    *,
    fold: int,
    checkpoint_dir: Path,
    title: str,
    multilabel: bool,
    round_index: int = 0,
    features: Tensor | None = None,
) -> Tensor | None:
    """Train one stage of ``model`` in place.

    Args:
        model: The model (moved to ``ctx.device``).
        stage: ``"fixed"`` or ``"finetuned"``.
        waves: ``(N, T)`` training clips.
        targets: ``(N,)`` or ``(N, C)`` training targets.
        config: The run's (member's) :class:`~vipann.recipes.transfer.TransferConfig`.
        ctx: Distributed context of the training (a world of one for ensemble members trained in parallel).
        fold: Test fold (part of the seeds).
        checkpoint_dir: The stage's rolling checkpoint.
        title: Progress-bar label.
        multilabel: Sigmoid (True) or softmax (False) outputs.
        round_index: Pseudo-label round (0: the first training of the stage), part of the seeds.
        features: Cached ``(K, N, D)`` features of ``waves`` (fixed stage; computed when None).

    Returns:
        The features the fixed-feature stage trained on (None for the fine-tuned stage).
    """
    model.to(ctx.device)
    salt = 1000 * round_index
    num_classes = model.num_classes
    fixed = stage == "fixed"
    for p in model.parameters():
        p.requires_grad_(not fixed)
    if fixed:
        for p in head_parameters(model):
            p.requires_grad_(True)
        if features is None:
            features = stage_features(model, waves, config, ctx, config.seed + fold)
        trained, params = HeadModule(model), head_parameters(model)
        batches = feature_batches(features, targets, config, ctx, config.seed + salt, num_classes)
        epochs, lr, seed = config.fixed_epochs, config.lr, config.seed + fold + salt
    else:
        trained, params = model, model.parameters()
        batches = wave_batches(waves, targets, config, ctx, config.seed + salt, num_classes)
        epochs, lr = config.finetune_epochs, config.lr / config.finetune_lr_factor
        seed = config.seed + fold + 100 + salt
    ivon = None
    if getattr(config, "optimizer", "adam") == "ivon":
        ivon = IVONConfig(
            ess=config.ivon_ess,
            hess_init=config.ivon_hess_init,
            weight_decay=config.ivon_weight_decay,
            train_samples=config.ivon_train_samples,
        )
        lr = config.ivon_lr if fixed else config.ivon_lr / config.finetune_lr_factor
    fit(
        ddp_wrap(ctx, trained),
        params,
        batches,
        FitConfig(epochs=epochs, lr=lr, loss=loss_config(config), seed=seed, desc=title, amp=config.amp, ivon=ivon),
        multilabel=multilabel,
        num_train=len(waves),
        ctx=ctx,
        checkpoint_dir=checkpoint_dir,
        resume=config.resume,
        progress=config.progress,
    )
    return features if fixed else None
