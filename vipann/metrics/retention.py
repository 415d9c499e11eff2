"""Metric-versus-data-retained curves ("uncertainty calibration plots", VI-PANN Figures 1, 3, 4, 6, 7, 9, 10).

Clips are ranked by an uncertainty score; at retention fraction ``f`` the ``ceil(f * N)`` least
uncertain clips are kept (the most uncertain are discarded first) and a metric is computed on them.
A well-calibrated model's curve rises as more uncertain clips are discarded.

Keep rule: ``k_f = ceil(f * N)`` clips (``f * N`` is rounded to 6 decimals first, so 0.07 * 100 keeps 7,
not 8), at least 1. For ``N`` a multiple of 100 and the default fractions this is exactly the rule of
the sister-lab reference code (``plot_ratio_data_retained``), which drops ``p * floor(0.01 N)`` clips for
``p = 0..99``; for other ``N`` that rule keeps up to 99 clips more at the low end.

**The curve is the metric of the data.** ``RetentionResult.mean`` is the metric computed on the clips
themselves (the mean over runs when there are ``R`` independent prediction runs); bootstrap resamples
only give its band, which always contains it.

**Ties.** When clips of equal uncertainty straddle a cut, the curve is the *expected* curve over a
uniformly random order of the tied clips, so it does not depend on the order of the rows: exact for
accuracy (a partially kept tie group contributes its correct count times the kept share), and the mean
over ``tie_permutations`` random tie-breaks for mAP and callables (drawn per clip content with a fixed
seed, so the result is reproducible and unchanged by a row shuffle). Ties between copies of one clip
(bootstrap duplicates) change nothing and need no tie-breaks.

**Classes at low retention (mAP).** Macro AP needs positives: few clips cover few classes. With
``classes="fixed"`` (default) the mean runs over a fixed class set, the classes with a positive among
all clips of the view, and a class without a kept positive scores AP 0 (scikit-learn's convention),
so every point averages the same classes that Table 3's mAP averages: this is what the VI-PANN figures
plot, mAP over AudioSet's classes, whose 20 000-clip evaluation set keeps positives of nearly every
class down to a few per cent retained. ``classes="kept"`` averages only the classes with at least
``min_positives`` kept positives (``min_positives=1``: skip empty classes); at low retention that mean
runs over a few easy classes and climbs toward 1.0 for every ranking, random included. Either way
``coverage`` gives, per point, the share of the fixed classes with at least ``min_positives`` kept
positives, and points below ``min_coverage`` (default 1.0: some class has no kept positive, so the point
is not the mAP of the same classes under either convention) are flagged (``reliable``) and shaded in
the plots.

The work is vectorised: accuracy curves come from one sort and one cumulative count per replication;
mAP curves from one bucketing of every class's scores against its positives plus one histogram per
replication (see ``_retention_kernels``), on whatever device the tensors live.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import vipann.metrics._retention_views as V
from vipann.metrics._checks import check_class_targets, check_multihot, check_tensor
from vipann.metrics.bootstrap import bootstrap_interval, contain, student_t_interval

__all__ = ["RetentionResult", "oracle_curve", "random_curve", "retention_curve", "retention_curves"]

Metric = V.Metric


@dataclass(frozen=True)
class RetentionResult:
    """A retention curve, its replications and its 95 % confidence band.

    Attributes:
        fractions: ``(F,)`` retained fractions, increasing, in ``(0, 1]``.
        values: ``(R, F)`` metric per replication: per prediction run, or per bootstrap resample.
        mean: ``(F,)`` the curve: the metric on the data (single run, with or without bootstrap), or
            the mean over ``R`` independent runs (NaN-aware). Also available as :attr:`point`.
        lower: ``(F,)`` lower end of the 95 % band (NaN when there is a single replication).
        upper: ``(F,)`` upper end of the 95 % band; a bootstrap band is widened, where needed, so that
            ``lower <= mean <= upper``.
        area: Area under the curve (trapezoid over ``fractions``) divided by the fraction range.
        metric: "accuracy", "map", or the callable's ``__name__``.
        ci: How the band was computed: "t" (Student-t over independent runs, float64), "percentile",
            "basic" or "bca" (bootstrap over clips), or "none" (a single replication).
        coverage: ``(F,)`` for "map": share of the fixed classes (those with a positive among all clips)
            that have at least ``min_positives`` kept positives (mean over runs); None otherwise.
        min_coverage: Points with ``coverage`` below this share are not :attr:`reliable`.
        classes: The mAP class set, "fixed" or "kept" ("" for other metrics).
        ties: "none" (no cut splits clips of equal uncertainty), "exact" (accuracy: exact expectation over
            random tie-breaking), "<P> random tie-breaks", or "row order" (``tie_permutations=0``).
    """

    fractions: Tensor
    values: Tensor
    mean: Tensor
    lower: Tensor
    upper: Tensor
    area: float
    metric: str
    ci: str
    coverage: Tensor | None = None
    min_coverage: float = 0.0
    classes: str = ""
    ties: str = "none"

    @property
    def point(self) -> Tensor:
        """``(F,)`` the curve (the same tensor as :attr:`mean`)."""
        return self.mean

    @property
    def reliable(self) -> Tensor:
        """``(F,)`` bool: the metric covers at least ``min_coverage`` of the classes (always True without coverage)."""
        if self.coverage is None:
            return torch.ones_like(self.mean, dtype=torch.bool)
        return self.coverage >= self.min_coverage


def _area(curve: Tensor, f: Tensor) -> float:
    return float(curve[0]) if f.numel() == 1 else float(torch.trapezoid(curve, f) / (f[-1] - f[0]))


def _summarise(raw: dict[str, Any], fractions: Tensor, name: str, settings: dict[str, Any]) -> RetentionResult:
    values, coverage, tied = raw["values"].double(), raw["coverage"], raw["tied"]
    f = fractions.to(values)
    boot = settings["bootstrap"]
    if boot is None:
        if values.shape[0] == 1:
            point, ci = values[0], "none"
            lower, upper = torch.full_like(point, math.nan), torch.full_like(point, math.nan)
        else:
            point, lower, upper = student_t_interval(values)
            ci = "t"
        cov = None if coverage is None else coverage.nanmean(0)
        reps = values
    else:
        point, reps = values[0], values[1 : boot + 1]
        jack = values[boot + 1 :] if settings["interval"] == "bca" else None
        lower, upper = bootstrap_interval(point, reps, method=settings["interval"], jackknife=jack)
        if name in V.METRICS:  # basic and BCa bounds can leave the metric's range
            lower, upper = lower.clamp(0.0, 1.0), upper.clamp(0.0, 1.0)
        lower, upper = contain(point, lower, upper)
        ci = settings["interval"]
        cov = None if coverage is None else coverage[0]
    if not bool(tied.any()):
        ties = "none"
    elif name == "accuracy":
        ties = "exact"
    else:
        ties = f"{settings['tie_permutations']} random tie-breaks" if settings["tie_permutations"] else "row order"
    return RetentionResult(
        f,
        reps,
        point,
        lower,
        upper,
        _area(point, f),
        name,
        ci,
        cov,
        settings["min_coverage"],
        settings["classes"],
        ties,
    )


def retention_curve(
    probs: Tensor,
    targets: Tensor,
    uncertainty: Tensor,
    metric: Metric = "accuracy",
    fractions: Sequence[float] | Tensor | None = None,
    *,
    replications: int | None = None,
    bootstrap: int | None = None,
    generator: torch.Generator | None = None,
    interval: str = "percentile",
    classes: str = "fixed",
    min_positives: int = 1,
    min_coverage: float = 1.0,
    tie_permutations: int = 64,
    ignore_empty: bool | None = None,
) -> RetentionResult:
    """Metric versus fraction of data retained, discarding the most uncertain clips first.

    The curve is the metric on the data. Its band comes either from ``R`` independent prediction runs
    (``probs`` of shape ``(R, N, C)`` and/or ``uncertainty`` of shape ``(R, N)``; a 2-d/1-d argument is
    shared by all runs; the curve is then the mean over runs and the band ``mean +- t_{0.975, R-1}
    s / sqrt(R)``, in float64), or from ``bootstrap`` resamples of the clips of a single run (the
    ``interval`` band of the resampled curves, widened where needed to contain the curve). Resampled
    clip indices are ``torch.randint(0, N, (bootstrap, N), generator=generator)``, drawn on the CPU and
    then moved to the data's device, so a seeded CPU generator gives the same resamples everywhere.
    Ties in uncertainty give the expected curve over random tie-breaking (see the module docstring).

    Inputs:
        probs: ``(N, C)`` or ``(R, N, C)`` predicted probabilities (softmax rows for accuracy, per-class
        sigmoid scores for mAP; only the ranking/arg-max matters, values must lie in ``[0, 1]``).
        targets: ``(N,)`` class indices, or ``(N, C)`` multi-hot (one-hot rows for accuracy).
        uncertainty: ``(N,)`` or ``(R, N)``; larger means more uncertain.

    Args:
        probs: Predictions.
        targets: Ground truth.
        uncertainty: Per-clip uncertainty used for ranking.
        metric: "accuracy" (top-1), "map" (macro average precision over classes, scikit-learn's AP with
            tied scores grouped), or a callable ``metric(probs_subset, targets_subset)`` returning a
            scalar (evaluated in a Python loop: slow, for custom metrics only).
        fractions: Increasing retained fractions in ``(0, 1]``; default ``0.01, 0.02, ..., 1.00``.
        replications: Replications (views) processed per pass, which bounds the ``(replications, C, F)``
            per-class buffer of the mAP path; each pass repeats the per-score preparation, so None (all
            at once) is fastest.
        bootstrap: Number of bootstrap resamples of a single run, or None.
        generator: CPU random generator for the bootstrap indices, for reproducibility.
        interval: Bootstrap band: "percentile" (2.5-97.5 % of the resampled curves), "basic" or "bca"
            (bias-corrected and accelerated; adds ``N`` jackknife curves). See :mod:`vipann.metrics.bootstrap`.
        classes: For "map": "fixed" (default: the classes with a positive among all clips; a class with
            no kept positive scores 0) or "kept" (only classes with ``min_positives`` kept positives).
        min_positives: Kept positives a class needs to count as covered (and, with "kept", averaged).
        min_coverage: Share of the fixed classes a point must cover to be :attr:`RetentionResult.reliable`.
        tie_permutations: Random tie-breaks averaged (mAP and callables) where a cut splits clips of equal
            uncertainty; 0 keeps tied clips in row order (the curve then depends on the row order).
        ignore_empty: Deprecated: True means ``classes="kept"``, False ``classes="fixed"``.

    Returns:
        A :class:`RetentionResult`.

    Raises:
        ValueError: Bad shapes (say what was expected), empty input, NaN/inf, probabilities outside
            ``[0, 1]``, fractions outside ``(0, 1]`` or not increasing, an unknown metric, interval or
            class set, or a bootstrap request with several runs.

    References:
        Fischer, Orescanin & Eckstrand, "VI-PANN", 2024 (Section 3.3); Filos et al., "A systematic
        comparison of Bayesian deep learning robustness in diabetic retinopathy tasks", 2019; Efron &
        Tibshirani, "An Introduction to the Bootstrap", 1993.

    Example:
        >>> probs = torch.softmax(torch.randn(200, 10), -1)
        >>> targets = torch.randint(0, 10, (200,))
        >>> unc = -probs.max(-1).values
        >>> curve = retention_curve(probs, targets, unc, "accuracy")
        >>> curve.values.shape
        torch.Size([1, 100])
    """
    return retention_curves(
        probs,
        targets,
        {"uncertainty": uncertainty},
        metric,
        fractions,
        replications=replications,
        bootstrap=bootstrap,
        generator=generator,
        interval=interval,
        classes=V.classes_of(classes, ignore_empty),
        min_positives=min_positives,
        min_coverage=min_coverage,
        tie_permutations=tie_permutations,
    )["uncertainty"]


def retention_curves(
    probs: Tensor,
    targets: Tensor,
    uncertainties: Mapping[str, Tensor],
    metric: Metric = "accuracy",
    fractions: Sequence[float] | Tensor | None = None,
    *,
    replications: int | None = None,
    bootstrap: int | None = None,
    generator: torch.Generator | None = None,
    interval: str = "percentile",
    classes: str = "fixed",
    min_positives: int = 1,
    min_coverage: float = 1.0,
    tie_permutations: int = 64,
    ignore_empty: bool | None = None,
) -> dict[str, RetentionResult]:
    """Several uncertainty measures at once (e.g. entropy, epistemic, aleatoric), sharing work.

    Same as :func:`retention_curve` for each entry of ``uncertainties``, but the per-score preparation
    (ranking every class's scores against its positives) is done once per prediction run, measures with
    identical values are computed once, and bootstrap resamples are shared by all measures (paired
    comparison). See :func:`retention_curve` for the arguments and shapes.

    Args:
        probs: ``(N, C)`` or ``(R, N, C)`` predictions.
        targets: ``(N,)`` class indices or ``(N, C)`` multi-hot.
        uncertainties: Measure name -> ``(N,)`` or ``(R, N)`` uncertainty.
        metric: "accuracy", "map" or a callable.
        fractions: Retained fractions; default ``0.01 ... 1.00``.
        replications: Views processed per pass, or None.
        bootstrap: Number of bootstrap resamples, or None.
        generator: Random generator for the bootstrap.
        interval: Bootstrap band ("percentile", "basic", "bca").
        classes: mAP class set ("fixed", "kept").
        min_positives: Kept positives for a class to count as covered.
        min_coverage: Coverage share of a reliable point.
        tie_permutations: Random tie-breaks for mAP and callables.
        ignore_empty: Deprecated alias of ``classes``.

    Returns:
        Measure name -> :class:`RetentionResult`, in the order given.

    Raises:
        ValueError: As :func:`retention_curve`, or an empty ``uncertainties`` mapping.
    """
    if not isinstance(uncertainties, Mapping) or not uncertainties:
        raise ValueError("uncertainties must be a non-empty mapping of name -> (N,) or (R, N) tensor")
    classes = V.classes_of(classes, ignore_empty)
    V.check_options(classes, min_positives, min_coverage, tie_permutations, interval)
    name = V.metric_name(metric)
    f = V.check_fractions(fractions)
    settings = {
        "replications": replications,
        "bootstrap": bootstrap,
        "interval": interval,
        "classes": classes if name == "map" else "",
        "min_positives": min_positives,
        "min_coverage": float(min_coverage),
        "tie_permutations": tie_permutations,
    }
    raw = V.compute(probs, targets, uncertainties, metric, f, settings, generator)
    return {key: _summarise(raw[key], f, name, settings) for key in uncertainties}


def random_curve(
    probs: Tensor,
    targets: Tensor,
    metric: Metric = "accuracy",
    fractions: Sequence[float] | Tensor | None = None,
    *,
    draws: int = 20,
    generator: torch.Generator | None = None,
    classes: str = "fixed",
    min_positives: int = 1,
    min_coverage: float = 1.0,
    ignore_empty: bool | None = None,
) -> RetentionResult:
    """Reference curve for an uninformative uncertainty: the expected metric on random subsets.

    For accuracy the expectation is exact and flat: a uniformly random subset of any size has expected
    accuracy equal to the overall accuracy, so ``values`` repeat each run's accuracy. For other metrics
    it is a Monte-Carlo estimate over ``draws`` random rankings (per run; the random rank of a clip is
    drawn per clip content, so the estimate does not depend on the row order); the band is then the
    Student-t interval of that estimate. Pass a seeded ``generator`` for a reproducible curve.

    Inputs:
        probs: ``(N, C)`` or ``(R, N, C)``; targets: ``(N,)`` or ``(N, C)``.

    Args:
        probs: Predictions.
        targets: Ground truth.
        metric: "accuracy", "map" or a callable (see :func:`retention_curve`).
        fractions: Retained fractions; default ``0.01 ... 1.00``.
        draws: Random rankings per run for non-accuracy metrics.
        generator: Random generator (CPU) for the rankings.
        classes: mAP class set ("fixed", "kept"), as in :func:`retention_curve`.
        min_positives: Kept positives for a class to count as covered.
        min_coverage: Coverage share of a reliable point.
        ignore_empty: Deprecated alias of ``classes``.

    Returns:
        A :class:`RetentionResult`.

    Raises:
        ValueError: As :func:`retention_curve`, or ``draws < 1``.
    """
    p = V.check_runs(probs)
    runs, n, _ = p.shape
    classes = V.classes_of(classes, ignore_empty)
    V.check_options(classes, min_positives, min_coverage, 0, "percentile")
    if metric == "accuracy":
        f = V.check_fractions(fractions)
        y = V.prepare_targets(targets, "accuracy", n, p.shape[2])
        acc = (p.argmax(-1) == y).double().mean(1)
        raw = {"values": acc[:, None].expand(runs, f.numel()).clone(), "coverage": None, "tied": torch.zeros(1) > 0}
        settings = {"bootstrap": None, "classes": "", "min_coverage": float(min_coverage), "tie_permutations": 0}
        return _summarise(raw, f, "accuracy", settings)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer; got {draws!r}")
    # Random ranks per clip *content*, so the estimate does not depend on the order of the rows.
    y = V.prepare_targets(targets, metric, n, p.shape[2])
    ids = torch.stack([V.content_ids(p[r], y) for r in range(runs)])  # (runs, N)
    keys = torch.rand(draws, runs, int(ids.max()) + 1, generator=generator, dtype=torch.float64).to(p.device)
    rand = {str(d): keys[d].gather(1, ids) for d in range(draws)}
    kwargs = dict(classes=classes, min_positives=min_positives, min_coverage=min_coverage)
    curves = retention_curves(p, targets, rand, metric, fractions, **kwargs)
    first = next(iter(curves.values()))
    values = torch.cat([c.values for c in curves.values()])
    mean, lower, upper = student_t_interval(values)
    coverage = None if first.coverage is None else torch.stack([c.coverage for c in curves.values()]).mean(0)
    return RetentionResult(
        first.fractions,
        values,
        mean,
        lower,
        upper,
        _area(mean, first.fractions),
        first.metric,
        "t",
        coverage,
        first.min_coverage,
        first.classes,
        "none",
    )


def oracle_curve(
    probs: Tensor,
    targets: Tensor,
    metric: Metric = "accuracy",
    fractions: Sequence[float] | Tensor | None = None,
    *,
    classes: str = "fixed",
    min_positives: int = 1,
    min_coverage: float = 1.0,
    ignore_empty: bool | None = None,
) -> RetentionResult:
    """Reference curve for an uncertainty that knows the answers: the worst clips are discarded first.

    For accuracy the ranking is ``uncertainty = 1 - correct`` (wrong clips first), which is optimal. For
    other metrics the ranking is the per-clip loss: cross-entropy ``-log p_y`` for class-index targets,
    summed binary cross-entropy over classes for multi-hot targets. For mAP this is a strong heuristic
    upper reference, not the exact optimum (choosing the best subset is combinatorial).

    Inputs:
        probs: ``(N, C)`` or ``(R, N, C)``; targets: ``(N,)`` or ``(N, C)``.

    Args:
        probs: Predictions.
        targets: Ground truth.
        metric: "accuracy", "map" or a callable.
        fractions: Retained fractions; default ``0.01 ... 1.00``.
        classes: mAP class set ("fixed", "kept").
        min_positives: Kept positives for a class to count as covered.
        min_coverage: Coverage share of a reliable point.
        ignore_empty: Deprecated alias of ``classes``.

    Returns:
        A :class:`RetentionResult` (one replication per run).

    Raises:
        ValueError: As :func:`retention_curve`.
    """
    p = V.check_runs(probs)
    _, n, c = p.shape
    name = V.metric_name(metric)
    if name == "accuracy":
        y = V.prepare_targets(targets, "accuracy", n, c)
        unc = (p.argmax(-1) != y).double()
    else:
        check_tensor(targets, "targets", f"(N,) = ({n},) class indices or (N, C) = ({n}, {c}) multi-hot", (1, 2))
        eps = torch.finfo(p.dtype).eps
        pc = p.clamp(eps, 1 - eps)
        if targets.dim() == 1:
            y = check_class_targets(targets, n, c)
            unc = -pc.gather(-1, y.expand(p.shape[0], n).unsqueeze(-1)).squeeze(-1).log()
        else:
            yb = check_multihot(targets, (n, c))
            unc = -torch.where(yb, pc.log(), (1 - pc).log()).sum(-1)
    kwargs = dict(classes=V.classes_of(classes, ignore_empty), min_positives=min_positives, min_coverage=min_coverage)
    return retention_curve(p, targets, unc, metric, fractions, **kwargs)
