"""The demo report: number formatting, the transfer table, and a markdown-to-HTML writer with embedded PNGs."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import torch

__all__ = ["check", "fmt", "mean_std", "render_html", "table4"]


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or an en dash for a missing or NaN value."""
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def check(claim: str, holds: bool, detail: str) -> dict[str, Any]:
    """One row of the report's checks."""
    return {"claim": claim, "holds": bool(holds), "detail": detail}


def mean_std(values: list[dict], key: str) -> tuple[float | None, float | None]:
    """Mean and standard deviation of ``key`` over result dicts (std None for one value)."""
    xs = [v[key] for v in values if key in v]
    if not xs:
        return None, None
    t = torch.tensor(xs, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(xs) > 1 else None


def table4(results: dict, title: str) -> list[str]:
    """Markdown rows of a transfer table (accuracy fixed and fine-tuned, ECE, epistemic)."""
    lines = [f"| {title} | Fixed | Fine-Tuned | ECE (fine-tuned) | epistemic (fine-tuned) |", "|---|---|---|---|---|"]
    for strategy, stages in results.items():
        cells = []
        for stage, key in (
            ("fixed", "accuracy"),
            ("finetuned", "accuracy"),
            ("finetuned", "ECE"),
            ("finetuned", "mean_epistemic"),
        ):
            mean, std = mean_std(stages.get(stage, []), key)
            cells.append("–" if mean is None else f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return lines


def render_html(markdown_lines: list[str], images: list[tuple[str, Path]]) -> str:
    """A self-contained HTML page from the report's markdown lines and its PNG figures."""
    body = []
    table: list[str] = []

    def flush() -> None:
        if table:
            rows = [r.strip("|").split("|") for r in table if not set(r.replace("|", "").strip()) <= {"-", ":"}]
            cells = "".join(
                "<tr>"
                + "".join(
                    f"<{'th' if i == 0 else 'td'}>{html.escape(c.strip())}</{'th' if i == 0 else 'td'}>" for c in row
                )
                + "</tr>"
                for i, row in enumerate(rows)
            )
            body.append(f"<table>{cells}</table>")
            table.clear()

    for line in markdown_lines:
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    for caption, path in images:
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode()
            body.append(
                f"<figure><img src='data:image/png;base64,{data}'/><figcaption>{html.escape(caption)}"
                "</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:3px 8px}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>vipann demo</title><style>{style}</style>"
        f"</head><body>{''.join(body)}</body></html>"
    )
