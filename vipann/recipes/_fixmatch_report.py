"""The FixMatch recipe's summary files: Fig. 2, Table I and Table II of paper 004 (private).

:func:`write_report` reads every finished run under ``OUT/<method>/fold<k>/rep<r>/`` (its
``epochs.csv`` and ``metrics.json``) and rewrites:

* ``pseudo_labels.csv``: one row per method, fold, repetition and epoch with the pseudo-label
  counts, the quantity (selected / offered unlabelled clips) and the quality (accuracy of the
  selected pseudo-labels whose true label is known).
* ``pseudo_labels.png`` (Fig. 2): quality and quantity in % per epoch, mean over runs per method.
* ``table1.csv`` / ``table1.md`` (Table I): per semi-supervised method, quality and quantity in %
  over the whole training (all epochs' selections pooled) and in the last epoch, mean over runs.
* ``table2.csv`` / ``table2.md`` (Table II): per method, accuracy on the test fold and on the
  left-out unlabelled clips, mean ± std (sample standard deviation) over folds and repetitions.
  The fully supervised baseline trained on the "unlabelled" clips' labels, so its cell is "–".
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from vipann.recipes.fixmatch_config import METHODS
from vipann.utils.atomic import write_csv_atomic, write_text_atomic

__all__ = ["PSEUDO_COLUMNS", "TABLE1_COLUMNS", "TABLE2_COLUMNS", "collect_runs", "write_report"]

PSEUDO_COLUMNS = (
    "method",
    "fold",
    "repetition",
    "epoch",
    "candidates",
    "selected",
    "scored",
    "correct",
    "quantity",
    "quality",
)
TABLE1_COLUMNS = ("method", "label", "runs", "quality", "quantity", "quality_last", "quantity_last")
TABLE2_COLUMNS = (
    "method",
    "label",
    "runs",
    "test_accuracy_mean",
    "test_accuracy_std",
    "unlabelled_accuracy_mean",
    "unlabelled_accuracy_std",
)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def collect_runs(out: Path, methods: list[str]) -> list[dict[str, Any]]:
    """Every finished run: ``{"method", "fold", "repetition", "metrics", "epochs"}``, in method order."""
    runs = []
    for method in methods:
        for path in sorted((out / method).glob("fold*/rep*/metrics.json")):
            run_dir = path.parent
            epochs: list[dict[str, float]] = []
            if (run_dir / "epochs.csv").is_file():
                with (run_dir / "epochs.csv").open(newline="", encoding="utf-8") as fh:
                    epochs = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]
            runs.append(
                {
                    "method": method,
                    "fold": int(run_dir.parent.name[4:]),
                    "repetition": int(run_dir.name[3:]),
                    "metrics": json.loads(path.read_text(encoding="utf-8")),
                    "epochs": epochs,
                }
            )
    return runs


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _pct(value: float, std: float | None = None) -> str:
    if math.isnan(value):
        return "–"
    return f"{100 * value:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")


def _per_epoch(runs: list[dict[str, Any]], key: str) -> list[float]:
    length = max((len(r["epochs"]) for r in runs), default=0)
    curve = []
    for e in range(length):
        curve.append(_mean_std([r["epochs"][e][key] for r in runs if len(r["epochs"]) > e])[0])
    return curve


def _plot(out: Path, curves: dict[str, dict[str, list[float]]], dataset: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, key, name in ((axes[0], "quality", "(a) pseudo-label quality"), (axes[1], "quantity", "(b) quantity")):
        for label, curve in curves.items():
            values = [100 * v for v in curve[key]]
            ax.plot(range(1, len(values) + 1), values, marker="o" if len(values) < 15 else None, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{key} (%)")
        ax.set_title(f"{name}, {dataset}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    tmp = out / ".pseudo_labels.png.tmp"
    fig.savefig(tmp, format="png", dpi=120)
    tmp.replace(out / "pseudo_labels.png")


def write_report(out: Path, config: Any) -> dict[str, Any]:
    """Rewrite the summary files from every finished run.

    Args:
        out: The run's output directory.
        config: Its :class:`~vipann.recipes.fixmatch.FixMatchConfig`.

    Returns:
        ``{"table1": rows, "table2": rows}`` as written to the CSV files.
    """
    runs = collect_runs(out, list(config.methods))
    pseudo_rows = [
        [r["method"], r["fold"], r["repetition"], *(e[k] if k != "epoch" else int(e[k]) for k in PSEUDO_COLUMNS[3:])]
        for r in runs
        if METHODS[r["method"]].semi_supervised
        for e in r["epochs"]
    ]
    write_csv_atomic(out / "pseudo_labels.csv", PSEUDO_COLUMNS, pseudo_rows)
    table1, table2, curves = [], [], {}
    for method in config.methods:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        label = METHODS[method].label
        test = _mean_std([_number(r["metrics"].get("accuracy")) for r in mine])
        left_out = (float("nan"), float("nan"))
        if not METHODS[method].all_labels:
            left_out = _mean_std([_number(r["metrics"].get("unlabelled_accuracy")) for r in mine])
        table2.append(dict(zip(TABLE2_COLUMNS, (method, label, len(mine), *test, *left_out))))
        if METHODS[method].semi_supervised:
            values = [
                _mean_std([_number(r["metrics"].get(f"pseudo_label_{k}")) for r in mine])[0]
                for k in ("quality", "quantity", "quality_last", "quantity_last")
            ]
            table1.append(dict(zip(TABLE1_COLUMNS, (method, label, len(mine), *values))))
            curves[label] = {k: _per_epoch(mine, k) for k in ("quality", "quantity")}
    write_csv_atomic(out / "table1.csv", TABLE1_COLUMNS, [[r[k] for k in TABLE1_COLUMNS] for r in table1])
    write_csv_atomic(out / "table2.csv", TABLE2_COLUMNS, [[r[k] for k in TABLE2_COLUMNS] for r in table2])
    name = config.dataset
    lines = [
        f"# Table I: pseudo-label quality and quantity in % ({name})",
        "",
        "| Method | quality | quantity | quality (last epoch) | quantity (last epoch) | runs |",
        "|---|---|---|---|---|---|",
    ]
    for r in table1:
        lines.append(
            f"| {r['label']} | {_pct(r['quality'])} | {_pct(r['quantity'])} | {_pct(r['quality_last'])} | "
            f"{_pct(r['quantity_last'])} | {r['runs']} |"
        )
    write_text_atomic(out / "table1.md", "\n".join(lines) + "\n")
    header = " | ".join(r["label"] for r in table2)
    lines = [
        f"# Table II: file-wise accuracy in %, mean ± std over folds and repetitions ({name})",
        "",
        f"| Dataset | {header} |",
        "|---" * (len(table2) + 1) + "|",
        f"| {name} test | " + " | ".join(_pct(r["test_accuracy_mean"], r["test_accuracy_std"]) for r in table2) + " |",
        f"| {name} unlabelled | "
        + " | ".join(_pct(r["unlabelled_accuracy_mean"], r["unlabelled_accuracy_std"]) for r in table2)
        + " |",
        "",
        "Runs (test folds × repetitions): " + ", ".join(f"{r['label']} {r['runs']}" for r in table2) + ".",
    ]
    write_text_atomic(out / "table2.md", "\n".join(lines) + "\n")
    if config.plots and curves:
        _plot(out, curves, name)
    return {"table1": table1, "table2": table2}
