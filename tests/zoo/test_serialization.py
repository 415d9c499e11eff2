import hashlib
import json
import logging

import pytest
import torch
from torch import nn

import vipann
from vipann.layers import LinearFlipout, MCDropout
from vipann.utils.integrity import seal_json
from vipann.zoo import serialization
from vipann.zoo.checkpoint import CheckpointError
from vipann.zoo.convert import moped
from vipann.zoo.serialization import (
    CONFIG_NAME,
    README_NAME,
    WEIGHTS_NAME,
    load_pretrained_dir,
    read_config,
    save_pretrained,
    verify_pretrained_dir,
)

METHODS = ("det", "drop", "flip", "detflip")


def _model(method="flip", seed=0, **kwargs):
    torch.manual_seed(seed)
    return vipann.create_model(f"{method}-tiny", **kwargs).eval()


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].shape == sb[key].shape, key
        assert torch.equal(sa[key], sb[key]), key


def _rewrite_config(directory, **changes):
    # Resealed: a config that is consistent with itself but wrong, which only the deeper checks catch
    # (an edit without a new seal is refused first: tests/zoo/test_integrity.py).
    path = directory / CONFIG_NAME
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(seal_json(config, "config_sha256")))


def _fix_checksum(directory):
    digest = hashlib.sha256((directory / WEIGHTS_NAME).read_bytes()).hexdigest()
    _rewrite_config(directory, weights_sha256=digest)


def _leftovers(parent, name):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


@pytest.mark.parametrize("method", METHODS)
def test_round_trip_every_method(tmp_path, method):
    model = _model(method, seed=1)
    path = save_pretrained(model, tmp_path / method)
    assert sorted(p.name for p in path.iterdir()) == [README_NAME, CONFIG_NAME, WEIGHTS_NAME]
    loaded = load_pretrained_dir(path)
    _assert_same_state(model, loaded)
    assert not loaded.training
    assert loaded.config() == model.config()
    cfg = loaded.pretrained_cfg
    assert (cfg.name, cfg.arch, cfg.method, cfg.num_classes) == (f"{method}-tiny", "tiny", method, 10)
    assert cfg.labels == model.pretrained_cfg.labels
    assert cfg.default_num_samples == model.pretrained_cfg.default_num_samples
    assert loaded.pretrained_source == f"local-dir:{path.resolve()}"
    x = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_config_fields(tmp_path):
    path = save_pretrained(_model("drop"), tmp_path / "m", extra_metadata={"temperature": 1.5})
    config = read_config(path)
    for key in (
        "format_version",
        "vipann_version",
        "name",
        "arch",
        "method",
        "num_classes",
        "labels",
        "multilabel",
        "sample_rate",
        "clip_seconds",
        "frontend",
        "model_args",
        "default_num_samples",
        "metrics",
        "metrics_source",
        "license",
        "provenance",
        "source_checkpoint",
        "tags",
        "weights_sha256",
        "created",
        "extra",
    ):
        assert key in config, key
    assert config["extra"] == {"temperature": 1.5}
    assert config["vipann_version"] == vipann.__version__
    assert config["weights_sha256"] == hashlib.sha256((path / WEIGHTS_NAME).read_bytes()).hexdigest()
    assert config["model_args"]["conv_dropout"] == 0.2


