"""The FixMatch / FMUC recipe end to end on a miniature ESC-50 with the tiny models (seconds per run)."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from _make_datasets import make_esc50, make_urbansound8k
from safetensors.torch import load_file

from vipann.calibration import PseudoLabelRule
from vipann.recipes import _fixmatch_train, fixmatch
from vipann.recipes.config import load_config
from vipann.recipes.fixmatch import FixMatchConfig, run_fixmatch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "finetune" / "fixmatch.py"
RUN_FILES = {"epochs.csv", "metrics.json", "retention.csv", "predictions.safetensors", "model.safetensors"}


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return make_esc50(root, clips_per_class_per_fold=2, classes=[0, 1, 2], folds=(1, 2, 3), seconds=1.0, seed=0)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))


def _config(esc50, out, **kwargs):
    base = dict(
        dataset="esc50",
        data_root=str(esc50),
        out=str(out),
        model="drop-tiny",
        methods=["fmuc", "fm"],
        folds=[1],
        repetitions=1,
        clip_seconds=1.0,
        labelled_per_class=1,  # 3 labelled + 9 unlabelled training clips per test fold
        epochs=1,
        iterations_per_epoch=2,
        batch_size=2,
        mu=2,
        num_samples=2,
        progress=False,
        plots=False,
        device="cpu",
    )
    base.update(kwargs)
    return FixMatchConfig(**base)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _spy_select(monkeypatch, force=None):
    seen = []
    real = PseudoLabelRule.select

    def select(self, logits):
        mask, labels = real(self, logits)
        seen.append((tuple(logits.shape), self))
        return force(mask, labels) if force else (mask, labels)

    monkeypatch.setattr(PseudoLabelRule, "select", select)
    return seen


def test_one_epoch_of_fm_fmuc_and_the_baselines_writes_every_output(esc50, tmp_path, monkeypatch):
    seen = _spy_select(monkeypatch)
    out = tmp_path / "run"
    methods = ["fmuc", "fm", "supervised", "labelled-only"]
    results = run_fixmatch(_config(esc50, out, methods=methods, plots=True))
    # FMUC: 5 MC-dropout passes over the mu * B = 4 weak views; FM: one pass; 2 steps each
    assert [(shape, rule.mc) for shape, rule in seen] == [((5, 4, 50), True)] * 2 + [((1, 4, 50), False)] * 2
    assert set(results) == set(methods)
    split = json.loads((out / "fold1" / "rep0" / "split.json").read_text())
    assert len(split["labelled"]) == 3 and len(split["unlabelled"]) == 9
    assert not set(split["labelled"]) & set(split["unlabelled"])
    assert sorted(int(c.rsplit("-", 1)[1][:-4]) for c in split["labelled"]) == [0, 1, 2]  # one per class
    for method in methods:
        run = out / method / "fold1" / "rep0"
        assert {p.name for p in run.iterdir()} >= RUN_FILES, method
        metrics = json.loads((run / "metrics.json").read_text())
        assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["unlabelled_accuracy"] <= 1.0
        (row,) = _rows(run / "epochs.csv")
        semi = method in ("fmuc", "fm")
        assert int(row["candidates"]) == (2 * 4 if semi else 0)
        assert metrics["labelled_clips"] == (12 if method == "supervised" else 3)
        assert metrics["unlabelled_clips"] == (9 if semi else 0)
        assert ("pseudo_label_quantity" in metrics) == semi
        if semi:
            assert metrics["pseudo_label_quantity"] == int(row["selected"]) / 8
    for name in ("pseudo_labels.csv", "pseudo_labels.png", "table1.md", "table1.csv", "table2.md", "table2.csv"):
        assert (out / name).is_file(), name
    table2 = {r["method"]: r for r in _rows(out / "table2.csv")}
    assert list(table2) == methods
    for method in methods:
        metrics = json.loads((out / method / "fold1" / "rep0" / "metrics.json").read_text())
        assert float(table2[method]["test_accuracy_mean"]) == pytest.approx(metrics["accuracy"])
    assert table2["supervised"]["unlabelled_accuracy_mean"] == "nan"  # trained on those labels: "–"
    md = (out / "table2.md").read_text()
    assert "| FMUC | FM | Fully supervised | Labelled only |" in md and "esc50 unlabelled | " in md
    assert [r["method"] for r in _rows(out / "table1.csv")] == ["fmuc", "fm"]
    assert len(_rows(out / "pseudo_labels.csv")) == 2  # one epoch of each semi-supervised method


def test_quality_and_quantity_equal_a_direct_count(esc50, tmp_path, monkeypatch):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(3):  # extra clips without truth: counted in the quantity, never in the quality
        sf.write(folder / f"u{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(16000), 16000)
    _spy_select(monkeypatch, force=lambda mask, labels: (torch.ones_like(mask), torch.zeros_like(labels)))
    out = tmp_path / "run"
    # mu * B = 12 = the 9 hidden clips + 3 folder clips: each step sees every pool clip exactly once
    run_fixmatch(_config(esc50, out, methods=["fm"], batch_size=3, mu=4, epochs=2, unlabelled_root=str(folder)))
    split = json.loads((out / "fold1" / "rep0" / "split.json").read_text())
    hidden = [int(c.rsplit("-", 1)[1][:-4]) for c in split["unlabelled"]]
    class0 = sum(t == 0 for t in hidden)  # every pseudo-label is class 0
    for row in _rows(out / "fm" / "fold1" / "rep0" / "epochs.csv"):
        assert (int(row["candidates"]), int(row["selected"]), int(row["scored"])) == (24, 24, 18)
        assert int(row["correct"]) == 2 * class0
        assert float(row["quantity"]) == 1.0 and float(row["quality"]) == pytest.approx(class0 / 9)
    (table1,) = _rows(out / "table1.csv")
    assert float(table1["quality"]) == pytest.approx(class0 / 9) and float(table1["quantity"]) == 1.0
    metrics = json.loads((out / "fm" / "fold1" / "rep0" / "metrics.json").read_text())
    assert metrics["unlabelled_clips"] == 12


def test_resume_after_a_kill_equals_an_uninterrupted_run(esc50, tmp_path, monkeypatch):
    kwargs = dict(methods=["fmuc"], epochs=2, masking=True, mask_time_width=10, mask_freq_width=4)
    run_fixmatch(_config(esc50, tmp_path / "full", **kwargs))
    real_save = _fixmatch_train.save_state

    def dying_save(directory, state):
        real_save(directory, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(_fixmatch_train, "save_state", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run_fixmatch(_config(esc50, tmp_path / "killed", **kwargs))
    monkeypatch.setattr(_fixmatch_train, "save_state", real_save)
    assert len(_rows(tmp_path / "killed" / "fmuc" / "fold1" / "rep0" / "epochs.csv")) == 1
    run_fixmatch(_config(esc50, tmp_path / "killed", resume=True, **kwargs))
    a = load_file(str(tmp_path / "full" / "fmuc" / "fold1" / "rep0" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "fmuc" / "fold1" / "rep0" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    full = _rows(tmp_path / "full" / "fmuc" / "fold1" / "rep0" / "epochs.csv")
    assert full == _rows(tmp_path / "killed" / "fmuc" / "fold1" / "rep0" / "epochs.csv") and len(full) == 2
    ma = json.loads((tmp_path / "full" / "fmuc" / "fold1" / "rep0" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "killed" / "fmuc" / "fold1" / "rep0" / "metrics.json").read_text())
    timed = ("train_seconds", "posthoc_seconds", "predict_ms_per_clip")  # wall-clock costs, measured per run
    assert {k: v for k, v in ma.items() if k not in timed} == {k: v for k, v in mb.items() if k not in timed}
    # a finished run is not trained again
    monkeypatch.setattr(fixmatch, "train_run", lambda *a, **k: pytest.fail("retrained a finished run"))
    again = run_fixmatch(_config(esc50, tmp_path / "killed", resume=True, **kwargs))
    assert again["fmuc"] == [mb]
    with pytest.raises(ValueError, match=r"other settings \(labelled_per_class: 1 in the run, 2 now\)"):
        run_fixmatch(_config(esc50, tmp_path / "killed", resume=True, **{**kwargs, "labelled_per_class": 2}))


def test_output_folder_is_claimed(esc50, tmp_path):
    from vipann.utils.outdirs import OutputDirError

    project = tmp_path / "project"
    project.mkdir()
    (project / "thesis.tex").write_text("mine")
    with pytest.raises(OutputDirError, match=r"thesis\.tex"):
        run_fixmatch(_config(esc50, project, methods=["fm"]))
    assert sorted(p.name for p in project.iterdir()) == ["thesis.tex"]
    out = tmp_path / "run"
    run_fixmatch(_config(esc50, out, methods=["fm"]))
    with pytest.raises(OutputDirError, match=r"--resume.*--overwrite"):
        run_fixmatch(_config(esc50, out, methods=["fm"]))
    (out / "fm" / "marker.txt").write_text("stale")
    run_fixmatch(_config(esc50, out, methods=["fm"], overwrite=True))
    assert not (out / "fm" / "marker.txt").exists() and (out / "table2.md").is_file()


def test_joint_weak_pass_and_a_flipout_network(esc50, tmp_path, monkeypatch):
    from vipann.models.pann import PANN

    seen = _spy_select(monkeypatch)
    sizes = []
    real_run = PANN.run_stages
    monkeypatch.setattr(PANN, "run_stages", lambda self, x, *a: sizes.append(len(x)) or real_run(self, x, *a))
    run_fixmatch(_config(esc50, tmp_path / "joint", methods=["fmuc"], weak_pass="joint", mc_passes=3))
    # one training forward per step: B labelled weak views + 3 copies of the mu B weak views + mu B strong views
    assert sizes[:2] == [2 + 3 * 4 + 4] * 2 and [s for s, _ in seen] == [(3, 4, 50)] * 2
    seen.clear()
    run_fixmatch(_config(esc50, tmp_path / "flip", methods=["fmuc"], model="flip-tiny", strategy="flip"))
    assert [s for s, _ in seen] == [(5, 4, 50)] * 2  # MC passes are Flipout draws
    (row,) = _rows(tmp_path / "flip" / "fmuc" / "fold1" / "rep0" / "epochs.csv")
    assert float(row["kl"]) > 0  # the ELBO's KL of the Flipout layers is part of the loss


def test_another_dataset_layout(tmp_path):
    root = make_urbansound8k(tmp_path, clips_per_class_per_fold=3, classes=[0, 1], folds=(1, 2), seed=0)
    out = tmp_path / "run"
    config = _config(root, out, dataset="urbansound8k", methods=["fm"], iterations_per_epoch=1, num_samples=1)
    results = run_fixmatch(config)
    split = json.loads((out / "fold1" / "rep0" / "split.json").read_text())
    assert len(split["labelled"]) == 2 and len(split["unlabelled"]) == 4  # fold 2: 3 clips of each class
    assert 0.0 <= results["fm"][0]["accuracy"] <= 1.0


def test_errors(esc50, tmp_path):
    with pytest.raises(ValueError, match="no unlabelled clip is left"):
        run_fixmatch(_config(esc50, tmp_path / "all", methods=["fm"], labelled_per_class=0, labelled_fraction=1.0))
    config = load_config(FixMatchConfig, ROOT / "finetune" / "configs" / "esc50-fixmatch.yaml", {"data_root": "x"})
    assert (config.batch_size, config.mu, config.iterations_per_epoch, config.lr) == (32, 7, 500, 1e-3)
    assert config.methods == ["fmuc", "fm", "supervised"] and config.strategy == "drop"
    table1 = load_config(
        FixMatchConfig, ROOT / "finetune" / "configs" / "esc50-fixmatch-table1.yaml", {"data_root": "x"}
    )
    assert len(table1.methods) == 8
    demo = load_config(FixMatchConfig, ROOT / "finetune" / "configs" / "demo-fixmatch.yaml", {"data_root": "x"})
    assert demo.dataset == "synthetic_downstream" and demo.labelled_fraction == 0.1


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_torchrun_two_processes(esc50, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    args = ["--data-root", str(esc50), "--model", "drop-tiny", "--methods", "fmuc,supervised", "--folds", "1"]
    args += ["--repetitions", "1", "--clip-seconds", "1", "--labelled-per-class", "1", "--epochs", "1"]
    args += ["--iterations-per-epoch", "2", "--batch-size", "2", "--mu", "2", "--num-samples", "2"]
    args += ["--no-progress", "--no-plots", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    multi = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(SCRIPT), *args, "--out", str(tmp_path / "two")],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    out = tmp_path / "two"
    (row,) = _rows(out / "fmuc" / "fold1" / "rep0" / "epochs.csv")
    assert int(row["candidates"]) == 2 * 2 * 4  # 2 steps x 2 processes x mu B, summed over the processes
    assert {p.name for p in (out / "supervised" / "fold1" / "rep0").iterdir()} >= RUN_FILES
    assert (out / "log.rank1.txt").is_file() and "Table II" in multi.stdout
