"""Dataset names -> loader classes, for configs and the command line."""

from __future__ import annotations

import os
from typing import Any

from vipann.datasets.base import ClipDataset
from vipann.datasets.dcase2013 import DCASE2013
from vipann.datasets.esc50 import ESC50
from vipann.datasets.folder import AudioFolder, UnlabelledFolder
from vipann.datasets.synthetic import SyntheticDownstream
from vipann.datasets.urbansound8k import UrbanSound8K

__all__ = ["DATASETS", "get_dataset", "list_datasets"]

DATASETS: dict[str, type[ClipDataset]] = {
    "esc50": ESC50,
    "urbansound8k": UrbanSound8K,
    "dcase2013": DCASE2013,
    "folder": AudioFolder,
    "unlabelled": UnlabelledFolder,
    "synthetic_downstream": SyntheticDownstream,
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`.

    Returns:
        The registered names.
    """
    return list(DATASETS)


def get_dataset(name: str, root: str | os.PathLike[str], **kwargs: Any) -> ClipDataset:
    """Build a dataset by name.

    Args:
        name: ``"esc50"``, ``"urbansound8k"``, ``"dcase2013"``, ``"folder"`` or ``"unlabelled"``.
        root: The dataset folder as distributed.
        **kwargs: Passed to the loader (``sample_rate``, ``clip_seconds``, ``on_error``, ...).

    Returns:
        The dataset.

    Raises:
        ValueError: For an unknown name.

    Example:
        >>> ds = get_dataset("esc50", "ESC-50-master", sample_rate=32000)  # doctest: +SKIP
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name](root, **kwargs)
