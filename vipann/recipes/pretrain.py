"""The AudioSet pre-training recipe (VI-PANN Section 3.4): how the zoo's det, drop and flip models are made.

Step-based training on PANNs' packed HDF5 files (or a folder of audio with a CSV of multi-hot
labels), with the paper's settings as defaults: Adam (lr 1e-3, AMSGrad as PANNs), batch 32,
mixup (alpha 1.0), SpecAugment, BCE on sigmoid outputs; ``drop`` with dropout 0.2 (conv) / 0.5
(linear); ``flip`` initialised from a ``det`` checkpoint by MOPED (delta 0.5) and trained on the
ELBO with KL / N_train. Balanced (PANNs) or random sampling, both resumable. A rolling checkpoint
(model, optimizer, sampler, every RNG) is written atomically every ``checkpoint_every`` steps and
``resume`` continues exactly. Under ``torchrun`` each process trains on its own sampled batches
with DistributedDataParallel and evaluation is sharded. The end of a run evaluates on the eval
split (macro mAP, AUC, d-prime; the multi-label uncertainty decomposition; mAP retention curves
with 95 % CIs; ID-vs-OOD box plots) and writes the model in the zoo layout, metrics included.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from vipann.evaluation import evaluate_runs, write_evaluation
from vipann.models.augment import Mixup, do_mixup
from vipann.models.pann import PANN
from vipann.recipes.config import prepare_run_dir, save_config
from vipann.train.distributed import DistContext, all_gather_rows, init_distributed
from vipann.train.losses import LossConfig, elbo_loss
from vipann.train.samplers import BalancedSampler, RandomSampler
from vipann.train.state import capture_rng_state, load_state, restore_rng_state, save_state
from vipann.utils.atomic import write_json_atomic
from vipann.utils.dirswap import recover_dir

__all__ = ["PretrainConfig", "build_model", "load_training_data", "run_pretraining"]

logger = logging.getLogger("vipann.recipes.pretrain")


@dataclass
class PretrainConfig:
    """Settings of a pre-training run; the defaults are the paper's.

    Attributes:
        model: Registry name giving the architecture and method (``det-resnet54``, ``flip-resnet54``).
        init: Optional source of starting weights (registry name, ``local-dir:``, ``hf-hub:``); a
            ``det``/``drop`` source for a ``flip``/``detflip`` model is converted by MOPED.
        train: Training data: HDF5 files (comma-separated) or a folder with ``labels.csv``.
        eval: Evaluation data, same forms.
        labels_csv: Labels file of a folder source (relative to the folder).
        clip_seconds: Clip length (default: the HDF5 files' 10 s; a folder source's 10 s).
        class_names: Class names of a folder source (default: from its CSV).
        ood: Optional folder of out-of-distribution audio for the final box plots and AUROC.
        out: Output directory.
        steps: Optimizer steps.
        batch_size: Clips per step per process (after mixup).
        lr: Adam learning rate.
        amsgrad: AMSGrad (PANNs uses it).
        mixup_alpha: Mixup Beta parameter (0 disables mixup).
        spec_augment: SpecAugment in training (PANNs' widths: 64 frames, 8 mels; off for short clips).
        sampler: ``random`` (VI-PANN: no balancing) or ``balanced`` (PANNs' sampler).
        moped_delta: MOPED delta when ``init`` is deterministic and the model Bayesian.
        kl_reduction: ``mean`` (bayesian-torch, VI-PANN) or ``sum``.
        grad_accum: Micro-batches per optimizer step.
        eval_every: Steps between quick evaluations (mean prediction mAP); 0 disables.
        checkpoint_every: Steps between checkpoints.
        num_samples: Monte-Carlo samples in the final evaluation.
        replications: Prediction runs for the retention-curve CIs.
        eval_batch_size: Clips per evaluation batch.
        num_workers: DataLoader workers.
        file_sample_rate: Sample rate stored in the HDF5 files.
        device: ``cpu``, ``cuda`` or empty (automatic).
        amp: bfloat16 autocast on CUDA.
        seed: Seed of everything random.
        resume: Continue from the checkpoint in ``out`` (refused when a setting that affects the
            results differs from the run's).
        overwrite: Delete a previous run in ``out`` and start over.
        progress: Progress bar.
    """

    model: str = "det-resnet54"
    init: str = ""
    train: str = ""
    eval: str = ""
    labels_csv: str = "labels.csv"
    clip_seconds: float = 0.0
    class_names: list[str] = field(default_factory=list)
    ood: str = ""
    out: str = "runs/pretrain"
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    amsgrad: bool = True
    mixup_alpha: float = 1.0
    spec_augment: bool = True
    sampler: str = "random"
    moped_delta: float = 0.5
    kl_reduction: str = "mean"
    grad_accum: int = 1
    eval_every: int = 0
    checkpoint_every: int = 1000
    num_samples: int = 30
    replications: int = 20
    eval_batch_size: int = 16
    num_workers: int = 0
    file_sample_rate: int = 32000
    device: str = ""
    amp: bool = False
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    #: ``resume`` may train a run for more steps than it was started with (never fewer).
    RESUME_MAY_INCREASE: ClassVar[tuple[str, ...]] = ("steps",)

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError("train is required: PANNs HDF5 files or a folder with labels.csv (--train ...)")
        if self.sampler not in ("balanced", "random"):
            raise ValueError(f"sampler must be 'balanced' or 'random', got {self.sampler!r}")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "num_samples", "replications"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.mixup_alpha < 0:
            raise ValueError("mixup_alpha must be >= 0")


def load_training_data(
    source: str, config: PretrainConfig, sample_rate: int, num_classes: int | None, labels: tuple[str, ...] = ()
):
    """An HDF5 split (``a.h5,b.h5``) or a folder with a CSV of multi-hot labels, as a dataset.

    A folder's class order is ``config.class_names``, else ``labels`` (the model entry's label set,
    so outputs line up with its metadata), else the order :class:`AudioFolder` derives.
    """
    from vipann.datasets import AudioFolder
    from vipann.datasets.hdf5 import AudioSetHDF5

    paths = [p for p in source.split(",") if p]
    if all(p.endswith((".h5", ".hdf5")) for p in paths):
        return AudioSetHDF5(
            paths,
            sample_rate=sample_rate,
            file_sample_rate=config.file_sample_rate,
            num_classes=num_classes,
            clip_seconds=config.clip_seconds or None,
        )
    if len(paths) != 1 or not Path(paths[0]).is_dir():
        raise ValueError(f"{source!r} is neither HDF5 files (*.h5) nor a folder with {config.labels_csv}")
    dataset = AudioFolder(
        paths[0],
        config.labels_csv,
        multilabel=True,
        sample_rate=sample_rate,
        class_names=config.class_names or (list(labels) if labels else None),
        clip_seconds=config.clip_seconds or 10.0,
    )
    if num_classes is not None and dataset.num_classes != num_classes:
        raise ValueError(f"{source} has {dataset.num_classes} classes but the model has {num_classes}")
    return dataset.cache(progress=config.progress)


def build_model(config: PretrainConfig, num_classes: int, device: torch.device) -> PANN:
    """The model to train: fresh, or from ``init`` (converted by MOPED when the methods differ)."""
    from vipann.zoo.convert import moped
    from vipann.zoo.factory import create_model, from_pretrained
    from vipann.zoo.registry import split_model_name

    method, _, _ = split_model_name(config.model)
    torch.manual_seed(config.seed)
    if not config.init:
        return create_model(config.model, num_classes=num_classes, device=device, spec_augment=config.spec_augment)
    start = from_pretrained(config.init, device=device)
    if start.num_classes != num_classes:
        raise ValueError(f"init {config.init} has {start.num_classes} classes, the data {num_classes}")
    if start.method == method or (start.method, method) in (("det", "drop"), ("drop", "det")):
        model = create_model(config.model, num_classes=num_classes, device=device, spec_augment=config.spec_augment)
        model.load_state_dict(start.state_dict())
        return model
    if method in ("flip", "detflip") and start.method in ("det", "drop"):
        logger.info("MOPED (delta %.2f): %s -> %s", config.moped_delta, config.init, config.model)
        model = moped(start, method, delta=config.moped_delta)
        model.spec_augmenter = model.spec_augmenter if config.spec_augment else None
        model.pretrained_cfg = create_model(config.model, num_classes=num_classes, device="meta").pretrained_cfg
        return model.to(device)
    raise ValueError(f"cannot start a {method} model from a {start.method} checkpoint ({config.init})")


@torch.no_grad()
def _predict_split(model: PANN, dataset, ctx: DistContext, batch: int, samples: int, generator) -> torch.Tensor:
    """``(S, N, C)`` sigmoid probabilities on a split, sharded across processes."""
    from vipann.inference.predict import predict

    mine = list(range(ctx.rank, len(dataset), ctx.world_size))
    parts = []
    for i in range(0, len(mine), batch):
        waves = torch.stack([dataset.load_waveform(j) for j in mine[i : i + batch]])
        parts.append(
            predict(
                model,
                waves,
                num_samples=samples,
                device=ctx.device,
                generator=generator,
                multilabel=True,
                window_seconds=waves.shape[-1] / model.sample_rate,
            ).probs
        )
    local = torch.cat(parts, dim=1) if parts else torch.empty(samples, 0, model.num_classes, device=ctx.device)
    gathered = all_gather_rows(ctx, local.transpose(0, 1).contiguous())
    order = torch.cat([torch.arange(r, len(dataset), ctx.world_size) for r in range(ctx.world_size)])
    out = torch.empty_like(gathered)
    out[order.to(gathered.device)] = gathered
    return out.transpose(0, 1).cpu()


def _loader(dataset, sampler, config: PretrainConfig):
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=config.num_workers,
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG untouched
        persistent_workers=False,
        pin_memory=False,
    )


def run_pretraining(config: PretrainConfig, ctx: DistContext | None = None) -> dict[str, Any]:
    """Train, checkpoint, evaluate and export one model.

    Args:
        config: The run's settings.
        ctx: Distributed context (default: from the environment, on ``config.device``).

    Returns:
        The final evaluation scalars (rank 0; an empty dict on other ranks).

    Raises:
        ValueError: For invalid settings or data (wrong target width, empty split, ...).
        vipann.datasets.hdf5.HDF5FormatError: For corrupt or truncated HDF5 files.
    """
    ctx = ctx or init_distributed(config.device or None)
    out = prepare_run_dir(config, "pretrain", check_only=not ctx.is_main)
    if ctx.is_main:
        save_config(config, out / "config.yaml")
    from vipann.zoo.registry import get_pretrained_cfg

    arch_cfg = get_pretrained_cfg(config.model)
    sample_rate = arch_cfg.sample_rate
    known = arch_cfg.labels if arch_cfg.label_set is not None else ()
    train = load_training_data(config.train, config, sample_rate, None, known)
    num_classes = train.num_classes
    model = build_model(config, num_classes, ctx.device)
    evalset = load_training_data(config.eval, config, sample_rate, num_classes, known) if config.eval else None
    labels = tuple(getattr(train, "class_names", ()) or ())
    mixing = config.mixup_alpha > 0
    per_step = config.batch_size * (2 if mixing else 1)
    sampler_seed = config.seed * 1000 + ctx.rank
    if config.sampler == "balanced":
        sampler = BalancedSampler(train.targets, per_step, seed=sampler_seed)
    else:
        sampler = RandomSampler(len(train), per_step, seed=sampler_seed)
    wrapped = ctx.wrap(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999), eps=1e-8, amsgrad=config.amsgrad)
    loss_config = LossConfig(kl_reduction=config.kl_reduction)
    mixup = Mixup(config.mixup_alpha) if mixing else None
    ckpt = out / "checkpoint"
    step, history = 0, []
    if config.resume:
        recover_dir(ckpt.absolute())  # a checkpoint save killed between its two renames is finished first
    if config.resume and (ckpt / "state.json").is_file():
        state = load_state(ckpt, map_location=ctx.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"][ctx.rank] if ctx.distributed else state["sampler"][0])
        restore_rng_state(state["rng"])
        step, history = int(state["step"]), list(state["history"])
        logger.info("resumed at step %d/%d from %s", step, config.steps, ckpt)
    else:
        torch.manual_seed(config.seed + ctx.rank)
    consumed = sampler.batches
    batches = iter(_loader(train, sampler, config))
    use_amp = config.amp and ctx.device.type == "cuda"
    bar = None
    if config.progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=step, desc=f"pretrain {config.model}", unit="step")
    started, seen = time.perf_counter(), 0
    while step < config.steps:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(config.grad_accum):
            waves, targets = next(batches)
            consumed += 1
            waves, targets = waves.to(ctx.device), targets.to(ctx.device)
            lam = mixup.lambdas(len(waves), device=ctx.device) if mixup is not None else None
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = wrapped(waves, lam)
            if lam is not None:
                targets = do_mixup(targets, lam)
            loss, _, _ = elbo_loss(logits.float(), targets, wrapped, len(train), multilabel=True, config=loss_config)
            (loss / config.grad_accum).backward()
            total += float(loss.detach()) / config.grad_accum
            seen += len(waves)
        optimizer.step()
        step += 1
        history.append({"step": step, "loss": total})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4f}")
        if config.eval_every and evalset is not None and step % config.eval_every == 0:
            probs = _predict_split(model, evalset, ctx, config.eval_batch_size, 1, None)
            if ctx.is_main:
                from vipann.metrics import mean_average_precision

                history[-1]["eval_mAP"] = float(mean_average_precision(probs[0], evalset.targets))
                logger.info("step %d: loss %.4f, eval mAP %.4f", step, total, history[-1]["eval_mAP"])
        if step % config.checkpoint_every == 0 or step == config.steps:
            states = [sampler.state_after(consumed)]
            if ctx.distributed:
                import torch.distributed as dist

                gathered: list[Any] = [None] * ctx.world_size
                dist.all_gather_object(gathered, states[0])
                states = gathered
            if ctx.is_main:
                save_state(
                    ckpt,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "step": step,
                        "sampler": states,
                        "rng": capture_rng_state(),
                        "history": history,
                        "config": dataclasses.asdict(config),
                    },
                )
            ctx.barrier()
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - started
    if ctx.is_main and seen:
        logger.info("trained %d clips in %.1f s (%.1f clips/s per process)", seen, elapsed, seen / max(elapsed, 1e-9))
    return _finish(model, config, ctx, evalset, labels, history, out)


def _finish(model: PANN, config: PretrainConfig, ctx: DistContext, evalset, labels, history, out: Path) -> dict:
    from vipann.zoo.serialization import save_pretrained

    scalars: dict[str, Any] = {}
    if evalset is not None:
        samples = 1 if model.method == "det" else config.num_samples
        runs = 1 if model.method == "det" else config.replications
        probs = torch.stack(
            [
                _predict_split(
                    model,
                    evalset,
                    ctx,
                    config.eval_batch_size,
                    samples,
                    torch.Generator(device=ctx.device).manual_seed(config.seed * 31 + r),
                )
                for r in range(runs)
            ]
        )
        ood_probs = None
        if config.ood:
            from vipann.datasets import UnlabelledFolder

            ood = UnlabelledFolder(config.ood, sample_rate=model.sample_rate, clip_seconds=evalset.clip_seconds)
            ood_probs = _predict_split(
                model,
                ood,
                ctx,
                config.eval_batch_size,
                samples,
                torch.Generator(device=ctx.device).manual_seed(config.seed * 37),
            )[None]
        if ctx.is_main:
            evaluation = evaluate_runs(probs, evalset.targets, multilabel=True, ood_probs=ood_probs)
            write_evaluation(
                evaluation,
                out / "evaluation",
                probs=probs,
                targets=evalset.targets,
                ood_probs=ood_probs,
                title=config.model,
            )
            scalars = evaluation.scalars
    if ctx.is_main:
        write_json_atomic(out / "history.json", history)
        cfg = model.pretrained_cfg.with_classes(model.num_classes, labels or None)
        keep = ("mAP", "AUC", "d_prime", "ECE", "NLL", "Brier", "mean_entropy", "mean_epistemic", "mean_aleatoric")
        metrics = {k: float(v) for k, v in scalars.items() if k in keep and not math.isnan(float(v))}
        if metrics:
            metrics["num_samples"] = float(1 if model.method == "det" else config.num_samples)
        model.pretrained_cfg = dataclasses.replace(
            cfg,
            metrics={"eval": metrics} if metrics else {},
            metrics_source=f"vipann pretrain recipe ({out})",
            provenance=f"vipann pre-training recipe: {config.steps} steps on {config.train}"
            + (f", initialised from {config.init}" if config.init else ""),
        )
        save_pretrained(model, out / "model", overwrite=True)
    ctx.barrier()
    return scalars
