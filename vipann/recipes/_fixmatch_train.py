"""The FixMatch / FMUC training loop (private to :mod:`vipann.recipes.fixmatch`).

Every step takes ``B`` labelled clips and ``mu * B`` unlabelled clips (per process). The log-mel
input of every clip is computed once; inside the step the network normalises it (``bn0``) and
augments it: the labelled clips and the pseudo-label view of the unlabelled clips get the *weak*
view, the unlabelled clips' training view the *strong* one (:mod:`vipann.models.views`). The
pseudo-label rule (:class:`~vipann.calibration.PseudoLabelRule`) turns the weak view's logits into a
mask and labels; the loss is

``CE(labelled) + KL / N_labelled + unlabelled_weight * mean_u(mask_u * CE(strong_u, pseudo_u))``

(FixMatch's normalisation: the mean over all ``mu * B`` unlabelled clips; the KL is zero for
``drop`` and ``det`` networks). Without a rule (the supervised baselines) only the first two terms
remain. Every epoch counts, over all processes, how many unlabelled clips were offered and selected
and how many selected pseudo-labels were right (hidden labels), and a checkpoint (model, optimiser,
history, every RNG state) is written atomically; the batch indices and every augmentation and
Monte-Carlo draw are functions of ``(seed, epoch, step, rank)``, so a resumed run ends exactly as an
uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipann.calibration.pseudo_labels import PseudoLabelRule, PseudoLabelStats
from vipann.layers import mc_sampling
from vipann.models.pann import PANN
from vipann.models.views import StrongAugment, WeakAugment
from vipann.train.distributed import DistContext
from vipann.train.losses import LossConfig, elbo_loss
from vipann.train.state import capture_rng_state, load_state, restore_rng_state, save_state
from vipann.utils.atomic import write_csv_atomic

__all__ = ["EPOCH_COLUMNS", "RunData", "ViewNet", "compute_logmel", "index_stream", "train_run", "weak_logits"]

logger = logging.getLogger("vipann.recipes.fixmatch")

EPOCH_COLUMNS = (
    "epoch",
    "loss",
    "labelled_loss",
    "unlabelled_loss",
    "kl",
    "labelled_accuracy",
    "candidates",
    "selected",
    "scored",
    "correct",
    "quantity",
    "quality",
)


@dataclass
class RunData:
    """The clips of one run, as log-mel inputs ``(N, 1, frames, mel_bins)`` on the CPU.

    Attributes:
        labelled: Log-mels of the labelled clips.
        targets: ``(N_l,)`` their class indices.
        unlabelled: Log-mels of the unlabelled pool (empty for the supervised baselines).
        truth: ``(N_u,)`` hidden true classes of the pool, ``-1`` where unknown (scoring only).
    """

    labelled: Tensor
    targets: Tensor
    unlabelled: Tensor
    truth: Tensor


@torch.no_grad()
def compute_logmel(model: PANN, waves: Tensor, device: torch.device, batch_size: int = 64) -> Tensor:
    """Log-mel inputs ``(N, 1, frames, mel_bins)`` of ``(N, T)`` clips (the front end has no trainable weight)."""
    parts = [model.logmel(waves[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(waves), batch_size)]
    if not parts:
        frames = model.frontend_config.num_frames(waves.shape[-1])
        return torch.empty(0, 1, frames, model.frontend_config.mel_bins)
    return torch.cat(parts)


def _normalise(model: PANN, logmel: Tensor) -> Tensor:
    return model.bn0(logmel.transpose(1, 3)).transpose(1, 3)


class ViewNet(nn.Module):
    """log-mel → ``bn0`` → views → the network's stages: the module that DDP wraps.

    Args:
        model: The PANN being trained.
    """

    def __init__(self, model: PANN) -> None:
        super().__init__()
        self.model = model

    def forward(self, logmel: Tensor, views: Callable[[Tensor], Tensor]) -> Tensor:
        """Logits of ``views(bn0(logmel))`` (``views`` may change the batch size)."""
        return self.model.run_stages(views(_normalise(self.model, logmel)))


@torch.no_grad()
def weak_logits(
    model: PANN,
    logmel: Tensor,
    rule: PseudoLabelRule,
    weak: WeakAugment,
    generator: torch.Generator,
) -> Tensor:
    """``(S, B, C)`` logits of the weak view, network in eval mode (``weak_pass="separate"``).

    The weak view is drawn once per clip. With ``rule.mc`` the stages before the first stochastic
    one run once and the rest ``rule.passes`` times in one batch, each pass with its own draw of the
    stochastic layers (:func:`vipann.layers.mc_sampling`); without it the network makes one
    deterministic pass.
    """
    was_training = model.training
    model.eval()
    try:
        x = weak(_normalise(model, logmel), generator)
        if not rule.mc:
            return model.run_stages(x)[None]
        split = model.first_stochastic_stage()
        shared = model.run_stages(x, 0, split)
        stacked = shared.repeat(rule.passes, *([1] * (shared.dim() - 1)))  # group-major copies
        with mc_sampling(model, generator=generator, num_draws=rule.passes):
            return model.run_stages(stacked, split).reshape(rule.passes, len(x), -1)
    finally:
        model.train(was_training)


@dataclass
class _Views:
    """The views of one step's normalised inputs: weak labelled clips, then (joint) weak copies and strong views."""

    weak: WeakAugment
    strong: StrongAugment
    generator: torch.Generator
    n_labelled: int
    weak_copies: int
    semi: bool

    def __call__(self, x: Tensor) -> Tensor:
        if not self.semi:
            return self.weak(x, self.generator)
        labelled, unlabelled = x[: self.n_labelled], x[self.n_labelled :]
        parts = [self.weak(labelled, self.generator)]
        if self.weak_copies:
            parts.append(self.weak(unlabelled, self.generator).repeat(self.weak_copies, 1, 1, 1))  # group-major
        parts.append(self.strong(unlabelled, self.generator))
        return torch.cat(parts)


