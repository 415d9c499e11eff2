"""A generated, seeded sound corpus: a "mini-AudioSet", a transfer task and an out-of-distribution set.

Everything is synthesised with numpy from a seed, written once as 16-bit WAV files and then read
like any audio folder, so the demo and the tests can pretrain, transfer and measure uncertainty
without downloading anything:

* **mini-AudioSet** (:class:`MiniAudioSet`): 2-s clips mixing 1-3 events of
  :data:`AUDIOSET_CLASSES` (20 classes from tonal, sweep, harmonic, modulated, noise, impulsive,
  percussive and vocal families) at random onsets and signal-to-noise ratios over a coloured
  background noise; multi-label targets.
* **transfer task** (:func:`make_downstream`, :class:`SyntheticDownstream`): 10 *other* classes
  (:data:`DOWNSTREAM_CLASSES`), one per clip, sometimes with a quieter pretraining-class
  distractor, in 5 folds, written in the exact ESC-50 layout.
* **out-of-distribution set** (:func:`make_ood`): reverberant, low-passed engine hums
  ("recorded underwater"), a family absent from both, read with
  :class:`~vipann.datasets.UnlabelledFolder`.

Each clip comes from its own ``numpy.random.Generator(PCG64(SeedSequence([seed, stream, *ids])))``,
so clip ``i`` is the same whatever the number or order of clips generated; the same seed gives
bit-identical files with the same numpy (another numpy version or CPU may round FFTs differently
in the last bit, which can move a few 16-bit samples by one step). Generated folders are
named after everything that determines their content (generator version, seed, rate, length,
sizes), written to a temporary folder and renamed when complete, so a later call reuses them and
an interrupted one leaves nothing behind. :func:`corpus` builds all of it at once; see
:func:`describe` for how each class is made.

Example:
    >>> from vipann.datasets.synthetic import corpus
    >>> c = corpus(seed=0)  # doctest: +SKIP
    >>> wave, target = c.train[0]  # (32000,) float32, (20,) multi-hot  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vipann.datasets._generated import build_folder, event_text, write_csv, write_wav
from vipann.datasets._mixing import (
    _DEFAULT_CLIPS,
    AUDIOSET_CLASSES,
    DOWNSTREAM_CLASSES,
    OOD_CLASS,
    SynthEvent,
    _downstream_clip,
    _ood_clip,
    render_clip,
    synth_event,
)
from vipann.datasets._sounds import DOWNSTREAM_RECIPES, OOD_RECIPES, PRETRAINING_RECIPES
from vipann.datasets.cache import default_cache_dir
from vipann.datasets.esc50 import ESC10_TARGETS
from vipann.datasets.folder import AudioFolder, UnlabelledFolder
from vipann.datasets.labels import get_labels
from vipann.datasets.records import OnError

__all__ = [
    "AUDIOSET_CLASSES",
    "DOWNSTREAM_CLASSES",
    "DOWNSTREAM_ESC50_CATEGORIES",
    "GENERATOR_VERSION",
    "OOD_CLASS",
    "MiniAudioSet",
    "SynthEvent",
    "SyntheticCorpus",
    "SyntheticDownstream",
    "corpus",
    "describe",
    "make_downstream",
    "make_mini_audioset",
    "make_ood",
    "render_clip",
    "synth_event",
]

logger = logging.getLogger(__name__)

#: Changes whenever the audio a seed produces changes; part of every generated folder's name.
GENERATOR_VERSION = "4"
#: The official ESC-50 category each transfer class is written as in ``meta/esc50.csv``.
DOWNSTREAM_ESC50_CATEGORIES: dict[str, str] = {
    "siren sweep": "siren",
    "bird-like trill": "chirping_birds",
    "dripping": "water_drops",
    "church bell": "church_bells",
    "cricket chirp": "crickets",
    "rain crackle": "rain",
    "wind gusts": "wind",
    "clock tick": "clock_tick",
    "car horn": "car_horn",
    "frog croak": "frog",
}


def _manifest(kind: str, seed: int, sample_rate: int, clip_seconds: float, **sizes: Any) -> dict[str, Any]:
    return {
        "generator": "vipann.datasets.synthetic",
        "version": GENERATOR_VERSION,
        "kind": kind,
        "seed": int(seed),
        "sample_rate": int(sample_rate),
        "clip_seconds": float(clip_seconds),
        **sizes,
    }


def _set_name(kind: str, seed: int, sample_rate: int, clip_seconds: float, size: str) -> str:
    return f"{kind}-v{GENERATOR_VERSION}-seed{seed}-{sample_rate}hz-{clip_seconds:g}s-{size}"


def make_mini_audioset(
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    num_clips: int | None = None,
    seed: int = 0,
    sample_rate: int = 16000,
    clip_seconds: float = 2.0,
) -> Path:
    """Generate (or find) a mini-AudioSet split on disk.

    The folder ``<root>/mini-audioset-v<version>-seed<seed>-<rate>hz-<len>s-<split><num_clips>``
    holds ``audio/<split>-<index>.wav`` (16-bit PCM), ``labels.csv`` (``filename``, ``label``: the
    classes joined by ``;``, ``events``: ``class@onset+duration s@SNR dB`` joined by ``|``) and
    ``manifest.json``.

    Args:
        root: Parent folder; default ``$VIPANN_CACHE_DIR/synthetic``, else
            ``$XDG_CACHE_HOME/vipann/synthetic``, else ``~/.cache/vipann/synthetic``.
        split: ``"train"`` or ``"eval"``.
        num_clips: Number of clips (default 3000 for train, 600 for eval).
        seed: Corpus seed.
        sample_rate: Sample rate in Hz.
        clip_seconds: Clip length in seconds.

    Returns:
        The split's folder.

    Raises:
        ValueError: For an unknown split or a non-positive size.
        FileExistsError: If the folder exists and was not generated by this module.
    """
    if split not in _DEFAULT_CLIPS:
        raise ValueError(f"split must be one of {tuple(_DEFAULT_CLIPS)}, got {split!r}")
    num_clips = _DEFAULT_CLIPS[split] if num_clips is None else int(num_clips)
    if num_clips <= 0:
        raise ValueError(f"num_clips must be positive, got {num_clips}")
    base = Path(root).expanduser() if root is not None else default_cache_dir("synthetic")
    folder = base / _set_name("mini-audioset", seed, sample_rate, clip_seconds, f"{split}{num_clips}")

    def fill(tmp: Path) -> None:
        (tmp / "audio").mkdir()
        rows = []
        for i in range(num_clips):
            wave, events = render_clip(i, split=split, seed=seed, sample_rate=sample_rate, clip_seconds=clip_seconds)
            filename = f"audio/{split}-{i:05d}.wav"
            write_wav(tmp / filename, wave, sample_rate)
            rows.append([filename, ";".join(e.name for e in events), event_text(events)])
        write_csv(tmp / "labels.csv", ["filename", "label", "events"], rows)

    info = _manifest("mini-audioset", seed, sample_rate, clip_seconds, split=split, num_clips=num_clips)
    return build_folder(folder, {**info, "classes": list(AUDIOSET_CLASSES)}, fill)


class MiniAudioSet(AudioFolder):
    """The generated multi-label pretraining set: 20 event classes, 1-3 events per 2-s clip.

    The split is generated on first use with :func:`make_mini_audioset` and read back like any
    :class:`~vipann.datasets.AudioFolder` afterwards (``labels.csv`` in the split's folder).

    Args:
        root: Parent folder of the generated splits (default: vipann's cache folder).
        split: ``"train"`` or ``"eval"``.
        num_clips: Number of clips (default 3000 for train, 600 for eval).
        seed: Corpus seed; the same seed gives the same audio everywhere.
        sample_rate: Generation and output sample rate in Hz (the classes are designed for 16 kHz).
        clip_seconds: Clip length in seconds.
        on_error: ``"raise"`` or ``"skip"`` for missing or unreadable clips.
        resample_backend: ``"auto"``, ``"soxr"`` or ``"torchaudio"``.

    Attributes:
        folder: The split's folder.

    Example:
        >>> ds = MiniAudioSet(split="eval", num_clips=100)  # doctest: +SKIP
        >>> ds.targets.shape  # doctest: +SKIP
        torch.Size([100, 20])
    """

    dataset_name = "mini_audioset"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        num_clips: int | None = None,
        seed: int = 0,
        sample_rate: int = 16000,
        clip_seconds: float = 2.0,
        on_error: OnError = "raise",
        resample_backend: str = "auto",
    ) -> None:
        self.folder = make_mini_audioset(root, split, num_clips, seed, sample_rate, clip_seconds)
        self.split, self.seed = split, int(seed)
        super().__init__(
            self.folder,
            "labels.csv",
            multilabel=True,
            class_names=AUDIOSET_CLASSES,
            sample_rate=sample_rate,
            clip_seconds=clip_seconds,
            on_error=on_error,
            resample_backend=resample_backend,
        )


# ---------------------------------------------------------------------------------- transfer task
def make_downstream(
    root: str | os.PathLike[str],
    seed: int = 0,
    clips_per_class_per_fold: int = 8,
    sample_rate: int = 16000,
    clip_seconds: float = 2.0,
) -> Path:
    """Generate (or find) the 10-class transfer task in the exact ESC-50 layout, 5 folds.

    ``root`` receives ESC-50's files (``meta/esc50.csv`` with ``filename,fold,target,category,
    esc10,src_file,take`` and ``audio/<fold>-<src_file>-<take>-<target>.wav``), where each class is
    written as the official ESC-50 category of :data:`DOWNSTREAM_ESC50_CATEGORIES` with its
    official target, so :class:`~vipann.datasets.ESC50` reads the folder unchanged (as 50 classes,
    10 of them present). It also holds ``labels.csv`` (``filename``, ``label``, ``fold``,
    ``category``, ``target``) naming the synthetic classes, which :class:`SyntheticDownstream`
    reads as the 10-class task.

    Args:
        root: The folder to create (an existing empty folder is filled).
        seed: Corpus seed.
        clips_per_class_per_fold: Clips per class in each fold (at most 1000).
        sample_rate: Sample rate in Hz.
        clip_seconds: Clip length in seconds.

    Returns:
        ``root``.

    Raises:
        ValueError: For a size outside 1-1000.
        FileExistsError: If ``root`` is a non-empty folder not generated by this module.
    """
    per = int(clips_per_class_per_fold)
    if not 1 <= per <= 1000:
        raise ValueError(f"clips_per_class_per_fold must be in 1-1000, got {per}")
    esc50 = get_labels("esc50")

    def fill(tmp: Path) -> None:
        (tmp / "audio").mkdir()
        (tmp / "meta").mkdir()
        meta, labels = [], []
        for fold in range(1, 6):
            for index, name in enumerate(DOWNSTREAM_CLASSES):
                category = DOWNSTREAM_ESC50_CATEGORIES[name]
                target = esc50.index(category)
                for take in range(per):
                    wave, _ = _downstream_clip(seed, fold, index, take, sample_rate, clip_seconds)
                    src_file = 100000 * (index + 1) + 1000 * fold + take
                    filename = f"{fold}-{src_file}-A-{target}.wav"
                    write_wav(tmp / "audio" / filename, wave, sample_rate)
                    meta.append([filename, fold, target, category, target in ESC10_TARGETS, src_file, "A"])
                    labels.append([f"audio/{filename}", name, fold, category, target])
        columns = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
        write_csv(tmp / "meta" / "esc50.csv", columns, sorted(meta))
        write_csv(tmp / "labels.csv", ["filename", "label", "fold", "category", "target"], sorted(labels))

    info = _manifest("downstream", seed, sample_rate, clip_seconds, clips_per_class_per_fold=per)
    return build_folder(Path(root).expanduser(), {**info, "classes": list(DOWNSTREAM_CLASSES)}, fill)


class SyntheticDownstream(AudioFolder):
    """The generated transfer task as a 10-class dataset with 5 folds (see :func:`make_downstream`).

    Args:
        root: A folder written by :func:`make_downstream`.
        sample_rate: Output sample rate in Hz.
        clip_seconds: Clip length in seconds.
        on_error: ``"raise"`` or ``"skip"`` for missing or unreadable clips.
        resample_backend: ``"auto"``, ``"soxr"`` or ``"torchaudio"``.

    Example:
        >>> ds = SyntheticDownstream(make_downstream("synthetic-esc"))  # doctest: +SKIP
        >>> train, test = ds.split(test_fold=1)  # doctest: +SKIP
    """

    dataset_name = "synthetic_downstream"

    def __init__(
        self,
        root: str | os.PathLike[str],
        sample_rate: int = 16000,
        clip_seconds: float = 2.0,
        on_error: OnError = "raise",
        resample_backend: str = "auto",
    ) -> None:
        super().__init__(
            root,
            "labels.csv",
            fold_col="fold",
            class_names=DOWNSTREAM_CLASSES,
            sample_rate=sample_rate,
            clip_seconds=clip_seconds,
            on_error=on_error,
            resample_backend=resample_backend,
        )


# ---------------------------------------------------------------------------------- out of distribution
def make_ood(
    root: str | os.PathLike[str],
    seed: int = 0,
    num_clips: int = 100,
    sample_rate: int = 16000,
    clip_seconds: float = 2.0,
) -> Path:
    """Generate (or find) a folder of out-of-distribution clips (:data:`OOD_CLASS`).

    Each clip is a muffled, reverberant engine-like hum over low-passed background noise (see
    :func:`describe`), written as ``ood-<index>.wav``; read it with
    :class:`~vipann.datasets.UnlabelledFolder`.

    Args:
        root: The folder to create (an existing empty folder is filled).
        seed: Corpus seed.
        num_clips: Number of clips.
        sample_rate: Sample rate in Hz.
        clip_seconds: Clip length in seconds.

    Returns:
        ``root``.

    Raises:
        ValueError: For a non-positive size.
        FileExistsError: If ``root`` is a non-empty folder not generated by this module.
    """
    if int(num_clips) <= 0:
        raise ValueError(f"num_clips must be positive, got {num_clips}")

    def fill(tmp: Path) -> None:
        for i in range(int(num_clips)):
            write_wav(tmp / f"ood-{i:05d}.wav", _ood_clip(seed, i, sample_rate, clip_seconds)[0], sample_rate)

    info = _manifest("ood", seed, sample_rate, clip_seconds, num_clips=int(num_clips), classes=[OOD_CLASS])
    return build_folder(Path(root).expanduser(), info, fill)


# ---------------------------------------------------------------------------------- everything at once
@dataclass
class SyntheticCorpus:
    """The whole generated corpus, built by :func:`corpus`.

    Attributes:
        root: Parent folder of all generated sets.
        train: Mini-AudioSet training split (multi-label, :data:`AUDIOSET_CLASSES`).
        eval: Mini-AudioSet evaluation split.
        downstream: The transfer task (10 classes, 5 folds).
        ood: The out-of-distribution clips (unlabelled).
        downstream_root: The transfer task's ESC-50-layout folder.
        ood_root: The out-of-distribution folder.
    """

    root: Path
    train: MiniAudioSet
    eval: MiniAudioSet
    downstream: SyntheticDownstream
    ood: UnlabelledFolder
    downstream_root: Path
    ood_root: Path


def corpus(
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    *,
    train_clips: int = 3000,
    eval_clips: int = 600,
    clips_per_class_per_fold: int = 8,
    ood_clips: int = 100,
    sample_rate: int = 16000,
    clip_seconds: float = 2.0,
) -> SyntheticCorpus:
    """Build (once) and open every part of the generated corpus.

    Each part is a folder under ``root`` named after its settings, so different seeds or sizes
    coexist and a second call only reads.

    Args:
        root: Parent folder (default: vipann's cache folder, ``.../synthetic``).
        seed: Corpus seed.
        train_clips: Mini-AudioSet training clips.
        eval_clips: Mini-AudioSet evaluation clips.
        clips_per_class_per_fold: Transfer-task clips per class and fold (5 folds, 10 classes).
        ood_clips: Out-of-distribution clips.
        sample_rate: Sample rate in Hz.
        clip_seconds: Clip length in seconds (all parts).

    Returns:
        The datasets and folders.

    Example:
        >>> c = corpus(seed=0)  # doctest: +SKIP
        >>> train, test = c.downstream.split(test_fold=1)  # doctest: +SKIP
    """
    base = Path(root).expanduser() if root is not None else default_cache_dir("synthetic")
    common = {"seed": seed, "sample_rate": sample_rate, "clip_seconds": clip_seconds}
    rate_len = (seed, sample_rate, clip_seconds)
    downstream_root = make_downstream(
        base / _set_name("downstream", *rate_len, f"{clips_per_class_per_fold}x5"),
        clips_per_class_per_fold=clips_per_class_per_fold,
        **common,
    )
    ood_root = make_ood(base / _set_name("ood", *rate_len, str(ood_clips)), num_clips=ood_clips, **common)
    return SyntheticCorpus(
        root=base,
        train=MiniAudioSet(base, "train", train_clips, **common),
        eval=MiniAudioSet(base, "eval", eval_clips, **common),
        downstream=SyntheticDownstream(downstream_root, sample_rate, clip_seconds),
        ood=UnlabelledFolder(ood_root, sample_rate, clip_seconds),
        downstream_root=downstream_root,
        ood_root=ood_root,
    )


def describe() -> str:
    """A Markdown table of every generated class and how it is synthesised.

    Returns:
        The table (columns: set, class, family, duration, synthesis; transfer classes also name
        their ESC-50 category).
    """
    lines = ["| set | class | family | duration (s) | synthesis |", "|---|---|---|---|---|"]
    groups = (("mini-AudioSet", PRETRAINING_RECIPES), ("transfer", DOWNSTREAM_RECIPES), ("OOD", OOD_RECIPES))
    for group, recipes in groups:
        for name, recipe in recipes.items():
            label = f"{name} (ESC-50 `{DOWNSTREAM_ESC50_CATEGORIES[name]}`)" if name in DOWNSTREAM_RECIPES else name
            lo, hi = recipe.seconds
            span = f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"  # a fixed length is one number, not "2-2"
            lines.append(f"| {group} | {label} | {recipe.family} | {span} | {recipe.description} |")
    return "\n".join(lines) + "\n"
