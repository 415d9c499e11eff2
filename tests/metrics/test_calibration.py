import math

import numpy as np
import pytest
import torch

from vipann.metrics import (
    BrierDecomposition,
    ReliabilityData,
    brier_decomposition,
    brier_score,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_diagram,
    reliability_mae,
)


def _multiclass(n=400, c=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    probs = torch.softmax(logits, 1)
    y = torch.multinomial(torch.softmax(logits * 0.7, 1), 1, generator=g).squeeze(1)
    return probs, y


def _binary(n=600, c=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, c, generator=g, dtype=torch.float64)
    y = torch.rand(n, c, generator=g, dtype=torch.float64) < p**1.5
    return p, y


def _np_binned(conf, hit, n_bins):
    """NumPy reference: uniform bins [k/n, (k+1)/n), last one closed; returns per-bin (count, conf, acc)."""
    edges = np.arange(n_bins + 1) / n_bins
    ids = np.searchsorted(edges[1:-1], conf, side="right")
    out = []
    for b in range(n_bins):
        m = ids == b
        out.append((m.sum(), conf[m].mean() if m.any() else np.nan, hit[m].mean() if m.any() else np.nan))
    return out


def _np_ece(conf, hit, n_bins):
    return sum(cnt * abs(a - c) for cnt, c, a in _np_binned(conf, hit, n_bins) if cnt) / len(conf)


def test_ece_hand_computed():
    # Two bins used: conf 0.9 (2 clips, 1 right) and 0.6 (2 clips, both right).
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 1])
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert expected_calibration_error(probs, y, n_bins=10).item() == pytest.approx(expected)
    assert maximum_calibration_error(probs, y, n_bins=10).item() == pytest.approx(0.4)
    assert reliability_mae(probs, y, n_bins=10).item() == pytest.approx(0.4)


def test_top_label_ece_matches_numpy_reference():
    probs, y = _multiclass()
    conf, pred = probs.max(1)
    ref = _np_ece(conf.numpy(), (pred == y).double().numpy(), 15)
    assert expected_calibration_error(probs, y).item() == pytest.approx(ref, abs=1e-12)
    assert maximum_calibration_error(probs, y).item() >= expected_calibration_error(probs, y).item()
    weighted = reliability_mae(probs, y, weighted=True)
    torch.testing.assert_close(weighted, expected_calibration_error(probs, y))


def test_classwise_and_multilabel_ece_match_reference():
    probs, y = _multiclass(seed=2)
    onehot = torch.nn.functional.one_hot(y, probs.shape[1]).double()
    ref = np.mean([_np_ece(probs[:, c].numpy(), onehot[:, c].numpy(), 10) for c in range(probs.shape[1])])
    assert expected_calibration_error(probs, y, 10, classwise=True).item() == pytest.approx(ref, abs=1e-12)
    p, yb = _binary()
    pooled = _np_ece(p.reshape(-1).numpy(), yb.reshape(-1).double().numpy(), 10)
    assert expected_calibration_error(p, yb, 10, multilabel=True).item() == pytest.approx(pooled, abs=1e-12)
    per_class = np.mean([_np_ece(p[:, c].numpy(), yb[:, c].double().numpy(), 10) for c in range(3)])
    got = expected_calibration_error(p, yb, 10, multilabel=True, classwise=True).item()
    assert got == pytest.approx(per_class, abs=1e-12)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_diagram_matches_sklearn_calibration_curve(strategy):
    calibration_curve = pytest.importorskip("sklearn.calibration").calibration_curve
    p, yb = _binary(c=1, seed=3)
    rd = reliability_diagram(p, yb, n_bins=8, strategy=strategy, multilabel=True)
    assert isinstance(rd, ReliabilityData)
    assert rd.edges.shape == (9,) and rd.counts.shape == (8,) and int(rd.counts.sum()) == 600
    prob_true, prob_pred = calibration_curve(yb.numpy().ravel(), p.numpy().ravel(), n_bins=8, strategy=strategy)
    filled = rd.counts > 0
    np.testing.assert_allclose(rd.accuracy[filled].numpy(), prob_true, atol=1e-12)
    np.testing.assert_allclose(rd.confidence[filled].numpy(), prob_pred, atol=1e-12)
    assert bool(torch.isnan(rd.accuracy[~filled]).all())


