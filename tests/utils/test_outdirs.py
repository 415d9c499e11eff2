"""Output directories: only new, empty or vipann's own are written, cleared or replaced."""

import json
import os

import pytest

from vipann.utils.outdirs import (
    MARKER,
    OutputDirError,
    check_replaceable,
    claim_output_dir,
    clear_output_dir,
    output_owner,
)


def _project(path):
    (path / "data").mkdir(parents=True)
    (path / "thesis.tex").write_text("\\documentclass{article}")
    (path / "data" / "a.csv").write_text("x\n1\n")
    return path


def test_claim_new_and_empty_directories(tmp_path):
    out = claim_output_dir(tmp_path / "new" / "run", "demo")
    assert output_owner(out) == "demo"
    assert json.loads((out / MARKER).read_text())["command"] == "demo"
    (tmp_path / "empty").mkdir()
    assert output_owner(claim_output_dir(tmp_path / "empty", "compare")) == "compare"


def test_claim_refuses_a_foreign_folder_naming_its_files(tmp_path):
    project = _project(tmp_path / "project")
    for clear in (False, True):
        with pytest.raises(OutputDirError, match=r"thesis\.tex") as info:
            claim_output_dir(project, "demo", clear=clear)
        assert "data/a.csv" in str(info.value) and "2 file(s)" in str(info.value)
    assert (project / "thesis.tex").is_file() and (project / "data" / "a.csv").is_file()
    assert not (project / MARKER).exists()


def test_claim_refuses_another_commands_output(tmp_path):
    out = claim_output_dir(tmp_path / "o", "compare")
    (out / "comparison.md").write_text("table")
    with pytest.raises(OutputDirError, match="by `compare` for `demo`"):
        claim_output_dir(out, "demo", clear=True)
    assert (out / "comparison.md").is_file()


def test_clear_own_output_only(tmp_path):
    out = claim_output_dir(tmp_path / "o", "demo")
    (out / "sub").mkdir()
    (out / "sub" / "x.png").write_bytes(b"png")
    (out / "report.md").write_text("old report")
    claim_output_dir(out, "demo", clear=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER]
    with pytest.raises(OutputDirError, match="holds no"):
        clear_output_dir(_project(tmp_path / "project"))


def test_legacy_output_is_recognised_by_the_callers_test(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "checks.json").write_text("[]")
    claim_output_dir(old, "demo", clear=True, recognise=lambda d: (d / "checks.json").is_file())
    assert sorted(p.name for p in old.iterdir()) == [MARKER]


def test_check_replaceable(tmp_path):
    def model_dir(d):
        return (d / "config.json").is_file()

    own = {"config.json", "model.safetensors", "README.md"}
    kwargs = dict(recognise=model_dir, own_names=own, what="a vipann model directory")
    check_replaceable(tmp_path / "missing", **kwargs)
    project = _project(tmp_path / "project")
    with pytest.raises(OutputDirError, match=r"would delete its 2 file\(s\): thesis\.tex, data/a\.csv"):
        check_replaceable(project, **kwargs)
    model = tmp_path / "model"
    model.mkdir()
    for name in own:
        (model / name).write_text("{}")
    check_replaceable(model, **kwargs)
    (model / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match=r"notes\.txt"):
        check_replaceable(model, **kwargs)


def test_the_working_directory_is_never_replaced(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.chdir(model)
    with pytest.raises(OutputDirError, match="current working directory"):
        check_replaceable(".", recognise=lambda d: True, own_names={"config.json"}, what="a model")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with pytest.raises(OutputDirError, match="current working directory"):
        check_replaceable(os.getcwd(), recognise=lambda d: True, own_names=set(), what="a model")
