"""Temperature sweeps and before/after reports: how calibration metrics depend on ``T``.

Lukashevich et al. (paper 001) plot ECE and the reliability-diagram MAE against the temperature on
validation and on test data and find that the optimal temperatures differ; :func:`temperature_sweep`
computes those curves (plus NLL and Brier score) for any split, and :func:`temperature_report` gives
the metrics of one split before and after scaling with a fitted temperature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vipann.calibration._checks import as_mc_logits, as_temperature, check_targets
from vipann.calibration.temperature import scaled_probs
from vipann.metrics import (
    accuracy,
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_mae,
)

__all__ = ["SWEEP_METRICS", "TemperatureSweep", "calibration_metrics", "temperature_report", "temperature_sweep"]

SWEEP_METRICS = ("ece", "nll", "reliability_mae", "brier")


def calibration_metrics(
    probs: Tensor, targets: Tensor, *, multilabel: bool = False, n_bins: int = 15
) -> dict[str, float]:
    """ECE, NLL, reliability-diagram MAE and Brier score of one set of predictions.

    Inputs:
        probs: ``(N, C)`` probabilities; targets: ``(N,)`` class indices or ``(N, C)`` multi-hot.

    Args:
        probs: Predicted (e.g. MC-averaged) probabilities.
        targets: Ground truth.
        multilabel: Every (clip, class) pair is a binary event (True) or top-label reading (False).
        n_bins: Bins of the ECE and of the reliability diagram.

    Returns:
        ``{"ece", "nll", "reliability_mae", "brier"}`` as floats, plus ``"accuracy"`` for multi-class.

    References:
        Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural networks", ICML 2017.
        Lukashevich, Grollmisch & Abeßer, "Temperature scaling for reliable uncertainty estimation:
        Application to automatic music genre classification", 2023 (reliability-diagram MAE).
    """
    kw = {"multilabel": multilabel}
    out = {
        "ece": float(expected_calibration_error(probs, targets, n_bins, **kw)),
        "nll": float(negative_log_likelihood(probs, targets, **kw)),
        "reliability_mae": float(reliability_mae(probs, targets, n_bins, **kw)),
        "brier": float(brier_score(probs, targets, **kw)),
    }
    if not multilabel:
        out["accuracy"] = float(accuracy(probs, targets))
    return out


def temperature_report(
    logits: Tensor,
    targets: Tensor,
    temperature: float | Sequence[float] | Tensor,
    *,
    multilabel: bool = False,
    n_bins: int = 15,
) -> dict[str, dict[str, float]]:
    """Calibration metrics of a split before (``T = 1``) and after temperature scaling.

    Inputs:
        logits: ``(N, C)`` or Monte-Carlo ``(S, N, C)`` raw logits; targets: ``(N,)`` or ``(N, C)``.

    Args:
        logits: The logits.
        targets: Ground truth.
        temperature: The fitted temperature (scalar or ``(C,)``).
        multilabel: Sigmoid (True) or softmax (False) outputs.
        n_bins: Bins of the ECE and reliability MAE.

    Returns:
        ``{"before": metrics, "after": metrics}`` with the keys of :func:`calibration_metrics`.

    References:
        Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural networks", ICML 2017.
    """
    z = as_mc_logits(logits)
    check_targets(targets, z.shape[1], z.shape[2], multilabel)
    return {
        name: calibration_metrics(
            scaled_probs(z, t, multilabel=multilabel), targets, multilabel=multilabel, n_bins=n_bins
        )
        for name, t in (("before", 1.0), ("after", temperature))
    }


@dataclass(frozen=True)
class TemperatureSweep:
    """Calibration metrics over a grid of temperatures, per split.

    Attributes:
        temperatures: ``(K,)`` temperatures (float64, CPU).
        metrics: ``{split: {metric: (K,) tensor}}`` with splits ``"val"`` (and ``"test"``) and the
            metrics of :data:`SWEEP_METRICS`.
    """

    temperatures: Tensor
    metrics: dict[str, dict[str, Tensor]]

    def best(self, metric: str = "nll", split: str = "val") -> float:
        """The grid temperature that minimises ``metric`` on ``split``.

        Args:
            metric: One of :data:`SWEEP_METRICS`.
            split: ``"val"`` or ``"test"``.

        Returns:
            The temperature.

        Raises:
            KeyError: For an unknown split or metric.
        """
        if split not in self.metrics:
            raise KeyError(f"no split {split!r} in this sweep; have {sorted(self.metrics)}")
        if metric not in self.metrics[split]:
            raise KeyError(f"unknown metric {metric!r}; choose one of {SWEEP_METRICS}")
        return float(self.temperatures[int(self.metrics[split][metric].argmin())])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: the temperatures, every curve, and the best ``T`` per split and metric."""
        return {
            "temperatures": self.temperatures.tolist(),
            "metrics": {s: {m: v.tolist() for m, v in curves.items()} for s, curves in self.metrics.items()},
            "best": {s: {m: self.best(m, s) for m in curves} for s, curves in self.metrics.items()},
        }


