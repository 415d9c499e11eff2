"""Round-based self-training for the transfer recipe (pseudo-label rounds; private).

After a stage has trained, the model predicts the unlabelled pool with Monte-Carlo sampling (MC
dropout for the ``drop`` strategy, Flipout for ``flip``/``detflip``; a ``det`` model makes one pass),
:func:`vipann.calibration.select_pseudo_labels` keeps the clips whose temperature-scaled top-class
probability is confidently high, and the stage trains again on the labelled clips plus the kept
clips with their pseudo-labels (continuing from the trained weights, with a fresh optimiser and the
stage's number of epochs). With several rounds every round selects again from the whole pool with
the improved model. Each round is recorded in ``pseudo_labels.json``: how many clips were kept,
which, with which labels, and their accuracy where the true labels are known (pool clips taken
from hidden training folds).

This is *not* FixMatch-Uncertainty (FMUC, paper 004): FMUC selects pseudo-labels inside every
training step from a weakly augmented view and trains a strongly augmented view on them (the
consistency term); that method is :mod:`vipann.recipes.fixmatch` (``finetune/fixmatch.py``). The
round-based scheme stays because it covers what FMUC cannot: the fixed-feature stage (the head
trains on features cached once, so a round costs seconds, where FixMatch must run the whole network
on fresh augmented views at every step), every transfer strategy, SNGP heads and deep ensembles,
and unlabelled audio from an outside folder, with the same selection rules.

The pool is an unlabelled folder (``pseudo_label_root``, e.g. more recordings of the same kind),
hidden training folds (``pseudo_label_folds``: their labels are withheld and used only to score the
pseudo-labels), or both. Selection rules (the earlier names still work, see
:data:`ALIASES`):

=====================  ===========================================================================
``mc-mean-std``        MC passes, ``softmax(z / T)``, keep ``mean - std > threshold`` (FMUC's rule)
``mc-two-thresholds``  MC passes, keep ``mean > threshold`` and ``std < std_threshold`` (as UPS)
``mc-no-temperature``  as ``mc-mean-std`` with ``T = 1``
``single-pass``        one deterministic pass (eval mode), ``softmax(z / T) > threshold``
``confidence``         one deterministic pass, no temperature (FixMatch's rule; use threshold 0.95)
=====================  ===========================================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vipann.calibration import select_pseudo_labels
from vipann.datasets import ClipDataset, get_dataset
from vipann.models.pann import PANN
from vipann.recipes._outputs import mc_logits
from vipann.recipes._stages import stage_features, train_stage
from vipann.train.distributed import DistContext
from vipann.utils.atomic import write_json_atomic

__all__ = ["ALIASES", "VARIANTS", "Pool", "canonical_variant", "load_pool", "pseudo_label_rounds", "select"]

logger = logging.getLogger("vipann.recipes.transfer")

# variant -> (Monte-Carlo passes, temperature, two thresholds)
VARIANTS: dict[str, tuple[bool, bool, bool]] = {
    "mc-mean-std": (True, True, False),
    "mc-two-thresholds": (True, True, True),
    "mc-no-temperature": (True, False, False),
    "single-pass": (False, True, False),
    "confidence": (False, False, False),
}

#: The earlier names of the selection rules (still accepted; FMUC now names the FixMatch recipe's method).
ALIASES: dict[str, str] = {
    "fmuc": "mc-mean-std",
    "fmuc-two-thresholds": "mc-two-thresholds",
    "fmuc-no-temperature": "mc-no-temperature",
    "fmuc-no-mc": "single-pass",
    "fixmatch": "confidence",
}


def canonical_variant(name: str) -> str:
    """The current name of a selection rule (``ALIASES`` resolved).

    Args:
        name: A name of :data:`VARIANTS` or :data:`ALIASES`.

    Returns:
        The name in :data:`VARIANTS`.

    Raises:
        ValueError: For an unknown name.
    """
    name = ALIASES.get(name, name)
    if name not in VARIANTS:
        raise ValueError(
            f"unknown pseudo_label_variant {name!r}; choose one of {list(VARIANTS)} "
            f"(earlier names {list(ALIASES)} are accepted too)"
        )
    return name


@dataclass
class Pool:
    """Unlabelled clips for pseudo-labelling.

    Attributes:
        waves: ``(P, T)`` clips.
        clip_ids: Their identifiers (``folder:`` or ``fold<k>:`` prefixed).
        truth: ``(P,)`` true class indices where known (hidden folds), ``-1`` elsewhere.
    """

    waves: Tensor
    clip_ids: list[str]
    truth: Tensor


def _tensors(dataset: ClipDataset) -> Tensor:
    return torch.stack([dataset.load_waveform(i) for i in range(len(dataset))])


def load_pool(
    config: Any, train_set: ClipDataset, test_fold: int, folder: ClipDataset | None
) -> tuple[ClipDataset, Pool | None]:
    """Split the training folds into labelled clips and the pseudo-label pool.

    Args:
        config: The run's :class:`~vipann.recipes.transfer.TransferConfig`.
        train_set: The training folds of this split.
        test_fold: The test fold (never part of the pool).
        folder: The unlabelled folder (``pseudo_label_root``), already loaded, or None.

    Returns:
        ``(labelled training set, pool)``; the pool is None when there is nothing to pseudo-label.

    Raises:
        ValueError: If hiding the folds leaves no labelled clip.
    """
    hidden = [f for f in config.pseudo_label_folds if f != test_fold and f in train_set.folds]
    parts: list[tuple[Tensor, list[str], Tensor]] = []
    labelled = train_set
    if hidden:
        kept_folds = [f for f in train_set.folds if f not in hidden]
        if not kept_folds:
            raise ValueError(
                f"pseudo_label_folds {config.pseudo_label_folds} hide every training fold of test fold {test_fold}; "
                "keep at least one training fold labelled"
            )
        labelled = train_set.subset(kept_folds)
        pool_set = train_set.subset(hidden)
        ids = [f"fold{r.fold}:{r.clip_id}" for r in pool_set.records]
        parts.append((_tensors(pool_set), ids, pool_set.targets.long()))
    if folder is not None:
        ids = [f"folder:{r.clip_id}" for r in folder.records]
        parts.append((_tensors(folder), ids, torch.full((len(folder),), -1, dtype=torch.long)))
    if not parts:
        return labelled, None
    return labelled, Pool(
        torch.cat([p[0] for p in parts]), [i for p in parts for i in p[1]], torch.cat([p[2] for p in parts])
    )


def load_folder(config: Any, sample_rate: int, clip_seconds: float) -> ClipDataset | None:
    """The unlabelled folder of ``config.pseudo_label_root`` (None when not set)."""
    if not config.pseudo_label_root:
        return None
    return get_dataset(
        "unlabelled",
        config.pseudo_label_root,
        sample_rate=sample_rate,
        clip_seconds=clip_seconds,
        on_error=config.on_error,
    )


def select(model: PANN, pool: Pool, config: Any, ctx: DistContext, seed: int) -> tuple[Tensor, Tensor, int]:
    """Predict the pool and apply the variant's rule: ``(mask, labels, passes)``."""
    mc, scaled, two = VARIANTS[canonical_variant(config.pseudo_label_variant)]
    passes = config.num_samples if mc and model.method != "det" else 1
    logits = mc_logits(model, pool.waves, passes, ctx, seed, config.eval_batch_size)
    mask, labels = select_pseudo_labels(
        logits,
        temperature=config.pseudo_label_temperature if scaled else None,
        threshold=config.pseudo_label_threshold,
        std_threshold=config.pseudo_label_std_threshold if two else None,
    )
    return mask.cpu(), labels.cpu(), passes


