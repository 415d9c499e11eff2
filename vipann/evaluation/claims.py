"""Claims decided by paired confidence intervals, with three verdicts.

A claim about an uncertainty method ("accuracy rises as uncertain clips are discarded", "OOD clips are
more uncertain") is decided by a 95 % interval of a paired statistic, never by comparing two point
values:

* :func:`retention_gain`: the area between the uncertainty-ranked retention curve and the
  random-discarding curve, over the retention levels where the metric is defined on enough clips and
  classes; both curves are computed on the same bootstrap resamples of the clips (paired), and over
  the runs and folds when there are several (runs resampled with replacement, folds averaged with
  their clips resampled within each fold);
* :func:`auroc_gain`: AUROC - 0.5 of telling OOD clips from in-distribution clips by an uncertainty,
  in-distribution and OOD clips resampled separately;
* :func:`paired_difference`: the mean per-clip difference of two models on the same clips (e.g.
  fine-tuned minus fixed-feature accuracy).

:func:`decide` turns an interval into "holds", "does not hold" or "inconclusive". For a directional
claim ("the effect is positive") it holds when the whole interval is above 0, does not hold when the
whole interval is below ``margin`` (the effect is at most negligible, or negative), and is inconclusive
otherwise (the interval reaches from at most 0 to at least ``margin``). For an equivalence claim ("the
effect is 0") it holds when the interval lies inside ``(-margin, margin)``, does not hold when the
interval excludes 0 (and is not inside the margin), and is inconclusive otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

import vipann.metrics as metrics
from vipann.metrics.bootstrap import bootstrap_interval, contain

__all__ = ["KINDS", "VERDICTS", "Claim", "Interval", "auroc_gain", "decide", "paired_difference", "retention_gain"]

VERDICTS = ("holds", "does not hold", "inconclusive")
KINDS = ("greater", "equivalent")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided confidence interval.

    Attributes:
        estimate: The statistic on the data.
        lower: Lower end.
        upper: Upper end.
        level: Confidence level.
        resamples: Bootstrap resamples behind the interval.
        detail: What the statistic covers (e.g. the retention range), for the report.
    """

    estimate: float
    lower: float
    upper: float
    level: float = 0.95
    resamples: int = 0
    detail: str = ""

    def text(self, digits: int = 3) -> str:
        """``estimate [lower, upper]`` with signs."""
        if math.isnan(self.estimate):
            return "–"
        return f"{self.estimate:+.{digits}f} [{self.lower:+.{digits}f}, {self.upper:+.{digits}f}]"


def decide(interval: Interval, *, kind: str = "greater", margin: float = 0.0) -> str:
    """The verdict of a claim from its interval (see the module docstring).

    Args:
        interval: The interval of the claimed effect.
        kind: "greater" (the effect is positive) or "equivalent" (the effect is 0 within ``margin``).
        margin: Smallest effect that matters (>= 0).

    Returns:
        "holds", "does not hold" or "inconclusive" (also for an undefined interval).

    Raises:
        ValueError: An unknown kind or a negative margin.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0; got {margin!r}")
    lo, hi = interval.lower, interval.upper
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    if kind == "greater":
        if lo > 0:
            return "holds"
        return "does not hold" if hi < margin else "inconclusive"
    if -margin < lo and hi < margin:
        return "holds"
    return "does not hold" if lo > 0 or hi < 0 else "inconclusive"


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, tested on a run.

    Attributes:
        claim: What is tested on this run.
        statement: The paper's statement it tests (quoted or closely paraphrased).
        source: Where the paper says it (section, figure).
        expected: The verdict the paper reports for it ("holds" or "does not hold").
        statistic: What the interval is of.
        interval: The interval.
        kind: "greater" or "equivalent" (see :func:`decide`).
        margin: Smallest effect that matters.
    """

    claim: str
    statement: str
    source: str
    expected: str
    statistic: str
    interval: Interval
    kind: str = "greater"
    margin: float = 0.0

    @property
    def verdict(self) -> str:
        """The verdict: "holds", "does not hold" or "inconclusive"."""
        return decide(self.interval, kind=self.kind, margin=self.margin)

    @property
    def agrees(self) -> bool | None:
        """Whether this run reaches the paper's verdict (None when inconclusive)."""
        return None if self.verdict == "inconclusive" else self.verdict == self.expected

    def as_dict(self) -> dict:
        """A JSON-ready dict (with the verdict)."""
        return {**asdict(self), "verdict": self.verdict, "agrees": self.agrees}


