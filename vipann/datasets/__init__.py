"""Downstream audio datasets read exactly as distributed, as fixed-length mono clips.

Every loader decodes with soundfile, downmixes to mono, resamples to the model's sample rate,
pads or crops to the clip length and exposes the official folds; see :class:`ClipDataset` for
what an item is, how missing or unreadable clips are handled (``on_error``) and the decoded-audio
cache.

Example:
    >>> from vipann.datasets import ESC50
    >>> ds = ESC50("ESC-50-master", sample_rate=32000).cache()  # doctest: +SKIP
    >>> train, test = ds.split(test_fold=1)  # doctest: +SKIP

Importing the package is light: its names are loaded from their modules on first use (soundfile,
soxr and pandas are imported only then), so the label sets (:mod:`vipann.datasets.labels`) can be
read by the zoo without pulling in audio I/O.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vipann.datasets.audio import AudioInfo, audio_info, fix_length, load_audio, resample
    from vipann.datasets.base import ClipDataset
    from vipann.datasets.dcase2013 import DCASE2013, stratified_folds
    from vipann.datasets.errors import AudioReadError, MetadataError, MissingClipsError, TruncatedAudioWarning
    from vipann.datasets.esc50 import ESC10_TARGETS, ESC50
    from vipann.datasets.folder import AudioFolder, UnlabelledFolder
    from vipann.datasets.records import ClipRecord
    from vipann.datasets.registry import DATASETS, get_dataset, list_datasets
    from vipann.datasets.synthetic import (
        AUDIOSET_CLASSES,
        DOWNSTREAM_CLASSES,
        OOD_CLASS,
        MiniAudioSet,
        SyntheticDownstream,
        corpus,
        make_downstream,
        make_mini_audioset,
        make_ood,
    )
    from vipann.datasets.urbansound8k import UrbanSound8K

_EXPORTS = {
    "AUDIOSET_CLASSES": "vipann.datasets.synthetic",
    "AudioFolder": "vipann.datasets.folder",
    "AudioInfo": "vipann.datasets.audio",
    "AudioReadError": "vipann.datasets.errors",
    "ClipDataset": "vipann.datasets.base",
    "ClipRecord": "vipann.datasets.records",
    "DATASETS": "vipann.datasets.registry",
    "DCASE2013": "vipann.datasets.dcase2013",
    "DOWNSTREAM_CLASSES": "vipann.datasets.synthetic",
    "ESC10_TARGETS": "vipann.datasets.esc50",
    "ESC50": "vipann.datasets.esc50",
    "MetadataError": "vipann.datasets.errors",
    "MiniAudioSet": "vipann.datasets.synthetic",
    "MissingClipsError": "vipann.datasets.errors",
    "OOD_CLASS": "vipann.datasets.synthetic",
    "SyntheticDownstream": "vipann.datasets.synthetic",
    "TruncatedAudioWarning": "vipann.datasets.errors",
    "UnlabelledFolder": "vipann.datasets.folder",
    "UrbanSound8K": "vipann.datasets.urbansound8k",
    "audio_info": "vipann.datasets.audio",
    "corpus": "vipann.datasets.synthetic",
    "fix_length": "vipann.datasets.audio",
    "get_dataset": "vipann.datasets.registry",
    "list_datasets": "vipann.datasets.registry",
    "load_audio": "vipann.datasets.audio",
    "make_downstream": "vipann.datasets.synthetic",
    "make_mini_audioset": "vipann.datasets.synthetic",
    "make_ood": "vipann.datasets.synthetic",
    "resample": "vipann.datasets.audio",
    "stratified_folds": "vipann.datasets.dcase2013",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vipann.datasets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "AUDIOSET_CLASSES",
    "DATASETS",
    "DCASE2013",
    "DOWNSTREAM_CLASSES",
    "ESC10_TARGETS",
    "ESC50",
    "OOD_CLASS",
    "AudioFolder",
    "AudioInfo",
    "AudioReadError",
    "ClipDataset",
    "ClipRecord",
    "MetadataError",
    "MiniAudioSet",
    "MissingClipsError",
    "SyntheticDownstream",
    "TruncatedAudioWarning",
    "UnlabelledFolder",
    "UrbanSound8K",
    "audio_info",
    "corpus",
    "fix_length",
    "get_dataset",
    "list_datasets",
    "load_audio",
    "make_downstream",
    "make_mini_audioset",
    "make_ood",
    "resample",
    "stratified_folds",
]
