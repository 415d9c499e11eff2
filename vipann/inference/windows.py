"""Audio in, windows out: checking clips, cutting long audio into windows, batching windows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from vipann.models.waveform import channels_last_hint, check_audio_values

__all__ = ["as_clips", "batch_windows", "cut_windows", "window_starts"]


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start offsets of the analysis windows of a clip.

    Args:
        num_samples: Clip length.
        window: Window length.
        hop: Hop between windows.

    Returns:
        ``[0]`` when the clip fits in one window; otherwise ``0, hop, 2·hop, ...`` while the
        window fits, plus a last window aligned to the end of the clip when the hops leave a tail.
    """
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


def as_clips(waveforms: Tensor | np.ndarray | Sequence, sample_rate: int | None, model: nn.Module) -> list[Tensor]:
    """Check audio for ``model`` and return it as a list of 1-D float clips.

    Args:
        waveforms: ``(T,)``, ``(B, T)`` or a list of 1-D clips.
        sample_rate: The audio's sample rate when known; must equal ``model.sample_rate``.
        model: The model the audio is for.

    Returns:
        The clips.

    Raises:
        ValueError: For a sample-rate mismatch, a wrong shape (including ``(samples, channels)``
            audio), empty clips, or samples :func:`vipann.models.waveform.check_audio_values` refuses
            (NaN, infinite, far too loud, or on the ``meta`` device).
        TypeError: For integer audio.
    """
    if sample_rate is not None and int(sample_rate) != model.sample_rate:
        raise ValueError(
            f"audio at {sample_rate} Hz cannot be fed to a model trained at {model.sample_rate} Hz; resample it first"
        )
    if isinstance(waveforms, (Tensor, np.ndarray)):
        tensor = torch.as_tensor(waveforms)
        if tensor.dim() == 1:
            tensor = tensor[None]
        if tensor.dim() != 2:
            raise ValueError(
                f"waveforms must be (samples,), (batch, samples) or a list of clips, got {tuple(tensor.shape)}"
            )
        transposed = channels_last_hint(tensor.shape, model.min_samples)
        if transposed is not None:
            raise ValueError(transposed)
        if tensor.is_floating_point():
            check_audio_values(tensor)
        clips = list(tensor)
    else:
        clips = [torch.as_tensor(c) for c in waveforms]
    if not clips:
        raise ValueError("no waveforms to predict")
    for i, clip in enumerate(clips):
        if clip.dim() != 1:
            raise ValueError(f"clip {i} must be 1-D (samples,), got shape {tuple(clip.shape)}")
        if not clip.is_floating_point():
            raise TypeError(f"clip {i} has dtype {clip.dtype}; pass float audio in [-1, 1] (int16 PCM: x / 32768)")
        if clip.numel() == 0:
            raise ValueError(f"clip {i} is empty")
        if not isinstance(waveforms, (Tensor, np.ndarray)):
            check_audio_values(clip, [f"clip {i}"])
    return clips


def cut_windows(clips: list[Tensor], window: int, hop: int, min_len: int) -> tuple[list[Tensor], list[int]]:
    """Cut every clip into windows; a clip shorter than a window is one window (zero-padded to ``min_len``).

    Args:
        clips: 1-D clips.
        window: Window length in samples.
        hop: Hop in samples.
        min_len: The shortest input the model accepts.

    Returns:
        The windows and, for each, the index of its clip.
    """
    pieces, owner = [], []
    for index, clip in enumerate(clips):
        if clip.numel() < min_len:
            clip = torch.nn.functional.pad(clip, (0, min_len - clip.numel()))
        for start in window_starts(clip.numel(), window, hop):
            pieces.append(clip[start : start + window])
            owner.append(index)
    return pieces, owner


def batch_windows(pieces: list[Tensor], batch_size: int) -> list[tuple[Tensor, list[int]]]:
    """Batch windows of equal length together (in order), at most ``batch_size`` per batch.

    Args:
        pieces: The windows.
        batch_size: Largest batch.

    Returns:
        ``(batch, indices into pieces)`` pairs.
    """
    out: list[tuple[Tensor, list[int]]] = []
    i = 0
    while i < len(pieces):
        j = i + 1
        while j < len(pieces) and j - i < batch_size and pieces[j].numel() == pieces[i].numel():
            j += 1
        out.append((torch.stack(pieces[i:j]), list(range(i, j))))
        i = j
    return out