def test_weights_are_safetensors_with_pt_metadata(tmp_path):
    from safetensors import safe_open

    path = save_pretrained(_model("det"), tmp_path / "m", card=False)
    assert not (path / README_NAME).exists()
    with safe_open(str(path / WEIGHTS_NAME), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_moped_weight_priors_survive(tmp_path):
    flip = moped(_model("det", seed=2), "flip", prior="weights")
    assert flip.fc1.prior_weight_mu.shape == flip.fc1.mu_weight.shape
    loaded = load_pretrained_dir(save_pretrained(flip, tmp_path / "m"))
    _assert_same_state(flip, loaded)
    assert loaded.conv_block1.conv1.prior_weight_sigma.shape == loaded.conv_block1.conv1.mu_kernel.shape
    assert verify_pretrained_dir(tmp_path / "m")["method"] == "flip"


def test_refuses_to_overwrite_unless_asked(tmp_path):
    target = tmp_path / "m"
    save_pretrained(_model("det", seed=1), target)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_pretrained(_model("det", seed=2), target)
    second = _model("det", seed=2)
    save_pretrained(second, target, overwrite=True)
    _assert_same_state(second, load_pretrained_dir(target))
    assert _leftovers(tmp_path, "m") == []
    empty = tmp_path / "empty"
    empty.mkdir()
    save_pretrained(second, empty)  # an empty directory is not "existing content"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        save_pretrained(second, tmp_path / "file")


def _failing_save_file(state, filename, metadata=None):
    # Write part of a file, then fail, as a full disk or a kill during the write would.
    with open(filename, "wb") as f:
        f.write(b"\x00" * 100)
    raise OSError("No space left on device")


def test_interrupted_save_leaves_nothing_that_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(serialization, "save_file", _failing_save_file)
    with pytest.raises(OSError, match="No space"):
        save_pretrained(_model(), tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert _leftovers(tmp_path, "m") == []


def test_interrupted_overwrite_keeps_the_old_model(tmp_path, monkeypatch):
    old = _model(seed=3)
    save_pretrained(old, tmp_path / "m")
    monkeypatch.setattr(serialization, "save_file", _failing_save_file)
    with pytest.raises(OSError):
        save_pretrained(_model(seed=4), tmp_path / "m", overwrite=True)
    _assert_same_state(old, load_pretrained_dir(tmp_path / "m"))
    assert _leftovers(tmp_path, "m") == []


def test_a_killed_save_leaves_a_temporary_directory_that_does_not_load(tmp_path, monkeypatch):
    # A killed process runs no clean-up: keep the temporary directory as it would be left.
    monkeypatch.setattr(serialization.shutil, "rmtree", lambda *a, **k: None)
    monkeypatch.setattr(serialization, "save_file", _failing_save_file)
    with pytest.raises(OSError):
        save_pretrained(_model(), tmp_path / "m")
    assert not (tmp_path / "m").exists()
    (leftover,) = _leftovers(tmp_path, "m")
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        load_pretrained_dir(tmp_path / leftover)
    # and it is hidden and distinct from the target, so a retry succeeds
    monkeypatch.undo()
    save_pretrained(_model(), tmp_path / "m")
    assert load_pretrained_dir(tmp_path / "m").method == "flip"


def test_extra_metadata_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        save_pretrained(_model(), tmp_path / "m", extra_metadata={"t": object()})
    assert not (tmp_path / "m").exists()


@pytest.fixture
def saved(tmp_path):
    return save_pretrained(_model("flip", seed=5), tmp_path / "m")


def test_checksum_mismatch(saved):
    data = bytearray((saved / WEIGHTS_NAME).read_bytes())
    data[-3] ^= 0xFF  # same size, one tensor value changed
    (saved / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_pretrained_dir(saved)


def test_truncated_weights(saved):
    data = (saved / WEIGHTS_NAME).read_bytes()
    (saved / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_pretrained_dir(saved)
    _fix_checksum(saved)  # a config that agrees with a broken file: the file itself is checked
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_pretrained_dir(saved)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        verify_pretrained_dir(saved)


def test_corrupt_weights(saved):
    (saved / WEIGHTS_NAME).write_bytes(b"not a safetensors file at all")
    _fix_checksum(saved)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_pretrained_dir(saved)


def test_config_weights_mismatch(saved):
    _rewrite_config(saved, num_classes=5, labels=[f"c{i}" for i in range(5)])
    with pytest.raises(CheckpointError, match=r"fc_audioset\.mu_weight \(10, 16\) vs \(5, 16\)"):
        load_pretrained_dir(saved)


def test_config_method_mismatch_names_the_keys(saved):
    _rewrite_config(saved, method="det")
    with pytest.raises(CheckpointError, match=r"missing keys: conv_block1\.conv1\.weight") as info:
        load_pretrained_dir(saved)
    assert "unexpected keys" in str(info.value)
    with pytest.raises(CheckpointError, match="missing keys"):
        verify_pretrained_dir(saved)


def test_unknown_architecture(saved):
    _rewrite_config(saved, arch="resnet99")
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet99'"):
        load_pretrained_dir(saved)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 99}, "upgrade vipann"),
        ({"method": "bayes"}, "unknown method 'bayes'"),
        ({"num_classes": "10"}, "'num_classes' must be int"),
        ({"multilabel": 1}, "'multilabel' must be bool"),
        ({"labels": ["a"]}, "1 labels for num_classes=10"),
        ({"frontend": {"sample_rate": 16000, "colour": "red"}}, "invalid frontend"),
        ({"model_args": {"dropout_everywhere": 0.3}}, "unknown model_args"),
        ({"weights_sha256": "abc"}, "weights_sha256"),
    ],
)
def test_invalid_config_fields(saved, changes, message):
    _rewrite_config(saved, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_pretrained_dir(saved)


def test_missing_fields_and_bad_json(saved):
    config = json.loads((saved / CONFIG_NAME).read_text())
    del config["arch"], config["license"]
    (saved / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"missing fields \['arch', 'license'\]"):
        read_config(saved)
    (saved / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_pretrained_dir(saved)


def test_missing_files(saved, tmp_path):
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=f"no {WEIGHTS_NAME}"):
        load_pretrained_dir(saved)
    (saved / CONFIG_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=f"no {CONFIG_NAME}"):
        load_pretrained_dir(saved)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained_dir(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("method", "head_type"),
    [("det", nn.Linear), ("drop", nn.Linear), ("flip", LinearFlipout), ("detflip", LinearFlipout)],
)
def test_new_number_of_classes(tmp_path, caplog, method, head_type):
    model = _model(method, seed=6)
    path = save_pretrained(model, tmp_path / method)
    with caplog.at_level(logging.INFO, logger="vipann.zoo.serialization"):
        loaded = load_pretrained_dir(path, num_classes=3)
    assert type(loaded.fc_audioset) is head_type
    assert loaded.fc_audioset(torch.zeros(1, 16)).shape == (1, 3)
    if method == "drop":
        assert isinstance(loaded.dropout_head, MCDropout)
    dropped = sorted(k for k in model.state_dict() if k.startswith("fc_audioset."))
    message = " ".join(r.getMessage() for r in caplog.records)
    assert f"dropped {len(dropped)} checkpoint keys: {', '.join(dropped)}" in message
    own = model.state_dict()
    for key, value in loaded.state_dict().items():
        if not key.startswith("fc_audioset."):
            assert torch.equal(value, own[key]), key
    cfg = loaded.pretrained_cfg
    assert cfg.num_classes == 3 and cfg.metrics == {} and len(cfg.labels) == 3
    # the same number of classes is a plain load, nothing dropped
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vipann.zoo.serialization"):
        _assert_same_state(model, load_pretrained_dir(path, num_classes=10))
    assert "dropped" not in caplog.text


def test_saved_model_keeps_its_metadata(tmp_path):
    model = vipann.create_model("flip-tiny", num_classes=4)
    loaded = load_pretrained_dir(save_pretrained(model, tmp_path / "m"))
    assert loaded.pretrained_cfg.labels == ("class_0", "class_1", "class_2", "class_3")
    assert loaded.pretrained_cfg.weights == "none"  # the registry's value for flip-tiny
    # a bare PANN (no pretrained_cfg) gets the registry defaults of its method and architecture
    bare = vipann.PANN("tiny", "detflip", num_classes=2)
    config = read_config(save_pretrained(bare, tmp_path / "bare"))
    assert (config["name"], config["num_classes"], config["default_num_samples"]) == ("detflip-tiny", 2, 8)


def test_from_pretrained_local_sources(tmp_path, monkeypatch):
    model = _model("detflip", seed=7)
    path = save_pretrained(model, tmp_path / "sub" / "my-model")
    _assert_same_state(model, vipann.from_pretrained(f"local-dir:{path}"))
    monkeypatch.chdir(tmp_path / "sub")
    _assert_same_state(model, vipann.from_pretrained("my-model"))  # a plain existing directory
    assert vipann.from_pretrained("./my-model", num_classes=2).num_classes == 2
    with pytest.raises(ValueError, match="Hub sources only"):
        vipann.from_pretrained("local-dir:my-model", revision="main")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        vipann.from_pretrained("local-dir:missing")
    with pytest.raises(ValueError, match="'hf-hub:org/name' for a Hub repository"):
        vipann.from_pretrained("org/name")
    with pytest.raises(ValueError, match="unknown source prefix 'hf_hub:'"):
        vipann.from_pretrained("hf_hub:org/name")
    # a directory named like a registered model is ambiguous: the message says what to write
    save_pretrained(model, tmp_path / "sub" / "flip-tiny")
    with pytest.raises(ValueError, match="'local-dir:flip-tiny'"):
        vipann.from_pretrained("flip-tiny")
    assert vipann.from_pretrained("local-dir:flip-tiny").method == "detflip"
