"""Hub download and push, without the network.

A Hub-shaped HTTP server on 127.0.0.1 (an ephemeral port) serves repositories written by
``save_pretrained`` through the ``resolve`` endpoint, with the headers ``hf_hub_download`` reads
(``ETag``, ``X-Repo-Commit``, ``Content-Length``, ``X-Error-Code``). ``from_pretrained`` runs in a
subprocess whose environment sets ``HF_ENDPOINT`` / ``HF_HUB_OFFLINE`` before huggingface_hub is
imported (it reads them once, at import), so the real huggingface_hub code path is exercised.
"""

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from _hub_server import serve_hub

import vipann
from vipann.zoo import hub as _hub
from vipann.zoo.checkpoint import CheckpointError
from vipann.zoo.serialization import CONFIG_NAME, README_NAME, WEIGHTS_NAME, save_pretrained

VIPANN_DIR = Path(vipann.__file__).resolve().parent


def fingerprint(model):
    """SHA-256 over every tensor of a state dict, in key order (same code in the subprocess)."""
    import hashlib as _hashlib

    digest = _hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# -- a Hub-shaped server (tests/_hub_server.py) ------------------------------------------------
@pytest.fixture(scope="module")
def fake_hub():
    with serve_hub() as hub:
        yield hub


# -- the subprocess that loads through huggingface_hub -----------------------------------------
_DRIVER = """
import json, os, sys, urllib.request
from dataclasses import replace

import vipann

hub_imported = "huggingface_hub" in sys.modules
from vipann.zoo.registry import _REGISTRY, get_pretrained_cfg

# A published registry entry, for this process only.
_REGISTRY["det-tiny.hubtest"] = replace(
    get_pretrained_cfg("det-tiny"), name="det-tiny.hubtest", tag="hubtest", weights="hub",
    hf_hub_id="vipann/det-tiny.hubtest",
)
steps = json.load(open(sys.argv[1]))
results = {"hub_imported_by_import_vipann": hub_imported}
for step in steps:
    urllib.request.urlopen(os.environ["HF_ENDPOINT"] + "/_mark/" + step["label"], timeout=10).read()
    try:
        model = vipann.from_pretrained(step["source"], **step.get("kwargs", {}))
        cfg = model.pretrained_cfg
        out = {
            "ok": True, "fingerprint": fingerprint(model), "num_classes": model.num_classes,
            "head": type(model.fc_audioset).__name__, "training": model.training, "name": cfg.name,
            "weights": cfg.weights, "hf_hub_id": cfg.hf_hub_id, "source": model.pretrained_source,
        }
    except Exception as exc:
        out = {"ok": False, "types": [t.__name__ for t in type(exc).__mro__], "message": str(exc)}
    if "check_dir" in step:
        out["check_dir"] = os.path.isdir(step["check_dir"])
    results[step["label"]] = out
json.dump(results, open(sys.argv[2], "w"))
"""


def _run_driver(hub, tmp, name, steps, **env_overrides):
    script = tmp / "driver.py"
    script.write_text(textwrap.dedent(inspect.getsource(fingerprint)) + _DRIVER)
    (tmp / f"{name}.json").write_text(json.dumps(steps))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_")) and "proxy" not in k.lower()
    }
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HOME=str(tmp / "hf_home"),  # no saved token, no user config
        HF_HUB_CACHE=str(tmp / "cache"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_ETAG_TIMEOUT="10",
        HF_HUB_DOWNLOAD_TIMEOUT="10",
        NO_PROXY="127.0.0.1,localhost",
        **env_overrides,
    )
    out = tmp / f"{name}.out.json"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp / f"{name}.json"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def _files(directory):
    return {p.name: p.read_bytes() for p in Path(directory).iterdir()}


