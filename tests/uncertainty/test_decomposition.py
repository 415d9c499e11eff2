import math

import numpy as np
import pytest
import torch

from vipann.uncertainty import (
    Decomposition,
    binary_entropy,
    decompose,
    decompose_variance,
    entropy,
    validate_probs,
)


def _softmax_samples(s, b, c, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(s, b, c, generator=g, dtype=dtype) * 2, dim=-1)


def _sigmoid_samples(s, b, c, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.sigmoid(torch.randn(s, b, c, generator=g, dtype=dtype) * 3)


def _np_xlogx(p):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def _np_reference(p, multilabel):
    """Straightforward NumPy version of Eqs. 1-8 (per-class terms, then sums)."""
    mean = p.mean(0)
    if multilabel:
        tot = -(_np_xlogx(mean) + _np_xlogx(1 - mean))
        ale = (-(_np_xlogx(p) + _np_xlogx(1 - p))).mean(0)
    else:
        tot = -_np_xlogx(mean)
        ale = (-_np_xlogx(p)).mean(0)
    return tot, ale, tot - ale


# ---------------------------------------------------------------- hand-computed cases


@pytest.mark.parametrize("multilabel", [False, True])
def test_agreeing_samples_have_zero_epistemic(multilabel):
    one = _sigmoid_samples(1, 6, 4) if multilabel else _softmax_samples(1, 6, 4)
    d = decompose(one.expand(7, -1, -1), multilabel)
    assert torch.allclose(d.epistemic, torch.zeros(6, dtype=d.epistemic.dtype), atol=1e-12)
    assert torch.allclose(d.total, d.aleatoric, atol=1e-12)


def test_multiclass_known_values():
    # Two confident samples that disagree: aleatoric 0, epistemic = total = log 2.
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    d = decompose(probs, multilabel=False)
    assert d.total.item() == pytest.approx(math.log(2))
    assert d.aleatoric.item() == pytest.approx(0.0)
    assert d.epistemic.item() == pytest.approx(math.log(2))
    # A uniform categorical over C classes has entropy log C, all aleatoric.
    uni = torch.full((3, 2, 5), 0.2, dtype=torch.float64)
    d = decompose(uni, multilabel=False)
    assert torch.allclose(d.total, torch.full((2,), math.log(5), dtype=torch.float64))
    assert torch.allclose(d.aleatoric, d.total)


def test_multilabel_known_values_and_bits():
    probs = torch.tensor([[[0.5, 1.0, 0.0]], [[0.5, 1.0, 0.0]]])
    d = decompose(probs, multilabel=True)
    assert d.total.item() == pytest.approx(math.log(2), rel=1e-6)  # only the p=0.5 class counts
    assert d.epistemic.item() == pytest.approx(0.0, abs=1e-7)
    bits = decompose(probs, multilabel=True, base=2)
    assert bits.total.item() == pytest.approx(1.0, rel=1e-6)
    flip = torch.tensor([[[0.0]], [[1.0]]])  # disagreeing certain Bernoullis
    d = decompose(flip, multilabel=True, base=2)
    assert (d.total.item(), d.aleatoric.item(), d.epistemic.item()) == pytest.approx((1.0, 0.0, 1.0))


def test_exact_zero_and_one_are_finite_without_bias():
    probs = torch.tensor([[[1.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]]])
    for multilabel in (False, True):
        d = decompose(probs, multilabel)
        assert all(bool(torch.isfinite(x).all()) for x in d[:3])
        assert d.total.item() == 0.0  # xlogy: no eps bias


# ---------------------------------------------------------------- against a NumPy reference


@pytest.mark.parametrize("multilabel", [False, True])
def test_matches_numpy_reference(multilabel):
    make = _sigmoid_samples if multilabel else _softmax_samples
    probs = make(9, 13, 6, seed=3)
    d = decompose(probs, multilabel, per_class=True)
    tot, ale, epi = _np_reference(probs.numpy(), multilabel)
    np.testing.assert_allclose(d.total.numpy(), tot.sum(-1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(d.aleatoric.numpy(), ale.sum(-1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(d.epistemic.numpy(), np.maximum(epi.sum(-1), 0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d.total_per_class.numpy(), tot, atol=1e-12)
    np.testing.assert_allclose(d.aleatoric_per_class.numpy(), ale, atol=1e-12)
    assert bool((d.epistemic_per_class >= 0).all())
    # total = aleatoric + epistemic, and the per-class shares add up to the totals.
    torch.testing.assert_close(d.total, d.aleatoric + d.epistemic)
    torch.testing.assert_close(d.total_per_class.sum(-1), d.total)


def test_per_class_is_none_by_default_and_namedtuple():
    d = decompose(_softmax_samples(2, 3, 4), multilabel=False)
    assert isinstance(d, Decomposition)
    assert d.total_per_class is None and d.aleatoric_per_class is None and d.epistemic_per_class is None
    assert d.total.shape == (3,)


@pytest.mark.parametrize("chunk", [1, 2, 5, 100])
def test_chunking_does_not_change_results(chunk):
    probs = _sigmoid_samples(4, 11, 7, seed=5)
    ref = decompose(probs, True, per_class=True)
    out = decompose(probs, True, per_class=True, chunk_size=chunk)
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(
        decompose_variance(probs, True).total, decompose_variance(probs, True, chunk_size=chunk).total
    )


def test_two_d_input_is_one_sample():
    probs = _softmax_samples(1, 5, 3)[0]
    d = decompose(probs, multilabel=False)
    assert d.total.shape == (5,)
    assert torch.all(d.epistemic == 0)
    torch.testing.assert_close(d.total, entropy(probs))


def test_dtypes():
    assert decompose(_softmax_samples(2, 3, 4), False).total.dtype == torch.float64
    half = _sigmoid_samples(2, 3, 4, dtype=torch.float32).half()
    assert decompose(half, True).total.dtype == torch.float32


def test_helpers():
    p = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    expected = [0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2), 0.0]
    torch.testing.assert_close(binary_entropy(p), torch.tensor(expected, dtype=torch.float64))
    q = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(entropy(q), torch.tensor([math.log(2), 0.0], dtype=torch.float64))
    torch.testing.assert_close(entropy(q.T, dim=0), entropy(q))


# ---------------------------------------------------------------- variance decomposition


@pytest.mark.parametrize("multilabel", [False, True])
def test_variance_decomposition_matches_reference(multilabel):
    make = _sigmoid_samples if multilabel else _softmax_samples
    probs = make(8, 10, 5, seed=7)
    p = probs.numpy()
    ale = (p * (1 - p)).mean(0).sum(-1)
    epi = ((p**2).mean(0) - p.mean(0) ** 2).sum(-1)
    d = decompose_variance(probs, multilabel, per_class=True)
    np.testing.assert_allclose(d.aleatoric.numpy(), ale, atol=1e-12)
    np.testing.assert_allclose(d.epistemic.numpy(), epi, atol=1e-12)
    torch.testing.assert_close(d.total, d.aleatoric + d.epistemic)
    assert d.total_per_class.shape == (10, 5)
    if not multilabel:
        mean = probs.mean(0)
        torch.testing.assert_close(d.total, 1 - (mean**2).sum(-1))


# ---------------------------------------------------------------- validation


def test_rejects_out_of_range_and_logits():
    bad = torch.tensor([[[0.2, 1.3]]])
    with pytest.raises(ValueError, match=r"\[0, 1\].*logits"):
        decompose(bad, multilabel=True)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        decompose(torch.tensor([[[-0.1, 1.1]]]), multilabel=False)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_rejects_non_finite(value):
    probs = torch.full((2, 3, 4), 0.25)
    probs[1, 2, 0] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        decompose(probs, multilabel=True)


def test_rejects_bad_shapes_and_empty():
    with pytest.raises(ValueError, match=r"\(S, B, C\)"):
        decompose(torch.rand(2, 3, 4, 5), multilabel=True)
    with pytest.raises(ValueError, match=r"\(S, B, C\)"):
        decompose(torch.rand(4), multilabel=True)
    with pytest.raises(ValueError, match="non-empty"):
        decompose(torch.rand(3, 0, 4), multilabel=True)
    with pytest.raises(ValueError, match="floating-point"):
        decompose(torch.ones(2, 3, 4, dtype=torch.long), multilabel=True)
    with pytest.raises(TypeError):
        decompose(np.ones((2, 3, 4)), multilabel=True)


def test_single_class_multiclass_is_rejected():
    with pytest.raises(ValueError, match="at least 2 classes"):
        decompose(torch.ones(3, 4, 1), multilabel=False)
    assert decompose(torch.full((3, 4, 1), 0.3), multilabel=True).total.shape == (4,)


def test_rows_must_sum_to_one_for_multiclass():
    sig = _sigmoid_samples(3, 4, 5)
    with pytest.raises(ValueError, match=r"sigmoid.*multilabel=True"):
        decompose(sig, multilabel=False)
    with pytest.raises(ValueError, match="sum to 1"):
        validate_probs(sig, multilabel=False)
    assert validate_probs(sig, multilabel=True).shape == (3, 4, 5)
    assert validate_probs(sig[0], multilabel=True).shape == (1, 4, 5)


def test_bad_arguments():
    probs = _softmax_samples(2, 3, 4)
    with pytest.raises(ValueError, match="base"):
        decompose(probs, False, base=1)
    with pytest.raises(ValueError, match="base"):
        decompose(probs, False, base=-2)
    with pytest.raises(ValueError, match="chunk_size"):
        decompose(probs, False, chunk_size=0)
