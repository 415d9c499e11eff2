import warnings

import pytest
import torch

import vipann
from vipann.inference.predict import window_starts
from vipann.layers import mc_sampling


def _audio(batch=3, seconds=1.0, seed=0, rate=16000):
    return 0.1 * torch.randn(batch, int(seconds * rate), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=["drop", "flip", "detflip"])
def bayes_model(request):
    torch.manual_seed(0)
    return vipann.create_model(f"{request.param}-tiny")


def test_shapes_and_decomposition(bayes_model):
    result = vipann.predict(bayes_model, _audio(), num_samples=6, generator=0)
    assert result.probs.shape == (6, 3, 10)
    assert result.mean.shape == (3, 10) and result.total.shape == (3,)
    torch.testing.assert_close(result.probs.sum(-1), torch.ones(6, 3))  # tiny is multi-class
    torch.testing.assert_close(result.total, result.aleatoric + result.epistemic)
    assert (result.epistemic > 0).all()
    assert not bayes_model.training and not any(m.mc_active for m in vipann.layers.stochastic_modules(bayes_model))


def test_seeded_runs_are_reproducible(bayes_model):
    a = vipann.predict(bayes_model, _audio(), num_samples=5, generator=7)
    b = vipann.predict(bayes_model, _audio(), num_samples=5, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a.probs, b.probs)
    c = vipann.predict(bayes_model, _audio(), num_samples=5, generator=8)
    assert not torch.allclose(a.probs, c.probs)


def test_samples_are_independent_draws_not_shared_across_the_batch(bayes_model):
    x = _audio(batch=1).repeat(4, 1)  # four identical clips
    result = vipann.predict(bayes_model, x, num_samples=3, generator=0)
    # each (sample, clip) pair got its own noise: identical clips do not get identical predictions
    assert not torch.allclose(result.probs[:, 0], result.probs[:, 1])
    assert not torch.allclose(result.probs[0], result.probs[1])


@pytest.mark.parametrize("max_rows", [1, 5, 64])
def test_batched_sampling_matches_a_plain_loop_in_distribution(bayes_model, max_rows):
    """Mean and variance of the batched sampler agree with S separate forward passes (MC error)."""
    x = _audio(batch=2)
    samples = 400
    batched = vipann.predict(bayes_model, x, num_samples=samples, generator=1, max_rows=max_rows).probs
    loop = []
    with torch.no_grad(), mc_sampling(bayes_model, generator=torch.Generator().manual_seed(2)):
        for _ in range(samples):
            loop.append(bayes_model(x).softmax(-1))
    loop = torch.stack(loop)

    def moments(x):
        mean, var = x.mean(0), x.var(0)
        fourth = ((x - mean) ** 4).mean(0)
        return mean, var, var / samples, (fourth - var**2).clamp_min(0) / samples

    m1, v1, se_m1, se_v1 = moments(batched)
    m2, v2, se_m2, se_v2 = moments(loop)
    # z-tests at 5 standard errors: means, then variances (using the 4th central moment)
    assert ((m1 - m2).abs() <= 5 * torch.sqrt(se_m1 + se_m2) + 1e-6).all()
    assert ((v1 - v2).abs() <= 5 * torch.sqrt(se_v1 + se_v2) + 1e-7).all()


