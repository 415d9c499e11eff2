"""The transfer recipe end to end on miniature datasets in the exact on-disk layouts, with the tiny model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _make_datasets import make_dcase2013, make_esc50, make_urbansound8k
from safetensors.torch import load_file

from vipann.recipes.config import load_config
from vipann.recipes.transfer import TransferConfig, backbone_name, run_transfer
from vipann.train import engine

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "finetune" / "finetune.py"
STAGE_FILES = {
    "metrics.json",
    "retention.csv",
    "retention.png",
    "reliability.png",
    "predictions.safetensors",
    "model.safetensors",
}


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
        model="flip-tiny",
        folds=[1, 2],
        clip_seconds=1.0,
        fixed_epochs=1,
        finetune_epochs=1,
        batch_size=4,
        num_samples=2,
        replications=2,
        feature_draws=2,
        progress=False,
        device="cpu",
    )
    base.update(kwargs)
    return TransferConfig(**base)


def test_every_strategy_two_folds_writes_every_output(esc50, tmp_path):
    out = tmp_path / "run"
    config = _config(
        esc50,
        out,
        strategies=["flip", "detflip", "drop", "det"],
        ood_root=str(esc50 / "audio"),
        export=True,
        fixed_epochs=2,
    )
    results = run_transfer(config)
    assert set(results) == {"flip", "detflip", "drop", "det"}
    for strategy in results:
        for stage in ("fixed", "finetuned"):
            assert len(results[strategy][stage]) == 2
            for fold in (1, 2):
                stage_dir = out / strategy / f"fold{fold}" / stage
                files = {p.name for p in stage_dir.iterdir()}
                assert STAGE_FILES | {"ood_boxplots.png", "export"} <= files, (strategy, stage, files)
                metrics = json.loads((stage_dir / "metrics.json").read_text())
                assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["NLL"] > 0
                if strategy == "det":  # no epistemic spread: not scored, and the run says why
                    assert "ood_auroc_epistemic" not in metrics and "ood_auroc_entropy" in metrics
                    assert "epistemic" in json.loads((stage_dir / "unscored_measures.json").read_text())
                else:
                    assert "ood_auroc_epistemic" in metrics
                preds = load_file(str(stage_dir / "predictions.safetensors"))
                runs = 1 if strategy == "det" else 2
                samples = 1 if strategy == "det" else 2
                assert preds["probs"].shape == (runs, samples, 6, 50)  # 2 clips x 3 classes in the fold; 50 outputs
    summary = (out / "summary.md").read_text()
    assert "| flip |" in summary and "| det |" in summary and "Fine-Tuned" in summary
    assert "fold,".lower() not in (out / "summary.csv").read_text().splitlines()[0]
    assert (out / "config.yaml").is_file()
    import vipann

    exported = vipann.from_pretrained(f"local-dir:{out / 'drop' / 'fold1' / 'finetuned' / 'export'}")
    assert exported.method == "drop" and exported.num_classes == 50
    assert exported.pretrained_cfg.labels[:3] == ("dog", "rooster", "pig")
    assert "accuracy" in exported.pretrained_cfg.metrics["esc50"]
    for strategy in results:  # every export loads as a model directory and holds the stage's weights
        for stage in ("fixed", "finetuned"):
            stage_dir = out / strategy / "fold2" / stage
            exported = vipann.from_pretrained(f"local-dir:{stage_dir / 'export'}")
            assert exported.method == strategy and exported.pretrained_source == f"local-dir:{stage_dir / 'export'}"
            trained = load_file(str(stage_dir / "model.safetensors"))
            state = exported.state_dict()
            assert set(state) == set(trained)
            for key, value in trained.items():
                torch.testing.assert_close(state[key], value, atol=0, rtol=0, msg=key)


def test_fixed_feature_stage_computes_the_backbone_once(esc50, tmp_path, monkeypatch):
    calls = []
    from vipann.train import transfer

    original = transfer.extract_features
    monkeypatch.setattr("vipann.recipes._stages.extract_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    run_transfer(_config(esc50, tmp_path / "run", strategies=["det"], folds=[1], fixed_epochs=5, finetune_epochs=0))
    assert calls == [1]  # one feature pass for 5 head epochs


def test_resume_after_a_kill_equals_an_uninterrupted_run(esc50, tmp_path, monkeypatch):
    kwargs = dict(strategies=["flip"], folds=[1], fixed_epochs=2, finetune_epochs=2)
    run_transfer(_config(esc50, tmp_path / "full", **kwargs))

    original_fit = engine.fit
    state = {"stage": 0}

    def dying_fit(*args, **kw):
        state["stage"] += 1
        if state["stage"] == 2:  # the fine-tuned stage dies after its first epoch

            def boom(result):
                if result.epoch == 1:
                    raise KeyboardInterrupt

            kw["on_epoch_end"] = boom
        return original_fit(*args, **kw)

    monkeypatch.setattr("vipann.recipes._stages.fit", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        run_transfer(_config(esc50, tmp_path / "killed", **kwargs))
    monkeypatch.setattr("vipann.recipes._stages.fit", original_fit)
    run_transfer(_config(esc50, tmp_path / "killed", resume=True, **kwargs))
    for stage in ("fixed", "finetuned"):
        a = load_file(str(tmp_path / "full" / "flip" / "fold1" / stage / "model.safetensors"))
        b = load_file(str(tmp_path / "killed" / "flip" / "fold1" / stage / "model.safetensors"))
        for key in a:
            torch.testing.assert_close(a[key], b[key], msg=key)
        ma = json.loads((tmp_path / "full" / "flip" / "fold1" / stage / "metrics.json").read_text())
        mb = json.loads((tmp_path / "killed" / "flip" / "fold1" / stage / "metrics.json").read_text())
        timed = ("train_seconds", "posthoc_seconds", "predict_ms_per_clip")  # wall-clock costs, measured per run
        assert {k: v for k, v in ma.items() if k not in timed} == pytest.approx(
            {k: v for k, v in mb.items() if k not in timed}
        )


@pytest.mark.parametrize("kind", ["urbansound8k", "dcase2013"])
def test_other_datasets(kind, tmp_path):
    if kind == "urbansound8k":
        root = make_urbansound8k(tmp_path, clips_per_class_per_fold=1, classes=[0, 1], folds=(1, 2), seed=0)
    else:
        root = make_dcase2013(tmp_path, clips_per_scene=5, seconds=1.0, with_setup=False, seed=0)
    out = tmp_path / "run"
    config = TransferConfig(
        dataset=kind,
        data_root=str(root),
        out=str(out),
        model="det-tiny",
        strategies=["det"],
        folds=[1],
        clip_seconds=1.0,
        fixed_epochs=1,
        finetune_epochs=1,
        batch_size=4,
        num_samples=1,
        replications=1,
        progress=False,
        device="cpu",
    )
    results = run_transfer(config)
    assert len(results["det"]["finetuned"]) == 1
    assert (out / "det" / "fold1" / "finetuned" / "metrics.json").is_file()


def test_config_file_and_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: esc50\nstrategies: [flip, det]\nfixed_epochs: 3\n")
    config = load_config(TransferConfig, cfg, {"data_root": "x", "fixed_epochs": "7", "folds": "1,2", "amp": None})
    assert config.fixed_epochs == 7 and config.strategies == ["flip", "det"] and config.folds == [1, 2]
    cfg.write_text("epochs: 3\n")
    with pytest.raises(ValueError, match="unknown settings \\['epochs'\\]"):
        load_config(TransferConfig, cfg, {"data_root": "x"})
    with pytest.raises(ValueError, match="unknown strategies"):
        TransferConfig(data_root="x", strategies=["bayes"])
    with pytest.raises(ValueError, match="data_root is required"):
        TransferConfig()
    assert backbone_name("flip-tiny", "detflip") == "det-tiny"
    assert backbone_name("", "flip") == "flip-resnet54"
    assert backbone_name("local-dir:/x", "drop") == "local-dir:/x"


def test_missing_clip_is_named(esc50, tmp_path):
    broken = tmp_path / "ESC-50-master"
    shutil.copytree(esc50, broken)
    victim = sorted((broken / "audio").iterdir())[0]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        run_transfer(_config(broken, tmp_path / "run", strategies=["det"], folds=[1]))
    results = run_transfer(
        _config(
            broken, tmp_path / "run2", strategies=["det"], folds=[1], on_error="skip", fixed_epochs=0, finetune_epochs=0
        )
    )
    assert results["det"]["fixed"]
    skipped = json.loads((tmp_path / "run2" / "skipped.json").read_text())
    assert [clip for clip, _ in skipped] == [victim.name]


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_torchrun_two_processes_matches_single_process(esc50, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    args = [
        "--data-root",
        str(esc50),
        "--model",
        "flip-tiny",
        "--strategies",
        "drop",
        "--folds",
        "1",
        "--clip-seconds",
        "1",
        "--fixed-epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--batch-size",
        "4",
        "--num-samples",
        "2",
        "--replications",
        "2",
        "--no-progress",
        "--device",
        "cpu",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(SCRIPT), *args, "--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    for stage in ("fixed", "finetuned"):
        a = load_file(str(tmp_path / "one" / "drop" / "fold1" / stage / "predictions.safetensors"))
        b = load_file(str(tmp_path / "two" / "drop" / "fold1" / stage / "predictions.safetensors"))
        assert a["probs"].shape == b["probs"].shape
        torch.testing.assert_close(a["targets"], b["targets"])
        assert set(json.loads((tmp_path / "two" / "drop" / "fold1" / stage / "metrics.json").read_text())) == set(
            json.loads((tmp_path / "one" / "drop" / "fold1" / stage / "metrics.json").read_text())
        )
    assert (tmp_path / "two" / "log.rank1.txt").is_file() and (tmp_path / "two" / "summary.md").is_file()
