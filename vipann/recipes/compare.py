"""Calibration methods compared on one footing: same dataset, folds, backbone and training budget.

:func:`run_compare` trains and evaluates, through :func:`vipann.recipes.transfer.run_transfer`,

================  ===================================================================================
``base``          the deterministic network (``det`` strategy, cross-entropy)
``focal``         ``det`` trained with the focal loss (alpha 0.25, gamma 2; paper 000)
``mc-dropout``    the ``drop`` strategy: MC dropout at prediction
``ensemble``      a deep ensemble of ``ensemble_members`` ``det`` networks (seeds ``seed ..``)
``sngp``          ``det`` trunk with an SNGP head (spectral-normalised GP, mean-field logits)
``temperature``   ``base`` with one temperature fitted on the validation split (no extra training)
``flip``          VI-PANN's Flip strategy (Flipout trunk and head)
``detflip``       VI-PANN's Det-Flip strategy (deterministic trunk, Flipout head)
``laplace``       ``base`` made Bayesian post hoc: last-layer K-FAC Laplace, prior by marginal likelihood
``laplace-head``  the same over fc1 and the classifier
``ivon``          ``det`` trained with IVON (variational learning), its posterior sampled at prediction
================  ===================================================================================

``laplace`` and ``laplace-head`` do not train anything: they fit a Laplace posterior
(:func:`vipann.calibration.fit_laplace`) to the ``base`` networks on the same training clips and are
evaluated like the others (``OUT/methods/base/det/fold<k>/<stage>/laplace-<variant>/``). The cost columns
say what each method costs: training time of its network(s), post-hoc fitting time (Laplace, temperature),
prediction time per clip (with its Monte-Carlo samples) and the memory it adds to one ``base`` network.

Every method holds out the same stratified validation split of the training folds (``val_fraction``,
seeded), so all train on the same clips; every one also gets its own fitted temperature
(``OUT/methods/<method>/.../temperature.json``), and ``temperature`` reports the base network's. The
table (paper 000's columns) has, per method, mean ± std over the test folds of accuracy (mAP for a
multi-label dataset), ECE, OOD AUROC and AUPR with the total predictive entropy as the score, NLL
and Brier score; the marginal (classwise) ECE, the signed miscalibration score MCS (> 0:
over-confident), AURC and AUGRC (selective prediction ranked by the entropy); plus OOD AUROC / AUPR
with the epistemic part (mutual information) for the methods that have one (several Monte-Carlo
samples or members). It is written as ``comparison.csv``,
``comparison.md`` and ``comparison.json`` (atomically) in ``OUT``.

By default only the fixed-feature stage is trained (the backbone frozen, heads on features cached
once: fast); ``stage="finetuned"`` also fine-tunes everything and reports that stage. Budgets are
the same for every method; SNGP's random-feature output layer learns more slowly than a linear
classifier, so short budgets leave it less accurate and less confident than it would become.

**Embedded default.** With no dataset, the comparison runs on the demo data: the generated 10-class
downstream task (ESC-50 layout, :func:`vipann.datasets.make_downstream`, 4 clips per class and fold),
its out-of-distribution set (40 "underwater engine" clips, :func:`vipann.datasets.make_ood`) and the
shipped demo backbones (``det-demo``, ``drop-demo``, ``flip-demo``), testing on folds 1 and 2. The
defaults (60 head epochs at lr 3e-3, 5 Monte-Carlo samples, 2 replications, 3 ensemble members,
256 SNGP features, plots off) are sized for that run: a few minutes on 2 CPU cores. They are
small for real data; ``finetune/configs/compare-esc50.yaml`` has the paper's settings for ESC-50
with the ResNet54 backbones.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vipann.recipes._outputs import STAGES
from vipann.recipes.config import prepare_run_dir, save_config
from vipann.recipes.transfer import TransferConfig, run_transfer
from vipann.train.distributed import DistContext
from vipann.utils.atomic import write_json_atomic, write_text_atomic

__all__ = ["COLUMNS", "METHODS", "CompareConfig", "Method", "comparison_rows", "run_compare"]

logger = logging.getLogger("vipann.recipes.compare")


@dataclass(frozen=True)
class Method:
    """One row of the comparison.

    Attributes:
        name: Method id.
        label: Human-readable name.
        strategy: Transfer strategy it trains.
        overrides: :class:`~vipann.recipes.transfer.TransferConfig` settings of its run.
        run: The run whose models it evaluates (``temperature`` and the Laplace methods reuse ``base``).
        calibrated: Read the temperature-scaled evaluation (``calibrated/metrics.json``).
        variant: Read the evaluation in this sub-folder of the stage (a post-hoc Laplace variant).
    """

    name: str
    label: str
    strategy: str
    overrides: dict[str, Any] = field(default_factory=dict)
    run: str = ""
    calibrated: bool = False
    variant: str = ""

    @property
    def laplace(self) -> str:
        """The Laplace variant (``<subset>-<hessian>``) of a post-hoc Laplace method, else ``""``."""
        return self.variant.removeprefix("laplace-") if self.variant.startswith("laplace-") else ""


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("base", "Base (det)", "det"),
        Method("focal", "Focal loss", "det", {"loss": "focal"}),
        Method("mc-dropout", "MC dropout", "drop"),
        Method("ensemble", "Deep ensemble", "det"),
        Method("sngp", "SNGP", "det", {"head": "sngp"}),
        Method("temperature", "Temperature scaling", "det", run="base", calibrated=True),
        Method("flip", "Flip (VI)", "flip"),
        Method("detflip", "Det-Flip (VI head)", "detflip"),
        Method("laplace", "Laplace (last layer)", "det", run="base", variant="laplace-last_layer-kron"),
        Method("laplace-head", "Laplace (fc1 + classifier)", "det", run="base", variant="laplace-head-kron"),
        Method("ivon", "IVON", "det", {"optimizer": "ivon"}),
    )
}

# (table column, metrics.json key, needs an epistemic part)
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("accuracy", "accuracy", False),
    ("ECE", "ECE", False),
    ("OOD AUROC", "ood_auroc_entropy", False),
    ("OOD AUPR", "ood_aupr_entropy", False),
    ("NLL", "NLL", False),
    ("Brier", "Brier", False),
    ("marginal ECE", "ECE_marginal", False),
    ("MCS", "MCS", False),
    ("AURC", "AURC_entropy", False),
    ("AUGRC", "AUGRC_entropy", False),
    ("OOD AUROC (epistemic)", "ood_auroc_epistemic", True),
    ("OOD AUPR (epistemic)", "ood_aupr_epistemic", True),
    ("retention area", "retention_area_entropy", False),
    ("train s", "train_seconds", False),
    ("post-hoc s", "posthoc_seconds", False),
    ("ms / clip", "predict_ms_per_clip", False),
    ("extra MB", "extra_mb", False),
)
_BETTER = {"accuracy": "↑", "mAP": "↑", "ECE": "↓", "OOD AUROC": "↑", "OOD AUPR": "↑", "NLL": "↓", "Brier": "↓"}
_BETTER.update({"marginal ECE": "↓", "MCS": "→0", "AURC": "↓", "AUGRC": "↓", "retention area": "↑"})
_BETTER.update({"train s": "↓", "post-hoc s": "↓", "ms / clip": "↓", "extra MB": "↓"})


@dataclass
class CompareConfig:
    """Settings of a comparison; the defaults are sized for the embedded demo data.

    Attributes:
        dataset: ``esc50``, ``urbansound8k``, ``dcase2013``, ``folder`` or ``synthetic_downstream``;
            empty for the embedded demo data (generated on first use, then cached).
        data_root: The dataset folder as distributed (required with ``dataset``).
        ood_root: Folder of out-of-distribution audio for the OOD columns (the demo generates one).
        out: Output directory.
        model: Backbone source, mapped to each strategy's flavour (``det-demo`` gives ``drop-demo``
            to MC dropout and ``flip-demo`` to Flip); default ``det-demo`` for the demo data and the
            AudioSet ResNet54 backbones otherwise.
        methods: Methods to compare (see :data:`METHODS`).
        folds: Test folds (default: folds 1 and 2 for the demo data, every fold otherwise).
        stage: ``fixed`` (head on cached features; fast) or ``finetuned`` (then everything trained).
        clip_seconds: Clip length (default: the dataset's).
        fixed_epochs: Epochs of the fixed-feature stage.
        finetune_epochs: Epochs of the fine-tuned stage (``stage="finetuned"``).
        lr: Learning rate of the fixed-feature stage (fine-tuning uses lr / 10).
        batch_size: Batch size.
        feature_draws: Cached Monte-Carlo feature draws per clip of a stochastic frozen backbone.
        num_samples: Monte-Carlo samples per prediction of the stochastic methods.
        replications: Independent prediction runs of the stochastic methods.
        ensemble_members: Members of the deep ensemble (at least 2).
        val_fraction: Stratified validation fraction of the training clips (the same split for every
            method; the temperatures are fitted on it).
        focal_alpha: Focal-loss alpha.
        focal_gamma: Focal-loss gamma.
        sngp_features: Random Fourier features of the SNGP head.
        demo_clips_per_class: Clips per class and fold of the generated downstream task.
        demo_ood_clips: Clips of the generated OOD set.
        on_error: ``raise`` or ``skip`` missing or unreadable clips.
        device: ``cpu``, ``cuda`` or empty for automatic.
        seed: Seed of everything random.
        resume: Continue a killed comparison in ``out`` (refused when a setting that affects the
            results differs from its).
        overwrite: Delete a previous comparison in ``out`` and start over.
        export: Save every trained model in the zoo layout.
        plots: Render every stage's PNG figures (off: the comparison needs only the numbers).
        cache_dir: Where decoded audio is cached.
        progress: Progress bars.
    """

    dataset: str = ""
    data_root: str = ""
    ood_root: str = ""
    out: str = "runs/compare"
    model: str = ""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    folds: list[int] = field(default_factory=list)
    stage: str = "fixed"
    clip_seconds: float = 0.0
    fixed_epochs: int = 60
    finetune_epochs: int = 2
    lr: float = 3e-3
    batch_size: int = 32
    feature_draws: int = 4
    num_samples: int = 5
    replications: int = 2
    ensemble_members: int = 3
    val_fraction: float = 0.2
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    sngp_features: int = 256
    demo_clips_per_class: int = 4
    demo_ood_clips: int = 40
    on_error: str = "raise"
    device: str = ""
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    export: bool = False
    plots: bool = False
    cache_dir: str = ""
    progress: bool = True

    def __post_init__(self) -> None:
        from vipann.datasets import list_datasets

        known = [d for d in list_datasets() if d != "unlabelled"]
        if self.dataset and self.dataset not in known:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {known}, or none for the demo data")
        if self.dataset and not self.data_root:
            raise ValueError(
                f"--dataset {self.dataset} needs --data-root DIR (the dataset folder as distributed); "
                "leave out both for the embedded demo data"
            )
        if self.data_root and not self.dataset:
            raise ValueError(f"--data-root needs --dataset (one of {known}); leave out both for the demo data")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown methods {unknown or '[]'}; choose from {list(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods are listed twice: {self.methods}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {list(STAGES)}, got {self.stage!r}")
        if "ensemble" in self.methods and self.ensemble_members < 2:
            raise ValueError(f"a deep ensemble needs ensemble_members >= 2, got {self.ensemble_members}")
        if not 0.0 <= self.val_fraction < 1.0 or ("temperature" in self.methods and self.val_fraction == 0):
            raise ValueError(
                f"val_fraction must be in (0, 1) to fit temperatures (got {self.val_fraction}); "
                "val_fraction 0 is allowed only without the 'temperature' method"
            )
        for name in ("fixed_epochs", "finetune_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "feature_draws", "num_samples", "replications", "sngp_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.demo_clips_per_class < 2 or self.demo_ood_clips < 1:
            raise ValueError("demo_clips_per_class must be >= 2 and demo_ood_clips >= 1")


def _demo_data(config: CompareConfig) -> dict[str, Any]:
    """The embedded default: generated downstream task + OOD set (shared with ``vipann demo``), demo backbones."""
    from vipann.datasets import make_downstream, make_ood

    cache = Path(os.environ.get("VIPANN_CACHE_DIR", Path.home() / ".cache" / "vipann")) / "synthetic"
    per, ood = config.demo_clips_per_class, config.demo_ood_clips
    return {
        "dataset": "synthetic_downstream",
        "data_root": str(make_downstream(cache / f"downstream-seed{config.seed}-{per}x5", config.seed, per)),
        "ood_root": config.ood_root or str(make_ood(cache / f"ood-seed{config.seed}-{ood}", config.seed, ood)),
        "model": config.model or "det-demo",
        "folds": config.folds or [1, 2],
        "clip_seconds": config.clip_seconds or 2.0,
    }


def _runs(config: CompareConfig) -> dict[str, Method]:
    """The training runs the methods need (``temperature`` needs ``base``)."""
    names = {METHODS[m].run or m for m in config.methods}
    return {name: METHODS[name] for name in METHODS if name in names}


def transfer_config(config: CompareConfig, method: Method, data: dict[str, Any]) -> TransferConfig:
    """The :class:`~vipann.recipes.transfer.TransferConfig` of one method's training run."""
    stages = ["fixed"] if config.stage == "fixed" else ["fixed", "finetuned"]
    overrides = dict(method.overrides)
    if method.name == "ensemble":
        overrides["ensemble_members"] = config.ensemble_members
    if method.name == "base":  # the post-hoc Laplace methods are evaluated on the base networks
        overrides["laplace"] = [METHODS[m].laplace for m in config.methods if METHODS[m].laplace]
    return TransferConfig(
        dataset=data["dataset"],
        data_root=data["data_root"],
        ood_root=data["ood_root"],
        out=str(Path(config.out) / "methods" / method.name),
        model=data["model"],
        strategies=[method.strategy],
        stages=stages,
        folds=list(data["folds"]),
        clip_seconds=data["clip_seconds"],
        fixed_epochs=config.fixed_epochs,
        finetune_epochs=config.finetune_epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        feature_draws=config.feature_draws,
        num_samples=config.num_samples,
        replications=config.replications,
        val_fraction=config.val_fraction,
        focal_alpha=config.focal_alpha,
        focal_gamma=config.focal_gamma,
        sngp_features=config.sngp_features,
        on_error=config.on_error,
        device=config.device,
        seed=config.seed,
        resume=config.resume,
        export=config.export,
        calibrated=config.export and config.val_fraction > 0,
        plots=config.plots,
        cache_dir=config.cache_dir,
        progress=config.progress,
        **overrides,
    )


def _metrics_files(out: Path, method: Method, stage: str) -> list[Path]:
    """Every fold's ``metrics.json`` of a method (the temperature-scaled one for ``temperature``), by fold."""
    run = out / "methods" / (method.run or method.name) / method.strategy
    folder = method.variant or ("calibrated" if method.calibrated else "")
    name = f"{folder}/metrics.json" if folder else "metrics.json"
    found = [(int(d.name[4:]), d / stage / name) for d in run.glob("fold*") if d.name[4:].isdigit()]
    return [path for _, path in sorted(found) if path.is_file()]


def _per_fold(out: Path, method: Method, stage: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in _metrics_files(out, method, stage)]


def _stat(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def comparison_rows(out: str | os.PathLike[str], methods: list[str], stage: str = "fixed") -> list[dict[str, Any]]:
    """The comparison table from the methods' per-fold ``metrics.json`` files under ``out/methods``.

    Args:
        out: The comparison's output directory.
        methods: Method names, in table order.
        stage: ``fixed`` or ``finetuned``.

    Returns:
        One dict per method: ``method``, ``label``, ``strategy``, ``folds``, ``samples``, ``metric``
        (``accuracy``, or ``mAP`` for a multi-label dataset) and, for each
        column of :data:`COLUMNS`, ``<column>_mean`` / ``<column>_std`` (None where not available:
        no OOD data, or no epistemic part), plus ``per_fold`` with every fold's values.
    """
    rows = []
    base_mb = _stat([m.get("model_mb") for m in _per_fold(Path(out), METHODS["base"], stage)])[0]
    for name in methods:
        method = METHODS[name]
        per_fold = _per_fold(Path(out), method, stage)
        for m in per_fold:  # the memory a method adds to one base network
            if base_mb is not None and m.get("model_mb") is not None:
                m["extra_mb"] = m["model_mb"] - base_mb
        samples = max((int(m.get("samples", 1)) for m in per_fold), default=0)
        metric = "mAP" if per_fold and "accuracy" not in per_fold[0] else "accuracy"  # mAP: multi-label
        keys = {column: metric if key == "accuracy" else key for column, key, _ in COLUMNS}
        row: dict[str, Any] = {
            "method": name,
            "label": method.label,
            "strategy": method.strategy,
            "folds": len(per_fold),
            "samples": samples,
            "metric": metric,
        }
        for column, _, epistemic in COLUMNS:
            usable = not epistemic or samples > 1
            mean, std = _stat([m.get(keys[column]) for m in per_fold]) if usable else (None, None)
            row[f"{column}_mean"], row[f"{column}_std"] = mean, std
        row["per_fold"] = [
            {key: m.get(key) for key in [*keys.values(), "temperature", "prior_precision"] if key in m}
            for m in per_fold
        ]
        rows.append(row)
    return rows


def _markdown(rows: list[dict[str, Any]], title: str, notes: list[str], metric: str) -> str:
    names = [metric if c == "accuracy" else c for c, _, _ in COLUMNS]
    head = [f"{n} {_BETTER.get(n.split(' (')[0], '↑')}" for n in names]
    lines = [f"# {title}", "", *notes, "", "| method | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for row in rows:
        cells = []
        for column, _, _ in COLUMNS:
            mean, std = row[f"{column}_mean"], row[f"{column}_std"]
            cells.append("–" if mean is None else f"{mean:.3f} ± {std:.3f}")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(out: Path, rows: list[dict[str, Any]], title: str, notes: list[str]) -> dict[str, Path]:
    """Write ``comparison.csv``, ``comparison.md`` and ``comparison.json`` atomically.

    Args:
        out: Output directory.
        rows: From :func:`comparison_rows`.
        title: Markdown heading.
        notes: Markdown lines under the heading (dataset, folds, backbone, ...).

    Returns:
        Name -> path of the files.
    """
    import csv
    import io

    metric = "mAP" if any(row["metric"] == "mAP" for row in rows) else "accuracy"
    keys = ["method", "label", "strategy", "folds", "samples"]
    keys += [f"{c}_{part}" for c, _, _ in COLUMNS for part in ("mean", "std")]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([k.replace("accuracy", metric) for k in keys])
    for row in rows:
        writer.writerow(["" if row[k] is None else row[k] for k in keys])
    write_text_atomic(out / "comparison.csv", buffer.getvalue())
    write_text_atomic(out / "comparison.md", _markdown(rows, title, notes, metric))
    write_json_atomic(out / "comparison.json", {"title": title, "notes": notes, "metric": metric, "rows": rows})
    return {name: out / f"comparison.{name}" for name in ("csv", "md", "json")}


def run_compare(config: CompareConfig, ctx: DistContext | None = None) -> list[dict[str, Any]]:
    """Train and evaluate every method on the same data and write the comparison table.

    Args:
        config: The comparison's settings.
        ctx: Distributed context (default: single process on ``config.device``); under ``torchrun``
            every training run is data-parallel and the ensemble's members train in parallel.

    Returns:
        The table rows (see :func:`comparison_rows`) on rank 0, an empty list elsewhere.

    Raises:
        ValueError: For invalid settings or data, or ``resume`` with settings other than the run's.
        vipann.utils.outdirs.OutputDirError: When ``out`` holds files of something else, or a previous
            comparison and neither ``resume`` nor ``overwrite`` is set.
    """
    if ctx is None:
        from vipann.train.distributed import init_distributed

        ctx = init_distributed(config.device or None)
    out = prepare_run_dir(config, "compare", check_only=not ctx.is_main)  # before any work: refusals come first
    ctx.barrier()
    if config.dataset:
        data = {
            "dataset": config.dataset,
            "data_root": config.data_root,
            "ood_root": config.ood_root,
            "model": config.model,
            "folds": config.folds,
            "clip_seconds": config.clip_seconds,
        }
        if not config.ood_root:
            logger.warning("no --ood-root: the OOD columns stay empty")
    else:
        data = _demo_data(config) if ctx.is_main else {}
        ctx.barrier()
        data = data or _demo_data(config)  # other processes find the generated folders
    if ctx.is_main:
        save_config(config, out / "config.yaml")
    for name, method in _runs(config).items():
        logger.info("compare: training %s (%s)", name, method.label)
        run_transfer(transfer_config(config, method, data), ctx)
    if not ctx.is_main:
        return []
    rows = comparison_rows(out, config.methods, config.stage)
    folds = sorted({int(p.parent.parent.name[4:]) for p in out.glob("methods/*/*/fold*/*/metrics.json")})
    notes = [
        f"Dataset: {data['dataset']} ({data['data_root']}), test folds {folds}, {config.stage} stage, "
        f"backbone {data['model'] or 'the AudioSet ResNet54 of each strategy'}; OOD set: {data['ood_root'] or 'none'}.",
        f"Mean ± std over folds. OOD scores and AURC/AUGRC rankings: total predictive entropy (epistemic columns: "
        f"mutual information, only for methods with several samples or members). MCS: mean confidence minus "
        f"accuracy (> 0: over-confident). Ensemble of {config.ensemble_members} members; "
        f"{config.num_samples} Monte-Carlo samples; temperatures fitted on {config.val_fraction:.0%} of the "
        "training clips held out per class.",
        "Costs on this machine: train s = training of the method's network(s) in this stage (the Laplace rows "
        "reuse the base network: its training time), post-hoc s = fitting after training (Laplace posterior, "
        "temperature), ms / clip = prediction time per test clip with all its samples, extra MB = memory beyond "
        "one base network (posterior, members, Flipout variances).",
    ]
    write_comparison(out, rows, "Calibration methods compared", notes)
    return rows