def test_det_warns_and_repeats_one_sample():
    model = vipann.create_model("det-tiny")
    with pytest.warns(UserWarning, match="identical"):
        result = vipann.predict(model, _audio(), num_samples=4)
    assert result.probs.shape == (4, 3, 10)
    torch.testing.assert_close(result.probs[0], result.probs[3])
    torch.testing.assert_close(result.epistemic, torch.zeros(3), atol=1e-6, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vipann.predict(model, _audio()).probs.shape == (1, 3, 10)  # default S for det is 1


def test_det_matches_plain_forward():
    model = vipann.create_model("det-tiny").eval()
    x = _audio()
    with torch.no_grad():
        expected = model(x).softmax(-1)
    torch.testing.assert_close(vipann.predict(model, x).mean, expected)


def test_drop_reuses_the_deterministic_prefix(monkeypatch):
    model = vipann.create_model("drop-tiny")
    calls = []
    block = model.conv_block1
    original = block.forward
    monkeypatch.setattr(block, "forward", lambda x: calls.append(x.shape[0]) or original(x))
    vipann.predict(model, _audio(batch=2), num_samples=10)
    assert calls == [2]  # conv_block1 (before the first MC site) ran once for 10 samples
    flip = vipann.create_model("detflip-tiny")
    calls.clear()
    original_f = flip.conv_block2.forward
    monkeypatch.setattr(flip.conv_block2, "forward", lambda x: calls.append(x.shape[0]) or original_f(x))
    vipann.predict(flip, _audio(batch=2), num_samples=10)
    assert calls == [2]  # detflip: the whole backbone ran once


def test_long_audio_is_windowed_and_batched_equals_unbatched():
    torch.manual_seed(0)
    long = 0.1 * torch.randn(2, 16000 * 3 + 4000, generator=torch.Generator().manual_seed(3))
    for method in ("det", "flip"):
        model = vipann.create_model(f"{method}-tiny")
        vipann.layers.set_mean_only(model, True)  # deterministic paths must agree exactly
        samples = 1 if method == "det" else 2
        batched = vipann.predict(model, long, num_samples=samples, batch_size=8)
        one_by_one = vipann.predict(model, long, num_samples=samples, batch_size=1)
        torch.testing.assert_close(batched.probs, one_by_one.probs, atol=1e-6, rtol=1e-5)
    # stochastic: batching changes which draws a window gets, not their distribution
    drop = vipann.create_model("drop-tiny")
    a = vipann.predict(drop, long, num_samples=200, generator=5, batch_size=8).probs
    b = vipann.predict(drop, long, num_samples=200, generator=6, batch_size=1).probs
    se = torch.sqrt(a.var(0) / 200 + b.var(0) / 200)
    assert ((a.mean(0) - b.mean(0)).abs() <= 5 * se + 1e-6).all()
    # the clip probability is the mean over its windows (multi-class default)
    det = vipann.create_model("det-tiny")
    result = vipann.predict(det, long[:1])
    with torch.no_grad():
        windows = [long[:1, s : s + 16000] for s in window_starts(long.shape[1], 16000, 16000)]
        expected = torch.stack([det(w).softmax(-1) for w in windows]).mean(0)
    torch.testing.assert_close(result.mean, expected, atol=1e-6, rtol=1e-5)
    maxed = vipann.predict(det, long[:1], aggregate="max")
    assert (maxed.mean >= result.mean - 1e-7).all()


def test_list_of_clips_of_different_lengths():
    model = vipann.create_model("flip-tiny")
    clips = [0.1 * torch.randn(16000), 0.1 * torch.randn(5000), 0.1 * torch.randn(40000), 0.1 * torch.randn(100)]
    result = vipann.predict(model, clips, num_samples=2, generator=0)
    assert result.probs.shape == (2, 4, 10)
    single = vipann.predict(model, clips[1], num_samples=2, generator=0)
    assert single.probs.shape == (2, 1, 10)


def test_window_starts():
    assert window_starts(10, 10, 5) == [0]
    assert window_starts(25, 10, 10) == [0, 10, 15]
    assert window_starts(20, 10, 5) == [0, 5, 10]


def test_multilabel_uses_sigmoid():
    model = vipann.create_model("drop-tiny")
    result = vipann.predict(model, _audio(), num_samples=3, multilabel=True, generator=0)
    assert not torch.allclose(result.probs.sum(-1), torch.ones(3, 3))
    assert result.decomposition.total_per_class.shape == (3, 10)


def test_top_k():
    model = vipann.create_model("det-tiny")
    top = vipann.predict(model, _audio(batch=1)).top_k(3)
    assert len(top) == 1 and len(top[0]) == 3
    assert top[0][0][1] >= top[0][1][1] >= top[0][2][1]


@pytest.mark.parametrize(
    ("audio", "kwargs", "error", "match"),
    [
        (torch.zeros(1, 16000, dtype=torch.int16), {}, TypeError, "int16"),
        (torch.zeros(0), {}, ValueError, "empty"),
        (torch.full((1, 16000), float("nan")), {}, ValueError, "NaN"),
        (torch.zeros(2, 2, 16000), {}, ValueError, "list of clips"),
        ([], {}, ValueError, "no waveforms"),
        (torch.zeros(1, 16000), {"sample_rate": 44100}, ValueError, "44100 Hz"),
        (torch.zeros(1, 16000), {"num_samples": 0}, ValueError, "num_samples"),
        (torch.zeros(1, 16000), {"aggregate": "median"}, ValueError, "aggregate"),
        (torch.zeros(1, 16000), {"hop_seconds": 0}, ValueError, "hop_seconds"),
    ],
)
def test_bad_input(audio, kwargs, error, match):
    with pytest.raises(error, match=match):
        vipann.predict(vipann.create_model("drop-tiny"), audio, **kwargs)
