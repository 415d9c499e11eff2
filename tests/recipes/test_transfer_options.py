"""The transfer recipe's calibration options on a miniature ESC-50 with the tiny models.

SNGP head, mixup, deep ensembles (also under torchrun), round-based self-training (pseudo-label rounds)
and temperature scaling.
"""

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
from _make_datasets import make_esc50
from safetensors.torch import load_file

import vipann
from vipann.calibration.sngp import mean_field_logits
from vipann.recipes import _semi, _stages
from vipann.recipes._temperature import SWEEP_COLUMNS, stratified_split
from vipann.recipes.config import load_config
from vipann.recipes.transfer import TransferConfig, members_for_rank, run_transfer
from vipann.train import engine
from vipann.train.transfer import build_transfer_model

ROOT = Path(__file__).resolve().parents[2]


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
        model="det-tiny",
        strategies=["det"],
        stages=["fixed"],
        folds=[1],
        clip_seconds=1.0,
        fixed_epochs=2,
        finetune_epochs=1,
        batch_size=4,
        num_samples=2,
        replications=1,
        feature_draws=2,
        progress=False,
        plots=False,
        device="cpu",
    )
    base.update(kwargs)
    return TransferConfig(**base)


def _waves(esc50, fold):
    ds = vipann.datasets.get_dataset("esc50", esc50, sample_rate=16000, clip_seconds=1.0).subset([fold])
    return torch.stack([ds.load_waveform(i) for i in range(len(ds))]), ds.targets


# ------------------------------------------------------------------------------------------------ SNGP
def test_sngp_head_trains_resets_every_epoch_and_predicts_mean_field(esc50, tmp_path, monkeypatch):
    resets, mean_field = [], []
    original_reset = engine.reset_sngp_precision
    monkeypatch.setattr(engine, "reset_sngp_precision", lambda m: resets.append(original_reset(m)) or resets[-1])
    from vipann.calibration import sngp

    original_mf = sngp.mean_field_logits
    monkeypatch.setattr(sngp, "mean_field_logits", lambda *a, **k: mean_field.append(1) or original_mf(*a, **k))
    out = tmp_path / "run"
    results = run_transfer(_config(esc50, out, head="sngp", sngp_features=32, fixed_epochs=3, export=True))
    assert resets == [1, 1, 1]  # one GP layer, reset at the start of each of the 3 epochs
    assert mean_field  # the evaluation went through the mean-field logits
    assert 0.0 <= results["det"]["fixed"][0]["accuracy"] <= 1.0

    stage = out / "det" / "fold1" / "fixed"
    state = load_file(str(stage / "model.safetensors"))
    assert state["fc_audioset.rff_weight"].shape == (32, 16)  # GP layer on the 16-wide hidden layer
    precision = state["fc_audioset.precision"]
    assert not torch.allclose(precision, torch.eye(32))  # the last epoch's data were accumulated

    # The stored predictions are softmax(mean-field logits) of the saved model.
    torch.manual_seed(0)
    model = build_transfer_model(
        "det", vipann.create_model("det-tiny"), 50, head="sngp", sngp={"num_features": 32}
    ).eval()
    model.load_state_dict(state)
    waves, _ = _waves(esc50, 1)
    with torch.no_grad():
        x = model.normalize(model.logmel(waves))
        hidden = model.run_stages(x, 0, model.stage_names.index("fc_audioset"))
        logits, variance = model.fc_audioset.posterior(hidden)
        expected = torch.softmax(mean_field_logits(logits, variance), -1)
    probs = load_file(str(stage / "predictions.safetensors"))["probs"]
    assert probs.shape == (1, 1, 6, 50)
    torch.testing.assert_close(probs[0, 0], expected, atol=1e-5, rtol=1e-4)
    assert float(variance.min()) > 0
    assert not torch.allclose(expected, torch.softmax(logits, -1), atol=1e-4)  # mean-field changed something

    # The exported model directory loads with its SNGP head and predicts the same.
    exported = vipann.from_pretrained(f"local-dir:{stage / 'export'}")
    assert type(exported.fc_audioset) is type(model.fc_audioset)
    again = vipann.predict(exported, waves, num_samples=1, window_seconds=waves.shape[-1] / exported.sample_rate)
    torch.testing.assert_close(again.probs[0], expected, atol=1e-5, rtol=1e-4)


