"""From Monte-Carlo predictions to the paper's evidence: metrics, retention curves, plots, files.

:func:`evaluate_runs` takes ``R`` independent Monte-Carlo prediction runs of one model on one
test set — probabilities ``(R, S, N, C)`` — and returns every summary the VI-PANN paper reports:
classification metrics (accuracy for multi-class; macro mAP, AUC and d-prime for multi-label),
calibration (ECE, MCE, reliability MAE, NLL, Brier, the signed miscalibration score MCS, and the
marginal / weighted / global per-label ECE: multi-hot labels, or the one-hot events of a multi-class
problem, where "marginal" is the classwise ECE), selective prediction (AURC, AUGRC), the
mean uncertainty decomposition, retention curves for entropy / epistemic / aleatoric with 95 %
confidence intervals over the ``R`` runs (a bootstrap over clips for a single run), random and oracle
reference curves, and OOD AUROC/AUPR against out-of-distribution predictions when given.
:func:`write_evaluation` writes them as JSON, CSV and PNG (and the raw predictions as safetensors) so
every figure can be recomputed.

A measure with no spread (every clip has the same value, e.g. the epistemic part of a deterministic
model, which is 0) cannot rank clips: it gets no retention curve, AURC, AUGRC or OOD score, and
:attr:`Evaluation.skipped` says why.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

import vipann.evaluation.plots as plotting
import vipann.metrics as metrics
from vipann.uncertainty import decompose
from vipann.utils.atomic import fsync_path, set_default_mode, write_csv_atomic, write_json_atomic

__all__ = [
    "Evaluation",
    "evaluate_runs",
    "figure_titles",
    "no_spread",
    "write_evaluation",
    "write_figures",
    "write_json_atomic",
]

MEASURES = ("entropy", "epistemic", "aleatoric")


@dataclass
class Evaluation:
    """Everything computed from one set of prediction runs.

    Attributes:
        scalars: Metric name -> mean over runs (and ``<name>_std`` across runs).
        retention: Uncertainty measure -> :class:`vipann.metrics.RetentionResult`.
        random: Random-discard reference curve.
        oracle: Oracle reference curve.
        uncertainty: Measure -> ``(N,)`` per-clip uncertainty of the first run.
        ood_uncertainty: Measure -> ``(M,)`` per-clip uncertainty on OOD data (if given).
        reliability: Reliability-diagram data of the first run.
        multilabel: Output model.
        skipped: Measure -> why it is not scored (no spread), for the measures left out of
            ``retention`` and of the AURC/AUGRC/OOD scalars.
    """

    scalars: dict[str, float]
    retention: dict[str, metrics.RetentionResult]
    random: metrics.RetentionResult
    oracle: metrics.RetentionResult
    uncertainty: dict[str, Tensor]
    reliability: metrics.ReliabilityData
    multilabel: bool
    ood_uncertainty: dict[str, Tensor] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def no_spread(name: str, values: Tensor) -> str | None:
    """Why a measure cannot rank clips (every value the same), or None when it can."""
    if values.numel() and bool(values.max() == values.min()):
        value = float(values.reshape(-1)[0])
        return f"every clip has the same {name} uncertainty ({value:.3g}), so it cannot rank clips"
    return None


def _decomposed(probs: Tensor, multilabel: bool) -> dict[str, Tensor]:
    d = decompose(probs, multilabel)
    return {"entropy": d.total, "epistemic": d.epistemic, "aleatoric": d.aleatoric}


def evaluate_runs(
    probs: Tensor,
    targets: Tensor,
    *,
    multilabel: bool,
    ood_probs: Tensor | None = None,
    n_bins: int = 15,
    fractions: Tensor | None = None,
    bootstrap: int | None = None,
    seed: int = 0,
    interval: str = "percentile",
    classes: str = "fixed",
    min_coverage: float = 1.0,
) -> Evaluation:
    """Summaries of ``R`` Monte-Carlo prediction runs.

    Inputs:
        probs: ``(R, S, N, C)`` probabilities (``R`` runs of ``S`` samples on ``N`` clips), or
            ``(S, N, C)`` for a single run.
        targets: ``(N,)`` class indices (multi-class) or ``(N, C)`` multi-hot (multi-label).
        ood_probs: Optional ``(R, S, M, C)`` / ``(S, M, C)`` predictions on OOD clips.

    Args:
        probs: See Inputs.
        targets: See Inputs.
        multilabel: Independent sigmoid classes (True) or one softmax (False).
        ood_probs: See Inputs.
        n_bins: Calibration bins.
        fractions: Retention fractions (default 1 %, ..., 100 %).
        bootstrap: With a single run (``R = 1``) the retention curves' 95 % band comes from this many
            bootstrap resamples of the clips (default 200); with several runs it is the Student-t
            band over runs and ``bootstrap`` must be None.
        seed: Seed of the bootstrap resamples and of the random-discarding reference curve.
        interval: Bootstrap band of the retention curves ("percentile", "basic", "bca").
        classes: mAP class set of the retention curves ("fixed" or "kept", see
            :func:`vipann.metrics.retention_curve`).
        min_coverage: Share of the classes a retention point must cover to count as reliable.

    Returns:
        An :class:`Evaluation`.

    Raises:
        ValueError: On inconsistent shapes.
    """
    if probs.dim() == 3:
        probs = probs[None]
    if probs.dim() != 4:
        raise ValueError(f"probs must be (R, S, N, C) or (S, N, C), got {tuple(probs.shape)}")
    runs = probs.shape[0]
    means = probs.mean(1)  # (R, N, C)
    per_run: dict[str, list[float]] = {}

    def add(name: str, value: Tensor | float) -> None:
        per_run.setdefault(name, []).append(float(value))

    uncertainties = [_decomposed(p, multilabel) for p in probs]
    stacked = {name: torch.stack([u[name] for u in uncertainties]) for name in MEASURES}
    skipped = {name: why for name in MEASURES if (why := no_spread(name, stacked[name])) is not None}
    scored = [name for name in MEASURES if name not in skipped]
    for r in range(runs):
        mean = means[r]
        if multilabel:
            auc = metrics.macro_roc_auc(mean, targets)
            add("mAP", metrics.mean_average_precision(mean, targets))
            add("AUC", auc)
            add("d_prime", metrics.d_prime(auc))
        else:
            add("accuracy", metrics.accuracy(mean, targets))
        add("ECE", metrics.expected_calibration_error(mean, targets, n_bins, multilabel=multilabel))
        add("MCS", metrics.miscalibration_score(mean, targets, multilabel=multilabel, n_bins=n_bins))
        # Per-class (label) calibration: multi-hot targets, or the one-hot events of a multi-class problem
        # (then "marginal" is the classwise ECE of Kull et al.).
        events = targets if multilabel else torch.nn.functional.one_hot(targets.long(), mean.shape[-1])
        for average in ("marginal", "weighted", "global"):
            value = metrics.multilabel_calibration_error(mean, events, average=average, n_bins=n_bins)
            add(f"ECE_{average}", value)
        add("MCE", metrics.maximum_calibration_error(mean, targets, n_bins, multilabel=multilabel))
        add("reliability_MAE", metrics.reliability_mae(mean, targets, n_bins, multilabel=multilabel))
        add("NLL", metrics.negative_log_likelihood(mean, targets, multilabel=multilabel))
        add("Brier", metrics.brier_score(mean, targets, multilabel=multilabel))
        for name, values in uncertainties[r].items():
            add(f"mean_{name}", values.mean())
            if name in scored:
                kw = {"multilabel": multilabel}
                add(f"AURC_{name}", metrics.aurc(mean, targets, values.double().to(mean.device), **kw))
                add(f"AUGRC_{name}", metrics.augrc(mean, targets, values.double().to(mean.device), **kw))
    scalars: dict[str, float] = {}
    for name, values in per_run.items():
        t = torch.tensor(values, dtype=torch.float64)
        scalars[name] = float(t.mean())
        scalars[f"{name}_std"] = float(t.std()) if runs > 1 else 0.0
    scalars.update({"runs": runs, "samples": probs.shape[1], "clips": probs.shape[2]})

    metric = "map" if multilabel else "accuracy"
    if runs > 1 and bootstrap is not None:
        raise ValueError(f"bootstrap resamples a single run; got {runs} runs (their spread already gives the band)")
    options = {"metric": metric, "fractions": fractions, "classes": classes, "min_coverage": min_coverage}
    retention = {}
    if scored and runs == 1:
        retention = metrics.retention_curves(
            means[0],
            targets,
            {name: stacked[name][0] for name in scored},
            bootstrap=200 if bootstrap is None else bootstrap,
            generator=torch.Generator().manual_seed(seed),
            interval=interval,
            **options,
        )
    elif scored:
        retention = metrics.retention_curves(means, targets, {name: stacked[name] for name in scored}, **options)
    for name, result in retention.items():
        scalars[f"retention_area_{name}"] = float(result.area)
    random = metrics.random_curve(means, targets, generator=torch.Generator().manual_seed(seed + 1), **options)
    oracle = metrics.oracle_curve(means, targets, **options)
    evaluation = Evaluation(
        scalars=scalars,
        retention=retention,
        random=random,
        oracle=oracle,
        uncertainty={name: values[0] for name, values in stacked.items()},
        reliability=metrics.reliability_diagram(means[0], targets, n_bins, multilabel=multilabel),
        multilabel=multilabel,
        skipped=skipped,
    )
    if ood_probs is not None:
        if ood_probs.dim() == 3:
            ood_probs = ood_probs[None]
        ood = _decomposed(ood_probs[0], multilabel)
        evaluation.ood_uncertainty = ood
        for name in MEASURES:
            both = torch.cat([evaluation.uncertainty[name], ood[name]])
            why = no_spread(name, both)
            if why is not None:
                skipped.setdefault(name, why + " (in-distribution and OOD clips alike)")
                continue
            scalars[f"ood_auroc_{name}"] = float(metrics.ood_auroc(evaluation.uncertainty[name], ood[name]))
            scalars[f"ood_aupr_{name}"] = float(metrics.ood_aupr(evaluation.uncertainty[name], ood[name]))
    return evaluation


def write_evaluation(
    evaluation: Evaluation,
    directory: str | os.PathLike[str],
    *,
    probs: Tensor | None = None,
    targets: Tensor | None = None,
    clip_ids: list[str] | None = None,
    ood_probs: Tensor | None = None,
    title: str = "",
    plots: bool = True,
) -> dict[str, Path]:
    """Write an evaluation: ``metrics.json``, ``retention.csv``, PNG figures, ``predictions.safetensors``.

    Args:
        evaluation: From :func:`evaluate_runs`.
        directory: Output directory (created).
        probs: The raw ``(R, S, N, C)`` probabilities to store (so every figure can be redone).
        targets: The targets to store with them.
        clip_ids: Clip identifiers (stored in the safetensors metadata as JSON).
        ood_probs: OOD probabilities to store.
        title: Figure title prefix.
        plots: Also render the PNG figures.

    Returns:
        Name -> path of every file written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {"metrics": write_json_atomic(directory / "metrics.json", evaluation.scalars)}
    if evaluation.skipped:
        written["unscored"] = write_json_atomic(directory / "unscored_measures.json", evaluation.skipped)
    else:
        (directory / "unscored_measures.json").unlink(missing_ok=True)
    rows = []
    fractions = evaluation.random.fractions.tolist()
    curves = {**evaluation.retention, "random": evaluation.random, "oracle": evaluation.oracle}
    parts = ("mean", "lower", "upper", "coverage") if evaluation.multilabel else ("mean", "lower", "upper")
    for i, fraction in enumerate(fractions):
        row: list[Any] = [fraction]
        for result in curves.values():
            row += [float(result.mean[i]), float(result.lower[i]), float(result.upper[i])]
            if evaluation.multilabel:
                row.append(float(result.coverage[i]))
        rows.append(row)
    header = ["fraction"] + [f"{name}_{part}" for name in curves for part in parts]
    write_csv_atomic(directory / "retention.csv", header, rows)
    written["retention_csv"] = directory / "retention.csv"
    if probs is not None:
        tensors = {"probs": probs.detach().float().cpu().contiguous()}
        if targets is not None:
            tensors["targets"] = targets.detach().cpu().contiguous()
        if ood_probs is not None:
            tensors["ood_probs"] = ood_probs.detach().float().cpu().contiguous()
        meta = {"format": "pt", "layout": "probs: (runs, samples, clips, classes)"}
        if clip_ids is not None:
            meta["clip_ids"] = json.dumps(list(clip_ids))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".predictions.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=meta)
            set_default_mode(tmp)  # mkstemp makes 0600; outputs follow the umask
            fsync_path(tmp)
            os.replace(tmp, directory / "predictions.safetensors")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written["predictions"] = directory / "predictions.safetensors"
    if plots:
        written.update(write_figures(evaluation, directory, title))
    return written


