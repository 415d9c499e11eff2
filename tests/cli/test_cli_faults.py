"""The vipann command under bad input and faults: per-file errors, refused arguments, one-line errors, no loss."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vipann.cli.main import main


@pytest.fixture
def wavs(tmp_path):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "ok.wav", 0.1 * rng.standard_normal(16000), 16000)
    sf.write(tmp_path / "other.wav", 0.1 * rng.standard_normal(24000), 16000)
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype="float32"), 16000)
    return tmp_path


def _project(path):
    (path / "data").mkdir(parents=True)
    (path / "thesis.tex").write_text("\\documentclass{article}")
    (path / "data" / "a.csv").write_text("x\n1\n")
    return path


def test_predict_goes_on_past_bad_files(wavs, capsys):
    files = [wavs / "ok.wav", wavs / "missing.wav", wavs / "empty.wav", wavs / "other.wav"]
    assert main(["predict", *map(str, files), "-m", "det-demo", "--json"]) == 1
    captured = capsys.readouterr()
    rows = json.loads(captured.out)  # stdout is complete JSON
    assert [Path(r["file"]).name for r in rows] == ["ok.wav", "other.wav"]
    errors = [line for line in captured.err.splitlines() if ": error: " in line]
    assert len(errors) == 2
    assert "missing.wav" in errors[0] and "no such file" in errors[0]
    assert "empty.wav" in errors[1] and "no samples" in errors[1]
    assert "2 of 4 file(s) failed" in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "0"], "must be >= 1, got 0"),
        (["--top-k", "0"], "must be >= 1, got 0"),
        (["--top-k", "-1"], "must be >= 1, got -1"),
        (["-n", "two"], "expected a whole number"),
    ],
)
def test_predict_refuses_counts_below_one(wavs, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        main(["predict", str(wavs / "ok.wav"), "-m", "det-demo", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line(wavs, capsys):
    assert main(["predict", str(wavs / "ok.wav"), "-m", "det-demo", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err and "--device cpu" in err


def test_retention_on_a_file_that_is_not_safetensors(tmp_path, capsys):
    bad = tmp_path / "predictions.safetensors"
    bad.write_bytes(os.urandom(200))
    assert main(["retention", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a safetensors file" in err
    assert not (tmp_path / "r").exists()


def test_convert_a_missing_checkpoint_says_where_it_is_published(tmp_path, capsys):
    assert main(["convert", "auto", str(tmp_path / "Cnn14_mAP=0.431.pth")]) == 2
    err = capsys.readouterr().err
    assert (
        "does not exist" in err
        and "https://zenodo.org/records/3987831/files/Cnn14_mAP%3D0.431.pth" in err
        and "det-cnn14" in err
    )
    assert main(["convert", "auto", str(tmp_path / "missing.pth")]) == 2
    err = capsys.readouterr().err
    assert "Zenodo record 3987831" in err and "VI-PANN" in err


@pytest.fixture
def checkpoint(tmp_path):
    from _golden import load_keys, seeded_state_dict

    from vipann.models.frontend import FrontendConfig

    name, keys = load_keys("cnn6")
    path = tmp_path / "Cnn6_mAP=0.343.pth"
    torch.save({"iteration": 1, "model": seeded_state_dict(keys, name, frontend=FrontendConfig())}, path)
    return path


def test_convert_overwrite_never_deletes_a_project(checkpoint, tmp_path, capsys):
    project = _project(tmp_path / "project")
    assert main(["convert", "auto", str(checkpoint), "--out", str(project), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "refusing to replace" in err and "thesis.tex" in err and "data/a.csv" in err
    assert (project / "thesis.tex").is_file() and (project / "data" / "a.csv").is_file()


def test_convert_out_dot_overwrite_is_one_clear_line(checkpoint, tmp_path, capsys, monkeypatch):
    out = tmp_path / "det-cnn6"
    assert main(["convert", "auto", str(checkpoint), "--out", str(out)]) == 0
    monkeypatch.chdir(out)
    assert main(["convert", "auto", str(checkpoint), "--out", ".", "--overwrite"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "current working directory" in err and "Errno" not in err


def test_convert_on_a_full_disk_is_one_clear_line(checkpoint, tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    from vipann.zoo import serialization

    def full_disk(state, filename, metadata=None):  # what safetensors raises when the disk fills up
        with open(filename, "wb") as fh:
            fh.write(b"\0" * 100)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(serialization, "save_file", full_disk)
    assert main(["convert", "auto", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device; free some space" in err[0] and "Traceback" not in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Cnn6_mAP=0.343.pth"]


def test_output_directories_of_other_commands_are_refused(tmp_path, capsys):
    project = _project(tmp_path / "project")
    assert main(["demo", "--out", str(project), "--quick"]) == 2
    assert "thesis.tex" in capsys.readouterr().err
    assert main(["compare", "--out", str(project), "--no-progress"]) == 2
    assert "thesis.tex" in capsys.readouterr().err
    preds = tmp_path / "predictions.safetensors"
    from safetensors.torch import save_file

    save_file({"probs": torch.full((1, 2, 4, 3), 1 / 3), "targets": torch.tensor([0, 1, 2, 0])}, str(preds))
    assert main(["retention", str(preds), "--out", str(project)]) == 2
    assert "thesis.tex" in capsys.readouterr().err
    assert sorted(p.name for p in project.rglob("*")) == ["a.csv", "data", "thesis.tex"]


def test_malformed_yaml_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\nmethods: [base, focal\nseed: 3\n")
    assert main(["compare", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not valid YAML at line" in err and "<unicode string>" not in err


def test_vipann_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "VIPANN_DEBUG": "1"}
    code = "import sys; from vipann.cli.main import main; sys.exit(main(['convert', 'auto', 'missing.pth']))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr and "FileNotFoundError" in result.stderr
