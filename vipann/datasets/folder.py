"""Generic datasets: a folder of audio with a CSV of labels, and an unlabelled folder.

:class:`AudioFolder` covers any labelled collection (multi-class or multi-label, with or without
folds) described by a CSV; :class:`UnlabelledFolder` is the out-of-distribution input of the
uncertainty evaluation (the VI-PANN paper uses ShipsEar's hydrophone recordings), optionally cut
into consecutive clips.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from vipann.datasets._metadata import read_csv, to_int
from vipann.datasets.audio import audio_info
from vipann.datasets.base import ClipDataset
from vipann.datasets.errors import AudioReadError, MetadataError
from vipann.datasets.records import ClipRecord, OnError

__all__ = ["AUDIO_EXTENSIONS", "AudioFolder", "UnlabelledFolder"]

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")


def _class_order(labels: Iterable[str]) -> list[str]:
    unique = set(labels)
    # Integer-like labels ("0", "2", "10") are ordered numerically, everything else alphabetically.
    if unique and all(label.lstrip("-").isdigit() for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


class AudioFolder(ClipDataset):
    """A folder of audio files labelled by a CSV (multi-class or multi-label, optional folds).

    The CSV has one row per clip. ``filename_col`` holds the file's path relative to ``root``
    (sub-folders allowed); ``label_col`` holds the class name, or for ``multilabel=True`` the class
    names joined by ``label_sep`` (an empty cell is a clip with no positive class); ``fold_col``,
    when given, holds integer folds. Without ``class_names`` the classes are the labels found,
    sorted (numerically when they are all integers).

    Args:
        root: The folder the file names are relative to.
        labels_csv: The CSV; a relative path is relative to ``root``.
        filename_col: Column of file names.
        label_col: Column of labels, or ``None`` for an unlabelled list of files.
        fold_col: Column of folds, or ``None``.
        multilabel: Labels are ``label_sep``-separated sets of class names.
        label_sep: Separator of multi-label cells.
        class_names: The classes in index order; every label must be one of them.
        sample_rate: Sample rate of the returned waveforms (the model's).
        clip_seconds: Clip length (10 s by default, AudioSet's clip length that PANNs were trained on).
        on_error: ``"raise"`` or ``"skip"`` for missing or unreadable clips.
        resample_backend: ``"auto"``, ``"soxr"`` or ``"torchaudio"``.

    Raises:
        FileNotFoundError: If the CSV does not exist.
        MetadataError: For missing columns, duplicate files, empty or unknown labels, bad folds.
        MissingClipsError: If listed files are missing and ``on_error="raise"``.

    Example:
        >>> ds = AudioFolder("my_sounds", "labels.csv", multilabel=True, fold_col="fold")  # doctest: +SKIP
        >>> ds.targets.shape  # (N, C) multi-hot  # doctest: +SKIP
    """

    dataset_name = "folder"

    def __init__(
        self,
        root: str | os.PathLike[str],
        labels_csv: str | os.PathLike[str] = "labels.csv",
        *,
        filename_col: str = "filename",
        label_col: str | None = "label",
        fold_col: str | None = None,
        multilabel: bool = False,
        label_sep: str = ";",
        class_names: Sequence[str] | None = None,
        sample_rate: int = 32000,
        clip_seconds: float = 10.0,
        on_error: OnError = "raise",
        resample_backend: str = "auto",
    ) -> None:
        root = Path(root).expanduser()
        csv_path = root / labels_csv  # an absolute labels_csv replaces root
        if not csv_path.is_file():
            raise FileNotFoundError(f"folder: labels CSV {str(csv_path)!r} not found")
        columns = [filename_col] + [c for c in (label_col, fold_col) if c is not None]
        table = read_csv(csv_path, columns, self.dataset_name)
        rows = table.to_dict("records")
        raw_labels = [
            self._split_label(cells, label_col, multilabel, label_sep, row, csv_path) for row, cells in enumerate(rows)
        ]
        found = {name for names in raw_labels if names is not None for name in names}
        if class_names is None:
            class_names = _class_order(found) if label_col is not None else ()
        unknown = sorted(found - set(class_names))
        if unknown:
            raise MetadataError(f"folder: {csv_path} has labels that are not in class_names: {unknown[:20]}")
        index = {name: i for i, name in enumerate(class_names)}
        records, seen = [], set()
        for row, (cells, names) in enumerate(zip(rows, raw_labels)):
            filename = cells[filename_col].strip()
            if not filename or filename in seen:
                raise MetadataError(f"folder: {csv_path} line {row + 2}: empty or repeated file name {filename!r}")
            seen.add(filename)
            fold = to_int(cells[fold_col], fold_col, row, csv_path, self.dataset_name) if fold_col else None
            label: int | tuple[int, ...] | None = None
            if names is not None and multilabel:
                label = tuple(int(name in names) for name in class_names)
            elif names is not None:
                label = index[names[0]]
            records.append(ClipRecord(path=root / filename, label=label, fold=fold, clip_id=filename))
        self.labels_csv = csv_path
        super().__init__(
            records,
            class_names=class_names,
            sample_rate=sample_rate,
            clip_seconds=clip_seconds,
            multilabel=multilabel,
            on_error=on_error,
            root=root,
            resample_backend=resample_backend,
        )

    @staticmethod
    def _split_label(
        cells: dict[str, str], label_col: str | None, multilabel: bool, sep: str, row: int, path: Path
    ) -> list[str] | None:
        if label_col is None:
            return None
        cell = cells[label_col].strip()
        if multilabel:
            return [name.strip() for name in cell.split(sep) if name.strip()]
        if not cell:
            raise MetadataError(f"folder: {path} line {row + 2}: empty label (multi-class clips need one)")
        return [cell]


class UnlabelledFolder(ClipDataset):
    """Every audio file under a folder, unlabelled (targets are ``-1``), for out-of-distribution tests.

    Files are found recursively, sorted by relative path; hidden files (``.*``, e.g. macOS
    ``._x.wav`` resource forks) are ignored. Each file gives one clip (its first ``clip_seconds``),
    or with ``segment=True`` every full ``clip_seconds`` window of it (at least one, padded, for a
    file shorter than a clip); segment clip ids are ``<path>@<start>s``.

    Args:
        root: The folder.
        sample_rate: Sample rate of the returned waveforms (the model's).
        clip_seconds: Clip length.
        extensions: File extensions to include (case-insensitive).
        segment: Cut each file into consecutive non-overlapping clips (reads every file's header).
        on_error: ``"raise"`` or ``"skip"`` for unreadable files.
        resample_backend: ``"auto"``, ``"soxr"`` or ``"torchaudio"``.

    Raises:
        FileNotFoundError: If ``root`` holds no file with one of ``extensions``.
        MissingClipsError: If a header cannot be read (``segment=True``) and ``on_error="raise"``.

    Example:
        >>> ood = UnlabelledFolder("ShipsEar", sample_rate=32000, clip_seconds=5.0, segment=True)  # doctest: +SKIP
    """

    dataset_name = "unlabelled"

    def __init__(
        self,
        root: str | os.PathLike[str],
        sample_rate: int = 32000,
        clip_seconds: float = 10.0,
        *,
        extensions: Sequence[str] = AUDIO_EXTENSIONS,
        segment: bool = False,
        on_error: OnError = "raise",
        resample_backend: str = "auto",
    ) -> None:
        root = Path(root).expanduser()
        wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
        files = sorted(
            (p for p in root.rglob("*") if p.suffix.lower() in wanted and not p.name.startswith(".") and p.is_file()),
            key=lambda p: p.relative_to(root).as_posix(),
        )
        if not files:
            raise FileNotFoundError(f"unlabelled: no {sorted(wanted)} files under {str(root)!r}")
        records, problems = [], []
        for path in files:
            clip_id = path.relative_to(root).as_posix()
            if not segment:
                records.append(ClipRecord(path=path, label=None, fold=None, clip_id=clip_id))
                continue
            try:
                duration = audio_info(path).duration
            except AudioReadError as error:
                problems.append((clip_id, str(error)))
                continue
            count = max(1, math.floor(duration / clip_seconds + 1e-9))
            for j in range(count):
                offset = j * clip_seconds
                records.append(
                    ClipRecord(path=path, label=None, fold=None, clip_id=f"{clip_id}@{offset:g}s", offset=offset)
                )
        super().__init__(
            records,
            class_names=(),
            sample_rate=sample_rate,
            clip_seconds=clip_seconds,
            on_error=on_error,
            root=root,
            resample_backend=resample_backend,
        )
        self._apply_on_error(problems, set())
