"""vipann's Cnn14 and Cnn14_DecisionLevelMax against panns-inference itself (PyPI ``panns-inference``, MIT).

Same weights, same outputs: ``det-cnn14`` against ``panns_inference.models.Cnn14`` and
``AudioTagging``; ``det-cnn14-dlmax`` against ``panns_inference.models.Cnn14_DecisionLevelMax`` (clipwise
and framewise outputs) and ``SoundEventDetection``.

panns-inference is a test dependency (``scripts/setup.sh test``). Importing it reads
``~/panns_data/class_labels_indices.csv`` and shells out to ``wget`` when that file is missing;
``AudioTagging`` does the same for a missing (or < 3e8 bytes) checkpoint. The tests point ``HOME``
at a temporary directory that already holds the label file, use a full-size checkpoint file, and
replace ``os.system`` by a function that fails the test, so nothing is ever fetched.

Weights are the seeded Cnn14 state dict of ``tests/_golden.py`` (no trained checkpoint is stored;
Cnn14_DecisionLevelMax has exactly Cnn14's tensors). Tolerances (float32 on CPU, same weights,
different code paths for the STFT and pooling): clipwise and framewise outputs ``atol=1e-5``
(worst seen ~2.5e-6 for Cnn14, ~6e-7 for Cnn14_DecisionLevelMax), embedding ``atol=1e-4, rtol=1e-5``
(worst seen ~1.7e-5 on values up to ~20).
"""

import importlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _golden import load_keys, seeded_state_dict

import vipann
from vipann.datasets import load_audio
from vipann.datasets.labels import get_labels
from vipann.models.frontend import FrontendConfig
from vipann.tagging import AudioTagging
from vipann.tagging.sed import SoundEventDetection
from vipann.zoo.convert import from_panns_checkpoint

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("panns_inference") is None,
    reason="panns-inference is not installed (scripts/setup.sh test installs it)",
)

AUDIO_DIR = Path(__file__).resolve().parents[1] / "data" / "audio"
LABELS_CSV = Path(vipann.__file__).resolve().parent / "data" / "labels" / "audioset.csv"
CLIPWISE_TOL = dict(atol=1e-5, rtol=0.0)
EMBEDDING_TOL = dict(atol=1e-4, rtol=1e-5)
CNN14_ARGS = dict(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000, classes_num=527)


def _random_inputs():
    g = torch.Generator().manual_seed(2024)
    shapes = {"1s": (1, 32000), "10s": (1, 320000), "batch2-odd-length": (2, 3 * 32000 + 123)}
    return {tag: 0.1 * torch.randn(*shape, generator=g) for tag, shape in shapes.items()}


REAL_FILES = ["R9_ZSCveAHg_7s.wav", "rock.00001.wav", "classical.00000.wav"]


@pytest.fixture(scope="module")
def shell_calls():
    return []


@pytest.fixture(scope="module")
def panns(tmp_path_factory, shell_calls):
    """panns_inference imported with HOME at a temporary directory that holds the label CSV."""
    home = tmp_path_factory.mktemp("home")
    (home / "panns_data").mkdir()
    shutil.copyfile(LABELS_CSV, home / "panns_data" / "class_labels_indices.csv")

    def no_shell(command):
        shell_calls.append(command)
        raise AssertionError(f"panns_inference tried to run a shell command (a download?): {command}")

    patch = pytest.MonkeyPatch()
    patch.setenv("HOME", str(home))
    patch.setenv("MPLBACKEND", "Agg")
    patch.setattr(os, "system", no_shell)
    # A fresh import, so that the label file is read under this HOME even if another test imported it.
    for name in [m for m in sys.modules if m == "panns_inference" or m.startswith("panns_inference.")]:
        patch.delitem(sys.modules, name)
    module = importlib.import_module("panns_inference")
    importlib.import_module("panns_inference.models")
    yield module
    patch.undo()


@pytest.fixture(scope="module")
def state_dict():
    model_name, keys = load_keys("cnn14")
    return seeded_state_dict(keys, model_name, frontend=FrontendConfig())


@pytest.fixture(scope="module")
def reference(panns, state_dict):
    model = sys.modules["panns_inference.models"].Cnn14(**CNN14_ARGS)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def ours(state_dict):
    return from_panns_checkpoint(state_dict, "det-cnn14")


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory, state_dict):
    # The file name panns-inference downloads; its size (~327 MB) is above panns-inference's 3e8-byte
    # "incomplete download" threshold, so it loads it instead of calling wget.
    path = tmp_path_factory.mktemp("ckpt") / "Cnn14_mAP=0.431.pth"
    torch.save({"model": state_dict}, path)
    assert path.stat().st_size > 3e8
    return path


def _compare(reference, ours, x):
    with torch.no_grad():
        expected = reference(x, None)
        clipwise = torch.sigmoid(ours(x))
        embedding = ours.embed(x)
    torch.testing.assert_close(clipwise, expected["clipwise_output"], **CLIPWISE_TOL)
    torch.testing.assert_close(embedding, expected["embedding"], **EMBEDDING_TOL)


def test_import_reads_labels_from_home_without_fetching(panns, shell_calls):
    assert shell_calls == []
    assert panns.labels == list(get_labels("audioset"))
    assert len(panns.labels) == 527


@pytest.mark.parametrize("tag", list(_random_inputs()))
def test_det_cnn14_matches_panns_inference_on_random_audio(reference, ours, tag):
    _compare(reference, ours, _random_inputs()[tag])


