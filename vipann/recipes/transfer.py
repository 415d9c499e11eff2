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

Options beyond the paper (all off by default, so the defaults reproduce it):

* ``head="sngp"``: an SNGP head (spectral-normalised hidden layer, random-feature GP output with
  its Laplace precision re-accumulated in every epoch, mean-field logits at prediction).
* ``mixup_alpha``: mixup of the training batches (soft targets).
* ``loss="focal"`` with ``focal_alpha`` / ``focal_gamma``; ``label_smoothing``.
* ``ensemble_members=M``: M members trained with seeds ``seed .. seed+M-1`` under
  ``OUT/<strategy>/fold<k>/members/m<i>/``, evaluated as one :class:`vipann.Ensemble` (predictions
  ``(R, M·S, N, C)``); under ``torchrun`` rank ``r`` trains members ``r, r+W, ...`` in parallel.
* ``pseudo_label_root`` / ``pseudo_label_folds``: round-based self-training (pseudo-label rounds
  after each stage with FMUC's or FixMatch's selection rule, ``vipann.recipes._semi``). The FMUC
  method itself (weak/strong views, pseudo-labels in every step) is ``vipann.recipes.fixmatch``.
* ``val_fraction``: a stratified validation split of the training clips, on which every stage fits
  a temperature (``temperature.json``, ``temperature_sweep.csv``, ``calibrated/``); ``calibrated``
  stores it in exported models.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vipann.datasets import ClipDataset, get_dataset
from vipann.models.pann import PANN
from vipann.recipes._outputs import STAGES, finish_stage, save_weights, stage_done, summarise
from vipann.recipes._semi import load_folder, load_pool, pseudo_label_rounds
from vipann.recipes._stages import set_sngp_lengthscale, train_stage
from vipann.recipes._temperature import stratified_split
from vipann.recipes.config import prepare_run_dir, save_config
from vipann.recipes.transfer_config import TransferConfig
from vipann.train.distributed import DistContext
from vipann.train.state import load_weights
from vipann.train.transfer import STRATEGIES, build_transfer_model
from vipann.utils.atomic import write_json_atomic

__all__ = ["STAGES", "TransferConfig", "backbone_name", "load_backbone", "members_for_rank", "run_transfer"]

logger = logging.getLogger("vipann.recipes.transfer")


def backbone_name(source: str, strategy: str) -> str:
    """The backbone a strategy starts from.

    With no source, the strategy's AudioSet backbone (``flip-resnet54``, ``det-resnet54``,
    ``drop-resnet54``). With a registry name, the same architecture in the strategy's backbone
    method (``--model flip-tiny`` gives ``det-tiny`` to the Det-Flip strategy), so one run can
    compare all strategies. Any other source (``local-dir:``, ``hf-hub:``) is used as it is.
    """
    from vipann.zoo.registry import is_model, split_model_name

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
    from vipann.zoo.factory import create_model, from_pretrained
    from vipann.zoo.registry import get_pretrained_cfg, is_model

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


def members_for_rank(num_members: int, rank: int, world_size: int) -> list[int]:
    """The ensemble members a process trains: ``rank, rank + world_size, ...`` (all of them when alone).

    Args:
        num_members: Ensemble size ``M``.
        rank: This process's rank.
        world_size: Number of processes ``W``.

    Returns:
        Member indices in ``range(M)``; every member is assigned to exactly one process.
    """
    return list(range(rank, num_members, world_size))


def _tensors(dataset: ClipDataset) -> tuple[Tensor, Tensor]:
    waves = torch.stack([dataset.load_waveform(i) for i in range(len(dataset))])
    return waves, dataset.targets