def test_sngp_config_errors():
    with pytest.raises(ValueError, match="head must be one of"):
        TransferConfig(data_root="x", head="gp")
    with pytest.raises(ValueError, match="replaces the Flipout head of detflip"):
        TransferConfig(data_root="x", head="sngp", strategies=["detflip"])
    with pytest.raises(ValueError, match="sngp_lengthscale must be >= 0"):
        TransferConfig(data_root="x", sngp_lengthscale=-1.0)


def test_decision_level_backbone_is_refused_for_transfer():
    backbone = vipann.create_model("det-cnn14-dlmax", num_classes=4, device="meta")
    with pytest.raises(ValueError, match=r"clip-level backbone.*det-cnn14"):
        build_transfer_model("det", backbone, 3)


# ------------------------------------------------------------------------------------------------ mixup
def test_mixup_mixes_inputs_and_targets_with_the_same_coefficients():
    config = TransferConfig(data_root="x", batch_size=4, mixup_alpha=0.4)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    # Features equal to the one-hot targets: a mixed input must equal its mixed target.
    features = torch.nn.functional.one_hot(targets, 3).float()[None].repeat(2, 1, 1)  # (K=2, N, D=C)
    ctx = vipann.train.DistContext()
    batches = _stages.feature_batches(features, targets, config, ctx, seed=0, num_classes=3)
    seen = list(batches(0))
    assert sum(len(y) for _, y in seen) == 8
    soft = False
    for x, y in seen:
        assert y.shape == (len(x), 3) and y.dtype == torch.float32
        torch.testing.assert_close(y.sum(-1), torch.ones(len(y)))
        torch.testing.assert_close(x, y)
        soft |= bool(((y > 1e-6) & (y < 1 - 1e-6)).any())
    assert soft  # at least one clip mixed with a clip of another class
    again = list(batches(0))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(seen, again))  # a function of (seed, epoch): resumable
    other = list(batches(1))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(seen, other))

    waves = torch.arange(8, dtype=torch.float32)[:, None].repeat(1, 5)
    x, y = next(iter(_stages.wave_batches(waves, targets, config, ctx, seed=0, num_classes=3)(0)))
    assert x.shape == (4, 5) and y.shape == (4, 3)
    plain = TransferConfig(data_root="x", batch_size=4)
    _, y0 = next(iter(_stages.wave_batches(waves, targets, plain, ctx, seed=0, num_classes=3)(0)))
    assert y0.dim() == 1  # no mixup: class indices as before


def test_mixup_trains_both_stages_on_soft_targets(esc50, tmp_path, monkeypatch):
    first_batches = []
    original_fit = _stages.fit

    def spy(model, params, batches, config, **kw):
        first_batches.append(next(iter(batches(0))))
        return original_fit(model, params, batches, config, **kw)

    monkeypatch.setattr(_stages, "fit", spy)
    results = run_transfer(
        _config(esc50, tmp_path / "run", strategies=["drop"], stages=["fixed", "finetuned"], mixup_alpha=0.4)
    )
    assert len(first_batches) == 2
    for (x, y), dims in zip(first_batches, (2, 2)):
        assert x.dim() == dims and y.shape == (4, 50) and y.dtype == torch.float32
        torch.testing.assert_close(y.sum(-1), torch.ones(4))
    assert first_batches[1][0].shape == (4, 16000)  # the fine-tuned stage mixes waveforms
    assert np.isfinite(results["drop"]["finetuned"][0]["NLL"])
    with pytest.raises(ValueError, match="mixup_alpha must be >= 0"):
        TransferConfig(data_root="x", mixup_alpha=-1.0)