def write_figures(evaluation: Evaluation, directory: str | os.PathLike[str], subject: str = "") -> dict[str, Path]:
    """Render an evaluation's figures as PNGs: ``retention.png``, ``reliability.png``, ``ood_boxplots.png``.

    Measures without spread (:attr:`Evaluation.skipped`) get no retention panel and no box plot; with
    no scored measure there is no retention figure, and without OOD predictions no box plot.

    Args:
        evaluation: From :func:`evaluate_runs`.
        directory: Output directory (created).
        subject: What was evaluated; the titles are :func:`figure_titles` of it.

    Returns:
        Name -> path of every figure written (``retention_png``, ``reliability_png``, ``ood_png``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    titles = figure_titles(subject, evaluation.multilabel)
    written = {}
    if evaluation.retention:
        plotting.plot_retention(
            evaluation.retention,
            directory / "retention.png",
            title=titles["retention"],
            random=evaluation.random,
            oracle=evaluation.oracle,
            ylabel="mAP" if evaluation.multilabel else "Accuracy",
        )
        written["retention_png"] = directory / "retention.png"
    plotting.plot_reliability(
        evaluation.reliability,
        directory / "reliability.png",
        title=titles["reliability"],
        multilabel=evaluation.multilabel,
    )
    written["reliability_png"] = directory / "reliability.png"
    data = {
        name: {"in-distribution": evaluation.uncertainty[name], "OOD": evaluation.ood_uncertainty[name]}
        for name in MEASURES
        if name in evaluation.ood_uncertainty and f"ood_auroc_{name}" in evaluation.scalars
    }
    if data:
        plotting.plot_uncertainty_boxplots(data, directory / "ood_boxplots.png", title=titles["ood"])
        written["ood_png"] = directory / "ood_boxplots.png"
    return written


def figure_titles(subject: str, multilabel: bool) -> dict[str, str]:
    """The titles :func:`write_evaluation` gives its figures (a report's captions start with them).

    Args:
        subject: What was evaluated (e.g. "flip-demo"), or "".
        multilabel: mAP (True) or accuracy retention curves.

    Returns:
        ``{"retention": ..., "reliability": ..., "ood": ...}``.
    """
    prefix = f"{subject}: " if subject else ""
    return {
        "retention": f"{prefix}{'mAP' if multilabel else 'accuracy'} vs data retained",
        "reliability": f"{prefix}reliability diagram",
        "ood": f"{prefix}uncertainty on in-distribution vs OOD clips",
    }
