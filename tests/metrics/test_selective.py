from itertools import permutations

import numpy as np
import pytest
import torch

from vipann.metrics import augrc, aurc, risk_coverage_curve


def _numpy_areas(loss, unc):
    """Geifman's AURC and Traub's AUGRC (mean over coverage k / N) for one ranking without ties."""
    order = np.argsort(unc, kind="stable")
    cum = np.cumsum(loss[order])
    n = len(loss)
    k = np.arange(1, n + 1)
    return np.mean(cum / k), np.mean(cum / n)


def _case(n=200, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2 * torch.randn(n, c, generator=g, dtype=torch.float64), 1)
    targets = torch.randint(0, c, (n,), generator=g)
    return probs, targets


def test_multiclass_against_numpy():
    probs, targets = _case()
    loss = (probs.argmax(1) != targets).double().numpy()
    conf = probs.max(1).values.numpy()
    ref_aurc, ref_augrc = _numpy_areas(loss, 1 - conf)
    assert float(aurc(probs, targets)) == pytest.approx(ref_aurc, rel=1e-12)
    assert float(augrc(probs, targets)) == pytest.approx(ref_augrc, rel=1e-12)
    unc = torch.rand(200, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref_aurc, ref_augrc = _numpy_areas(loss, unc.numpy())
    assert float(aurc(probs, targets, unc)) == pytest.approx(ref_aurc, rel=1e-12)
    assert float(augrc(probs, targets, unc)) == pytest.approx(ref_augrc, rel=1e-12)
    coverage, risk, grisk = risk_coverage_curve(probs, targets, unc)
    np.testing.assert_allclose(coverage.numpy(), np.arange(1, 201) / 200)
    np.testing.assert_allclose(grisk.numpy(), risk.numpy() * coverage.numpy())


def test_multilabel_hamming_loss_against_numpy():
    g = torch.Generator().manual_seed(2)
    probs = torch.rand(80, 6, generator=g, dtype=torch.float64)
    targets = torch.rand(80, 6, generator=g) < 0.3
    p, y = probs.numpy(), targets.numpy()
    loss = ((p >= 0.4) != y).mean(1)
    unc = 1 - np.maximum(p, 1 - p).mean(1)
    ref_aurc, ref_augrc = _numpy_areas(loss, unc)
    assert float(aurc(probs, targets, multilabel=True, threshold=0.4)) == pytest.approx(ref_aurc, rel=1e-12)
    assert float(augrc(probs, targets, multilabel=True, threshold=0.4)) == pytest.approx(ref_augrc, rel=1e-12)


def test_ties_are_averaged_over_every_order():
    # 7 clips in 3 tie groups: average the areas over all 7! row orders (stable sort keeps each).
    probs, targets = _case(n=7, c=3, seed=3)
    unc = torch.tensor([0.2, 0.1, 0.2, 0.3, 0.1, 0.2, 0.3], dtype=torch.float64)
    loss = (probs.argmax(1) != targets).double().numpy()
    assert 0 < loss.sum() < 7
    areas = np.array([_numpy_areas(loss[list(o)], unc.numpy()[list(o)]) for o in permutations(range(7))])
    assert float(aurc(probs, targets, unc)) == pytest.approx(areas[:, 0].mean(), rel=1e-12)
    assert float(augrc(probs, targets, unc)) == pytest.approx(areas[:, 1].mean(), rel=1e-12)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(4))
    assert float(aurc(probs[perm], targets[perm], unc[perm])) == pytest.approx(float(aurc(probs, targets, unc)))


def test_oracle_and_random_rankings():
    probs, targets = _case(n=100, seed=5)
    wrong = (probs.argmax(1) != targets).double()
    e, n = float(wrong.sum()), 100
    assert float(augrc(probs, targets, wrong)) == pytest.approx(e * (e + 1) / (2 * n * n))
    flat = torch.zeros(100, dtype=torch.float64)  # every order equally likely: the risk is flat
    assert float(aurc(probs, targets, flat)) == pytest.approx(e / n)
    assert float(augrc(probs, targets, flat)) == pytest.approx(e / n * (n + 1) / (2 * n))


def test_bad_inputs():
    probs, targets = _case(n=10)
    with pytest.raises(ValueError, match=r"\(N,\) = \(10,\)"):
        aurc(probs, targets, torch.zeros(9, dtype=torch.float64))
    with pytest.raises(ValueError, match="threshold"):
        augrc(probs, targets, threshold=1.0)
    with pytest.raises(ValueError, match="NaN"):
        aurc(probs, targets, torch.full((10,), float("nan")))
