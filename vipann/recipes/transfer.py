"""The transfer-learning recipe (VI-PANN Section 3.5, Tables 4-5) as one function, :func:`run_transfer`.

For every requested strategy and every test fold: build the model from the backbone, train the
head on cached features (*fixed-feature*), evaluate, train everything with the learning rate
divided by 10 (*fine-tuned*), evaluate. Every stage writes its results under
``OUT/<strategy>/fold<k>/<stage>/`` (``metrics.json``, ``retention.csv``, PNG figures,
``predictions.safetensors`` with every Monte-Carlo sample, ``model.safetensors``), training keeps a
rolling checkpoint per stage, and ``resume=True`` skips finished stages and continues an
unfinished one exactly. The cross-fold summary (``summary.csv``, ``summary.md``, Table 4 layout) is
rewritten after every stage. Under ``torchrun`` the training batches and the evaluation clips are
sharded over the processes and rank 0 writes every file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from vipann.datasets import ClipDataset, get_dataset
from vipann.evaluation import evaluate_runs, write_evaluation, write_json_atomic
from vipann.models.pann import PANN
from vipann.recipes.config import save_config
from vipann.sampling import predict
from vipann.train.distributed import DistContext, all_gather_rows
from vipann.train.engine import FitConfig, fit, shuffled_batches
from vipann.train.losses import LossConfig
from vipann.train.transfer import STRATEGIES, build_transfer_model, extract_features, head_parameters

__all__ = ["TransferConfig", "backbone_name", "load_backbone", "run_transfer"]

logger = logging.getLogger("vipann.recipes.transfer")

STAGES = ("fixed", "finetuned")


@dataclass
class TransferConfig:
    """Settings of a transfer-learning run; the defaults reproduce the paper.

    Attributes:
        dataset: ``esc50``, ``urbansound8k``, ``dcase2013`` or ``folder``.
        data_root: The dataset folder as distributed.
        out: Output directory.
        model: Backbone: a registry name or source (``local-dir:...``, ``hf-hub:...``). A registry
            architecture without weights (e.g. ``flip-tiny``) starts from random weights (logged).
        strategies: Strategies to run (``flip``, ``detflip``, ``drop``, ``det``).
        from_scratch: Train the same networks from random weights (paper Table 5).
        folds: Test folds (default: every fold of the dataset).
        clip_seconds: Clip length (default: the dataset's: ESC-50 5, UrbanSound8K 4, DCASE2013 30).
        fixed_epochs: Epochs of the fixed-feature stage.
        finetune_epochs: Epochs of the fine-tuned stage.
        lr: Learning rate of the fixed-feature stage (the fine-tuned stage uses lr / 10).
        finetune_lr_factor: Divisor of the fine-tuned learning rate.
        batch_size: Batch size (per process).
        feature_draws: Cached Monte-Carlo feature draws per clip for a stochastic frozen backbone.
        moped_delta: MOPED delta (Det-Flip head, deterministic trunk into a Flipout strategy).
        head_dropout: MC-dropout rate of the Drop head.
        kl_reduction: ``mean`` (bayesian-torch / VI-PANN) or ``sum`` (full-sum ELBO).
        loss: ``ce`` or ``focal``.
        label_smoothing: Label smoothing of the data term.
        num_samples: Monte-Carlo samples per prediction (1 for Det).
        replications: Independent prediction runs for the retention-curve confidence intervals.
        eval_batch_size: Clips per prediction batch.
        ood_root: Optional folder of out-of-distribution audio (e.g. ShipsEar).
        on_error: ``raise`` or ``skip`` clips that are missing or unreadable.
        device: ``cpu``, ``cuda`` or empty for automatic.
        amp: Mixed precision on CUDA.
        seed: Seed of everything random.
        resume: Continue a killed run in ``out``.
        export: Save every trained model in the zoo layout (``save_pretrained``).
        cache_dir: Where decoded audio is cached (default: vipann's cache folder).
        progress: Progress bars.
    """

    dataset: str = "esc50"
    data_root: str = ""
    out: str = "runs/transfer"
    model: str = ""
    strategies: list[str] = field(default_factory=lambda: ["flip"])
    from_scratch: bool = False
    folds: list[int] = field(default_factory=list)
    clip_seconds: float = 0.0
    fixed_epochs: int = 200
    finetune_epochs: int = 200
    lr: float = 1e-3
    finetune_lr_factor: float = 10.0
    batch_size: int = 32
    feature_draws: int = 8
    moped_delta: float = 0.5
    head_dropout: float = 0.5
    kl_reduction: str = "mean"
    loss: str = "ce"
    label_smoothing: float = 0.0
    num_samples: int = 30
    replications: int = 20
    eval_batch_size: int = 16
    ood_root: str = ""
    on_error: str = "raise"
    device: str = ""
    amp: bool = False
    seed: int = 0
    resume: bool = False
    export: bool = False
    cache_dir: str = ""
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
        if not self.data_root:
            raise ValueError("data_root is required: the dataset folder as distributed (--data-root DIR)")
        for name in ("fixed_epochs", "finetune_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("batch_size", "num_samples", "replications", "feature_draws", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


def backbone_name(source: str, strategy: str) -> str:
    """The backbone a strategy starts from.

    With no source, the strategy's AudioSet backbone (``flip-resnet54``, ``det-resnet54``,
    ``drop-resnet54``). With a registry name, the same architecture in the strategy's backbone
    method (``--model flip-tiny`` gives ``det-tiny`` to the Det-Flip strategy), so one run can
    compare all strategies. Any other source (``local-dir:``, ``hf-hub:``) is used as it is.
    """
    from vipann._registry import is_model, split_model_name

    if not source:
        return STRATEGIES[strategy].backbone
    if not is_model(source):
        return source
    _, arch, tag = split_model_name(source)
    wanted = STRATEGIES[strategy].backbone.split("-", 1)[0]
    candidate = f"{wanted}-{arch}" + (f".{tag}" if tag else "")
    return candidate if is_model(candidate) else source


def load_backbone(source: str, strategy: str, device: torch.device) -> PANN:
    """The pretrained backbone of a strategy (see :func:`backbone_name`); weightless test architectures start random."""
    from vipann._registry import get_pretrained_cfg, is_model
    from vipann.factory import create_model, from_pretrained

    name = backbone_name(source, strategy)
    if is_model(name) and get_pretrained_cfg(name).weights == "none":
        logger.warning("%s has no pretrained weights: the backbone starts from a random initialisation", name)
        torch.manual_seed(0)
        return create_model(name, device=device)
    logger.info("%s strategy: backbone %s", strategy, name)
    return from_pretrained(name, device=device)


def _dataset(config: TransferConfig, sample_rate: int, out: Path, ctx: DistContext) -> ClipDataset:
    kwargs: dict[str, Any] = {"sample_rate": sample_rate, "on_error": config.on_error}
    if config.clip_seconds:
        kwargs["clip_seconds"] = config.clip_seconds
    dataset = get_dataset(config.dataset, config.data_root, **kwargs)
    dataset.cache(config.cache_dir or None, progress=config.progress)
    if dataset.skipped:
        logger.warning("skipped %d clips: %s", len(dataset.skipped), json.dumps(dataset.skipped))
        if ctx.is_main:
            write_json_atomic(out / "skipped.json", [list(item) for item in dataset.skipped])
    return dataset


def _tensors(dataset: ClipDataset) -> tuple[Tensor, Tensor]:
    waves = torch.stack([dataset.load_waveform(i) for i in range(len(dataset))])
    return waves, dataset.targets


class _HeadModule(nn.Module):
    """fc1 → classifier of a model as its own module, so DDP sees the head's forward."""

    def __init__(self, model: PANN) -> None:
        super().__init__()
        self.model = model

    def forward(self, pooled: Tensor) -> Tensor:
        return self.model.run_stages(pooled, len(self.model.trunk_names))


def _feature_batches(features: Tensor, targets: Tensor, config: TransferConfig, ctx: DistContext):
    def batches(epoch: int):
        g = torch.Generator().manual_seed(config.seed * 7919 + epoch)
        draw = torch.randint(features.shape[0], (features.shape[1],), generator=g)
        for index in shuffled_batches(
            features.shape[1], config.batch_size, config.seed, epoch, ctx.rank, ctx.world_size
        ):
            yield features[draw[index], index], targets[index]

    return batches


def _wave_batches(waves: Tensor, targets: Tensor, config: TransferConfig, ctx: DistContext):
    def batches(epoch: int):
        for index in shuffled_batches(len(waves), config.batch_size, config.seed, epoch, ctx.rank, ctx.world_size):
            yield waves[index], targets[index]

    return batches


def _predict_runs(model: PANN, waves: Tensor, config: TransferConfig, ctx: DistContext, salt: int) -> Tensor:
    """``(R, S, N, C)`` probabilities: R independent prediction runs, clips sharded over processes."""
    deterministic = model.method == "det"
    samples = 1 if deterministic else config.num_samples
    mine = torch.arange(ctx.rank, len(waves), ctx.world_size)
    runs = []
    for r in range(1 if deterministic else config.replications):  # det runs would be identical
        gen = torch.Generator(device=ctx.device).manual_seed(config.seed * 1_000_003 + salt * 1009 + r * 7 + ctx.rank)
        result = predict(
            model,
            waves[mine],
            num_samples=samples,
            batch_size=config.eval_batch_size,
            device=ctx.device,
            generator=gen,
            multilabel=model.pretrained_cfg.multilabel,
            window_seconds=waves.shape[-1] / model.sample_rate,
        )
        runs.append(result.probs)
    local = torch.stack(runs).permute(2, 0, 1, 3).contiguous()  # (n, R, S, C) for gathering by clip
    gathered = all_gather_rows(ctx, local)
    order = torch.cat([torch.arange(r, len(waves), ctx.world_size) for r in range(ctx.world_size)])
    out = torch.empty_like(gathered)
    out[order.to(gathered.device)] = gathered
    return out.permute(1, 2, 0, 3).cpu()


def _summarise(out: Path, config: TransferConfig) -> None:
    names = ["accuracy", "mAP", "ECE", "NLL", "Brier"]
    rows, lines = [], []
    for strategy in config.strategies:
        for stage in STAGES:
            found = sorted((out / strategy).glob(f"fold*/{stage}/metrics.json"))
            if not found:
                continue
            per_fold = [json.loads(p.read_text()) for p in found]
            row: dict[str, Any] = {"strategy": strategy, "stage": stage, "folds": len(per_fold)}
            for name in names:
                values = [m[name] for m in per_fold if name in m]
                if values:
                    t = torch.tensor(values, dtype=torch.float64)
                    row[f"{name}_mean"] = float(t.mean())
                    row[f"{name}_std"] = float(t.std()) if len(values) > 1 else 0.0
            rows.append(row)
    if not rows:
        return
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("strategy", "stage", "folds"), k))
    csv_lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]
    tmp = out / ".summary.csv.tmp"
    tmp.write_text("\n".join(csv_lines) + "\n")
    tmp.replace(out / "summary.csv")
    metric = "accuracy" if any("accuracy_mean" in r for r in rows) else "mAP"
    lines.append(
        f"# {config.dataset}: {metric} (mean ± std over folds){' — from scratch' if config.from_scratch else ''}"
    )
    lines.append("")
    lines.append("| strategy | Fixed | Fine-Tuned | ECE (fine-tuned) | NLL (fine-tuned) | Brier (fine-tuned) |")
    lines.append("|---|---|---|---|---|---|")

    def fmt(cell: dict[str, dict[str, Any]], stage: str, name: str) -> str:
        r = cell.get(stage)
        if r is None or f"{name}_mean" not in r:
            return "–"
        return f"{r[f'{name}_mean']:.3f} ± {r[f'{name}_std']:.3f}"

    for strategy in config.strategies:
        cell = {r["stage"]: r for r in rows if r["strategy"] == strategy}
        lines.append(
            f"| {strategy} | {fmt(cell, 'fixed', metric)} | {fmt(cell, 'finetuned', metric)} | "
            f"{fmt(cell, 'finetuned', 'ECE')} | {fmt(cell, 'finetuned', 'NLL')} | {fmt(cell, 'finetuned', 'Brier')} |"
        )
    tmp = out / ".summary.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out / "summary.md")


