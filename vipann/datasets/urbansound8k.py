"""UrbanSound8K (Salamon et al., 2014): 8,732 urban sound clips of at most 4 s, 10 classes, 10 folds.

The dataset is read exactly as distributed (``UrbanSound8K/``)::

    metadata/UrbanSound8K.csv   slice_file_name,fsID,start,end,salience,fold,classID,class
    audio/fold<k>/<fsID>-<classID>-<occurrenceID>-<sliceID>.wav

The files keep their Freesound source formats: sample rates from 8 to 192 kHz, mono or stereo,
8-, 16- and 24-bit PCM and 32-bit float. Every clip is decoded, downmixed, resampled to
``sample_rate`` and zero-padded to ``clip_seconds`` (4 s by default, the longest clip).

Evaluation protocol: 10-fold cross-validation on the official folds only; never re-shuffle, since
the slices of one recording are in one fold.

References:
    J. Salamon, C. Jacoby and J. P. Bello, "A Dataset and Taxonomy for Urban Sound Research",
    ACM Multimedia 2014.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from vipann.datasets._metadata import check_class_names, find_root, read_csv, to_int
from vipann.datasets.base import ClipDataset
from vipann.datasets.errors import MetadataError
from vipann.datasets.labels import get_labels
from vipann.datasets.records import ClipRecord, OnError

__all__ = ["UrbanSound8K"]


class UrbanSound8K(ClipDataset):
    """The UrbanSound8K dataset with its official folds.

    Args:
        root: ``UrbanSound8K/`` as distributed, or the folder it was extracted into.
        sample_rate: Sample rate of the returned waveforms (the model's).
        clip_seconds: Clip length; shorter clips are zero-padded at the end.
        folds: Keep only these folds (default: all ten).
        on_error: ``"raise"`` or ``"skip"`` for missing or unreadable clips
            (see :class:`~vipann.datasets.ClipDataset`).
        resample_backend: ``"auto"``, ``"soxr"`` or ``"torchaudio"``.

    Raises:
        FileNotFoundError: If ``root`` holds no ``metadata/UrbanSound8K.csv``.
        MetadataError: If the CSV is not the official format or its classes are not UrbanSound8K's.
        MissingClipsError: If listed clips are missing and ``on_error="raise"``.
        ValueError: For folds outside 1-10.

    Example:
        >>> ds = UrbanSound8K("UrbanSound8K", sample_rate=32000).cache()  # doctest: +SKIP
        >>> for k in ds.folds:  # doctest: +SKIP
        ...     train, test = ds.split(test_fold=k)
    """

    dataset_name = "urbansound8k"
    num_folds = 10

    def __init__(
        self,
        root: str | os.PathLike[str],
        sample_rate: int = 32000,
        clip_seconds: float = 4.0,
        folds: Iterable[int] | None = None,
        on_error: OnError = "raise",
        resample_backend: str = "auto",
    ) -> None:
        top = find_root(root, "metadata/UrbanSound8K.csv", ("UrbanSound8K",), self.dataset_name)
        names = get_labels("urbansound8k")
        records = _read_records(top, names)
        if folds is not None:
            wanted = {int(f) for f in folds}
            if not wanted <= set(range(1, self.num_folds + 1)):
                raise ValueError(f"urbansound8k folds are 1-{self.num_folds}, got {sorted(wanted)}")
            records = [r for r in records if r.fold in wanted]
        super().__init__(
            records,
            class_names=names,
            sample_rate=sample_rate,
            clip_seconds=clip_seconds,
            on_error=on_error,
            root=top,
            resample_backend=resample_backend,
        )


def _read_records(top: Path, names: tuple[str, ...]) -> list[ClipRecord]:
    path = top / "metadata" / "UrbanSound8K.csv"
    table = read_csv(path, ["slice_file_name", "fold", "classID", "class"], "urbansound8k")
    seen: dict[int, set[str]] = {}
    records, filenames = [], set()
    for row, cells in enumerate(table.to_dict("records")):
        filename = cells["slice_file_name"].strip()
        fold = to_int(cells["fold"], "fold", row, path, "urbansound8k")
        class_id = to_int(cells["classID"], "classID", row, path, "urbansound8k")
        seen.setdefault(class_id, set()).add(cells["class"].strip())
        if not 1 <= fold <= UrbanSound8K.num_folds:
            raise MetadataError(
                f"urbansound8k: {path} line {row + 2}: fold {fold} is not in 1-{UrbanSound8K.num_folds}"
            )
        if filename in filenames:
            raise MetadataError(f"urbansound8k: {path} lists {filename!r} twice")
        filenames.add(filename)
        records.append(
            ClipRecord(path=top / "audio" / f"fold{fold}" / filename, label=class_id, fold=fold, clip_id=filename)
        )
    check_class_names(seen, names, "urbansound8k", path)
    return records
