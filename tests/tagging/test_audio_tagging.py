"""vipann.tagging.AudioTagging: the panns-inference drop-in, its checkpoint look-up and uncertainty."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _golden import load_keys, seeded_state_dict

from vipann import cli, create_model, from_pretrained, save_pretrained
from vipann.datasets import load_audio
from vipann.datasets.labels import get_labels
from vipann.models.frontend import FrontendConfig
from vipann.tagging import AudioTagging, CheckpointNotFoundError
from vipann.zoo.checkpoint import CheckpointError

PANNS_FILE = "Cnn14_mAP=0.431.pth"


@pytest.fixture(scope="module")
def cnn14_file(tmp_path_factory):
    """A full-size seeded Cnn14 checkpoint in the PANNs layout, under the official file name."""
    model_name, keys = load_keys("cnn14")
    path = tmp_path_factory.mktemp("ckpt") / PANNS_FILE
    torch.save({"iteration": 0, "model": seeded_state_dict(keys, model_name, frontend=FrontendConfig())}, path)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty HOME (so ~/panns_data is under our control), an empty zoo cache and an offline Hub."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture
def panns_data(home, cnn14_file):
    """~/panns_data holding the Cnn14 checkpoint, as panns-inference leaves it (a link to the module's file)."""
    folder = home / "panns_data"
    folder.mkdir()
    os.symlink(cnn14_file, folder / PANNS_FILE)
    return folder


def _tiny(method):
    torch.manual_seed(0)
    return create_model(f"{method}-tiny").eval()


def _audio(batch, samples, seed=0):
    return (0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))).numpy()


# -- outputs ------------------------------------------------------------------------------------


def test_shapes_and_labels_like_panns_inference(cnn14_file):
    tagger = AudioTagging(checkpoint_path=cnn14_file, device="cpu")
    assert tagger.name == "drop-cnn14"  # a PANNs checkpoint with no model named: the drop flavour
    assert tagger.model.method == "drop" and tagger.device == torch.device("cpu")
    assert tagger.labels == list(get_labels("audioset")) and tagger.labels[0] == "Speech"
    assert tagger.classes_num == 527
    clipwise, embedding = tagger.inference(_audio(2, 32000).astype(np.float64))
    assert clipwise.shape == (2, 527) and embedding.shape == (2, 2048)
    assert clipwise.dtype == np.float32 and embedding.dtype == np.float32
    one, _ = tagger.inference(_audio(2, 32000)[0])  # (T,) is one clip
    assert one.shape == (1, 527)
    np.testing.assert_allclose(one[0], clipwise[0], atol=1e-6)


@pytest.mark.parametrize("method", ["det", "drop", "flip", "detflip"])
def test_default_pass_equals_the_plain_forward(method):
    # num_samples=1 (the default): stochastic modules off, Flipout at its mean: panns-inference's computation.
    model = _tiny(method)
    tagger = AudioTagging(model=model, device="cpu")
    x = _audio(3, 16000)
    clipwise, embedding = tagger.inference(x)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
        expected_embedding = model.embed(torch.from_numpy(x))
    np.testing.assert_allclose(clipwise, torch.softmax(logits, -1).numpy(), atol=1e-6)  # tiny is multi-class
    np.testing.assert_allclose(embedding, expected_embedding.numpy(), atol=1e-6)


def test_det_model_makes_one_pass_and_warns():
    tagger = AudioTagging(model=_tiny("det"), device="cpu")
    x = _audio(2, 16000)
    clipwise, _ = tagger.inference(x)
    with pytest.warns(UserWarning, match="deterministic"):
        repeated, _, unc = tagger.inference(x, num_samples=5, return_uncertainty=True)
    np.testing.assert_array_equal(repeated, clipwise)
    np.testing.assert_array_equal(unc["epistemic"], 0.0)


