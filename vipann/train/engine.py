"""The training loop shared by the recipes: epochs of mini-batches, ELBO, atomic checkpoints, resume.

:func:`fit` trains for a number of epochs. After every epoch it writes a checkpoint (model,
optimizer, epoch, history and every RNG state) atomically, so ``resume=True`` continues a killed
run from its last finished epoch and ends with the same result as an uninterrupted run: the batch
order of epoch ``e`` is a function of ``(seed, e)`` only, and the RNG states that drive dropout,
Flipout draws and augmentation are restored exactly.

Models with an SNGP head (:func:`vipann.calibration.attach_sngp_head`) are handled here too: the
Gaussian-process precision is restarted at the start of every epoch, so the Laplace covariance is
that of the last epoch (as in SNGP), and under ``torchrun`` the per-process precisions are summed
once after the last epoch (:func:`vipann.calibration.all_reduce_sngp_precision`). Wrap such a model
with :func:`ddp_wrap`, which keeps DistributedDataParallel from overwriting the precision with rank
0's at every forward pass.

With ``FitConfig(ivon=IVONConfig(...))`` the optimizer is IVON (:class:`vipann.train.ivon.IVON`)
instead of Adam: every step averages the gradients of ``train_samples`` weight samples, under
``torchrun`` each process draws its own sample and computes its gradient without DDP's averaging, and
IVON averages the statistics over the processes. When the training ends the learnt posterior is stored
in every :class:`vipann.calibration.IVONModel` inside the trained module.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from vipann.calibration.sngp import RandomFeatureGP, all_reduce_sngp_precision, reset_sngp_precision
from vipann.train.distributed import DistContext
from vipann.train.ivon import IVON, IVONConfig, store_ivon_posterior
from vipann.train.losses import LossConfig, elbo_loss
from vipann.train.state import capture_rng_state, load_state, restore_rng_state, save_state
from vipann.utils.dirswap import recover_dir

__all__ = ["EpochResult", "FitConfig", "ddp_wrap", "fit", "iterate_tensors", "shuffled_batches"]

logger = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings of one training stage.

    Attributes:
        epochs: Number of epochs.
        lr: Learning rate (Adam's, or IVON's).
        weight_decay: Adam weight decay.
        betas: Adam betas.
        amsgrad: Use AMSGrad (PANNs' AudioSet training does).
        num_train: N in the ELBO's KL / N (default: the number of training examples).
        loss: Data term and KL options.
        grad_clip: Clip the gradient norm to this value (None: no clipping).
        amp: bfloat16/float16 autocast on CUDA (ignored on CPU).
        seed: Seed of the batch order and of the run's RNGs.
        desc: Progress-bar label.
        ivon: Train with IVON and these settings instead of Adam (``betas[0]`` is its momentum).
    """

    epochs: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    amsgrad: bool = False
    num_train: int | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    grad_clip: float | None = None
    amp: bool = False
    seed: int = 0
    desc: str = "train"
    ivon: IVONConfig | None = None


@dataclass
class EpochResult:
    """Mean loss terms and accuracy of one epoch (on this process's batches)."""

    epoch: int
    loss: float
    data: float
    kl: float
    accuracy: float


def shuffled_batches(
    num_items: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1
) -> list[Tensor]:
    """Index batches of one epoch: a permutation seeded by ``(seed, epoch)``, split across ranks.

    Every rank gets the same number of batches (the permutation is padded by wrapping around, like
    ``DistributedSampler``), so collective operations stay in step.

    Args:
        num_items: Dataset size.
        batch_size: Batch size per process.
        seed: Run seed.
        epoch: Epoch number.
        rank: This process's rank.
        world: Number of processes.

    Returns:
        A list of index tensors.
    """
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    order = torch.randperm(num_items, generator=g)
    per_rank = math.ceil(num_items / world)
    if per_rank * world > num_items:
        order = torch.cat([order, order[: per_rank * world - num_items]])
    mine = order[rank::world]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


def _accuracy(logits: Tensor, targets: Tensor, multilabel: bool) -> float:
    if multilabel:
        return float(((logits > 0) == (targets > 0.5)).float().mean())
    hard = targets.argmax(-1) if targets.dim() == 2 else targets
    return float((logits.argmax(-1) == hard).float().mean())


