"""Weak and strong views of log-mel inputs for FixMatch-style semi-supervised training.

FixMatch (Sohn et al., 2020) trains on two views of every unlabelled clip: a *weakly* augmented one
that gives the pseudo-label and a *strongly* augmented one that is trained to predict it. For audio,
Grollmisch & Cano (2021) and the FMUC paper (Grollmisch et al., 2023) augment the log-mel
"spectral image" with image operations: weak = translation in time and frequency; strong = the same
kind of translation plus additive Gaussian noise and sharpening. :class:`WeakAugment` and
:class:`StrongAugment` implement exactly these on ``(batch, channels, frames, mel_bins)`` tensors
(the network input after the per-band normalisation ``bn0``), with SpecAugment-style time and
frequency masking as an option of the strong view. Every random draw is per example and comes from
an optional :class:`torch.Generator`, so a training run can be resumed exactly. The input is never
modified in place and the output always has the input's shape.

* **shift** (:func:`random_shift`): each example is translated by an integer number of frames
  ``dt ~ U{-m_t, ..., m_t}`` and mel bins ``df ~ U{-m_f, ..., m_f}`` with ``m = floor(fraction *
  size)``; the cells shifted in are zero (``fill="zero"``: the per-band mean after normalisation,
  as an image translation pads) or the cells shifted out on the other side (``fill="wrap"``).
* **sharpening** (:func:`sharpen`): unsharp masking ``x + a (x - blur(x))`` with a 3 x 3 box blur
  (imgaug's ``Sharpen`` is the same idea), ``a ~ U(0, sharpen)`` per example.
* **noise** (:func:`gaussian_noise`): ``x + s * N(0, 1)`` with ``s ~ U(0, noise_std)`` per example
  (imgaug's ``AdditiveGaussianNoise(scale=(0, s))``), in units of the normalised input.
* **masking** (optional): :class:`~vipann.models.augment.SpecAugment` stripes set to zero.

The strong view draws its own shift (as FixMatch draws the strong view's flip-and-shift
independently of the weak view's), then sharpens, adds noise and masks. Noise with a positive
standard deviation changes every example, so the strong view is never the weak one.

References:
    K. Sohn et al., "FixMatch: Simplifying semi-supervised learning with consistency and
    confidence", NeurIPS 2020. S. Grollmisch and E. Cano, "Improving semi-supervised learning for
    audio classification with FixMatch", Electronics 10(15), 2021. S. Grollmisch, E. Cano,
    H. Lukashevich and J. Abeßer, "Uncertainty in semi-supervised audio classification: a novel
    extension for FixMatch", 2023.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vipann.models.augment import SpecAugment
from vipann.models.frontend import _is_real

__all__ = ["FILLS", "StrongAugment", "WeakAugment", "gaussian_noise", "random_shift", "sharpen"]

FILLS = ("zero", "wrap")


def _check_input(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} expects a floating (batch, channels, frames, mel_bins) tensor, got {shape}")


def _uniform(n: int, high: float, generator: torch.Generator | None, x: Tensor) -> Tensor:
    """``(n,)`` draws from ``U(0, high]`` (never 0) on the generator's device, as ``x``'s device and dtype."""
    device = generator.device if generator is not None else x.device
    u = 1.0 - torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    return (u * high).to(x.device, x.dtype)


def _shift_axis(x: Tensor, shifts: Tensor, dim: int, fill: str) -> Tensor:
    size = x.shape[dim]
    pos = torch.arange(size, device=x.device)
    source = pos[None, :] - shifts[:, None]  # (B, size): output cell t reads input cell t - shift
    if fill == "wrap":
        source = source.remainder(size)
        valid = None
    else:
        valid = (source >= 0) & (source < size)
        source = source.clamp(0, size - 1)
    view = [x.shape[0], 1, 1, 1]
    view[dim] = size
    index = source.reshape(view).expand_as(x)
    out = x.gather(dim, index)
    if valid is not None:
        out = out * valid.reshape(view).to(x.dtype)
    return out


def random_shift(
    x: Tensor,
    time_shift: float,
    freq_shift: float,
    *,
    fill: str = "zero",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Translate every example by its own random number of frames and mel bins.

    Args:
        x: ``(batch, channels, frames, mel_bins)`` input.
        time_shift: Largest shift as a fraction of the frames (``0``: no time shift).
        freq_shift: Largest shift as a fraction of the mel bins (``0``: no frequency shift).
        fill: ``"zero"`` (cells shifted in are 0) or ``"wrap"`` (circular shift).
        generator: Generator of the shifts (any device).

    Returns:
        The shifted tensor, shape of ``x``.

    Raises:
        ValueError: For a wrong input shape, a fraction outside ``[0, 1]`` or an unknown fill.
    """
    _check_input(x, "random_shift")
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    out = x
    for dim, fraction, name in ((2, time_shift, "time_shift"), (3, freq_shift, "freq_shift")):
        if not _is_real(fraction) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {fraction!r}")
        largest = math.floor(fraction * x.shape[dim])
        if largest == 0:
            continue
        device = generator.device if generator is not None else x.device
        shifts = torch.randint(-largest, largest + 1, (x.shape[0],), generator=generator, device=device)
        out = _shift_axis(out, shifts.to(x.device), dim, fill)
    return out


