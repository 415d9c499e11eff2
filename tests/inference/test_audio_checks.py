"""One validation of audio for every entry point: predict, AudioTagging (S = 1 and S > 1), SoundEventDetection."""

import numpy as np
import pytest
import torch

import vipann
from vipann import AudioTagging, SoundEventDetection, predict

SR = 16000


def _tiny(method="flip", arch="tiny"):
    torch.manual_seed(0)
    return vipann.create_model(f"{method}-{arch}").eval()


ENTRY_POINTS = ["predict", "AudioTagging S=1", "AudioTagging S=3", "SoundEventDetection"]


@pytest.fixture
def entries(monkeypatch):
    """Each entry point as a function of ``(B, T)`` or ``(T,)`` audio."""
    import dataclasses

    from vipann.models.archs import ARCHITECTURES
    from vipann.models.pann import PANN

    spec = dataclasses.replace(ARCHITECTURES["tiny"], name="tiny-dlmax", pooling="decision_max")
    monkeypatch.setitem(ARCHITECTURES, "tiny-dlmax", spec)
    torch.manual_seed(0)
    tagger = AudioTagging(_tiny(), device="cpu")
    sed = SoundEventDetection(PANN("tiny-dlmax", "flip", 10).eval(), device="cpu")
    return {
        "predict": lambda x: predict(_tiny(), x, num_samples=2, generator=0),
        "AudioTagging S=1": lambda x: tagger.inference(x),
        "AudioTagging S=3": lambda x: tagger.inference(x, num_samples=3, generator=0),
        "SoundEventDetection": lambda x: sed.inference(x),
    }


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: torch.full((1, SR), float("nan")), "clip 0: the audio contains NaN or infinite samples"),
        (lambda: torch.full((2, SR), 1e30), r"clips 0, 1: peak amplitude 1e\+30 is over 1e\+10"),
        (lambda: np.full((1, SR), np.inf, dtype=np.float32), "NaN or infinite"),
        (lambda: torch.randn(SR, 2) * 0.1, r"looks like \(samples, channels\).*pass x\.T"),
        (lambda: torch.empty(1, SR, device="meta"), "'meta' device, which holds a shape but no samples"),
    ],
    ids=["nan", "1e30", "inf-numpy", "stereo-T-by-2", "meta"],
)
def test_every_entry_point_refuses_the_same_bad_audio(entries, entry, make, message):
    with pytest.raises(ValueError, match=message):
        entries[entry](make())


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_loud_but_valid_pcm_scale_audio_still_works(entries, entry):
    x = torch.randn(1, SR) * 32768.0 * 0.1  # int16 values passed as float: mis-scaled but finite and safe
    out = entries[entry](x)
    first = out.probs if hasattr(out, "probs") else out[0]
    assert np.isfinite(np.asarray(first)).all()


def test_predict_on_a_stereo_array_does_not_run_for_minutes():
    # (T, 2) used to be read as T clips of 2 samples (32,000 x 2 network passes).
    with pytest.raises(ValueError, match=r"\(32000, 2\) looks like \(samples, channels\)"):
        predict(_tiny(), np.zeros((32000, 2), dtype=np.float32), num_samples=1)
    # the suggested fixes work
    two = predict(_tiny(), torch.zeros(32000, 2).T.contiguous(), num_samples=1)
    mono = predict(_tiny(), torch.zeros(32000, 2).mean(-1), num_samples=1)
    assert two.probs.shape[1] == 2 and mono.probs.shape[1] == 1


def test_a_model_on_the_meta_device_cannot_predict():
    model = vipann.create_model("flip-tiny", device="meta")
    with pytest.raises(ValueError, match="model is on the 'meta' device"):
        predict(model, torch.zeros(SR), num_samples=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_predict_on_a_missing_gpu_is_one_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        predict(_tiny(), torch.zeros(SR), num_samples=1, device="cuda")


@pytest.mark.parametrize("k", [0, -1, 1.5])
def test_top_k_must_be_positive(k):
    result = predict(_tiny(), torch.zeros(SR), num_samples=2, generator=0)
    with pytest.raises(ValueError, match="k must be a positive number"):
        result.top_k(k)
    assert len(result.top_k(100)[0]) == 10  # more than the classes: all of them


@pytest.mark.parametrize("name", ["det-tiny", "det-mn04"])
def test_every_model_family_names_a_stereo_array_in_its_own_forward(name):
    model = vipann.create_model(name, num_classes=3).eval()
    with pytest.raises(ValueError, match=r"\(32000, 2\) looks like \(samples, channels\)"):
        model(torch.zeros(32000, 2))
    with pytest.raises(ValueError, match=rf"too short for {name.split('-')[1]}"):
        model(torch.zeros(1, 8))