def index_stream(num_items: int, length: int, seed: int) -> Tensor:
    """``length`` indices from consecutive seeded permutations of ``range(num_items)`` (every item once per pass)."""
    g = torch.Generator().manual_seed(int(seed) % 2**62)
    parts, total = [], 0
    while total < length:
        parts.append(torch.randperm(num_items, generator=g))
        total += num_items
    return torch.cat(parts)[:length] if parts else torch.empty(0, dtype=torch.long)


def _seed(*parts: int) -> int:
    value = 0
    for p in parts:
        value = (value * 1_000_003 + int(p) + 7919) % 2**61
    return value


def train_run(
    model: PANN,
    data: RunData,
    rule: PseudoLabelRule | None,
    config: Any,
    ctx: DistContext,
    *,
    seed: int,
    checkpoint_dir: Path,
    epochs_csv: Path,
    title: str,
) -> list[dict[str, Any]]:
    """Train ``model`` in place with FixMatch (``rule`` given) or supervised (``rule=None``).

    Args:
        model: The network, on ``ctx.device``.
        data: The run's log-mels, targets and pool.
        rule: The pseudo-label rule, or None for a supervised baseline.
        config: The run's :class:`~vipann.recipes.fixmatch.FixMatchConfig`.
        ctx: Distributed context (every process takes its own ``B`` + ``mu B`` clips per step).
        seed: Seed of this run (batch order, augmentations, Monte-Carlo draws, dropout).
        checkpoint_dir: The rolling checkpoint.
        epochs_csv: Where the per-epoch record is written (rank 0).
        title: Progress label.

    Returns:
        One record per epoch (:data:`EPOCH_COLUMNS`).

    Raises:
        ValueError: If a checkpoint of other settings is found, or a semi-supervised method has no
            unlabelled clip.
    """
    semi = rule is not None
    if semi and len(data.unlabelled) == 0:
        raise ValueError(f"{title}: no unlabelled clip is left; lower labelled_fraction / labelled_per_class")
    weak, strong = config.weak_augment(), config.strong_augment()
    joint = semi and config.weak_pass == "joint"
    passes = rule.num_passes if rule is not None else 0
    b, bu = config.batch_size, config.mu * config.batch_size if semi else 0
    steps, world = config.iterations_per_epoch, ctx.world_size
    loss_config = LossConfig(kl_reduction=config.kl_reduction)
    model.to(ctx.device).train()
    net = ctx.wrap(ViewNet(model))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    signature = {
        "epochs": config.epochs,
        "steps": steps,
        "batch": [b, bu, world],
        "lr": config.lr,
        "seed": seed,
        "rule": repr(rule),
        "weak_pass": config.weak_pass if semi else None,
    }
    history: list[dict[str, Any]] = []
    start = 0
    if config.resume and (checkpoint_dir / "state.json").is_file():
        state = load_state(checkpoint_dir, map_location=ctx.device)
        if state["signature"] != signature:
            raise ValueError(
                f"checkpoint {checkpoint_dir} was written with other settings ({state['signature']} vs "
                f"{signature}); use another output directory or drop --resume"
            )
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        restore_rng_state(state["rng"])
        history, start = list(state["history"]), int(state["epoch"])
        logger.info("resumed %s at epoch %d/%d from %s", title, start, config.epochs, checkpoint_dir)
    else:
        torch.manual_seed(_seed(seed, ctx.rank))
    use_amp = config.amp and ctx.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    bar = None
    if config.progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs * steps, initial=start * steps, desc=title, unit="step", leave=False)
    for epoch in range(start, config.epochs):
        model.train()
        lab = index_stream(len(data.labelled), steps * world * b, _seed(seed, epoch, 1))
        unl = index_stream(len(data.unlabelled), steps * world * bu, _seed(seed, epoch, 2)) if semi else None
        sums = torch.zeros(5, dtype=torch.float64)  # loss, labelled, unlabelled, kl, accuracy
        stats = PseudoLabelStats()
        for step in range(steps):
            gen = torch.Generator(device=ctx.device).manual_seed(_seed(seed, epoch, step, ctx.rank, 3))
            li = lab[(step * world + ctx.rank) * b :][:b]
            xl, yl = data.labelled[li].to(ctx.device), data.targets[li].to(ctx.device)
            if semi:
                ui = unl[(step * world + ctx.rank) * bu :][:bu]
                xu = data.unlabelled[ui].to(ctx.device)
                if not joint:
                    zw = weak_logits(model, xu, rule, weak, gen)

                inputs = torch.cat([xl, xu])
            else:
                inputs = xl
            views = _Views(weak, strong, gen, len(li), passes if joint else 0, semi)
            with torch.autocast(ctx.device.type, enabled=use_amp):
                logits = net(inputs, views).float()
            zl = logits[: len(li)]
            loss, data_term, kl = elbo_loss(zl, yl, model, len(data.labelled), multilabel=False, config=loss_config)
            unlabelled_loss = torch.zeros((), device=ctx.device)
            if semi:
                if joint:
                    zw = logits[len(li) : len(li) + passes * bu].detach().reshape(passes, bu, -1)
                zs = logits[len(li) + (passes * bu if joint else 0) :]
                mask, labels = rule.select(zw.float())
                stats.add(mask, labels, data.truth[ui].to(ctx.device))
                unlabelled_loss = (F.cross_entropy(zs, labels, reduction="none") * mask.float()).mean()
                loss = loss + config.unlabelled_weight * unlabelled_loss
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            accuracy = float((zl.detach().argmax(-1) == yl).float().mean())
            sums += torch.tensor(
                [
                    float(loss.detach()),
                    float(data_term.detach()),
                    float(unlabelled_loss.detach()),
                    float(kl.detach()),
                    accuracy,
                ],
                dtype=torch.float64,
            )
            if bar is not None:
                bar.update(1)
                if semi and step % 10 == 0:
                    bar.set_postfix(loss=f"{float(loss):.3f}", quantity=f"{stats.quantity:.2f}")
        means = ctx.all_reduce_mean((sums / steps).to(ctx.device)).cpu()
        if ctx.distributed:
            total = stats.as_tensor().to(ctx.device) * world  # all_reduce_mean of counts times world = sum
            stats = PseudoLabelStats.from_tensor(ctx.all_reduce_mean(total).cpu())
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            **dict(zip(EPOCH_COLUMNS[1:6], (float(v) for v in means))),
            "candidates": stats.candidates,
            "selected": stats.selected,
            "scored": stats.scored,
            "correct": stats.correct,
            "quantity": stats.quantity if semi else float("nan"),
            "quality": stats.quality if semi else float("nan"),
        }
        history.append(record)
        if ctx.is_main:
            write_csv_atomic(epochs_csv, EPOCH_COLUMNS, [[r[k] for k in EPOCH_COLUMNS] for r in history])
            save_state(
                checkpoint_dir,
                {
                    "signature": signature,
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": capture_rng_state(),
                    "history": history,
                },
            )
        if semi:
            logger.info(
                "%s: epoch %d, loss %.4f, pseudo-labels: quantity %.3f, quality %.3f",
                title,
                epoch + 1,
                record["loss"],
                record["quantity"],
                record["quality"],
            )
        ctx.barrier()
    if bar is not None:
        bar.close()
    return history