def _interval(point: Tensor, reps: Tensor, level: float, detail: str = "") -> Interval:
    lower, upper = bootstrap_interval(point, reps, level=level)
    lower, upper = contain(point.double(), lower, upper)
    return Interval(float(point), float(lower), float(upper), level, int(reps.shape[0]), detail)


def _runs(x: Tensor, dims: int) -> Tensor:
    return x if x.dim() == dims + 1 else x.unsqueeze(0)


def retention_gain(
    groups: Sequence[tuple[Tensor, Tensor, Mapping[str, Tensor]]],
    *,
    metric: str,
    fractions: Sequence[float] | Tensor | None = None,
    bootstrap: int = 200,
    draws: int = 8,
    seed: int = 0,
    classes: str = "fixed",
    min_coverage: float = 1.0,
    min_kept: int = 10,
    level: float = 0.95,
    precomputed: Sequence[Mapping[str, metrics.RetentionResult]] | None = None,
) -> dict[str, Interval]:
    """Paired interval of the area between the uncertainty-ranked and the random retention curve.

    The statistic is ``(1 / (1 - f_lo)) * integral over [f_lo, 1] of (curve_u - curve_random)``
    (trapezoid on ``fractions``), positive when discarding the most uncertain clips first does better
    than discarding at random. ``f_lo`` is the first retention level from which on every curve of the
    group keeps at least ``min_kept`` clips and (mAP) covers at least ``min_coverage`` of the classes,
    so the handful-of-clips end does not decide the claim. The random curve is exact for accuracy (flat
    at the accuracy of the resample) and the mean over ``draws`` random rankings for mAP (one random
    rank per clip and draw, the same in every resample). A group's runs share the clip resamples and are
    resampled themselves; the statistic of several groups (folds) is their mean.

    Inputs:
        groups: One ``(probs, targets, uncertainties)`` per fold: probs ``(N, C)`` or ``(R, N, C)``;
        targets ``(N,)`` or ``(N, C)``; uncertainties measure -> ``(N,)`` or ``(R, N)``.

    Args:
        groups: See Inputs (every group has the same measures).
        metric: "accuracy" or "map".
        fractions: Retention levels; default ``0.05, 0.10, ..., 1.00``.
        bootstrap: Resamples.
        draws: Random rankings for the mAP reference.
        seed: Seed of the resamples and random rankings.
        classes: mAP class set (see :func:`vipann.metrics.retention_curve`).
        min_coverage: Share of classes a level must cover to count.
        min_kept: Clips a level must keep to count.
        level: Confidence level.
        precomputed: Optional, per group: measure -> its bootstrap retention curve, computed with
            ``bootstrap`` resamples drawn by ``torch.Generator().manual_seed(seed + g)`` on a grid that
            contains ``fractions`` (as :func:`vipann.evaluation.evaluate_runs` with ``seed + g`` computes
            them), so they are not computed again; single-run groups only.

    Returns:
        Measure -> :class:`Interval` (``detail`` names the retention range of each fold).

    Raises:
        ValueError: No groups, groups with different measures, an unknown metric, fractions that do not
            end at 1.0, or precomputed curves that do not fit.
    """
    if not groups:
        raise ValueError("retention_gain needs at least one (probs, targets, uncertainties) group")
    names = list(groups[0][2])
    if any(list(g[2]) != names for g in groups):
        raise ValueError("every group must have the same uncertainty measures")
    f = torch.arange(5, 101, 5, dtype=torch.float64) / 100 if fractions is None else torch.as_tensor(fractions)
    f = f.double()
    if metric not in ("accuracy", "map") or abs(float(f[-1]) - 1.0) > 1e-12:
        raise ValueError(f"retention_gain needs metric 'accuracy' or 'map' and fractions ending at 1.0; got {metric!r}")
    if precomputed is not None and (
        len(precomputed) != len(groups) or any(_runs(g[0], 2).shape[0] != 1 for g in groups)
    ):
        raise ValueError("precomputed needs one mapping of curves per group, and groups of a single run each")
    gen = torch.Generator().manual_seed(seed + 104729)
    points, reps, ranges = {n: [] for n in names}, {n: [] for n in names}, []
    for g, (probs, targets, uncs) in enumerate(groups):
        p = _runs(probs, 2)
        n = p.shape[1]
        u_runs = {name: _runs(u, 1).expand(p.shape[0], -1) for name, u in uncs.items()}
        keys = {f"random {d}": torch.rand(n, generator=gen, dtype=torch.float64) for d in range(draws)}
        run_point, run_reps, usable = {name: [] for name in names}, {name: [] for name in names}, None
        for r in range(p.shape[0]):
            given = precomputed[g] if precomputed is not None else {}
            measures = {name: u[r] for name, u in u_runs.items() if name not in given}
            if metric == "map":
                measures.update(keys)
            curves = {name: _on_grid(res, f, bootstrap) for name, res in given.items()}
            if measures:
                curves.update(
                    metrics.retention_curves(
                        p[r],
                        targets,
                        measures,
                        metric,
                        f,
                        bootstrap=bootstrap,
                        generator=torch.Generator().manual_seed(seed + g),  # the same clips for every run
                        classes=classes,
                        min_coverage=min_coverage,
                    )
                )
            if usable is None:  # the range is fixed by the first run's curves on the data
                kept = torch.ceil(torch.round(f * n, decimals=6)).clamp(1, n)  # the curves' keep rule
                usable = kept >= min(min_kept, n)
                for res in curves.values():
                    if res.coverage is not None:
                        usable &= res.coverage >= min_coverage
                tail = torch.cumprod(usable.flip(0), 0).flip(0).bool()  # usable from here to 100 %
                usable = tail
            if metric == "map":
                ref_point = torch.stack([curves[k].mean for k in keys]).mean(0)
                ref_reps = torch.stack([curves[k].values for k in keys]).mean(0)
            for name in names:
                res = curves[name]
                if metric != "map":  # random discarding keeps the accuracy of the whole (resampled) set
                    ref_point = res.mean[-1].expand_as(res.mean)
                    ref_reps = res.values[:, -1:].expand_as(res.values)
                run_point[name].append(_area(res.mean - ref_point, f, usable))
                run_reps[name].append(_area(res.values - ref_reps, f, usable))
        lo = float(f[usable][0]) if bool(usable.sum() >= 2) else math.nan
        ranges.append(f"{100 * lo:.0f} to 100 % retained" if lo == lo else "no usable retention range")
        runs = p.shape[0]
        pick = torch.randint(0, runs, (bootstrap, runs), generator=gen)
        for name in names:
            points[name].append(torch.stack(run_point[name]).mean())
            per_run = torch.stack(run_reps[name])  # (R, B)
            reps[name].append(per_run.gather(0, pick.T).mean(0))
    detail = "; ".join(sorted(set(ranges))) if len(set(ranges)) == 1 else "; ".join(ranges)
    return {
        name: _interval(torch.stack(points[name]).mean(), torch.stack(reps[name]).mean(0), level, detail)
        for name in names
    }


