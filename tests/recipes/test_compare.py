"""`vipann compare`: every calibration method on the same data, and its table."""

import csv
import json
import math
from pathlib import Path

import pytest
from _make_datasets import make_esc50

from vipann.cli import main
from vipann.recipes import compare
from vipann.recipes.compare import COLUMNS, METHODS, CompareConfig, comparison_rows, transfer_config, write_comparison
from vipann.recipes.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "finetune" / "configs"
SIX = ["accuracy", "ECE", "OOD AUROC", "OOD AUPR", "NLL", "Brier"]
EPISTEMIC = {"mc-dropout", "ensemble", "flip", "detflip", "laplace", "laplace-head", "ivon"}
COSTS = ["train s", "post-hoc s", "ms / clip", "extra MB"]


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return make_esc50(root, clips_per_class_per_fold=2, classes=[0, 1, 2], folds=(1, 2, 3), seconds=1.0, seed=0)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))


def test_compare_end_to_end_writes_every_method_and_metric(esc50, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--dataset", "esc50", "--data-root", str(esc50), "--ood-root", str(esc50 / "audio")]
    args += ["--model", "det-tiny", "--folds", "1", "--clip-seconds", "1", "--fixed-epochs", "1", "--batch-size", "4"]
    args += ["--feature-draws", "1", "--num-samples", "2", "--replications", "1", "--ensemble-members", "2"]
    args += ["--val-fraction", "0.25", "--sngp-features", "16", "--no-progress", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| Temperature scaling |" in printed

    with (out / "comparison.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == list(METHODS)
    for column in SIX:
        assert f"{column}_mean" in rows[0] and f"{column}_std" in rows[0]
    for row in rows:
        assert row["folds"] == "1"
        for column in SIX:
            value = float(row[f"{column}_mean"])
            assert math.isfinite(value) and value >= 0, (row["method"], column)
        assert 0 <= float(row["accuracy_mean"]) <= 1 and float(row["OOD AUROC_mean"]) <= 1
        has_epistemic = row["OOD AUROC (epistemic)_mean"] != ""
        assert has_epistemic == (row["method"] in EPISTEMIC), row["method"]
    by = {r["method"]: r for r in rows}
    assert by["ensemble"]["samples"] == "2" and by["mc-dropout"]["samples"] == "2" and by["base"]["samples"] == "1"
    # Temperature scaling is the base networks with T: same accuracy, the calibrated file's numbers.
    assert by["temperature"]["accuracy_mean"] == by["base"]["accuracy_mean"]
    scaled = json.loads((out / "methods/base/det/fold1/fixed/calibrated/metrics.json").read_text())
    assert float(by["temperature"]["NLL_mean"]) == pytest.approx(scaled["NLL"])
    focal = json.loads((out / "methods/focal/det/fold1/fixed/metrics.json").read_text())
    assert float(by["focal"]["ECE_mean"]) == pytest.approx(focal["ECE"])
    assert (out / "methods/ensemble/det/fold1/fixed/ensemble.json").is_file()
    # The Laplace rows are the base networks made Bayesian post hoc: no training of their own.
    for name, variant in (("laplace", "last_layer-kron"), ("laplace-head", "head-kron")):
        folder = out / f"methods/base/det/fold1/fixed/laplace-{variant}"
        fitted = json.loads((folder / "metrics.json").read_text())
        info = json.loads((folder / "laplace.json").read_text())
        assert info["prior_precision"] > 0 and info["train_clips"] == 9 and info["posterior_mb"] > 0
        assert float(by[name]["NLL_mean"]) == pytest.approx(fitted["NLL"])
        assert float(by[name]["train s_mean"]) == pytest.approx(float(by["base"]["train s_mean"]))
        assert float(by[name]["post-hoc s_mean"]) > 0
        assert float(by[name]["extra MB_mean"]) == pytest.approx(info["posterior_mb"], rel=1e-6)
    assert not (out / "methods/laplace").exists()
    ivon = json.loads((out / "methods/ivon/det/fold1/fixed/metrics.json").read_text())
    assert float(by["ivon"]["Brier_mean"]) == pytest.approx(ivon["Brier"]) and float(by["ivon"]["extra MB_mean"]) > 0
    # Costs: every row has them; an ensemble of 2 adds one network, temperature scaling nothing.
    for row in rows:
        for column in COSTS:
            assert math.isfinite(float(row[f"{column}_mean"])), (row["method"], column)
    assert float(by["temperature"]["extra MB_mean"]) == 0 and float(by["temperature"]["post-hoc s_mean"]) > 0
    base_mb = json.loads((out / "methods/base/det/fold1/fixed/metrics.json").read_text())["model_mb"]
    assert float(by["ensemble"]["extra MB_mean"]) == pytest.approx(base_mb, rel=1e-6)
    sngp = json.loads((out / "methods/sngp/det/fold1/fixed/metrics.json").read_text())
    assert float(by["sngp"]["Brier_mean"]) == pytest.approx(sngp["Brier"])
    # Every method trained on the same clips: the same validation split everywhere.
    for name in ("base", "mc-dropout", "flip"):
        strategy = METHODS[name].strategy
        info = json.loads((out / f"methods/{name}/{strategy}/fold1/fixed/temperature.json").read_text())
        assert info["val_clips"] == 3 and info["test_clips"] == 6

    markdown = (out / "comparison.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(METHODS)
    for column in SIX + COSTS:
        assert f" {column} " in table[0]
    stored = json.loads((out / "comparison.json").read_text())
    assert [r["method"] for r in stored["rows"]] == list(METHODS) and stored["metric"] == "accuracy"
    assert not list(out.glob(".*.tmp"))  # written atomically, nothing left behind


def test_mean_and_std_over_folds_and_multilabel(tmp_path):
    for fold, (acc, ece) in enumerate([(0.5, 0.1), (0.7, 0.3)], start=1):
        for name in ("base", "mc-dropout"):
            stage = tmp_path / "methods" / name / METHODS[name].strategy / f"fold{fold}" / "fixed"
            stage.mkdir(parents=True)
            samples = 1 if name == "base" else 4
            metrics = {"accuracy": acc, "ECE": ece, "NLL": 1.0, "Brier": 0.5, "samples": samples}
            metrics |= {"ood_auroc_entropy": 0.6, "ood_aupr_entropy": 0.7, "ood_auroc_epistemic": 0.8}
            (stage / "metrics.json").write_text(json.dumps(metrics))
    rows = comparison_rows(tmp_path, ["base", "mc-dropout", "flip"])
    base, mc, flip = rows
    assert base["folds"] == 2 and base["accuracy_mean"] == pytest.approx(0.6)
    assert base["accuracy_std"] == pytest.approx(0.1414213, rel=1e-5) and base["ECE_mean"] == pytest.approx(0.2)
    assert base["OOD AUROC (epistemic)_mean"] is None  # one sample: no epistemic part
    assert mc["OOD AUROC (epistemic)_mean"] == pytest.approx(0.8) and mc["OOD AUPR (epistemic)_mean"] is None
    assert flip["folds"] == 0 and flip["accuracy_mean"] is None  # not run: empty cells
    written = write_comparison(tmp_path, rows, "t", ["note"])
    assert "| MC dropout | 0.600 ± 0.141 |" in written["md"].read_text()
    assert "| Flip (VI) | – |" in written["md"].read_text()

    stage = tmp_path / "ml" / "methods" / "base" / "det" / "fold1" / "fixed"
    stage.mkdir(parents=True)
    (stage / "metrics.json").write_text(json.dumps({"mAP": 0.4, "ECE": 0.1, "samples": 1}))
    (row,) = comparison_rows(tmp_path / "ml", ["base"])
    assert row["metric"] == "mAP" and row["accuracy_mean"] == pytest.approx(0.4)
    written = write_comparison(tmp_path / "ml", [row], "t", [])
    assert written["csv"].read_text().startswith("method,label,strategy,folds,samples,mAP_mean,mAP_std,ECE_mean")


def test_methods_map_to_their_training_runs(tmp_path):
    config = CompareConfig(out=str(tmp_path), ensemble_members=4, focal_gamma=3.0, stage="finetuned")
    data = {"dataset": "esc50", "data_root": "x", "ood_root": "", "model": "det-tiny", "folds": [1], "clip_seconds": 1}
    runs = compare._runs(config)
    assert "temperature" not in runs and "base" in runs  # temperature scaling reuses the base networks
    settings = {name: transfer_config(config, method, data) for name, method in runs.items()}
    assert settings["ensemble"].ensemble_members == 4 and settings["base"].ensemble_members == 1
    assert settings["focal"].loss == "focal" and settings["focal"].focal_gamma == 3.0
    assert settings["sngp"].head == "sngp" and settings["mc-dropout"].strategies == ["drop"]
    assert {s.stages == ["fixed", "finetuned"] for s in settings.values()} == {True}
    assert {s.val_fraction for s in settings.values()} == {0.2}  # one validation split for all
    only_ts = compare._runs(CompareConfig(methods=["temperature"]))
    assert list(only_ts) == ["base"]
    # The post-hoc Laplace methods are evaluated on the base run; IVON is its own run.
    assert settings["base"].laplace == ["last_layer-kron", "head-kron"] and "laplace" not in runs
    assert settings["ivon"].optimizer == "ivon" and settings["ivon"].laplace == []
    only_laplace = CompareConfig(methods=["laplace"])
    assert list(compare._runs(only_laplace)) == ["base"]
    assert transfer_config(only_laplace, METHODS["base"], data).laplace == ["last_layer-kron"]


def test_demo_data_and_defaults(monkeypatch, tmp_path):
    assert load_config(CompareConfig, CONFIGS / "compare-demo.yaml") == CompareConfig()
    esc = load_config(CompareConfig, CONFIGS / "compare-esc50.yaml", {"data_root": "x"})
    assert esc.dataset == "esc50" and esc.ensemble_members == 5 and esc.fixed_epochs == 200
    data = compare._demo_data(CompareConfig(demo_clips_per_class=2, demo_ood_clips=2))
    assert data["dataset"] == "synthetic_downstream" and data["model"] == "det-demo" and data["folds"] == [1, 2]
    assert (tmp_path / "cache" / "synthetic").is_dir() and data["data_root"].startswith(str(tmp_path))
    assert len(list((tmp_path / "cache" / "synthetic").glob("ood-*/*.wav"))) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "esc50"], "--dataset esc50 needs --data-root DIR"),
        (["--data-root", "somewhere"], "--data-root needs --dataset"),
        (["--dataset", "esc-50", "--data-root", "x"], "unknown dataset 'esc-50'"),
        (["--methods", "base,bayes"], "unknown methods \\['bayes'\\]; choose from"),
        (["--stage", "both"], "stage must be one of \\['fixed', 'finetuned'\\]"),
        (["--ensemble-members", "1"], "a deep ensemble needs ensemble_members >= 2"),
        (["--val-fraction", "0"], "val_fraction must be in \\(0, 1\\) to fit temperatures"),
        (["--fixed-epochs", "many"], "setting fixed_epochs='many'"),
        (["--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
    ],
)
def test_cli_argument_errors_are_clear(args, message, capsys):
    import re

    assert main(["compare", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vipann compare: error:") and re.search(message, err), err


def test_every_column_is_documented():
    assert [c for c, _, _ in COLUMNS][:6] == SIX
    assert CompareConfig(methods=["base", "flip"], val_fraction=0.0).val_fraction == 0.0  # no T without the method
