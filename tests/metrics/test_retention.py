import math
import warnings

import numpy as np
import pytest
import torch

from vipann.metrics import RetentionResult, oracle_curve, random_curve, retention_curve, retention_curves
from vipann.metrics._retention_kernels import keep_counts

skm = pytest.importorskip("sklearn.metrics")

FRACTIONS = [0.03, 0.1, 0.25, 0.33, 0.5, 0.71, 0.9, 1.0]


def _data(n=57, c=5, runs=None, seed=0, levels=5):
    """Quantised scores and uncertainties (many ties), multi-hot and class-index targets."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, c) if runs is None else (runs, n, c)
    probs = (torch.randint(0, levels, shape, generator=g) / (levels - 1)).double()
    multihot = torch.rand(n, c, generator=g) < 0.3
    classes = torch.randint(0, c, (n,), generator=g)
    unc_shape = (n,) if runs is None else (runs, n)
    unc = torch.randint(0, 7, unc_shape, generator=g).double()
    return probs, multihot, classes, unc


def _naive(probs, targets, unc, fractions, metric, ignore_empty=True):
    """The reference method: sort, then call scikit-learn at every retention point."""
    p, t, u = probs.numpy(), targets.numpy(), unc.numpy()
    order = np.argsort(u, kind="stable")
    out = []
    for f in fractions:
        keep = order[: max(1, math.ceil(round(f * len(u), 6)))]
        if metric == "accuracy":
            out.append(skm.accuracy_score(t[keep], p[keep].argmax(1)))
            continue
        aps = []
        for c in range(p.shape[1]):
            if t[keep, c].any():
                aps.append(skm.average_precision_score(t[keep, c], p[keep, c]))
            elif not ignore_empty:
                aps.append(0.0)
        out.append(np.mean(aps) if aps else np.nan)
    return np.array(out)


@pytest.mark.parametrize("ignore_empty", [True, False])
def test_map_single_run_equals_sklearn_loop(ignore_empty):
    probs, multihot, _, unc = _data()
    res = retention_curve(probs, multihot, unc, "map", FRACTIONS, ignore_empty=ignore_empty)
    ref = _naive(probs, multihot, unc, FRACTIONS, "map", ignore_empty)
    np.testing.assert_allclose(res.values[0].numpy(), ref, atol=1e-6)
    assert res.metric == "map" and res.ci == "none"


def test_map_default_fractions_equals_sklearn_loop():
    probs, multihot, _, unc = _data(n=130, c=3, seed=1)
    res = retention_curve(probs, multihot, unc, "map")
    assert res.fractions.shape == (100,)
    np.testing.assert_allclose(res.fractions.numpy(), np.arange(1, 101) / 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _naive(probs, multihot, unc, res.fractions.tolist(), "map")
    np.testing.assert_allclose(res.values[0].numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("metric", ["accuracy", "map"])
def test_independent_runs_equal_sklearn_loop(metric):
    probs, multihot, classes, unc = _data(runs=3, seed=2)
    targets = classes if metric == "accuracy" else multihot
    res = retention_curve(probs, targets, unc, metric, FRACTIONS)
    assert res.values.shape == (3, len(FRACTIONS)) and res.ci == "t"
    for r in range(3):
        ref = _naive(probs[r], targets, unc[r], FRACTIONS, metric)
        np.testing.assert_allclose(res.values[r].numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("metric", ["accuracy", "map"])
def test_bootstrap_equals_sklearn_loop_on_resamples(metric):
    probs, multihot, classes, unc = _data(seed=3)
    targets = classes if metric == "accuracy" else multihot
    res = retention_curve(
        probs, targets, unc, metric, FRACTIONS, bootstrap=4, generator=torch.Generator().manual_seed(9)
    )
    assert res.ci == "percentile"
    rows = torch.randint(0, 57, (4, 57), generator=torch.Generator().manual_seed(9))  # the documented draw
    for b in range(4):
        ref = _naive(probs[rows[b]], targets[rows[b]], unc[rows[b]], FRACTIONS, metric)
        np.testing.assert_allclose(res.values[b].numpy(), ref, atol=1e-6)


def test_bootstrap_is_reproducible_with_a_seed():
    probs, multihot, _, unc = _data(seed=4)
    a = retention_curve(probs, multihot, unc, "map", FRACTIONS, bootstrap=5, generator=torch.Generator().manual_seed(1))
    b = retention_curve(probs, multihot, unc, "map", FRACTIONS, bootstrap=5, generator=torch.Generator().manual_seed(1))
    c = retention_curve(probs, multihot, unc, "map", FRACTIONS, bootstrap=5, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a.values, b.values, equal_nan=True)
    assert not torch.equal(a.values.nan_to_num(), c.values.nan_to_num())


def test_accuracy_equals_sklearn_loop_and_callable():
    probs, _, classes, unc = _data(n=200, c=4, seed=5, levels=9)
    res = retention_curve(probs, classes, unc, "accuracy")
    np.testing.assert_allclose(res.values[0].numpy(), _naive(probs, classes, unc, res.fractions.tolist(), "accuracy"))

    def top1(p, y):
        return (p.argmax(1) == y).double().mean()

    custom = retention_curve(probs, classes, unc, top1, FRACTIONS)
    torch.testing.assert_close(custom.values, retention_curve(probs, classes, unc, "accuracy", FRACTIONS).values)
    assert custom.metric == "top1"


def test_one_hot_targets_for_accuracy():
    probs, _, classes, unc = _data(seed=6)
    onehot = torch.nn.functional.one_hot(classes, 5)
    a = retention_curve(probs, onehot, unc, "accuracy", FRACTIONS)
    torch.testing.assert_close(a.values, retention_curve(probs, classes, unc, "accuracy", FRACTIONS).values)


def test_keep_rule():
    assert keep_counts(torch.tensor([0.07, 0.29, 0.5, 1.0], dtype=torch.float64), 100).tolist() == [7, 29, 50, 100]
    assert keep_counts(torch.tensor([0.001], dtype=torch.float64), 50).tolist() == [1]
    assert keep_counts(torch.tensor([0.5], dtype=torch.float64), 7).tolist() == [4]  # ceil
    # Sister-lab rule (drop p * floor(0.01 N) for p = 0..99) agrees whenever 100 divides N.
    n = 2000
    sister = [n - p * (n // 100) for p in range(99, -1, -1)]
    assert keep_counts(torch.arange(1, 101, dtype=torch.float64) / 100, n).tolist() == sister


def test_confidence_intervals():
    stats = pytest.importorskip("scipy.stats")
    probs, multihot, _, unc = _data(runs=6, seed=7)
    fr = FRACTIONS[2:]  # every replication defined at every point
    res = retention_curve(probs, multihot, unc, "map", fr)
    v = res.values.numpy()
    half = stats.t.ppf(0.975, 5) * v.std(0, ddof=1) / math.sqrt(6)
    np.testing.assert_allclose(res.mean.numpy(), v.mean(0))
    np.testing.assert_allclose(res.lower.numpy(), v.mean(0) - half)
    np.testing.assert_allclose(res.upper.numpy(), v.mean(0) + half)
    for x in (res.mean, res.lower, res.upper):
        assert x.shape == (len(fr),)
    # NaN replications (no positive kept) are left out of the mean.
    sparse = retention_curve(probs, multihot, unc, "map", FRACTIONS)
    np.testing.assert_allclose(sparse.mean.numpy(), np.nanmean(sparse.values.numpy(), 0))
    boot = retention_curve(probs[0], multihot, unc[0], "map", FRACTIONS, bootstrap=30)
    bv = boot.values.numpy()
    np.testing.assert_allclose(boot.lower.numpy(), np.nanpercentile(bv, 2.5, axis=0))
    np.testing.assert_allclose(boot.upper.numpy(), np.nanpercentile(bv, 97.5, axis=0))
    single = retention_curve(probs[0], multihot, unc[0], "map", FRACTIONS)
    assert single.values.shape == (1, len(FRACTIONS)) and bool(torch.isnan(single.lower).all())


def test_area_and_result_type():
    probs, _, classes, unc = _data(seed=8)
    res = retention_curve(probs, classes, unc, "accuracy", [0.2, 0.6, 1.0])
    assert isinstance(res, RetentionResult)
    m = res.mean.numpy()
    assert res.area == pytest.approx((0.4 * (m[0] + m[1]) / 2 + 0.4 * (m[1] + m[2]) / 2) / 0.8)
    flat = random_curve(probs, classes, "accuracy", [0.2, 0.6, 1.0])
    assert flat.area == pytest.approx(flat.mean[0].item())


def test_retention_curves_share_resamples_and_match_single_calls():
    probs, multihot, _, unc = _data(seed=10)
    other = unc.flip(0)
    both = retention_curves(
        probs,
        multihot,
        {"a": unc, "b": other},
        "map",
        FRACTIONS,
        bootstrap=3,
        generator=torch.Generator().manual_seed(5),
    )
    one = retention_curve(
        probs, multihot, other, "map", FRACTIONS, bootstrap=3, generator=torch.Generator().manual_seed(5)
    )
    assert list(both) == ["a", "b"]
    torch.testing.assert_close(both["b"].values, one.values, equal_nan=True)
    chunked = retention_curves(
        probs,
        multihot,
        {"a": unc, "b": other},
        "map",
        FRACTIONS,
        bootstrap=3,
        generator=torch.Generator().manual_seed(5),
        replications=2,
    )
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
    assert rmap.values.shape == (5, 100) and rmap.ci == "t"
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("metric", ["accuracy", "map"])
def test_gpu_matches_cpu(metric):
    probs, multihot, classes, unc = _data(runs=3, seed=12)
    targets = classes if metric == "accuracy" else multihot
    cpu = retention_curve(probs, targets, unc, metric, FRACTIONS)
    gpu = retention_curve(probs.cuda(), targets.cuda(), unc.cuda(), metric, FRACTIONS)
    assert gpu.values.device.type == "cuda"
    torch.testing.assert_close(gpu.values.cpu(), cpu.values, equal_nan=True)
