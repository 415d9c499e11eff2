"""Evaluating a finished stage and writing its files (private to :mod:`vipann.recipes.transfer`).

:func:`finish_stage` predicts the test clips (and the OOD clips) ``R`` times with ``S`` Monte-Carlo
samples, sharded over the processes, and writes the stage's evaluation (``metrics.json``,
``retention.csv``, figures, ``predictions.safetensors``), its weights and, with a validation split,
the temperature-scaling outputs (``temperature.json``, ``temperature_sweep.csv``) and the
evaluation of the temperature-scaled predictions in ``calibrated/`` (the same Monte-Carlo logits
divided by ``T``: the two evaluations differ only by the temperature). The model may be an
:class:`~vipann.Ensemble` (its predictions are ``(R, M·S, N, C)``, member-major).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vipann.calibration.posthoc import collect_logits, set_temperature
from vipann.evaluation import evaluate_runs, write_evaluation
from vipann.recipes._posthoc import model_megabytes, timed_logit_runs, write_laplace_outputs
from vipann.recipes._temperature import write_temperature_outputs
from vipann.train.distributed import DistContext, all_gather_rows
from vipann.train.state import save_weights as write_weights
from vipann.utils.atomic import write_json_atomic

__all__ = [
    "STAGES",
    "finish_stage",
    "is_deterministic",
    "logit_runs",
    "mc_logits",
    "save_weights",
    "stage_done",
    "summarise",
    "to_probs",
]

STAGES = ("fixed", "finetuned")
SUMMARY_METRICS = (
    "accuracy",
    "mAP",
    "ECE",
    "NLL",
    "Brier",
    "MCS",
    "ECE_marginal",
    "AURC_entropy",
    "AUGRC_entropy",
    "temperature",
    "pseudo_labels_kept",
    "pseudo_label_accuracy",
)


def is_deterministic(model: nn.Module) -> bool:
    """True for a ``det`` model or an ensemble of ``det`` members (one sample per member suffices)."""
    return getattr(model, "member_method", model.method) == "det"


def _gather_clips(ctx: DistContext, local: Tensor, count: int) -> Tensor:
    """Rows of ``local`` (``(n, ...)``, clips ``rank::world``) of every process, in clip order."""
    gathered = all_gather_rows(ctx, local.contiguous())
    order = torch.cat([torch.arange(r, count, ctx.world_size) for r in range(ctx.world_size)])
    out = torch.empty_like(gathered)
    out[order.to(gathered.device)] = gathered
    return out


def logit_runs(model: nn.Module, waves: Tensor, config: Any, ctx: DistContext, salt: int) -> Tensor:
    """``(R, S, N, C)`` raw logits of R independent Monte-Carlo prediction runs, clips sharded over processes.

    The sampling is :func:`vipann.predict`'s (:func:`vipann.calibration.collect_logits` on whole
    clips, which is what the recipe's fixed-length clips are), so probabilities are
    ``softmax(logits)`` (``sigmoid`` for multi-label) and temperature-scaled ones
    ``softmax(logits / T)`` without predicting again. Deterministic models make one run of one sample.
    """
    deterministic = is_deterministic(model)
    samples = 1 if deterministic else config.num_samples
    mine = torch.arange(ctx.rank, len(waves), ctx.world_size)
    runs = []
    for r in range(1 if deterministic else config.replications):  # det runs would be identical
        gen = torch.Generator(device=ctx.device).manual_seed(config.seed * 1_000_003 + salt * 1009 + r * 7 + ctx.rank)
        runs.append(
            collect_logits(
                model, waves[mine], samples, batch_size=config.eval_batch_size, generator=gen, device=ctx.device
            )
        )
    local = torch.stack(runs).permute(2, 0, 1, 3)  # (n, R, S, C) for gathering by clip
    return _gather_clips(ctx, local, len(waves)).permute(1, 2, 0, 3).float().cpu()


def to_probs(logits: Tensor, multilabel: bool, temperature: float | None = None) -> Tensor:
    """Probabilities of raw logits, optionally divided by a temperature first."""
    z = logits if temperature is None else logits / temperature
    return torch.sigmoid(z) if multilabel else torch.softmax(z, dim=-1)


def mc_logits(
    model: nn.Module, waves: Tensor, samples: int, ctx: DistContext, seed: int, batch_size: int = 16
) -> Tensor:
    """Raw Monte-Carlo logits ``(S, N, C)`` (no temperature), clips sharded; every process gets all, on CPU."""
    mine = torch.arange(ctx.rank, len(waves), ctx.world_size)
    model.to(ctx.device)
    local = collect_logits(
        model, waves[mine], samples, batch_size=batch_size, generator=seed * 1_000_003 + ctx.rank, device=ctx.device
    )
    return _gather_clips(ctx, local.transpose(0, 1), len(waves)).transpose(0, 1).float().cpu()


def save_weights(model: nn.Module, path: Path) -> None:
    """``model.state_dict()`` as safetensors, atomically, with the checksum of its tensors (verified on resume)."""
    write_weights(path, model.state_dict())


def _export(model: nn.Module, directory: Path, scalars: dict, config: Any, title: str, temperature: float | None):
    from vipann.zoo.serialization import save_pretrained

    keep = model.pretrained_cfg
    model.pretrained_cfg = dataclasses.replace(
        keep,
        metrics={config.dataset: {k: v for k, v in scalars.items() if isinstance(v, float) and not math.isnan(v)}},
        metrics_source=f"vipann transfer recipe, {title}",
    )
    if temperature is not None:
        set_temperature(model, temperature)
    try:
        save_pretrained(model, directory, overwrite=True)
    finally:
        model.pretrained_cfg = keep


def finish_stage(
    model: nn.Module,
    stage_dir: Path,
    test: tuple[Tensor, Tensor],
    ood: Tensor | None,
    val: tuple[Tensor, Tensor] | None,
    config: Any,
    ctx: DistContext,
    salt: int,
    title: str,
    clip_ids: list[str],
    *,
    member_dirs: list[Path] | None = None,
    extra: dict[str, Any] | None = None,
    train: tuple[Tensor, Tensor] | None = None,
) -> dict:
    """Evaluate a trained stage and write every output; returns the metrics on rank 0 (``{}`` elsewhere).

    Args:
        model: The trained model, or an :class:`~vipann.Ensemble` of the stage's members.
        stage_dir: The stage's output folder.
        test: ``(waves, targets)`` of the test fold.
        ood: Out-of-distribution clips, or None.
        val: ``(waves, targets)`` of the validation split (temperature scaling), or None.
        config: The run's :class:`~vipann.recipes.transfer.TransferConfig`.
        ctx: Distributed context.
        salt: Seed salt of the predictions.
        title: Figure titles.
        clip_ids: Test clip identifiers.
        member_dirs: For an ensemble, each member's stage folder (weights already saved there).
        extra: Scalars to add to ``metrics.json`` (e.g. pseudo-label counts, ``train_seconds``).
        train: ``(waves, targets)`` the stage trained on: with ``config.laplace`` the post-hoc Laplace
            variants are fitted on them and evaluated (:mod:`vipann.recipes._posthoc`).
    """
    waves, targets = test
    multilabel = model.pretrained_cfg.multilabel
    logits, per_clip = timed_logit_runs(logit_runs, model, waves, config, ctx, salt)
    ood_logits = logit_runs(model, ood, config, ctx, salt + 500) if ood is not None else None
    val_logits = None
    val_seconds = 0.0
    if val is not None:
        start = time.perf_counter()
        samples = 1 if is_deterministic(model) else config.num_samples
        val_logits = mc_logits(model, val[0], samples, ctx, config.seed * 31 + salt, config.eval_batch_size)
        val_seconds = time.perf_counter() - start
    costs = {"predict_ms_per_clip": per_clip, "model_mb": model_megabytes(model), "posthoc_seconds": 0.0}
    costs.update({k: v for k, v in (extra or {}).items() if k == "train_seconds"})
    if getattr(config, "laplace", None) and train is not None and member_dirs is None:
        write_laplace_outputs(
            model,
            stage_dir,
            train,
            test,
            ood,
            config,
            ctx,
            salt,
            title,
            clip_ids,
            costs.get("train_seconds"),
            logit_runs,
        )
    if not ctx.is_main:
        return {}
    probs = to_probs(logits, multilabel)
    ood_probs = to_probs(ood_logits, multilabel) if ood_logits is not None else None
    evaluation = evaluate_runs(probs, targets, multilabel=multilabel, ood_probs=ood_probs)
    evaluation.scalars.update(extra or {})
    evaluation.scalars.update(costs)
    temperature = None
    if val_logits is not None:
        start = time.perf_counter()
        temperature = write_temperature_outputs(
            stage_dir, val_logits, val[1], logits[0], targets, multilabel=multilabel
        )
        fit_seconds = val_seconds + time.perf_counter() - start
        evaluation.scalars["temperature"] = temperature
        cal_probs = to_probs(logits, multilabel, temperature)
        cal_ood = to_probs(ood_logits, multilabel, temperature) if ood_logits is not None else None
        calibrated = evaluate_runs(cal_probs, targets, multilabel=multilabel, ood_probs=cal_ood)
        calibrated.scalars.update({**costs, "temperature": temperature, "posthoc_seconds": fit_seconds})
        write_evaluation(
            calibrated,
            stage_dir / "calibrated",
            probs=cal_probs,
            targets=targets,
            clip_ids=clip_ids,
            ood_probs=cal_ood,
            title=f"{title}, T={temperature:.3g}",
            plots=config.plots,
        )
    write_evaluation(
        evaluation,
        stage_dir,
        probs=probs,
        targets=targets,
        clip_ids=clip_ids,
        ood_probs=ood_probs,
        title=title,
        plots=config.plots,
    )
    stored = temperature if config.calibrated else None
    if member_dirs is None:
        if config.export:
            _export(model, stage_dir / "export", evaluation.scalars, config, title, stored)
        save_weights(model, stage_dir / "model.safetensors")  # last: marks the stage as finished
        return evaluation.scalars
    exports = []
    for index, (member, directory) in enumerate(zip(model.members, member_dirs)):
        if config.export:
            _export(member, directory / "export", evaluation.scalars, config, f"{title}, member {index}", None)
            exports.append(str((directory / "export").resolve()))
    write_json_atomic(
        stage_dir / "ensemble.json",  # last: marks the stage as finished
        {
            "members": len(member_dirs),
            "seeds": [config.seed + m for m in range(len(member_dirs))],
            "weights": [str((d / "model.safetensors").resolve()) for d in member_dirs],
            "exports": exports,
            "temperature": stored,
            "load": "vipann.Ensemble.from_pretrained(['local-dir:' + p for p in exports])",
        },
    )
    return evaluation.scalars


def stage_done(stage_dir: Path) -> bool:
    """Whether a stage finished (its metrics and its weights or ensemble record are written)."""
    weights = (stage_dir / "model.safetensors").is_file() or (stage_dir / "ensemble.json").is_file()
    return weights and (stage_dir / "metrics.json").is_file()


def summarise(out: Path, config: Any) -> None:
    """Rewrite ``summary.csv`` and ``summary.md`` (Table 4 layout) from every finished stage."""
    rows, lines = [], []
    for strategy in config.strategies:
        for stage in STAGES:
            found = sorted((out / strategy).glob(f"fold*/{stage}/metrics.json"))
            if not found:
                continue
            per_fold = [json.loads(p.read_text()) for p in found]
            row: dict[str, Any] = {"strategy": strategy, "stage": stage, "folds": len(per_fold)}
            for name in SUMMARY_METRICS:
                values = [m[name] for m in per_fold if m.get(name) is not None]
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