def fit(
    model: nn.Module,
    parameters: Iterable[nn.Parameter],
    batches: Callable[[int], Iterable[Batch]],
    config: FitConfig,
    *,
    multilabel: bool,
    num_train: int,
    forward: Callable[[nn.Module, Tensor], Tensor] | None = None,
    ctx: DistContext | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[EpochResult], None] | None = None,
) -> list[EpochResult]:
    """Train ``parameters`` of ``model`` for ``config.epochs`` epochs with Adam on the negative ELBO.

    Args:
        model: The model (possibly DDP-wrapped); put in ``train()`` mode.
        parameters: The parameters to optimise (e.g. only the head in a fixed-feature stage).
        batches: ``batches(epoch)`` yields this process's ``(inputs, targets)`` for that epoch;
            it must depend only on the epoch (see :func:`shuffled_batches`).
        config: Optimisation settings.
        multilabel: BCE on sigmoid outputs (True) or softmax cross-entropy (False).
        num_train: Number of training examples (the ELBO's N unless ``config.num_train``).
        forward: ``forward(model, inputs) -> logits`` (default: ``model(inputs)``).
        ctx: Distributed context (rank-0 writes checkpoints).
        checkpoint_dir: Where to keep the rolling checkpoint (None: no checkpoints).
        resume: Continue from the checkpoint in ``checkpoint_dir`` if there is one.
        progress: Show a tqdm bar with loss and accuracy (rank 0 only).
        on_epoch_end: Called with each finished epoch's result.

    Returns:
        The results of every epoch, including those done before a resume.

    Raises:
        ValueError: If the checkpoint belongs to a different stage configuration.
    """
    ctx = ctx or DistContext()
    forward = forward or (lambda m, x: m(x))
    params = [p for p in parameters if p.requires_grad]
    n_train = config.num_train or num_train
    optimizer = _optimizer(params, config, n_train, ctx)
    history: list[EpochResult] = []
    start = 0
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    module = getattr(model, "module", model)
    signature = {"epochs": config.epochs, "lr": config.lr, "seed": config.seed, "params": len(params)}
    if resume and ckpt is not None:
        recover_dir(ckpt.absolute())  # a checkpoint save killed between its two renames is finished first
    if config.ivon is not None:
        signature["optimizer"] = "ivon"
    if resume and ckpt is not None and (ckpt / "state.json").is_file():
        state = load_state(ckpt, map_location=ctx.device)
        if state["signature"] != signature:
            raise ValueError(
                f"checkpoint {ckpt} was written by a different stage ({state['signature']} vs {signature}); "
                "use another output directory or drop --resume"
            )
        module.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        restore_rng_state(state["rng"])
        history = [EpochResult(**h) for h in state["history"]]
        start = int(state["epoch"])
        logger.info("resumed %s at epoch %d/%d from %s", config.desc, start, config.epochs, ckpt)
    else:
        torch.manual_seed(config.seed + ctx.rank)
    use_amp = config.amp and ctx.device.type == "cuda" and config.ivon is None
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    bar = None
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, initial=start, desc=config.desc, unit="epoch", leave=False)
    for epoch in range(start, config.epochs):
        model.train()
        reset_sngp_precision(module)  # SNGP: the precision accumulated in the last epoch is what remains
        sums = torch.zeros(4, dtype=torch.float64)
        count = 0
        for inputs, targets in batches(epoch):
            inputs, targets = inputs.to(ctx.device), targets.to(ctx.device)
            if isinstance(optimizer, IVON):
                logits, loss, data, kl = _ivon_step(
                    model, optimizer, forward, inputs, targets, n_train, multilabel, config
                )
                sums += torch.tensor(
                    [float(loss), float(data), float(kl), _accuracy(logits, targets, multilabel)], dtype=torch.float64
                )
                count += 1
                continue
            with torch.autocast(ctx.device.type, enabled=use_amp):
                logits = forward(model, inputs)
            loss, data, kl = elbo_loss(
                logits.float(), targets, model, n_train, multilabel=multilabel, config=config.loss
            )
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            sums += torch.tensor(
                [
                    float(loss.detach()),
                    float(data.detach()),
                    float(kl.detach()),
                    _accuracy(logits.detach(), targets, multilabel),
                ],
                dtype=torch.float64,
            )
            count += 1
        means = ctx.all_reduce_mean((sums / max(count, 1)).to(ctx.device)).cpu()
        result = EpochResult(epoch + 1, *(float(v) for v in means))
        history.append(result)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{result.loss:.4f}", acc=f"{result.accuracy:.3f}")
        if ckpt is not None and ctx.is_main:
            save_state(
                ckpt,
                {
                    "signature": signature,
                    "epoch": epoch + 1,
                    "model": module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": capture_rng_state(),
                    "history": [h.__dict__ for h in history],
                },
            )
        ctx.barrier()
        if on_epoch_end is not None:
            on_epoch_end(result)
    if bar is not None:
        bar.close()
    if ctx.distributed:
        all_reduce_sngp_precision(module)  # each process holds the precision of its own shard
    if isinstance(optimizer, IVON):
        store_ivon_posterior(module, optimizer)
    return history


