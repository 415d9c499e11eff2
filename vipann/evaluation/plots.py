"""Figures for uncertainty evaluation: retention curves, reliability diagrams, uncertainty box plots.

matplotlib is imported inside the functions, and figures are built with ``matplotlib.figure.Figure``
on the Agg canvas, so nothing here needs a display or changes pyplot's global backend. Every function
returns the Figure and, when ``path`` is given, also writes it as a PNG.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vipann.metrics.calibration import ReliabilityData
from vipann.metrics.retention import RetentionResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_reliability", "plot_retention", "plot_uncertainty_boxplots"]

Panels = Mapping[str, RetentionResult] | Mapping[str, Mapping[str, RetentionResult]]
Refs = RetentionResult | Mapping[str, RetentionResult] | None


def _figure(n_cols: int, n_rows: int = 1, **kwargs) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=kwargs.pop("figsize", (4.2 * n_cols, 3.6 * n_rows)), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=120)
    return fig


def _np(x: Tensor):
    return x.detach().double().cpu().numpy()


def _ref_for(refs: Refs, panel: str) -> RetentionResult | None:
    if refs is None or isinstance(refs, RetentionResult):
        return refs
    if not isinstance(refs, Mapping):
        raise ValueError("random/oracle must be a RetentionResult, a mapping panel -> RetentionResult, or None")
    return refs.get(panel)


def plot_retention(
    results: Panels,
    path: str | Path | None = None,
    title: str | None = None,
    *,
    random: Refs = None,
    oracle: Refs = None,
    ylabel: str | None = None,
) -> Figure:
    """Metric versus percentage of data retained, one panel per uncertainty measure.

    Args:
        results: Either measure -> :class:`~vipann.metrics.RetentionResult` (one curve per panel), or
            measure -> {curve label -> RetentionResult} (several models per panel, as in the VI-PANN
            figures). Each curve is drawn with its 95 % band shaded when the band is defined.
        path: Where to write a PNG, or None.
        title: Figure title.
        random: Reference curve(s) drawn dashed grey: one RetentionResult for every panel, or a mapping
            measure -> RetentionResult.
        oracle: Reference curve(s) drawn dotted black, same forms as ``random``.
        ylabel: y-axis label; defaults to the metric name.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: Empty ``results`` or values of the wrong type.

    Example:
        >>> fig = plot_retention({"entropy": r1, "epistemic": r2, "aleatoric": r3}, "retention.png")
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping of panel name -> RetentionResult (or -> dict)")
    fig = _figure(len(results))
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, (panel, curves) in zip(axes, results.items()):
        if isinstance(curves, RetentionResult):
            curves = {panel: curves}
        if not isinstance(curves, Mapping) or not all(isinstance(c, RetentionResult) for c in curves.values()):
            raise ValueError(f"results[{panel!r}] must be a RetentionResult or a mapping of them")
        metric = ""
        for label, res in curves.items():
            x = 100 * _np(res.fractions)
            (line,) = ax.plot(x, _np(res.mean), label=label, lw=1.6)
            if res.ci != "none":
                ax.fill_between(x, _np(res.lower), _np(res.upper), color=line.get_color(), alpha=0.25, lw=0)
            metric = res.metric
        for ref, style, name in ((_ref_for(random, panel), "--", "random"), (_ref_for(oracle, panel), ":", "oracle")):
            if ref is not None:
                color = "0.5" if name == "random" else "k"
                ax.plot(100 * _np(ref.fractions), _np(ref.mean), style, color=color, lw=1.2, label=name)
        ax.set_title(panel)
        ax.set_xlabel("Data retained (%)")
        ax.set_ylabel(ylabel or {"map": "mAP", "accuracy": "Accuracy"}.get(metric, metric))
        ax.set_xlim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_reliability(data: ReliabilityData, path: str | Path | None = None, title: str | None = None) -> Figure:
    """Reliability diagram (accuracy per confidence bin against the diagonal) over a confidence histogram.

    Args:
        data: Output of :func:`vipann.metrics.reliability_diagram`.
        path: Where to write a PNG, or None.
        title: Figure title.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: ``data`` is not a ReliabilityData.
    """
    if not isinstance(data, ReliabilityData):
        raise ValueError(f"data must be a ReliabilityData; got {type(data).__name__}")
    edges, acc, conf, counts = _np(data.edges), _np(data.accuracy), _np(data.confidence), _np(data.counts)
    left, width = edges[:-1], edges[1:] - edges[:-1]
    filled = counts > 0
    fig = _figure(1, 2, figsize=(4.6, 5.6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(left[filled], acc[filled], width[filled], align="edge", color="tab:blue", edgecolor="k", label="Accuracy")
    gap_lo = acc[filled].clip(max=conf[filled])
    gap = abs(conf[filled] - acc[filled])
    top.bar(
        left[filled],
        gap,
        width[filled],
        bottom=gap_lo,
        align="edge",
        facecolor=(1.0, 0.0, 0.0, 0.12),
        edgecolor="tab:red",
        hatch="//",
        lw=0.8,
        label="Gap to confidence",
    )
    top.plot([0, 1], [0, 1], "--", color="0.3", lw=1, label="Perfect calibration")
    top.set_ylabel("Accuracy")
    top.set_ylim(0, 1)
    top.legend(fontsize="small", loc="upper left")
    top.grid(alpha=0.3)
    bottom.bar(left, counts / max(counts.sum(), 1), width, align="edge", color="0.6", edgecolor="k")
    bottom.set_xlabel("Confidence")
    bottom.set_ylabel("Fraction")
    bottom.set_xlim(min(0.0, edges[0]), max(1.0, edges[-1]))
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_uncertainty_boxplots(
    data: Mapping[str, Tensor] | Mapping[str, Mapping[str, Tensor]],
    path: str | Path | None = None,
    title: str | None = None,
    *,
    ylabel: str | None = None,
) -> Figure:
    """Box plots of per-clip uncertainty, e.g. in-distribution versus OOD (VI-PANN Figures 2, 5, 8, 11).

    Medians are solid lines and means dashed lines, as in the paper.

    Args:
        data: Either name -> ``(N,)`` tensor (one panel, one box per name), or panel (e.g. "entropy")
            -> {name (e.g. "ESC-50", "ShipsEar") -> ``(N,)`` tensor}.
        path: Where to write a PNG, or None.
        title: Figure title.
        ylabel: y-axis label (default "Uncertainty" or the panel name).

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: Empty input, or values that are not non-empty 1-d tensors.
    """
    if not isinstance(data, Mapping) or not data:
        raise ValueError("data must be a non-empty mapping of name -> (N,) tensor (or panel -> mapping)")
    nested = all(isinstance(v, Mapping) for v in data.values())
    panels = data if nested else {"": data}
    fig = _figure(len(panels))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel, boxes) in zip(axes, panels.items()):
        arrays = []
        for name, x in boxes.items():
            if not isinstance(x, Tensor) or x.dim() != 1 or x.numel() == 0:
                raise ValueError(f"data[{name!r}] must be a non-empty (N,) tensor")
            arrays.append(_np(x[torch.isfinite(x)]))
        ax.boxplot(arrays, showmeans=True, meanline=True, showfliers=True)
        ax.set_xticks(range(1, len(arrays) + 1), list(boxes))
        ax.set_title(panel)
        ax.set_ylabel(ylabel or (panel if panel else "Uncertainty"))
        ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
