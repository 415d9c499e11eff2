"""The EfficientAT log-mel front end, computed with plain torch (no torchaudio).

EfficientAT's models are trained on a front end of their own (``models/preprocess.py``,
``AugmentMelSTFT`` in evaluation mode), which differs from the PANNs one in every step:

1. pre-emphasis ``y[n] = x[n+1] - 0.97 x[n]`` (a valid 2-tap convolution: one sample shorter);
2. ``torch.stft`` with ``n_fft`` 1024, hop 320 and a *non-periodic* (symmetric) Hann window of 800
   samples, zero-padded to 1024 and centred; ``center=True`` with reflect padding; the power
   ``re² + im²``;
3. 128 triangular filters on the **Kaldi** mel scale ``1127 ln(1 + f/700)`` from 0 to 15 kHz,
   triangular in the mel domain and not area-normalised (torchaudio's
   ``compliance.kaldi.get_mel_banks``), with a zero weight for the Nyquist bin;
4. ``log(mel + 1e-5)``, then the fixed normalisation ``(x + 4.5) / 5``.

The output is laid out as the networks read it, ``(batch, 1, mel_bins, frames)`` (frequency
before time, unlike PANNs' ``(batch, 1, frames, mel_bins)``). The window and the filterbank are
non-persistent buffers derived from :class:`EfficientATFrontendConfig`, never stored in a checkpoint.
The training-time augmentations of the original (random ``fmin``/``fmax`` jitter of the filterbank,
frequency and time masking) are not part of the front end; vipann's models apply masking in
``normalize`` during training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipann.models.frontend import ConfigDict, check_frontend_input

__all__ = ["EfficientATFrontendConfig", "KaldiLogMelFrontend", "kaldi_mel_banks"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class EfficientATFrontendConfig(ConfigDict):
    """Parameters of the EfficientAT front end; the defaults are those of every AudioSet model.

    Attributes:
        sample_rate: Sampling rate in Hz that the waveform must have.
        n_fft: FFT size (``n_fft // 2 + 1`` frequency bins).
        window_size: Length of the symmetric Hann window (zero-padded to ``n_fft``).
        hop_size: STFT hop, in samples.
        mel_bins: Number of Kaldi mel bands.
        fmin: Lower edge of the first mel band, in Hz.
        fmax: Upper edge of the last mel band, in Hz (EfficientAT: ``sample_rate / 2 - 1000``).
        preemphasis: Pre-emphasis coefficient ``c`` of ``y[n] = x[n+1] - c x[n]``.
        log_offset: Added to the mel power before the logarithm.
        shift: The normalisation adds it after the logarithm ...
        scale: ... and divides by it.

    Raises:
        TypeError: If a field has the wrong type.
        ValueError: If the fields are inconsistent.
    """

    sample_rate: int = 32000
    n_fft: int = 1024
    window_size: int = 800
    hop_size: int = 320
    mel_bins: int = 128
    fmin: float = 0.0
    fmax: float = 15000.0
    preemphasis: float = 0.97
    log_offset: float = 1e-5
    shift: float = 4.5
    scale: float = 5.0

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "window_size", "hop_size", "mel_bins"):
            value = getattr(self, name)
            if not _is_int(value):
                raise TypeError(f"EfficientATFrontendConfig.{name} must be an int, got {value!r}")
            if value <= 0:
                raise ValueError(f"EfficientATFrontendConfig.{name} must be positive, got {value}")
        for name in ("fmin", "fmax", "preemphasis", "log_offset", "shift", "scale"):
            value = getattr(self, name)
            if not _is_real(value):
                raise TypeError(f"EfficientATFrontendConfig.{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.window_size > self.n_fft:
            raise ValueError(f"window_size ({self.window_size}) must not exceed n_fft ({self.n_fft})")
        if self.hop_size > self.window_size:
            raise ValueError(f"hop_size ({self.hop_size}) must not exceed window_size ({self.window_size})")
        if not 0.0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, fmax={self.fmax}, "
                f"sample_rate={self.sample_rate}"
            )
        if self.log_offset <= 0 or self.scale == 0:
            raise ValueError(f"log_offset must be positive and scale non-zero, got {self.log_offset}, {self.scale}")

    def num_frames(self, num_samples: int) -> int:
        """Frames for a waveform of ``num_samples`` samples: ``1 + (num_samples - 1) // hop_size``.

        Pre-emphasis drops one sample; ``center=True`` then gives one frame per hop.

        Args:
            num_samples: Waveform length in samples (at least 2).

        Returns:
            The number of frames.

        Raises:
            ValueError: If ``num_samples`` is not an int of at least 2.
        """
        if not _is_int(num_samples) or num_samples < 2:
            raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}")
        return 1 + (num_samples - 1) // self.hop_size

    def describe(self) -> str:
        """One line for model cards and reports."""
        return (
            f"pre-emphasis {self.preemphasis:g}, STFT n_fft {self.n_fft} (Hann window {self.window_size}, "
            f"hop {self.hop_size}), {self.mel_bins} Kaldi mel bins {self.fmin:g}–{self.fmax:g} Hz, "
            f"log(x + {self.log_offset:g}), (x + {self.shift:g}) / {self.scale:g}"
        )


def _kaldi_mel(freq: Tensor) -> Tensor:
    return 1127.0 * torch.log(1.0 + freq / 700.0)


def kaldi_mel_banks(
    mel_bins: int, n_fft: int, sample_rate: int, fmin: float, fmax: float, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Kaldi's triangular mel filterbank, laid out for ``banks @ power``.

    Band ``m`` rises linearly *in mel* from edge ``m`` to edge ``m + 1`` and falls to edge
    ``m + 2``, where the ``mel_bins + 2`` edges split ``[mel(fmin), mel(fmax)]`` evenly on the
    scale ``mel(f) = 1127 ln(1 + f / 700)``. The weights are not normalised; the ``n_fft // 2``
    bins below Nyquist are weighted as torchaudio's ``compliance.kaldi.get_mel_banks`` (without
    VTLN warping) weights them, the Nyquist bin gets weight 0. torchaudio computes in float32,
    where the vectorised ``log`` of the bin positions (mel values near 3000) differs between CPUs
    by an ulp, so its banks differ between machines by up to ~2e-5; vipann computes in float64 and
    rounds once, which is deterministic and within 1.3e-5 of torchaudio's float32 banks.

    Args:
        mel_bins: Number of bands.
        n_fft: FFT size; the result has ``n_fft // 2 + 1`` columns.
        sample_rate: Sampling rate in Hz.
        fmin: Lowest band edge in Hz.
        fmax: Highest band edge in Hz.
        dtype: Floating dtype of the result.

    Returns:
        Tensor of shape ``(mel_bins, n_fft // 2 + 1)``.

    Raises:
        ValueError: If the sizes are not positive or ``0 <= fmin < fmax <= sample_rate / 2`` fails.

    References:
        D. Povey et al., "The Kaldi Speech Recognition Toolkit", ASRU 2011 (``mel-computations.cc``).
    """
    if min(mel_bins, n_fft, sample_rate) <= 0 or not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(
            "need positive mel_bins, n_fft, sample_rate and 0 <= fmin < fmax <= sample_rate / 2, got "
            f"mel_bins={mel_bins}, n_fft={n_fft}, sample_rate={sample_rate}, fmin={fmin}, fmax={fmax}"
        )
    f64 = torch.float64
    low = 1127.0 * math.log(1.0 + fmin / 700.0)
    high = 1127.0 * math.log(1.0 + fmax / 700.0)
    delta = (high - low) / (mel_bins + 1)
    band = torch.arange(mel_bins, dtype=f64, device="cpu")[:, None]
    left = low + band * delta
    centre = low + (band + 1.0) * delta
    right = low + (band + 2.0) * delta
    bin_mel = _kaldi_mel((sample_rate / n_fft) * torch.arange(n_fft // 2, dtype=f64, device="cpu"))[None, :]
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    banks = torch.clamp_min(torch.minimum(rising, falling), 0.0)
    return F.pad(banks, (0, 1)).to(dtype)


class KaldiLogMelFrontend(nn.Module):
    """Waveform -> normalised log-mel spectrogram, as EfficientAT's ``AugmentMelSTFT`` (eval mode).

    Maps ``(batch, samples)`` at ``config.sample_rate`` to ``(batch, 1, mel_bins, frames)``.

    Args:
        config: Front-end parameters (default: EfficientAT's AudioSet front end).

    Raises:
        TypeError: If ``config`` is not an :class:`EfficientATFrontendConfig`.

    References:
        F. Schmid, K. Koutini, G. Widmer, "Efficient Large-Scale Audio Tagging via
        Transformer-to-CNN Knowledge Distillation", ICASSP 2023.
    """

    window: Tensor
    mel_banks: Tensor

    def __init__(self, config: EfficientATFrontendConfig | None = None) -> None:
        super().__init__()
        config = EfficientATFrontendConfig() if config is None else config
        if not isinstance(config, EfficientATFrontendConfig):
            raise TypeError(f"config must be an EfficientATFrontendConfig, got {type(config).__name__}")
        self.config = config
        c = config
        window = torch.hann_window(c.window_size, periodic=False, dtype=torch.float32, device="cpu")
        banks = kaldi_mel_banks(c.mel_bins, c.n_fft, c.sample_rate, c.fmin, c.fmax)
        kernel = torch.tensor([[[-c.preemphasis, 1.0]]], dtype=torch.float32, device="cpu")
        device = torch.empty(0).device  # the default device (e.g. inside ``with torch.device(...)``)
        self.register_buffer("window", window.to(device), persistent=False)
        self.register_buffer("mel_banks", banks.to(device), persistent=False)
        self.register_buffer("preemphasis_kernel", kernel.to(device), persistent=False)

    @property
    def min_samples(self) -> int:
        """Shortest accepted waveform: after pre-emphasis, reflect padding needs more than ``n_fft // 2``."""
        return self.config.n_fft // 2 + 2

    def extra_repr(self) -> str:
        """The settings shown by ``repr(module)``."""
        return self.config.describe()

    def forward(self, waveform: Tensor) -> Tensor:
        """Compute the normalised log-mel spectrogram of a batch of waveforms.

        Args:
            waveform: ``(batch, samples)`` floating tensor on the module's device, with at least
                :attr:`min_samples` samples.

        Returns:
            ``(batch, 1, mel_bins, frames)``, ``frames = config.num_frames(samples)``.

        Raises:
            TypeError: If ``waveform`` is not a floating-point tensor.
            ValueError: If it is not 2-D, is too short, or lives on another device.
        """
        why = "n_fft // 2 + 2: pre-emphasis, then reflect padding"
        check_frontend_input(waveform, self.min_samples, why, self.mel_banks.device)
        c = self.config
        # Autocast would run the matmul in half precision, where power spectra of loud audio overflow.
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            x = waveform.to(self.mel_banks.dtype)
            x = F.conv1d(x[:, None, :], self.preemphasis_kernel.to(x.dtype))[:, 0]
            spec = torch.stft(
                x,
                n_fft=c.n_fft,
                hop_length=c.hop_size,
                win_length=c.window_size,
                window=self.window.to(x.dtype),
                center=True,
                pad_mode="reflect",
                normalized=False,
                return_complex=True,
            )
            power = spec.real.square() + spec.imag.square()  # (B, bins, frames)
            mel = torch.matmul(self.mel_banks, power)  # (B, mel_bins, frames)
            log_mel = torch.log(mel + c.log_offset)
            out = (log_mel + c.shift) / c.scale
        return out.unsqueeze(1)