def _optimizer(params: list[nn.Parameter], config: FitConfig, n_train: int, ctx: DistContext) -> torch.optim.Optimizer:
    if config.ivon is None:
        return torch.optim.Adam(
            params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay, amsgrad=config.amsgrad
        )
    settings = config.ivon
    return IVON(
        params,
        lr=config.lr,
        ess=settings.ess or float(n_train),
        hess_init=settings.hess_init,
        beta1=config.betas[0],
        beta2=settings.beta2,
        weight_decay=settings.weight_decay,
        mc_samples=settings.train_samples,
        clip_radius=settings.clip_radius,
        sync=ctx.distributed,
    )


def _ivon_step(
    model: nn.Module,
    optimizer: IVON,
    forward: Callable[[nn.Module, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    n_train: int,
    multilabel: bool,
    config: FitConfig,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One IVON step: the gradients of ``train_samples`` weight samples, then the update."""
    # Under DDP every process keeps its own gradient (its own sample); IVON averages the statistics.
    no_sync = getattr(model, "no_sync", None)
    results = []
    for _ in range(optimizer.mc_samples):
        with optimizer.sampled_params(train=True), no_sync() if callable(no_sync) else contextlib.nullcontext():
            logits = forward(model, inputs)
            loss, data, kl = elbo_loss(
                logits.float(), targets, model, n_train, multilabel=multilabel, config=config.loss
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(
                    [p for g in optimizer.param_groups for p in g["params"]], config.grad_clip
                )
        results.append((logits.detach(), loss.detach(), data.detach(), kl.detach()))
    optimizer.step()
    logits, loss, data, kl = results[-1]
    mean = [torch.stack([r[i] for r in results]).mean() for i in (1, 2, 3)]
    return logits, mean[0], mean[1], mean[2]


def ddp_wrap(ctx: DistContext, model: nn.Module) -> nn.Module:
    """``ctx.wrap(model)``, telling DistributedDataParallel not to broadcast SNGP precision buffers.

    DDP copies rank 0's buffers to every process before each forward pass; the precision of an SNGP
    head must instead accumulate every process's own batches (and is summed by :func:`fit` at the
    end). Other buffers (batch-norm statistics, spectral-norm vectors) are broadcast as usual.

    Args:
        ctx: Distributed context.
        model: The module to wrap.

    Returns:
        The DDP-wrapped module, or ``model`` itself in a single-process run.
    """
    if not ctx.distributed:
        return model
    ignore = [
        f"{name}.precision" if name else "precision"
        for name, module in model.named_modules()
        if isinstance(module, RandomFeatureGP)
    ]
    if ignore:
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
    return ctx.wrap(model)


def iterate_tensors(
    inputs: Tensor, targets: Tensor, batch_size: int, seed: int, ctx: DistContext | None = None
) -> Callable[[int], Iterator[Batch]]:
    """A ``batches(epoch)`` function over in-memory tensors (e.g. cached embeddings).

    Args:
        inputs: ``(N, ...)`` inputs.
        targets: ``(N, ...)`` targets.
        batch_size: Batch size per process.
        seed: Run seed.
        ctx: Distributed context.

    Returns:
        A callable for :func:`fit`.
    """
    ctx = ctx or DistContext()

    def batches(epoch: int) -> Iterator[Batch]:
        for index in shuffled_batches(len(inputs), batch_size, seed, epoch, ctx.rank, ctx.world_size):
            yield inputs[index], targets[index]

    return batches
