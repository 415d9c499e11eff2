import math

import numpy as np
import pytest
import torch

from vipann.evaluation.claims import Claim, Interval, auroc_gain, decide, paired_difference, retention_gain
from vipann.metrics import retention_curves

skm = pytest.importorskip("sklearn.metrics")

GRID = np.arange(5, 101, 5) / 100


def _percentile_interval(point, reps):
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return min(lo, point), max(hi, point)


def _accuracy_case(n, informative, seed):
    """Correctness and an uncertainty that is `informative` x (1 - correct) + noise."""
    g = torch.Generator().manual_seed(seed)
    correct = torch.rand(n, generator=g) < 0.7
    unc = informative * (~correct).double() + torch.rand(n, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (n,), generator=g)
    wrong = (labels + 1) % 3
    probs = torch.nn.functional.one_hot(torch.where(correct, labels, wrong), 3).double() * 0.8 + 0.2 / 3
    return probs, labels, unc


def _numpy_gain(correct, unc, usable):
    """Area over the usable grid of (accuracy of the k least uncertain) - (accuracy of all)."""
    order = np.argsort(unc, kind="stable")
    n = len(unc)
    k = np.maximum(1, np.ceil(np.round(GRID * n, 6)).astype(int))
    curve = np.cumsum(correct[order])[k - 1] / k
    x, y = GRID[usable], (curve - correct.mean())[usable]
    return np.trapezoid(y, x) / (x[-1] - x[0])


def test_decide_on_constructed_intervals():
    assert decide(Interval(0.08, 0.05, 0.11), margin=0.01) == "holds"  # a clear gain
    assert decide(Interval(0.0, -0.004, 0.005), margin=0.01) == "does not hold"  # no gain
    assert decide(Interval(-0.03, -0.06, -0.01), margin=0.01) == "does not hold"  # a loss
    assert decide(Interval(0.02, -0.03, 0.07), margin=0.01) == "inconclusive"  # a gain inside the noise
    assert decide(Interval(0.01, 0.002, 0.009), margin=0.01) == "holds"  # small but certain
    assert decide(Interval(0.01, -0.02, 0.04), kind="equivalent", margin=0.05) == "holds"
    assert decide(Interval(0.2, 0.1, 0.3), kind="equivalent", margin=0.05) == "does not hold"
    assert decide(Interval(0.05, -0.02, 0.12), kind="equivalent", margin=0.05) == "inconclusive"
    assert decide(Interval(math.nan, math.nan, math.nan)) == "inconclusive"
    with pytest.raises(ValueError, match="kind"):
        decide(Interval(0, 0, 0), kind="less")
    claim = Claim("c", "s", "VI-PANN 4.2", "does not hold", "area", Interval(0.0, -0.004, 0.005), margin=0.01)
    assert claim.verdict == "does not hold" and claim.agrees is True and claim.as_dict()["verdict"] == claim.verdict
    noisy = Claim("c", "s", "VI-PANN 4.2", "holds", "area", Interval(0.02, -0.03, 0.07), margin=0.01)
    assert noisy.agrees is None


@pytest.mark.parametrize(
    ("n", "informative", "verdict"),
    [(400, 1.0, "holds"), (3000, 0.0, "does not hold"), (30, 0.05, "inconclusive")],
)
def test_retention_gain_verdicts_and_numpy_reference(n, informative, verdict):
    probs, labels, unc = _accuracy_case(n, informative, seed=n)
    gain = retention_gain([(probs, labels, {"u": unc})], metric="accuracy", bootstrap=300, seed=3)["u"]
    correct = (probs.argmax(1) == labels).numpy().astype(float)
    usable = np.maximum(1, np.ceil(np.round(GRID * n, 6))) >= min(10, n)
    usable = np.flip(np.cumprod(np.flip(usable))).astype(bool)
    point = _numpy_gain(correct, unc.numpy(), usable)
    rows = torch.randint(0, n, (300, n), generator=torch.Generator().manual_seed(3)).numpy()
    reps = np.array([_numpy_gain(correct[r], unc.numpy()[r], usable) for r in rows])
    lo, hi = _percentile_interval(point, reps)
    assert gain.estimate == pytest.approx(point, abs=1e-12)
    assert (gain.lower, gain.upper) == pytest.approx((lo, hi), abs=1e-12)
    assert decide(gain, margin=0.02) == verdict


def test_retention_gain_runs_and_folds_average():
    probs, labels, unc = _accuracy_case(120, 1.0, seed=1)
    probs2, labels2, unc2 = _accuracy_case(90, 0.5, seed=2)
    runs = torch.stack([probs, probs.flip(1)])  # two runs of the same clips
    one = retention_gain([(probs, labels, {"u": unc})], metric="accuracy", bootstrap=50)["u"]
    other = retention_gain([(probs.flip(1), labels, {"u": unc})], metric="accuracy", bootstrap=50)["u"]
    both = retention_gain([(runs, labels, {"u": unc})], metric="accuracy", bootstrap=50)["u"]
    assert both.estimate == pytest.approx((one.estimate + other.estimate) / 2)
    fold2 = retention_gain([(probs2, labels2, {"u": unc2})], metric="accuracy", bootstrap=50, seed=0)
    groups = [(probs, labels, {"u": unc}), (probs2, labels2, {"u": unc2})]
    folds = retention_gain(groups, metric="accuracy", bootstrap=50)
    assert folds["u"].estimate == pytest.approx((one.estimate + fold2["u"].estimate) / 2)
    assert folds["u"].lower <= folds["u"].estimate <= folds["u"].upper