@pytest.fixture(scope="module")
def hub_runs(fake_hub, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    models = {}
    for key, method, seed in (("main", "flip", 11), ("v1", "flip", 12), ("registry", "det", 13)):
        torch.manual_seed(seed)
        models[key] = vipann.create_model(f"{method}-tiny").eval()
    main = _files(save_pretrained(models["main"], tmp / "repo-main"))
    v1 = _files(save_pretrained(models["v1"], tmp / "repo-v1"))
    commits = {
        "main": fake_hub.add("vipann/tiny-flip", main),
        "v1": fake_hub.add("vipann/tiny-flip", v1, branch="v1"),
    }
    fake_hub.add("vipann/det-tiny.hubtest", _files(save_pretrained(models["registry"], tmp / "repo-registry")))
    fake_hub.add("vipann/no-card", {k: v for k, v in main.items() if k != README_NAME})
    fake_hub.add("vipann/no-config", {README_NAME: b"# not a model\n"})
    broken = dict(main)
    weights = bytearray(broken[WEIGHTS_NAME])
    weights[-1] ^= 0xFF
    broken[WEIGHTS_NAME] = bytes(weights)
    fake_hub.add("vipann/bad-weights", broken)

    repo = "hf-hub:vipann/tiny-flip"
    online = [
        {"label": "default", "source": repo},
        {"label": "again", "source": repo},
        {"label": "force", "source": repo, "kwargs": {"force_download": True}},
        {"label": "pinned", "source": repo + "@v1"},
        {"label": "pinned-kwarg", "source": repo, "kwargs": {"revision": "v1"}},
        {"label": "commit", "source": repo, "kwargs": {"revision": commits["main"]}},
        {"label": "two-revisions", "source": repo + "@v1", "kwargs": {"revision": "main"}},
        {"label": "registry", "source": "det-tiny.hubtest"},
        {"label": "num-classes", "source": repo, "kwargs": {"num_classes": 3}},
        {
            "label": "cache-dir",
            "source": repo,
            "kwargs": {"cache_dir": str(tmp / "other-cache")},
            "check_dir": str(tmp / "other-cache" / "models--vipann--tiny-flip"),
        },
        {"label": "local-only-cold", "source": repo, "kwargs": {"cache_dir": str(tmp / "x"), "local_files_only": True}},
        {"label": "no-card", "source": "hf-hub:vipann/no-card"},
        {"label": "missing-repo", "source": "hf-hub:vipann/nothing-here"},
        {"label": "missing-revision", "source": repo + "@v9"},
        {"label": "no-config", "source": "hf-hub:vipann/no-config"},
        {"label": "bad-weights", "source": "hf-hub:vipann/bad-weights"},
    ]
    offline = [
        {"label": "offline-default", "source": repo},
        {"label": "offline-pinned", "source": repo + "@v1"},
        {"label": "offline-registry", "source": "det-tiny.hubtest"},
        {"label": "offline-cold", "source": repo, "kwargs": {"cache_dir": str(tmp / "cold")}},
    ]
    results = _run_driver(fake_hub, tmp, "online", online)
    results.update(_run_driver(fake_hub, tmp, "offline", offline, HF_HUB_OFFLINE="1"))
    return {
        "results": results,
        "requests": fake_hub.segments(),
        "fingerprints": {k: fingerprint(m) for k, m in models.items()},
        "commits": commits,
    }


def _ok(runs, label):
    result = runs["results"][label]
    assert result["ok"], result
    return result


def _error(runs, label, type_name):
    result = runs["results"][label]
    assert not result["ok"], result
    assert type_name in result["types"], result
    return result["message"]


def test_default_revision(hub_runs):
    result = _ok(hub_runs, "default")
    assert result["fingerprint"] == hub_runs["fingerprints"]["main"]
    assert result["training"] is False
    assert (result["name"], result["weights"], result["hf_hub_id"]) == ("flip-tiny", "hub", "vipann/tiny-flip")
    assert result["source"] == f"hf-hub:vipann/tiny-flip@{hub_runs['commits']['main']}"
    fetched = [p for m, p in hub_runs["requests"]["default"] if m == "GET"]
    assert sorted(p.rsplit("/", 1)[1] for p in fetched) == [README_NAME, CONFIG_NAME, WEIGHTS_NAME]
    # the weights are fetched at the commit config.json resolved to, not at the moving branch
    assert any(f"/resolve/{hub_runs['commits']['main']}/{WEIGHTS_NAME}" in p for p in fetched)


def test_cache_is_reused(hub_runs):
    assert _ok(hub_runs, "again")["fingerprint"] == hub_runs["fingerprints"]["main"]
    requests = hub_runs["requests"]["again"]
    assert [m for m, _ in requests] == ["HEAD"]  # only config.json's revision check; no download
    forced = [p for m, p in hub_runs["requests"]["force"] if m == "GET"]
    assert len(forced) == 3 and _ok(hub_runs, "force")["fingerprint"] == hub_runs["fingerprints"]["main"]


def test_pinned_revision(hub_runs):
    for label in ("pinned", "pinned-kwarg"):
        result = _ok(hub_runs, label)
        assert result["fingerprint"] == hub_runs["fingerprints"]["v1"]
        assert result["source"].endswith("@" + hub_runs["commits"]["v1"])
    assert _ok(hub_runs, "commit")["fingerprint"] == hub_runs["fingerprints"]["main"]
    assert "two revisions" in _error(hub_runs, "two-revisions", "ValueError")


def test_registry_name_resolves_to_its_repository(hub_runs):
    result = _ok(hub_runs, "registry")
    assert result["fingerprint"] == hub_runs["fingerprints"]["registry"]
    assert (result["name"], result["weights"], result["hf_hub_id"]) == (
        "det-tiny.hubtest",
        "hub",
        "vipann/det-tiny.hubtest",
    )
    assert any("/vipann/det-tiny.hubtest/resolve/main/config.json" in p for _, p in hub_runs["requests"]["registry"])


def test_new_classifier_through_the_hub(hub_runs):
    result = _ok(hub_runs, "num-classes")
    assert (result["num_classes"], result["head"]) == (3, "LinearFlipout")


def test_cache_dir(hub_runs):
    result = _ok(hub_runs, "cache-dir")
    assert result["check_dir"] is True
    assert "GET" in {m for m, _ in hub_runs["requests"]["cache-dir"]}  # a new cache downloads again


def test_readme_is_optional(hub_runs):
    assert _ok(hub_runs, "no-card")["fingerprint"] == hub_runs["fingerprints"]["main"]


def test_offline_with_a_warm_cache(hub_runs):
    assert _ok(hub_runs, "offline-default")["fingerprint"] == hub_runs["fingerprints"]["main"]
    assert _ok(hub_runs, "offline-pinned")["fingerprint"] == hub_runs["fingerprints"]["v1"]
    assert _ok(hub_runs, "offline-registry")["fingerprint"] == hub_runs["fingerprints"]["registry"]
    for label in ("offline-default", "offline-pinned", "offline-registry", "offline-cold"):
        assert hub_runs["requests"][label] == [], label  # HF_HUB_OFFLINE=1: not one request


def test_offline_with_a_cold_cache_says_how_to_download(hub_runs):
    message = _error(hub_runs, "offline-cold", "NotCachedError")
    assert "HF_HUB_OFFLINE=1" in message
    assert "hf download vipann/tiny-flip" in message and "huggingface-cli download" in message
    assert "local-dir:" in message
    message = _error(hub_runs, "local-only-cold", "NotCachedError")
    assert "local_files_only=True" in message


def test_clear_errors(hub_runs):
    message = _error(hub_runs, "missing-repo", "HubError")
    assert "repository 'vipann/nothing-here' was not found" in message
    message = _error(hub_runs, "missing-revision", "HubError")
    assert "revision 'v9' was not found" in message
    message = _error(hub_runs, "no-config", "HubError")
    assert "has no config.json" in message and "not a vipann model repository" in message
    message = _error(hub_runs, "bad-weights", "CheckpointError")
    assert "SHA-256" in message


def test_import_vipann_does_not_import_huggingface_hub(hub_runs):
    assert hub_runs["results"]["hub_imported_by_import_vipann"] is False


def test_only_the_hub_module_imports_huggingface_hub():
    pattern = re.compile(r"^\s*(from|import)\s+huggingface_hub", re.MULTILINE)
    importers = sorted(
        str(p.relative_to(VIPANN_DIR)) for p in VIPANN_DIR.rglob("*.py") if pattern.search(p.read_text())
    )
    assert importers == ["zoo/hub.py"]


def test_malformed_hub_sources():
    with pytest.raises(ValueError, match="org/name"):
        vipann.from_pretrained("hf-hub:just-a-name")
    with pytest.raises(ValueError, match="org/name"):
        vipann.from_pretrained("hf-hub:a/b/c")


# -- push --------------------------------------------------------------------------------------
class RecordingApi:
    """Records the HfApi calls push_to_hub makes."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs.pop("repo_id"), kwargs))


@pytest.fixture
def model_dir(tmp_path):
    path = save_pretrained(vipann.create_model("flip-tiny"), tmp_path / "flip-tiny")
    (path / ".DS_Store").write_text("editor junk")
    return path


def test_push_creates_the_repo_and_uploads_the_folder(model_dir):
    api = RecordingApi()
    files = _hub.push_to_hub(model_dir, "someone/flip-tiny", private=True, token="t", api=api)
    assert files == [README_NAME, CONFIG_NAME, WEIGHTS_NAME]
    (create, create_args), (upload, upload_args) = [(c[0], c[2]) for c in api.calls]
    assert create == "create_repo" and create_args["exist_ok"] is True and create_args["private"] is True
    assert upload == "upload_folder" and api.calls[1][1] == "someone/flip-tiny"
    assert upload_args["folder_path"] == str(model_dir)
    assert upload_args["allow_patterns"] == files  # exactly these files, never .DS_Store
    assert upload_args["revision"] is None and upload_args["token"] == "t"
    assert "flip-tiny" in upload_args["commit_message"]


def test_push_to_a_branch_creates_it(model_dir):
    api = RecordingApi()
    _hub.push_to_hub(model_dir, "someone/flip-tiny", revision="v2", api=api)
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[1][2]["branch"] == "v2" and api.calls[1][2]["exist_ok"] is True
    assert api.calls[2][2]["revision"] == "v2"


def test_push_dry_run_sends_nothing(model_dir):
    api = RecordingApi()
    assert _hub.push_to_hub(model_dir, "someone/flip-tiny", dry_run=True, api=api) == [
        README_NAME,
        CONFIG_NAME,
        WEIGHTS_NAME,
    ]
    assert api.calls == []


def test_push_refuses_a_folder_that_does_not_load(model_dir, tmp_path):
    api = RecordingApi()
    data = bytearray((model_dir / WEIGHTS_NAME).read_bytes())
    data[-1] ^= 0xFF
    (model_dir / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        _hub.push_to_hub(model_dir, "someone/flip-tiny", api=api)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        _hub.push_to_hub(tmp_path, "someone/flip-tiny", api=api)
    with pytest.raises(ValueError, match="org/name"):
        _hub.push_to_hub(model_dir, "no-slash", api=api)
    assert api.calls == []