def test_soft_targets_in_the_losses():
    from vipann.train import classification_loss

    logits = torch.randn(6, 4)
    hard = torch.tensor([0, 1, 2, 3, 0, 1])
    onehot = torch.nn.functional.one_hot(hard, 4).float()
    torch.testing.assert_close(
        classification_loss(logits, onehot, multilabel=False), classification_loss(logits, hard, multilabel=False)
    )
    lam = 0.3
    mixed = lam * onehot + (1 - lam) * onehot.roll(1, 0)
    expected = lam * torch.nn.functional.cross_entropy(logits, hard) + (1 - lam) * torch.nn.functional.cross_entropy(
        logits, hard.roll(1, 0)
    )
    torch.testing.assert_close(classification_loss(logits, mixed, multilabel=False), expected)


# ------------------------------------------------------------------------------------------------ ensembles
def test_members_for_rank_partitions_the_members():
    for members in range(1, 7):
        for world in range(1, 5):
            assigned = [members_for_rank(members, r, world) for r in range(world)]
            assert sorted(m for part in assigned for m in part) == list(range(members))
            assert all(all(m % world == r for m in part) for r, part in enumerate(assigned))
    assert members_for_rank(5, 1, 2) == [1, 3]


def test_ensemble_of_two_members_is_trained_saved_and_evaluated(esc50, tmp_path):
    out = tmp_path / "ens"
    kwargs = dict(strategies=["drop"], fixed_epochs=1, num_samples=2, replications=2)
    run_transfer(_config(esc50, out, ensemble_members=2, export=True, **kwargs))
    stage = out / "drop" / "fold1" / "fixed"
    probs = load_file(str(stage / "predictions.safetensors"))["probs"]
    assert probs.shape == (2, 4, 6, 50)  # (R, M·S, N, C)
    record = json.loads((stage / "ensemble.json").read_text())
    assert record["members"] == 2 and record["seeds"] == [0, 1]
    members = [
        load_file(str(out / "drop" / "fold1" / "members" / f"m{m}" / "fixed" / "model.safetensors")) for m in (0, 1)
    ]
    assert not torch.equal(members[0]["fc_audioset.weight"], members[1]["fc_audioset.weight"])
    # Member 0 is the single model of the same seed.
    run_transfer(_config(esc50, tmp_path / "single", **kwargs))
    single = load_file(str(tmp_path / "single" / "drop" / "fold1" / "fixed" / "model.safetensors"))
    for key in single:
        torch.testing.assert_close(single[key], members[0][key], msg=key)
    ensemble = vipann.Ensemble.from_pretrained([f"local-dir:{p}" for p in record["exports"]])
    waves, _ = _waves(esc50, 1)
    assert vipann.predict(ensemble, waves[:3], num_samples=2, generator=0).probs.shape == (4, 3, 50)
    with pytest.raises(ValueError, match="ensemble_members must be >= 1"):
        TransferConfig(data_root="x", ensemble_members=0)


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_torchrun_trains_the_members_in_parallel(esc50, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    kwargs = dict(ensemble_members=2, fixed_epochs=1, cache_dir=str(tmp_path / "cache"))
    run_transfer(_config(esc50, tmp_path / "one", **kwargs))
    args = ["--data-root", str(esc50), "--model", "det-tiny", "--strategies", "det", "--stages", "fixed"]
    args += ["--folds", "1", "--clip-seconds", "1", "--fixed-epochs", "1", "--batch-size", "4", "--no-plots"]
    args += ["--ensemble-members", "2", "--no-progress", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    args += ["--out", str(tmp_path / "two")]
    multi = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(ROOT / "finetune" / "finetune.py"), *args],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "rank 1 trains ensemble members [1]" in (tmp_path / "two" / "log.rank1.txt").read_text()
    for m in (0, 1):
        a = load_file(str(tmp_path / "one" / "det" / "fold1" / "members" / f"m{m}" / "fixed" / "model.safetensors"))
        b = load_file(str(tmp_path / "two" / "det" / "fold1" / "members" / f"m{m}" / "fixed" / "model.safetensors"))
        for key in a:
            torch.testing.assert_close(a[key], b[key], msg=f"member {m}: {key}")
    one = load_file(str(tmp_path / "one" / "det" / "fold1" / "fixed" / "predictions.safetensors"))["probs"]
    two = load_file(str(tmp_path / "two" / "det" / "fold1" / "fixed" / "predictions.safetensors"))["probs"]
    assert one.shape == two.shape == (1, 2, 6, 50)
    torch.testing.assert_close(one, two, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ pseudo-labels
def test_pseudo_label_round_keeps_exactly_the_selected_clips(esc50, tmp_path, monkeypatch):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(2):
        sf.write(folder / f"u{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(16000), 16000)
    calls, fits = [], []
    real_select = _semi.select_pseudo_labels

    def forced(logits, **kw):
        mask, labels = real_select(logits, **kw)
        calls.append((logits.shape, mask, labels, kw))
        keep = torch.zeros_like(mask)
        keep[[0, 3, 6]] = True  # two hidden-fold clips and one folder clip
        return keep, labels

    original_fit = _stages.fit
    monkeypatch.setattr(_semi, "select_pseudo_labels", forced)
    monkeypatch.setattr(_stages, "fit", lambda *a, **kw: fits.append(kw["num_train"]) or original_fit(*a, **kw))
    out = tmp_path / "run"
    run_transfer(
        _config(esc50, out, strategies=["drop"], pseudo_label_folds=[3], pseudo_label_root=str(folder), num_samples=3)
    )
    ((shape, _, labels, kw),) = calls
    assert shape == (3, 8, 50)  # 3 MC-dropout passes over 6 hidden-fold clips + 2 folder clips
    assert kw == {"temperature": 2.0, "threshold": 0.9, "std_threshold": None}
    assert fits == [6, 9]  # fold 2 labelled (6 clips), then + the 3 kept clips
    record = json.loads((out / "drop" / "fold1" / "fixed" / "pseudo_labels.json").read_text())["rounds"][0]
    assert record["candidates"] == 8 and record["kept"] == 3 and record["labels_known"] == 2
    ids = [c["clip_id"] for c in record["clips"]]
    assert [i.split(":")[0] for i in ids] == ["fold3", "fold3", "folder"] and ids[2] == "folder:u0.wav"
    assert [c["target"] for c in record["clips"]] == [int(labels[i]) for i in (0, 3, 6)]
    truth = [int(i.rsplit("-", 1)[1].split(".")[0]) for i in ids[:2]]
    expected = sum(int(labels[i]) == t for i, t in zip((0, 3), truth)) / 2
    assert record["accuracy"] == pytest.approx(expected)
    metrics = json.loads((out / "drop" / "fold1" / "fixed" / "metrics.json").read_text())
    assert metrics["pseudo_labels_kept"] == 3 and metrics["pseudo_label_accuracy"] == pytest.approx(expected)


def test_pseudo_label_variants_and_errors(esc50, tmp_path, monkeypatch):
    seen = []
    real = _semi.select_pseudo_labels
    monkeypatch.setattr(_semi, "select_pseudo_labels", lambda z, **kw: seen.append((z.shape, kw)) or real(z, **kw))
    run_transfer(
        _config(
            esc50,
            tmp_path / "run",
            strategies=["drop"],
            pseudo_label_folds=[3],
            pseudo_label_variant="confidence",
            pseudo_label_threshold=0.95,
            fixed_epochs=1,
        )
    )
    assert seen == [((1, 6, 50), {"temperature": None, "threshold": 0.95, "std_threshold": None})]
    with pytest.raises(ValueError, match="unknown pseudo_label_variant"):
        TransferConfig(data_root="x", pseudo_label_variant="ups")
    # the rules' earlier names (before FMUC named the FixMatch recipe's method) still work
    for old, new in _semi.ALIASES.items():
        assert TransferConfig(data_root="x", pseudo_label_variant=old).pseudo_label_variant == new
    assert TransferConfig(data_root="x").pseudo_label_variant == "mc-mean-std"
    with pytest.raises(ValueError, match="pseudo_label_threshold must be in"):
        TransferConfig(data_root="x", pseudo_label_threshold=1.5)
    with pytest.raises(ValueError, match="hide every training fold"):
        run_transfer(_config(esc50, tmp_path / "bad", strategies=["drop"], pseudo_label_folds=[2, 3]))


# ------------------------------------------------------------------------------------------------ temperature
def test_stratified_split():
    targets = torch.tensor([0] * 10 + [1] * 5 + [2])
    train, val = stratified_split(targets, 0.2, seed=3)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(16))
    assert torch.bincount(targets[val], minlength=3).tolist() == [2, 1, 0]  # a single clip stays in training
    assert torch.equal(val, stratified_split(targets, 0.2, seed=3)[1])
    assert not torch.equal(val, stratified_split(targets, 0.2, seed=4)[1])
    with pytest.raises(ValueError, match="holds out no clip"):
        stratified_split(torch.tensor([0, 1, 2]), 0.2, seed=0)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        TransferConfig(data_root="x", val_fraction=1.0)
    with pytest.raises(ValueError, match="calibrated=True needs a validation split"):
        TransferConfig(data_root="x", calibrated=True)


def test_temperature_outputs_calibrated_evaluation_and_export(esc50, tmp_path):
    out = tmp_path / "run"
    run_transfer(_config(esc50, out, val_fraction=0.25, calibrated=True, export=True, ood_root=str(esc50 / "audio")))
    stage = out / "det" / "fold1" / "fixed"
    info = json.loads((stage / "temperature.json").read_text())
    t = info["temperature"]
    assert t > 0 and info["val_clips"] == 3 and info["test_clips"] == 6  # 1 of 4 clips per class held out
    for split in ("val", "test"):
        for when in ("before", "after"):
            assert set(info[split][when]) >= {"ece", "nll", "reliability_mae", "brier", "accuracy"}
    assert info["val"]["after"]["nll"] <= info["val"]["before"]["nll"] + 1e-9  # T minimises the validation NLL
    with (stage / "temperature_sweep.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == SWEEP_COLUMNS and len(rows) == 42
    assert all(float(r[0]) > 0 and all(np.isfinite(float(v)) for v in r) for r in rows[1:])

    raw = load_file(str(stage / "predictions.safetensors"))
    cal = load_file(str(stage / "calibrated" / "predictions.safetensors"))
    torch.testing.assert_close(cal["probs"], torch.softmax(raw["probs"].log() / t, -1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cal["ood_probs"], torch.softmax(raw["ood_probs"].log() / t, -1), atol=1e-5, rtol=1e-4)
    metrics = json.loads((stage / "metrics.json").read_text())
    calibrated = json.loads((stage / "calibrated" / "metrics.json").read_text())
    assert metrics["temperature"] == calibrated["temperature"] == t
    assert calibrated["accuracy"] == metrics["accuracy"]  # one shared T never changes the arg-max
    exported = vipann.from_pretrained(f"local-dir:{stage / 'export'}")
    assert exported.pretrained_cfg.temperature == pytest.approx(t)
    summary = (out / "summary.csv").read_text().splitlines()[0]
    assert "temperature_mean" in summary


def test_new_settings_from_yaml_and_flags(tmp_path):
    config = load_config(
        TransferConfig, ROOT / "finetune" / "configs" / "esc50-det-calibration.yaml", {"data_root": "x"}
    )
    assert (config.head, config.ensemble_members, config.val_fraction, config.calibrated) == ("sngp", 5, 0.1, True)
    config = load_config(
        TransferConfig,
        None,
        {
            "data_root": "x",
            "pseudo_label_folds": "4,5",
            "mixup_alpha": "0.2",
            "stages": "fixed",
            "calibrated": None,
        },
    )
    assert config.pseudo_label_folds == [4, 5] and config.mixup_alpha == 0.2 and config.stages == ["fixed"]
    with pytest.raises(ValueError, match="stages must be a non-empty, ordered subset"):
        TransferConfig(data_root="x", stages=["finetuned", "fixed"])
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_script", ROOT / "finetune" / "finetune.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for name in ("head", "mixup_alpha", "ensemble_members", "val_fraction", "calibrated", "pseudo_label_root"):
        assert name in script.FLAGS
