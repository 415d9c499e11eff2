"""The clip dataset every loader builds on: records, targets, folds, missing clips and caching.

A loader parses its metadata into :class:`ClipRecord` objects and hands them to
:class:`ClipDataset`, which owns everything that is the same for all datasets: checking that the
listed files exist, what to do when they do not (``on_error``), decoding a clip to a fixed-length
mono waveform at the model's sample rate, the official folds, and the decoded-audio cache.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vipann.datasets.audio import RESAMPLE_BACKENDS, fix_length, load_audio
from vipann.datasets.cache import AudioCache, build_cache, cache_key
from vipann.datasets.errors import AudioReadError, MissingClipsError, format_problems
from vipann.datasets.records import ON_ERROR, ClipRecord, OnError, check_labels, label_tensor, stack_labels

__all__ = ["ClipDataset"]

logger = logging.getLogger(__name__)


class ClipDataset(Dataset):
    """Fixed-length mono clips at one sample rate, with their targets and folds.

    ``dataset[i]`` is ``(waveform, target)``: a float32 ``(clip_samples,)`` waveform and a target
    that is a 0-d int64 class index (multi-class), a float32 ``(C,)`` multi-hot vector
    (multi-label), or ``-1`` (unlabelled). All items have the same shapes, so PyTorch's default
    collate batches them.

    Every listed file is checked to exist when the dataset is made (a ``stat``, no decoding). With
    ``on_error="raise"`` a missing file stops construction with :class:`MissingClipsError` naming
    every missing clip; with ``"skip"`` those clips are dropped, logged as a warning and listed in
    :attr:`skipped`. Files that exist but cannot be decoded are found by :meth:`validate` with
    ``decode=True`` or by :meth:`cache`, which apply the same rule; otherwise indexing such a clip
    raises :class:`AudioReadError` naming it.

    Args:
        records: The clips.
        class_names: Class names in class-index order (empty for unlabelled data).
        sample_rate: Sample rate of the returned waveforms in Hz (the model's rate).
        clip_seconds: Clip length in seconds; shorter audio is zero-padded at the end and longer
            audio cropped to its beginning.
        multilabel: Whether labels are multi-hot tuples.
        on_error: ``"raise"`` or ``"skip"`` for clips that are missing or unreadable.
        root: The dataset folder (used in the cache key and messages).
        resample_backend: ``"auto"``, ``"soxr"`` or ``"torchaudio"``.

    Attributes:
        records: The clips, in dataset order.
        skipped: ``(clip_id, reason)`` of every clip left out under ``on_error="skip"``.
        clip_samples: ``round(clip_seconds * sample_rate)``.

    Raises:
        ValueError: For inconsistent labels or arguments.
        MissingClipsError: For missing files with ``on_error="raise"``.
    """

    #: Name used in messages, cache file names and :func:`vipann.datasets.get_dataset`.
    dataset_name: str = "clips"

    def __init__(
        self,
        records: Iterable[ClipRecord],
        *,
        class_names: Sequence[str],
        sample_rate: int,
        clip_seconds: float,
        multilabel: bool = False,
        on_error: OnError = "raise",
        root: str | os.PathLike[str] | None = None,
        resample_backend: str = "auto",
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if resample_backend not in RESAMPLE_BACKENDS:
            raise ValueError(f"resample_backend must be one of {RESAMPLE_BACKENDS}, got {resample_backend!r}")
        if int(sample_rate) <= 0 or clip_seconds <= 0:
            raise ValueError(f"sample_rate and clip_seconds must be positive, got {sample_rate}, {clip_seconds}")
        self.records: list[ClipRecord] = list(records)
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.multilabel = bool(multilabel)
        self.sample_rate = int(sample_rate)
        self.clip_seconds = float(clip_seconds)
        self.clip_samples = round(self.clip_seconds * self.sample_rate)
        self.on_error: OnError = on_error
        self.root = Path(root) if root is not None else None
        self.resample_backend = resample_backend
        self.skipped: list[tuple[str, str]] = []
        self._cache: AudioCache | None = None
        self._rows: np.ndarray | None = None
        check_labels(self.records, self.num_classes, self.multilabel, self.dataset_name)
        self.validate(decode=False)

    # ------------------------------------------------------------------ labels and folds
    @property
    def num_classes(self) -> int:
        """Number of classes (0 for unlabelled data)."""
        return len(self.class_names)

    @property
    def labelled(self) -> bool:
        """Whether the clips carry labels."""
        return bool(self.records) and self.records[0].label is not None

    @property
    def targets(self) -> Tensor:
        """Targets of all clips without decoding audio.

        Returns:
            ``(N,)`` int64 class indices (multi-class), ``(N, C)`` float32 multi-hot vectors
            (multi-label), or ``(N,)`` of ``-1`` (unlabelled).
        """
        return stack_labels(self.records, self.num_classes, self.multilabel)

    @property
    def folds(self) -> list[int]:
        """The folds present, sorted (empty when the dataset has no folds)."""
        return sorted({r.fold for r in self.records if r.fold is not None})

    def subset(self, folds: Iterable[int]) -> ClipDataset:
        """The clips of some folds, as a dataset of the same type (sharing the cache, if any).

        Args:
            folds: Fold numbers.

        Returns:
            A new dataset with only those folds' clips, in the original order.

        Raises:
            ValueError: If the dataset has no folds or a fold is not present.
        """
        wanted = {int(f) for f in folds}
        present = self.folds
        if not present:
            raise ValueError(f"{self.dataset_name} has no folds")
        unknown = sorted(wanted - set(present))
        if unknown:
            raise ValueError(f"{self.dataset_name}: unknown fold(s) {unknown}; the folds are {present}")
        return self._select([i for i, r in enumerate(self.records) if r.fold in wanted])

    def split(self, test_fold: int) -> tuple[ClipDataset, ClipDataset]:
        """The cross-validation split that tests on one fold and trains on the others.

        Args:
            test_fold: The held-out fold.

        Returns:
            ``(train, test)`` datasets.

        Raises:
            ValueError: If the dataset has no folds or ``test_fold`` is not one of them.
        """
        test = self.subset([test_fold])
        return self.subset([f for f in self.folds if f != int(test_fold)]), test

    def _select(self, indices: Sequence[int]) -> ClipDataset:
        new = copy.copy(self)
        new.records = [self.records[i] for i in indices]
        new.skipped = list(self.skipped)
        if self._rows is not None:
            new._rows = self._rows[np.asarray(indices, dtype=np.int64)]
        return new

    # ------------------------------------------------------------------ missing and unreadable clips
    def validate(self, decode: bool = False) -> list[tuple[str, str]]:
        """Check every clip's file, applying ``on_error`` to the ones that fail.

        Args:
            decode: Also decode every clip once (slow; finds corrupt files). Without it only the
                files' existence is checked.

        Returns:
            ``(clip_id, reason)`` of the clips that failed (already dropped under ``"skip"``).

        Raises:
            MissingClipsError: Under ``on_error="raise"`` when any clip fails, naming all of them.
        """
        problems: list[tuple[str, str]] = []
        bad: set[int] = set()
        for i, record in enumerate(self.records):
            if not record.path.is_file():
                reason = f"file not found: {record.path}"
            elif decode:
                try:
                    self._decode(record)
                    continue
                except AudioReadError as error:
                    reason = str(error)
            else:
                continue
            problems.append((record.clip_id, reason))
            bad.add(i)
        self._apply_on_error(problems, bad)
        return problems

    def _apply_on_error(self, problems: list[tuple[str, str]], bad: set[int]) -> None:
        if not problems:
            return
        if self.on_error == "raise":
            raise MissingClipsError(self.dataset_name, problems)
        logger.warning(
            "%s: skipping %d clip(s) that are missing or unreadable (on_error='skip'):\n%s",
            self.dataset_name,
            len(problems),
            format_problems(problems),
        )
        keep = [i for i in range(len(self.records)) if i not in bad]
        self.records = [self.records[i] for i in keep]
        if self._rows is not None:
            self._rows = self._rows[np.asarray(keep, dtype=np.int64)]
        self.skipped.extend(problems)

    # ------------------------------------------------------------------ decoding
    def _decode(self, record: ClipRecord) -> np.ndarray:
        wave = load_audio(
            record.path,
            self.sample_rate,
            duration=self.clip_seconds,
            offset=record.offset,
            backend=self.resample_backend,
        )
        return fix_length(wave, self.clip_samples).numpy()

    def load_waveform(self, index: int) -> Tensor:
        """The float32 ``(clip_samples,)`` waveform of one clip (from the cache when there is one).

        Args:
            index: Clip index.

        Returns:
            The waveform.

        Raises:
            AudioReadError: If the clip cannot be decoded; the message names the clip.
        """
        record = self.records[index]
        if self._cache is not None and self._rows is not None:
            return torch.from_numpy(self._cache.row(int(self._rows[index])))
        try:
            return torch.from_numpy(self._decode(record))
        except AudioReadError as error:
            raise AudioReadError(
                f"{self.dataset_name}: clip {record.clip_id!r} cannot be loaded: {error}. "
                "Run .validate(decode=True) or .cache() with on_error='skip' to leave unreadable clips out.",
                path=str(record.path),
            ) from error

    def target(self, index: int) -> Tensor:
        """The target of one clip (see the class docstring for its form).

        Args:
            index: Clip index.

        Returns:
            The target tensor.
        """
        return label_tensor(self.records[index].label, self.multilabel)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.load_waveform(index), self.target(index)

    # ------------------------------------------------------------------ cache
    @property
    def cache_path(self) -> Path | None:
        """The cache file in use, or ``None``."""
        return self._cache.path if self._cache is not None else None

    def cache(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        dtype: str = "float16",
        in_memory: bool = False,
        num_workers: int = 0,
        progress: bool = True,
    ) -> ClipDataset:
        """Decode every clip once into a memory-mapped cache file and read from it from now on.

        The cache is a safetensors file holding one ``(N, clip_samples)`` tensor ``"audio"``. Its
        name carries a hash of the dataset root, every clip's file name, offset, size and mtime,
        the sample rate, the clip length, the resampling backend and the dtype, so a later run (or
        another process) with the same data and settings reuses it, and any change makes a new
        one. Old cache files are never deleted automatically. Folds taken with :meth:`split` or
        :meth:`subset` after caching share this cache, so cache the whole dataset once and split
        it afterwards.

        Clips that fail to decode follow ``on_error``: under ``"raise"`` the cache is not written
        and :class:`MissingClipsError` names every failed clip; under ``"skip"`` they are dropped,
        logged and recorded in the cache file, so later runs skip them without decoding.

        Args:
            directory: Where to keep cache files; default ``$VIPANN_CACHE_DIR/audio``, else
                ``$XDG_CACHE_HOME/vipann/audio``, else ``~/.cache/vipann/audio``.
            dtype: ``"float16"`` (half the disk and I/O; about 66 dB SNR, below the 16-bit
                sources' noise floor) or ``"float32"`` (bit-exact with direct decoding).
            in_memory: Load the whole cache into RAM instead of memory-mapping it.
            num_workers: Decoding threads while building (0: the calling thread).
            progress: Show a progress bar while building.

        Returns:
            ``self``, to allow ``ESC50(root).cache()``.

        Raises:
            MissingClipsError: Under ``on_error="raise"`` when clips cannot be decoded.

        Example:
            >>> ds = ESC50("ESC-50-master").cache()  # doctest: +SKIP
            >>> train, test = ds.split(test_fold=1)  # doctest: +SKIP
        """
        self.validate(decode=False)
        key = cache_key(
            root=self.root,
            records=self.records,
            sample_rate=self.sample_rate,
            clip_samples=self.clip_samples,
            backend=self.resample_backend,
            dtype=dtype,
        )
        cache = AudioCache.open(key, directory=directory, prefix=self.dataset_name, in_memory=in_memory)
        if cache is None:
            cache = build_cache(
                key,
                self.records,
                decode=self._decode,
                num_samples=self.clip_samples,
                dtype=dtype,
                directory=directory,
                prefix=self.dataset_name,
                on_error=self.on_error,
                dataset_name=self.dataset_name,
                num_workers=num_workers,
                progress=progress,
                in_memory=in_memory,
            )
        else:
            logger.info("%s: reading decoded audio from %s", self.dataset_name, cache.path)
        # Cache rows are the records' positions when the key was computed, i.e. these records.
        bad = set(cache.failed)
        problems = [(self.records[i].clip_id, "could not be decoded (recorded in the cache)") for i in sorted(bad)]
        if problems and self.on_error == "raise":
            raise MissingClipsError(self.dataset_name, problems)
        self._cache = cache
        self._rows = np.arange(len(self.records), dtype=np.int64)
        self._apply_on_error(problems, bad)
        return self

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        folds = self.folds
        fold_text = f", folds={folds[0]}..{folds[-1]}" if folds else ""
        return (
            f"{type(self).__name__}(clips={len(self)}, classes={self.num_classes}, multilabel={self.multilabel}, "
            f"sample_rate={self.sample_rate}, clip_seconds={self.clip_seconds:g}{fold_text}, "
            f"skipped={len(self.skipped)}, cached={self._cache is not None})"
        )
