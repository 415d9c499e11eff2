"""Recipe output folders: resume only with the run's settings, start over only when asked, no stranger's folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _make_datasets import make_esc50

from vipann.recipes.compare import CompareConfig, run_compare
from vipann.recipes.transfer import TransferConfig, run_transfer
from vipann.utils.outdirs import MARKER, OutputDirError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return make_esc50(root, clips_per_class_per_fold=2, classes=[0, 1], folds=(1, 2), seconds=0.5, seed=0)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))


def _config(esc50, out, **kwargs):
    base = dict(
        dataset="esc50",
        data_root=str(esc50),
        out=str(out),
        model="det-tiny",
        strategies=["det"],
        stages=["fixed"],
        folds=[1],
        clip_seconds=0.5,
        fixed_epochs=1,
        finetune_epochs=0,
        batch_size=4,
        num_samples=1,
        replications=1,
        feature_draws=1,
        progress=False,
        plots=False,
        device="cpu",
    )
    base.update(kwargs)
    return TransferConfig(**base)


@pytest.fixture
def finished(esc50, tmp_path):
    out = tmp_path / "run"
    run_transfer(_config(esc50, out))
    return out


def test_resume_with_changed_settings_is_refused_listing_them(esc50, finished):
    before = (finished / "config.yaml").read_text()
    metrics = (finished / "det" / "fold1" / "fixed" / "metrics.json").read_text()
    with pytest.raises(ValueError, match="other settings") as info:
        run_transfer(_config(esc50, finished, resume=True, fixed_epochs=50, lr=0.5, seed=999))
    message = str(info.value)
    for line in ("fixed_epochs: 1 in the run, 50 now", "lr: 0.001 in the run, 0.5 now", "seed: 0 in the run, 999 now"):
        assert line in message
    assert "--overwrite" in message
    assert (finished / "config.yaml").read_text() == before  # nothing rewritten next to the old results
    assert (finished / "det" / "fold1" / "fixed" / "metrics.json").read_text() == metrics


def test_resume_with_the_same_settings_skips_finished_work(esc50, finished):
    stamp = (finished / "det" / "fold1" / "fixed" / "model.safetensors").stat().st_mtime_ns
    results = run_transfer(_config(esc50, finished, resume=True, progress=True, plots=True))  # run-only settings
    assert len(results["det"]["fixed"]) == 1
    assert (finished / "det" / "fold1" / "fixed" / "model.safetensors").stat().st_mtime_ns == stamp
    assert yaml.safe_load((finished / "config.yaml").read_text())["progress"] is True


def test_a_previous_run_is_neither_mixed_nor_deleted_without_a_flag(esc50, finished):
    with pytest.raises(OutputDirError, match=r"holds a previous transfer run .* --resume .* --overwrite"):
        run_transfer(_config(esc50, finished, seed=3))
    with pytest.raises(ValueError, match="exclude each other"):
        _config(esc50, finished, resume=True, overwrite=True)


def test_overwrite_starts_over(esc50, finished):
    (finished / "det" / "fold1" / "stale.txt").write_text("from the previous run")
    run_transfer(_config(esc50, finished, overwrite=True, seed=3))
    assert not (finished / "det" / "fold1" / "stale.txt").exists()
    assert yaml.safe_load((finished / "config.yaml").read_text())["seed"] == 3
    assert json.loads((finished / MARKER).read_text())["command"] == "transfer"


def test_a_stranger_folder_is_never_written(esc50, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "thesis.tex").write_text("text")
    for kwargs in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(OutputDirError, match=r"thesis\.tex"):
            run_transfer(_config(esc50, project, **kwargs))
    assert sorted(p.name for p in project.iterdir()) == ["thesis.tex"]
    with pytest.raises(OutputDirError, match=r"thesis\.tex"):
        run_compare(CompareConfig(out=str(project), progress=False))


def test_a_corrupted_stage_weights_file_stops_a_resume(esc50, tmp_path):
    out = tmp_path / "run"
    run_transfer(_config(esc50, out, stages=["fixed", "finetuned"], finetune_epochs=1))
    weights = out / "det" / "fold1" / "fixed" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-50] ^= 0x10
    weights.write_bytes(bytes(data))
    import shutil

    shutil.rmtree(out / "det" / "fold1" / "finetuned")  # the next stage must start from the damaged weights
    with pytest.raises(ValueError, match="does not match the checksum"):
        run_transfer(_config(esc50, out, stages=["fixed", "finetuned"], finetune_epochs=1, resume=True))


def _script(args, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "finetune" / "finetune.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_recipe_scripts_report_library_errors_in_one_line(tmp_path):
    args = ["--dataset", "esc50", "--data-root", str(tmp_path / "nowhere"), "--model", "det-tiny"]
    args += ["--out", str(tmp_path / "o")]
    result = _script(args, {"VIPANN_DEBUG": "0"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("finetune.py: error: esc50:") and "nowhere" in last
    debug = _script(args, {"VIPANN_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategies: [flip\n")
    result = _script(["--config", str(bad), "--data-root", "x", "--out", str(tmp_path / "p")], {"VIPANN_DEBUG": "0"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"config file {bad} is not valid YAML at line" in result.stderr


def test_pretraining_may_be_resumed_for_more_steps_only(tmp_path):
    from vipann.recipes.config import save_config, settings_differences
    from vipann.recipes.pretrain import PretrainConfig

    save_config(PretrainConfig(train="a.h5", steps=3), tmp_path / "config.yaml")
    assert settings_differences(PretrainConfig(train="a.h5", steps=6, progress=False), tmp_path / "config.yaml") == []
    assert settings_differences(PretrainConfig(train="a.h5", steps=2), tmp_path / "config.yaml") == [
        "steps: 3 in the run, 2 now"
    ]
    assert settings_differences(PretrainConfig(train="a.h5", steps=3, lr=0.1), tmp_path / "config.yaml") == [
        "lr: 0.001 in the run, 0.1 now"
    ]