def test_retention_gain_map_against_sklearn():
    g = torch.Generator().manual_seed(4)
    n, c = 60, 4
    targets = torch.rand(n, c, generator=g) < 0.35
    probs = (0.6 * targets.double() + 0.7 * torch.rand(n, c, generator=g, dtype=torch.float64)).clamp(0, 1)
    unc = -(probs - 0.5).abs().sum(1) + 0.3 * torch.rand(n, generator=g, dtype=torch.float64)
    fr = [0.5, 0.75, 1.0]
    gain = retention_gain([(probs, targets, {"u": unc})], metric="map", fractions=fr, bootstrap=10, draws=2, seed=5)
    gen = torch.Generator().manual_seed(5 + 104729)
    keys = [torch.rand(n, generator=gen, dtype=torch.float64).numpy() for _ in range(2)]
    rows = torch.randint(0, n, (10, n), generator=torch.Generator().manual_seed(5)).numpy()
    p, t = probs.numpy(), targets.numpy()

    def curve(rows_, u):
        order = np.argsort(u[rows_], kind="stable")
        out = []
        for f in fr:
            keep = rows_[order[: math.ceil(round(f * n, 6))]]
            present = t[rows_].any(0)
            aps = [skm.average_precision_score(t[keep, j], p[keep, j]) if t[keep, j].any() else 0.0 for j in range(c)]
            out.append(np.mean(np.array(aps)[present]))
        return np.array(out)

    def stat(rows_):
        diff = curve(rows_, unc.numpy()) - np.mean([curve(rows_, k) for k in keys], 0)
        return np.trapezoid(diff, fr) / 0.5

    point = stat(np.arange(n))
    reps = np.array([stat(r) for r in rows])
    assert gain["u"].estimate == pytest.approx(point, abs=1e-6)
    assert (gain["u"].lower, gain["u"].upper) == pytest.approx(_percentile_interval(point, reps), abs=1e-6)
    # curves computed before (on a finer grid, same resamples) give the same interval without recomputing them
    fine = torch.arange(1, 101, dtype=torch.float64) / 100
    gen = torch.Generator().manual_seed(5)
    curves = retention_curves(probs, targets, {"u": unc}, "map", fine, bootstrap=10, generator=gen)
    again = retention_gain(
        [(probs, targets, {"u": unc})], metric="map", fractions=fr, bootstrap=10, draws=2, seed=5, precomputed=[curves]
    )
    got, ref = again["u"], gain["u"]
    assert (got.estimate, got.lower, got.upper) == pytest.approx((ref.estimate, ref.lower, ref.upper), abs=1e-7)
    with pytest.raises(ValueError, match="bootstrap curves of 20"):
        retention_gain([(probs, targets, {"u": unc})], metric="map", bootstrap=20, precomputed=[curves])


def test_auroc_gain_against_sklearn():
    g = torch.Generator().manual_seed(6)
    score_id = torch.randn(80, generator=g, dtype=torch.float64).round(decimals=1)  # ties count half
    score_ood = (torch.randn(30, generator=g, dtype=torch.float64) + 0.8).round(decimals=1)
    gain = auroc_gain([(score_id, score_ood)], bootstrap=400, seed=7)
    gen = torch.Generator().manual_seed(7)
    rows_id = torch.randint(0, 80, (400, 80), generator=gen).numpy()
    rows_ood = torch.randint(0, 30, (400, 30), generator=gen).numpy()
    a, b = score_id.numpy(), score_ood.numpy()

    def auc(ra, rb):
        return skm.roc_auc_score(np.r_[np.zeros(len(ra)), np.ones(len(rb))], np.r_[a[ra], b[rb]]) - 0.5

    point = auc(np.arange(80), np.arange(30))
    reps = np.array([auc(ra, rb) for ra, rb in zip(rows_id, rows_ood)])
    assert gain.estimate == pytest.approx(point, abs=1e-12)
    assert (gain.lower, gain.upper) == pytest.approx(_percentile_interval(point, reps), abs=1e-12)
    assert decide(gain) == "holds"
    same = auroc_gain([(score_id, score_id[torch.randperm(80, generator=g)[:30]])], bootstrap=400)
    assert decide(same, kind="greater", margin=0.05) != "holds"


def test_paired_difference_against_numpy():
    g = torch.Generator().manual_seed(8)
    a = (torch.rand(50, generator=g) < 0.8).double()
    b = (torch.rand(50, generator=g) < 0.6).double()
    diff = paired_difference([(a, b)], bootstrap=500, seed=9)
    rows = torch.randint(0, 50, (500, 50), generator=torch.Generator().manual_seed(9)).numpy()
    d = (a - b).numpy()
    point = d.mean()
    assert diff.estimate == pytest.approx(point)
    assert (diff.lower, diff.upper) == pytest.approx(_percentile_interval(point, d[rows].mean(1)), abs=1e-12)
    with pytest.raises(ValueError, match="same clips"):
        paired_difference([(a, b[:-1])])
