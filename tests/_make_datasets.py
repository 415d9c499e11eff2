"""Miniature copies of the downstream datasets in their exact on-disk layouts, for tests.

Each generator writes the metadata files with the official columns and file naming and short
audio files (the loaders pad or crop to the clip length, so durations can be tiny and the tests
fast). Every class gets its own tone frequency plus a little noise, so a classifier could learn
the classes. All output is deterministic for a given ``seed``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from vipann.datasets.labels import get_labels

__all__ = [
    "URBANSOUND8K_FORMATS",
    "class_tone",
    "make_dcase2013",
    "make_esc50",
    "make_urbansound8k",
    "setup_folds",
    "write_audio",
]

# UrbanSound8K keeps its Freesound source formats: (sample rate, channels, subtype) cycled over the
# generated clips so that every rate, channel count and sample encoding the loader must handle occurs.
URBANSOUND8K_FORMATS: tuple[tuple[int, int, str], ...] = (
    (44100, 2, "PCM_16"),
    (48000, 1, "PCM_24"),
    (22050, 1, "PCM_U8"),
    (8000, 1, "PCM_16"),
    (96000, 2, "FLOAT"),
    (44100, 1, "PCM_24"),
    (48000, 2, "PCM_U8"),
    (22050, 2, "FLOAT"),
)


def class_tone(class_index: int, seconds: float, sample_rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A class-dependent test signal: a tone at ``200 + 150 * class_index`` Hz plus faint noise.

    Args:
        class_index: Class index (sets the frequency; keep it below the Nyquist rate).
        seconds: Duration.
        sample_rate: Sample rate.
        channels: Number of channels (each gets its own noise).
        seed: Noise seed.

    Returns:
        ``(frames, channels)`` float32 in ``[-0.5, 0.5]``.
    """
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    tone = 0.4 * np.sin(2 * np.pi * (200.0 + 150.0 * class_index) * t)
    noise = np.random.default_rng(seed).uniform(-0.05, 0.05, size=(t.size, channels))
    return (tone[:, None] + noise).astype(np.float32)


def write_audio(path: Path, data: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write ``data`` (frames or ``(frames, channels)``) with soundfile, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sample_rate, subtype=subtype)
    return path


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def make_esc50(
    root: Path,
    clips_per_class_per_fold: int = 1,
    classes: Sequence[int] | None = None,
    *,
    folds: Sequence[int] = (1, 2, 3, 4, 5),
    seconds: float = 0.2,
    seed: int = 0,
) -> Path:
    """Write a miniature ``ESC-50-master/`` (44.1 kHz mono 16-bit; real clips are 5 s).

    Clips of one class and fold are takes ``A``, ``B``, ... of one source file, as in ESC-50,
    where clips cut from one recording share a fold.

    Returns:
        The ``ESC-50-master`` folder.
    """
    names = get_labels("esc50")
    esc10 = {0, 1, 10, 11, 12, 20, 21, 38, 40, 41}
    top = root / "ESC-50-master"
    rng = np.random.default_rng(seed)
    rows = []
    for target in classes if classes is not None else range(50):
        for fold in folds:
            src_file = int(rng.integers(10_000, 999_999))
            for take in "ABCDEFGH"[:clips_per_class_per_fold]:
                filename = f"{fold}-{src_file}-{take}-{target}.wav"
                data = class_tone(target, seconds, 44100, seed=int(rng.integers(1 << 30)))
                write_audio(top / "audio" / filename, data, 44100, "PCM_16")
                rows.append([filename, fold, target, names[target], str(target in esc10), src_file, take])
    rows.sort(key=lambda row: row[0])  # the official CSV is sorted by file name
    _write_csv(
        top / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows
    )
    return top