def pseudo_label_rounds(
    model: PANN,
    stage: str,
    train: tuple[Tensor, Tensor],
    pool: Pool,
    config: Any,
    ctx: DistContext,
    *,
    fold: int,
    checkpoint_root: Path,
    record_dir: Path,
    title: str,
    class_names: tuple[str, ...] | list[str],
    features: Tensor | None,
) -> list[dict]:
    """Run ``config.pseudo_label_rounds`` rounds of select → retrain; write ``record_dir/pseudo_labels.json``.

    Args:
        model: The model after the stage's first training (trained further in place).
        stage: ``"fixed"`` or ``"finetuned"``.
        train: ``(waves, targets)`` of the labelled training clips.
        pool: The unlabelled clips.
        config: The run's (member's) config.
        ctx: Training context.
        fold: Test fold.
        checkpoint_root: Folder of the rounds' rolling checkpoints.
        record_dir: Where ``pseudo_labels.json`` goes (the stage's or the member's folder).
        title: Progress label.
        class_names: Names of the classes (for the record).
        features: The fixed-feature stage's cached features of the labelled clips.

    Returns:
        One record per round.
    """
    waves, targets = train
    records = []
    for r in range(1, config.pseudo_label_rounds + 1):
        mask, labels, passes = select(model, pool, config, ctx, config.seed * 7 + fold * 101 + r)
        kept = torch.nonzero(mask).flatten()
        truth = pool.truth[kept]
        known = truth >= 0
        accuracy = float((labels[kept][known] == truth[known]).float().mean()) if bool(known.any()) else None
        variant = canonical_variant(config.pseudo_label_variant)
        record = {
            "round": r,
            "variant": variant,
            "temperature": config.pseudo_label_temperature if VARIANTS[variant][1] else None,
            "threshold": config.pseudo_label_threshold,
            "std_threshold": config.pseudo_label_std_threshold if VARIANTS[variant][2] else None,
            "passes": passes,
            "candidates": len(pool.clip_ids),
            "kept": len(kept),
            "kept_fraction": len(kept) / max(len(pool.clip_ids), 1),
            "labels_known": int(known.sum()),
            "accuracy": accuracy,
            "clips": [
                {"clip_id": pool.clip_ids[i], "label": class_names[int(labels[i])], "target": int(labels[i])}
                for i in kept.tolist()
            ],
        }
        records.append(record)
        logger.info(
            "%s: pseudo-label round %d kept %d of %d clips (accuracy %s)",
            title,
            r,
            len(kept),
            len(pool.clip_ids),
            "unknown" if accuracy is None else f"{accuracy:.3f}",
        )
        aug_waves = torch.cat([waves, pool.waves[kept]])
        aug_targets = torch.cat([targets, labels[kept].to(targets.dtype)])
        aug_features = None
        if stage == "fixed" and features is not None:
            extra = stage_features(model, pool.waves[kept], config, ctx, config.seed + fold + 31 * r)
            aug_features = torch.cat([features, extra], dim=1)
        train_stage(
            model,
            stage,
            aug_waves,
            aug_targets,
            config,
            ctx,
            fold=fold,
            checkpoint_dir=checkpoint_root / f".{stage}-pseudo{r}-checkpoint",
            title=f"{title}, pseudo-label round {r}",
            multilabel=False,
            round_index=r,
            features=aug_features,
        )
    if ctx.is_main:
        write_json_atomic(record_dir / "pseudo_labels.json", {"rounds": records})
    return records
