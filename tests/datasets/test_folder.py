import numpy as np
import pytest
import soundfile as sf
import torch
from _make_datasets import class_tone, write_audio

from vipann.datasets import AudioFolder, MetadataError, MissingClipsError, UnlabelledFolder


def _folder(tmp_path, rows, header="filename,label,fold"):
    for row in rows:
        write_audio(tmp_path / row.split(",")[0], class_tone(1, 0.05, 16000), 16000)
    (tmp_path / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return tmp_path


def test_multiclass_with_folds(tmp_path):
    root = _folder(tmp_path, ["a/x1.wav,whale,1", "a/x2.wav,ship,2", "b/x3.wav,whale,2", "x4.wav,rain,1"])
    ds = AudioFolder(root, fold_col="fold", sample_rate=8000, clip_seconds=0.1)
    assert ds.class_names == ("rain", "ship", "whale") and not ds.multilabel
    assert ds.targets.tolist() == [2, 1, 2, 0] and ds.folds == [1, 2]
    wave, target = ds[2]
    assert wave.shape == (800,) and target.dtype == torch.long and int(target) == 2
    train, test = ds.split(2)
    assert [r.clip_id for r in test.records] == ["a/x2.wav", "b/x3.wav"] and len(train) == 2


def test_multilabel_with_semicolons(tmp_path):
    rows = ["c1.wav,dog;siren", "c2.wav,", "c3.wav, siren ", "c4.wav,rain;dog;siren"]
    root = _folder(tmp_path, rows, header="filename,label")
    ds = AudioFolder(root, multilabel=True, class_names=["dog", "rain", "siren", "car"], clip_seconds=0.1)
    assert ds.multilabel and ds.num_classes == 4 and ds.folds == []
    expected = [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0], [1, 1, 1, 0]]
    assert ds.targets.dtype == torch.float32 and ds.targets.tolist() == expected
    _, target = ds[3]
    assert target.dtype == torch.float32 and target.tolist() == expected[3]
    with pytest.raises(ValueError, match="has no folds"):
        ds.split(1)
    pipes = tmp_path / "pipes.csv"
    pipes.write_text("file,tags\nc1.wav,dog|rain\n")
    other = AudioFolder(root, pipes, filename_col="file", label_col="tags", multilabel=True, label_sep="|")
    assert other.class_names == ("dog", "rain") and other.targets.tolist() == [[1.0, 1.0]]


def test_integer_labels_are_ordered_numerically(tmp_path):
    root = _folder(tmp_path, ["a.wav,10", "b.wav,2", "c.wav,0"], header="filename,label")
    assert AudioFolder(root).class_names == ("0", "2", "10")


def test_bad_labels_are_rejected(tmp_path):
    root = _folder(tmp_path, ["a.wav,cat", "b.wav,dog"], header="filename,label")
    with pytest.raises(MetadataError, match=r"not in class_names: \['dog'\]"):
        AudioFolder(root, class_names=["cat"])
    (root / "labels.csv").write_text("filename,label\na.wav,\n")
    with pytest.raises(MetadataError, match="empty label"):
        AudioFolder(root)
    (root / "labels.csv").write_text("filename,label\na.wav,cat\na.wav,cat\n")
    with pytest.raises(MetadataError, match="repeated"):
        AudioFolder(root)
    (root / "labels.csv").write_text("filename,label,fold\na.wav,cat,one\n")
    with pytest.raises(MetadataError, match="not an integer"):
        AudioFolder(root, fold_col="fold")
    with pytest.raises(MetadataError, match="lacks column"):
        AudioFolder(root, label_col="category")
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        AudioFolder(root, "nope.csv")


def test_missing_file_in_csv(tmp_path):
    root = _folder(tmp_path, ["a.wav,cat"], header="filename,label")
    (root / "labels.csv").write_text("filename,label\na.wav,cat\ngone.wav,dog\n")
    with pytest.raises(MissingClipsError, match=r"gone\.wav"):
        AudioFolder(root)
    ds = AudioFolder(root, on_error="skip")
    assert len(ds) == 1 and ds.skipped[0][0] == "gone.wav" and ds.class_names == ("cat", "dog")


def test_unlabelled_folder(tmp_path):
    write_audio(tmp_path / "ships" / "a.wav", class_tone(0, 0.05, 52734), 52734)
    write_audio(tmp_path / "ships" / "sub" / "b.flac", class_tone(1, 0.05, 22050, channels=2), 22050)
    sf.write(str(tmp_path / "ships" / "c.ogg"), class_tone(2, 0.2, 22050), 22050, format="OGG")
    (tmp_path / "ships" / "._a.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (tmp_path / "ships" / "notes.txt").write_text("not audio")
    ds = UnlabelledFolder(tmp_path / "ships", sample_rate=16000, clip_seconds=0.1)
    assert [r.clip_id for r in ds.records] == ["a.wav", "c.ogg", "sub/b.flac"]
    assert not ds.labelled and ds.class_names == () and ds.targets.tolist() == [-1, -1, -1]
    waves, targets = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert waves.shape == (3, 1600) and targets.tolist() == [-1, -1, -1]
    assert len(UnlabelledFolder(tmp_path / "ships", extensions=("wav",))) == 1
    with pytest.raises(FileNotFoundError):
        UnlabelledFolder(tmp_path / "ships" / "sub", extensions=(".mp3",))


def test_unlabelled_recordings_cut_into_clips(tmp_path):
    ramp = np.linspace(-0.5, 0.5, 25000, dtype=np.float32)  # 2.5 s at 10 kHz
    write_audio(tmp_path / "long.wav", ramp, 10000, "FLOAT")
    write_audio(tmp_path / "short.wav", ramp[:5000], 10000, "FLOAT")
    ds = UnlabelledFolder(tmp_path, sample_rate=10000, clip_seconds=1.0, segment=True)
    assert [r.clip_id for r in ds.records] == ["long.wav@0s", "long.wav@1s", "short.wav@0s"]
    np.testing.assert_array_equal(ds[1][0].numpy(), ramp[10000:20000])
    assert ds[2][0][5000:].abs().max() == 0
    (tmp_path / "broken.wav").write_bytes(b"garbage")
    with pytest.raises(MissingClipsError, match=r"broken\.wav"):
        UnlabelledFolder(tmp_path, sample_rate=10000, clip_seconds=1.0, segment=True)
    skipping = UnlabelledFolder(tmp_path, sample_rate=10000, clip_seconds=1.0, segment=True, on_error="skip")
    assert len(skipping) == 3 and skipping.skipped[0][0] == "broken.wav"
