"""Figures for uncertainty evaluation: retention curves, reliability diagrams, uncertainty box plots.

Every figure has the same size (:data:`FIGSIZE`, saved at :data:`DPI`) and style (:data:`STYLE`), a
title, and one legend that names every mark drawn (curves, bands, reference lines, shaded regions,
box-plot medians, means, boxes, whiskers and outliers). matplotlib is imported inside the functions,
and figures are built with ``matplotlib.figure.Figure`` on the Agg canvas, so nothing here needs a
display or changes pyplot's global state. Every function returns the Figure and, when ``path`` is
given, also writes it as a PNG.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from vipann.metrics.calibration import ReliabilityData
from vipann.metrics.retention import RetentionResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DPI", "FIGSIZE", "STYLE", "plot_reliability", "plot_retention", "plot_uncertainty_boxplots"]

FIGSIZE = (12.0, 3.8)
DPI = 120
STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "figure.titlesize": 11,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "lines.linewidth": 1.6,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.framealpha": 0.85,
    "savefig.dpi": DPI,
}
_BAND = {"percentile": "95 % bootstrap band", "basic": "95 % basic bootstrap band", "bca": "95 % BCa bootstrap band"}
_BAND["t"] = "95 % Student-t band over runs"

Panels = Mapping[str, RetentionResult] | Mapping[str, Mapping[str, RetentionResult]]
Refs = RetentionResult | Mapping[str, RetentionResult] | None


def _figure(n_cols: int, title: str | None) -> tuple[Figure, Any]:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=FIGSIZE, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, n_cols, squeeze=False)[0]
        if title:
            fig.suptitle(title)
    return fig, axes


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        import matplotlib

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with matplotlib.rc_context(STYLE):
            fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return fig


def _np(x: Tensor):
    return x.detach().double().cpu().numpy()


def _ref_for(refs: Refs, panel: str) -> RetentionResult | None:
    if refs is None or isinstance(refs, RetentionResult):
        return refs
    if not isinstance(refs, Mapping):
        raise ValueError("random/oracle must be a RetentionResult, a mapping panel -> RetentionResult, or None")
    return refs.get(panel)


def _low_coverage(curves: list[RetentionResult]) -> tuple[float, float] | None:
    """The x-range (in %) up to the last point where some curve covers too few classes, and that share."""
    worst = None
    for res in curves:
        if res.coverage is None:
            continue
        bad = ~res.reliable
        if bool(bad.any()):
            f = float(res.fractions[bad].max())
            step = float(res.fractions[1] - res.fractions[0]) if res.fractions.numel() > 1 else 0.0
            worst = max(worst or 0.0, 100 * (f + step / 2))
            share = res.min_coverage
    return None if worst is None else (worst, share)


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

    Each curve is drawn with its 95 % band shaded (when it has one); the random and oracle reference
    curves dashed grey and dotted black; retention levels where a curve's mAP covers fewer than its
    ``min_coverage`` share of the classes are shaded grey and named in the legend.

    Args:
        results: Either measure -> :class:`~vipann.metrics.RetentionResult` (one curve per panel), or
            measure -> {curve label -> RetentionResult} (several models per panel, as in the VI-PANN
            figures).
        path: Where to write a PNG, or None.
        title: Figure title.
        random: Reference curve(s): one RetentionResult for every panel, or a mapping measure -> result.
        oracle: Reference curve(s), same forms as ``random``.
        ylabel: y-axis label; defaults to the metric name.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: Empty ``results`` or values of the wrong type.

    Example:
        >>> fig = plot_retention({"entropy": r1, "epistemic": r2, "aleatoric": r3}, "retention.png")
    """
    import matplotlib
    from matplotlib.patches import Patch

    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping of panel name -> RetentionResult (or -> dict)")
    for panel, curves in results.items():
        ok = isinstance(curves, RetentionResult) or (
            isinstance(curves, Mapping) and all(isinstance(c, RetentionResult) for c in curves.values())
        )
        if not ok:
            raise ValueError(f"results[{panel!r}] must be a RetentionResult or a mapping of them")
    fig, axes = _figure(len(results), title)
    with matplotlib.rc_context(STYLE):
        handles: dict[str, Any] = {}
        for ax, (panel, curves) in zip(axes, results.items()):
            flat = isinstance(curves, RetentionResult)
            curves = {"ranked by uncertainty (least uncertain kept)": curves} if flat else dict(curves)
            metric, bands = "", set()
            refs = [(_ref_for(random, panel), "--", "0.45", "random discarding"), None]
            refs[1] = (_ref_for(oracle, panel), ":", "k", "oracle (worst clips discarded first)")
            shown = [res for res in curves.values()] + [r[0] for r in refs if r[0] is not None]
            low = _low_coverage(shown)
            if low is not None:
                share = "some classes have" if low[1] >= 1.0 else f"fewer than {low[1]:.0%} of the classes have"
                label = f"{share} no kept positive" if low[1] >= 1.0 else f"{share} a kept positive"
                handles[label] = ax.axvspan(0, low[0], color="0.85", lw=0, label=label, zorder=0)
            for label, res in curves.items():
                x = 100 * _np(res.fractions)
                (line,) = ax.plot(x, _np(res.mean), label=label)
                handles.setdefault(label, line)
                if res.ci != "none":
                    ax.fill_between(x, _np(res.lower), _np(res.upper), color=line.get_color(), alpha=0.25, lw=0)
                    bands.add(res.ci)
                metric = res.metric
            for ref, style, color, name in refs:
                if ref is not None:
                    (line,) = ax.plot(100 * _np(ref.fractions), _np(ref.mean), style, color=color, lw=1.2, label=name)
                    handles.setdefault(name, line)
            for ci in sorted(bands):
                label = f"{_BAND.get(ci, ci)} (shaded, curve colour)"
                handles.setdefault(label, Patch(facecolor="tab:blue", alpha=0.25, label=label))
            ax.set_title(panel)
            ax.set_xlabel("Data retained (%)")
            ax.set_ylabel(ylabel or {"map": "mAP", "accuracy": "Accuracy"}.get(metric, metric))
            ax.set_xlim(0, 100)
        axes[0].legend(handles=list(handles.values()), loc="best")
    return _save(fig, path)


