import os
import pickle
import re
import shutil

import numpy as np
import pytest
import torch
from _make_datasets import make_esc50
from safetensors.numpy import load_file
from torch.utils.data import DataLoader

import vipann.datasets.base as base_module
from vipann.datasets import ESC50, MissingClipsError

CLIP = 0.1  # seconds per cached clip, to keep the cache tiny


@pytest.fixture
def esc50_root(tmp_path):
    return make_esc50(tmp_path / "data", classes=range(4), seconds=0.05)


@pytest.fixture
def decode_counter(monkeypatch):
    calls = []
    real = base_module.load_audio

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(base_module, "load_audio", counting)
    return calls


def _all(ds):
    return torch.stack([ds[i][0] for i in range(len(ds))])


def test_float32_cache_equals_direct_decoding(esc50_root, tmp_path):
    direct = ESC50(esc50_root, clip_seconds=CLIP)
    cached = ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "c", dtype="float32", progress=False)
    assert cached.cache_path.parent == tmp_path / "c" and cached.cache_path.suffix == ".safetensors"
    assert torch.equal(_all(cached), _all(direct))
    # A standard safetensors file holding one (N, clip_samples) tensor.
    stored = load_file(str(cached.cache_path))["audio"]
    assert stored.dtype == np.float32 and stored.shape == (20, 3200)
    np.testing.assert_array_equal(stored, _all(direct).numpy())


def test_float16_cache_is_close_and_default(esc50_root, tmp_path):
    direct = ESC50(esc50_root, clip_seconds=CLIP)
    cached = ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "c", progress=False)
    assert load_file(str(cached.cache_path))["audio"].dtype == np.float16
    assert cached[0][0].dtype == torch.float32
    torch.testing.assert_close(_all(cached), _all(direct), atol=1e-3, rtol=0)


def test_cache_is_reused_without_decoding(esc50_root, tmp_path, decode_counter):
    first = ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "c", progress=False)
    assert len(decode_counter) == 20
    stamp = first.cache_path.stat().st_mtime_ns
    decode_counter.clear()
    second = ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "c", progress=False)
    values = _all(second)
    assert decode_counter == [] and second.cache_path == first.cache_path
    assert second.cache_path.stat().st_mtime_ns == stamp
    assert torch.equal(values, _all(first))
    # Folds share the cache of the dataset they came from.
    train, test = second.split(3)
    assert train.cache_path == first.cache_path
    assert torch.equal(_all(test), values[[r.fold == 3 for r in second.records]])
    assert decode_counter == []
    assert sorted(os.listdir(tmp_path / "c")) == [first.cache_path.name]  # no temporary files left


def test_other_settings_or_changed_files_make_a_new_cache(esc50_root, tmp_path):
    a = ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "c", progress=False).cache_path
    b = ESC50(esc50_root, clip_seconds=CLIP, sample_rate=16000).cache(tmp_path / "c", progress=False).cache_path
    c = ESC50(esc50_root, clip_seconds=CLIP, folds=[1]).cache(tmp_path / "c", progress=False).cache_path
    assert len({a, b, c}) == 3
    touched = next((esc50_root / "audio").iterdir())
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    d = ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "c", progress=False).cache_path
    assert d != a


def test_default_cache_directory(esc50_root, tmp_path):
    ds = ESC50(esc50_root, clip_seconds=CLIP).cache(progress=False)
    assert ds.cache_path.parent == tmp_path / "vipann-cache" / "audio"  # VIPANN_CACHE_DIR (conftest)
    assert ds.cache_path.name.startswith("esc50-")


def test_in_memory_cache(esc50_root, tmp_path):
    disk = ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "c", progress=False)
    ram = ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "c", in_memory=True, progress=False)
    assert torch.equal(_all(ram), _all(disk))


def test_cached_dataset_pickles_without_its_data_and_works_in_workers(esc50_root, tmp_path):
    ds = ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "c", progress=False)
    _ = ds[0]  # opens the memory map
    clone = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 20 * 3200  # the memory map is re-opened, not copied
    assert torch.equal(_all(clone), _all(ds))
    loader = DataLoader(ds, batch_size=5, num_workers=2)
    waves = torch.cat([w for w, _ in loader])
    assert torch.equal(waves, _all(ds))


def test_unreadable_clip_while_caching(esc50_root, tmp_path, decode_counter):
    victim = sorted((esc50_root / "audio").iterdir())[5]
    victim.write_bytes(b"RIFF....WAVEfmt broken")
    with pytest.raises(MissingClipsError, match=re.escape(victim.name)):
        ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists() or os.listdir(tmp_path / "c") == []  # nothing half-written
    ds = ESC50(esc50_root, clip_seconds=CLIP, on_error="skip").cache(tmp_path / "c", progress=False)
    assert len(ds) == 19 and [c for c, _ in ds.skipped] == [victim.name]
    assert victim.name not in {r.clip_id for r in ds.records}
    # The failure is recorded in the cache: the next run skips it without decoding anything.
    decode_counter.clear()
    again = ESC50(esc50_root, clip_seconds=CLIP, on_error="skip").cache(tmp_path / "c", progress=False)
    assert decode_counter == [] and [c for c, _ in again.skipped] == [victim.name]
    assert torch.equal(_all(again), _all(ds))
    with pytest.raises(MissingClipsError, match=re.escape(victim.name)):
        ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "c", progress=False)


def test_threaded_build_matches(esc50_root, tmp_path):
    serial = ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "a", dtype="float32", progress=False)
    threaded = ESC50(esc50_root, clip_seconds=CLIP).cache(
        tmp_path / "b", dtype="float32", num_workers=3, progress=False
    )
    assert torch.equal(_all(serial), _all(threaded))


def test_corrupt_cache_file_is_rebuilt(esc50_root, tmp_path):
    path = ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "c", progress=False).cache_path
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size - 10)
    rebuilt = ESC50(esc50_root, clip_seconds=CLIP).cache(tmp_path / "c", progress=False)
    assert rebuilt.cache_path == path and path.stat().st_size > 0
    shutil.rmtree(tmp_path / "c")
