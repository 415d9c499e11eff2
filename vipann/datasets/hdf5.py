"""AudioSet in PANNs' packed HDF5 format, read lazily (one or many files).

Each file holds ``audio_name`` (``S20``, ``(N,)``), ``waveform`` (int16, ``(N, 320000)``: 10 s at
32 kHz) and ``target`` (bool, ``(N, 527)``), as written by PANNs' ``pack_waveforms_to_hdf5``.
Several files (e.g. the balanced and unbalanced training splits) form one dataset. Files are opened
on first access in each process, so the dataset can go to DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vipann.datasets.audio import fix_length, resample

__all__ = ["AudioSetHDF5", "HDF5FormatError"]

_DATASETS = ("audio_name", "waveform", "target")


class HDF5FormatError(ValueError):
    """An HDF5 file is not in the PANNs packed layout, is corrupt or truncated, or is empty."""


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is in the hdf5/test extras
        raise ImportError("reading PANNs HDF5 files needs h5py: pip install 'vipann[hdf5]'") from exc
    return h5py


class AudioSetHDF5(Dataset):
    """Clips of one or more PANNs-layout HDF5 files.

    ``dataset[i]`` is ``(waveform, target)``: a float32 ``(clip_samples,)`` waveform (int16 / 32768,
    resampled when the model's rate differs from the file's) and a float32 multi-hot ``(C,)`` target.

    Args:
        paths: One file or several (their clips are concatenated in the given order).
        sample_rate: Sample rate the waveforms are returned at (the model's).
        file_sample_rate: Sample rate of the stored waveforms (32 kHz in PANNs' files).
        clip_seconds: Clip length returned (default: the stored length).
        num_classes: Expected target width; a file with another width is an error.

    Raises:
        FileNotFoundError: For a missing file.
        HDF5FormatError: For a file that cannot be opened (corrupt, truncated), lacks a dataset,
            has inconsistent shapes or dtypes, has the wrong target width, or holds no clip.
    """

    multilabel = True

    def __init__(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        sample_rate: int = 32000,
        file_sample_rate: int = 32000,
        clip_seconds: float | None = None,
        num_classes: int | None = None,
    ) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise HDF5FormatError("no HDF5 file given")
        self.sample_rate = int(sample_rate)
        self.file_sample_rate = int(file_sample_rate)
        h5py = _h5py()
        sizes, widths, lengths = [], set(), set()
        names: list[str] = []
        targets = []
        for path in self.paths:
            if not path.is_file():
                raise FileNotFoundError(f"HDF5 file {str(path)!r} does not exist")
            try:
                with h5py.File(path, "r") as fh:
                    missing = [d for d in _DATASETS if d not in fh]
                    if missing:
                        raise HDF5FormatError(
                            f"{path.name} lacks {missing}; a PANNs packed file holds audio_name, waveform, target"
                        )
                    wave, target, audio_name = fh["waveform"], fh["target"], fh["audio_name"]
                    n = wave.shape[0]
                    if wave.ndim != 2 or target.ndim != 2 or target.shape[0] != n or audio_name.shape[0] != n:
                        raise HDF5FormatError(
                            f"{path.name}: inconsistent shapes waveform {wave.shape}, target {target.shape}, "
                            f"audio_name {audio_name.shape}"
                        )
                    if wave.dtype != np.int16:
                        raise HDF5FormatError(f"{path.name}: waveform must be int16, got {wave.dtype}")
                    targets.append(np.asarray(target[:], dtype=bool))
                    names += [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in audio_name[:]]
                    # Touch the last row: a truncated file fails here rather than mid-training.
                    if n:
                        wave[n - 1, :1]
            except HDF5FormatError:
                raise
            except (OSError, KeyError, ValueError) as exc:
                raise HDF5FormatError(
                    f"cannot read {path.name} as an HDF5 file ({exc}); is it complete (not truncated) and in the "
                    "PANNs packed layout?"
                ) from exc
            sizes.append(n)
            widths.add(targets[-1].shape[1])
            lengths.add(wave.shape[1])
        if sum(sizes) == 0:
            raise HDF5FormatError(f"the split {[p.name for p in self.paths]} holds no clip")
        if len(widths) != 1 or len(lengths) != 1:
            raise HDF5FormatError(f"files disagree on target width {sorted(widths)} or clip length {sorted(lengths)}")
        width = widths.pop()
        if num_classes is not None and width != num_classes:
            raise HDF5FormatError(
                f"the targets have {width} classes but the model has {num_classes}; use a model with "
                f"num_classes={width} (AudioSet: 527)"
            )
        self.stored_samples = lengths.pop()
        seconds = clip_seconds if clip_seconds is not None else self.stored_samples / self.file_sample_rate
        self.clip_seconds = float(seconds)
        self.clip_samples = round(self.clip_seconds * self.sample_rate)
        self.num_classes = width
        self.audio_names = names
        self._offsets = np.cumsum([0, *sizes])
        self._targets = torch.from_numpy(np.concatenate(targets).astype(np.float32))
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()

    @property
    def targets(self) -> Tensor:
        """``(N, C)`` float multi-hot targets of every clip (read once at construction)."""
        return self._targets

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _file(self, index: int):
        if self._pid != os.getpid():  # a forked worker must not reuse the parent's handles
            self._handles, self._pid = {}, os.getpid()
        if index not in self._handles:
            self._handles[index] = _h5py().File(self.paths[index], "r")
        return self._handles[index]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def load_waveform(self, index: int) -> Tensor:
        """The float32 waveform of clip ``index`` at :attr:`sample_rate`."""
        if not 0 <= index < len(self):
            raise IndexError(f"clip {index} out of range for {len(self)} clips")
        f = int(np.searchsorted(self._offsets, index, side="right") - 1)
        row = index - int(self._offsets[f])
        try:
            raw = self._file(f)["waveform"][row]
        except OSError as exc:
            raise HDF5FormatError(
                f"{self.paths[f].name}: clip {row} cannot be read ({exc}); is the file truncated?"
            ) from exc
        wave = raw.astype(np.float32) / 32768.0
        if self.file_sample_rate != self.sample_rate:
            wave = resample(wave, self.file_sample_rate, self.sample_rate)
        return torch.from_numpy(fix_length(wave, self.clip_samples))

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.load_waveform(index), self._targets[index]