def temperature_sweep(
    logits_val: Tensor,
    targets_val: Tensor,
    logits_test: Tensor | None = None,
    targets_test: Tensor | None = None,
    *,
    temperatures: Sequence[float] | Tensor | None = None,
    multilabel: bool = False,
    n_bins: int = 15,
) -> TemperatureSweep:
    """ECE, NLL, reliability-diagram MAE and Brier score for a grid of shared temperatures.

    Computing the curves on validation *and* test data shows how far the temperature chosen on
    validation is from the one that would be best on test (paper 001 finds they differ).

    Inputs:
        logits_val, logits_test: ``(N, C)`` or Monte-Carlo ``(S, N, C)`` raw logits (MC samples are
        averaged after scaling); targets: ``(N,)`` class indices or ``(N, C)`` multi-hot.

    Args:
        logits_val: Validation logits.
        targets_val: Validation targets.
        logits_test: Optional test logits.
        targets_test: Test targets (required with ``logits_test``).
        temperatures: The grid (default: 41 values from 0.25 to 8, evenly spaced in ``log2 T``).
        multilabel: Sigmoid (True) or softmax (False) outputs.
        n_bins: Bins of the ECE and reliability MAE.

    Returns:
        A :class:`TemperatureSweep`; ``sweep.best("nll")`` is the grid's validation-NLL optimum.

    Raises:
        ValueError: For invalid logits, targets or temperatures, or test logits without targets.

    References:
        Lukashevich, Grollmisch & Abeßer, "Temperature scaling for reliable uncertainty estimation:
        Application to automatic music genre classification", 2023.
        Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural networks", ICML 2017.

    Example:
        >>> sweep = temperature_sweep(z_val, y_val, z_test, y_test)  # doctest: +SKIP
        >>> sweep.best("reliability_mae", "val"), sweep.best("reliability_mae", "test")  # doctest: +SKIP
    """
    if (logits_test is None) != (targets_test is None):
        raise ValueError("pass both logits_test and targets_test, or neither")
    if temperatures is None:
        grid = torch.logspace(-2, 3, 41, base=2, dtype=torch.float64)
    else:
        grid = torch.as_tensor(temperatures, dtype=torch.float64).flatten().cpu()
        if grid.numel() == 0:
            raise ValueError("temperatures must be non-empty")
        as_temperature(grid, grid.numel(), grid)  # positive and finite
    splits = {"val": (logits_val, targets_val)}
    if logits_test is not None:
        splits["test"] = (logits_test, targets_test)
    metrics: dict[str, dict[str, Tensor]] = {}
    for split, (logits, targets) in splits.items():
        z = as_mc_logits(logits, name=f"logits_{split}")
        check_targets(targets, z.shape[1], z.shape[2], multilabel)
        rows = [
            calibration_metrics(
                scaled_probs(z, float(t), multilabel=multilabel), targets, multilabel=multilabel, n_bins=n_bins
            )
            for t in grid
        ]
        metrics[split] = {m: torch.tensor([r[m] for r in rows], dtype=torch.float64) for m in SWEEP_METRICS}
    return TemperatureSweep(grid, metrics)
