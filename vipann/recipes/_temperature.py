"""Validation splits and the temperature-scaling outputs of a recipe stage (private).

A stage that has a validation split (``val_fraction > 0``) fits one temperature on the validation
clips' raw Monte-Carlo logits (:func:`vipann.calibration.fit_temperature`, NLL of the MC-averaged
probabilities) and writes, next to its ``metrics.json``:

* ``temperature.json``: ``T`` (``at_bound`` when the fit ended at the search bounds, 0.05 or 20),
  the calibration metrics before / after scaling on the validation
  and the test clips (:func:`vipann.calibration.temperature_report`), and the grid temperatures
  that minimise each metric on each split;
* ``temperature_sweep.csv``: ECE, NLL, reliability-diagram MAE and Brier score on validation and
  test over a grid of temperatures (:func:`vipann.calibration.temperature_sweep`), the curves of
  Lukashevich et al. (paper 001).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vipann.calibration import fit_temperature, temperature_report, temperature_sweep
from vipann.calibration.sweep import SWEEP_METRICS
from vipann.utils.atomic import write_csv_atomic, write_json_atomic

__all__ = ["SWEEP_COLUMNS", "check_val_fraction", "stratified_split", "write_temperature_outputs"]

logger = logging.getLogger("vipann.recipes.transfer")

SWEEP_COLUMNS = ["temperature"] + [f"{split}_{m}" for split in ("val", "test") for m in SWEEP_METRICS]


def stratified_split(targets: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Hold out ``fraction`` of the clips of every class as a validation split, reproducibly.

    Each class's clips are shuffled with a generator seeded by ``seed`` and the first
    ``round(fraction * n_class)`` go to validation (multi-label clips are grouped by their first
    positive class, clips without one form their own group). A class with a single clip stays in
    training.

    Args:
        targets: ``(N,)`` class indices or ``(N, C)`` multi-hot targets of the training clips.
        fraction: Fraction in ``(0, 1)``.
        seed: Seed of the shuffle.

    Returns:
        ``(train_index, val_index)``, sorted int64 tensors.

    Raises:
        ValueError: For a fraction outside ``(0, 1)``, or when no clip would be held out or none
            would be left to train on.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    if targets.dim() == 2:
        positive = targets > 0.5
        groups = torch.where(positive.any(1), positive.float().argmax(1), torch.full_like(targets[:, 0].long(), -1))
    else:
        groups = targets.long()
    g = torch.Generator().manual_seed(int(seed))
    held: list[Tensor] = []
    for value in torch.unique(groups):
        members = torch.nonzero(groups == value).flatten()
        count = round(float(fraction) * len(members)) if len(members) > 1 else 0
        count = min(count, len(members) - 1)
        held.append(members[torch.randperm(len(members), generator=g)[:count]])
    val = torch.sort(torch.cat(held)).values if held else torch.empty(0, dtype=torch.long)
    if len(val) == 0:
        raise ValueError(
            f"val_fraction={fraction} holds out no clip of the {len(targets)} training clips; "
            "raise val_fraction or use more training data"
        )
    keep = torch.ones(len(targets), dtype=torch.bool)
    keep[val] = False
    return torch.nonzero(keep).flatten(), val


def _finite(report: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    return {k: {m: (v if math.isfinite(v) else None) for m, v in d.items()} for k, d in report.items()}


def write_temperature_outputs(
    stage_dir: Path,
    val_logits: Tensor,
    val_targets: Tensor,
    test_logits: Tensor,
    test_targets: Tensor,
    *,
    multilabel: bool,
) -> float:
    """Fit ``T`` on validation logits and write ``temperature.json`` and ``temperature_sweep.csv``.

    Args:
        stage_dir: The stage's output folder.
        val_logits: ``(S, Nv, C)`` raw validation logits (``S`` Monte-Carlo samples, or members).
        val_targets: Validation targets.
        test_logits: ``(S, Nt, C)`` raw test logits.
        test_targets: Test targets.
        multilabel: Sigmoid (True) or softmax (False) outputs.

    Returns:
        The fitted temperature.
    """
    val_logits, test_logits = val_logits.double().cpu(), test_logits.double().cpu()
    val_targets, test_targets = val_targets.cpu(), test_targets.cpu()
    if multilabel:
        val_targets, test_targets = val_targets > 0.5, test_targets > 0.5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = float(fit_temperature(val_logits, val_targets, multilabel))
    at_bound = False
    for w in caught:
        if "reached the bounds" in str(w.message):
            at_bound = True
        else:  # anything else is passed on
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if at_bound:
        logger.warning(
            "%s: the temperature fitted on %d validation clips reached its bound (T = %.3g); the validation "
            "split may be too small or the predictions degenerate",
            stage_dir,
            val_logits.shape[1],
            t,
        )
    sweep = temperature_sweep(val_logits, val_targets, test_logits, test_targets, multilabel=multilabel)
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        stage_dir / "temperature.json",
        {
            "temperature": t,
            "at_bound": at_bound,
            "fitted_on": "validation",
            "objective": "NLL of the Monte-Carlo-averaged probabilities",
            "val_clips": int(val_logits.shape[1]),
            "test_clips": int(test_logits.shape[1]),
            "samples": int(val_logits.shape[0]),
            "val": _finite(temperature_report(val_logits, val_targets, t, multilabel=multilabel)),
            "test": _finite(temperature_report(test_logits, test_targets, t, multilabel=multilabel)),
            "sweep_best": sweep.to_dict()["best"],
        },
    )
    rows = []
    for i, temperature in enumerate(sweep.temperatures.tolist()):
        row: list[Any] = [temperature]
        for split in ("val", "test"):
            row += [float(sweep.metrics[split][m][i]) for m in SWEEP_METRICS]
        rows.append(row)
    write_csv_atomic(stage_dir / "temperature_sweep.csv", SWEEP_COLUMNS, rows)
    return t


def check_val_fraction(value: float) -> None:
    """Raise a clear error for a ``val_fraction`` outside ``[0, 1)``."""
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1) (0: no validation split, no temperature), got {value}")
