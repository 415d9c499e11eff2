"""Views, ties and class coverage behind the retention curves (private to :mod:`vipann.metrics.retention`).

A *view* is one data set a curve is computed on: the clips of one prediction run, a bootstrap
resample of them, or a jackknife sample (one clip left out), given as row indices. :func:`compute`
evaluates many views in batches and returns, per view, the curve, the share of classes it covers
(mAP) and whether a cut split a tie group of distinct clips.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import vipann.metrics._retention_kernels as K
from vipann.metrics._checks import check_class_targets, check_multihot, check_tensor
from vipann.metrics.bootstrap import METHODS
from vipann.uncertainty import validate_probs

Metric = str | Callable[[Tensor, Tensor], Tensor | float]
METRICS = ("accuracy", "map")
CLASSES = ("fixed", "kept")

# Tie-breaking keys are drawn from this seed per clip *content* (not row position), so curves are
# reproducible and exactly invariant under row shuffles.
TIE_SEED = 20240229


@dataclass(frozen=True)
class View:
    """One data set: score matrix ``score``, rows (None: all clips) and their uncertainty."""

    score: int
    rows: Tensor | None
    uncertainty: Tensor


@dataclass
class Batch:
    """Per-view ``values`` and ``coverage`` ``(V, F)`` float64 (coverage None unless mAP) and ``tied`` ``(V,)``."""

    values: Tensor
    coverage: Tensor | None
    tied: Tensor


def content_ids(scores: Tensor, targets: Tensor) -> Tensor:
    """``(N,)`` ids, equal exactly for clips with identical scores and targets, independent of row order."""
    content = torch.cat([scores.double(), targets.reshape(targets.shape[0], -1).double()], 1) + 0.0  # -0.0 -> 0.0
    return torch.unique(content, dim=0, return_inverse=True)[1]


class Engine:
    """Evaluates views of one problem: ``(runs, N, C)`` scores, prepared targets, metric and keep counts.

    Args:
        p: ``(runs, N, C)`` scores.
        y: Prepared targets (class indices for accuracy, bool multi-hot for mAP, as given otherwise).
        metric: "accuracy", "map" or a callable.
        fractions: ``(F,)`` retained fractions (keep counts follow each view's number of rows).
        classes: "fixed" or "kept" (mAP class set, see :func:`vipann.metrics.retention_curve`).
        min_positives: Kept positives a class needs to count as covered (and, for "kept", to be averaged).
        tie_permutations: Random tie-breaks averaged for mAP and callables where a cut splits distinct clips.
    """

    def __init__(
        self,
        p: Tensor,
        y: Tensor,
        metric: str | Callable,
        fractions: Tensor,
        classes: str,
        min_positives: int,
        tie_permutations: int,
    ) -> None:
        self.p, self.y, self.metric, self.fractions = p, y, metric, fractions
        self._k: dict[int, Tensor] = {}
        self.classes, self.min_positives, self.permutations = classes, min_positives, tie_permutations
        self._ids: dict[int, Tensor] = {}
        self._correct: Tensor | None = None
        self._keys: dict[tuple[int, int], Tensor] = {}

    def k(self, rows: int) -> Tensor:
        """``(F,)`` keep counts of a view of ``rows`` rows."""
        if rows not in self._k:
            self._k[rows] = K.keep_counts(self.fractions, rows).to(self.p.device)
        return self._k[rows]

    def ids(self, score: int) -> Tensor:
        if score not in self._ids:
            self._ids[score] = content_ids(self.p[score], self.y)
        return self._ids[score]

    def keys(self, view: View) -> Tensor:
        """``(P, M)`` random tie-breaking keys of a view's rows: i.i.d. uniform per row, row-order free.

        The key of a row depends only on its clip content and on which copy of that content it is, so
        a row shuffle (which can only exchange identical copies) leaves every ranking unchanged.
        """
        ids = self.ids(view.score)[self._rows(view)]
        order = torch.argsort(ids, stable=True)
        sorted_ids = ids[order]
        first = torch.searchsorted(sorted_ids, sorted_ids, right=False)
        copy = torch.empty_like(ids)
        copy[order] = torch.arange(ids.shape[0], device=ids.device) - first
        depth = int(copy.max()) + 1
        cache = (view.score, depth)
        if cache not in self._keys:
            n_ids = int(self.ids(view.score).max()) + 1
            gen = torch.Generator().manual_seed(TIE_SEED + 7919 * view.score + depth)
            table = torch.rand(self.permutations, n_ids, depth, generator=gen, dtype=torch.float64)
            self._keys[cache] = table.to(ids.device)
        return self._keys[cache][:, ids, copy]

    def _rows(self, view: View) -> Tensor:
        n = self.p.shape[1]
        return torch.arange(n, device=self.p.device) if view.rows is None else view.rows

    def tied(self, views: list[View]) -> Tensor:
        """Whether some cut of each view keeps part of a tie group of distinct clips."""
        out = torch.zeros(len(views), dtype=torch.bool)
        groups: dict[int, list[int]] = {}
        for i, view in enumerate(views):
            groups.setdefault(view.uncertainty.shape[0], []).append(i)
        for rows, idx in groups.items():  # one batched check per view length
            unc = torch.stack([views[i].uncertainty for i in idx])
            ids = torch.stack([self.ids(views[i].score)[self._rows(views[i])] for i in idx])
            out[idx] = K.split_ties(unc, ids, self.k(rows)).cpu()
        return out

    def run(self, views: list[View]) -> Batch:
        if self.metric == "accuracy":  # exact in closed form whatever the ties
            return Batch(*self._accuracy(views))
        tied = self.tied(views)
        # Every view whose ranking depends on the tie-breaking is evaluated once per random tie-break.
        expanded: list[tuple[int, View, Tensor | None]] = []
        for i, view in enumerate(views):
            if tied[i] and self.permutations > 0:
                expanded += [(i, view, key) for key in self.keys(view)]
            else:
                expanded.append((i, view, None))
        if self.metric == "map":
            values, coverage = self._map(expanded)
        else:
            values, coverage = self._callable(expanded), None
        if len(expanded) == len(views):  # no tie-breaks: one evaluation per view
            return Batch(values, coverage, tied)
        owner = torch.tensor([i for i, _, _ in expanded], device=values.device)
        counts = torch.bincount(owner, minlength=len(views)).double()[:, None]
        mean = torch.zeros(len(views), values.shape[1], dtype=torch.float64, device=values.device)
        mean = mean.index_add_(0, owner, values.nan_to_num(0.0))
        defined = torch.zeros_like(mean).index_add_(0, owner, (~torch.isnan(values)).double())
        # NaN only where every tie-break is undefined; otherwise the mean over the defined ones.
        values = (mean / defined).where(defined > 0, math.nan)
        if coverage is not None:
            coverage = torch.zeros_like(mean).index_add_(0, owner, coverage.nan_to_num(0.0)) / counts
        return Batch(values, coverage, tied)

    def _accuracy(self, views: list[View]) -> tuple[Tensor, None, Tensor]:
        if self._correct is None:
            self._correct = self.p.argmax(-1) == self.y  # (runs, N)
        out = torch.empty(len(views), self.fractions.numel(), dtype=torch.float64, device=self.p.device)
        tied = torch.zeros(len(views), dtype=torch.bool)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, view in enumerate(views):
            groups.setdefault((view.score, view.uncertainty.shape[0]), []).append(i)
        for (score, m), idx in groups.items():  # one batched computation per run and view length
            rows = torch.stack([self._rows(views[i]) for i in idx])
            unc = torch.stack([views[i].uncertainty for i in idx])
            out[idx], split = K.expected_accuracy_curves(self._correct[score][rows], unc, self.k(m))
            tied[idx] = split.cpu()
        return out, None, tied

    def _map(self, expanded: list[tuple[int, View, Tensor | None]]) -> tuple[Tensor, Tensor]:
        f = self.fractions.numel()
        values = torch.empty(len(expanded), f, dtype=torch.float64, device=self.p.device)
        coverage = torch.empty_like(values)
        for s in sorted({view.score for _, view, _ in expanded}):
            idx = [j for j, (_, view, _) in enumerate(expanded) if view.score == s]
            levels, present = self._levels_and_classes([expanded[j] for j in idx])
            pairs = [(expanded[j][1].rows, lv) for j, lv in zip(idx, levels)]
            ap, kept = K.ap_curves(self.p[s], self.y, pairs, f)  # (V, C, F) each
            covered = (kept >= self.min_positives) & present[:, :, None]
            n_present = present.sum(1, keepdim=True).double()
            coverage[idx] = (covered.sum(1).double() / n_present).where(n_present > 0, math.nan)
            if self.classes == "fixed":
                score = ap.nan_to_num(0.0).where(present[:, :, None], 0.0).sum(1) / n_present
                values[idx] = score.where(n_present > 0, math.nan)
            else:
                n_cov = covered.sum(1).double()
                score = ap.nan_to_num(0.0).where(covered, 0.0).sum(1) / n_cov
                values[idx] = score.where(n_cov > 0, math.nan)
        return values, coverage

    def _levels_and_classes(self, expanded: list[tuple[int, View, Tensor | None]]) -> tuple[list[Tensor], Tensor]:
        """Levels of every row and ``(V, C)`` classes with a positive, batched over views of one length."""
        levels: list[Tensor] = [torch.empty(0)] * len(expanded)
        present = torch.empty(len(expanded), self.y.shape[1], dtype=torch.bool, device=self.p.device)
        groups: dict[int, list[int]] = {}
        for j, (_, view, _) in enumerate(expanded):
            groups.setdefault(view.uncertainty.shape[0], []).append(j)
        for m, idx in groups.items():
            unc = torch.stack([expanded[j][1].uncertainty for j in idx])
            keyed = [expanded[j][2] is not None for j in idx]
            if any(keyed):  # rows without a tie-break key keep row order: key = position
                pos = torch.arange(m, device=unc.device, dtype=torch.float64)
                key = torch.stack([pos if expanded[j][2] is None else expanded[j][2] for j in idx])
            else:
                key = None
            lv = K.retention_levels(unc, self.k(m), key)
            rows = torch.stack([self._rows(expanded[j][1]) for j in idx])
            present[idx] = self.y[rows].any(1)
            for j, row in zip(idx, lv):
                levels[j] = row
        return levels, present

    def _callable(self, expanded: list[tuple[int, View, Tensor | None]]) -> Tensor:
        f = self.fractions.numel()
        res = torch.empty(len(expanded), f, dtype=torch.float64)
        for i, (_, view, key) in enumerate(expanded):
            rows = self._rows(view)
            probs_v, y_v = self.p[view.score, rows], self.y[rows]
            k = self.k(rows.shape[0])
            levels = K.retention_levels(view.uncertainty[None], k, None if key is None else key[None])[0]
            for j in range(f):
                keep = levels <= j
                res[i, j] = float(self.metric(probs_v[keep], y_v[keep]))
        return res.to(self.p.device)


def check_fractions(fractions: Sequence[float] | Tensor | None) -> Tensor:
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


def check_runs(probs: Tensor) -> Tensor:
    check_tensor(probs, "probs", "(N, C) or (R, N, C) = (runs, clips, classes)", (2, 3))
    p = probs if probs.dim() == 3 else probs.unsqueeze(0)
    # Values only: in [0, 1], finite. Rows need not sum to 1 (multi-label scores are allowed).
    validate_probs(p, multilabel=True, name="probs")
    return p


def check_uncertainty(u: Tensor, n: int, name: str) -> Tensor:
    check_tensor(u, name, f"(N,) or (R, N) with N = {n}", (1, 2))
    if u.is_complex() or u.dtype == torch.bool:
        raise ValueError(f"{name} must be real-valued; got dtype {u.dtype}")
    u2 = u if u.dim() == 2 else u.unsqueeze(0)
    if u2.shape[1] != n:
        raise ValueError(f"{name} must have shape (N,) or (R, N) with N = {n} clips; got {tuple(u.shape)}")
    if u2.is_floating_point() and not bool(torch.isfinite(u2).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return u2


def metric_name(metric: Metric) -> str:
    if callable(metric):
        return getattr(metric, "__name__", type(metric).__name__)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS} or a callable(probs, targets); got {metric!r}")
    return metric


def prepare_targets(targets: Tensor, metric: Metric, n: int, c: int) -> Tensor:
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


def check_options(classes: str, min_positives: int, min_coverage: float, tie_permutations: int, interval: str) -> None:
    if classes not in CLASSES:
        raise ValueError(f"classes must be one of {CLASSES}; got {classes!r}")
    if isinstance(min_positives, bool) or not isinstance(min_positives, int) or min_positives < 1:
        raise ValueError(f"min_positives must be a positive integer; got {min_positives!r}")
    if isinstance(min_coverage, bool) or not isinstance(min_coverage, (int, float)) or not 0 <= min_coverage <= 1:
        raise ValueError(f"min_coverage must be a share of the classes in [0, 1]; got {min_coverage!r}")
    if isinstance(tie_permutations, bool) or not isinstance(tie_permutations, int) or tie_permutations < 0:
        raise ValueError(f"tie_permutations must be a non-negative integer; got {tie_permutations!r}")
    if interval not in METHODS:
        raise ValueError(f"interval must be one of {METHODS}; got {interval!r}")


def classes_of(classes: str, ignore_empty: bool | None) -> str:
    if ignore_empty is None:
        return classes
    warnings.warn(
        "ignore_empty is deprecated: use classes='kept' (ignore_empty=True) or classes='fixed' (ignore_empty=False)",
        FutureWarning,
        stacklevel=3,
    )
    return "kept" if ignore_empty else "fixed"


def compute(
    probs: Tensor,
    targets: Tensor,
    uncertainties: Mapping[str, Tensor],
    metric: Metric,
    fractions: Tensor,
    settings: dict[str, Any],
    generator: torch.Generator | None,
) -> dict[str, dict[str, Any]]:
    """Raw per-view curves for each uncertainty measure; identical measures and per-score work are shared."""
    p = check_runs(probs)
    runs, n, c = p.shape
    y = prepare_targets(targets, metric, n, c)
    uncs = {name: check_uncertainty(u, n, name) for name, u in uncertainties.items()}
    for name, t in [("targets", targets), *uncertainties.items()]:
        if t.device != p.device:
            raise ValueError(f"{name} is on {t.device} but probs is on {p.device}; move them to one device")
    reps = max(runs, *(u.shape[0] for u in uncs.values()))
    if any(r not in (1, reps) for r in (runs, *(u.shape[0] for u in uncs.values()))):
        shapes = ", ".join(str(tuple(u.shape)) for u in uncs.values())
        raise ValueError(
            f"replication counts disagree: probs (R, N, C) = {tuple(p.shape)} but uncertainty (R, N) = {shapes}; "
            "each must have the same R, or no R axis to share it across runs"
        )
    replications, bootstrap = settings["replications"], settings["bootstrap"]
    if replications is not None and (isinstance(replications, bool) or int(replications) < 1):
        raise ValueError(f"replications must be a positive integer (replications per pass); got {replications!r}")
    device = p.device
    rows = None
    if bootstrap is not None:
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 1:
            raise ValueError(f"bootstrap must be a positive number of resamples; got {bootstrap!r}")
        if reps > 1:
            raise ValueError(
                f"bootstrap needs a single prediction run: probs (N, C) and uncertainty (N,); got R = {reps}"
            )
        if settings["interval"] == "bca" and n < 2:
            raise ValueError("interval='bca' needs at least 2 clips for the jackknife")
        rows = torch.randint(0, n, (bootstrap, n), generator=generator).to(device)
    elif settings["interval"] != "percentile":
        raise ValueError("interval chooses the bootstrap band; it needs bootstrap=B (several runs give a t band)")
    # Measures with identical values are computed once.
    distinct: list[Tensor] = []
    which: dict[str, int] = {}
    for name, u in uncs.items():
        same = [j for j, d in enumerate(distinct) if d.shape == u.shape and torch.equal(d, u)]
        if not same:
            distinct.append(u)
        which[name] = same[0] if same else len(distinct) - 1

    def views_of(u: Tensor) -> list[View]:
        if rows is None:
            return [View(i if runs > 1 else 0, None, u[i if u.shape[0] > 1 else 0]) for i in range(reps)]
        out = [View(0, None, u[0])] + [View(0, rows[b], u[0, rows[b]]) for b in range(bootstrap)]
        if settings["interval"] == "bca":
            full = torch.arange(n, device=device)
            for i in range(n):
                keep = torch.cat([full[:i], full[i + 1 :]])
                out.append(View(0, keep, u[0, keep]))
        return out

    engine = Engine(
        p, y, metric, fractions.to(device), settings["classes"], settings["min_positives"], settings["tie_permutations"]
    )
    results = []
    for u in distinct:
        views = views_of(u)
        step = replications or len(views)
        parts = [engine.run(views[lo : lo + step]) for lo in range(0, len(views), step)]
        coverage = None if parts[0].coverage is None else torch.cat([b.coverage for b in parts])
        results.append(
            {
                "values": torch.cat([b.values for b in parts]),
                "coverage": coverage,
                "tied": torch.cat([b.tied for b in parts]),
            }
        )
    return {name: results[j] for name, j in which.items()}
