"""Metric-versus-data-retained curves ("uncertainty calibration plots", VI-PANN Figures 1, 3, 4, 6, 7, 9, 10).

Clips are ranked by an uncertainty score; at retention fraction ``f`` the ``ceil(f * N)`` least
uncertain clips are kept (the most uncertain are discarded first) and a metric is computed on them.
A well-calibrated model's curve rises as more uncertain clips are discarded.

Keep rule: ``k_f = ceil(f * N)`` clips (``f * N`` is rounded to 6 decimals first, so 0.07 * 100 keeps 7,
not 8), at least 1. For ``N`` a multiple of 100 and the default fractions this is exactly the rule of
the sister-lab reference code (``plot_ratio_data_retained``), which drops ``p * floor(0.01 N)`` clips for
``p = 0..99``; for other ``N`` that rule keeps up to 99 clips more at the low end (it keeps
``N - 99 * floor(N / 100)`` clips at "1 %"). Ties in uncertainty keep the lower clip index first
(stable sort), so results are deterministic.

The work is vectorised: accuracy curves come from one ranking and one cumulative count per replication;
mAP curves from one bucketing of every class's scores against its positives plus one histogram per
replication (see ``_retention_kernels``), on whatever device the tensors live.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

import vipann.metrics._retention_kernels as K
from vipann.metrics._checks import check_class_targets, check_multihot, check_tensor
from vipann.metrics._stats import student_t_quantile
from vipann.uncertainty import validate_probs

__all__ = ["RetentionResult", "oracle_curve", "random_curve", "retention_curve", "retention_curves"]

Metric = str | Callable[[Tensor, Tensor], Tensor | float]
_METRICS = ("accuracy", "map")


@dataclass(frozen=True)
class RetentionResult:
    """A retention curve with its replications and a 95 % confidence band.

    Attributes:
        fractions: ``(F,)`` retained fractions, increasing, in ``(0, 1]``.
        values: ``(R, F)`` metric per replication (prediction run or bootstrap resample) and fraction.
        mean: ``(F,)`` mean over replications (NaN-aware).
        lower: ``(F,)`` lower end of the 95 % interval (NaN when ``R = 1``).
        upper: ``(F,)`` upper end of the 95 % interval (NaN when ``R = 1``).
        area: Area under the mean curve (trapezoid over ``fractions``) divided by the fraction range.
        metric: Name of the metric ("accuracy", "map", or the callable's ``__name__``).
        ci: How the band was computed: "t" (Student-t over independent runs), "percentile"
            (bootstrap), or "none" (a single replication).
    """

    fractions: Tensor
    values: Tensor
    mean: Tensor
    lower: Tensor
    upper: Tensor
    area: float
    metric: str
    ci: str


def _fractions(fractions: Sequence[float] | Tensor | None) -> Tensor:
    if fractions is None:
        return torch.arange(1, 101, dtype=torch.float64) / 100
    f = torch.as_tensor(fractions, dtype=torch.float64).reshape(-1).cpu()
    if f.numel() == 0:
        raise ValueError("fractions must be non-empty")
    if not bool(torch.isfinite(f).all()) or bool((f <= 0).any()) or bool((f > 1).any()):
        raise ValueError(f"fractions must lie in (0, 1]; got values in [{float(f.min()):g}, {float(f.max()):g}]")
    if f.numel() > 1 and not bool((f[1:] > f[:-1]).all()):
        raise ValueError("fractions must be strictly increasing")
    return f


def _check_runs(probs: Tensor) -> Tensor:
    check_tensor(probs, "probs", "(N, C) or (R, N, C) = (runs, clips, classes)", (2, 3))
    p = probs if probs.dim() == 3 else probs.unsqueeze(0)
    # Values only: in [0, 1], finite. Rows need not sum to 1 (multi-label scores are allowed).
    validate_probs(p, multilabel=True, name="probs")
    return p


def _check_uncertainty(u: Tensor, n: int, name: str) -> Tensor:
    check_tensor(u, name, f"(N,) or (R, N) with N = {n}", (1, 2))
    if u.is_complex() or u.dtype == torch.bool:
        raise ValueError(f"{name} must be real-valued; got dtype {u.dtype}")
    u2 = u if u.dim() == 2 else u.unsqueeze(0)
    if u2.shape[1] != n:
        raise ValueError(f"{name} must have shape (N,) or (R, N) with N = {n} clips; got {tuple(u.shape)}")
    if u2.is_floating_point() and not bool(torch.isfinite(u2).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return u2


def _metric_name(metric: Metric) -> str:
    if callable(metric):
        return getattr(metric, "__name__", type(metric).__name__)
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS} or a callable(probs, targets); got {metric!r}")
    return metric


def _prepare_targets(targets: Tensor, metric: Metric, n: int, c: int) -> Tensor:
    """Class indices for accuracy, bool multi-hot for mAP, unchanged (checked) for callables."""
    check_tensor(targets, "targets", f"(N,) = ({n},) class indices or (N, C) = ({n}, {c}) multi-hot", (1, 2))
    if targets.shape[0] != n:
        raise ValueError(f"targets must have N = {n} rows to match probs; got shape {tuple(targets.shape)}")
    if metric == "accuracy":
        if targets.dim() == 1:
            return check_class_targets(targets, n, c)
        y = check_multihot(targets, (n, c))
        if not bool((y.sum(1) == 1).all()):
            raise ValueError("metric='accuracy' needs one class per clip: (N,) indices or one-hot (N, C) targets")
        return y.float().argmax(1)
    if metric == "map":
        if targets.dim() == 1:
            return torch.nn.functional.one_hot(check_class_targets(targets, n, c), c).bool()
        return check_multihot(targets, (n, c))
    return targets


def _summarise(values: Tensor, fractions: Tensor, name: str, bootstrap: bool) -> RetentionResult:
    values = values.double()
    r = values.shape[0]
    valid = ~torch.isnan(values)
    count = valid.sum(0).double()
    mean = values.nansum(0) / count
    nan = torch.full_like(mean, math.nan)
    if r == 1:
        lower, upper, ci = nan, nan.clone(), "none"
    elif bootstrap:
        q = torch.tensor([0.025, 0.975], dtype=values.dtype, device=values.device)
        lower, upper = torch.nanquantile(values, q, dim=0)
        ci = "percentile"
    else:
        # mean +- t_{0.975, R-1} * s / sqrt(R) over the replications defined at each point.
        dev = torch.where(valid, values - mean, 0.0)
        std = (dev.square().sum(0) / (count - 1)).sqrt()
        t = torch.tensor([student_t_quantile(0.975, max(int(m), 1)) for m in (count - 1).tolist()])
        half = t.to(values) * std / count.sqrt()
        lower, upper, ci = mean - half, mean + half, "t"
    f = fractions.to(mean)
    area = float(mean[0]) if f.numel() == 1 else float(torch.trapezoid(mean, f) / (f[-1] - f[0]))
    return RetentionResult(f, values, mean, lower, upper, area, name, ci)


def _compute(
    probs: Tensor,
    targets: Tensor,
    uncertainties: Mapping[str, Tensor],
    metric: Metric,
    fractions: Tensor,
    replications: int | None,
    bootstrap: int | None,
    generator: torch.Generator | None,
    ignore_empty: bool,
) -> list[Tensor]:
    """Curves ``(R, F)`` for each uncertainty measure; the heavy per-score work is shared."""
    p = _check_runs(probs)
    runs, n, c = p.shape
    y = _prepare_targets(targets, metric, n, c)
    uncs = [_check_uncertainty(u, n, name) for name, u in uncertainties.items()]
    for name, t in [("targets", targets), *uncertainties.items()]:
        if t.device != p.device:
            raise ValueError(f"{name} is on {t.device} but probs is on {p.device}; move them to one device")
    reps = max(runs, *(u.shape[0] for u in uncs))
    if any(r not in (1, reps) for r in (runs, *(u.shape[0] for u in uncs))):
        shapes = ", ".join(str(tuple(u.shape)) for u in uncs)
        raise ValueError(
            f"replication counts disagree: probs (R, N, C) = {tuple(p.shape)} but uncertainty (R, N) = {shapes}; "
            "each must have the same R, or no R axis to share it across runs"
        )
    if replications is not None and (isinstance(replications, bool) or int(replications) < 1):
        raise ValueError(f"replications must be a positive integer (replications per pass); got {replications!r}")
    device = p.device
    k = K.keep_counts(fractions, n).to(device)
    if bootstrap is not None:
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 1:
            raise ValueError(f"bootstrap must be a positive number of resamples; got {bootstrap!r}")
        if reps > 1:
            raise ValueError(
                f"bootstrap needs a single prediction run: probs (N, C) and uncertainty (N,); got R = {reps}"
            )
        rows = torch.randint(0, n, (bootstrap, n), generator=generator).to(device)
        reps = bootstrap
    else:
        rows = None
    # views[i] = (score-matrix index, rows or None, uncertainty of the rows) for replication i.
    out = []
    for u in uncs:
        if rows is not None:
            views = [(0, rows[i], u[0, rows[i]]) for i in range(reps)]
        else:
            views = [(i if runs > 1 else 0, None, u[i if u.shape[0] > 1 else 0]) for i in range(reps)]
        out.append(views)
    flat = [v for views in out for v in views]
    step = replications or len(flat)
    values = torch.empty(len(flat), fractions.numel(), dtype=torch.float64, device=device)
    for lo in range(0, len(flat), step):
        batch = flat[lo : lo + step]
        values[lo : lo + len(batch)] = _batch_values(p, y, batch, metric, k, ignore_empty)
    return list(values.split(reps))


def _batch_values(
    p: Tensor, y: Tensor, batch: list[tuple[int, Tensor | None, Tensor]], metric: Metric, k: Tensor, ignore_empty: bool
) -> Tensor:
    levels = K.retention_levels(torch.stack([u for _, _, u in batch]), k)
    f = k.numel()
    if metric == "accuracy":
        correct = p.argmax(-1) == y  # (runs, N)
        rows = [correct[s] if r is None else correct[s, r] for s, r, _ in batch]
        return K.accuracy_curves(torch.stack(rows), levels, k)
    if metric == "map":
        res = torch.empty(len(batch), f, dtype=torch.float64, device=p.device)
        for s in sorted({s for s, _, _ in batch}):
            idx = [i for i, (si, _, _) in enumerate(batch) if si == s]
            ap = K.ap_curves(p[s], y, [(batch[i][1], levels[i]) for i in idx], f)  # (V, C, F)
            res[idx] = ap.nanmean(1) if ignore_empty else ap.nan_to_num(0.0).mean(1)
        return res
    res = torch.empty(len(batch), f, dtype=torch.float64)
    for i, (s, r, _) in enumerate(batch):
        probs_v, y_v = (p[s], y) if r is None else (p[s, r], y[r])
        for j in range(f):
            keep = levels[i] <= j
            res[i, j] = float(metric(probs_v[keep], y_v[keep]))
    return res.to(p.device)


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
    ignore_empty: bool = True,
) -> RetentionResult:
    """Metric versus fraction of data retained, discarding the most uncertain clips first.

    Replications come either from ``R`` independent prediction runs (``probs`` of shape ``(R, N, C)``
    and/or ``uncertainty`` of shape ``(R, N)``; a 2-d/1-d argument is shared by all runs), giving a
    Student-t band ``mean +- t_{0.975, R-1} s / sqrt(R)``, or from ``bootstrap`` resamples of a single run,
    giving the 2.5-97.5 percentile band. Resampled clip indices are
    ``torch.randint(0, N, (bootstrap, N), generator=generator)``, drawn on the CPU and then moved to the
    data's device, so a seeded CPU generator gives the same resamples everywhere. ``mean`` is the mean
    of the replication curves (NaN-aware: a replication with no kept positive at a point is skipped).

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
        replications: Replications processed per pass, which bounds the ``(replications, C, F)`` per-class
            buffer of the mAP path (relevant for thousands of bootstrap resamples); each pass repeats the
            per-score preparation, so None (all at once) is fastest.
        bootstrap: Number of bootstrap resamples of a single run, or None.
        generator: CPU random generator for the bootstrap indices, for reproducibility.
        ignore_empty: For "map": True averages over the classes with at least one positive among the
            kept clips; False counts the other classes as AP 0 (scikit-learn's macro behaviour).

    Returns:
        A :class:`RetentionResult`.

    Raises:
        ValueError: Bad shapes (say what was expected), empty input, NaN/inf, probabilities outside
            ``[0, 1]``, fractions outside ``(0, 1]`` or not increasing, an unknown metric, or a bootstrap
            request with several runs.

    References:
        Fischer, Orescanin & Eckstrand, "VI-PANN", 2024 (Section 3.3); Filos et al., "A systematic
        comparison of Bayesian deep learning robustness in diabetic retinopathy tasks", 2019.

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
        ignore_empty=ignore_empty,
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
    ignore_empty: bool = True,
) -> dict[str, RetentionResult]:
    """Several uncertainty measures at once (e.g. entropy, epistemic, aleatoric), sharing work.

    Same as :func:`retention_curve` for each entry of ``uncertainties``, but the per-score preparation
    (ranking every class's scores against its positives) is done once per prediction run, and bootstrap
    resamples are shared by all measures (paired comparison). See :func:`retention_curve` for the
    arguments and shapes.

    Args:
        probs: ``(N, C)`` or ``(R, N, C)`` predictions.
        targets: ``(N,)`` class indices or ``(N, C)`` multi-hot.
        uncertainties: Measure name -> ``(N,)`` or ``(R, N)`` uncertainty.
        metric: "accuracy", "map" or a callable.
        fractions: Retained fractions; default ``0.01 ... 1.00``.
        replications: Replications processed per pass, or None.
        bootstrap: Number of bootstrap resamples, or None.
        generator: Random generator for the bootstrap.
        ignore_empty: Class-averaging rule for "map" (see :func:`retention_curve`).

    Returns:
        Measure name -> :class:`RetentionResult`, in the order given.

    Raises:
        ValueError: As :func:`retention_curve`, or an empty ``uncertainties`` mapping.
    """
    if not isinstance(uncertainties, Mapping) or not uncertainties:
        raise ValueError("uncertainties must be a non-empty mapping of name -> (N,) or (R, N) tensor")
    name = _metric_name(metric)
    f = _fractions(fractions)
    vals = _compute(probs, targets, uncertainties, metric, f, replications, bootstrap, generator, ignore_empty)
    return {key: _summarise(v, f, name, bootstrap is not None) for key, v in zip(uncertainties, vals)}


def random_curve(
    probs: Tensor,
    targets: Tensor,
    metric: Metric = "accuracy",
    fractions: Sequence[float] | Tensor | None = None,
    *,
    draws: int = 20,
    generator: torch.Generator | None = None,
    ignore_empty: bool = True,
) -> RetentionResult:
    """Reference curve for an uninformative uncertainty: the expected metric on random subsets.

    For accuracy the expectation is exact and flat: a uniformly random subset of any size has expected
    accuracy equal to the overall accuracy, so ``values`` repeat each run's accuracy. For other metrics
    it is a Monte-Carlo estimate over ``draws`` random rankings; the band is then the Student-t interval
    of that estimate.

    Inputs:
        probs: ``(N, C)`` or ``(R, N, C)``; targets: ``(N,)`` or ``(N, C)``.

    Args:
        probs: Predictions.
        targets: Ground truth.
        metric: "accuracy", "map" or a callable (see :func:`retention_curve`).
        fractions: Retained fractions; default ``0.01 ... 1.00``.
        draws: Random rankings per run for non-accuracy metrics.
        generator: Random generator (CPU) for the rankings.
        ignore_empty: Class-averaging rule for "map".

    Returns:
        A :class:`RetentionResult`.

    Raises:
        ValueError: As :func:`retention_curve`, or ``draws < 1``.
    """
    p = _check_runs(probs)
    runs, n, _ = p.shape
    if metric == "accuracy":
        f = _fractions(fractions)
        y = _prepare_targets(targets, "accuracy", n, p.shape[2])
        acc = (p.argmax(-1) == y).double().mean(1)
        return _summarise(acc[:, None].expand(runs, f.numel()).clone(), f, "accuracy", False)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer; got {draws!r}")
    rand = {str(d): torch.rand(runs, n, generator=generator).to(p.device) for d in range(draws)}
    curves = retention_curves(p, targets, rand, metric, fractions, ignore_empty=ignore_empty)
    values = torch.cat([c.values for c in curves.values()])
    first = next(iter(curves.values()))
    return _summarise(values, first.fractions, first.metric, False)


def oracle_curve(
    probs: Tensor,
    targets: Tensor,
    metric: Metric = "accuracy",
    fractions: Sequence[float] | Tensor | None = None,
    *,
    ignore_empty: bool = True,
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
        ignore_empty: Class-averaging rule for "map".

    Returns:
        A :class:`RetentionResult` (one replication per run).

    Raises:
        ValueError: As :func:`retention_curve`.
    """
    p = _check_runs(probs)
    _, n, c = p.shape
    name = _metric_name(metric)
    if name == "accuracy":
        y = _prepare_targets(targets, "accuracy", n, c)
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
    return retention_curve(p, targets, unc, metric, fractions, ignore_empty=ignore_empty)
