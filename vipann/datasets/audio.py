"""Audio decoding, resampling and length fixing shared by every dataset loader.

Decoding uses soundfile (libsndfile), which reads every WAV subtype the datasets use (unsigned
8-bit, 16-, 24- and 32-bit PCM, 32- and 64-bit float) as float32: integer PCM is scaled into
``[-1, 1)`` (full-scale negative is exactly -1); float files are returned as stored, since float
audio may legitimately exceed full scale. FLAC, OGG/Vorbis and, with libsndfile >= 1.1, MP3 are
read too.

Resampling goes through one of two backends, chosen by ``backend``:

* ``"soxr"``: libsoxr at quality ``"HQ"`` (a hard dependency, so always available);
* ``"torchaudio"``: ``torchaudio.functional.resample`` (windowed sinc), only when torchaudio is
  importable;
* ``"auto"`` (the default): torchaudio when it can be imported, otherwise soxr. The resolved
  backend is logged once and is part of every cache key, so caches made with different backends
  never mix.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile as sf
import soxr
import torch
from torch import Tensor

from vipann.datasets.errors import AudioReadError, TruncatedAudioWarning

__all__ = [
    "RESAMPLE_BACKENDS",
    "AudioInfo",
    "audio_info",
    "fix_length",
    "load_audio",
    "resample",
    "resolve_resample_backend",
    "wav_declared_frames",
]

logger = logging.getLogger(__name__)

RESAMPLE_BACKENDS = ("auto", "soxr", "torchaudio")

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, without decoding the samples.

    Attributes:
        sample_rate: Native sample rate in Hz.
        channels: Number of channels.
        frames: Number of frames (samples per channel).
        format: libsndfile container name (``"WAV"``, ``"FLAC"``, ``"MP3"``, ...).
        subtype: libsndfile sample encoding (``"PCM_16"``, ``"FLOAT"``, ...).
    """

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate


@functools.cache
def _torchaudio_resample():  # -> Callable | None
    # torchaudio is optional and its import can fail in several ways (absent, or built against
    # another torch), so anything it raises means "not available".
    try:
        import torchaudio.functional as taf
    except Exception:
        return None
    return taf.resample


@functools.cache
def resolve_resample_backend(backend: str = "auto") -> str:
    """Resolve a resampling backend name to the one that will actually run.

    Args:
        backend: ``"auto"``, ``"soxr"`` or ``"torchaudio"``.

    Returns:
        ``"soxr"`` or ``"torchaudio"``.

    Raises:
        ValueError: For an unknown backend name.
        ImportError: When ``"torchaudio"`` is asked for but cannot be imported.
    """
    if backend not in RESAMPLE_BACKENDS:
        raise ValueError(f"unknown resampling backend {backend!r}; choose one of: {', '.join(RESAMPLE_BACKENDS)}")
    available = _torchaudio_resample() is not None
    if backend == "torchaudio" and not available:
        raise ImportError("resampling backend 'torchaudio' was asked for, but torchaudio cannot be imported")
    resolved = "torchaudio" if backend == "torchaudio" or (backend == "auto" and available) else "soxr"
    logger.info("resampling with %s (asked for %r)", resolved, backend)
    return resolved


def resample(wave: np.ndarray, orig_sr: int, target_sr: int, *, backend: str = "auto") -> np.ndarray:
    """Resample audio along its first axis.

    Args:
        wave: ``(T,)`` or ``(T, channels)`` float32 samples.
        orig_sr: Its sample rate in Hz.
        target_sr: The wanted sample rate in Hz.
        backend: ``"auto"``, ``"soxr"`` or ``"torchaudio"`` (see the module docstring).

    Returns:
        float32 samples at ``target_sr``, the same number of dimensions as ``wave``; the length is
        ``ceil(T * target_sr / orig_sr)`` with soxr (torchaudio may differ by one sample; callers
        fix the length afterwards).
    """
    wave = np.asarray(wave, dtype=np.float32)
    if orig_sr == target_sr or wave.shape[0] == 0:
        if wave.shape[0] == 0:
            return np.zeros((0, *wave.shape[1:]), dtype=np.float32)
        return wave
    if resolve_resample_backend(backend) == "torchaudio":
        taf_resample = _torchaudio_resample()
        x = torch.from_numpy(np.ascontiguousarray(wave.T))
        return taf_resample(x, int(orig_sr), int(target_sr)).numpy().T.astype(np.float32, copy=False)
    return soxr.resample(wave, int(orig_sr), int(target_sr), quality="HQ").astype(np.float32, copy=False)


def _check_readable(path: Path) -> None:
    if not path.is_file():
        reason = "no such file" if not path.exists() else "not a regular file"
        raise AudioReadError(f"cannot read audio {str(path)!r}: {reason}", path=str(path))
    if path.suffix.lower() == ".mp3" and "MP3" not in sf.available_formats():
        raise AudioReadError(
            f"cannot read audio {str(path)!r}: the installed libsndfile "
            f"({sf.__libsndfile_version__}) has no MP3 support; install libsndfile >= 1.1 "
            "(soundfile wheels >= 0.12 bundle it) or convert the file to WAV/FLAC",
            path=str(path),
        )