def _make_model(
    strategy: str, backbone: PANN, dataset: ClipDataset, config: TransferConfig, fold: int, member: int
) -> PANN:
    """A fresh model of one member of one fold, with the downstream metadata."""
    from vipann.zoo.registry import get_pretrained_cfg

    model = build_transfer_model(
        strategy,
        backbone,
        dataset.num_classes,
        moped_delta=config.moped_delta,
        head_dropout=config.head_dropout,
        from_scratch=config.from_scratch,
        seed=config.seed + member + fold,
        head=config.head,
        multilabel=dataset.multilabel,
        sngp={"num_features": config.sngp_features},
    )
    tag = config.dataset
    base_cfg = getattr(backbone, "pretrained_cfg", None) or get_pretrained_cfg(f"{model.method}-{model.arch}")
    model.pretrained_cfg = dataclasses.replace(
        base_cfg.with_classes(dataset.num_classes, dataset.class_names),
        name=f"{model.method}-{model.arch}.{tag}",
        method=model.method,
        tag=tag,
        multilabel=dataset.multilabel,
        clip_seconds=dataset.clip_seconds,
        weights="none",
        provenance=f"{strategy} transfer of {backbone_name(config.model, strategy)} to {tag}, fold {fold}"
        + (f", ensemble member {member} (seed {config.seed + member})" if config.ensemble_members > 1 else ""),
        default_num_samples=1 if model.method == "det" else config.num_samples,
        temperature=None,
    )
    if config.optimizer == "ivon":
        from vipann.calibration.ivon import attach_ivon_posterior

        # The posterior covers what the first stage trains (the head); training replaces it by IVON's.
        head = [n for n, _ in model.named_parameters() if n.split(".")[0] in ("fc1", "fc_audioset")]
        return attach_ivon_posterior(
            model,
            head,
            config.ivon_hess_init,
            ess=config.ivon_ess or 1.0,
            weight_decay=config.ivon_weight_decay,
            num_samples=config.num_samples,
        )
    return model


def _pseudo_scalars(record_dirs: list[Path]) -> dict[str, float]:
    """Mean over members of the last round's kept count and accuracy (for ``metrics.json``)."""
    last = []
    for directory in record_dirs:
        path = directory / "pseudo_labels.json"
        if path.is_file():
            last.append(json.loads(path.read_text())["rounds"][-1])
    out: dict[str, float] = {}
    if last:
        out["pseudo_labels_kept"] = sum(r["kept"] for r in last) / len(last)
        known = [r["accuracy"] for r in last if r["accuracy"] is not None]
        if known:
            out["pseudo_label_accuracy"] = sum(known) / len(known)
    return out


def run_transfer(config: TransferConfig, ctx: DistContext | None = None) -> dict[str, dict[str, list[dict]]]:
    """Run the recipe (every strategy, fold and stage) and write every output.

    Args:
        config: The run's settings.
        ctx: Distributed context (default: single process on ``config.device``).

    Returns:
        ``{strategy: {stage: [metrics of each fold]}}`` on rank 0 (empty dicts elsewhere).

    Raises:
        ValueError: For invalid settings or data, or ``resume`` with settings other than the run's;
            vipann.datasets errors for missing/unreadable clips.
        vipann.utils.outdirs.OutputDirError: When ``out`` holds files of something else, or a previous
            run and neither ``resume`` nor ``overwrite`` is set.
    """
    if ctx is None:
        from vipann.train.distributed import init_distributed

        ctx = init_distributed(config.device or None)
    out = prepare_run_dir(config, "transfer", check_only=not ctx.is_main)
    if ctx.is_main:
        save_config(config, out / "config.yaml")
    results: dict[str, dict[str, list[dict]]] = {}
    for strategy in config.strategies:
        backbone = load_backbone(config.model, strategy, ctx.device)
        dataset = _dataset(config, backbone.sample_rate, out, ctx)
        if (config.pseudo_label_root or config.pseudo_label_folds) and dataset.multilabel:
            raise ValueError(
                f"pseudo-labels select one class per clip; {config.dataset} is multi-label: "
                "drop pseudo_label_root / pseudo_label_folds"
            )
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
        folder = load_folder(config, backbone.sample_rate, dataset.clip_seconds)
        results[strategy] = {stage: [] for stage in config.stages}
        for fold in config.folds or dataset.folds:
            _run_fold(strategy, fold, backbone, dataset, ood, folder, config, ctx, out, results[strategy])
    if ctx.is_main:
        write_json_atomic(out / "results.json", results)
    return results if ctx.is_main else {}