def test_drop_model_gives_mean_and_uncertainty():
    tagger = AudioTagging(model=_tiny("drop"), device="cpu")
    x = _audio(3, 16000)
    clipwise, embedding, unc = tagger.inference(x, num_samples=16, return_uncertainty=True, generator=0)
    assert clipwise.shape == (3, 10) and embedding.shape == (3, tagger.model.embed_dim)
    assert set(unc) == {"total", "aleatoric", "epistemic", "std"}
    for key in ("total", "aleatoric", "epistemic"):
        assert unc[key].shape == (3,) and unc[key].dtype == np.float32
    assert unc["std"].shape == (3, 10)
    np.testing.assert_allclose(unc["total"], unc["aleatoric"] + unc["epistemic"], atol=1e-5)
    assert (unc["epistemic"] > 0).all() and (unc["std"] > 0).any()
    np.testing.assert_allclose(clipwise.sum(-1), 1.0, atol=1e-5)
    # Reproducible with a seed; the embedding is the deterministic one, whatever S.
    again, embedding_again, _ = tagger.inference(x, num_samples=16, return_uncertainty=True, generator=0)
    np.testing.assert_array_equal(again, clipwise)
    np.testing.assert_array_equal(embedding_again, tagger.inference(x)[1])
    # Without num_samples, return_uncertainty samples the model's recommended number (not one pass).
    _, _, default = tagger.inference(x, return_uncertainty=True, generator=1)
    assert (default["epistemic"] > 0).all()


def test_single_pass_uncertainty_has_no_epistemic_part():
    tagger = AudioTagging(model=_tiny("drop"), device="cpu")
    clipwise, _, unc = tagger.inference(_audio(2, 16000), num_samples=1, return_uncertainty=True)
    np.testing.assert_array_equal(unc["epistemic"], 0.0)
    np.testing.assert_allclose(unc["total"], unc["aleatoric"], atol=1e-6)
    np.testing.assert_array_equal(unc["std"], 0.0)
    assert clipwise.shape == (2, 10)


def test_instance_num_samples_is_the_default():
    tagger = AudioTagging(model=_tiny("drop"), device="cpu", num_samples=4)
    x = _audio(2, 16000)
    sampled, _ = tagger.inference(x, generator=3)
    single, _ = tagger.inference(x, num_samples=1)
    assert not np.allclose(sampled, single)


def test_bad_audio_is_refused():
    tagger = AudioTagging(model=_tiny("det"), device="cpu")
    with pytest.raises(TypeError, match="floating point"):
        tagger.inference(np.zeros((1, 16000), dtype=np.int16))
    with pytest.raises(ValueError, match="batch, samples"):
        tagger.inference(np.zeros((1, 1, 16000), dtype=np.float32))
    with pytest.raises(ValueError, match="sample rate"):
        tagger.inference(_audio(1, 16000), sample_rate=32000)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fall-back")
def test_cuda_falls_back_to_cpu_like_panns_inference():
    assert AudioTagging(model=_tiny("det"), device="cuda").device == torch.device("cpu")


# -- where the weights come from ----------------------------------------------------------------


def test_offline_without_weights_says_how_to_get_them(home, tmp_path):
    with pytest.raises(CheckpointNotFoundError) as info:
        AudioTagging(device="cpu")
    message = str(info.value)
    assert PANNS_FILE in message and "offline mode is on (HF_HUB_OFFLINE=1)" in message
    assert "https://zenodo.org/records/3987831/files/Cnn14_mAP%3D0.431.pth?download=1" in message
    assert f"vipann zoo import {PANNS_FILE}" in message
    assert f"vipann convert panns {PANNS_FILE} --name drop-cnn14 --out ./drop-cnn14" in message
    assert str(home / "panns_data" / PANNS_FILE) in message
    assert not (home / "panns_data").exists() and not (tmp_path / "cache").exists()  # nothing created or fetched


def test_missing_checkpoint_path_is_an_error(home):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        AudioTagging(checkpoint_path=home / "nope" / PANNS_FILE, device="cpu")


def test_panns_data_checkpoint_is_used_in_place(panns_data, caplog):
    with caplog.at_level(logging.INFO, logger="vipann.tagging"):
        tagger = AudioTagging(device="cpu")
    assert tagger.name == "drop-cnn14" and tagger.model.method == "drop" and tagger.model.arch == "cnn14"
    assert tagger.source == str(panns_data / PANNS_FILE)
    assert "in place as vipann model 'drop-cnn14'" in caplog.text and PANNS_FILE in caplog.text
    assert AudioTagging(model="det-cnn14", device="cpu").name == "det-cnn14"