def wav_declared_frames(path: str | os.PathLike[str]) -> int | None:
    """The number of frames a WAV file's header declares (its ``data`` chunk size / block size).

    libsndfile silently reports the frames actually present, so a file cut short (a partial
    download or copy) looks like a shorter recording; comparing with this number tells them apart.

    Args:
        path: The file.

    Returns:
        The declared frames, or None for a non-RIFF/WAVE file, or a header that leaves the size
        open (0 or 0xFFFFFFFF, as streaming writers do).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = 0
            for _ in range(64):  # chunks before 'data': fmt, fact, LIST, ...
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if kind == b"fmt ":
                    fmt = fh.read(min(size, 16))
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                    fh.seek(size - len(fmt) + (size & 1), os.SEEK_CUR)
                elif kind == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    fh.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None
    return None


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read a file's header (sample rate, channels, length) without decoding it.

    Args:
        path: The audio file.

    Returns:
        The file's :class:`AudioInfo`.

    Raises:
        AudioReadError: If the file is missing or libsndfile cannot parse it.
    """
    path = Path(path)
    _check_readable(path)
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, ValueError) as error:
        raise AudioReadError(f"cannot read audio {str(path)!r}: {error}", path=str(path)) from error
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), info.format, info.subtype)


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int | None,
    *,
    mono: bool = True,
    duration: float | None = None,
    offset: float = 0.0,
    backend: str = "auto",
) -> Tensor:
    """Decode an audio file, optionally a segment of it, to float32 at a given sample rate.

    Channels are downmixed by averaging them (before resampling, which is linear, so the result is
    the same and half the work for stereo). Only the requested segment is decoded, which keeps
    reading the first seconds of long recordings cheap.

    Args:
        path: The audio file (any format libsndfile reads; see the module docstring).
        sample_rate: Target rate in Hz, or ``None`` to keep the file's rate.
        mono: Average the channels into one. With ``False`` every channel is kept.
        duration: Seconds to read from ``offset`` on; ``None`` reads to the end. A segment that
            runs past the end of the file is returned short (see :func:`fix_length`).
        offset: Start of the segment in seconds (rounded to the nearest native frame).
        backend: Resampling backend, ``"auto"``, ``"soxr"`` or ``"torchaudio"``.

    Returns:
        ``(T,)`` when ``mono`` else ``(channels, T)``, float32.

    Raises:
        AudioReadError: If the file is missing, cannot be decoded, holds no samples at all, or holds
            NaN or infinite samples; the message names the file.
        ValueError: For a negative ``offset`` or ``duration``.

    Warns:
        TruncatedAudioWarning: When a WAV file holds fewer frames than its header declares (cut off
            or damaged), naming both counts; the frames present are used.

    Example:
        >>> wave = load_audio("ESC-50-master/audio/1-100032-A-0.wav", 32000)  # doctest: +SKIP
        >>> wave.shape  # doctest: +SKIP
        torch.Size([160000])
    """
    if offset < 0 or (duration is not None and duration < 0):
        raise ValueError(f"offset and duration must be non-negative, got offset={offset}, duration={duration}")
    path = Path(path)
    _check_readable(path)
    try:
        with sf.SoundFile(str(path)) as fh:
            native_sr = int(fh.samplerate)
            present, container = int(fh.frames), fh.format
            start = min(round(offset * native_sr), fh.frames)
            frames = -1 if duration is None else round(duration * native_sr)
            if start:
                fh.seek(start)
            data = fh.read(frames=frames, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as error:
        raise AudioReadError(f"cannot decode audio {str(path)!r}: {error}", path=str(path)) from error
    if present == 0:
        raise AudioReadError(f"audio {str(path)!r} holds no samples (0 frames)", path=str(path))
    declared = wav_declared_frames(path) if container == "WAV" else None
    if declared is not None and declared > present:
        warnings.warn(
            f"{path}: the WAV header declares {declared} frames but the file holds {present} "
            f"({present / declared:.0%}); it is cut off or damaged: only the {present} frames present are used",
            TruncatedAudioWarning,
            stacklevel=2,
        )
    if not np.isfinite(data).all():
        raise AudioReadError(f"audio {str(path)!r} holds NaN or infinite samples", path=str(path))
    if mono:
        data = data.mean(axis=1, dtype=np.float32)
    if sample_rate is not None and int(sample_rate) != native_sr:
        data = resample(data, native_sr, int(sample_rate), backend=backend)
        if duration is not None:
            # Resamplers round the output length differently; a requested segment has a known length.
            data = data[: math.ceil(duration * int(sample_rate) - 1e-9)]
    wave = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    return wave if mono else wave.T.contiguous()


def fix_length(wave: ArrayT, num_samples: int) -> ArrayT:
    """Zero-pad at the end or crop to exactly ``num_samples`` along the last axis.

    Cropping keeps the beginning of the clip: the datasets' clips are cut so that the sound event
    starts near the beginning, and a fixed rule keeps evaluation deterministic.

    Args:
        wave: A tensor or array of samples, time last.
        num_samples: The wanted length.

    Returns:
        The same type as ``wave``, with last dimension ``num_samples`` (``wave`` itself when it
        already has that length).

    Raises:
        ValueError: For a negative length.
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be non-negative, got {num_samples}")
    length = wave.shape[-1]
    if length == num_samples:
        return wave
    if length > num_samples:
        return wave[..., :num_samples]
    if isinstance(wave, Tensor):
        return torch.nn.functional.pad(wave, (0, num_samples - length))
    pad = [(0, 0)] * (wave.ndim - 1) + [(0, num_samples - length)]
    return np.pad(wave, pad)