def _run_fold(
    strategy: str,
    fold: int,
    backbone: PANN,
    dataset: ClipDataset,
    ood: Tensor | None,
    folder: ClipDataset | None,
    config: TransferConfig,
    ctx: DistContext,
    out: Path,
    results: dict[str, list[dict]],
) -> None:
    """Every stage of one strategy on one test fold (all ensemble members), with its outputs."""
    train_set, test_set = dataset.split(fold)
    labelled, pool = load_pool(config, train_set, fold, folder)
    train, test = _tensors(labelled), _tensors(test_set)
    val = None
    if config.val_fraction > 0:
        keep, held = stratified_split(train[1], config.val_fraction, config.seed + fold)
        val = (train[0][held], train[1][held])
        train = (train[0][keep], train[1][keep])
        logger.info("fold %d: %d training clips, %d held out for temperature scaling", fold, len(keep), len(held))
    clip_ids = [r.clip_id for r in test_set.records]
    fold_dir = out / strategy / f"fold{fold}"
    count = config.ensemble_members
    ensemble = count > 1
    parallel = ensemble and ctx.distributed  # members in parallel, one process each
    mine = members_for_rank(count, ctx.rank, ctx.world_size) if parallel else list(range(count))
    train_ctx = DistContext(device=ctx.device) if parallel else ctx
    if parallel:
        logger.info("fold %d: rank %d trains ensemble members %s", fold, ctx.rank, mine)
    member_root = [fold_dir / "members" / f"m{m}" if ensemble else fold_dir for m in range(count)]
    models: dict[int, PANN] = {}
    shared: dict[str, Tensor] = {}  # fixed-stage features of a frozen deterministic trunk, same for every member

    def model_of(m: int, stage_index: int) -> PANN:
        if m not in models:
            model = _make_model(strategy, backbone, dataset, config, fold, m).to(ctx.device)
            set_sngp_lengthscale(model, config.sngp_lengthscale)
            previous = config.stages[:stage_index]
            if previous:  # resumed after an earlier stage, or another process's member: its weights
                weights = member_root[m] / previous[-1] / "model.safetensors"
                model.load_state_dict(load_weights(weights, device=ctx.device))
            models[m] = model
        return models[m]

    for stage_index, stage in enumerate(config.stages):
        stage_dir = fold_dir / stage
        salt = fold * 10 + STAGES.index(stage)
        title = f"{strategy} {stage} fold {fold}"
        if config.resume and stage_done(stage_dir):
            models.clear()  # the next stage loads the finished weights from disk
            results[stage].append(json.loads((stage_dir / "metrics.json").read_text()))
            logger.info("%s: finished earlier, skipped", title)
            continue
        started = time.perf_counter()
        for m in mine:
            model = model_of(m, stage_index)
            member_config = dataclasses.replace(config, seed=config.seed + m)
            weights = member_root[m] / stage / "model.safetensors"
            if ensemble and config.resume and weights.is_file():
                model.load_state_dict(load_weights(weights, device=ctx.device))
                continue
            member_title = f"{title}, member {m}" if ensemble else title
            same_trunk = not config.from_scratch and model.first_stochastic_stage() >= len(model.trunk_names)
            features = train_stage(
                model,
                stage,
                *train,
                member_config,
                train_ctx,
                fold=fold,
                checkpoint_dir=member_root[m] / f".{stage}-checkpoint",
                title=member_title,
                multilabel=dataset.multilabel,
                features=shared.get(stage) if same_trunk else None,
            )
            if same_trunk and features is not None:
                shared[stage] = features
            if pool is not None:
                pseudo_label_rounds(
                    model,
                    stage,
                    train,
                    pool,
                    member_config,
                    train_ctx,
                    fold=fold,
                    checkpoint_root=member_root[m],
                    record_dir=member_root[m] / stage if ensemble else stage_dir,
                    title=member_title,
                    class_names=dataset.class_names,
                    features=features,
                )
            if ensemble and train_ctx.is_main:
                save_weights(model, weights)
        ctx.barrier()
        train_seconds = time.perf_counter() - started
        if ensemble:
            from vipann.inference.ensemble import Ensemble

            for m in range(count):
                if m not in mine:
                    model_of(m, stage_index + 1)  # trained by another process: its weights of this stage
            evaluated: Any = Ensemble([models[m] for m in range(count)])
            if parallel:
                models.clear()  # other processes' members are reloaded per stage
        else:
            evaluated = models[0]
        record_dirs = [member_root[m] / stage for m in range(count)] if ensemble else [stage_dir]
        extra = _pseudo_scalars(record_dirs) if pool is not None and ctx.is_main else {}
        extra["train_seconds"] = train_seconds
        scalars = finish_stage(
            evaluated,
            stage_dir,
            test,
            ood,
            val,
            config,
            ctx,
            salt,
            title,
            clip_ids,
            member_dirs=[member_root[m] / stage for m in range(count)] if ensemble else None,
            extra=extra,
            train=train,
        )
        if ctx.is_main:
            results[stage].append(scalars)
            logger.info(
                "%s: %s",
                title,
                {k: round(v, 4) for k, v in scalars.items() if k in ("accuracy", "mAP", "ECE", "NLL", "Brier")},
            )
            summarise(out, config)
        ctx.barrier()
