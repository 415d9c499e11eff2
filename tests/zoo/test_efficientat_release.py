"""from_pretrained("det-mn04") fetches EfficientAT's GitHub release file, records its SHA-256 on first use
and refuses a later file that differs (EfficientAT publishes no checksum).

A GitHub-release-shaped path on the local fake server (``tests/_zenodo_server.py``, reached through
``VIPANN_EFFICIENTAT_ENDPOINT``) serves a synthetic mn04 state dict saved under the release's name.
"""

import os

import pytest
import torch
from _golden_efficientat import synthetic_state_dict
from _zenodo_server import serve_zenodo

import vipann
from vipann import cli
from vipann.zoo.convert import from_efficientat_checkpoint
from vipann.zoo.download import ChecksumMismatchError
from vipann.zoo.entries_efficientat import EFFICIENTAT_RELEASE
from vipann.zoo.release import SourceNotCachedError, recorded_sha256

FILE = EFFICIENTAT_RELEASE["mn04"].filename
WAVE = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def release_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("efficientat") / FILE
    torch.save(synthetic_state_dict("mn04"), path)
    return path


@pytest.fixture
def github(release_file, monkeypatch, tmp_path):
    for key in [k for k in os.environ if "proxy" in k.lower() or k.startswith("HF_HUB_OFFLINE")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))
    with serve_zenodo() as server:
        server.add(release_file)
        monkeypatch.setenv("VIPANN_EFFICIENTAT_ENDPOINT", server.endpoint)
        yield server


def _logits(model):
    with torch.no_grad():
        return model(WAVE)


def test_entries_are_release_conversions_and_moped_on_request():
    for method, weights in (("det", "release"), ("drop", "release"), ("flip", "moped"), ("detflip", "moped")):
        cfg = vipann.get_pretrained_cfg(f"{method}-mn10")
        assert cfg.weights == weights and cfg.conversion == "efficientat" and cfg.source.first_use
        assert (
            cfg.source.url == f"https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/{cfg.source.filename}"
        )
        assert cfg.source.downloadable and "first download" in cfg.source.checksum


def test_first_use_records_the_sha256_and_a_changed_file_is_refused(github, release_file, tmp_path, caplog):
    model = vipann.from_pretrained("det-mn04")
    reference = from_efficientat_checkpoint(release_file, "det-mn04").eval()
    assert torch.equal(_logits(model), _logits(reference))
    source = model.pretrained_cfg.source
    recorded = recorded_sha256(source)
    assert recorded is not None and len(recorded) == 64
    assert "no published checksum" in caplog.text
    # drop-mn04 shares the downloaded file: no second download
    assert torch.allclose(_logits(vipann.from_pretrained("drop-mn04")), _logits(reference))
    assert len([r for r in github.requests(FILE) if r[2] in (200, 206)]) == 1
    # the publisher replaces the file: a fresh download that differs is refused, nothing is converted
    changed = tmp_path / "changed" / FILE
    changed.parent.mkdir()
    weights = synthetic_state_dict("mn04")
    weights["classifier.5.bias"] = weights["classifier.5.bias"] + 1.0
    torch.save(weights, changed)
    github.add(changed)
    with pytest.raises(ChecksumMismatchError, match="differs from the first one vipann recorded"):
        vipann.from_pretrained("det-mn04", force_download=True)
    assert recorded_sha256(source) == recorded


def test_flip_is_built_only_on_request(github):
    with pytest.raises(RuntimeError, match="moped_delta"):
        vipann.from_pretrained("flip-mn04")
    model = vipann.from_pretrained("flip-mn04", moped_delta=0.5)
    assert model.method == "flip" and "moped-untrained" in model.pretrained_cfg.tags


def test_import_records_the_file_and_refuses_another_copy(release_file, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceNotCachedError, match=f"vipann zoo import {FILE}"):
        vipann.from_pretrained("det-mn04")
    assert cli.main(["zoo", "import", str(release_file)]) == 0
    model = vipann.from_pretrained("det-mn04")  # offline, from the imported file
    assert model.arch == "mn04"
    other = tmp_path / "other" / FILE
    other.parent.mkdir()
    weights = synthetic_state_dict("mn04")
    weights["classifier.5.bias"] = weights["classifier.5.bias"] - 1.0
    torch.save(weights, other)
    capsys.readouterr()
    assert cli.main(["zoo", "import", str(other)]) == 2
    assert "recorded at its first download" in capsys.readouterr().err