def sharpen(x: Tensor, amount: float | Tensor) -> Tensor:
    """Unsharp masking ``x + amount * (x - blur(x))`` with a 3 x 3 box blur (edges: mean of the cells inside).

    Args:
        x: ``(batch, channels, frames, mel_bins)`` input.
        amount: Sharpening strength, a number or ``(batch,)`` per example (0: unchanged).

    Returns:
        The sharpened tensor, shape of ``x``.
    """
    _check_input(x, "sharpen")
    blur = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    amount = torch.as_tensor(amount, device=x.device, dtype=x.dtype)
    if amount.ndim == 1:
        amount = amount[:, None, None, None]
    return x + amount * (x - blur)


def gaussian_noise(x: Tensor, std: float | Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``x + std * N(0, 1)``, the standard deviation a number or ``(batch,)`` per example.

    Args:
        x: ``(batch, channels, frames, mel_bins)`` input.
        std: Noise standard deviation.
        generator: Generator of the noise (any device).

    Returns:
        The noisy tensor, shape of ``x``.
    """
    _check_input(x, "gaussian_noise")
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    std = torch.as_tensor(std, device=x.device, dtype=x.dtype)
    if std.ndim == 1:
        std = std[:, None, None, None]
    return x + std * noise


@dataclass(frozen=True)
class WeakAugment:
    """The weak view: a random translation in time and frequency (FixMatch's flip-and-shift for spectrograms).

    Attributes:
        time_shift: Largest shift as a fraction of the frames (FixMatch: 0.125).
        freq_shift: Largest shift as a fraction of the mel bins (FixMatch: 0.125).
        fill: ``"zero"`` or ``"wrap"`` (see :func:`random_shift`).

    Example:
        >>> import torch
        >>> x = torch.randn(4, 1, 100, 32)
        >>> WeakAugment()(x, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 1, 100, 32])
    """

    time_shift: float = 0.125
    freq_shift: float = 0.125
    fill: str = "zero"

    def __post_init__(self) -> None:
        for name in ("time_shift", "freq_shift"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The weak view of ``x`` (a new tensor of the same shape)."""
        return random_shift(x, self.time_shift, self.freq_shift, fill=self.fill, generator=generator)


@dataclass(frozen=True)
class StrongAugment:
    """The strong view: its own random translation, then sharpening, Gaussian noise and optional masking.

    Attributes:
        time_shift: Largest time shift, fraction of the frames.
        freq_shift: Largest frequency shift, fraction of the mel bins.
        fill: ``"zero"`` or ``"wrap"``.
        noise_std: Largest noise standard deviation (per example ``U(0, noise_std]``); must be > 0
            so that the strong view always differs from the weak one.
        sharpen: Largest unsharp-masking amount (per example ``U(0, sharpen)``; 0: no sharpening).
        masking: Add SpecAugment stripes (zeroed time and frequency bands).
        mask_time_width: Exclusive upper bound of a time stripe's width, in frames.
        mask_time_stripes: Time stripes per example.
        mask_freq_width: Exclusive upper bound of a frequency stripe's width, in mel bins.
        mask_freq_stripes: Frequency stripes per example.

    Example:
        >>> import torch
        >>> x = torch.randn(4, 1, 100, 32)
        >>> StrongAugment(masking=True, mask_time_width=10)(x, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 1, 100, 32])
    """

    time_shift: float = 0.125
    freq_shift: float = 0.125
    fill: str = "zero"
    noise_std: float = 0.2
    sharpen: float = 1.0
    masking: bool = False
    mask_time_width: int = 64
    mask_time_stripes: int = 2
    mask_freq_width: int = 8
    mask_freq_stripes: int = 2

    def __post_init__(self) -> None:
        WeakAugment(self.time_shift, self.freq_shift, self.fill)  # same checks
        if not _is_real(self.noise_std) or not self.noise_std > 0:
            raise ValueError(
                f"noise_std must be > 0 (the noise is what makes the strong view differ from the weak one), "
                f"got {self.noise_std!r}"
            )
        if not _is_real(self.sharpen) or self.sharpen < 0:
            raise ValueError(f"sharpen must be >= 0, got {self.sharpen!r}")
        if self.masking:
            self.masker()  # validates the stripe settings

    @property
    def weak(self) -> WeakAugment:
        """The translation part, as a :class:`WeakAugment`."""
        return WeakAugment(self.time_shift, self.freq_shift, self.fill)

    def masker(self) -> SpecAugment:
        """The SpecAugment module of the masking option."""
        return SpecAugment(self.mask_time_width, self.mask_time_stripes, self.mask_freq_width, self.mask_freq_stripes)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The strong view of ``x`` (a new tensor of the same shape)."""
        out = self.weak(x, generator)
        if self.sharpen > 0:
            out = sharpen(out, _uniform(x.shape[0], self.sharpen, generator, x))
        out = gaussian_noise(out, _uniform(x.shape[0], self.noise_std, generator, x), generator)
        if self.masking:
            out = self.masker().train()(out, generator)
        return out
