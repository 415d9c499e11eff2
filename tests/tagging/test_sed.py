"""vipann.SoundEventDetection: the panns-inference drop-in for framewise output, its checkpoint look-up and uncertainty.

Equality with ``panns_inference.SoundEventDetection`` itself is in ``tests/test_panns_inference.py``.
"""

import dataclasses
import logging
import os

import numpy as np
import pytest
import torch
from _golden import load_keys, seeded_state_dict

import vipann
from vipann import SoundEventDetection
from vipann.datasets.labels import get_labels
from vipann.models import ARCHITECTURES, PANN
from vipann.models.frontend import FrontendConfig
from vipann.tagging import CheckpointNotFoundError
from vipann.tagging.sed import DEFAULT_SED_MODEL

SED_FILE = "Cnn14_DecisionLevelMax.pth"  # where panns-inference keeps it
ZENODO_FILE = "Cnn14_DecisionLevelMax_mAP=0.385.pth"


@pytest.fixture(scope="module")
def dl_file(tmp_path_factory):
    """A full-size seeded Cnn14 state dict (= Cnn14_DecisionLevelMax's tensors) under the Zenodo file name."""
    model_name, keys = load_keys("cnn14")
    path = tmp_path_factory.mktemp("ckpt") / ZENODO_FILE
    torch.save({"iteration": 0, "model": seeded_state_dict(keys, model_name, frontend=FrontendConfig())}, path)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture
def tiny_dl(monkeypatch):
    """A tiny decision-level network (frame ratio 4, 10 multi-label classes) of any method."""
    spec = dataclasses.replace(ARCHITECTURES["tiny"], name="tiny-dlmax", pooling="decision_max")
    monkeypatch.setitem(ARCHITECTURES, "tiny-dlmax", spec)

    def build(method):
        torch.manual_seed(0)
        return PANN("tiny-dlmax", method, 10).eval()

    return build


def _audio(batch, samples, seed=0):
    return (0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))).numpy()


def test_offline_without_weights_names_the_file_the_url_and_the_commands(home, tmp_path):
    with pytest.raises(CheckpointNotFoundError) as info:
        SoundEventDetection(device="cpu")
    message = str(info.value)
    assert str(home / "panns_data" / SED_FILE) in message  # panns-inference's default path
    assert "https://zenodo.org/records/3987831/files/Cnn14_DecisionLevelMax_mAP%3D0.385.pth?download=1" in message
    assert f"vipann zoo import {ZENODO_FILE}" in message
    assert f"vipann convert panns {ZENODO_FILE} --name drop-cnn14-dlmax --out ./drop-cnn14-dlmax" in message
    assert "SoundEventDetection(model='local-dir:./drop-cnn14-dlmax')" in message
    assert not (home / "panns_data").exists() and not (tmp_path / "cache").exists()  # nothing created or fetched
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        SoundEventDetection(checkpoint_path=home / "nope" / SED_FILE, device="cpu")


