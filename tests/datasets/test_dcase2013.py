import logging
import random

import pytest
import torch
from _make_datasets import make_dcase2013, setup_folds, write_audio

import vipann.datasets.dcase2013 as dcase_module
from vipann.datasets import DCASE2013, MetadataError, MissingClipsError, stratified_folds
from vipann.datasets.dcase2013 import read_setup
from vipann.datasets.labels import get_labels

SCENES = get_labels("dcase2013")


def _folds(ds):
    return {r.clip_id: r.fold for r in ds.records}


def test_generated_split_is_stratified_deterministic_and_written(tmp_path, caplog):
    root = make_dcase2013(tmp_path / "dcase")
    with caplog.at_level(logging.WARNING):
        ds = DCASE2013(root, clip_seconds=0.1)
    assert ds.split_source == "generated" and ds.setup_dir == root / "evaluation_setup"
    assert "evaluation_setup" in caplog.text
    assert len(ds) == 100 and ds.folds == [1, 2, 3, 4, 5] and ds.class_names == SCENES
    assert ds.scene_counts == {k: dict.fromkeys(SCENES, 2) for k in range(1, 6)}
    folds = _folds(ds)
    assert (folds["bus01.wav"], folds["bus02.wav"], folds["bus03.wav"], folds["bus10.wav"]) == (1, 1, 2, 5)
    # Written in the setup-file format, with the label column; the next run reads it back.
    test1 = (root / "evaluation_setup" / "fold1_test.txt").read_text().splitlines()
    assert len(test1) == 20 and "bus01.wav\tbus" in test1
    assert len((root / "evaluation_setup" / "fold1_train.txt").read_text().splitlines()) == 80
    again = DCASE2013(root, clip_seconds=0.1)
    assert again.split_source == "setup files" and _folds(again) == folds
    for k in ds.folds:
        train, test = ds.split(k)
        assert not {r.clip_id for r in train.records} & {r.clip_id for r in test.records}
        assert len(test) == 20 and len(train) == 80


def test_stratified_folds_do_not_depend_on_input_order():
    names = [f"{scene}{i:02d}.wav" for scene in SCENES for i in range(1, 11)]
    shuffled = names[:]
    random.Random(0).shuffle(shuffled)
    assert stratified_folds(names) == stratified_folds(shuffled)
    with pytest.raises(MetadataError, match="not a DCASE2013 recording"):
        stratified_folds(["car01.wav"])


def test_items_are_mono_at_the_model_rate(tmp_path):
    ds = DCASE2013(make_dcase2013(tmp_path / "d", clips_per_scene=2), clip_seconds=0.25)
    wave, target = ds[0]
    assert wave.shape == (8000,) and wave.dtype == torch.float32 and target.dtype == torch.long
    assert ds.class_names[int(target)] == ds.records[0].clip_id.rstrip("0123456789.wav")
    assert DCASE2013(tmp_path / "d").clip_samples == 960000  # 30 s by default


@pytest.mark.parametrize("setup_labels", [True, False])
def test_setup_files_define_the_folds(tmp_path, setup_labels):
    root = make_dcase2013(tmp_path / "d", with_setup=True, setup_labels=setup_labels, subfolder=True)
    ds = DCASE2013(root, clip_seconds=0.1)
    assert ds.split_source == "setup files" and ds.setup_dir == root / "evaluation_setup"
    expected = setup_folds(10)
    assert all(r.fold == expected[int(r.clip_id[-6:-4]) - 1] for r in ds.records)
    assert all(r.path.parent.name == "scenes_stereo" for r in ds.records)
    assert read_setup(root / "evaluation_setup") == _folds(ds)


def test_scenes_stereo_subfolder_without_setup(tmp_path):
    root = make_dcase2013(tmp_path / "d", clips_per_scene=4, subfolder=True)
    ds = DCASE2013(root, clip_seconds=0.1)
    assert len(ds) == 40 and ds.folds == [1, 2] and (root / "evaluation_setup" / "fold2_test.txt").is_file()


def test_unwritable_root_writes_the_split_to_the_cache(tmp_path, monkeypatch):
    root = make_dcase2013(tmp_path / "d", clips_per_scene=4)
    real_write = dcase_module.write_setup

    def refuse_root(setup_dir, assignment):
        if setup_dir == root / "evaluation_setup":
            raise PermissionError(13, "Permission denied", str(setup_dir))
        real_write(setup_dir, assignment)

    monkeypatch.setattr(dcase_module, "write_setup", refuse_root)
    ds = DCASE2013(root, clip_seconds=0.1)
    assert ds.split_source == "generated"
    assert ds.setup_dir.is_relative_to(tmp_path / "vipann-cache" / "splits")
    assert read_setup(ds.setup_dir) == _folds(ds)
    assert not (root / "evaluation_setup").exists()


def test_explicit_setup_dir(tmp_path):
    root = make_dcase2013(tmp_path / "d", clips_per_scene=2)
    ds = DCASE2013(root, clip_seconds=0.1, setup_dir=tmp_path / "mysplit")
    assert ds.setup_dir == tmp_path / "mysplit" and (tmp_path / "mysplit" / "fold1_test.txt").is_file()
    assert not (root / "evaluation_setup").exists()
    assert DCASE2013(root, clip_seconds=0.1, setup_dir=tmp_path / "mysplit").split_source == "setup files"


def test_inconsistent_setup_files_are_rejected(tmp_path):
    root = make_dcase2013(tmp_path / "d", clips_per_scene=5, with_setup=True)
    setup = root / "evaluation_setup"
    test2 = setup / "fold2_test.txt"
    test2.write_text(test2.read_text() + "scenes_stereo/bus01.wav\tbus\n")  # bus01 is in fold 1 too
    with pytest.raises(MetadataError, match=r"bus01\.wav is in the test lists of folds 1 and 2"):
        DCASE2013(root)
    test2.write_text("office02.wav\tpark\n")
    with pytest.raises(MetadataError, match="labelled 'park'"):
        DCASE2013(root)
    (setup / "fold2_test.txt").unlink()
    with pytest.raises(MetadataError, match="must hold"):
        DCASE2013(root)


def test_train_list_must_complement_the_test_list(tmp_path):
    root = make_dcase2013(tmp_path / "d", clips_per_scene=5, with_setup=True)
    train = root / "evaluation_setup" / "fold3_train.txt"
    train.write_text("\n".join(train.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(MetadataError, match=r"fold3_train\.txt"):
        DCASE2013(root)


def test_foreign_files_are_rejected(tmp_path):
    root = make_dcase2013(tmp_path / "d", clips_per_scene=2)
    write_audio(root / "car01.wav", torch.zeros(100).numpy(), 44100)
    with pytest.raises(MetadataError, match=r"car01\.wav"):
        DCASE2013(root)
    with pytest.raises(FileNotFoundError, match=r"no \.wav recordings"):
        DCASE2013(tmp_path / "empty")


def test_missing_recording_listed_in_setup(tmp_path):
    root = make_dcase2013(tmp_path / "d", clips_per_scene=5, with_setup=True, subfolder=True)
    (root / "scenes_stereo" / "park03.wav").unlink()
    with pytest.raises(MissingClipsError, match=r"park03\.wav"):
        DCASE2013(root)
    ds = DCASE2013(root, on_error="skip")
    assert len(ds) == 49 and [c for c, _ in ds.skipped] == ["park03.wav"]
