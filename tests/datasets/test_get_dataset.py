import pytest
from _make_datasets import make_esc50

from vipann.datasets import DATASETS, ESC50, ClipDataset, get_dataset, list_datasets


def test_registry_names():
    assert list_datasets() == ["esc50", "urbansound8k", "dcase2013", "folder", "unlabelled", "synthetic_downstream"]
    assert all(issubclass(cls, ClipDataset) and cls.dataset_name == name for name, cls in DATASETS.items())


def test_get_dataset_builds_by_name(tmp_path):
    root = make_esc50(tmp_path, classes=[0, 1], seconds=0.01)
    ds = get_dataset("esc50", root, sample_rate=16000, clip_seconds=0.5)
    assert isinstance(ds, ESC50) and len(ds) == 10 and ds.clip_samples == 8000
    assert "ESC50(clips=10, classes=50" in repr(ds)
    with pytest.raises(ValueError, match="choose one of: esc50"):
        get_dataset("audioset", root)