@pytest.mark.parametrize("filename", [SED_FILE, ZENODO_FILE])
def test_panns_data_checkpoint_is_used_in_place(home, dl_file, caplog, filename):
    (home / "panns_data").mkdir()
    os.symlink(dl_file, home / "panns_data" / filename)
    with caplog.at_level(logging.INFO, logger="vipann"):
        sed = SoundEventDetection(device="cpu")
    assert sed.name == DEFAULT_SED_MODEL == "drop-cnn14-dlmax"
    assert sed.source == str(home / "panns_data" / filename)
    assert f"is PANNs Cnn14_DecisionLevelMax; it becomes vipann {DEFAULT_SED_MODEL}" in caplog.text
    assert sed.labels == list(get_labels("audioset")) and sed.classes_num == 527
    assert repr(sed).startswith("SoundEventDetection(model='drop-cnn14-dlmax'")
    x = _audio(2, 32000 + 123)
    framewise = sed.inference(x)
    assert framewise.shape == (2, 1 + x.shape[1] // 320, 527) and framewise.dtype == np.float32
    assert sed.inference(x[0]).shape == (1, 101, 527)  # (T,) is one clip
    with torch.no_grad():
        expected = torch.sigmoid(sed.model.framewise(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(framewise, expected, atol=1e-6)
    # num_samples=2 with uncertainty on the real network: the drop flavour samples.
    mean, unc = sed.inference(x[:1, :16000], num_samples=2, return_uncertainty=True, generator=0)
    assert mean.shape == (1, 51, 527) and unc["epistemic"].shape == (1, 51) and unc["std"].shape == (1, 51, 527)
    assert (unc["epistemic"] > 0).all()


def test_clip_level_models_and_other_interpolation_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"clip-level model without framewise output.*vipann.AudioTagging"):
        SoundEventDetection(model=vipann.create_model("det-tiny"), device="cpu")
    with pytest.raises(ValueError, match="'nearest' only"):
        SoundEventDetection(model=vipann.create_model("det-tiny"), interpolate_mode="linear")


@pytest.mark.parametrize("method", ["drop", "flip", "detflip"])
def test_monte_carlo_framewise_uncertainty(tiny_dl, method):
    model = tiny_dl(method)
    sed = SoundEventDetection(model=model, device="cpu")
    samples = 16000 + 170  # 102 frames: 25 segments of 4 frames, 2 frames padded
    x = _audio(3, samples)
    single = sed.inference(x)
    mean, unc = sed.inference(x, num_samples=6, return_uncertainty=True, generator=0)
    assert single.shape == mean.shape == (3, 102, 10)
    assert set(unc) == {"total", "aleatoric", "epistemic", "std"}
    for key in ("total", "aleatoric", "epistemic"):
        assert unc[key].shape == (3, 102) and unc[key].dtype == np.float32
    assert unc["std"].shape == (3, 102, 10)
    np.testing.assert_allclose(unc["total"], unc["aleatoric"] + unc["epistemic"], atol=1e-5)
    assert (unc["epistemic"] > 0).all() and (unc["std"] > 0).any()
    assert not np.allclose(mean, single)
    # Every frame of a segment carries the segment's values; the padded frames the last segment's.
    for array in (mean, unc["total"][..., None], unc["std"]):
        np.testing.assert_array_equal(array[:, 0:4], np.repeat(array[:, 0:1], 4, axis=1))
        np.testing.assert_array_equal(array[:, 100:], np.repeat(array[:, 99:100], 2, axis=1))
    # Reproducible with a seed.
    again, unc_again = sed.inference(x, num_samples=6, return_uncertainty=True, generator=0)
    np.testing.assert_array_equal(again, mean)
    np.testing.assert_array_equal(unc_again["epistemic"], unc["epistemic"])


@pytest.mark.parametrize("method", ["drop", "flip", "detflip"])
def test_samples_are_distinct_draws_and_agree_with_predict(tiny_dl, method):
    model = tiny_dl(method)
    sed = SoundEventDetection(model=model, device="cpu")
    x = torch.from_numpy(_audio(2, 16000))
    probs = sed._segment_probs(x, 4, 0)  # (S, B, segments, C), the draws behind inference()
    assert probs.shape == (4, 2, 25, 10)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(probs[i], probs[j])
    # The same draws as vipann.predict's clip-level samples: a clip's probability is its maximum over segments.
    clip = vipann.predict(model, x, num_samples=4, generator=0, multilabel=True, window_seconds=1.0)
    torch.testing.assert_close(clip.probs, probs.amax(2))


def test_det_model_makes_one_pass(tiny_dl):
    sed = SoundEventDetection(model=tiny_dl("det"), device="cpu")
    x = _audio(1, 16000)
    with pytest.warns(UserWarning, match="deterministic"):
        mean, unc = sed.inference(x, num_samples=4, return_uncertainty=True)
    np.testing.assert_array_equal(mean, sed.inference(x))
    np.testing.assert_array_equal(unc["epistemic"], 0.0)
