"""AudioTagging and the CLI with EfficientAT models: model directories, release .pt files, info, convert."""

import functools
import json

import pytest
import torch
from _golden_efficientat import golden, golden_input, synthetic_state_dict

from vipann import cli
from vipann.tagging import AudioTagging, CheckpointNotFoundError
from vipann.zoo.convert import from_efficientat_checkpoint
from vipann.zoo.serialization import save_pretrained


@functools.cache
def _weights(arch):
    return synthetic_state_dict(arch)


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(scope="module")
def mn10_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("release") / "mn10_as_mAP_471.pt"
    torch.save(_weights("mn10"), path)
    return path


def test_drop_mn10_from_a_model_directory_tags_like_efficientat(mn10_file, tmp_path, home):
    directory = save_pretrained(from_efficientat_checkpoint(mn10_file, "drop-mn10"), tmp_path / "drop-mn10")
    tagger = AudioTagging(model="drop-mn10", checkpoint_path=directory, device="cpu")
    assert tagger.name == "drop-mn10" and tagger.classes_num == 527 and tagger.labels[0] == "Speech"
    audio = golden_input("input_5s")[:, :96000].numpy()
    clipwise, embedding = tagger.inference(audio)
    assert clipwise.shape == (2, 527) and embedding.shape == (2, 960)  # EfficientAT's 960-d embedding
    with torch.no_grad():
        wave = torch.from_numpy(audio)
        torch.testing.assert_close(torch.from_numpy(clipwise), torch.sigmoid(tagger.model(wave)), atol=1e-6, rtol=0)
        torch.testing.assert_close(torch.from_numpy(embedding), tagger.model.embed(wave), atol=1e-6, rtol=0)
    mean, _, uncertainty = tagger.inference(audio, num_samples=8, return_uncertainty=True, generator=0)
    assert mean.shape == (2, 527) and uncertainty["epistemic"].shape == (2,) and (uncertainty["epistemic"] > 0).all()


def test_release_file_as_checkpoint_path(mn10_file, home):
    tagger = AudioTagging(checkpoint_path=mn10_file, device="cpu")
    assert tagger.name == "drop-mn10"  # same weights, uncertainty available
    clip = golden_input("real_R9_ZSCveAHg_7s")
    clipwise, embedding = tagger.inference(clip.numpy())
    reference = golden()["mn10.real_R9_ZSCveAHg_7s.clipwise_output"].numpy()
    assert abs(clipwise - reference).max() < 5e-5 and embedding.shape == (1, 960)
    detflip = AudioTagging(model="detflip-mn10", checkpoint_path=mn10_file, device="cpu")
    assert detflip.model.method == "detflip"


def test_missing_weights_say_how_to_build_them(home):
    match = r"(?s)releases/download/v0\.0\.1/mn10_as_mAP_471\.pt.*vipann zoo import mn10_as_mAP_471\.pt"
    with pytest.raises(CheckpointNotFoundError, match=match) as err:
        AudioTagging(model="drop-mn10", device="cpu")
    assert "its sha256 is recorded" in str(err.value)


def test_info_counts_parameters_and_macs(capsys):
    assert cli.main(["info", "det-mn10", "--json", "--convention", "efficientat"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["trainable_parameters"] == 4_876_831 and info["macs"] == 541_085_095 and info["seconds"] == 10.0
    assert cli.main(["info", "flip-dymn10", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["stochastic_weights"] > 10_000_000 and info["mac_convention"] == "vipann"


def test_convert_detects_release_files(mn10_file, tmp_path, capsys):
    out = tmp_path / "flip-mn10"
    assert cli.main(["convert", "auto", str(mn10_file), "--name", "flip-mn10", "--out", str(out)]) == 0
    assert "flip-mn10" in capsys.readouterr().out and (out / "config.json").is_file()
    assert cli.main(["convert", "efficientat", str(mn10_file), "--name", "det-mn04", "--out", str(tmp_path / "x")]) != 0
    assert "holds an EfficientAT mn10, not a mn04; pick a *-mn10 name" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
