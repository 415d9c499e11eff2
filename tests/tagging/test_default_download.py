"""AudioTagging() and SoundEventDetection() without a checkpoint get their default model like panns-inference.

No ``~/panns_data`` file: the default model comes by the same path as ``vipann.from_pretrained``, from
a Zenodo-shaped server on 127.0.0.1 (``tests/_zenodo_server.py``) serving a full-size seeded Cnn14
checkpoint under both release names (Cnn14 and Cnn14_DecisionLevelMax share every tensor), with a
progress bar and the md5 the test injects; nothing happens at import time.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from _golden import load_keys, seeded_state_dict
from _zenodo_server import client_env, md5_of, pin_release, serve_zenodo

from vipann.models.frontend import FrontendConfig
from vipann.tagging import AudioTagging, SoundEventDetection
from vipann.zoo.convert import from_panns_checkpoint
from vipann.zoo.registry import _REGISTRY
from vipann.zoo.release import CONVERTER_VERSION

pytestmark = pytest.mark.slow

CNN14 = "Cnn14_mAP=0.431.pth"
DLMAX = "Cnn14_DecisionLevelMax_mAP=0.385.pth"


@pytest.fixture(scope="module")
def state_dict():
    model_name, keys = load_keys("cnn14")
    return seeded_state_dict(keys, model_name, frontend=FrontendConfig())


@pytest.fixture(scope="module")
def release_file(tmp_path_factory, state_dict):
    path = tmp_path_factory.mktemp("release") / CNN14
    torch.save({"iteration": 0, "model": state_dict}, path)
    return path


@pytest.fixture
def zenodo(release_file, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    for key in [k for k in os.environ if "proxy" in k.lower() or k.startswith(("HF_", "TRANSFORMERS_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))
    md5, size = md5_of(release_file), release_file.stat().st_size
    for filename in (CNN14, DLMAX):
        for name, cfg in pin_release(_REGISTRY, filename, md5, size).items():
            monkeypatch.setitem(_REGISTRY, name, cfg)
    with serve_zenodo() as server:
        server.add(release_file)
        server.add(release_file, DLMAX)
        monkeypatch.setenv("VIPANN_PANNS_ENDPOINT", server.endpoint)
        server.md5, server.home, server.cache = md5, home, tmp_path / "cache"
        yield server


def test_importing_the_drop_ins_fetches_nothing(zenodo):
    code = "import vipann, vipann.tagging; from vipann import AudioTagging, SoundEventDetection"
    env = client_env(zenodo, zenodo.cache)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert zenodo.log == [] and not zenodo.cache.exists()


def test_audio_tagging_and_sound_event_detection_download_their_default_models(zenodo, state_dict, capsys):
    x = (0.1 * torch.randn(2, 32000, generator=torch.Generator().manual_seed(3))).numpy()
    tagger = AudioTagging(device="cpu")
    err = capsys.readouterr().err
    assert CNN14 in err and "100%" in err  # the progress bar
    entry = zenodo.cache / "zoo" / "converted" / "drop-cnn14" / f"{zenodo.md5}-c{CONVERTER_VERSION}"
    assert (tagger.name, tagger.source) == ("drop-cnn14", f"local-dir:{entry}")
    assert zenodo.requests(CNN14) == [(CNN14, None, 200, os.path.getsize(zenodo.files[CNN14]))]
    reference = from_panns_checkpoint({"model": state_dict}, "drop-cnn14")
    clipwise, embedding = tagger.inference(x)
    with torch.no_grad():
        np.testing.assert_array_equal(clipwise, torch.sigmoid(reference(torch.from_numpy(x))).numpy())
        np.testing.assert_array_equal(embedding, reference.embed(torch.from_numpy(x)).numpy())
    assert not (zenodo.home / "panns_data").exists()  # vipann's cache, not panns-inference's folder

    sed = SoundEventDetection(device="cpu")
    entry = zenodo.cache / "zoo" / "converted" / "drop-cnn14-dlmax" / f"{zenodo.md5}-c{CONVERTER_VERSION}"
    assert (sed.name, sed.source) == ("drop-cnn14-dlmax", f"local-dir:{entry}")
    assert len(zenodo.requests(DLMAX)) == 1
    reference = from_panns_checkpoint({"model": state_dict}, "drop-cnn14-dlmax")
    with torch.no_grad():
        expected = torch.sigmoid(reference.framewise(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(sed.inference(x), expected, atol=1e-6, rtol=0)  # as in test_sed.py

    # Both are cached now: a second tagger needs no server.
    zenodo.stop()
    assert AudioTagging(device="cpu").source == tagger.source
    cached = json.loads((entry / "config.json").read_text())["extra"]["source"]
    assert cached["md5"] == zenodo.md5 and cached["file"] == DLMAX
