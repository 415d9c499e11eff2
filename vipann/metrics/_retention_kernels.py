"""Vectorised kernels behind the retention curves (private).

Vocabulary: a *view* is one data set a curve is computed on: the clips themselves, or a bootstrap
(or jackknife) resample given as row indices into them. Each row of a view has a *level*: the index of the first
retention point at which it is kept (``F`` if never kept). Because the kept sets are nested, a row is
kept at point ``f`` iff ``level <= f``, and every per-point quantity becomes a cumulative sum over
levels; no Python loop runs over the retention points.

Ties in uncertainty: accuracy is computed in expectation over random tie-breaking in closed form
(:func:`expected_accuracy_curves`); for AP the caller ranks tied rows by random keys (``key`` of
:func:`retention_levels`) and averages, where :func:`split_ties` says a cut splits distinct clips.

Average precision over a kept subset (scikit-learn's step-wise definition, ties grouped) is

    AP_c(f) = (1 / P_f) * sum over kept positives i of TP_f(>= s_i) / N_f(>= s_i),

where ``N_f(>= s)`` counts kept rows of class ``c`` scoring at least ``s`` and ``TP_f`` the kept
positives among them. Sort the positives of class ``c`` by score and give every row the *bucket*
``b = #{positives scoring strictly above it}``: a row scores ``>= s_i`` iff its bucket is ``<=`` the
bucket of positive ``i``. So one ``(bucket, level)`` histogram per class, cumulated along both axes,
gives every ``N_f(>= s_i)`` at once. The buckets depend only on the scores, so they are computed once
(one ``searchsorted`` per class) and shared by all views of the same scores; each view costs one
``bincount`` over its ``(class, row)`` pairs plus work on the ``(P_c + 1) x (F + 1)`` tables. Classes are
processed in blocks so the temporaries stay around ``_BLOCK_ELEMENTS`` elements (cache-sized).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_BLOCK_ELEMENTS = 1 << 20


def keep_counts(fractions: Tensor, n: int) -> Tensor:
    """Clips kept at each fraction: ``ceil(f * n)`` (``f * n`` rounded to 6 decimals first), at least 1."""
    k = torch.ceil(torch.round(fractions.double() * n, decimals=6)).long()
    return k.clamp_(1, n)


def ranking(uncertainty: Tensor, key: Tensor | None = None) -> Tensor:
    """Row order, least uncertain first; ties in ``uncertainty`` are ordered by ``key``, then by position.

    Args:
        uncertainty: ``(V, M)`` scores, one row of them per view.
        key: Optional ``(V, M)`` tie-breaking key (e.g. random numbers), or None.

    Returns:
        ``(V, M)`` int64 indices that sort each row.
    """
    if key is None:
        return torch.argsort(uncertainty, dim=-1, stable=True)
    first = torch.argsort(key, dim=-1, stable=True)
    return first.gather(-1, torch.argsort(uncertainty.gather(-1, first), dim=-1, stable=True))


def retention_levels(uncertainty: Tensor, k: Tensor, key: Tensor | None = None) -> Tensor:
    """First retention point keeping each row; rows are ranked by uncertainty, least uncertain first.

    Args:
        uncertainty: ``(V, M)`` scores, one row of them per view.
        k: ``(F,)`` non-decreasing keep counts.
        key: Optional ``(V, M)`` tie-breaking key (see :func:`ranking`); None keeps tied rows in row order.

    Returns:
        ``(V, M)`` int64 levels in ``[0, F]``.
    """
    order = ranking(uncertainty, key)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return torch.searchsorted(k.to(rank.device), rank, right=True)


def _tie_groups(sorted_u: Tensor, k: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For every cut ``k``: the value of the k-th kept row and the bounds ``[lo, hi)`` of its tie group."""
    kk = k.to(sorted_u.device).expand(sorted_u.shape[0], -1).contiguous()
    value = sorted_u.gather(-1, kk - 1).contiguous()
    lo = torch.searchsorted(sorted_u, value, right=False)
    hi = torch.searchsorted(sorted_u, value, right=True)
    return kk, lo, hi


def split_ties(uncertainty: Tensor, ids: Tensor, k: Tensor) -> Tensor:
    """Whether some cut keeps part of a tie group that holds different clips.

    A cut through a group of copies of one clip keeps the same data whichever copies it keeps, so only
    groups with at least two distinct ``ids`` (clip contents) make the curve depend on the tie-breaking.

    Args:
        uncertainty: ``(V, M)`` scores.
        ids: ``(V, M)`` content ids: equal for rows with identical predictions and targets.
        k: ``(F,)`` keep counts.

    Returns:
        ``(V,)`` bool.
    """
    order = ranking(uncertainty, ids)
    u = uncertainty.gather(-1, order).contiguous()
    c = ids.gather(-1, order)
    kk, lo, hi = _tie_groups(u, k)
    partial = hi > kk  # the cut keeps part of its group (lo <= k - 1 < k < hi: two or more rows)
    distinct = c.gather(-1, lo) != c.gather(-1, hi - 1)  # sorted by id inside a group
    return (partial & distinct).any(-1)


