"""The transfer recipe and `vipann compare` with an EfficientAT backbone (mn04, 384-d embeddings), on generated data."""

import csv
import json

import pytest
import torch
from _golden_efficientat import synthetic_state_dict
from _make_datasets import make_esc50
from safetensors.torch import load_file

import vipann
from vipann.cli import main
from vipann.recipes.transfer import TransferConfig, backbone_name, run_transfer
from vipann.train.transfer import build_transfer_model, extract_features
from vipann.zoo.convert import from_efficientat_checkpoint
from vipann.zoo.serialization import save_pretrained


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return make_esc50(root, clips_per_class_per_fold=2, classes=[0, 1, 2], folds=(1, 2), seconds=1.0, seed=0)


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory):
    det = from_efficientat_checkpoint(synthetic_state_dict("mn04"), "det-mn04")
    return save_pretrained(det, tmp_path_factory.mktemp("zoo") / "det-mn04")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))


def test_transfer_models_and_features_of_every_strategy(backbone_dir):
    backbone = vipann.from_pretrained(f"local-dir:{backbone_dir}")
    waves = 0.1 * torch.randn(3, 32000, generator=torch.Generator().manual_seed(0))
    for strategy in ("det", "drop", "detflip", "flip"):
        model = build_transfer_model(strategy, backbone, 5, head_dropout=0.5)
        assert model.arch == "mn04" and model.method == strategy and model.num_classes == 5
        assert model.fc1.in_features == model.embed_dim == 384
        # only a Flipout trunk is stochastic (drop samples its head: the trunk has no dropout site)
        features = extract_features(model, waves, draws=2, generator=torch.Generator().manual_seed(0))
        assert features.shape == (2 if strategy == "flip" else 1, 3, 384)
        if strategy == "drop":  # the Drop head: MC dropout before fc1 and before the classifier
            assert model.dropout_fc1.p == 0.5 and model.dropout_head.p == 0.5
    torch.testing.assert_close(extract_features(backbone.eval(), waves)[0], backbone.embed(waves))


def test_transfer_run_on_generated_data(esc50, backbone_dir, tmp_path):
    out = tmp_path / "run"
    config = TransferConfig(
        dataset="esc50",
        data_root=str(esc50),
        out=str(out),
        model=f"local-dir:{backbone_dir}",
        strategies=["flip"],  # det, drop and detflip train in the compare test below
        folds=[1],
        clip_seconds=1.0,
        fixed_epochs=2,
        finetune_epochs=1,
        batch_size=4,
        num_samples=2,
        replications=1,
        feature_draws=2,
        progress=False,
        device="cpu",
        export=True,
    )
    results = run_transfer(config)
    assert set(results) == {"flip"}
    for strategy in results:
        for stage in ("fixed", "finetuned"):
            stage_dir = out / strategy / "fold1" / stage
            metrics = json.loads((stage_dir / "metrics.json").read_text())
            assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["NLL"] > 0
            probs = load_file(str(stage_dir / "predictions.safetensors"))["probs"]
            assert probs.shape == (1, 2, 6, 50)
    exported = vipann.from_pretrained(f"local-dir:{out / 'flip' / 'fold1' / 'finetuned' / 'export'}")
    assert exported.arch == "mn04" and exported.method == "flip" and exported.num_classes == 50


def test_compare_runs_with_an_efficientat_backbone(esc50, backbone_dir, tmp_path):
    assert backbone_name("det-mn10", "flip") == "flip-mn10" and backbone_name("det-mn10", "drop") == "drop-mn10"
    out = tmp_path / "cmp"
    args = ["compare", "--dataset", "esc50", "--data-root", str(esc50), "--model", f"local-dir:{backbone_dir}"]
    args += ["--methods", "base,mc-dropout,detflip", "--folds", "1", "--clip-seconds", "1", "--fixed-epochs", "1"]
    args += ["--batch-size", "4", "--feature-draws", "1", "--num-samples", "2", "--replications", "1"]
    args += ["--val-fraction", "0.5", "--no-progress", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    with (out / "comparison.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["base", "mc-dropout", "detflip"]
    assert all(0 <= float(r["accuracy_mean"]) <= 1 for r in rows)
