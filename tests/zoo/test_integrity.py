"""Model directories: every file that changes what a model computes or reports is checked; nothing is lost."""

import errno
import json
import logging
import os

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import vipann
from vipann.utils.integrity import sha256_file
from vipann.utils.outdirs import OutputDirError
from vipann.zoo import serialization
from vipann.zoo.checkpoint import CheckpointError, read_torch_checkpoint
from vipann.zoo.serialization import CONFIG_NAME, WEIGHTS_NAME, load_pretrained_dir, save_pretrained


def _model(seed=0, method="det"):
    torch.manual_seed(seed)
    return vipann.create_model(f"{method}-tiny").eval()


@pytest.fixture
def saved(tmp_path):
    return save_pretrained(_model(), tmp_path / "m")


def _edit(directory, **changes):
    """Edit config.json by hand, as a user or a flipped bit would: no new seal."""
    path = directory / CONFIG_NAME
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config, indent=2))


@pytest.mark.parametrize(
    "change",
    [
        lambda c: {"labels": c["labels"][::-1]},
        lambda c: {"multilabel": not c["multilabel"]},
        lambda c: {"sample_rate": 32000, "frontend": {**c["frontend"], "sample_rate": 32000}},
        lambda c: {"default_num_samples": c["default_num_samples"] + 6},
        lambda c: {"temperature": 2.5},
    ],
    ids=["reversed-labels", "negated-multilabel", "sample-rate", "num-samples", "temperature"],
)
def test_an_edited_config_is_refused(saved, change):
    config = json.loads((saved / CONFIG_NAME).read_text())
    assert "config_sha256" in config
    _edit(saved, **change(config))
    with pytest.raises(CheckpointError, match="modified or corrupted after it was written"):
        load_pretrained_dir(saved)
    with pytest.raises(CheckpointError, match="modified or corrupted"):
        vipann.from_pretrained(f"local-dir:{saved}")


def test_a_config_without_seal_still_loads_with_a_warning(saved, caplog):
    config = json.loads((saved / CONFIG_NAME).read_text())
    del config["config_sha256"]
    (saved / CONFIG_NAME).write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="vipann.zoo.config"):
        load_pretrained_dir(saved)
    assert "not covered by a checksum" in caplog.text


def test_the_shipped_demo_zoo_is_sealed(caplog):
    with caplog.at_level(logging.WARNING, logger="vipann.zoo.config"):
        for method in ("det", "drop", "flip", "detflip"):
            vipann.from_pretrained(f"{method}-demo")
    assert "checksum" not in caplog.text


def test_non_finite_weights_are_refused_on_load(saved):
    state = load_file(str(saved / WEIGHTS_NAME))
    state["fc1.weight"][0, 0] = float("nan")
    save_file(state, str(saved / WEIGHTS_NAME), metadata={"format": "pt"})
    config = json.loads((saved / CONFIG_NAME).read_text())
    config["weights_sha256"] = sha256_file(saved / WEIGHTS_NAME)  # checksum recomputed: the file is "valid"
    from vipann.utils.integrity import seal_json

    (saved / CONFIG_NAME).write_text(json.dumps(seal_json(config, "config_sha256")))
    with pytest.raises(CheckpointError, match=r"NaN or infinite weights in 1 tensors: fc1\.weight"):
        load_pretrained_dir(saved)