@pytest.mark.parametrize("filename", REAL_FILES)
def test_det_cnn14_matches_panns_inference_on_real_audio(reference, ours, filename):
    wave = load_audio(AUDIO_DIR / filename, 32000)  # the GTZAN clips are 22.05 kHz: resampled
    _compare(reference, ours, wave[None])


def test_audio_tagging_end_to_end_matches(panns, checkpoint_file, shell_calls, capsys):
    theirs = panns.AudioTagging(model=None, checkpoint_path=str(checkpoint_file), device="cpu")
    capsys.readouterr()  # panns-inference prints the checkpoint path and the device
    assert shell_calls == []
    audio = {
        "real": load_audio(AUDIO_DIR / "R9_ZSCveAHg_7s.wav", 32000).numpy()[None],
        "batch": (0.1 * torch.randn(2, 64000, generator=torch.Generator().manual_seed(5))).numpy(),
    }
    tagger = AudioTagging(checkpoint_path=checkpoint_file, device="cpu")
    assert tagger.name == "drop-cnn14"  # its default pass (num_samples=1) is deterministic, as panns-inference's
    assert tagger.labels == theirs.labels
    for x in audio.values():
        clipwise, embedding = tagger.inference(x)
        expected_clipwise, expected_embedding = theirs.inference(x)
        assert clipwise.shape == expected_clipwise.shape and clipwise.dtype == expected_clipwise.dtype
        assert embedding.shape == expected_embedding.shape and embedding.dtype == expected_embedding.dtype
        np.testing.assert_allclose(clipwise, expected_clipwise, **CLIPWISE_TOL)
        np.testing.assert_allclose(embedding, expected_embedding, **EMBEDDING_TOL)


# -- Cnn14_DecisionLevelMax (sound event detection) -------------------------------------------------


@pytest.fixture(scope="module")
def reference_dl(panns, state_dict):
    model = sys.modules["panns_inference.models"].Cnn14_DecisionLevelMax(**CNN14_ARGS)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def ours_dl(state_dict):
    return from_panns_checkpoint(state_dict, "det-cnn14-dlmax")


def _compare_dl(reference, ours, x):
    with torch.no_grad():
        expected = reference(x, None)
        clipwise = torch.sigmoid(ours(x))
        framewise = torch.sigmoid(ours.framewise(x))
    assert framewise.shape == expected["framewise_output"].shape == (x.shape[0], 1 + x.shape[1] // 320, 527)
    torch.testing.assert_close(clipwise, expected["clipwise_output"], **CLIPWISE_TOL)
    torch.testing.assert_close(framewise, expected["framewise_output"], **CLIPWISE_TOL)


def test_det_cnn14_dlmax_has_the_reference_parameters(reference_dl, ours_dl):
    theirs = {k: tuple(v.shape) for k, v in reference_dl.named_parameters() if v.requires_grad}
    mine = {k: tuple(v.shape) for k, v in ours_dl.named_parameters()}
    assert mine == theirs
    assert sum(p.numel() for p in ours_dl.parameters()) == sum(
        p.numel() for p in reference_dl.parameters() if p.requires_grad
    )


@pytest.mark.parametrize("tag", [*_random_inputs(), "shortest"])
def test_det_cnn14_dlmax_matches_panns_inference_on_random_audio(reference_dl, ours_dl, tag):
    inputs = _random_inputs()
    inputs["shortest"] = 0.1 * torch.randn(1, ours_dl.min_samples, generator=torch.Generator().manual_seed(9))
    _compare_dl(reference_dl, ours_dl, inputs[tag])


@pytest.mark.parametrize("filename", REAL_FILES)
def test_det_cnn14_dlmax_matches_panns_inference_on_real_audio(reference_dl, ours_dl, filename):
    wave = load_audio(AUDIO_DIR / filename, 32000)
    _compare_dl(reference_dl, ours_dl, wave[None])


def test_sound_event_detection_end_to_end_matches(panns, checkpoint_file, shell_calls, capsys):
    # panns-inference's SoundEventDetection default file name; the same tensors as the Cnn14 file.
    path = checkpoint_file.parent / "Cnn14_DecisionLevelMax.pth"
    if not path.exists():
        os.symlink(checkpoint_file, path)
    theirs = panns.SoundEventDetection(model=None, checkpoint_path=str(path), device="cpu")
    capsys.readouterr()
    assert shell_calls == []
    sed = SoundEventDetection(checkpoint_path=path, device="cpu")
    assert sed.name == "drop-cnn14-dlmax"  # its default pass (num_samples=1) is deterministic, as panns-inference's
    assert sed.labels == theirs.labels
    audio = {
        "real": load_audio(AUDIO_DIR / "R9_ZSCveAHg_7s.wav", 32000).numpy()[None],
        "batch": (0.1 * torch.randn(2, 64000 + 77, generator=torch.Generator().manual_seed(6))).numpy(),
    }
    for x in audio.values():
        framewise = sed.inference(x)
        expected = theirs.inference(x)
        assert framewise.shape == expected.shape and framewise.dtype == expected.dtype
        np.testing.assert_allclose(framewise, expected, **CLIPWISE_TOL)
    # AudioTagging takes the same file: its clipwise output is the reference model's.
    tagger = AudioTagging(checkpoint_path=path, device="cpu")
    clipwise, embedding = tagger.inference(audio["batch"])
    with torch.no_grad():
        expected = theirs.model(torch.from_numpy(audio["batch"]), None)["clipwise_output"].numpy()
    np.testing.assert_allclose(clipwise, expected, **CLIPWISE_TOL)
    assert embedding.shape == (2, 2048)
