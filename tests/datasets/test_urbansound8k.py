import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from _make_datasets import URBANSOUND8K_FORMATS, make_urbansound8k

from vipann.datasets import MetadataError, MissingClipsError, UrbanSound8K, load_audio
from vipann.datasets.labels import get_labels

MAX_SECONDS = 0.3


@pytest.fixture(scope="module")
def us8k_root(tmp_path_factory):
    return make_urbansound8k(tmp_path_factory.mktemp("us8k"), max_seconds=MAX_SECONDS)


def _peak_hz(wave, sr):
    spectrum = np.abs(np.fft.rfft(np.asarray(wave) * np.hanning(len(wave))))
    return np.fft.rfftfreq(len(wave), 1 / sr)[spectrum.argmax()]


def test_generated_copy_has_the_official_format(us8k_root):
    table = pd.read_csv(us8k_root / "metadata" / "UrbanSound8K.csv")
    assert list(table.columns) == ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
    row = table.iloc[0]
    fs_id, class_id, _, _ = row.slice_file_name[:-4].split("-")
    assert (int(fs_id), int(class_id)) == (row.fsID, row.classID)
    assert (us8k_root / "audio" / f"fold{row.fold}" / row.slice_file_name).is_file()
    formats = {(i.samplerate, i.channels, i.subtype) for i in map(sf.info, map(str, us8k_root.rglob("*.wav")))}
    assert formats == set(URBANSOUND8K_FORMATS)


def test_counts_folds_and_labels(us8k_root):
    ds = UrbanSound8K(us8k_root)
    assert len(ds) == 100 and ds.folds == list(range(1, 11))
    assert ds.class_names == get_labels("urbansound8k")
    assert torch.bincount(ds.targets).tolist() == [10] * 10
    assert all(r.path.parent.name == f"fold{r.fold}" for r in ds.records)
    assert UrbanSound8K(us8k_root.parent, folds=[3]).folds == [3]


def test_every_format_decodes_to_the_model_rate_and_is_padded(us8k_root):
    ds = UrbanSound8K(us8k_root)
    assert ds.clip_samples == 128000
    for index in range(len(ds)):
        record = ds.records[index]
        wave, target = ds[index]
        assert wave.shape == (128000,) and wave.dtype == torch.float32 and int(target) == record.label
        native = sf.info(str(record.path))
        real = round(native.duration * 32000)
        assert wave[real + 50 :].abs().max() == 0, record.clip_id  # zero-padded to 4 s
        # Same scale for every subtype (the tone is 0.4 plus noise of at most 0.05).
        assert 0.3 < float(wave.abs().max()) < 0.5, (record.clip_id, native.subtype)
        expected_hz = 200 + 150 * record.label
        assert abs(_peak_hz(wave[:real], 32000) - expected_hz) < 2 * 32000 / real, record.clip_id


def test_pcm_u8_and_float_files_keep_their_scale(us8k_root):
    for path in us8k_root.rglob("*.wav"):
        info = sf.info(str(path))
        if info.subtype in {"PCM_U8", "FLOAT"}:
            native = load_audio(path, None)
            assert 0.3 < float(native.abs().max()) <= 0.46
            assert abs(float(native.mean())) < 0.02  # unsigned 8-bit is centred on 0 after decoding


def test_split_never_mixes_folds(us8k_root):
    ds = UrbanSound8K(us8k_root)
    train, test = ds.split(10)
    assert test.folds == [10] and 10 not in train.folds and len(train) + len(test) == len(ds)
    assert not {r.clip_id for r in train.records} & {r.clip_id for r in test.records}


def test_wrong_class_names_are_rejected(us8k_root, tmp_path):
    import shutil

    copy = shutil.copytree(us8k_root, tmp_path / "UrbanSound8K")
    csv = copy / "metadata" / "UrbanSound8K.csv"
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    table.loc[table.classID == "6", "class"] = "dog"  # e.g. ESC-50 labels pasted in
    table.to_csv(csv, index=False)
    with pytest.raises(MetadataError, match="gun_shot"):
        UrbanSound8K(copy)


def test_file_in_the_wrong_fold_folder_is_missing(us8k_root, tmp_path):
    import shutil

    copy = shutil.copytree(us8k_root, tmp_path / "UrbanSound8K")
    moved = next((copy / "audio" / "fold2").iterdir())
    moved.rename(copy / "audio" / "fold3" / moved.name)
    with pytest.raises(MissingClipsError, match=re.escape(moved.name)):
        UrbanSound8K(copy)
    assert [c for c, _ in UrbanSound8K(copy, on_error="skip").skipped] == [moved.name]
