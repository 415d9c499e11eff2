import logging
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from _make_datasets import make_esc50
from torch.utils.data import DataLoader

from vipann.datasets import ESC10_TARGETS, ESC50, AudioReadError, MetadataError, MissingClipsError
from vipann.datasets.labels import get_labels

SECONDS = 0.05  # generated clip length (the real ones are 5 s; the loader pads)


@pytest.fixture(scope="module")
def esc50_root(tmp_path_factory):
    return make_esc50(tmp_path_factory.mktemp("esc"), seconds=SECONDS)


@pytest.fixture
def esc50_copy(esc50_root, tmp_path):
    # A private copy for tests that break the dataset.
    return shutil.copytree(esc50_root, tmp_path / "ESC-50-master")


def test_generated_copy_has_the_official_format(esc50_root):
    table = pd.read_csv(esc50_root / "meta" / "esc50.csv")
    assert list(table.columns) == ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    first = table.iloc[0]
    assert first["filename"] == f"{first['fold']}-{first['src_file']}-{first['take']}-{first['target']}.wav"
    assert set(table.esc10.astype(str)) == {"True", "False"}


def test_counts_folds_and_labels(esc50_root):
    ds = ESC50(esc50_root)
    assert len(ds) == 250 and ds.folds == [1, 2, 3, 4, 5]
    assert ds.class_names == get_labels("esc50") and ds.num_classes == 50 and not ds.multilabel
    assert ds.targets.dtype == torch.long and ds.targets.shape == (250,)
    assert torch.bincount(ds.targets).tolist() == [5] * 50
    assert all(r.fold == int(r.clip_id.split("-")[0]) for r in ds.records)
    assert all(r.label == int(r.clip_id[:-4].split("-")[-1]) for r in ds.records)


def test_items_are_fixed_length_mono_at_the_model_rate(esc50_root):
    ds = ESC50(esc50_root)
    wave, target = ds[0]
    assert wave.shape == (160000,) and wave.dtype == torch.float32
    assert target.dtype == torch.long and target.ndim == 0 and int(target) == ds.records[0].label
    real = round(SECONDS * 32000)
    assert wave[: real - 10].abs().max() > 0.1 and wave[real + 10 :].abs().max() == 0  # zero-padded
    short = ESC50(esc50_root, sample_rate=16000, clip_seconds=0.02)
    assert short[3][0].shape == (320,)


def test_default_collate_batches_items(esc50_root):
    waves, targets = next(iter(DataLoader(ESC50(esc50_root, clip_seconds=0.1), batch_size=4)))
    assert waves.shape == (4, 3200) and targets.shape == (4,) and targets.dtype == torch.long


def test_official_split_has_no_overlap(esc50_root):
    ds = ESC50(esc50_root)
    for k in ds.folds:
        train, test = ds.split(k)
        assert isinstance(train, ESC50) and test.folds == [k] and k not in train.folds
        train_ids, test_ids = {r.clip_id for r in train.records}, {r.clip_id for r in test.records}
        assert not train_ids & test_ids and len(train_ids | test_ids) == len(ds)
        assert torch.equal(test.targets, torch.tensor([r.label for r in test.records]))
    with pytest.raises(ValueError, match="unknown fold"):
        ds.split(6)
    assert ESC50(esc50_root, folds=[2, 4]).folds == [2, 4]
    with pytest.raises(ValueError):
        ESC50(esc50_root, folds=[0])


def test_esc10_subset(esc50_root):
    ds = ESC50(esc50_root, esc10=True)
    names = get_labels("esc50")
    assert ds.class_names == tuple(names[t] for t in ESC10_TARGETS)
    assert ds.class_names[:3] == ("dog", "rooster", "rain")
    assert len(ds) == 50 and sorted(set(ds.targets.tolist())) == list(range(10))
    for record in ds.records:
        assert ds.class_names[record.label] == names[int(record.clip_id[:-4].split("-")[-1])]


def test_root_may_be_the_parent_folder(esc50_root):
    assert len(ESC50(esc50_root.parent)) == 250
    with pytest.raises(FileNotFoundError, match=r"meta/esc50\.csv"):
        ESC50(esc50_root / "audio")


def test_wrong_categories_are_rejected(esc50_copy):
    csv = esc50_copy / "meta" / "esc50.csv"
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    table.loc[table.target == "3", "category"] = "horse"
    table.to_csv(csv, index=False)
    with pytest.raises(MetadataError, match=r"class 3: metadata says \['horse'\], expected 'cow'"):
        ESC50(esc50_copy)


def test_wrong_columns_are_rejected(esc50_copy):
    csv = esc50_copy / "meta" / "esc50.csv"
    pd.read_csv(csv).rename(columns={"target": "classID"}).to_csv(csv, index=False)
    with pytest.raises(MetadataError, match="lacks column"):
        ESC50(esc50_copy)


def test_missing_clip_is_named_or_skipped(esc50_copy, caplog):
    victim = sorted((esc50_copy / "audio").iterdir())[7]
    victim.unlink()
    with pytest.raises(MissingClipsError, match=re.escape(victim.name)) as info:
        ESC50(esc50_copy)
    assert "on_error='skip'" in str(info.value)
    assert [clip for clip, _ in info.value.problems] == [victim.name]
    with caplog.at_level(logging.WARNING):
        ds = ESC50(esc50_copy, on_error="skip")
    assert len(ds) == 249 and [clip for clip, _ in ds.skipped] == [victim.name]
    assert victim.name in caplog.text
    assert victim.name not in {r.clip_id for r in ds.records}
    assert [clip for clip, _ in ds.split(1)[0].skipped] == [victim.name]


def test_corrupt_clip_is_named(esc50_copy):
    victim = sorted((esc50_copy / "audio").iterdir())[3]
    victim.write_bytes(b"not a wav file at all")
    ds = ESC50(esc50_copy)  # existence is all that is checked up front
    index = next(i for i, r in enumerate(ds.records) if r.clip_id == victim.name)
    with pytest.raises(AudioReadError, match=re.escape(f"clip '{victim.name}' cannot be loaded")):
        ds[index]
    with pytest.raises(MissingClipsError, match=re.escape(victim.name)):
        ds.validate(decode=True)
    skipping = ESC50(esc50_copy, on_error="skip", clip_seconds=0.01)
    problems = skipping.validate(decode=True)
    assert [clip for clip, _ in problems] == [victim.name] == [clip for clip, _ in skipping.skipped]
    assert len(skipping) == 249
    assert np.isfinite(skipping[index][0].numpy()).all()
