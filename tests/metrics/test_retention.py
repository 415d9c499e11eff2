import math
import warnings
from itertools import combinations

import numpy as np
import pytest
import torch

from vipann.metrics import RetentionResult, oracle_curve, random_curve, retention_curve, retention_curves
from vipann.metrics._retention_kernels import keep_counts

skm = pytest.importorskip("sklearn.metrics")
stats = pytest.importorskip("scipy.stats")

FRACTIONS = [0.03, 0.1, 0.25, 0.33, 0.5, 0.71, 0.9, 1.0]


def _data(n=57, c=5, runs=None, seed=0, levels=5, unc_levels=None):
    """Quantised scores, multi-hot and class-index targets; continuous or quantised uncertainty."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, c) if runs is None else (runs, n, c)
    probs = (torch.randint(0, levels, shape, generator=g) / (levels - 1)).double()
    multihot = torch.rand(n, c, generator=g) < 0.3
    classes = torch.randint(0, c, (n,), generator=g)
    unc_shape = (n,) if runs is None else (runs, n)
    if unc_levels is None:
        unc = torch.rand(unc_shape, generator=g, dtype=torch.float64)
    else:
        unc = torch.randint(0, unc_levels, unc_shape, generator=g).double()
    return probs, multihot, classes, unc


def _score(p, t, metric, classes, min_positives, fixed):
    """Metric of one kept set (scikit-learn), and the share of the fixed classes it covers."""
    if metric == "accuracy":
        return float(np.mean(p.argmax(1) == t)), math.nan
    aps, covered = [], 0
    for c in np.flatnonzero(fixed):
        if t[:, c].sum() >= min_positives:
            covered += 1
        if t[:, c].any():
            if classes == "fixed" or t[:, c].sum() >= min_positives:
                aps.append(skm.average_precision_score(t[:, c], p[:, c]))
        elif classes == "fixed":
            aps.append(0.0)
    return (np.mean(aps) if aps else math.nan), covered / max(fixed.sum(), 1)


def _reference(probs, targets, unc, fractions, metric, classes="fixed", min_positives=1):
    """Independent reference: the curve in expectation over random tie-breaking, by enumeration.

    At each fraction every clip strictly less uncertain than the k-th is kept, and the metric is
    averaged over every subset of the tie group that straddles the cut (scikit-learn per subset).
    Returns (curve, coverage).
    """
    p, t, u = probs.numpy(), targets.numpy(), unc.numpy()
    fixed = t.any(0) if t.ndim == 2 else None
    n = len(u)
    us = np.sort(u)
    curve, cover = [], []
    for f in fractions:
        k = max(1, math.ceil(round(f * n, 6)))
        below, group = np.flatnonzero(u < us[k - 1]), np.flatnonzero(u == us[k - 1])
        vals = [
            _score(p[keep], t[keep], metric, classes, min_positives, fixed)
            for keep in (np.concatenate([below, list(sub)]).astype(int) for sub in combinations(group, k - len(below)))
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            curve.append(np.nanmean([v for v, _ in vals]))
            cover.append(np.mean([c for _, c in vals]))
    return np.array(curve), np.array(cover)


@pytest.mark.parametrize("classes", ["fixed", "kept"])
def test_map_without_ties_equals_sklearn_loop(classes):
    probs, multihot, _, unc = _data()
    res = retention_curve(probs, multihot, unc, "map", FRACTIONS, classes=classes)
    ref, cover = _reference(probs, multihot, unc, FRACTIONS, "map", classes)
    np.testing.assert_allclose(res.values[0].numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(res.coverage.numpy(), cover, atol=1e-12)
    assert res.metric == "map" and res.ci == "none" and res.ties == "none" and res.classes == classes


def test_map_default_fractions_equal_sklearn_loop():
    probs, multihot, _, unc = _data(n=130, c=3, seed=1)
    res = retention_curve(probs, multihot, unc, "map")
    assert res.fractions.shape == (100,)
    np.testing.assert_allclose(res.fractions.numpy(), np.arange(1, 101) / 100)
    ref, _ = _reference(probs, multihot, unc, res.fractions.tolist(), "map")
    np.testing.assert_allclose(res.values[0].numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("metric", ["accuracy", "map"])
def test_ties_give_the_expected_curve_over_random_tie_breaking(metric):
    probs, multihot, classes, unc = _data(seed=2, unc_levels=20)
    targets = classes if metric == "accuracy" else multihot
    ref, _ = _reference(probs, targets, unc, FRACTIONS, metric)
    if metric == "accuracy":  # closed form: exact
        res = retention_curve(probs, targets, unc, metric, FRACTIONS)
        np.testing.assert_allclose(res.values[0].numpy(), ref, rtol=1e-12)
        assert res.ties == "exact"
    else:  # Monte-Carlo over tie-breaks: the error shrinks as 1 / sqrt(P)
        res = retention_curve(probs, targets, unc, metric, FRACTIONS, tie_permutations=2000)
        np.testing.assert_allclose(res.values[0].numpy(), ref, atol=0.01)
        assert res.ties == "2000 random tie-breaks"
        default = retention_curve(probs, targets, unc, metric, FRACTIONS)
        np.testing.assert_allclose(default.values[0].numpy(), ref, atol=0.04)


def test_all_equal_uncertainty_is_order_free():
    # The example: one order put every correct clip first (1.0 at 50 %), the reverse none (0.0).
    probs = torch.eye(2, dtype=torch.float64)[torch.tensor([0] * 50 + [1] * 50)]
    targets = torch.tensor([0] * 50 + [0] * 50)  # the first 50 right, the last 50 wrong
    unc = torch.zeros(100, dtype=torch.float64)
    for order in (torch.arange(100), torch.arange(99, -1, -1)):
        res = retention_curve(probs[order], targets[order], unc, "accuracy", [0.5, 1.0])
        torch.testing.assert_close(res.mean, torch.tensor([0.5, 0.5], dtype=torch.float64))
        # One tagged class, equal scores: the AP of a kept set is its share of positives (1 or 0 by row order).
        tagged = (torch.arange(100) < 50)[order, None]
        m = retention_curve(torch.full((100, 1), 0.5), tagged, unc, "map", [0.5, 1.0], tie_permutations=400)
        assert abs(float(m.mean[0]) - 0.5) < 0.05 and float(m.mean[1]) == 0.5


@pytest.mark.parametrize("metric", ["accuracy", "map", "callable"])
def test_every_curve_is_invariant_under_a_row_shuffle(metric):
    probs, multihot, classes, unc = _data(n=40, seed=3, unc_levels=4)
    targets = classes if metric != "map" else multihot

    def top1(p, y):
        return (p.argmax(1) == y).double().mean() if len(y) else torch.tensor(math.nan)

    m = top1 if metric == "callable" else metric
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(5))
    p2, t2, u2 = probs[perm], targets[perm], unc[perm]
    pairs = [
        (retention_curve(probs, targets, unc, m, FRACTIONS), retention_curve(p2, t2, u2, m, FRACTIONS)),
        (oracle_curve(probs, targets, m, FRACTIONS), oracle_curve(p2, t2, m, FRACTIONS)),
        (
            random_curve(probs, targets, m, FRACTIONS, draws=3, generator=torch.Generator().manual_seed(1)),
            random_curve(p2, t2, m, FRACTIONS, draws=3, generator=torch.Generator().manual_seed(1)),
        ),
    ]
    runs, _, _, runs_unc = _data(n=40, seed=4, runs=2, unc_levels=3)
    pairs.append(
        (
            retention_curve(runs, targets, runs_unc, m, FRACTIONS),
            retention_curve(runs[:, perm], t2, runs_unc[:, perm], m, FRACTIONS),
        )
    )
    for a, b in pairs:
        torch.testing.assert_close(a.mean, b.mean, rtol=1e-12, atol=1e-12, equal_nan=True)
        torch.testing.assert_close(a.lower, b.lower, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert pairs[0][0].ties != "none"  # the data does tie at the cuts


@pytest.mark.parametrize("metric", ["accuracy", "map"])
def test_independent_runs_equal_sklearn_loop(metric):
    probs, multihot, classes, unc = _data(runs=3, seed=2)
    targets = classes if metric == "accuracy" else multihot
    res = retention_curve(probs, targets, unc, metric, FRACTIONS)
    assert res.values.shape == (3, len(FRACTIONS)) and res.ci == "t"
    for r in range(3):
        ref, _ = _reference(probs[r], targets, unc[r], FRACTIONS, metric)
        np.testing.assert_allclose(res.values[r].numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(res.mean.numpy(), res.values.numpy().mean(0))


@pytest.mark.parametrize("metric", ["accuracy", "map"])
def test_bootstrap_curve_is_the_metric_of_the_data(metric):
    probs, multihot, classes, unc = _data(seed=3, unc_levels=20)
    targets = classes if metric == "accuracy" else multihot
    gen = torch.Generator().manual_seed(9)
    res = retention_curve(probs, targets, unc, metric, FRACTIONS, bootstrap=4, generator=gen, tie_permutations=800)
    assert res.ci == "percentile" and res.values.shape == (4, len(FRACTIONS))
    data, _ = _reference(probs, targets, unc, FRACTIONS, metric)
    np.testing.assert_allclose(res.mean.numpy(), data, atol=1e-12 if metric == "accuracy" else 0.015)
    rows = torch.randint(0, 57, (4, 57), generator=torch.Generator().manual_seed(9))  # the documented draw
    for b in range(4):
        ref, _ = _reference(probs[rows[b]], targets[rows[b]], unc[rows[b]], FRACTIONS, metric)
        np.testing.assert_allclose(res.values[b].numpy(), ref, atol=1e-12 if metric == "accuracy" else 0.015)


def test_bootstrap_band_contains_the_curve():
    # Few clips and heavy ties: resamples pile up on one side of the data's value at low retention.
    probs, multihot, classes, unc = _data(n=30, seed=6, unc_levels=3)
    for targets, metric in ((classes, "accuracy"), (multihot, "map")):
        for interval in ("percentile", "basic", "bca"):
            res = retention_curve(probs, targets, unc, metric, bootstrap=40, interval=interval, tie_permutations=8)
            finite = ~torch.isnan(res.lower)
            assert bool(finite.any())
            assert bool((res.lower[finite] <= res.mean[finite]).all())
            assert bool((res.mean[finite] <= res.upper[finite]).all())
            plain = retention_curve(probs, targets, unc, metric, tie_permutations=8)
            torch.testing.assert_close(res.mean, plain.mean, equal_nan=True)  # never the bootstrap mean


@pytest.mark.parametrize("interval", ["percentile", "basic", "bca"])
def test_bootstrap_bands_against_numpy(interval):
    probs, _, classes, unc = _data(n=40, seed=7)
    fr = [0.25, 0.5, 0.75, 1.0]
    res = retention_curve(probs, classes, unc, "accuracy", fr, bootstrap=200, interval=interval)
    point, reps = res.mean.numpy(), res.values.numpy()
    lo, hi = np.percentile(reps, 2.5, axis=0), np.percentile(reps, 97.5, axis=0)
    if interval == "basic":
        lo, hi = 2 * point - hi, 2 * point - lo
    elif interval == "bca":
        jack = np.stack(
            [_reference(probs[keep], classes[keep], unc[keep], fr, "accuracy")[0] for keep in _leave_one_out(40)]
        )
        z0 = stats.norm.ppf(((reps < point).sum(0) + (reps <= point).sum(0)) / (2 * len(reps)))
        d = jack.mean(0) - jack
        a = (d**3).sum(0) / (6 * ((d**2).sum(0)) ** 1.5)
        z = stats.norm.ppf(0.025)
        a1 = stats.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
        a2 = stats.norm.cdf(z0 + (z0 - z) / (1 - a * (z0 - z)))
        lo = np.array([np.percentile(reps[:, j], 100 * a1[j]) for j in range(len(fr))])
        hi = np.array([np.percentile(reps[:, j], 100 * a2[j]) for j in range(len(fr))])
    lo, hi = np.minimum(np.clip(lo, 0, 1), point), np.maximum(np.clip(hi, 0, 1), point)
    np.testing.assert_allclose(res.lower.numpy(), lo, atol=1e-12)
    np.testing.assert_allclose(res.upper.numpy(), hi, atol=1e-12)


def _leave_one_out(n):
    return [torch.cat([torch.arange(i), torch.arange(i + 1, n)]) for i in range(n)]


def test_bootstrap_is_reproducible_with_a_seed():
    probs, multihot, _, unc = _data(seed=4)

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return retention_curve(probs, multihot, unc, "map", FRACTIONS, bootstrap=5, generator=gen)

    a, b, c = run(1), run(1), run(2)
    torch.testing.assert_close(a.values, b.values, equal_nan=True)
    assert not torch.equal(a.values.nan_to_num(), c.values.nan_to_num())


def test_accuracy_callable_and_one_hot_agree():
    probs, _, classes, unc = _data(n=200, c=4, seed=5, levels=9, unc_levels=30)
    res = retention_curve(probs, classes, unc, "accuracy")
    ref, _ = _reference(probs, classes, unc, res.fractions.tolist(), "accuracy")
    np.testing.assert_allclose(res.values[0].numpy(), ref, rtol=1e-12)

    def top1(p, y):
        return (p.argmax(1) == y).double().mean()

    probs_c, _, classes_c, unc_c = _data(n=200, c=4, seed=5, levels=9)  # continuous: no tie-breaks needed
    custom = retention_curve(probs_c, classes_c, unc_c, top1, FRACTIONS)
    torch.testing.assert_close(custom.values, retention_curve(probs_c, classes_c, unc_c, "accuracy", FRACTIONS).values)
    assert custom.metric == "top1"
    onehot = torch.nn.functional.one_hot(classes, 4)
    torch.testing.assert_close(retention_curve(probs, onehot, unc, "accuracy").values, res.values)


def test_keep_rule():
    assert keep_counts(torch.tensor([0.07, 0.29, 0.5, 1.0], dtype=torch.float64), 100).tolist() == [7, 29, 50, 100]
    assert keep_counts(torch.tensor([0.001], dtype=torch.float64), 50).tolist() == [1]
    assert keep_counts(torch.tensor([0.5], dtype=torch.float64), 7).tolist() == [4]  # ceil
    # Sister-lab rule (drop p * floor(0.01 N) for p = 0..99) agrees whenever 100 divides N.
    n = 2000
    sister = [n - p * (n // 100) for p in range(99, -1, -1)]
    assert keep_counts(torch.arange(1, 101, dtype=torch.float64) / 100, n).tolist() == sister


def test_student_t_band_is_float64():
    # Six runs whose curves differ by ~1e-7: a float32 quantile or mean would be off by about as much.
    base = torch.linspace(0.4, 0.6, len(FRACTIONS), dtype=torch.float64)
    noise = torch.tensor([[3, -1, 2, -4, 1, -1]], dtype=torch.float64).T * 1e-7
    probs, multihot, _, unc = _data(runs=6, seed=7)
    res = retention_curve(probs, multihot, unc, "map", FRACTIONS[2:])
    v = res.values.numpy()
    half = stats.t.ppf(0.975, 5) * v.std(0, ddof=1) / math.sqrt(6)
    np.testing.assert_allclose(res.lower.numpy(), v.mean(0) - half, rtol=1e-13)
    np.testing.assert_allclose(res.upper.numpy(), v.mean(0) + half, rtol=1e-13)
    from vipann.metrics.bootstrap import student_t_interval

    mean, lower, upper = student_t_interval(base + noise)
    ref_half = stats.t.ppf(0.975, 5) * (base + noise).numpy().std(0, ddof=1) / math.sqrt(6)
    np.testing.assert_allclose((upper - mean).numpy(), ref_half, rtol=1e-9)
    assert lower.dtype == torch.float64
    # NaN replications (no positive kept) are left out of the mean and the band.
    sparse = retention_curve(probs, multihot, unc, "map", FRACTIONS, classes="kept")
    np.testing.assert_allclose(sparse.mean.numpy(), np.nanmean(sparse.values.numpy(), 0))
    single = retention_curve(probs[0], multihot, unc[0], "map", FRACTIONS)
    assert single.values.shape == (1, len(FRACTIONS)) and bool(torch.isnan(single.lower).all())


def test_class_sets_and_coverage_at_low_retention():
    # 60 clips, 6 classes with 3-4 positives each: at 10 % retained most classes have no kept positive.
    g = torch.Generator().manual_seed(8)
    targets = torch.zeros(60, 6, dtype=torch.bool)
    for c in range(6):
        targets[torch.randperm(60, generator=g)[: 3 + c % 2], c] = True
    probs = torch.rand(60, 6, generator=g, dtype=torch.float64)
    unc = torch.rand(60, generator=g, dtype=torch.float64)
    fr = [0.05, 0.1, 0.2, 0.5, 1.0]
    fixed = retention_curve(probs, targets, unc, "map", fr)
    kept = retention_curve(probs, targets, unc, "map", fr, classes="kept")
    two = retention_curve(probs, targets, unc, "map", fr, classes="kept", min_positives=2, min_coverage=0.5)
    for res, classes, m in ((fixed, "fixed", 1), (kept, "kept", 1), (two, "kept", 2)):
        ref, cover = _reference(probs, targets, unc, fr, "map", classes, m)
        np.testing.assert_allclose(res.mean.numpy(), ref, atol=1e-6)
        np.testing.assert_allclose(res.coverage.numpy(), cover)
    assert float(fixed.coverage[0]) < 0.9 and not bool(fixed.reliable[0]) and bool(fixed.reliable[-1])
    assert float(kept.mean[0]) > float(fixed.mean[0])  # skipping empty classes inflates the low end
    torch.testing.assert_close(fixed.mean[-1], kept.mean[-1])  # at 100 % every class has its positives
    assert torch.equal(two.reliable, two.coverage >= 0.5)
    with pytest.warns(FutureWarning, match="classes='kept'"):
        old = retention_curve(probs, targets, unc, "map", fr, ignore_empty=True)
    torch.testing.assert_close(old.mean, kept.mean, equal_nan=True)
    assert retention_curve(probs, targets.long().argmax(1), unc, "accuracy", fr).coverage is None


def test_area_and_result_type():
    probs, _, classes, unc = _data(seed=8)
    res = retention_curve(probs, classes, unc, "accuracy", [0.2, 0.6, 1.0])
    assert isinstance(res, RetentionResult) and res.point is res.mean
    m = res.mean.numpy()
    assert res.area == pytest.approx((0.4 * (m[0] + m[1]) / 2 + 0.4 * (m[1] + m[2]) / 2) / 0.8)
    flat = random_curve(probs, classes, "accuracy", [0.2, 0.6, 1.0])
    assert flat.area == pytest.approx(flat.mean[0].item())


def test_retention_curves_share_resamples_and_identical_measures():
    probs, multihot, _, unc = _data(seed=10)
    other = unc.flip(0)

    def run(uncs, **kw):
        gen = torch.Generator().manual_seed(5)
        return retention_curves(probs, multihot, uncs, "map", FRACTIONS, bootstrap=3, generator=gen, **kw)

    both = run({"a": unc, "b": other, "same": unc.clone()})
    one = run({"b": other})
    assert list(both) == ["a", "b", "same"]
    torch.testing.assert_close(both["b"].values, one["b"].values, equal_nan=True)
    torch.testing.assert_close(both["same"].values, both["a"].values, equal_nan=True)
    chunked = run({"a": unc, "b": other}, replications=2)
    torch.testing.assert_close(chunked["a"].values, both["a"].values, equal_nan=True)


def test_reference_curves():
    g = torch.Generator().manual_seed(11)
    probs = torch.softmax(torch.randn(100, 4, generator=g, dtype=torch.float64), 1)
    y = torch.randint(0, 4, (100,), generator=g)
    correct = int((probs.argmax(1) == y).sum())
    rnd = random_curve(probs, y)
    assert torch.allclose(rnd.mean, torch.full((100,), correct / 100, dtype=torch.float64))
    orc = oracle_curve(probs, y)
    k = torch.arange(1, 101, dtype=torch.float64)
    torch.testing.assert_close(orc.mean, (correct / k).clamp(max=1.0))
    multihot = torch.rand(100, 4, generator=g) < 0.4
    rmap = random_curve(probs, multihot, "map", draws=5, generator=g)
    omap = oracle_curve(probs, multihot, "map")
    assert rmap.values.shape == (5, 100) and rmap.ci == "t" and rmap.coverage.shape == (100,)
    assert omap.area > rmap.area
    assert oracle_curve(probs, y, "map").values.shape == (1, 100)


def test_bad_inputs():
    probs, multihot, classes, unc = _data()
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        retention_curve(probs, classes, unc, fractions=[0.0, 0.5])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        retention_curve(probs, classes, unc, fractions=[0.5, 1.2])
    with pytest.raises(ValueError, match="increasing"):
        retention_curve(probs, classes, unc, fractions=[0.5, 0.2])
    with pytest.raises(ValueError, match="non-empty"):
        retention_curve(probs, classes, unc, fractions=[])
    with pytest.raises(ValueError, match=r"\(N,\) or \(R, N\) with N = 57"):
        retention_curve(probs, classes, unc[:-1])
    with pytest.raises(ValueError, match="NaN"):
        retention_curve(probs, classes, torch.full((57,), math.nan))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        retention_curve(probs * 3, classes, unc)
    with pytest.raises(ValueError, match=r"\(R, N, C\)"):
        retention_curve(probs.expand(2, -1, -1), classes, unc.expand(3, -1))
    with pytest.raises(ValueError, match=r"\(N, C\) or \(R, N, C\)"):
        retention_curve(probs[0], classes, unc)
    with pytest.raises(ValueError, match="non-empty"):
        retention_curve(probs[:0], classes[:0], unc[:0])
    with pytest.raises(ValueError, match="metric"):
        retention_curve(probs, classes, unc, "f1")
    with pytest.raises(ValueError, match="single prediction run"):
        retention_curve(probs.expand(2, -1, -1), classes, unc, bootstrap=3)
    with pytest.raises(ValueError, match="one class per clip"):
        retention_curve(probs, multihot, unc, "accuracy")
    with pytest.raises(ValueError, match="N = 57"):
        retention_curve(probs, classes[:-1], unc)
    with pytest.raises(ValueError, match="bootstrap"):
        retention_curve(probs, classes, unc, bootstrap=0)
    with pytest.raises(ValueError, match="classes must be one of"):
        retention_curve(probs, multihot, unc, "map", classes="all")
    with pytest.raises(ValueError, match="interval must be one of"):
        retention_curve(probs, classes, unc, bootstrap=3, interval="normal")
    with pytest.raises(ValueError, match="needs bootstrap"):
        retention_curve(probs, classes, unc, interval="bca")
    with pytest.raises(ValueError, match="min_positives"):
        retention_curve(probs, multihot, unc, "map", min_positives=0)
    with pytest.raises(ValueError, match="min_coverage"):
        retention_curve(probs, multihot, unc, "map", min_coverage=1.5)
    with pytest.raises(ValueError, match="tie_permutations"):
        retention_curve(probs, multihot, unc, "map", tie_permutations=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("metric", ["accuracy", "map"])
def test_gpu_matches_cpu(metric):
    probs, multihot, classes, unc = _data(runs=3, seed=12, unc_levels=6)
    targets = classes if metric == "accuracy" else multihot
    cpu = retention_curve(probs, targets, unc, metric, FRACTIONS)
    gpu = retention_curve(probs.cuda(), targets.cuda(), unc.cuda(), metric, FRACTIONS)
    assert gpu.values.device.type == "cuda"
    torch.testing.assert_close(gpu.values.cpu(), cpu.values, equal_nan=True)