def _on_grid(res: metrics.RetentionResult, f: Tensor, bootstrap: int) -> metrics.RetentionResult:
    """A precomputed bootstrap curve restricted to the fractions ``f`` (which it must contain)."""
    if res.ci in ("t", "none") or res.values.shape[0] != bootstrap:
        raise ValueError(f"precomputed curves must be bootstrap curves of {bootstrap} resamples; got ci={res.ci!r}")
    where = (res.fractions[:, None] - f[None, :]).abs() < 1e-9
    if not bool(where.any(0).all()):
        raise ValueError("precomputed curves must contain every fraction of the claim's grid")
    idx = where.double().argmax(0)
    cov = None if res.coverage is None else res.coverage[idx]
    return dataclasses.replace(
        res,
        fractions=f,
        values=res.values[:, idx],
        mean=res.mean[idx],
        lower=res.lower[idx],
        upper=res.upper[idx],
        coverage=cov,
    )


def _area(curve: Tensor, f: Tensor, usable: Tensor) -> Tensor:
    """Mean of ``curve`` over the usable fractions (trapezoid), along the last axis; NaN when fewer than two."""
    if int(usable.sum()) < 2:
        return torch.full(curve.shape[:-1], math.nan, dtype=torch.float64)
    x = f[usable]
    return torch.trapezoid(curve[..., usable], x, dim=-1) / (x[-1] - x[0])


