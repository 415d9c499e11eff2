"""Semi-supervised training as paper 004 does it: FixMatch (FM) and FixMatch-Uncertainty (FMUC), :func:`run_fixmatch`.

Grollmisch, Cano, Lukashevich & Abeßer, "Uncertainty in semi-supervised audio classification: a
novel extension for FixMatch" (2023). Every training step holds ``B`` labelled and ``mu * B``
unlabelled clips (paper: 32 + 224, Adam 1e-3, 500 steps per epoch). The labelled clips are trained
with cross-entropy. Each unlabelled clip gets a weakly augmented view (random time and frequency
shifts of its log-mel input) that yields a pseudo-label, and a strongly augmented view (its own
shifts, sharpening, Gaussian noise; SpecAugment masking as an option) trained with cross-entropy
against that pseudo-label; the two losses are summed unweighted. The methods differ only in how the
weak view becomes a pseudo-label (:mod:`vipann.recipes.fixmatch_config` lists them):

* **FM**: one pass; the arg-max is kept when its softmax probability is ``>= 0.95``.
* **FMUC**: the weak view passes ``N = 5`` times through the network with MC dropout on; the softmax
  of the temperature-scaled logits (``T = 2``) gives a mean and standard deviation per class; the
  clip is kept when ``mean - std`` of its top class is ``>= 0.9``. The paper's variants (threshold
  0.95, UPS's two thresholds, ``T = 4``, no temperature, no MC dropout, FM at 0.99) are methods too.
* **supervised** (all training labels) and **labelled-only** baselines on the same splits.

For every test fold and repetition the training folds are split, stratified and seeded, into the
labelled clips (``labelled_fraction`` or ``labelled_per_class``) and the unlabelled pool; the pool's
labels are hidden from training and used only to score the pseudo-labels (quality) and the final
model (accuracy on the left-out unlabelled data). All methods of a repetition share the split and
the initial weights. Outputs under ``OUT``:

* ``<method>/fold<k>/rep<r>/``: ``epochs.csv`` (per epoch: losses, labelled accuracy, pseudo-label
  counts, quantity, quality), the evaluation of the test fold as the transfer recipe writes it
  (``metrics.json`` with ``unlabelled_accuracy`` and the pseudo-label scalars, ``retention.csv``,
  figures, ``predictions.safetensors``, ``model.safetensors``; ``export/`` with ``export``), and a
  rolling checkpoint; ``fold<k>/rep<r>/split.json``: which clips were labelled.
* ``pseudo_labels.csv`` and ``pseudo_labels.png`` (Fig. 2: quality and quantity per epoch),
  ``table1.{csv,md}`` (Table I: quality / quantity of every semi-supervised method),
  ``table2.{csv,md}`` (Table II: test and left-out accuracy, mean ± std over folds and repetitions),
  ``results.json``; rewritten after every finished run.

``resume=True`` skips finished runs and continues an unfinished one from its last epoch exactly.
Under ``torchrun`` every process takes its own ``B + mu B`` clips per step (gradients averaged by
DistributedDataParallel), the pseudo-label counts are summed over the processes, the evaluation is
sharded and rank 0 writes every file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vipann.datasets import ClipDataset, get_dataset
from vipann.models.pann import PANN
from vipann.recipes._fixmatch_report import write_report
from vipann.recipes._fixmatch_train import RunData, compute_logmel, train_run
from vipann.recipes._outputs import finish_stage, logit_runs, stage_done, to_probs
from vipann.recipes.config import prepare_run_dir, save_config
from vipann.recipes.fixmatch_config import METHODS, FixMatchConfig
from vipann.recipes.transfer import backbone_name, load_backbone
from vipann.train.distributed import DistContext
from vipann.train.transfer import build_transfer_model
from vipann.utils.atomic import write_json_atomic

__all__ = ["METHODS", "FixMatchConfig", "labelled_split", "run_fixmatch"]

logger = logging.getLogger("vipann.recipes.fixmatch")


def labelled_split(targets: Tensor, fraction: float, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """Which training clips keep their label: a stratified, seeded subset.

    Each class keeps ``per_class`` clips (all of them if it has fewer) or, with ``per_class = 0``,
    ``round(fraction * n_c)`` of its ``n_c`` clips and at least one.

    Args:
        targets: ``(N,)`` class indices of the training clips.
        fraction: Labelled fraction per class, in ``(0, 1]``.
        per_class: Labelled clips per class (0: use ``fraction``).
        seed: Seed of the choice.

    Returns:
        ``(labelled, unlabelled)`` sorted index tensors that partition ``range(N)``.
    """
    g = torch.Generator().manual_seed(int(seed))
    keep = []
    for c in torch.unique(targets).tolist():
        members = torch.nonzero(targets == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        k = per_class if per_class > 0 else max(1, round(fraction * len(members)))
        keep.append(members[: min(k, len(members))])
    labelled = torch.sort(torch.cat(keep)).values if keep else torch.empty(0, dtype=torch.long)
    mask = torch.ones(len(targets), dtype=torch.bool)
    mask[labelled] = False
    return labelled, torch.nonzero(mask).flatten()


def _dataset(config: FixMatchConfig, sample_rate: int, out: Path, ctx: DistContext) -> ClipDataset:
    kwargs: dict[str, Any] = {"sample_rate": sample_rate, "on_error": config.on_error}
    if config.clip_seconds:
        kwargs["clip_seconds"] = config.clip_seconds
    dataset = get_dataset(config.dataset, config.data_root, **kwargs)
    if dataset.multilabel:
        raise ValueError(
            f"FixMatch pseudo-labels one class per clip; {config.dataset} is multi-label. Use a single-label dataset"
        )
    dataset.cache(config.cache_dir or None, progress=config.progress)
    if dataset.skipped:
        logger.warning("skipped %d clips: %s", len(dataset.skipped), json.dumps(dataset.skipped))
        if ctx.is_main:
            write_json_atomic(out / "skipped.json", [list(item) for item in dataset.skipped])
    return dataset


def _waves(dataset: ClipDataset) -> Tensor:
    return torch.stack([dataset.load_waveform(i) for i in range(len(dataset))])


def _unlabelled_folder(config: FixMatchConfig, sample_rate: int, clip_seconds: float, path: str) -> Tensor | None:
    if not path:
        return None
    folder = get_dataset(
        "unlabelled", path, sample_rate=sample_rate, clip_seconds=clip_seconds, on_error=config.on_error
    )
    return _waves(folder)


def _make_model(backbone: PANN, dataset: ClipDataset, config: FixMatchConfig, seed: int, fold: int) -> PANN:
    from vipann.zoo.registry import get_pretrained_cfg

    model = build_transfer_model(
        config.strategy,
        backbone,
        dataset.num_classes,
        moped_delta=config.moped_delta,
        head_dropout=config.head_dropout,
        from_scratch=config.from_scratch,
        seed=seed,
    )
    base_cfg = getattr(backbone, "pretrained_cfg", None) or get_pretrained_cfg(f"{model.method}-{model.arch}")
    model.pretrained_cfg = dataclasses.replace(
        base_cfg.with_classes(dataset.num_classes, dataset.class_names),
        name=f"{model.method}-{model.arch}.{config.dataset}",
        method=model.method,
        tag=config.dataset,
        multilabel=False,
        clip_seconds=dataset.clip_seconds,
        weights="none",
        provenance=f"FixMatch recipe ({config.strategy} strategy) from {backbone_name(config.model, config.strategy)} "
        f"on {config.dataset}, test fold {fold}",
        default_num_samples=1 if model.method == "det" else config.num_samples,
        temperature=None,
    )
    return model


def _accuracy(model: PANN, waves: Tensor, truth: Tensor, config: FixMatchConfig, ctx: DistContext, salt: int) -> float:
    """Accuracy of the mean Monte-Carlo prediction on clips with known labels (mean over runs); all ranks call it."""
    if len(waves) == 0:
        return float("nan")
    probs = to_probs(logit_runs(model, waves, config, ctx, salt), False).mean(1)  # (R, N, C)
    return float((probs.argmax(-1) == truth[None]).float().mean())


def run_fixmatch(config: FixMatchConfig, ctx: DistContext | None = None) -> dict[str, list[dict]]:
    """Run every method on every test fold and repetition, and write every output.

    Args:
        config: The run's settings.
        ctx: Distributed context (default: single process on ``config.device``).

    Returns:
        ``{method: [metrics of each fold and repetition]}`` on rank 0 (empty elsewhere).

    Raises:
        ValueError: For invalid settings or data (a multi-label dataset, a method without unlabelled
            clips); vipann.datasets errors for missing or unreadable clips.
    """
    if ctx is None:
        from vipann.train.distributed import init_distributed

        ctx = init_distributed(config.device or None)
    # A new, empty or earlier fixmatch run's folder only; a resume with other settings is refused.
    out = prepare_run_dir(config, "fixmatch", check_only=not ctx.is_main)
    if ctx.is_main:
        save_config(config, out / "config.yaml")
    backbone = load_backbone(config.model, config.strategy, ctx.device)
    dataset = _dataset(config, backbone.sample_rate, out, ctx)
    rate, seconds = backbone.sample_rate, dataset.clip_seconds
    ood = _unlabelled_folder(config, rate, seconds, config.ood_root)
    extra = _unlabelled_folder(config, rate, seconds, config.unlabelled_root)
    extra_logmel = compute_logmel(backbone, extra, ctx.device) if extra is not None else None
    results: dict[str, list[dict]] = {m: [] for m in config.methods}
    for fold in config.folds or dataset.folds:
        train_set, test_set = dataset.split(fold)
        waves, targets = _waves(train_set), train_set.targets.long()
        test = (_waves(test_set), test_set.targets)
        logmel = compute_logmel(backbone, waves, ctx.device)
        clip_ids = [r.clip_id for r in test_set.records]
        for rep in range(config.repetitions):
            seed = config.seed * 1009 + fold * 101 + rep
            labelled, pool = labelled_split(targets, config.labelled_fraction, config.labelled_per_class, seed)
            split = {
                "fold": fold,
                "repetition": rep,
                "seed": seed,
                "labelled": [train_set.records[i].clip_id for i in labelled.tolist()],
                "unlabelled": [train_set.records[i].clip_id for i in pool.tolist()],
            }
            split_path = out / f"fold{fold}" / f"rep{rep}" / "split.json"
            if config.resume and split_path.is_file() and json.loads(split_path.read_text()) != split:
                raise ValueError(
                    f"{split_path} holds another labelled/unlabelled split than these settings make (labelled "
                    "fraction, seed or data changed); resume with the original settings or use another output directory"
                )
            if ctx.is_main:
                write_json_atomic(split_path, split)
            logger.info("fold %d, repetition %d: %d labelled, %d unlabelled clips", fold, rep, len(labelled), len(pool))
            for method in config.methods:
                scalars = _run(
                    method, fold, rep, seed, backbone, dataset, config, ctx, out, logmel, waves, targets,
                    labelled, pool, extra_logmel, test, ood, clip_ids,
                )  # fmt: skip
                results[method].append(scalars)
                if ctx.is_main:
                    write_report(out, config)
                ctx.barrier()
    if ctx.is_main:
        write_json_atomic(out / "results.json", results)
    return results if ctx.is_main else {}


def _run(
    method: str,
    fold: int,
    rep: int,
    seed: int,
    backbone: PANN,
    dataset: ClipDataset,
    config: FixMatchConfig,
    ctx: DistContext,
    out: Path,
    logmel: Tensor,
    waves: Tensor,
    targets: Tensor,
    labelled: Tensor,
    pool: Tensor,
    extra_logmel: Tensor | None,
    test: tuple[Tensor, Tensor],
    ood: Tensor | None,
    clip_ids: list[str],
) -> dict:
    """Train and evaluate one method on one split; returns its metrics (rank 0)."""
    run_dir = out / method / f"fold{fold}" / f"rep{rep}"
    title = f"{method} fold {fold} rep {rep}"
    if config.resume and stage_done(run_dir):
        logger.info("%s: finished earlier, skipped", title)
        return json.loads((run_dir / "metrics.json").read_text())
    spec = METHODS[method]
    rule = config.rule(method)
    chosen = torch.arange(len(targets)) if spec.all_labels else labelled
    unlabelled, truth = logmel[:0], targets[:0]
    if rule is not None:
        unlabelled, truth = logmel[pool], targets[pool]
        if extra_logmel is not None:
            unlabelled = torch.cat([unlabelled, extra_logmel])
            truth = torch.cat([truth, torch.full((len(extra_logmel),), -1, dtype=truth.dtype)])
    data = RunData(logmel[chosen], targets[chosen], unlabelled, truth)
    model = _make_model(backbone, dataset, config, seed, fold).to(ctx.device)
    history = train_run(
        model,
        data,
        rule,
        config,
        ctx,
        seed=seed,
        checkpoint_dir=run_dir / ".checkpoint",
        epochs_csv=run_dir / "epochs.csv",
        title=title,
    )
    salt = fold * 100 + rep
    scalars: dict[str, Any] = {
        "labelled_clips": len(chosen),
        "unlabelled_clips": len(unlabelled),
        "unlabelled_accuracy": _accuracy(model, waves[pool], targets[pool], config, ctx, salt + 50),
    }
    if rule is not None:
        totals = {k: sum(r[k] for r in history) for k in ("candidates", "selected", "scored", "correct")}
        scalars["pseudo_label_quantity"] = totals["selected"] / max(totals["candidates"], 1)
        scalars["pseudo_label_quality"] = totals["correct"] / totals["scored"] if totals["scored"] else float("nan")
        scalars["pseudo_label_quantity_last"] = history[-1]["quantity"]
        scalars["pseudo_label_quality_last"] = history[-1]["quality"]
    scalars = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in scalars.items()}
    return finish_stage(model, run_dir, test, ood, None, config, ctx, salt, title, clip_ids, extra=scalars)