def plot_reliability(
    data: ReliabilityData, path: str | Path | None = None, title: str | None = None, *, multilabel: bool = False
) -> Figure:
    """Reliability diagram (observed accuracy per confidence bin against the diagonal) and confidence histogram.

    Args:
        data: Output of :func:`vipann.metrics.reliability_diagram`.
        path: Where to write a PNG, or None.
        title: Figure title.
        multilabel: The bins hold (clip, class) forecasts: label the axes "predicted probability" and
            "observed frequency of the label" instead of top-label confidence and accuracy.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: ``data`` is not a ReliabilityData.
    """
    import matplotlib

    if not isinstance(data, ReliabilityData):
        raise ValueError(f"data must be a ReliabilityData; got {type(data).__name__}")
    edges, acc, conf, counts = _np(data.edges), _np(data.accuracy), _np(data.confidence), _np(data.counts)
    left, width = edges[:-1], edges[1:] - edges[:-1]
    filled = counts > 0
    xlabel = "Predicted probability of a label" if multilabel else "Confidence (top label)"
    ylabel = "Observed frequency of the label" if multilabel else "Accuracy"
    fig, (top, bottom) = _figure(2, title)
    with matplotlib.rc_context(STYLE):
        top.bar(left[filled], acc[filled], width[filled], align="edge", color="tab:blue", edgecolor="k", label=ylabel)
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
            label="gap to the mean confidence of the bin",
        )
        top.plot([0, 1], [0, 1], "--", color="0.3", lw=1, label="perfect calibration")
        top.set_title("reliability")
        top.set_xlabel(xlabel)
        top.set_ylabel(ylabel)
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.legend(loc="upper left")
        share = counts / max(counts.sum(), 1)
        bottom.bar(left, share, width, align="edge", color="0.6", edgecolor="k", label="share of forecasts per bin")
        bottom.set_title("confidence histogram")
        bottom.set_xlabel(xlabel)
        bottom.set_ylabel("Share of forecasts")
        bottom.set_xlim(min(0.0, edges[0]), max(1.0, edges[-1]))
        bottom.legend(loc="upper center")
    return _save(fig, path)


def plot_uncertainty_boxplots(
    data: Mapping[str, Tensor] | Mapping[str, Mapping[str, Tensor]],
    path: str | Path | None = None,
    title: str | None = None,
    *,
    ylabel: str | None = None,
) -> Figure:
    """Box plots of per-clip uncertainty, e.g. in-distribution versus OOD (VI-PANN Figures 2, 5, 8, 11).

    Medians are solid orange lines and means dashed green lines, as in the paper; boxes span the
    quartiles, whiskers reach the furthest point within 1.5 IQR, circles are the points beyond.

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
    import matplotlib
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if not isinstance(data, Mapping) or not data:
        raise ValueError("data must be a non-empty mapping of name -> (N,) tensor (or panel -> mapping)")
    nested = all(isinstance(v, Mapping) for v in data.values())
    panels = data if nested else {"": data}
    for boxes in panels.values():
        for name, x in boxes.items():
            if not isinstance(x, Tensor) or x.dim() != 1 or x.numel() == 0:
                raise ValueError(f"data[{name!r}] must be a non-empty (N,) tensor")
    fig, axes = _figure(len(panels), title)
    median = {"color": "tab:orange", "lw": 1.6}
    mean = {"color": "tab:green", "ls": "--", "lw": 1.4}
    with matplotlib.rc_context(STYLE):
        for ax, (panel, boxes) in zip(axes, panels.items()):
            arrays = [_np(x[torch.isfinite(x)]) for x in boxes.values()]
            ax.boxplot(
                arrays, showmeans=True, meanline=True, showfliers=True, medianprops=median, meanprops=mean, widths=0.5
            )
            ax.set_xticks(range(1, len(arrays) + 1), list(boxes))
            ax.set_title(panel)
            ax.set_ylabel(ylabel or (panel if panel else "Uncertainty"))
            ax.grid(False, axis="x")
        handles = [
            Line2D([], [], label="median", **median),
            Line2D([], [], label="mean", **mean),
            Patch(facecolor="white", edgecolor="k", label="box: quartiles (25-75 %)"),
            Line2D([], [], color="k", lw=1, label="whiskers: furthest point within 1.5 IQR"),
            Line2D([], [], color="k", marker="o", ls="", mfc="none", label="points beyond the whiskers"),
        ]
        axes[0].legend(handles=handles, loc="best")
    return _save(fig, path)
