"""``vipann zoo build`` and ``vipann zoo publish`` end to end, without the network.

``build`` turns a folder of original checkpoints (a seeded PANN-layout Cnn6 under its release name,
whose md5 the test injects) into Hub-ready directories. ``publish`` pushes them with the real
``huggingface_hub`` client to the Hub-shaped test server (``tests/_hub_server.py``), and
``from_pretrained`` reads them back from it: by ``hf-hub:`` source, and by registry name once the
entry is marked published (the Hub comes first; a repository that is missing falls back to the
original release, served by the Zenodo-shaped server).
"""

import hashlib
import inspect
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from _golden import load_keys, seeded_state_dict
from _hub_server import serve_hub
from _zenodo_server import md5_of, pin_release, serve_zenodo

import vipann
from vipann import cli, create_model
from vipann.models.frontend import FrontendConfig
from vipann.zoo.convert import from_panns_checkpoint
from vipann.zoo.registry import _REGISTRY, get_pretrained_cfg
from vipann.zoo.serialization import CONFIG_NAME, README_NAME, WEIGHTS_NAME, read_config, verify_pretrained_dir
from vipann.zoo.sources import VIPANN_BOX_PAGE, SourceFile

FILE = "Cnn6_mAP=0.343.pth"
TESTS_DIR = Path(__file__).resolve().parents[1]


def fingerprint(model):
    import hashlib as _hashlib

    digest = _hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("originals")
    model_name, keys = load_keys("cnn6")
    torch.save({"iteration": 0, "model": seeded_state_dict(keys, model_name, frontend=FrontendConfig())}, folder / FILE)
    return folder


@pytest.fixture(scope="module")
def pinned(originals):
    """The registry with the md5 of the test's Cnn6 file (for the whole module)."""
    mp = pytest.MonkeyPatch()
    path = originals / FILE
    for name, cfg in pin_release(_REGISTRY, FILE, md5_of(path), path.stat().st_size).items():
        mp.setitem(_REGISTRY, name, cfg)
    yield md5_of(path)
    mp.undo()


