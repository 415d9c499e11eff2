"""The demo report: number formatting, tables, captions, and a markdown-to-HTML writer with embedded PNGs.

The HTML is rendered from the same markdown lines as ``report.md``: headings, paragraphs, bullet
lists, tables (first row as header) and inline ``code`` and **bold**; figures are embedded as PNG data
with their numbered captions. Nothing in it depends on the time or the machine, so the same seed
gives the same report byte for byte.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vipann.evaluation.claims import Claim

__all__ = ["checks_table", "figure_caption", "fmt", "mean_std", "render_html", "table4"]


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or an en dash for a missing or NaN value."""
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def mean_std(values: list[dict], key: str) -> tuple[float | None, float | None]:
    """Mean and standard deviation of ``key`` over result dicts (std None for one value)."""
    xs = [v[key] for v in values if v.get(key) is not None]
    if not xs:
        return None, None
    t = torch.tensor(xs, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(xs) > 1 else None


def table4(results: dict, columns: Sequence[tuple[str, str, str]], first: str) -> list[str]:
    """Markdown rows of a transfer table: one row per strategy, one column per ``(header, stage, key)``."""
    lines = [f"| {first} | " + " | ".join(h for h, _, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for strategy, stages in results.items():
        cells = []
        for _, stage, key in columns:
            mean, std = mean_std(stages.get(stage, []), key)
            cells.append("–" if mean is None else f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return lines


def checks_table(claims: Sequence[Claim]) -> list[str]:
    """The report's checks: claim, VI-PANN's statement (once per statement), interval, verdict, agreement."""
    lines = [
        "| # | claim tested on this run | VI-PANN's statement (its finding) | estimate [95 % CI] | verdict "
        "| same as VI-PANN |",
        "|---|---|---|---|---|---|",
    ]
    first: dict[str, int] = {}
    for i, c in enumerate(claims, 1):
        if c.statement in first:
            said = f"same statement as #{first[c.statement]}"
        else:
            first[c.statement] = i
            said = f"“{c.statement}” ({c.source}; VI-PANN: {c.expected})"
        stat = f"{c.statistic}: {c.interval.text()}"
        if c.interval.detail:
            stat += f", {c.interval.detail}"
        verdict = {"holds": "holds", "does not hold": "**does not hold**", "inconclusive": "inconclusive"}[c.verdict]
        agrees = {True: "yes", False: "**no**", None: "–"}[c.agrees]
        lines.append(f"| {i} | {c.claim} | {said} | {stat} | {verdict} | {agrees} |")
    return lines


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def _inline(text: str) -> str:
    """Escaped HTML of one line of markdown with inline ``code`` and **bold**."""
    parts = _CODE.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(part)}</code>")
        else:
            out.append(_BOLD.sub(r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


def render_html(markdown_lines: list[str], figures: list[tuple[str, Path]], title: str = "vipann demo") -> str:
    """A self-contained HTML page from the report's markdown lines and its PNG figures with captions.

    Args:
        markdown_lines: The report's markdown, one line per item.
        figures: ``(caption, png path)`` in order; missing files are skipped.
        title: The page title.

    Returns:
        The HTML text.
    """
    body: list[str] = []
    table: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if table:
            rows = [r.strip().strip("|").split("|") for r in table if not set(r.replace("|", "").strip()) <= {"-", ":"}]
            cells = "".join(
                "<tr>" + "".join(f"<{t}>{_inline(c.strip())}</{t}>" for c in row) + "</tr>"
                for row, t in zip(rows, ["th"] + ["td"] * len(rows))
            )
            body.append(f"<table>{cells}</table>")
            table.clear()
        if items:
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in markdown_lines:
        if line.startswith("|"):
            table.append(line)
            continue
        if line.startswith("- "):
            items.append(line[2:])
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line.lstrip('# '))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush()
    for caption, path in figures:
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode()
            body.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption.split('.')[0])}'/>"
                f"<figcaption>{_inline(caption)}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1150px;margin:auto;line-height:1.4}table{border-collapse:collapse;"
        "margin:8px 0}td,th{border:1px solid #999;padding:3px 8px;vertical-align:top}th{background:#eee}"
        "img{max-width:100%}figure{margin:24px 0}figcaption{font-size:90%}code{background:#f3f3f3;padding:0 3px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
        f"</head><body>{''.join(body)}</body></html>\n"
    )


def figure_caption(number: int, title: str, kind: str, facts: dict[str, Any]) -> str:
    """A figure's caption: its number, its title (the one drawn in the figure), then what every mark means."""
    if kind == "retention":
        metric = facts["metric"]
        text = (
            f"Curves: {metric} of the clips kept when the most uncertain are discarded first, ranked by the measure "
            f"of each panel; shaded: {facts['band']}, which always contains the curve; dashed grey: random "
            f"discarding ({facts['random']}); dotted black: the oracle that discards the worst clips first."
        )
        if metric == "mAP":
            text += (
                " mAP averages the fixed set of classes with a positive among all clips, the classes Table 3's mAP "
                "averages, as VI-PANN's Figure 1 plots mAP over AudioSet's classes (a class without a kept positive "
                "counts 0); grey region: "
                + (
                    "some of them have no kept positive"
                    if facts["coverage"] >= 1.0
                    else f"fewer than {facts['coverage']:.0%} of them have a kept positive"
                )
                + ", so there the curve measures which classes are left more than how well clips are ranked."
            )
        if facts.get("ties"):
            text += (
                f" Clips of equal uncertainty at a cut: the expected curve over random tie-breaking ({facts['ties']})."
            )
    elif kind == "reliability":
        what = "labels (clip, class forecasts)" if facts["multilabel"] else "top-label predictions"
        text = (
            f"Left: observed frequency per bin of 15 equal-width confidence bins of the {what}, against the "
            "diagonal; hatched: the gap to the bin's mean confidence. Right: share of the forecasts per bin."
        )
    else:
        text = (
            f"Per-clip uncertainty of the {facts['n_id']} in-distribution clips and the {facts['n_ood']} OOD clips; "
            "orange: median, dashed green: mean, box: quartiles, whiskers: furthest point within 1.5 IQR."
        )
    for measure, why in facts.get("skipped", {}).items():
        text += f" No {measure} panel: {why}."
    return f"Figure {number}. {title}. {text}"
