import pytest


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path, monkeypatch):
    # Generated splits and default-location caches must never land in the user's ~/.cache.
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "vipann-cache"))
    yield
