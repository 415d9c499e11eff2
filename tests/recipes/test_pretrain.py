"""The pre-training recipe on tiny HDF5 files in the exact PANNs layout, with the tiny model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vipann
from vipann.datasets.hdf5 import AudioSetHDF5, HDF5FormatError
from vipann.recipes.pretrain import PretrainConfig, run_pretraining
from vipann.train.samplers import BalancedSampler, RandomSampler

ROOT = Path(__file__).resolve().parents[2]
CLASSES = 10


def write_h5(path, n, seed, samples=32000, classes=CLASSES):
    """A PANNs packed file: audio_name (S20), waveform int16 (N, samples), target bool (N, classes)."""
    rng = np.random.default_rng(seed)
    target = np.zeros((n, classes), dtype=bool)
    wave = np.zeros((n, samples), dtype=np.int16)
    t = np.arange(samples) / 32000
    for i in range(n):
        labels = rng.choice(classes, size=rng.integers(1, 3), replace=False)
        target[i, labels] = True
        x = sum(np.sin(2 * np.pi * (300 + 400 * c) * t) for c in labels) / len(labels)
        x = 0.5 * x + 0.05 * rng.standard_normal(samples)
        wave[i] = np.clip(x * 32767, -32768, 32767).astype(np.int16)
    with h5py.File(path, "w") as fh:
        fh.create_dataset("audio_name", data=np.array([f"Y{i:010d}.wav".encode() for i in range(n)], dtype="S20"))
        fh.create_dataset("waveform", data=wave, dtype=np.int16)
        fh.create_dataset("target", data=target, dtype=bool)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("h5")
    return {
        "train": [write_h5(root / "balanced_train.h5", 24, 0), write_h5(root / "unbalanced_train.h5", 16, 1)],
        "eval": write_h5(root / "eval.h5", 12, 2),
        "root": root,
    }


@pytest.fixture(scope="module")
def ood(tmp_path_factory):
    import soundfile as sf

    root = tmp_path_factory.mktemp("ood")
    for i in range(4):
        sf.write(root / f"ship{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(16000), 16000)
    return root


def _config(data, out, **kwargs):
    base = dict(
        model="det-tiny",
        train=",".join(map(str, data["train"])),
        eval=str(data["eval"]),
        out=str(out),
        steps=4,
        batch_size=4,
        checkpoint_every=2,
        num_samples=2,
        replications=2,
        eval_batch_size=8,
        progress=False,
        device="cpu",
        clip_seconds=1.0,
    )
    base.update(kwargs)
    return PretrainConfig(**base)


def test_hdf5_layout_and_resampling(data):
    ds = AudioSetHDF5(data["train"], sample_rate=16000, num_classes=CLASSES)
    assert len(ds) == 40 and ds.targets.shape == (40, CLASSES)
    wave, target = ds[30]
    assert wave.shape == (16000,) and wave.dtype == torch.float32 and target.sum() >= 1
    assert ds.audio_names[0] == "Y0000000000.wav"
    full = AudioSetHDF5(data["train"][0], sample_rate=32000)
    assert full.clip_seconds == 1.0 and full[0][0].abs().max() <= 1.0


def test_full_width_10s_file(tmp_path):
    path = write_h5(tmp_path / "eval.h5", 2, 0, samples=320000, classes=527)
    ds = AudioSetHDF5(path, sample_rate=32000, num_classes=527)
    assert ds.clip_samples == 320000 and ds[1][0].shape == (320000,)


def test_bad_files_give_clear_errors(data, tmp_path):
    with pytest.raises(HDF5FormatError, match="model has 527"):
        AudioSetHDF5(data["eval"], num_classes=527)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(Path(data["eval"]).read_bytes()[:4000])
    with pytest.raises(HDF5FormatError, match="truncated"):
        AudioSetHDF5(truncated)
    empty = write_h5(tmp_path / "empty.h5", 0, 0)
    with pytest.raises(HDF5FormatError, match="holds no clip"):
        AudioSetHDF5(empty)
    with h5py.File(tmp_path / "bad.h5", "w") as fh:
        fh.create_dataset("waveform", data=np.zeros((2, 10), dtype=np.int16))
    with pytest.raises(HDF5FormatError, match="lacks"):
        AudioSetHDF5(tmp_path / "bad.h5")
    with pytest.raises(FileNotFoundError):
        AudioSetHDF5(tmp_path / "missing.h5")


def test_samplers_are_balanced_and_resumable():
    targets = torch.zeros(100, 3)
    targets[:90, 0] = 1
    targets[90:98, 1] = 1
    targets[98:, 2] = 1
    sampler = BalancedSampler(targets, batch_size=6, seed=1)
    it = iter(sampler)
    first = [next(it) for _ in range(10)]
    counts = torch.bincount(targets[torch.tensor([i for b in first for i in b])].argmax(-1), minlength=3)
    assert counts.tolist() == [20, 20, 20]  # rare classes as often as common ones
    state = sampler.state_after(4)
    again = BalancedSampler(targets, batch_size=6, seed=1)
    again.load_state_dict(state)
    it2 = iter(again)
    assert [next(it2) for _ in range(6)] == first[4:]
    rnd = RandomSampler(10, 4, seed=3)
    it3 = iter(rnd)
    batches = [next(it3) for _ in range(5)]
    assert sorted([*batches[0], *batches[1], *batches[2][:2]]) == list(range(10))  # epoch 1 is a permutation
    resumed = RandomSampler(10, 4, seed=3)
    resumed.load_state_dict(rnd.state_after(3))
    assert next(iter(resumed)) == batches[3]


@pytest.mark.parametrize("model", ["det-tiny", "drop-tiny"])
def test_few_steps_write_every_output(data, ood, tmp_path, model):
    out = tmp_path / model
    scalars = run_pretraining(_config(data, out, model=model, ood=str(ood), sampler="balanced", eval_every=2))
    # det has no epistemic spread: that measure is not scored (unscored_measures.json says why)
    scored = "ood_auroc_entropy" if model.startswith("det-") else "ood_auroc_epistemic"
    assert {"mAP", "AUC", "d_prime", scored} <= set(scalars)
    files = {p.name for p in (out / "evaluation").iterdir()}
    assert {
        "metrics.json",
        "retention.csv",
        "retention.png",
        "reliability.png",
        "ood_boxplots.png",
        "predictions.safetensors",
    } <= files
    loaded = vipann.from_pretrained(f"local-dir:{out / 'model'}")
    assert loaded.method == model.split("-")[0] and loaded.num_classes == CLASSES
    assert loaded.pretrained_cfg.metrics["eval"]["mAP"] == pytest.approx(scalars["mAP"])
    assert "eval_mAP" in json.loads((out / "history.json").read_text())[1]
    assert "mAP" in vipann.render_card(loaded.pretrained_cfg)


def test_flip_from_det_by_moped(data, tmp_path):
    run_pretraining(_config(data, tmp_path / "det", steps=2, replications=1))
    config = _config(
        data,
        tmp_path / "flip",
        model="flip-tiny",
        init=f"local-dir:{tmp_path / 'det' / 'model'}",
        steps=2,
        replications=2,
    )
    scalars = run_pretraining(config)
    flip = vipann.from_pretrained(f"local-dir:{tmp_path / 'flip' / 'model'}")
    assert flip.method == "flip" and scalars["mean_epistemic"] > 0


def test_resume_equals_uninterrupted(data, tmp_path, monkeypatch):
    full = tmp_path / "full"
    run_pretraining(_config(data, full, model="drop-tiny", steps=6, checkpoint_every=3, sampler="balanced"))
    part = tmp_path / "part"
    run_pretraining(_config(data, part, model="drop-tiny", steps=3, checkpoint_every=3, sampler="balanced"))
    # a later run continues to 6 steps from the checkpoint at step 3
    run_pretraining(
        _config(data, part, model="drop-tiny", steps=6, checkpoint_every=3, sampler="balanced", resume=True)
    )
    a = load_file(str(full / "model" / "model.safetensors"))
    b = load_file(str(part / "model" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_target_width_and_empty_split_errors(data, tmp_path):
    with pytest.raises(ValueError, match="holds no clip"):
        run_pretraining(_config(data, tmp_path / "x", train=str(write_h5(tmp_path / "e.h5", 0, 0))))
    wide = write_h5(tmp_path / "wide.h5", 4, 0, classes=12)
    with pytest.raises(HDF5FormatError, match="12 classes but the model has 10"):
        run_pretraining(_config(data, tmp_path / "y", eval=str(wide)))


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_torchrun_two_processes(data, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "ddp"
    cmd = [
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "finetune" / "pretrain.py"),
        "--model",
        "flip-tiny",
        "--train",
        ",".join(map(str, data["train"])),
        "--eval",
        str(data["eval"]),
        "--out",
        str(out),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "2",
        "--num-samples",
        "2",
        "--replications",
        "2",
        "--clip-seconds",
        "1",
        "--device",
        "cpu",
        "--no-progress",
    ]
    result = subprocess.run(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model" / "model.safetensors").is_file() and (out / "evaluation" / "metrics.json").is_file()
    preds = load_file(str(out / "evaluation" / "predictions.safetensors"))
    assert preds["probs"].shape == (2, 2, 12, CLASSES)  # every eval clip, gathered from both ranks
