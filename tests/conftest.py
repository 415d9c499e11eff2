"""Shared pytest set-up: make the test helpers (``_golden``) importable from every sub-folder."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _two_threads():
    # CI has 2 cores; keep every test on a predictable thread count.
    torch.set_num_threads(2)
    yield
