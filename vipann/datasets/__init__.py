"""Downstream audio datasets read exactly as distributed, as fixed-length mono clips.

Every loader decodes with soundfile, downmixes to mono, resamples to the model's sample rate,
pads or crops to the clip length and exposes the official folds; see :class:`ClipDataset` for
what an item is, how missing or unreadable clips are handled (``on_error``) and the decoded-audio
cache.

Example:
    >>> from vipann.datasets import ESC50
    >>> ds = ESC50("ESC-50-master", sample_rate=32000).cache()  # doctest: +SKIP
    >>> train, test = ds.split(test_fold=1)  # doctest: +SKIP
"""

from vipann.datasets.audio import AudioInfo, audio_info, fix_length, load_audio, resample
from vipann.datasets.base import ClipDataset
from vipann.datasets.dcase2013 import DCASE2013, stratified_folds
from vipann.datasets.errors import AudioReadError, MetadataError, MissingClipsError
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