def test_non_finite_weights_are_refused_in_pth_and_on_save(tmp_path):
    model = _model()
    state = model.state_dict()
    state["fc_audioset.bias"][1] = float("inf")
    torch.save({"model": state}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=r"fc_audioset\.bias"):
        read_torch_checkpoint(tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        save_pretrained(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(("umask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_model_directories_follow_the_umask(tmp_path, umask, dir_mode, file_mode):
    previous = os.umask(umask)
    try:
        path = save_pretrained(_model(), tmp_path / "m")
    finally:
        os.umask(previous)
    assert os.stat(path).st_mode & 0o777 == dir_mode
    for name in os.listdir(path):
        assert os.stat(path / name).st_mode & 0o777 == file_mode, name


def _project(path):
    (path / "data").mkdir(parents=True)
    (path / "thesis.tex").write_text("\\documentclass{article}")
    (path / "data" / "a.csv").write_text("x\n1\n")
    return path


def test_overwrite_never_deletes_a_folder_that_is_not_a_model(tmp_path):
    project = _project(tmp_path / "project")
    with pytest.raises(OutputDirError, match=r"delete its 2 file\(s\): thesis\.tex, data/a\.csv"):
        save_pretrained(_model(), project, overwrite=True)
    assert (project / "thesis.tex").read_text() == "\\documentclass{article}" and (project / "data" / "a.csv").exists()


def test_overwrite_keeps_files_the_user_added_to_a_model_directory(saved):
    (saved / "notes.txt").write_text("my notes")
    with pytest.raises(OutputDirError, match=r"notes\.txt"):
        save_pretrained(_model(1), saved, overwrite=True)
    assert (saved / "notes.txt").read_text() == "my notes"
    (saved / "notes.txt").unlink()
    save_pretrained(_model(1), saved, overwrite=True)  # a model directory with only its own files: replaced


def test_overwriting_the_working_directory_is_one_clear_error(saved, monkeypatch):
    monkeypatch.chdir(saved)
    with pytest.raises(OutputDirError, match="current working directory"):
        save_pretrained(_model(1), ".", overwrite=True)
    assert load_pretrained_dir(saved).num_classes == 10  # untouched


def _full_disk_save_file(state, filename, metadata=None):
    # What safetensors does on a full disk: part of the file is written, then it raises this error
    # (the message is the one a 64 kB tmpfs gives).
    with open(filename, "wb") as fh:
        fh.write(b"\0" * 100)
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_a_full_disk_is_one_clear_error_and_changes_nothing(saved, monkeypatch):
    monkeypatch.setattr(serialization, "save_file", _full_disk_save_file)
    with pytest.raises(OSError, match="No space left on device; free some space") as info:
        save_pretrained(_model(1), saved, overwrite=True)
    assert info.value.errno == errno.ENOSPC and "previous model there is intact" in str(info.value)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["m"]  # no staging directory left
    same = load_pretrained_dir(saved).state_dict()["fc1.weight"]
    torch.testing.assert_close(same, _model().state_dict()["fc1.weight"])


def test_a_full_disk_while_writing_the_config(tmp_path, monkeypatch):
    def no_space(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(serialization, "_write_text", no_space)
    with pytest.raises(OSError, match=r"No space left on device; free some space .* no directory was created"):
        save_pretrained(_model(), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_a_writer_that_fails_silently_is_caught(tmp_path, monkeypatch):
    real = serialization.save_file

    def short_write(state, filename, metadata=None):
        real(state, filename, metadata=metadata)
        with open(filename, "r+b") as fh:
            fh.truncate(os.path.getsize(filename) - 10)  # as if the last block never reached the disk

    monkeypatch.setattr(serialization, "save_file", short_write)
    with pytest.raises(OSError, match="not written completely"):
        save_pretrained(_model(), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_never_run(tmp_path, capsys):
    from vipann.cli.main import main

    path = tmp_path / "Cnn14_mAP=0.431.pth"
    torch.save({"model": _model().state_dict(), "payload": _Evil(tmp_path / "pwned")}, path)
    with pytest.raises(CheckpointError, match=r"unsupported GLOBAL .*system.*never unpickles"):
        read_torch_checkpoint(path)
    assert main(["convert", "auto", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "never unpickles" in capsys.readouterr().err
    with pytest.raises(CheckpointError):
        vipann.AudioTagging(checkpoint_path=path, device="cpu")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out").exists()


def test_a_damaged_pth_is_one_clear_error(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(os.urandom(3000))
    with pytest.raises(CheckpointError) as info:
        read_torch_checkpoint(path)
    assert "\n" not in str(info.value) and "weights_only=False" not in str(info.value)
