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
* ``pseudo_label_root`` / ``pseudo_label_folds``: FMUC pseudo-label rounds (``vipann.recipes._semi``).
* ``val_fraction``: a stratified validation split of the training clips, on which every stage fits
  a temperature (``temperature.json``, ``temperature_sweep.csv``, ``calibrated/``); ``calibrated``
  stores it in exported models.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from vipann.datasets import ClipDataset, get_dataset
from vipann.models.pann import PANN
from vipann.recipes._outputs import STAGES, finish_stage, save_weights, stage_done, summarise
from vipann.recipes._semi import VARIANTS, load_folder, load_pool, pseudo_label_rounds
from vipann.recipes._stages import set_sngp_lengthscale, train_stage
from vipann.recipes._temperature import check_val_fraction, stratified_split
from vipann.recipes.config import save_config
from vipann.train.distributed import DistContext
from vipann.train.transfer import HEADS, STRATEGIES, build_transfer_model
from vipann.utils.atomic import write_json_atomic

__all__ = ["STAGES", "TransferConfig", "backbone_name", "load_backbone", "members_for_rank", "run_transfer"]

logger = logging.getLogger("vipann.recipes.transfer")


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
        stages: Stages to run, in order: ``fixed`` (head on cached features) and/or ``finetuned``
            (everything; after ``fixed`` it starts from the fixed-feature weights).
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
        focal_alpha: Focal-loss class balance (paper 000: 0.25; None: none).
        focal_gamma: Focal-loss focusing parameter (paper 000: 2).
        head: ``mlp`` (the strategy's PANN head) or ``sngp`` (spectral-normalised GP head; not with
            ``detflip``).
        sngp_features: Random Fourier features of the SNGP output layer.
        sngp_lengthscale: RBF length scale of the SNGP layer (0: the layer's default, the square
            root of its input width).
        mixup_alpha: Mixup Beta parameter for the training batches of both stages (0: no mixup).
        ensemble_members: Members of a deep ensemble per strategy and fold (1: a single model).
        val_fraction: Fraction of every class's training clips held out (stratified, seeded) to fit
            a temperature after each stage (0: no validation split and no temperature scaling).
        calibrated: Store the fitted temperature in exported models (``vipann.predict`` then applies
            it); needs ``val_fraction > 0``.
        pseudo_label_root: Folder of unlabelled audio for pseudo-labelling (FMUC).
        pseudo_label_folds: Training folds whose labels are hidden and used as unlabelled pool
            (the accuracy of their pseudo-labels is recorded).
        pseudo_label_variant: ``fmuc``, ``fmuc-two-thresholds``, ``fmuc-no-temperature``,
            ``fmuc-no-mc`` or ``fixmatch`` (see ``vipann.recipes._semi``).
        pseudo_label_temperature: Temperature of the selection softmax (paper 004: 2).
        pseudo_label_threshold: Threshold on ``mean - std`` of the top class (paper 004: 0.9).
        pseudo_label_std_threshold: Upper bound on the std for ``fmuc-two-thresholds``.
        pseudo_label_rounds: Select-and-retrain rounds per stage.
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
        plots: Render the PNG figures of every stage (the numbers are written either way).
    """

    dataset: str = "esc50"
    data_root: str = ""
    out: str = "runs/transfer"
    model: str = ""
    strategies: list[str] = field(default_factory=lambda: ["flip"])
    from_scratch: bool = False
    stages: list[str] = field(default_factory=lambda: list(STAGES))
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
    focal_alpha: float | None = 0.25
    focal_gamma: float = 2.0
    head: str = "mlp"
    sngp_features: int = 1024
    sngp_lengthscale: float = 0.0
    mixup_alpha: float = 0.0
    ensemble_members: int = 1
    val_fraction: float = 0.0
    calibrated: bool = False
    pseudo_label_root: str = ""
    pseudo_label_folds: list[int] = field(default_factory=list)
    pseudo_label_variant: str = "fmuc"
    pseudo_label_temperature: float = 2.0
    pseudo_label_threshold: float = 0.9
    pseudo_label_std_threshold: float = 0.05
    pseudo_label_rounds: int = 1
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
    plots: bool = True

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
        if not self.data_root:
            raise ValueError("data_root is required: the dataset folder as distributed (--data-root DIR)")
        if not self.stages or [s for s in STAGES if s in self.stages] != list(self.stages):
            raise ValueError(f"stages must be a non-empty, ordered subset of {list(STAGES)}, got {self.stages}")
        for name in ("fixed_epochs", "finetune_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in (
            "batch_size",
            "num_samples",
            "replications",
            "feature_draws",
            "eval_batch_size",
            "ensemble_members",
            "sngp_features",
            "pseudo_label_rounds",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {list(HEADS)}, got {self.head!r}")
        if not self.sngp_lengthscale >= 0:
            raise ValueError(f"sngp_lengthscale must be >= 0 (0: the default), got {self.sngp_lengthscale}")
        if self.head == "sngp" and "detflip" in self.strategies:
            raise ValueError("head='sngp' replaces the Flipout head of detflip; drop detflip or use head='mlp'")
        if not self.mixup_alpha >= 0:
            raise ValueError(f"mixup_alpha must be >= 0 (0: no mixup), got {self.mixup_alpha}")
        check_val_fraction(self.val_fraction)
        if self.calibrated and self.val_fraction == 0:
            raise ValueError("calibrated=True needs a validation split to fit the temperature: set val_fraction > 0")
        if self.pseudo_label_variant not in VARIANTS:
            raise ValueError(
                f"unknown pseudo_label_variant {self.pseudo_label_variant!r}; choose one of {list(VARIANTS)}"
            )
        for name in ("pseudo_label_threshold", "pseudo_label_std_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.pseudo_label_temperature > 0:
            raise ValueError(f"pseudo_label_temperature must be > 0, got {self.pseudo_label_temperature}")


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
        if (config.pseudo_label_root or config.pseudo_label_folds) and dataset.multilabel:
            raise ValueError(
                f"pseudo-labels (FMUC) select one class per clip; {config.dataset} is multi-label: "
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
                model.load_state_dict(load_file(str(weights), device=str(ctx.device)))
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
        for m in mine:
            model = model_of(m, stage_index)
            member_config = dataclasses.replace(config, seed=config.seed + m)
            weights = member_root[m] / stage / "model.safetensors"
            if ensemble and config.resume and weights.is_file():
                model.load_state_dict(load_file(str(weights), device=str(ctx.device)))
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