def auroc_gain(
    groups: Sequence[tuple[Tensor, Tensor]], *, bootstrap: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Interval of AUROC - 0.5 for scoring OOD clips above in-distribution ones (ties count half).

    In-distribution and OOD clips are resampled separately (stratified bootstrap); several groups (folds,
    or runs) are averaged with their clips resampled within each group.

    Inputs:
        groups: ``(score_id (N,), score_ood (M,))`` per group; higher scores should mean OOD.

    Args:
        groups: See Inputs.
        bootstrap: Resamples.
        seed: Seed of the resamples.
        level: Confidence level.

    Returns:
        An :class:`Interval`.

    Raises:
        ValueError: No groups.
    """
    if not groups:
        raise ValueError("auroc_gain needs at least one (score_id, score_ood) group")
    gen = torch.Generator().manual_seed(seed)
    points, reps = [], []
    for score_id, score_ood in groups:
        a, b = score_id.double().cpu(), score_ood.double().cpu()
        n, m = a.numel(), b.numel()
        wins = (b[:, None] > a[None, :]).double() + 0.5 * (b[:, None] == a[None, :]).double()  # (M, N)
        points.append(float(metrics.ood_auroc(a, b)) - 0.5)
        w_id = _counts(n, bootstrap, gen)  # (B, N) multiplicities
        w_ood = _counts(m, bootstrap, gen)
        reps.append(((w_ood @ wins) * w_id).sum(1) / (n * m) - 0.5)
    return _interval(torch.tensor(points, dtype=torch.float64).mean(), torch.stack(reps).mean(0), level)


def paired_difference(
    groups: Sequence[tuple[Tensor, Tensor]], *, bootstrap: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Interval of the mean per-clip difference ``a - b`` on the same clips (paired bootstrap over clips).

    Inputs:
        groups: ``(a (N,), b (N,))`` per group (fold), e.g. per-clip correctness of two models.

    Args:
        groups: See Inputs.
        bootstrap: Resamples.
        seed: Seed of the resamples.
        level: Confidence level.

    Returns:
        An :class:`Interval` of the mean over groups of the mean difference.

    Raises:
        ValueError: No groups, or ``a`` and ``b`` of different shapes.
    """
    if not groups:
        raise ValueError("paired_difference needs at least one (a, b) group")
    gen = torch.Generator().manual_seed(seed)
    points, reps = [], []
    for a, b in groups:
        if a.shape != b.shape or a.dim() != 1:
            raise ValueError(f"a and b must be (N,) values of the same clips; got {tuple(a.shape)}, {tuple(b.shape)}")
        d = (a.double() - b.double()).cpu()
        points.append(d.mean())
        reps.append(_counts(d.numel(), bootstrap, gen) @ d / d.numel())
    return _interval(torch.stack(points).mean(), torch.stack(reps).mean(0), level)


def _counts(n: int, bootstrap: int, gen: torch.Generator) -> Tensor:
    """``(B, n)`` float64 multiplicities of ``n`` items in ``B`` resamples with replacement."""
    rows = torch.randint(0, n, (bootstrap, n), generator=gen)
    flat = rows + torch.arange(bootstrap)[:, None] * n
    return torch.bincount(flat.reshape(-1), minlength=bootstrap * n).view(bootstrap, n).double()