@pytest.fixture(scope="module")
def zoo(originals, pinned, tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "zoo"
    assert cli.main(["zoo", "build", "--from", str(originals), "--out", str(out), "--pattern", "*-cnn6"]) == 0
    return out


def test_build_writes_hub_ready_directories_with_provenance(zoo, originals, pinned, capsys):
    assert sorted(p.name for p in zoo.iterdir()) == ["det-cnn6", "drop-cnn6"]
    x = 0.1 * torch.randn(1, 32000, generator=torch.Generator().manual_seed(1))
    for name in ("det-cnn6", "drop-cnn6"):
        config = verify_pretrained_dir(zoo / name)
        assert sorted(p.name for p in (zoo / name).iterdir()) == [README_NAME, CONFIG_NAME, WEIGHTS_NAME]
        source = config["extra"]["source"]
        assert source["md5"] == pinned and source["file"] == FILE and source["downloaded_from"] is None
        assert source["release_metrics"] == {"audioset": {"mAP": 0.343}}
        card = (zoo / name / README_NAME).read_text()
        for text in (FILE, pinned, source["sha256"], "AudioSet mAP 0.343", "from_panns_checkpoint", "Zenodo record"):
            assert text in card, text
        assert "https://zenodo.org/records/3987831/files/Cnn6_mAP%3D0.343.pth?download=1" in card
        assert f'vipann.from_pretrained("{name}")' in card  # loads by name today (from the release)
        with torch.no_grad():
            expected = from_panns_checkpoint(originals / FILE, name)(x)
            model = vipann.from_pretrained(f"local-dir:{zoo / name}")
            assert torch.equal(model(x), expected)
    # a second run keeps what is there
    assert cli.main(["zoo", "build", "--from", str(originals), "--out", str(zoo), "--pattern", "*-cnn6"]) == 0
    out = capsys.readouterr().out
    assert "det-cnn6   up to date" in out and "drop-cnn6  up to date" in out


def test_build_reports_missing_and_wrong_files(originals, pinned, tmp_path, capsys):
    folder = tmp_path / "originals"
    folder.mkdir()
    os.symlink(originals / FILE, folder / FILE)
    (folder / "Cnn10_mAP=0.380.pth").write_bytes(b"truncated download")
    out = tmp_path / "zoo"
    assert cli.main(["zoo", "build", "--from", str(folder), "--out", str(out)]) == 1  # one file is wrong
    printed = capsys.readouterr().out
    lines = {line.split()[0]: line for line in printed.splitlines() if line.startswith(("det-", "drop-", "flip-"))}
    assert "built" in lines["det-cnn6"] and "built" in lines["drop-cnn6"]
    bad = hashlib.md5(b"truncated download").hexdigest()
    assert "failed" in lines["det-cnn10"] and "Cnn10_mAP=0.380.pth is not the published file" in lines["det-cnn10"]
    assert f"md5: expected bfb1f1f9968938fa8ef4012b8471f5f6, received {bad}" in lines["drop-cnn10"]
    assert "missing" in lines["det-cnn14"] and "missing" in lines["flip-resnet54"]  # flipout.pth is not there
    assert "flip-cnn6" not in lines and "detflip-cnn6" not in lines  # no trained weights: never built
    assert sorted(p.name for p in out.iterdir()) == ["det-cnn6", "drop-cnn6"]
    assert "2 model directories" in printed and "; 2 failed" in printed  # det-cnn10 and drop-cnn10
    assert cli.main(["zoo", "build", "--from", str(tmp_path / "nope"), "--out", str(out)]) == 2


_DRIVER = """
import json, os, sys
from dataclasses import replace

sys.path.insert(0, {tests!r})
from _zenodo_server import pin_release

import vipann
from vipann import cli
from vipann.zoo.registry import _REGISTRY, get_pretrained_cfg

_REGISTRY.update(pin_release(_REGISTRY, {file!r}, {md5!r}, {size!r}))
zoo = sys.argv[1]
results = {{}}
results["dry_run"] = cli.main(["zoo", "publish", zoo, "--org", "testorg", "--dry-run"])
results["publish"] = cli.main(["zoo", "publish", zoo, "--org", "testorg"])
model = vipann.from_pretrained("hf-hub:testorg/det-cnn6")
results["hub"] = {{"fingerprint": fingerprint(model), "source": model.pretrained_source,
                   "hf_hub_id": model.pretrained_cfg.hf_hub_id}}
# Once the registry says the entries are published, their names resolve to the Hub first ...
_REGISTRY["det-cnn6"] = replace(get_pretrained_cfg("det-cnn6"), weights="hub", hf_hub_id="testorg/det-cnn6")
model = vipann.from_pretrained("det-cnn6")
results["by_name"] = {{"fingerprint": fingerprint(model), "source": model.pretrained_source}}
# ... and to the original release when the repository cannot be used.
_REGISTRY["drop-cnn6"] = replace(get_pretrained_cfg("drop-cnn6"), weights="hub", hf_hub_id="testorg/nothing-here")
model = vipann.from_pretrained("drop-cnn6")
results["fallback"] = {{"fingerprint": fingerprint(model), "source": model.pretrained_source}}
json.dump(results, open(sys.argv[2], "w"))
"""


def test_publish_pushes_the_zoo_to_the_hub_and_it_loads_back(zoo, originals, pinned, tmp_path):
    script = tmp_path / "driver.py"
    size = (originals / FILE).stat().st_size
    script.write_text(
        textwrap.dedent(inspect.getsource(fingerprint))
        + textwrap.dedent(_DRIVER.format(tests=str(TESTS_DIR), file=FILE, md5=pinned, size=size))
    )
    with serve_hub() as hub, serve_zenodo() as zenodo:
        zenodo.add(originals / FILE)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "VIPANN_")) and "proxy" not in k.lower()}
        env.update(
            HF_ENDPOINT=hub.endpoint,
            HF_TOKEN="hf_test_token",
            HF_HOME=str(tmp_path / "hf_home"),
            HF_HUB_CACHE=str(tmp_path / "hf_cache"),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_XET="1",
            HF_HUB_ETAG_TIMEOUT="10",
            HF_HUB_DOWNLOAD_TIMEOUT="10",
            VIPANN_PANNS_ENDPOINT=zenodo.endpoint,
            VIPANN_CACHE_DIR=str(tmp_path / "vipann_cache"),
            NO_PROXY="127.0.0.1,localhost",
        )
        out = tmp_path / "results.json"
        proc = subprocess.run(
            [sys.executable, str(script), str(zoo), str(out)], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        results = json.loads(out.read_text())
        posts = [path for method, path in hub.log if method == "POST"]
        zenodo_requests = list(zenodo.log)
    assert results["dry_run"] == 0 and results["publish"] == 0
    assert "would upload README.md, config.json, model.safetensors to testorg/det-cnn6@main" in proc.stdout
    assert posts.count("/api/repos/create") == 2  # the dry run sent nothing
    assert "/api/models/testorg/det-cnn6/commit/main" in posts and "/api/models/testorg/drop-cnn6/commit/main" in posts
    # what was pushed is what was built, and it says where it lives now
    published = hub.repos["testorg/det-cnn6"]
    files = published["commits"][published["refs"]["main"]]
    assert files[WEIGHTS_NAME] == (zoo / "det-cnn6" / WEIGHTS_NAME).read_bytes()
    assert json.loads(files[CONFIG_NAME])["hf_hub_id"] == "testorg/det-cnn6"
    assert 'from_pretrained("hf-hub:testorg/det-cnn6")' in files[README_NAME].decode()
    assert read_config(zoo / "det-cnn6")["hf_hub_id"] == "vipann/det-cnn6"  # the zoo folder is unchanged
    expected = {name: fingerprint(from_panns_checkpoint(originals / FILE, name)) for name in ("det-cnn6", "drop-cnn6")}
    assert results["hub"]["fingerprint"] == expected["det-cnn6"]
    assert results["hub"]["source"].startswith("hf-hub:testorg/det-cnn6@")
    assert results["by_name"]["fingerprint"] == expected["det-cnn6"]
    assert results["by_name"]["source"].startswith("hf-hub:testorg/det-cnn6@")
    assert results["fallback"]["fingerprint"] == expected["drop-cnn6"]
    assert (
        results["fallback"]["source"].startswith("local-dir:") and "falling back to the original release" in proc.stderr
    )
    assert [r[0] for r in zenodo_requests] == [FILE]  # only the fallback touched the release server


# -- a file without a published checksum (the shape of VI-PANN's flipout.pth) ---------------------
VI_FILE = "flipout-tiny.pth"


@pytest.fixture
def vi_entry(monkeypatch, tmp_path):
    """A registry entry made like flip-resnet54 (weights='vipann', a Box page, no checksum), on the tiny net."""
    source = SourceFile(VI_FILE, page=VIPANN_BOX_PAGE, publisher="a VI-PANN-shaped test file")
    cfg = replace(
        get_pretrained_cfg("flip-tiny"),
        name="flip-tiny.vi",
        tag="vi",
        weights="vipann",
        source=source,
        conversion="vipann",
        result="not-public",
        source_checkpoint=VI_FILE,
        hf_hub_id="vipann/flip-tiny.vi",
    )
    cfg.validate()
    monkeypatch.setitem(_REGISTRY, cfg.name, cfg)
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = create_model("flip-tiny")  # bayesian-torch state-dict names, as flipout.pth has
    folder = tmp_path / "originals"
    folder.mkdir()
    torch.save(model.state_dict(), folder / VI_FILE)
    return folder, fingerprint(model)


def test_a_file_without_a_published_checksum_is_imported_and_built(vi_entry, monkeypatch, tmp_path, capsys):
    folder, expected = vi_entry
    with pytest.raises(RuntimeError) as info:
        vipann.from_pretrained("flip-tiny.vi")
    assert VIPANN_BOX_PAGE in str(info.value) and f"vipann zoo import {VI_FILE}" in str(info.value)
    assert cli.main(["zoo", "import", str(folder / VI_FILE)]) == 0
    assert "flip-tiny.vi" in capsys.readouterr().out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = vipann.from_pretrained("flip-tiny.vi")
    md5 = md5_of(folder / VI_FILE)
    assert fingerprint(model) == expected
    assert model.pretrained_source == f"local-dir:{tmp_path / 'cache' / 'zoo' / 'converted' / 'flip-tiny.vi'}/{md5}-c1"
    out = tmp_path / "zoo"
    assert cli.main(["zoo", "build", "--from", str(folder), "--out", str(out), "--pattern", "*.vi"]) == 0
    card = (out / "flip-tiny.vi" / README_NAME).read_text()
    assert "| published checksum | none published |" in card and md5 in card and VIPANN_BOX_PAGE in card
    assert fingerprint(vipann.from_pretrained(f"local-dir:{out / 'flip-tiny.vi'}")) == expected
