import numpy as np
import pytest
import torch

from vipann.metrics.bootstrap import bootstrap_interval, contain, nanquantile, student_t_interval

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("method", ["percentile", "basic", "bca"])
def test_intervals_equal_scipy_on_its_own_resamples(method):
    rng = np.random.default_rng(0)
    data = rng.gamma(2.0, size=40)  # skewed: the three intervals differ
    res = stats.bootstrap((data,), np.mean, n_resamples=999, method=method, rng=np.random.default_rng(1))
    reps = torch.from_numpy(res.bootstrap_distribution)
    jack = torch.from_numpy(np.array([np.delete(data, i).mean() for i in range(len(data))]))
    lower, upper = bootstrap_interval(torch.tensor(data.mean()), reps, method=method, jackknife=jack)
    np.testing.assert_allclose([float(lower), float(upper)], res.confidence_interval, rtol=1e-10)


def test_elementwise_with_nan_replicates():
    rng = np.random.default_rng(2)
    reps = rng.normal(size=(300, 4))
    reps[rng.random((300, 4)) < 0.2] = np.nan
    reps[:, 3] = np.nan  # an element with no finite resample
    lower, upper = bootstrap_interval(torch.zeros(4, dtype=torch.float64), torch.from_numpy(reps), level=0.9)
    np.testing.assert_allclose(lower[:3].numpy(), np.nanpercentile(reps[:, :3], 5, axis=0))
    np.testing.assert_allclose(upper[:3].numpy(), np.nanpercentile(reps[:, :3], 95, axis=0))
    assert torch.isnan(lower[3]) and torch.isnan(upper[3])
    levels = torch.tensor([0.1, 0.5, 0.99, 0.3], dtype=torch.float64)
    q = nanquantile(torch.from_numpy(reps), levels)
    ref = [np.nanquantile(reps[:, j], float(levels[j])) for j in range(3)]
    np.testing.assert_allclose(q[:3].numpy(), ref)


def test_contain_widens_to_the_estimate():
    est = torch.tensor([0.99, 0.5, 0.2], dtype=torch.float64)
    lo = torch.tensor([1.0, 0.4, float("nan")], dtype=torch.float64)
    lower, upper = contain(est, lo, torch.tensor([1.0, 0.6, 0.3], dtype=torch.float64))
    assert lower.tolist()[:2] == [0.99, 0.4] and upper.tolist() == [1.0, 0.6, 0.3] and lower.isnan()[2]


def test_student_t_interval_equals_scipy():
    rng = np.random.default_rng(3)
    x = rng.normal(0.7, 0.05, size=(5, 3))
    mean, lower, upper = student_t_interval(torch.from_numpy(x))
    np.testing.assert_allclose(mean.numpy(), x.mean(0))
    lo, hi = stats.t.interval(0.95, 4, loc=x.mean(0), scale=stats.sem(x, axis=0))
    np.testing.assert_allclose(lower.numpy(), lo, rtol=1e-12)
    np.testing.assert_allclose(upper.numpy(), hi, rtol=1e-12)
    _, one_lo, _ = student_t_interval(torch.from_numpy(x[:1]))
    assert bool(one_lo.isnan().all())


def test_bad_inputs():
    reps = torch.randn(10, 2)
    with pytest.raises(ValueError, match="method"):
        bootstrap_interval(torch.zeros(2), reps, method="normal")
    with pytest.raises(ValueError, match="jackknife"):
        bootstrap_interval(torch.zeros(2), reps, method="bca")
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(torch.zeros(2), reps, level=95)
    with pytest.raises(ValueError, match="shape"):
        bootstrap_interval(torch.zeros(3), reps)
