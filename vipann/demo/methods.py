"""The demo's "calibration methods compared" step: every ``vipann compare`` method on the downstream task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vipann.demo.report import fmt

__all__ = ["METHODS_COMPARED", "compare_section"]

# Every `vipann compare` method but focal loss (a training loss, not an uncertainty method).
METHODS_COMPARED = (
    "base",
    "mc-dropout",
    "flip",
    "detflip",
    "ensemble",
    "sngp",
    "temperature",
    "laplace",
    "laplace-head",
    "ivon",
)


def compare_section(out: Path, size: dict[str, Any], seed: int, progress: bool) -> list[str]:
    """Every calibration method on the downstream task (``vipann compare``), as report lines.

    Args:
        out: The demo's output directory (the comparison goes to ``out/compare``).
        size: One of :data:`vipann.demo.run.SIZES` (its ``compare`` entry sizes the run).
        seed: Seed of every random draw.
        progress: Progress bars.

    Returns:
        Markdown lines: the heading, the comparison's notes and table, and Laplace's distance to Flip.
    """
    from vipann.recipes.compare import CompareConfig, run_compare

    config = CompareConfig(
        out=str(out / "compare"),
        methods=list(METHODS_COMPARED),
        num_samples=size["transfer_samples"],
        feature_draws=size["feature_draws"],
        demo_clips_per_class=size["per_fold"],
        demo_ood_clips=size["ood_clips"],
        seed=seed,
        device="cpu",
        progress=progress,
        **size["compare"],
    )
    run_compare(config)
    table = (out / "compare" / "comparison.md").read_text(encoding="utf-8").splitlines()
    rows = [line for line in table if line.startswith("|")]
    notes = [line for line in table[1:] if line and not line.startswith("|")]
    lines = [
        "",
        "## Calibration methods compared (downstream task, fixed-feature stage)",
        "",
        "How close does post-hoc Laplace get to Flip, and at what cost? The Laplace rows take the trained det "
        "network as it is and fit a posterior to its head in one pass over the training clips (no retraining); "
        "IVON trains the det network with a variational optimizer instead of Adam.",
        "",
        *notes,
        "",
        *rows,
    ]
    rows_json = {r["method"]: r for r in json.loads((out / "compare" / "comparison.json").read_text())["rows"]}
    flip, laplace = rows_json.get("flip"), rows_json.get("laplace")
    if flip and laplace:

        def pair(column: str) -> str:
            return f"{fmt(laplace[f'{column}_mean'])} vs {fmt(flip[f'{column}_mean'])}"

        lines += [
            "",
            f"Laplace (last layer) vs Flip: ECE {pair('ECE')}, OOD AUROC (epistemic) {pair('OOD AUROC (epistemic)')}, "
            f"retention area {pair('retention area')}; Laplace fits in {fmt(laplace['post-hoc s_mean'], 1)} s "
            f"on top of the det training ({fmt(laplace['train s_mean'], 1)} s), "
            f"Flip trains in {fmt(flip['train s_mean'], 1)} s; "
            f"prediction {pair('ms / clip')} ms per clip; extra memory {pair('extra MB')} MB.",
        ]
    return lines
