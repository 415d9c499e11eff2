"""The checks every audio entry point applies to the samples it is given (one rule for every path).

:func:`check_audio_values` refuses audio the network would turn into NaN without a word: NaN or
infinite samples, samples so large that the power spectrogram overflows float32 (float audio is
expected in [-1, 1]; any PCM integer scale, up to 2**31, still passes), and tensors on the ``meta``
device, which hold no samples. :func:`channels_last_hint` recognises a ``(samples, channels)``
array given where ``(clips, samples)`` is expected; :func:`check_waveform_batch` is the shape,
type and sample-rate check of every model family's forward pass. :func:`vipann.predict` (and through it
:class:`~vipann.Ensemble`, the recipes and the CLI), :class:`~vipann.AudioTagging` and
:class:`~vipann.SoundEventDetection` all use them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["MAX_AMPLITUDE", "channels_last_hint", "check_audio_values", "check_waveform_batch"]

#: Largest accepted absolute sample value. Above 2**31 (the largest PCM integer scale, passed as
#: float by mistake) and far below the ~1e17 where the log-mel power spectrogram overflows float32.
MAX_AMPLITUDE = 1e10


def _clips(rows: Tensor) -> str:
    index = rows.nonzero().flatten().tolist()
    shown = ", ".join(str(i) for i in index[:8]) + (f" (+{len(index) - 8} more)" if len(index) > 8 else "")
    return f"clip{'s' if len(index) > 1 else ''} {shown}"


def check_audio_values(audio: Tensor, names: Sequence[str] | None = None) -> None:
    """Refuse audio whose samples cannot give a meaningful prediction.

    Args:
        audio: ``(T,)`` one clip or ``(B, T)`` clips, floating point.
        names: How to name the clips in messages (default ``clip 0``, ``clip 1``, ...).

    Raises:
        ValueError: For a tensor on the ``meta`` device, NaN or infinite samples, or a peak
            amplitude over :data:`MAX_AMPLITUDE`; the message names the clips and the fix.
    """
    if audio.device.type == "meta":
        raise ValueError(
            "the audio is a tensor on the 'meta' device, which holds a shape but no samples; pass real audio "
            "(e.g. torch.from_numpy(samples) or a tensor on 'cpu'/'cuda')"
        )
    if audio.numel() == 0:
        return
    rows = audio.reshape(1, -1) if audio.dim() < 2 else audio.reshape(audio.shape[0], -1)

    def which(bad: Tensor) -> str:
        if names is not None:
            index = bad.nonzero().flatten().tolist()
            return ", ".join(names[i] for i in index[:8]) + (f" (+{len(index) - 8} more)" if len(index) > 8 else "")
        return _clips(bad)

    finite = torch.isfinite(rows).all(dim=1)
    if not bool(finite.all()):
        raise ValueError(
            f"{which(~finite)}: the audio contains NaN or infinite samples; repair or drop those clips "
            "(e.g. torch.nan_to_num) before predicting"
        )
    peak = rows.abs().amax(dim=1)
    loud = peak > MAX_AMPLITUDE
    if bool(loud.any()):
        raise ValueError(
            f"{which(loud)}: peak amplitude {float(peak.max()):.3g} is over {MAX_AMPLITUDE:.0e}; float audio is "
            "expected in [-1, 1] (values this large overflow the spectrogram): scale it, e.g. x / x.abs().max()"
        )


def channels_last_hint(shape: Sequence[int], min_samples: int) -> str | None:
    """Explain a 2-D shape that looks like ``(samples, channels)`` rather than ``(clips, samples)``.

    Args:
        shape: The array's shape.
        min_samples: The shortest clip the model takes.

    Returns:
        A message with the fix, or None when the shape is plausible as ``(clips, samples)``.
    """
    if len(shape) != 2:
        return None
    rows, cols = int(shape[0]), int(shape[1])
    if cols == 0 or cols >= min_samples or rows <= cols:
        return None
    return (
        f"audio of shape {tuple(shape)} looks like (samples, channels): as (clips, samples) it would be {rows} "
        f"clips of {cols} samples (shorter than the {min_samples} the model needs); pass x.T to predict each "
        "channel as a clip, or a mono downmix x.mean(-1)"
    )


def check_waveform_batch(
    waveform: Tensor, *, arch: str, min_samples: int, model_rate: int, sample_rate: int | None = None
) -> Tensor:
    """Validate a ``(B, T)`` waveform batch for a model and return it (each family's ``check_waveform``).

    Args:
        waveform: ``(B, T)`` float tensor.
        arch: The model's architecture id, for messages.
        min_samples: The shortest clip the model takes.
        model_rate: The model's sample rate in Hz.
        sample_rate: The waveform's sample rate, when the caller knows it; it must equal ``model_rate``.

    Returns:
        The waveform.

    Raises:
        TypeError: If ``waveform`` is not a floating-point tensor.
        ValueError: On a wrong shape (a ``(samples, channels)`` array named as such), a clip shorter
            than ``min_samples`` or a sample-rate mismatch.
    """
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(f"waveform must be a torch.Tensor of shape (batch, samples), got {type(waveform).__name__}")
    if not waveform.is_floating_point():
        raise TypeError(
            f"waveform must be floating point in [-1, 1], got {waveform.dtype}; "
            "convert int16 PCM with `x.float() / 32768`"
        )
    if waveform.dim() != 2:
        hint = " (add a batch axis with `x.unsqueeze(0)`)" if waveform.dim() == 1 else ""
        raise ValueError(f"waveform must have shape (batch, samples), got {tuple(waveform.shape)}{hint}")
    transposed = channels_last_hint(waveform.shape, min_samples)
    if transposed is not None:
        raise ValueError(transposed)
    if waveform.shape[-1] < min_samples:
        raise ValueError(
            f"clips of {waveform.shape[-1]} samples are too short for {arch}: it needs at least "
            f"{min_samples} samples ({min_samples / model_rate:.3f} s at {model_rate} Hz); zero-pad shorter clips"
        )
    if sample_rate is not None and int(sample_rate) != model_rate:
        raise ValueError(
            f"waveform sample rate {sample_rate} Hz does not match the model's {model_rate} Hz; "
            "resample it first (e.g. with vipann.datasets' loaders or soxr.resample)"
        )
    return waveform