def test_brier_score_against_sklearn_and_convention():
    skm = pytest.importorskip("sklearn.metrics")
    p, yb = _binary(seed=4)
    ref = skm.brier_score_loss(yb.numpy().ravel(), p.numpy().ravel())
    assert brier_score(p, yb, multilabel=True).item() == pytest.approx(ref, abs=1e-12)
    # Two-class softmax: the sum over classes is twice the binary Brier of the positive class.
    probs = torch.stack([1 - p[:, 0], p[:, 0]], 1)
    y = yb[:, 0].long()
    assert brier_score(probs, y).item() == pytest.approx(2 * skm.brier_score_loss(y.numpy(), p[:, 0].numpy()))
    mc, t = _multiclass(seed=5)
    onehot = np.eye(mc.shape[1])[t.numpy()]
    assert brier_score(mc, t).item() == pytest.approx(((mc.numpy() - onehot) ** 2).sum(1).mean(), abs=1e-12)


@pytest.mark.parametrize("multilabel", [False, True])
def test_brier_decomposition_equals_binned_brier(multilabel):
    probs, y = _binary(seed=6) if multilabel else _multiclass(seed=6)
    n_bins = 10
    d = brier_decomposition(probs, y, n_bins, multilabel=multilabel)
    assert isinstance(d, BrierDecomposition)
    p = probs.numpy()
    yy = y.double().numpy() if multilabel else np.eye(p.shape[1])[y.numpy()]
    binned = []
    for c in range(p.shape[1]):
        ids = np.searchsorted((np.arange(n_bins + 1) / n_bins)[1:-1], p[:, c], side="right")
        means = {b: p[ids == b, c].mean() for b in np.unique(ids)}
        f = np.array([means[b] for b in ids])
        binned.append(((f - yy[:, c]) ** 2).mean())
    expected = np.mean(binned) if multilabel else np.sum(binned)
    total = (d.reliability - d.resolution + d.uncertainty).item()
    assert total == pytest.approx(expected, abs=1e-12)
    assert d.reliability.item() >= 0 and d.resolution.item() >= 0


def test_brier_decomposition_is_exact_for_discrete_forecasts():
    g = torch.Generator().manual_seed(7)
    levels = torch.tensor([0.05, 0.25, 0.45, 0.65, 0.85], dtype=torch.float64)
    p = levels[torch.randint(0, 5, (500, 2), generator=g)]
    y = torch.rand(500, 2, generator=g, dtype=torch.float64) < p
    d = brier_decomposition(p, y, n_bins=10, multilabel=True)
    total = d.reliability - d.resolution + d.uncertainty
    torch.testing.assert_close(total, brier_score(p, y, multilabel=True))


def test_nll_against_sklearn_log_loss():
    skm = pytest.importorskip("sklearn.metrics")
    probs, y = _multiclass(seed=8)
    ref = skm.log_loss(y.numpy(), probs.numpy(), labels=list(range(probs.shape[1])))
    assert negative_log_likelihood(probs, y).item() == pytest.approx(ref, abs=1e-10)
    p, yb = _binary(seed=9)
    ref = skm.log_loss(yb.numpy().ravel(), p.numpy().ravel())
    assert negative_log_likelihood(p, yb, multilabel=True).item() == pytest.approx(ref, abs=1e-10)
    # A confident mistake is large but finite.
    hard = torch.tensor([[1.0, 0.0]])
    assert math.isfinite(negative_log_likelihood(hard, torch.tensor([1])).item())


def test_bad_inputs():
    probs, y = _multiclass(n=20)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(probs, y, n_bins=0)
    with pytest.raises(ValueError, match="strategy"):
        expected_calibration_error(probs, y, strategy="log")
    with pytest.raises(ValueError, match=r"\(N,\)"):
        expected_calibration_error(probs, y[:10])
    with pytest.raises(ValueError, match="sum to 1"):
        brier_score(torch.full((20, 6), 0.5), y)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        brier_score(probs[0], y)
    with pytest.raises(ValueError, match="multi-hot"):
        negative_log_likelihood(torch.rand(5, 3), torch.full((5, 3), 3), multilabel=True)
    with pytest.raises(ValueError, match="NaN"):
        negative_log_likelihood(torch.full((5, 3), math.nan), torch.zeros(5, 3), multilabel=True)
    with pytest.raises(ValueError, match="eps"):
        negative_log_likelihood(probs, y, eps=0.7)
