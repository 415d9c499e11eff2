"""The checks every audio entry point applies to the samples it is given (one rule for every path).

:func:`check_audio_values` refuses audio the network would turn into NaN without a word: NaN or
infinite samples, samples so large that the power spectrogram overflows float32 (float audio is
expected in [-1, 1]; any PCM integer scale, up to 2**31, still passes), and tensors on the ``meta``
device, which hold no samples. :func:`channels_last_hint` recognises a ``(samples, channels)``
array given where ``(clips, samples)`` is expected. :func:`vipann.predict` (and through it
:class:`~vipann.Ensemble`, the recipes and the CLI), :class:`~vipann.AudioTagging` and
:class:`~vipann.SoundEventDetection` all use them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["MAX_AMPLITUDE", "channels_last_hint", "check_audio_values"]

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