def expected_accuracy_curves(correct: Tensor, uncertainty: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Accuracy at every point, in expectation over random tie-breaking (exact).

    At keep count ``k`` the rows strictly less uncertain than the k-th are all kept; of the ``g`` rows
    of its tie group ``m = k - lo`` are kept, a uniformly random subset, so the expected number of
    correct ones among them is ``m / g`` times the group's correct count.

    Args:
        correct: ``(V, M)`` bool, one row per view.
        uncertainty: ``(V, M)`` scores.
        k: ``(F,)`` keep counts.

    Returns:
        ``(V, F)`` float64 accuracies, and ``(V,)`` bool: some cut keeps part of a group of equal uncertainty.
    """
    u, order = torch.sort(uncertainty, dim=-1, stable=True)
    u = u.contiguous()
    hits = correct.gather(-1, order).double().cumsum(-1)
    cum = torch.cat([torch.zeros_like(hits[:, :1]), hits], -1)
    kk, lo, hi = _tie_groups(u, k)
    c_lo, c_hi = cum.gather(-1, lo), cum.gather(-1, hi)
    expected = c_lo + (kk - lo).double() * (c_hi - c_lo) / (hi - lo).double()
    return expected / kk.double(), (hi > kk).any(-1)


def _class_blocks(n_pos: list[int], n: int, n_levels: int) -> list[tuple[int, int]]:
    """Split classes (sorted by positive count) into ``[start, stop)`` blocks of bounded size.

    A block's tables are padded to its largest class, so a block also stops growing once its largest
    count exceeds its smallest by more than about 12 %.
    """
    blocks, start = [], 0
    while start < len(n_pos):
        stop = start + 1
        limit = n_pos[start] * 1.125 + 8
        while stop < len(n_pos) and n_pos[stop] <= limit:
            width = stop + 1 - start
            if width * n > _BLOCK_ELEMENTS or width * (n_pos[stop] + 1) * n_levels > _BLOCK_ELEMENTS:
                break
            stop += 1
        blocks.append((start, stop))
        start = stop
    return blocks


def _resample_triples(rows: Tensor, levels: Tensor, n: int, n_levels: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Collapse a resample's rows into distinct (clip, level) pairs with their counts.

    Copies of a clip share its uncertainty, so they almost always share a level: this drops the
    histogram work from one entry per row to one per distinct clip (about 63 % of the rows).

    Returns:
        ``(clip, level, count, triples_per_clip, first_triple_of_clip, most_triples_of_a_clip)``, sorted by clip.
    """
    key, count = torch.unique(rows * n_levels + levels, return_counts=True)
    clip = torch.div(key, n_levels, rounding_mode="floor")
    per_clip = torch.bincount(clip, minlength=n)
    return clip, key - clip * n_levels, count.to(dtype), per_clip, per_clip.cumsum(0) - per_clip, int(per_clip.max())


def _ap_from_histograms(hist: Tensor, pos_hist: Tensor, n_points: int) -> tuple[Tensor, Tensor]:
    """AP and kept positives per class and point from ``(cc, buckets, levels)`` histograms of rows and positives."""
    kept = pos_hist.cumsum_(2)  # positives of each bucket kept at each point
    tp = kept.cumsum(1)  # kept positives scoring >= each bucket's positive
    seen = hist.cumsum_(2).cumsum_(1).clamp_(min=1.0)  # kept rows scoring >= it
    # float32 terms (relative error ~1e-7) summed over buckets; float64 from here on.
    ap_sum = kept.mul_(tp).div_(seen).sum(1).double()
    positives = tp[:, -1].double()
    return (ap_sum / positives)[:, :n_points], positives[:, :n_points]


def ap_curves(
    scores: Tensor, labels: Tensor, views: list[tuple[Tensor | None, Tensor]], n_points: int
) -> tuple[Tensor, Tensor]:
    """Per-class AP and kept positives at every retention point for several views of one score matrix.

    Counts are exact (float32 holds integers below 2**24); each positive's precision is a float32
    ratio and the sum over positives is float64, so results match scikit-learn to about 1e-7.

    Args:
        scores: ``(N, C)`` finite scores.
        labels: ``(N, C)`` bool multi-hot targets.
        views: ``(rows, levels)`` pairs: ``rows`` is None (the clips themselves) or ``(M,)`` int64 clip
            indices (a bootstrap resample); ``levels`` is ``(M,)`` (see :func:`retention_levels`).
        n_points: Number of retention points ``F``.

    Returns:
        ``(V, C, F)`` float64 APs (NaN where a class has no kept positive) and ``(V, C, F)`` float64
        counts of kept positives.
    """
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()  # exact, and searchsorted wants a full-precision type
    n, c = scores.shape
    n_levels = n_points + 1
    device = scores.device
    out = torch.full((len(views), c, n_points), math.nan, dtype=torch.float64, device=device)
    kept_pos = torch.zeros((len(views), c, n_points), dtype=torch.float64, device=device)
    n_pos = labels.sum(0)
    active = torch.nonzero(n_pos > 0).flatten()
    if active.numel() == 0:
        return out, kept_pos
    max_rows = max([n] + [rows.shape[0] for rows, _ in views if rows is not None])
    count_dtype = torch.float32 if max_rows < 2**24 else torch.float64
    active = active[torch.argsort(n_pos[active], stable=True)]
    counts = n_pos[active]
    # One pass over the scores: classes in block order, as rows; + 0.0 folds -0.0 into +0.0.
    s_all = scores.index_select(1, active).T.contiguous().add_(0.0)
    # Positive (class, clip) pairs sorted by class position, then by score.
    pair_cls, pair_clip = torch.nonzero(labels.index_select(1, active).T, as_tuple=True)
    vals = s_all[pair_cls, pair_clip]
    by_val = torch.argsort(vals, stable=True)
    order = by_val[torch.argsort(pair_cls[by_val], stable=True)]
    pair_cls, pair_clip, vals = pair_cls[order], pair_clip[order], vals[order]
    pair_start = [0, *counts.cumsum(0).tolist()]
    counts_list = counts.tolist()
    triples = [None if rows is None else _resample_triples(rows, lv, n, n_levels, count_dtype) for rows, lv in views]
    ones = torch.ones(0, dtype=count_dtype, device=device)
    for start, stop in _class_blocks(counts_list, n, n_levels):
        cc, pm = stop - start, counts_list[stop - 1]
        table = cc * (pm + 1) * n_levels
        idx_dtype = torch.int32 if table < 2**31 else torch.int64
        p_lo, p_hi = pair_start[start], pair_start[stop]
        p_cls, p_clip = pair_cls[p_lo:p_hi] - start, pair_clip[p_lo:p_hi]
        blk_counts = counts[start:stop]
        within = torch.arange(p_hi - p_lo, device=device) - (blk_counts.cumsum(0) - blk_counts)[p_cls]
        pos_sorted = torch.full((cc, pm), math.inf, dtype=s_all.dtype, device=device)
        pos_sorted[p_cls, within] = vals[p_lo:p_hi]
        # base = (class * (pm + 1) + bucket) * n_levels with bucket = P_c - #{positives <= score}.
        row_base = ((torch.arange(cc, device=device) * (pm + 1) + blk_counts) * n_levels).to(idx_dtype)
        below = torch.searchsorted(pos_sorted, s_all[start:stop], right=True, out_int32=idx_dtype == torch.int32)
        base = below.mul_(-n_levels).add_(row_base[:, None])
        pos_base = base[p_cls, p_clip]
        base_t = base.T.contiguous() if any(t is not None for t in triples) else None
        if ones.shape[0] < base.numel():
            ones = torch.ones(base.numel(), dtype=count_dtype, device=device)
        shape = (cc, pm + 1, n_levels)
        for v, (_, levels) in enumerate(views):
            if triples[v] is None:
                lv = levels.to(idx_dtype)
                flat = (base + lv).view(-1)
                weights = ones[: flat.shape[0]]
                pos_flat, pos_weights = pos_base + lv[p_clip], ones[: p_clip.shape[0]]
            else:
                clip, lvl, count, per_clip, first, slots = triples[v]
                flat = (base_t.index_select(0, clip) + lvl.to(idx_dtype)[:, None]).view(-1)
                weights = count[:, None].expand(-1, cc).reshape(-1)
                # Every positive (class, clip) pair contributes each of its clip's triples: a clip has one
                # triple per level its copies reach (rarely more than 2), so loop over the triple slots.
                m = per_clip[p_clip]
                parts, part_weights = [], []
                for j in range(slots):
                    t = (first[p_clip] + j).clamp_(max=count.shape[0] - 1)
                    parts.append(pos_base + lvl[t].to(idx_dtype))
                    part_weights.append(count[t] * (m > j))
                pos_flat, pos_weights = torch.cat(parts), torch.cat(part_weights)
            hist = torch.bincount(flat, weights=weights, minlength=table).view(shape)
            pos_hist = torch.bincount(pos_flat, weights=pos_weights, minlength=table).view(shape)
            out[v, active[start:stop]], kept_pos[v, active[start:stop]] = _ap_from_histograms(hist, pos_hist, n_points)
    return out, kept_pos