def _finish_stage(
    model: PANN,
    stage_dir: Path,
    test: tuple[Tensor, Tensor],
    ood: Tensor | None,
    config: TransferConfig,
    ctx: DistContext,
    salt: int,
    title: str,
    clip_ids: list[str],
) -> dict:
    waves, targets = test
    probs = _predict_runs(model, waves, config, ctx, salt)
    ood_probs = _predict_runs(model, ood, config, ctx, salt + 500) if ood is not None else None
    if not ctx.is_main:
        return {}
    multilabel = model.pretrained_cfg.multilabel
    evaluation = evaluate_runs(probs, targets, multilabel=multilabel, ood_probs=ood_probs)
    write_evaluation(
        evaluation, stage_dir, probs=probs, targets=targets, clip_ids=clip_ids, ood_probs=ood_probs, title=title
    )
    tmp = stage_dir / ".model.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp), {"format": "pt"})
    tmp.replace(stage_dir / "model.safetensors")
    if config.export:
        from vipann.serialization import save_pretrained

        model.pretrained_cfg = dataclasses.replace(
            model.pretrained_cfg,
            metrics={
                config.dataset: {
                    k: v for k, v in evaluation.scalars.items() if isinstance(v, float) and not math.isnan(v)
                }
            },
            metrics_source=f"vipann transfer recipe, {title}",
        )
        save_pretrained(model, stage_dir / "export", overwrite=True)
    return evaluation.scalars