def test_convert_cli_turns_the_panns_file_into_a_loadable_directory(panns_data, tmp_path, capsys):
    out = tmp_path / "converted"
    assert cli.main(["convert", "auto", str(panns_data / PANNS_FILE), "--out", str(out)]) == 0
    assert "-> det-cnn14" in capsys.readouterr().out
    model = from_pretrained(f"local-dir:{out}")
    assert (model.method, model.arch, model.num_classes) == ("det", "cnn14", 527)
    tagger = AudioTagging(model=f"local-dir:{out}", device="cpu")
    assert tagger.name == "det-cnn14" and tagger.source == f"local-dir:{out}"
    x = _audio(1, 32000)
    clipwise, embedding = tagger.inference(x)
    with torch.no_grad():
        np.testing.assert_allclose(clipwise, torch.sigmoid(model(torch.from_numpy(x))).numpy(), atol=1e-6)
        np.testing.assert_allclose(embedding, model.embed(torch.from_numpy(x)).numpy(), atol=1e-6)


def test_model_directory_as_checkpoint_path(tmp_path):
    model = _tiny("drop")
    save_pretrained(model, tmp_path / "tiny")
    tagger = AudioTagging(checkpoint_path=tmp_path / "tiny", device="cpu")
    assert tagger.name == "drop-tiny" and tagger.source == f"local-dir:{tmp_path / 'tiny'}"
    x = _audio(2, 16000)
    np.testing.assert_allclose(tagger.inference(x)[0], AudioTagging(model=model).inference(x)[0], atol=1e-6)
    with pytest.raises(CheckpointError, match="not the requested 'flip-tiny'"):
        AudioTagging(model="flip-tiny", checkpoint_path=tmp_path / "tiny")


