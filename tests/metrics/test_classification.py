import math
import warnings

import numpy as np
import pytest
import torch

from vipann.metrics import (
    accuracy,
    average_precision,
    d_prime,
    macro_roc_auc,
    mean_average_precision,
    roc_auc,
)

skm = pytest.importorskip("sklearn.metrics")


def _multilabel(n=300, c=7, levels=6, seed=0):
    """Scores quantised to a few levels (many ties) and multi-hot labels; class 0 left without positives."""
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randint(0, levels, (n, c), generator=g) / (levels - 1)).double()
    labels = torch.rand(n, c, generator=g) < 0.3
    labels[:, 0] = False
    return scores, labels


def test_accuracy_matches_sklearn_and_accepts_logits():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(200, 5, generator=g)
    y = torch.randint(0, 5, (200,), generator=g)
    expected = skm.accuracy_score(y.numpy(), logits.argmax(1).numpy())
    assert accuracy(logits, y).item() == pytest.approx(expected)
    assert accuracy(torch.softmax(logits, 1), y).item() == pytest.approx(expected)


def test_accuracy_ties_go_to_first_class():
    probs = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    assert accuracy(probs, torch.tensor([0, 1])).item() == 0.5


def test_average_precision_matches_sklearn_with_ties():
    scores, labels = _multilabel()
    ours = average_precision(scores, labels)
    assert ours.shape == (7,) and torch.isnan(ours[0])
    ref = skm.average_precision_score(labels[:, 1:].numpy(), scores[:, 1:].numpy(), average=None)
    np.testing.assert_allclose(ours[1:].numpy(), ref, rtol=0, atol=1e-12)


def test_average_precision_continuous_scores_and_1d():
    g = torch.Generator().manual_seed(4)
    s = torch.rand(500, generator=g)
    y = torch.rand(500, generator=g) < s
    assert average_precision(s, y).item() == pytest.approx(skm.average_precision_score(y.numpy(), s.numpy()), abs=1e-12)
    assert average_precision(s, y.long()).dim() == 0


def test_mean_average_precision_ignore_empty():
    scores, labels = _multilabel(seed=2)
    ap = average_precision(scores, labels)
    assert mean_average_precision(scores, labels).item() == pytest.approx(ap[1:].mean().item())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = skm.average_precision_score(labels.numpy(), scores.numpy(), average="macro")
    assert mean_average_precision(scores, labels, ignore_empty=False).item() == pytest.approx(sk, abs=1e-12)


def test_class_index_targets_are_one_hot_encoded():
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(torch.randn(120, 4, generator=g), 1)
    y = torch.randint(0, 4, (120,), generator=g)
    onehot = torch.nn.functional.one_hot(y, 4)
    torch.testing.assert_close(average_precision(probs, y), average_precision(probs, onehot))
    ref = skm.roc_auc_score(onehot.numpy(), probs.numpy(), average=None)
    np.testing.assert_allclose(roc_auc(probs, y).numpy(), ref, atol=1e-12)


def test_roc_auc_matches_sklearn_with_ties():
    scores, labels = _multilabel(levels=4, seed=3)
    ours = roc_auc(scores, labels)
    assert torch.isnan(ours[0])
    ref = skm.roc_auc_score(labels[:, 1:].numpy(), scores[:, 1:].numpy(), average=None)
    np.testing.assert_allclose(ours[1:].numpy(), ref, atol=1e-12)
    assert macro_roc_auc(scores, labels).item() == pytest.approx(float(np.mean(ref)))
    with pytest.raises(ValueError, match="undefined"):
        macro_roc_auc(scores, labels, ignore_empty=False)


def test_roc_auc_hand_computed():
    s = torch.tensor([0.1, 0.4, 0.35, 0.8])
    y = torch.tensor([0, 0, 1, 1])
    assert roc_auc(s, y).item() == pytest.approx(0.75)
    assert roc_auc(torch.ones(4), y).item() == pytest.approx(0.5)  # all tied


def test_large_blocks_are_consistent():
    # More classes than one block holds: results must not depend on the block split.
    g = torch.Generator().manual_seed(6)
    scores = torch.rand(3000, 900, generator=g)
    labels = torch.rand(3000, 900, generator=g) < 0.05
    ap = average_precision(scores, labels)
    cols = [0, 450, 899]
    ref = skm.average_precision_score(labels[:, cols].numpy(), scores[:, cols].numpy(), average=None)
    np.testing.assert_allclose(ap[cols].numpy(), ref, atol=1e-12)


def test_d_prime():
    assert d_prime(0.5).item() == pytest.approx(0.0)
    phi = 0.5 * math.erfc(-1 / 2)  # Phi(1/sqrt(2)) gives d' = 1
    assert d_prime(phi).item() == pytest.approx(1.0)
    out = d_prime(torch.tensor([0.9, 0.973], dtype=torch.float64))
    norm = pytest.importorskip("scipy.stats").norm
    np.testing.assert_allclose(out.numpy(), math.sqrt(2) * norm.ppf([0.9, 0.973]))
    assert torch.isinf(d_prime(1.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        d_prime(1.5)


def test_bad_inputs():
    s = torch.rand(10, 3)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        average_precision(s, torch.ones(9, 3))
    with pytest.raises(ValueError, match="multi-hot"):
        average_precision(s, torch.full((10, 3), 2))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(torch.full((10, 3), math.nan), torch.ones(10, 3))
    with pytest.raises(ValueError, match="non-empty"):
        roc_auc(torch.rand(0, 3), torch.ones(0, 3))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        accuracy(s, torch.tensor([0, 1, 2, 3, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="integer class indices"):
        accuracy(s, torch.zeros(10))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        accuracy(s, torch.zeros(9, dtype=torch.long))
