import numpy as np
import pytest
import torch

from vipann.metrics import expected_calibration_error, miscalibration_score, multilabel_calibration_error


def _ece(p, y, n_bins):
    """Equal-width bins over [0, 1], 1.0 in the last bin; sum_b (n_b / n) |acc_b - conf_b|."""
    b = np.minimum(np.digitize(p, np.arange(1, n_bins) / n_bins, right=False), n_bins - 1)
    total = 0.0
    for k in range(n_bins):
        m = b == k
        if m.any():
            total += m.sum() / len(p) * abs(y[m].mean() - p[m].mean())
    return total


def _reference(p, y, average, n_bins, top_k):
    keep = np.ones_like(p, dtype=bool)
    if top_k is not None:
        keep[:] = False
        for i, row in enumerate(p):
            keep[i, np.argsort(-row, kind="stable")[:top_k]] = True
    if average == "global":
        return _ece(p[keep], y[keep], n_bins)
    eces, weights = [], []
    for c in range(p.shape[1]):
        m = keep[:, c]
        if m.any():
            eces.append(_ece(p[m, c], y[m, c], n_bins))
            weights.append(y[m, c].sum())
    eces, weights = np.array(eces), np.array(weights)
    return eces.mean() if average == "marginal" else (eces * weights).sum() / weights.sum()


def _data(seed=0, n=120, c=8):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * 2 - 1
    probs = torch.sigmoid(logits)
    probs[0, 0], probs[1, 1], probs[2, 2] = 1.0, 0.0, 2 / 15  # the last bin's closed end, 0, and an edge
    targets = torch.rand(n, c, generator=g, dtype=torch.float64) < probs * 0.8
    return probs, targets


@pytest.mark.parametrize("average", ["marginal", "weighted", "global"])
@pytest.mark.parametrize("top_k", [None, 1, 3])
@pytest.mark.parametrize("n_bins", [15, 7])
def test_against_numpy(average, top_k, n_bins):
    probs, targets = _data()
    got = multilabel_calibration_error(probs, targets, average=average, n_bins=n_bins, top_k=top_k)
    ref = _reference(probs.numpy(), targets.numpy().astype(float), average, n_bins, top_k)
    assert float(got) == pytest.approx(ref, rel=1e-12, abs=1e-15)


def test_global_is_the_pooled_ece_and_classes_without_data_are_skipped():
    probs, targets = _data(seed=1)
    pooled = expected_calibration_error(probs, targets, multilabel=True)
    assert float(multilabel_calibration_error(probs, targets, average="global")) == pytest.approx(float(pooled))
    # top_k=1 on scores that always rank class 0 first: only class 0 has pairs, so marginal = its ECE.
    skew = probs.clone()
    skew[:, 0] = 1.0
    one = multilabel_calibration_error(skew, targets, average="marginal", top_k=1)
    assert float(one) == pytest.approx(_ece(np.ones(120), targets[:, 0].numpy().astype(float), 15))
    none = torch.zeros_like(targets)
    assert torch.isnan(multilabel_calibration_error(probs, none, average="weighted"))


@pytest.mark.parametrize("multilabel", [True, False])
def test_miscalibration_score_against_numpy(multilabel):
    g = torch.Generator().manual_seed(2)
    if multilabel:
        probs, targets = _data(seed=2)
        conf, hit = probs.numpy().ravel(), targets.numpy().ravel().astype(float)
    else:
        probs = torch.softmax(3 * torch.randn(150, 4, generator=g, dtype=torch.float64), 1)
        targets = torch.randint(0, 4, (150,), generator=g)
        conf = probs.max(1).values.numpy()
        hit = (probs.argmax(1) == targets).numpy().astype(float)
    b = np.minimum(np.digitize(conf, np.arange(1, 15) / 15), 14)
    ref = sum((b == k).mean() * (conf[b == k].mean() - hit[b == k].mean()) for k in range(15) if (b == k).any())
    got = miscalibration_score(probs, targets, multilabel=multilabel)
    assert float(got) == pytest.approx(ref, rel=1e-12)
    assert float(got) == pytest.approx(conf.mean() - hit.mean(), rel=1e-9)  # the bins cancel
    if multilabel:  # forecasting every label as almost certain is over-confident: positive
        assert float(miscalibration_score(probs.clamp(0.99, 1.0), targets, multilabel=True)) > 0.5


def test_bad_inputs():
    probs, targets = _data()
    with pytest.raises(ValueError, match="average"):
        multilabel_calibration_error(probs, targets, average="macro")
    with pytest.raises(ValueError, match="top_k"):
        multilabel_calibration_error(probs, targets, top_k=9)
    with pytest.raises(ValueError, match="n_bins"):
        multilabel_calibration_error(probs, targets, n_bins=0)
    with pytest.raises(ValueError, match="multi-hot"):
        multilabel_calibration_error(probs, targets.long() * 2)
    with pytest.raises(ValueError, match="n_bins"):
        miscalibration_score(probs, targets, multilabel=True, n_bins=0)