@pytest.mark.parametrize("filename", ["Cnn14_DecisionLevelMax_mAP=0.385.pth", "Cnn14_DecisionLevelMax.pth"])
def test_decision_level_checkpoint_is_converted_and_named(cnn14_file, tmp_path, capsys, caplog, filename):
    # Same tensors as Cnn14 (the framewise head has no parameters of its own): the file name tells them apart.
    path = tmp_path / filename
    os.symlink(cnn14_file, path)
    with caplog.at_level(logging.INFO, logger="vipann"):
        tagger = AudioTagging(checkpoint_path=path, device="cpu")
    assert tagger.name == "drop-cnn14-dlmax" and tagger.model.arch == "cnn14-dlmax" and tagger.model.method == "drop"
    assert f"{path} is PANNs Cnn14_DecisionLevelMax; it becomes vipann drop-cnn14-dlmax" in caplog.text
    x = _audio(2, 32000)
    clipwise, embedding = tagger.inference(x)
    assert clipwise.shape == (2, 527) and embedding.shape == (2, 2048) and clipwise.dtype == np.float32
    with torch.no_grad():
        framewise = torch.sigmoid(tagger.model.framewise(torch.from_numpy(x))).numpy()
        expected_embedding = tagger.model.embed(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(clipwise, framewise.max(axis=1), atol=1e-6)  # PANNs: clipwise = max over time
    np.testing.assert_allclose(embedding, expected_embedding, atol=1e-6)
    _, _, unc = tagger.inference(x, num_samples=3, return_uncertainty=True, generator=0)
    assert unc["total"].shape == (2,) and (unc["epistemic"] > 0).all()

    out = tmp_path / "converted"
    assert cli.main(["convert", "auto", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{path} is PANNs Cnn14_DecisionLevelMax; it becomes vipann det-cnn14-dlmax" in printed
    assert "-> det-cnn14-dlmax" in printed
    model = from_pretrained(f"local-dir:{out}")
    assert (model.method, model.arch, model.pretrained_cfg.name) == ("det", "cnn14-dlmax", "det-cnn14-dlmax")
    with torch.no_grad():
        np.testing.assert_allclose(torch.sigmoid(model(torch.from_numpy(x))).numpy(), clipwise, atol=1e-6)


def test_renamed_cnn14_shaped_file_needs_a_name(cnn14_file, tmp_path, capsys):
    path = tmp_path / "my_model.pth"
    os.symlink(cnn14_file, path)
    with pytest.raises(CheckpointError) as info:
        AudioTagging(checkpoint_path=path, device="cpu")
    message = str(info.value)
    assert "PANNs Cnn14, PANNs Cnn14_DecisionLevelMax" in message and "file name does not say which" in message
    assert "--name det-cnn14 (PANNs Cnn14) or det-cnn14-dlmax (PANNs Cnn14_DecisionLevelMax)" in message
    assert cli.main(["convert", "auto", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "file name does not say which" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # Naming the model settles it, in Python and on the command line.
    assert AudioTagging(model="det-cnn14-dlmax", checkpoint_path=path, device="cpu").model.arch == "cnn14-dlmax"
    assert cli.main(["convert", "auto", str(path), "--name", "det-cnn14", "--out", str(tmp_path / "out")]) == 0
    assert "my_model.pth is PANNs Cnn14; it becomes vipann det-cnn14" in capsys.readouterr().out


def test_file_name_and_requested_model_must_agree(cnn14_file, tmp_path, capsys):
    path = tmp_path / "Cnn14_DecisionLevelMax_mAP=0.385.pth"
    os.symlink(cnn14_file, path)
    with pytest.raises(
        CheckpointError, match=r"Cnn14_DecisionLevelMax checkpoint \(by its file name\), but 'drop-cnn14'"
    ):
        AudioTagging(model="drop-cnn14", checkpoint_path=path, device="cpu")
    assert cli.main(["convert", "auto", str(path), "--name", "det-cnn14", "--out", str(tmp_path / "out")]) == 2
    assert "use a cnn14-dlmax name such as det-cnn14-dlmax" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("filename", ["Cnn14_DecisionLevelAtt_mAP=0.425.pth", "Cnn14_DecisionLevelAvg.pth"])
def test_unimplemented_decision_level_variants_are_a_clear_error(cnn14_file, tmp_path, filename):
    # DecisionLevelAvg has Cnn14's tensors too; converting it as either would be wrong.
    path = tmp_path / filename
    os.symlink(cnn14_file, path)
    with pytest.raises(CheckpointError, match="a PANNs variant vipann does not implement"):
        AudioTagging(checkpoint_path=path, device="cpu")


def test_checkpoint_of_another_architecture_is_refused(cnn14_file):
    with pytest.raises(CheckpointError, match=r"is a PANNs Cnn14 checkpoint \(by its file name\), but 'drop-resnet54'"):
        AudioTagging(model="drop-resnet54", checkpoint_path=cnn14_file, device="cpu")


def test_contradictory_arguments_are_refused(cnn14_file, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        AudioTagging(model=_tiny("det"), checkpoint_path=cnn14_file)
    with pytest.raises(ValueError, match="give one of them"):
        AudioTagging(model=f"local-dir:{tmp_path}", checkpoint_path=cnn14_file)
    with pytest.raises(TypeError, match="vipann runs its own implementation"):
        AudioTagging(model=torch.nn.Linear(2, 2))


def test_corrupt_checkpoint_says_download_again(tmp_path):
    path = tmp_path / PANNS_FILE
    path.write_bytes(b"not a checkpoint")  # e.g. a failed wget
    with pytest.raises(CheckpointError, match="download it again"):
        AudioTagging(checkpoint_path=path, device="cpu")


# -- the published output, where the official checkpoint exists ------------------------------------

OFFICIAL = os.environ.get("VIPANN_PANNS_CHECKPOINT")
AUDIO_DIR = Path(__file__).resolve().parents[1] / "data" / "audio"


@pytest.mark.skipif(not OFFICIAL, reason="set VIPANN_PANNS_CHECKPOINT=/path/to/Cnn14_mAP=0.431.pth to run")
def test_official_cnn14_reproduces_the_published_output():
    # PANNs README, audio_tagging on resources/R9_ZSCveAHg_7s.wav (printed with 3 decimals).
    published = [("Speech", 0.893), ("Telephone bell ringing", 0.754), ("Inside, small room", 0.235)]
    tagger = AudioTagging(model="det-cnn14", checkpoint_path=Path(OFFICIAL).expanduser(), device="cpu")
    audio = load_audio(AUDIO_DIR / "R9_ZSCveAHg_7s.wav", 32000).numpy()[None]
    clipwise, embedding = tagger.inference(audio)
    assert embedding.shape == (1, 2048)
    top = np.argsort(clipwise[0])[::-1][: len(published)]
    assert [tagger.labels[i] for i in top] == [name for name, _ in published]
    np.testing.assert_allclose(clipwise[0, top], [p for _, p in published], atol=1e-3)
