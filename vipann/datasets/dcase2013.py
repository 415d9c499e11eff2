"""DCASE2013 acoustic scene classification: 100 stereo 30-s recordings of 10 scenes, 5 folds.

What is accepted as the dataset folder (``root``): a folder holding the development-set
recordings ``<scene><NN>.wav`` (e.g. ``bus01.wav``; 44.1 kHz, 16-bit, stereo), or a folder whose
``scenes_stereo/`` sub-folder holds them (the layout of the distributed ``scenes_stereo.zip``).
Every ``.wav`` file there must follow that naming with one of the ten scenes; anything else is an
error, since it means the folder is not DCASE2013.

Folds. When ``evaluation_setup/fold{k}_test.txt`` and ``fold{k}_train.txt`` (k = 1..K) exist, in
``root`` or next to the audio, they define the folds. Each non-empty line names one recording
(a bare file name or a path whose last part is the file name), optionally followed by whitespace
and its scene label, which must then match the file name. The test lists must partition the listed
recordings and each ``fold{k}_train.txt`` must hold exactly the other folds' test recordings.

Without setup files the paper's protocol is built deterministically by :func:`stratified_folds`:
the recordings of each scene, sorted by file name, are taken in pairs and the k-th pair goes to
fold k (``bus01, bus02`` -> fold 1, ``bus03, bus04`` -> fold 2, ...), i.e. 2 recordings per scene
per fold. The split is written, in the setup-file format with the label column, to
``root/evaluation_setup/`` (atomically) or, when ``root`` is not writable, to
``<cache>/splits/dcase2013-<hash of root>/evaluation_setup/``; the place is logged and kept in
:attr:`DCASE2013.setup_dir`.

References:
    D. Stowell, D. Giannoulis, E. Benetos, M. Lagrange and M. D. Plumbley, "Detection and
    Classification of Acoustic Scenes and Events", IEEE Transactions on Multimedia 17(10), 2015.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from vipann.datasets.base import ClipDataset
from vipann.datasets.cache import default_cache_dir
from vipann.datasets.errors import MetadataError
from vipann.datasets.labels import get_labels
from vipann.datasets.records import ClipRecord, OnError
from vipann.utils.atomic import write_text_atomic

__all__ = ["DCASE2013", "read_setup", "stratified_folds", "write_setup"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^([a-z]+)(\d+)\.wav$")
_SETUP = re.compile(r"^fold(\d+)_(train|test)\.txt$")


def _scene_of(filename: str) -> str:
    match = _NAME.match(filename)
    scenes = get_labels("dcase2013")
    if match is None or match.group(1) not in scenes:
        raise MetadataError(
            f"dcase2013: {filename!r} is not a DCASE2013 recording name <scene><NN>.wav with a scene in {list(scenes)}"
        )
    return match.group(1)


def stratified_folds(filenames: Iterable[str], num_folds: int = 5, per_fold: int = 2) -> dict[str, int]:
    """The deterministic stratified split used when no setup files exist.

    Per scene, the recordings sorted by file name are cut into groups of ``per_fold``; group ``g``
    (0-based) goes to fold ``g mod num_folds + 1``. With the full dataset (10 recordings per scene)
    every fold gets exactly 2 recordings of every scene.

    Args:
        filenames: Recording file names ``<scene><NN>.wav``.
        num_folds: Number of folds.
        per_fold: Consecutive recordings of a scene that share a fold.

    Returns:
        File name -> fold (1-based).

    Raises:
        MetadataError: For a name that is not a DCASE2013 recording.
    """
    by_scene: dict[str, list[str]] = {}
    for name in filenames:
        by_scene.setdefault(_scene_of(name), []).append(name)
    folds = {}
    for names in by_scene.values():
        for i, name in enumerate(sorted(names)):
            folds[name] = (i // per_fold) % num_folds + 1
    return folds


def read_setup(setup_dir: Path) -> dict[str, int]:
    """Read ``fold{k}_{train,test}.txt`` files into file name -> fold.

    Args:
        setup_dir: The ``evaluation_setup`` folder.

    Returns:
        File name -> fold of every recording in a test list.

    Raises:
        MetadataError: If the files do not form a K-fold partition (see the module docstring), a
            line names no DCASE2013 recording, or a label column disagrees with the file name.
    """
    lists: dict[tuple[int, str], list[str]] = {}
    for path in sorted(setup_dir.iterdir()):
        match = _SETUP.match(path.name)
        if match:
            lists[int(match.group(1)), match.group(2)] = _read_list(path)
    folds = sorted({k for k, _ in lists})
    if folds != list(range(1, len(folds) + 1)) or any(
        (k, part) not in lists for k in folds for part in ("train", "test")
    ):
        raise MetadataError(
            f"dcase2013: {setup_dir} must hold fold{{k}}_train.txt and fold{{k}}_test.txt for k = 1..K; "
            f"found {sorted(f'fold{k}_{part}.txt' for k, part in lists)}"
        )
    assignment: dict[str, int] = {}
    for k in folds:
        for name in lists[k, "test"]:
            if name in assignment:
                raise MetadataError(f"dcase2013: {name} is in the test lists of folds {assignment[name]} and {k}")
            assignment[name] = k
    for k in folds:
        train, expected = set(lists[k, "train"]), {n for n, f in assignment.items() if f != k}
        if train != expected:
            extra, absent = sorted(train - expected), sorted(expected - train)
            raise MetadataError(
                f"dcase2013: {setup_dir}/fold{k}_train.txt must hold exactly the other folds' test recordings; "
                f"unexpected {extra[:5]}, absent {absent[:5]}"
            )
    return assignment


def _read_list(path: Path) -> list[str]:
    names = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        name = parts[0].replace("\\", "/").rsplit("/", 1)[-1]
        scene = _scene_of(name)
        if len(parts) > 1 and parts[1] != scene:
            raise MetadataError(f"dcase2013: {path} line {number}: {name} is labelled {parts[1]!r}, expected {scene!r}")
        names.append(name)
    return names


def write_setup(setup_dir: Path, assignment: dict[str, int]) -> None:
    """Write a split as ``fold{k}_{train,test}.txt`` (one tab-separated ``<file> <scene>`` line each).

    A new folder is filled under a temporary name and renamed into place, so readers never see a
    partial split; files in an existing folder are replaced one by one, atomically.

    Args:
        setup_dir: The ``evaluation_setup`` folder to create or fill.
        assignment: File name -> fold.
    """
    texts = {}
    for k in sorted(set(assignment.values())):
        for part, keep in (("test", lambda f, k=k: f == k), ("train", lambda f, k=k: f != k)):
            lines = [f"{name}\t{_scene_of(name)}\n" for name in sorted(assignment) if keep(assignment[name])]
            texts[f"fold{k}_{part}.txt"] = "".join(lines)
    setup_dir.parent.mkdir(parents=True, exist_ok=True)
    if setup_dir.exists():
        for filename, text in texts.items():
            write_text_atomic(setup_dir / filename, text)
        return
    staging = Path(tempfile.mkdtemp(dir=setup_dir.parent, prefix=f".{setup_dir.name}."))
    try:
        for filename, text in texts.items():
            (staging / filename).write_text(text, encoding="utf-8", newline="\n")
        os.replace(staging, setup_dir)
    except OSError:
        if not setup_dir.exists():
            raise
        # Another process created the folder first; its split is the same deterministic one.
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class DCASE2013(ClipDataset):
    """DCASE2013 scene classification (development set) with a 5-fold split.

    Args:
        root: The folder of the recordings, or the folder holding ``scenes_stereo/``.
        sample_rate: Sample rate of the returned waveforms (the model's).
        clip_seconds: Clip length; the recordings are 30 s.
        folds: Keep only these folds (default: all).
        on_error: ``"raise"`` or ``"skip"`` for missing or unreadable clips
            (see :class:`~vipann.datasets.ClipDataset`).
        setup_dir: Read the split from / write the generated split to this ``evaluation_setup``
            folder instead of looking in ``root``.
        resample_backend: ``"auto"``, ``"soxr"`` or ``"torchaudio"``.

    Attributes:
        setup_dir: The ``evaluation_setup`` folder the split was read from or written to.
        split_source: ``"setup files"`` or ``"generated"``.

    Raises:
        FileNotFoundError: If no recordings are found.
        MetadataError: For files that are not DCASE2013 recordings or inconsistent setup files.
        MissingClipsError: If recordings listed in setup files are missing and ``on_error="raise"``.

    Example:
        >>> ds = DCASE2013("dcase2013_scenes", sample_rate=32000)  # doctest: +SKIP
        >>> ds.split_source, ds.setup_dir  # doctest: +SKIP
        ('generated', PosixPath('dcase2013_scenes/evaluation_setup'))
    """

    dataset_name = "dcase2013"
    num_folds = 5

    def __init__(
        self,
        root: str | os.PathLike[str],
        sample_rate: int = 32000,
        clip_seconds: float = 30.0,
        folds: Iterable[int] | None = None,
        on_error: OnError = "raise",
        setup_dir: str | os.PathLike[str] | None = None,
        resample_backend: str = "auto",
    ) -> None:
        top = Path(root).expanduser()
        audio_dir = next((d for d in (top, top / "scenes_stereo") if d.is_dir() and any(d.glob("*.wav"))), None)
        if audio_dir is None:
            raise FileNotFoundError(f"dcase2013: no .wav recordings in {str(top)!r} or {str(top / 'scenes_stereo')!r}")
        on_disk = sorted(p.name for p in audio_dir.glob("*.wav"))
        for name in on_disk:
            _scene_of(name)
        candidates = (
            [Path(setup_dir)] if setup_dir is not None else [top / "evaluation_setup", audio_dir / "evaluation_setup"]
        )
        found = next((d for d in candidates if d.is_dir() and any(_SETUP.match(p.name) for p in d.iterdir())), None)
        if found is not None:
            assignment = read_setup(found)
            self.setup_dir, self.split_source = found, "setup files"
            unlisted = sorted(set(on_disk) - set(assignment))
            if unlisted:
                logger.warning(
                    "dcase2013: %d recording(s) not in %s are left out: %s", len(unlisted), found, unlisted[:10]
                )
        else:
            assignment = stratified_folds(on_disk, self.num_folds)
            self.setup_dir, self.split_source = self._write_split(candidates[0], top, assignment), "generated"
        names = get_labels("dcase2013")
        records = [
            ClipRecord(path=audio_dir / name, label=names.index(_scene_of(name)), fold=fold, clip_id=name)
            for name, fold in sorted(assignment.items())
        ]
        if folds is not None:
            wanted = {int(f) for f in folds}
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

    @staticmethod
    def _write_split(preferred: Path, top: Path, assignment: dict[str, int]) -> Path | None:
        digest = hashlib.sha256(os.path.abspath(top).encode()).hexdigest()[:16]
        fallback = default_cache_dir("splits") / f"dcase2013-{digest}" / "evaluation_setup"
        for target in (preferred, fallback):
            try:
                write_setup(target, assignment)
            except OSError as error:
                logger.info("dcase2013: cannot write the generated split to %s (%s)", target, error)
                continue
            logger.warning(
                "dcase2013: no evaluation_setup found; generated the deterministic stratified 5-fold split "
                "(2 recordings per scene per fold) and wrote it to %s",
                target,
            )
            return target
        logger.warning("dcase2013: generated the stratified 5-fold split but could not write it anywhere")
        return None

    @property
    def scene_counts(self) -> dict[int, dict[str, int]]:
        """Recordings per fold and scene (to check the stratification).

        Returns:
            fold -> scene -> number of recordings.
        """
        counts: dict[int, dict[str, int]] = {}
        for record in self.records:
            scene = self.class_names[record.label]  # type: ignore[index]
            per_fold = counts.setdefault(record.fold or 0, {})
            per_fold[scene] = per_fold.get(scene, 0) + 1
        return counts
