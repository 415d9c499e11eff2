"""The PANNs log-mel front end, computed with plain torch (augmentations: :mod:`vipann.models.augment`).

The front end reproduces torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank`` pair as used by
every logmel PANN (periodic Hann window, ``center=True``, reflect padding, Slaney mel filters,
``power_to_db``), but with :func:`torch.stft` instead of two frozen 1-D convolutions. The
filterbank and the window are derived from a :class:`FrontendConfig` and are never stored in
checkpoints; :func:`stft_kernels` rebuilds the convolution kernels of the original layout so that a
foreign checkpoint's front end can be checked against the config.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["ConfigDict", "FrontendConfig", "LogMelFrontend", "check_frontend_input", "mel_filterbank", "stft_kernels"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_Config = TypeVar("_Config", bound="ConfigDict")


class ConfigDict:
    """``to_dict`` / ``from_dict`` of a front-end config dataclass (every model family's front end)."""

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-serialisable dict (field name -> value)."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_Config], d: dict[str, Any]) -> _Config:
        """Build a config from a dict; missing fields take their defaults.

        Args:
            d: Mapping of field names to values, e.g. the output of :meth:`to_dict` or the
                ``"config"`` block of a PANNs key list.

        Returns:
            The validated config.

        Raises:
            TypeError: If ``d`` is not a mapping or a value has the wrong type.
            ValueError: If ``d`` has unknown keys or the values are inconsistent.
        """
        if not isinstance(d, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys are {sorted(known)}")
        return cls(**d)


@dataclass(frozen=True)
class FrontendConfig(ConfigDict):
    """Parameters of the log-mel front end; the defaults are the PANNs AudioSet ones.

    Attributes:
        sample_rate: Sampling rate in Hz that the waveform must have.
        window_size: STFT window length and FFT size, in samples.
        hop_size: STFT hop, in samples.
        mel_bins: Number of mel bands.
        fmin: Lowest mel filter edge, in Hz.
        fmax: Highest mel filter edge, in Hz (at most ``sample_rate / 2``).
        ref: Reference power for ``power_to_db`` (0 dB).
        amin: Power floor applied before the logarithm.
        top_db: If not ``None``, dB values more than ``top_db`` below each clip's peak are clamped.

    Raises:
        TypeError: If a field has the wrong type.
        ValueError: If the fields are inconsistent (e.g. ``fmax > sample_rate / 2``).
    """

    sample_rate: int = 32000
    window_size: int = 1024
    hop_size: int = 320
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    ref: float = 1.0
    amin: float = 1e-10
    top_db: float | None = None

    def __post_init__(self) -> None:
        for name in ("sample_rate", "window_size", "hop_size", "mel_bins"):
            value = getattr(self, name)
            if not _is_int(value):
                raise TypeError(f"FrontendConfig.{name} must be an int, got {value!r}")
            if value <= 0:
                raise ValueError(f"FrontendConfig.{name} must be positive, got {value}")
        for name in ("fmin", "fmax", "ref", "amin", "top_db"):
            value = getattr(self, name)
            if name == "top_db" and value is None:
                continue
            if not _is_real(value):
                raise TypeError(f"FrontendConfig.{name} must be a finite number, got {value!r}")
            # Normalise ints (e.g. fmin=50 from a JSON key list) so to_dict() round-trips exactly.
            object.__setattr__(self, name, float(value))
        if self.hop_size > self.window_size:
            raise ValueError(
                f"hop_size ({self.hop_size}) must not exceed window_size ({self.window_size}); "
                "otherwise samples between windows are skipped"
            )
        if self.fmin < 0:
            raise ValueError(f"fmin must be >= 0 Hz, got {self.fmin}")
        if self.fmax > self.sample_rate / 2:
            raise ValueError(
                f"fmax ({self.fmax} Hz) exceeds the Nyquist frequency sample_rate/2 "
                f"({self.sample_rate / 2} Hz); lower fmax or raise sample_rate"
            )
        if self.fmin >= self.fmax:
            raise ValueError(f"fmin ({self.fmin} Hz) must be below fmax ({self.fmax} Hz)")
        if self.ref <= 0 or self.amin <= 0:
            raise ValueError(f"ref and amin must be positive, got ref={self.ref}, amin={self.amin}")
        if self.top_db is not None and self.top_db < 0:
            raise ValueError(f"top_db must be None or >= 0, got {self.top_db}")

    def num_frames(self, num_samples: int) -> int:
        """Number of STFT frames for a waveform of ``num_samples`` samples (``center=True``).

        Args:
            num_samples: Waveform length in samples.

        Returns:
            ``1 + num_samples // hop_size``.

        Raises:
            ValueError: If ``num_samples`` is not a non-negative int.
        """
        if not _is_int(num_samples) or num_samples < 0:
            raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
        return 1 + num_samples // self.hop_size


# Slaney's Auditory Toolbox mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(freq: Tensor) -> Tensor:
    log = _MIN_LOG_MEL + torch.log(freq.clamp_min(_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(freq >= _MIN_LOG_HZ, log, freq / _F_SP)


def _mel_to_hz(mel: Tensor) -> Tensor:
    log = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (mel.clamp_min(_MIN_LOG_MEL) - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log, mel * _F_SP)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float,
    fmax: float,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Slaney-normalised triangular mel filterbank, laid out for ``power_spec @ melW``.

    Equal to ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm='slaney').T``,
    i.e. torchlibrosa's ``LogmelFilterBank.melW``. Computed in float64 and cast at the end
    (bit-identical to librosa in float32).

    Args:
        sample_rate: Sampling rate in Hz.
        n_fft: FFT size; the filterbank has ``n_fft // 2 + 1`` rows.
        n_mels: Number of mel bands (columns).
        fmin: Lowest filter edge in Hz.
        fmax: Highest filter edge in Hz.
        dtype: Floating dtype of the result.

    Returns:
        Tensor of shape ``(n_fft // 2 + 1, n_mels)``.

    Raises:
        ValueError: If the sizes are not positive or ``0 <= fmin < fmax <= sample_rate / 2`` fails.

    References:
        M. Slaney, "Auditory Toolbox", Interval Research Corporation, Tech. Rep. 1998-010, 1998.
        B. McFee et al., "librosa: Audio and Music Signal Analysis in Python", SciPy 2015.
    """
    if min(sample_rate, n_fft, n_mels) <= 0 or not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(
            "need positive sample_rate, n_fft, n_mels and 0 <= fmin < fmax <= sample_rate / 2, got "
            f"sample_rate={sample_rate}, n_fft={n_fft}, n_mels={n_mels}, fmin={fmin}, fmax={fmax}"
        )
    f64 = torch.float64
    fft_freqs = torch.arange(n_fft // 2 + 1, dtype=f64, device="cpu") * (sample_rate / n_fft)
    mel_edges = torch.linspace(
        float(_hz_to_mel(torch.tensor(float(fmin), dtype=f64, device="cpu"))),
        float(_hz_to_mel(torch.tensor(float(fmax), dtype=f64, device="cpu"))),
        n_mels + 2,
        dtype=f64,
        device="cpu",
    )
    hz_edges = _mel_to_hz(mel_edges)
    widths = hz_edges.diff()
    ramps = hz_edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = torch.minimum(lower, upper).clamp_min(0.0)
    if dtype == torch.float32:
        # librosa writes the triangles into its float32 output before normalising; rounding at
        # the same point makes the result bit-identical to librosa's (1 ulp off otherwise).
        weights = weights.float().double()
    # Slaney normalisation: every triangle gets unit area in Hz (height 2 / bandwidth).
    weights = weights * (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    return weights.T.contiguous().to(dtype)


def _periodic_hann(window_size: int) -> Tensor:
    # scipy's get_window('hann', N, fftbins=True): the periodic (DFT-even) Hann window.
    n = torch.arange(window_size, dtype=torch.float64, device="cpu")
    return 0.5 - 0.5 * torch.cos(2.0 * math.pi * n / window_size)


def stft_kernels(window_size: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """DFT-times-window kernels of torchlibrosa's convolutional STFT.

    These are ``spectrogram_extractor.stft.conv_real.weight`` and ``conv_imag.weight`` of an official
    PANNs checkpoint (``n_fft = win_length = window_size``, periodic Hann):
    ``real[k, 0, n] = cos(2πkn/N)·w[n]`` and ``imag[k, 0, n] = -sin(2πkn/N)·w[n]``.

    Args:
        window_size: FFT size ``N`` (equal to the window length).
        dtype: Floating dtype of the result.

    Returns:
        ``(real, imag)``, each of shape ``(N // 2 + 1, 1, N)``.

    Raises:
        ValueError: If ``window_size`` is not a positive int.
    """
    if not _is_int(window_size) or window_size <= 0:
        raise ValueError(f"window_size must be a positive int, got {window_size!r}")
    # Built on the CPU whatever the default device is (also under ``torch.device("meta")``).
    k = torch.arange(window_size // 2 + 1, dtype=torch.int64, device="cpu")
    n = torch.arange(window_size, dtype=torch.int64, device="cpu")
    # Reduce k*n modulo N in integers first so the float64 angle stays small and exact.
    angle = (2.0 * math.pi / window_size) * torch.remainder(k[:, None] * n[None, :], window_size).double()
    window = _periodic_hann(window_size)
    real = torch.cos(angle) * window
    imag = -torch.sin(angle) * window
    return real[:, None, :].to(dtype), imag[:, None, :].to(dtype)


def check_frontend_input(waveform: Tensor, min_samples: int, why: str, device: torch.device) -> None:
    """The input check of every front end's ``forward``: a 2-D float tensor, long enough, on ``device``.

    Args:
        waveform: What the front end was given.
        min_samples: The shortest waveform the front end takes.
        why: Where ``min_samples`` comes from, for the message.
        device: The front end's device.

    Raises:
        TypeError: If ``waveform`` is not a floating-point tensor.
        ValueError: If it is not 2-D, is too short, or lives on another device.
    """
    if not isinstance(waveform, Tensor) or not waveform.is_floating_point():
        kind = waveform.dtype if isinstance(waveform, Tensor) else type(waveform).__name__
        raise TypeError(f"waveform must be a floating-point torch.Tensor, got {kind}")
    if waveform.ndim != 2:
        raise ValueError(
            f"waveform must have shape (batch, samples), got {tuple(waveform.shape)}; "
            "use x.unsqueeze(0) for a single clip"
        )
    if waveform.shape[1] < min_samples:
        raise ValueError(
            f"waveform has {waveform.shape[1]} samples, but the front end needs at least {min_samples} ({why}); "
            "pad the clip"
        )
    if waveform.device != device:
        raise ValueError(
            f"waveform is on {waveform.device} but the front end is on {device}; move one of them with .to(device)"
        )


class LogMelFrontend(nn.Module):
    """Waveform -> log-mel spectrogram, as the PANNs front end (torchlibrosa) computes it.

    ``torch.stft`` (periodic Hann, ``center=True``, reflect padding) -> power ``|X|²`` ->
    ``@ melW`` -> ``power_to_db``. The window and filterbank are non-persistent buffers derived
    from the config, so they follow ``.to(device/dtype)`` but never appear in a ``state_dict``.
    Maps ``(batch, samples)`` at ``config.sample_rate`` to ``(batch, 1, frames, mel_bins)`` dB.

    Args:
        config: Front-end parameters; defaults to :class:`FrontendConfig` ``()``.

    Raises:
        TypeError: If ``config`` is not a :class:`FrontendConfig`.

    References:
        Q. Kong et al., "PANNs: Large-Scale Pretrained Audio Neural Networks for Audio Pattern
        Recognition", IEEE/ACM TASLP 28, 2020.
    """

    window: Tensor
    melW: Tensor  # noqa: N815 (torchlibrosa's name, kept for recognisability)

    def __init__(self, config: FrontendConfig | None = None) -> None:
        super().__init__()
        config = FrontendConfig() if config is None else config
        if not isinstance(config, FrontendConfig):
            raise TypeError(f"config must be a FrontendConfig, got {type(config).__name__}")
        self.config = config
        window = _periodic_hann(config.window_size).to(torch.float32)
        melW = mel_filterbank(config.sample_rate, config.window_size, config.mel_bins, config.fmin, config.fmax)
        # Computed on the CPU, then placed on the current default device (e.g. inside a
        # ``with torch.device(...)`` block), like every other parameter of the model.
        device = torch.empty(0).device
        self.register_buffer("window", window.to(device), persistent=False)
        self.register_buffer("melW", melW.to(device), persistent=False)

    @property
    def min_samples(self) -> int:
        """Shortest accepted waveform length: reflect padding needs more than ``window_size // 2``."""
        return self.config.window_size // 2 + 1

    def extra_repr(self) -> str:
        """The constructor settings shown by ``repr(module)``."""
        c = self.config
        return (
            f"sample_rate={c.sample_rate}, window_size={c.window_size}, hop_size={c.hop_size}, "
            f"mel_bins={c.mel_bins}, fmin={c.fmin}, fmax={c.fmax}, top_db={c.top_db}"
        )

    def forward(self, waveform: Tensor) -> Tensor:
        """Compute the log-mel spectrogram of a batch of waveforms.

        Args:
            waveform: ``(batch, samples)`` floating tensor on the module's device, with at least
                ``window_size // 2 + 1`` samples (reflect padding). It is cast to the module's dtype.

        Returns:
            ``(batch, 1, config.num_frames(samples), mel_bins)`` log-mel spectrogram in dB.

        Raises:
            TypeError: If ``waveform`` is not a floating-point tensor.
            ValueError: If it is not 2-D, is too short, or lives on another device.
        """
        check_frontend_input(waveform, self.min_samples, "window_size // 2 + 1, for reflect padding", self.melW.device)
        c = self.config
        # Autocast would run the matmul in half precision, where power spectra of loud audio overflow.
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            spec = torch.stft(
                waveform.to(self.melW.dtype),
                n_fft=c.window_size,
                hop_length=c.hop_size,
                win_length=c.window_size,
                window=self.window,
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )
            power = spec.real.square() + spec.imag.square()  # (B, F, frames)
            mel = power.transpose(1, 2) @ self.melW  # (B, frames, mel_bins)
            log_mel = 10.0 * torch.log10(mel.clamp_min(c.amin))
            log_mel = log_mel - 10.0 * math.log10(max(c.amin, c.ref))
            if c.top_db is not None:
                # librosa's rule per clip; torchlibrosa uses the batch-wide max instead, which would
                # make a clip's features depend on the other clips in its batch.
                peak = log_mel.amax(dim=(1, 2), keepdim=True)
                log_mel = torch.maximum(log_mel, peak - c.top_db)
        return log_mel.unsqueeze(1)
