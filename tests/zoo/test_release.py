"""from_pretrained(name) builds registry entries from their original release files, without the network.

A Zenodo-shaped server on 127.0.0.1 (``tests/_zenodo_server.py``, reached through
``VIPANN_PANNS_ENDPOINT``) serves a PANN-layout Cnn6 checkpoint built from the seeded weights of
``tests/_golden.py`` under the release's file name; the test injects that file's md5 into the
registry entries that use it (``pin_release``). The cache is a temporary ``VIPANN_CACHE_DIR``.
"""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from _golden import load_keys, seeded_state_dict
from _zenodo_server import client_env, md5_of, pin_release, serve_zenodo

import vipann
from vipann import cli
from vipann.models.frontend import FrontendConfig
from vipann.zoo import download
from vipann.zoo.convert import from_panns_checkpoint
from vipann.zoo.download import ChecksumMismatchError, DownloadError
from vipann.zoo.hub import NotCachedError
from vipann.zoo.registry import _REGISTRY, get_pretrained_cfg
from vipann.zoo.release import CONVERTER_VERSION, SourceNotCachedError
from vipann.zoo.serialization import WEIGHTS_NAME, read_config, save_pretrained
from vipann.zoo.sources import VIPANN_BOX_PAGE

FILE = "Cnn6_mAP=0.343.pth"
TESTS_DIR = Path(__file__).resolve().parents[1]


def fingerprint(model):
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def release_file(tmp_path_factory):
    """A PANN-layout Cnn6 checkpoint ({'iteration', 'model'}) under the release's file name."""
    model_name, keys = load_keys("cnn6")
    path = tmp_path_factory.mktemp("release") / FILE
    torch.save({"iteration": 0, "model": seeded_state_dict(keys, model_name, frontend=FrontendConfig())}, path)
    return path


@pytest.fixture(scope="module")
def release_md5(release_file):
    return md5_of(release_file)