def run_transfer(config: TransferConfig, ctx: DistContext | None = None) -> dict[str, dict[str, list[dict]]]:
    """Run the recipe (every strategy, fold and stage) and write every output.

    Args:
        config: The run's settings.
        ctx: Distributed context (default: single process on ``config.device``).

    Returns:
        ``{strategy: {stage: [metrics of each fold]}}`` on rank 0 (empty dicts elsewhere).

    Raises:
        ValueError: For invalid settings or data; vipann.datasets errors for missing/unreadable clips.
    """
    if ctx is None:
        from vipann.train.distributed import init_distributed

        ctx = init_distributed(config.device or None)
    out = Path(config.out)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    results: dict[str, dict[str, list[dict]]] = {}
    for strategy in config.strategies:
        backbone = load_backbone(config.model, strategy, ctx.device)
        dataset = _dataset(config, backbone.sample_rate, out, ctx)
        ood = None
        if config.ood_root:
            ood_set = get_dataset(
                "unlabelled",
                config.ood_root,
                sample_rate=backbone.sample_rate,
                clip_seconds=dataset.clip_seconds,
                on_error=config.on_error,
            )
            ood = _tensors(ood_set)[0]
        folds = config.folds or dataset.folds
        results[strategy] = {stage: [] for stage in STAGES}
        for fold in folds:
            train_set, test_set = dataset.split(fold)
            train, test = _tensors(train_set), _tensors(test_set)
            clip_ids = [r.clip_id for r in test_set.records]
            fold_dir = out / strategy / f"fold{fold}"
            model = build_transfer_model(
                strategy,
                backbone,
                dataset.num_classes,
                moped_delta=config.moped_delta,
                head_dropout=config.head_dropout,
                from_scratch=config.from_scratch,
                seed=config.seed + fold,
            )
            tag = config.dataset
            from vipann._registry import get_pretrained_cfg

            base_cfg = getattr(backbone, "pretrained_cfg", None) or get_pretrained_cfg(f"{model.method}-{model.arch}")
            model.pretrained_cfg = dataclasses.replace(
                base_cfg.with_classes(dataset.num_classes, dataset.class_names),
                name=f"{model.method}-{model.arch}.{tag}",
                method=model.method,
                tag=tag,
                multilabel=dataset.multilabel,
                clip_seconds=dataset.clip_seconds,
                weights="none",
                provenance=f"{strategy} transfer of {backbone_name(config.model, strategy)} to {tag}, fold {fold}",
                default_num_samples=1 if model.method == "det" else config.num_samples,
            )
            loss = LossConfig(
                kind=config.loss, label_smoothing=config.label_smoothing, kl_reduction=config.kl_reduction
            )
            for stage_index, stage in enumerate(STAGES):
                stage_dir = fold_dir / stage
                salt = fold * 10 + stage_index
                title = f"{strategy} {stage} fold {fold}"
                weights = stage_dir / "model.safetensors"
                if config.resume and weights.is_file() and (stage_dir / "metrics.json").is_file():
                    model.load_state_dict(load_file(str(weights), device=str(ctx.device)))
                    results[strategy][stage].append(json.loads((stage_dir / "metrics.json").read_text()))
                    logger.info("%s: finished earlier, skipped", title)
                    continue
                model.to(ctx.device)
                if stage == "fixed":
                    for p in model.parameters():
                        p.requires_grad_(False)
                    for p in head_parameters(model):
                        p.requires_grad_(True)
                    gen = torch.Generator(device=ctx.device).manual_seed(config.seed + fold)
                    feats = extract_features(
                        model,
                        train[0],
                        draws=config.feature_draws,
                        batch_size=config.eval_batch_size,
                        ctx=ctx,
                        generator=gen,
                        progress=config.progress,
                    )
                    head = ctx.wrap(_HeadModule(model))
                    fit(
                        head,
                        head_parameters(model),
                        _feature_batches(feats.cpu(), train[1], config, ctx),
                        FitConfig(
                            epochs=config.fixed_epochs,
                            lr=config.lr,
                            loss=loss,
                            seed=config.seed + fold,
                            desc=title,
                            amp=config.amp,
                        ),
                        multilabel=dataset.multilabel,
                        num_train=len(train[0]),
                        ctx=ctx,
                        checkpoint_dir=fold_dir / f".{stage}-checkpoint",
                        resume=config.resume,
                        progress=config.progress,
                    )
                else:
                    for p in model.parameters():
                        p.requires_grad_(True)
                    wrapped = ctx.wrap(model)
                    fit(
                        wrapped,
                        model.parameters(),
                        _wave_batches(*train, config, ctx),
                        FitConfig(
                            epochs=config.finetune_epochs,
                            lr=config.lr / config.finetune_lr_factor,
                            loss=loss,
                            seed=config.seed + fold + 100,
                            desc=title,
                            amp=config.amp,
                        ),
                        multilabel=dataset.multilabel,
                        num_train=len(train[0]),
                        ctx=ctx,
                        checkpoint_dir=fold_dir / f".{stage}-checkpoint",
                        resume=config.resume,
                        progress=config.progress,
                    )
                scalars = _finish_stage(model, stage_dir, test, ood, config, ctx, salt, title, clip_ids)
                if ctx.is_main:
                    results[strategy][stage].append(scalars)
                    logger.info(
                        "%s: %s",
                        title,
                        {k: round(v, 4) for k, v in scalars.items() if k in ("accuracy", "mAP", "ECE", "NLL", "Brier")},
                    )
                    _summarise(out, config)
                ctx.barrier()
    if ctx.is_main:
        write_json_atomic(out / "results.json", results)
    return results if ctx.is_main else {}
