"""ESC-50 (Piczak, 2015): 2,000 five-second environmental sound clips in 50 classes, 5 folds.

The dataset is read exactly as distributed (``ESC-50-master/``)::

    meta/esc50.csv   filename,fold,target,category,esc10,src_file,take
    audio/<fold>-<src_file>-<take>-<target>.wav      44.1 kHz mono 16-bit, 5 s

Evaluation protocol: 5-fold cross-validation on the official folds (clips cut from one source
recording share a fold), mean accuracy over the folds.

References:
    K. J. Piczak, "ESC: Dataset for Environmental Sound Classification", ACM Multimedia 2015.
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

__all__ = ["ESC10_TARGETS", "ESC50"]

#: ESC-50 targets of the ESC-10 subset, in ESC-10 class-index order: dog, rooster, rain,
#: sea_waves, crackling_fire, crying_baby, sneezing, clock_tick, helicopter, chainsaw.
ESC10_TARGETS: tuple[int, ...] = (0, 1, 10, 11, 12, 20, 21, 38, 40, 41)

_BOOL = {"true": True, "false": False}


class ESC50(ClipDataset):
    """The ESC-50 dataset (or its ESC-10 subset) with its official folds.

    Args:
        root: ``ESC-50-master/`` as distributed, or the folder it was extracted into.
        sample_rate: Sample rate of the returned waveforms (the model's).
        clip_seconds: Clip length; ESC-50 clips are 5 s.
        folds: Keep only these folds (default: all five).
        on_error: ``"raise"`` or ``"skip"`` for missing or unreadable clips
            (see :class:`~vipann.datasets.ClipDataset`).
        esc10: Keep only the ESC-10 clips (column ``esc10``), relabelled 0-9 in the order of
            :data:`ESC10_TARGETS`.
        resample_backend: ``"auto"``, ``"soxr"`` or ``"torchaudio"``.

    Raises:
        FileNotFoundError: If ``root`` holds no ``meta/esc50.csv``.
        MetadataError: If the CSV is not the official format or its categories are not ESC-50's.
        MissingClipsError: If listed clips are missing and ``on_error="raise"``.
        ValueError: For folds outside 1-5.

    Example:
        >>> ds = ESC50("ESC-50-master", sample_rate=32000)  # doctest: +SKIP
        >>> train, test = ds.split(test_fold=5)  # doctest: +SKIP
        >>> wave, target = test[0]  # (160000,) float32, int64 class index  # doctest: +SKIP
    """

    dataset_name = "esc50"
    num_folds = 5

    def __init__(
        self,
        root: str | os.PathLike[str],
        sample_rate: int = 32000,
        clip_seconds: float = 5.0,
        folds: Iterable[int] | None = None,
        on_error: OnError = "raise",
        esc10: bool = False,
        resample_backend: str = "auto",
    ) -> None:
        top = find_root(root, "meta/esc50.csv", ("ESC-50-master", "ESC-50"), self.dataset_name)
        names = get_labels("esc50")
        records = _read_records(top, names, esc10)
        if folds is not None:
            wanted = {int(f) for f in folds}
            if not wanted <= set(range(1, self.num_folds + 1)):
                raise ValueError(f"esc50 folds are 1-{self.num_folds}, got {sorted(wanted)}")
            records = [r for r in records if r.fold in wanted]
        self.esc10 = esc10
        super().__init__(
            records,
            class_names=[names[t] for t in ESC10_TARGETS] if esc10 else names,
            sample_rate=sample_rate,
            clip_seconds=clip_seconds,
            on_error=on_error,
            root=top,
            resample_backend=resample_backend,
        )


def _read_records(top: Path, names: tuple[str, ...], esc10: bool) -> list[ClipRecord]:
    path = top / "meta" / "esc50.csv"
    columns = ["filename", "fold", "target", "category"] + (["esc10"] if esc10 else [])
    table = read_csv(path, columns, "esc50")
    seen: dict[int, set[str]] = {}
    records, filenames = [], set()
    for row, cells in enumerate(table.to_dict("records")):
        filename = cells["filename"].strip()
        fold = to_int(cells["fold"], "fold", row, path, "esc50")
        target = to_int(cells["target"], "target", row, path, "esc50")
        seen.setdefault(target, set()).add(cells["category"].strip())
        if not 1 <= fold <= ESC50.num_folds:
            raise MetadataError(f"esc50: {path} line {row + 2}: fold {fold} is not in 1-{ESC50.num_folds}")
        if filename in filenames:
            raise MetadataError(f"esc50: {path} lists {filename!r} twice")
        filenames.add(filename)
        if esc10:
            flag = _BOOL.get(cells["esc10"].strip().lower())
            if flag is None:
                raise MetadataError(f"esc50: {path} line {row + 2}: esc10 is {cells['esc10']!r}, not True/False")
            if not flag:
                continue
            if target not in ESC10_TARGETS:
                raise MetadataError(f"esc50: {path} line {row + 2}: target {target} is marked esc10 but is not ESC-10")
            target = ESC10_TARGETS.index(target)
        records.append(ClipRecord(path=top / "audio" / filename, label=target, fold=fold, clip_id=filename))
    check_class_names(seen, names, "esc50", path)
    return records