@pytest.fixture(scope="module")
def x():
    return 0.1 * torch.randn(2, 32000, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def reference(release_file, x):
    """Logits of from_panns_checkpoint on the same file, per name."""
    out = {}
    for name in ("det-cnn6", "drop-cnn6"):
        with torch.no_grad():
            out[name] = from_panns_checkpoint(release_file, name)(x)
    return out


@pytest.fixture(scope="module")
def warm_cache(release_file, release_md5, tmp_path_factory):
    """A zoo cache that already holds the source file and the det-cnn6 conversion (copied by the tests)."""
    cache = tmp_path_factory.mktemp("warm") / "cache"
    mp = pytest.MonkeyPatch()
    try:
        _isolate(mp, cache)
        for name, cfg in pin_release(_REGISTRY, FILE, release_md5, release_file.stat().st_size).items():
            mp.setitem(_REGISTRY, name, cfg)
        with serve_zenodo() as server:
            server.add(release_file)
            mp.setenv("VIPANN_PANNS_ENDPOINT", server.endpoint)
            vipann.from_pretrained("det-cnn6")
    finally:
        mp.undo()
    return cache


def _warm(warm_cache, cache):
    shutil.copytree(warm_cache, cache)


def _isolate(monkeypatch, cache):
    for key in [k for k in os.environ if "proxy" in k.lower() or k.startswith(("HF_HUB_OFFLINE", "TRANSFORMERS_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(cache))


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def zenodo(release_file, release_md5, monkeypatch, cache):
    _isolate(monkeypatch, cache)
    for name, cfg in pin_release(_REGISTRY, FILE, release_md5, release_file.stat().st_size).items():
        monkeypatch.setitem(_REGISTRY, name, cfg)
    with serve_zenodo() as server:
        server.add(release_file)
        monkeypatch.setenv("VIPANN_PANNS_ENDPOINT", server.endpoint)
        yield server


def _files(root):
    """Every file under a cache root except the lock files."""
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".locks" not in p.parts)


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def test_cold_cache_downloads_verifies_converts_and_loads(
    zenodo, release_file, release_md5, reference, x, cache, caplog
):
    with caplog.at_level(logging.INFO, logger="vipann.zoo"):
        model = vipann.from_pretrained("det-cnn6")
    assert torch.equal(_logits(model, x), reference["det-cnn6"])
    assert (model.method, model.arch, model.num_classes, model.training) == ("det", "cnn6", 527, False)
    assert model.pretrained_cfg == get_pretrained_cfg("det-cnn6")
    entry = cache / "zoo" / "converted" / "det-cnn6" / f"{release_md5}-c{CONVERTER_VERSION}"
    assert model.pretrained_source == f"local-dir:{entry}"
    assert _files(cache / "zoo") == [
        f"converted/det-cnn6/{entry.name}/README.md",
        f"converted/det-cnn6/{entry.name}/config.json",
        f"converted/det-cnn6/{entry.name}/{WEIGHTS_NAME}",
        f"sources/{release_md5}/{FILE}",
    ]
    # one GET of the whole file, at Zenodo's path
    assert zenodo.requests(FILE) == [(FILE, None, 200, release_file.stat().st_size)]
    # the log names each step, the sizes and the cache locations
    log = caplog.text
    size_mb = f"{release_file.stat().st_size / 1e6:.1f} MB"
    assert f"det-cnn6: downloading {FILE} ({size_mb}, md5:{release_md5}) from {zenodo.endpoint}/records/" in log
    assert f"verified {FILE} ({size_mb}; md5 {release_md5})" in log
    assert "det-cnn6: converting Cnn6_mAP=0.343.pth with vipann.zoo.convert.from_panns_checkpoint" in log
    assert f"det-cnn6: wrote {WEIGHTS_NAME}" in log and str(entry) in log
    # the cached directory records its provenance, and its card shows it
    source = read_config(entry)["extra"]["source"]
    assert source["md5"] == release_md5 and source["converter_version"] == CONVERTER_VERSION
    assert source["downloaded_from"].startswith(zenodo.endpoint) and source["result"] == "exact"
    card = (entry / "README.md").read_text()
    assert release_md5 in card and "AudioSet mAP 0.343" in card and "from_panns_checkpoint" in card

    # drop-cnn6 comes from the same cached file: converted, not downloaded again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vipann.zoo"):
        drop = vipann.from_pretrained("drop-cnn6")
    assert torch.equal(_logits(drop, x), reference["drop-cnn6"]) and drop.method == "drop"
    assert len(zenodo.requests(FILE)) == 1 and "using the cached original" in caplog.text


def test_second_call_with_the_server_stopped_uses_the_cache(
    zenodo, warm_cache, cache, reference, x, monkeypatch, caplog
):
    _warm(warm_cache, cache)
    first = vipann.from_pretrained("det-cnn6")
    assert zenodo.log == []
    zenodo.stop()
    with caplog.at_level(logging.INFO, logger="vipann.zoo"):
        again = vipann.from_pretrained("det-cnn6")
    assert fingerprint(again) == fingerprint(first) and torch.equal(_logits(again, x), reference["det-cnn6"])
    assert "det-cnn6: found in the vipann cache" in caplog.text and "downloading" not in caplog.text
    assert fingerprint(vipann.from_pretrained("det-cnn6", local_files_only=True)) == fingerprint(first)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fingerprint(vipann.from_pretrained("det-cnn6")) == fingerprint(first)


def test_checksum_mismatch_is_refused_and_nothing_is_cached(zenodo, release_md5, release_file, monkeypatch, cache):
    wrong = "0" * 32
    for name, cfg in pin_release(_REGISTRY, FILE, wrong, release_file.stat().st_size).items():
        monkeypatch.setitem(_REGISTRY, name, cfg)
    for _ in range(2):
        with pytest.raises(ChecksumMismatchError) as info:
            vipann.from_pretrained("det-cnn6")
        message = str(info.value)
        assert f"md5: expected {wrong}, received {release_md5}" in message
        assert "deleted and nothing was cached" in message
        assert _files(cache / "zoo") == []
    assert len(zenodo.requests(FILE)) == 2  # each attempt downloaded, verified and threw the file away


def test_a_download_cut_half_way_resumes_with_a_range_request(zenodo, release_file, reference, x, caplog):
    size = release_file.stat().st_size
    zenodo.cut[FILE] = [size // 2]
    with caplog.at_level(logging.INFO, logger="vipann.zoo"):
        model = vipann.from_pretrained("det-cnn6")
    assert torch.equal(_logits(model, x), reference["det-cnn6"])
    assert zenodo.requests(FILE) == [
        (FILE, None, 200, size // 2),
        (FILE, f"bytes={size // 2}-", 206, size - size // 2),  # only the rest is sent again
    ]
    assert "interrupted" in caplog.text and f"resuming {FILE}.incomplete" in caplog.text


def test_a_partial_file_left_by_an_earlier_run_is_resumed(zenodo, release_file, release_md5, reference, x, cache):
    size = release_file.stat().st_size
    zenodo.cut[FILE] = [size // 3]
    zenodo.fail[FILE] = [None, 503, 503]
    mp = pytest.MonkeyPatch()
    mp.setattr(download, "RETRIES", 1)
    mp.setattr(download, "BACKOFF_S", 0.0)
    try:
        with pytest.raises(DownloadError, match="run the same call again to resume") as info:
            vipann.from_pretrained("det-cnn6")
    finally:
        mp.undo()
    assert "HTTP Error 503" in str(info.value)
    partial = cache / "zoo" / "sources" / release_md5 / f"{FILE}.incomplete"
    assert partial.stat().st_size == size // 3 and _files(cache / "zoo") == [str(partial.relative_to(cache / "zoo"))]
    model = vipann.from_pretrained("det-cnn6")
    assert torch.equal(_logits(model, x), reference["det-cnn6"])
    assert zenodo.requests(FILE)[-1] == (FILE, f"bytes={size // 3}-", 206, size - size // 3)


def test_offline_with_a_cold_cache_names_the_file_the_url_and_the_import_command(zenodo, monkeypatch, cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NotCachedError) as info:
        vipann.from_pretrained("drop-cnn6")
    assert isinstance(info.value, SourceNotCachedError)
    message = str(info.value)
    assert FILE in message and "offline mode is on (HF_HUB_OFFLINE=1)" in message
    assert "https://zenodo.org/records/3987831/files/Cnn6_mAP%3D0.343.pth?download=1" in message
    assert f"vipann zoo import {FILE}" in message
    assert zenodo.log == [] and not cache.exists()  # not one request, not one file
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(SourceNotCachedError, match="local_files_only=True") as info:
        vipann.from_pretrained("drop-cnn6", cache_dir=cache / "elsewhere", local_files_only=True)
    assert f"vipann zoo import {FILE} --cache-dir {cache / 'elsewhere'}" in str(info.value)
    assert zenodo.log == []


def test_import_then_load_offline(zenodo, release_file, release_md5, reference, x, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    renamed = tmp_path / "download.bin"  # recognised by its checksum, whatever its name
    renamed.write_bytes(release_file.read_bytes())
    assert cli.main(["zoo", "import", str(renamed)]) == 0
    out = capsys.readouterr().out
    assert f"is {FILE}" in out and "det-cnn6" in out and "drop-cnn6" in out
    assert torch.equal(_logits(vipann.from_pretrained("det-cnn6"), x), reference["det-cnn6"])
    assert zenodo.log == []
    # a file named like a release file but with other content is refused, naming both checksums
    fake = tmp_path / FILE
    fake.write_bytes(b"not a checkpoint")
    assert cli.main(["zoo", "import", str(fake)]) == 2
    err = capsys.readouterr().err
    assert f"md5:{release_md5}" in err and f"md5:{hashlib.md5(b'not a checkpoint').hexdigest()}" in err
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    assert cli.main(["zoo", "import", str(other)]) == 2
    assert "none of the zoo's original files" in capsys.readouterr().err


def test_force_download_and_cache_dir(zenodo, warm_cache, reference, x, cache, tmp_path):
    other = tmp_path / "other-cache"
    _warm(warm_cache / "zoo", other)
    model = vipann.from_pretrained("det-cnn6", cache_dir=other)
    assert zenodo.log == [] and model.pretrained_source.startswith(f"local-dir:{other}/converted/")
    forced = vipann.from_pretrained("det-cnn6", cache_dir=other, force_download=True)
    assert len(zenodo.requests(FILE)) == 1 and torch.equal(_logits(forced, x), reference["det-cnn6"])
    assert not cache.exists()  # cache_dir= replaced the default cache


def test_a_corrupt_cache_entry_is_rebuilt_from_the_cached_source(zenodo, warm_cache, cache, reference, x, caplog):
    _warm(warm_cache, cache)
    model = vipann.from_pretrained("det-cnn6")
    weights = Path(model.pretrained_source.removeprefix("local-dir:")) / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="vipann.zoo"):
        again = vipann.from_pretrained("det-cnn6")
    assert "does not load" in caplog.text and "SHA-256" in caplog.text
    assert torch.equal(_logits(again, x), reference["det-cnn6"]) and zenodo.log == []


def test_a_server_without_the_file_is_a_clear_error(zenodo, monkeypatch, cache):
    for name, cfg in pin_release(_REGISTRY, "Cnn10_mAP=0.380.pth", "1" * 32, 1000).items():
        monkeypatch.setitem(_REGISTRY, name, cfg)
    with pytest.raises(DownloadError) as info:
        vipann.from_pretrained("det-cnn10")
    assert "HTTP 404" in str(info.value) and f"{zenodo.endpoint}/records/3987831/files/Cnn10_mAP%3D0.380.pth" in str(
        info.value
    )


def test_endpoint_is_replaced_by_the_environment(monkeypatch):
    source = get_pretrained_cfg("det-cnn14").source
    monkeypatch.delenv("VIPANN_PANNS_ENDPOINT", raising=False)
    assert (
        source.url_at() == source.url == ("https://zenodo.org/records/3987831/files/Cnn14_mAP%3D0.431.pth?download=1")
    )
    monkeypatch.setenv("VIPANN_PANNS_ENDPOINT", "http://mirror.example/zenodo/")
    assert source.url_at() == "http://mirror.example/zenodo/records/3987831/files/Cnn14_mAP%3D0.431.pth?download=1"


def test_moped_only_on_request(zenodo, warm_cache, cache, reference, x, tmp_path, caplog):
    _warm(warm_cache, cache)
    with pytest.raises(RuntimeError) as info:
        vipann.from_pretrained("flip-cnn6")
    message = str(info.value)
    assert VIPANN_BOX_PAGE in message and "vipann convert vipann flipout.pth" in message
    assert "from_pretrained('flip-cnn6', moped_delta=0.5)" in message
    assert zenodo.log == []  # nothing fetched for a model that has no public weights
    with caplog.at_level(logging.WARNING, logger="vipann.zoo"):
        model = vipann.from_pretrained("flip-cnn6", moped_delta=0.1)
    assert "flip-cnn6: MOPED-initialised, not trained (MOPED delta 0.1 from det-cnn6)" in caplog.text
    assert model.method == "flip" and not model.training
    assert torch.allclose(_logits(model, x), reference["det-cnn6"], atol=1e-5)  # eval = posterior mean = det
    layer = model.conv_block1.conv1
    sigma = torch.nn.functional.softplus(layer.rho_w.detach())
    assert torch.allclose(sigma, 0.1 * layer.mu_w.detach().abs(), rtol=1e-3, atol=1e-6)
    cfg = model.pretrained_cfg
    assert "MOPED-initialised, not trained" in cfg.description and "MOPED-initialised, not trained" in cfg.provenance
    assert cfg.metrics == {}
    out = save_pretrained(model, tmp_path / "moped")
    assert "MOPED-initialised, not trained" in read_config(out)["provenance"]
    assert "MOPED-initialised, not trained" in (out / "README.md").read_text()
    detflip = vipann.from_pretrained("detflip-cnn6", moped_delta=0.5)
    assert detflip.method == "detflip" and zenodo.log == []  # both from the cached det-cnn6
    with pytest.raises(ValueError, match="moped_delta builds flip or detflip"):
        vipann.from_pretrained("det-cnn6", moped_delta=0.1)
    with pytest.raises(ValueError, match="moped_delta applies"):
        vipann.from_pretrained(f"local-dir:{out}", moped_delta=0.1)


def test_vipann_flipout_entry_names_the_box_page_and_the_command():
    with pytest.raises(RuntimeError) as info:
        vipann.from_pretrained("flip-resnet54")
    message = str(info.value)
    assert VIPANN_BOX_PAGE in message
    assert "vipann convert vipann flipout.pth --name flip-resnet54" in message
    assert "vipann zoo import flipout.pth" in message


_DRIVER = """
import hashlib, json, sys, time
from pathlib import Path

sys.path.insert(0, {tests!r})
from _zenodo_server import pin_release

import vipann
from vipann.zoo.registry import _REGISTRY

_REGISTRY.update(pin_release(_REGISTRY, {file!r}, {md5!r}, {size!r}))
ready = Path(sys.argv[1])
(ready / sys.argv[2]).touch()
while len(list(ready.iterdir())) < 2:  # start both loads at the same moment
    time.sleep(0.01)
model = vipann.from_pretrained("det-cnn6")
digest = hashlib.sha256()
for key, value in model.state_dict().items():
    digest.update(key.encode())
    digest.update(value.detach().cpu().contiguous().numpy().tobytes())
print(json.dumps({{"fingerprint": digest.hexdigest(), "source": model.pretrained_source}}))
"""


def test_two_processes_loading_the_same_name_end_with_one_valid_cache_entry(
    zenodo, release_file, release_md5, reference, tmp_path, cache
):
    script = tmp_path / "driver.py"
    size = release_file.stat().st_size
    script.write_text(textwrap.dedent(_DRIVER.format(tests=str(TESTS_DIR), file=FILE, md5=release_md5, size=size)))
    ready = tmp_path / "ready"
    ready.mkdir()
    zenodo.throttle = 0.003  # the download takes about a second: the two processes overlap
    env = client_env(zenodo, cache)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(ready), str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for i in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    expected = fingerprint(from_panns_checkpoint(release_file, "det-cnn6"))
    assert [r["fingerprint"] for r in results] == [expected, expected]
    entry = cache / "zoo" / "converted" / "det-cnn6" / f"{release_md5}-c{CONVERTER_VERSION}"
    assert {r["source"] for r in results} == {f"local-dir:{entry}"}
    assert zenodo.requests(FILE) == [(FILE, None, 200, size)]  # the lock made the second process wait
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # no second entry, no temp dir
    assert _files(cache / "zoo") == [
        f"converted/det-cnn6/{entry.name}/README.md",
        f"converted/det-cnn6/{entry.name}/config.json",
        f"converted/det-cnn6/{entry.name}/{WEIGHTS_NAME}",
        f"sources/{release_md5}/{FILE}",
    ]
    vipann.zoo.verify_pretrained_dir(entry)