def make_urbansound8k(
    root: Path,
    clips_per_class_per_fold: int = 1,
    classes: Sequence[int] | None = None,
    *,
    folds: Sequence[int] = tuple(range(1, 11)),
    max_seconds: float = 0.3,
    seed: int = 0,
) -> Path:
    """Write a miniature ``UrbanSound8K/`` with mixed formats (see :data:`URBANSOUND8K_FORMATS`).

    Durations alternate between ``max_seconds`` and shorter ones (real clips are at most 4 s).

    Returns:
        The ``UrbanSound8K`` folder.
    """
    names = get_labels("urbansound8k")
    top = root / "UrbanSound8K"
    rng = np.random.default_rng(seed)
    rows = []
    count = 0
    for fold in folds:
        for class_id in classes if classes is not None else range(10):
            fs_id = int(rng.integers(1_000, 200_000))
            for slice_id in range(clips_per_class_per_fold):
                sample_rate, channels, subtype = URBANSOUND8K_FORMATS[count % len(URBANSOUND8K_FORMATS)]
                seconds = max_seconds * (1.0, 0.6, 0.35)[count % 3]
                count += 1
                filename = f"{fs_id}-{class_id}-0-{slice_id}.wav"
                data = class_tone(class_id, seconds, sample_rate, channels, seed=int(rng.integers(1 << 30)))
                write_audio(top / "audio" / f"fold{fold}" / filename, data, sample_rate, subtype)
                start = round(slice_id * max_seconds, 6)
                salience = 1 + count % 2
                rows.append(
                    [filename, fs_id, start, round(start + seconds, 6), salience, fold, class_id, names[class_id]]
                )
    rows.sort(key=lambda row: row[0])
    header = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
    _write_csv(top / "metadata" / "UrbanSound8K.csv", header, rows)
    # The archive also ships audio/fold<k>/ folders for all ten folds.
    for fold in range(1, 11):
        (top / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
    return top


def setup_folds(clips_per_scene: int, num_folds: int = 5) -> list[int]:
    """The fold of the i-th recording of a scene in the setup files :func:`make_dcase2013` writes.

    Deliberately different from the loader's generated split (interleaved instead of in pairs),
    so tests can tell which one was used.
    """
    return [i % num_folds + 1 for i in range(clips_per_scene)]


def make_dcase2013(
    root: Path,
    clips_per_scene: int = 10,
    *,
    seconds: float = 0.1,
    with_setup: bool = False,
    setup_labels: bool = True,
    subfolder: bool = False,
    seed: int = 0,
) -> Path:
    """Write a miniature DCASE2013 scene set: ``<scene><NN>.wav``, 44.1 kHz 16-bit stereo.

    Args:
        root: Where to write.
        clips_per_scene: Recordings per scene (10 in the real set).
        seconds: Duration (30 s in the real set).
        with_setup: Also write ``evaluation_setup/fold{k}_{train,test}.txt`` with
            :func:`setup_folds`.
        setup_labels: Write the scene label column in the setup files.
        subfolder: Put the audio in ``scenes_stereo/`` as in the distributed archive.
        seed: Noise seed.

    Returns:
        ``root`` (the folder to give the loader).
    """
    scenes = get_labels("dcase2013")
    audio_dir = root / "scenes_stereo" if subfolder else root
    rng = np.random.default_rng(seed)
    folds: dict[str, int] = {}
    fold_of = setup_folds(clips_per_scene)
    for index, scene in enumerate(scenes):
        for i in range(clips_per_scene):
            filename = f"{scene}{i + 1:02d}.wav"
            data = class_tone(index, seconds, 44100, channels=2, seed=int(rng.integers(1 << 30)))
            write_audio(audio_dir / filename, data, 44100, "PCM_16")
            folds[filename] = fold_of[i]
    if with_setup:
        setup = root / "evaluation_setup"
        setup.mkdir(parents=True, exist_ok=True)
        for k in sorted(set(folds.values())):
            for part, keep in (("test", True), ("train", False)):
                lines = []
                for name in sorted(folds):
                    if (folds[name] == k) == keep:
                        scene = name.removesuffix(".wav").rstrip("0123456789")
                        lines.append(f"scenes_stereo/{name}\t{scene}" if setup_labels else name)
                (setup / f"fold{k}_{part}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
