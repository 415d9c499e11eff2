"""``AudioTagging.inference`` and ``SoundEventDetection.inference`` take ``draws=`` as ``vipann.predict`` does."""

import dataclasses

import numpy as np
import pytest
import torch

import vipann
from vipann import AudioTagging, SoundEventDetection
from vipann.layers import flipout_layers
from vipann.models import ARCHITECTURES, PANN


def _audio(batch=2, seconds=1.0, seed=0, rate=16000):
    return 0.1 * torch.randn(batch, int(seconds * rate), generator=torch.Generator().manual_seed(seed))


def _wide(model):
    with torch.no_grad():  # a wider posterior than the default init: clearly non-zero uncertainty
        for _, layer in flipout_layers(model):
            layer.rho_w.fill_(-2.0)
    return model.eval()


@pytest.fixture
def tiny_dl(monkeypatch):
    spec = dataclasses.replace(ARCHITECTURES["tiny"], name="tiny-dlmax-draws", pooling="decision_max")
    monkeypatch.setitem(ARCHITECTURES, "tiny-dlmax-draws", spec)

    def build(method):
        torch.manual_seed(0)
        return _wide(PANN("tiny-dlmax-draws", method, 10))

    return build


@pytest.mark.parametrize("method", ["detflip", "flip"])
def test_audio_tagging_draws_are_predicts_draws(method):
    torch.manual_seed(0)
    model = _wide(vipann.create_model(f"{method}-tiny"))
    tagger = AudioTagging(model=model, device="cpu")
    audio = _audio()
    runs = {}
    for draws in ("independent", "shared"):
        mean, _, unc = tagger.inference(audio.numpy(), num_samples=5, return_uncertainty=True, generator=0, draws=draws)
        expected = vipann.predict(model, audio, num_samples=5, generator=0, draws=draws, multilabel=tagger.multilabel)
        np.testing.assert_allclose(mean, expected.mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(unc["epistemic"], expected.epistemic.numpy(), rtol=1e-4, atol=1e-6)
        assert (unc["std"] > 0).any()
        runs[draws] = unc["std"]
    assert not np.allclose(runs["shared"], runs["independent"])
    default = tagger.inference(audio.numpy(), num_samples=5, return_uncertainty=True, generator=0)
    expected_default = "shared" if method == "detflip" else "independent"
    np.testing.assert_allclose(default[2]["std"], runs[expected_default])
    with pytest.raises(ValueError, match="draws must be one of"):
        tagger.inference(audio.numpy(), draws="all")


@pytest.mark.parametrize("method", ["detflip", "flip"])
def test_sed_draws_are_predicts_draws(tiny_dl, method):
    model = tiny_dl(method)
    sed = SoundEventDetection(model=model, device="cpu")
    audio = _audio()
    shared = sed._segment_probs(audio, 4, 1, "shared")  # (S, B, segments, C)
    clip = vipann.predict(model, audio, num_samples=4, generator=1, draws="shared", multilabel=True)
    torch.testing.assert_close(clip.probs, shared.amax(2))  # a clip's probability: its maximum over segments
    mean, unc = sed.inference(audio.numpy(), num_samples=4, return_uncertainty=True, generator=1, draws="shared")
    independent = sed.inference(audio.numpy(), num_samples=4, return_uncertainty=True, generator=1)
    again = sed.inference(audio.numpy(), num_samples=4, return_uncertainty=True, generator=1, draws="independent")
    np.testing.assert_allclose(independent[0], again[0])  # per-segment heads default to independent draws
    assert mean.shape == independent[0].shape
    assert not np.allclose(unc["std"], independent[1]["std"])
    with pytest.raises(ValueError, match="draws must be one of"):
        sed.inference(audio.numpy(), draws="all")
