"""Training-time augmentations of the PANNs recipe: SpecAugment stripes and mixup.

Both are exact re-implementations of PANNs' (torchlibrosa's ``SpecAugmentation`` and the
``Mixup`` / ``do_mixup`` pair of the PANNs training code), drawn from an optional generator so that
training runs can be resumed exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vipann.models.frontend import _is_int, _is_real

__all__ = ["Mixup", "SpecAugment", "do_mixup"]


def _stripe_mask(
    batch: int,
    total: int,
    drop_width: int,
    stripes: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    # Same distribution as torchlibrosa's DropStripes: width ~ U{0..drop_width-1},
    # start ~ U{0..total-width-1} (so the last position is never dropped), drawn per example.
    draw_device = generator.device if generator is not None else device
    widths = torch.randint(0, drop_width, (batch, stripes), generator=generator, device=draw_device)
    widths = widths.clamp(max=total)
    high = (total - widths).clamp(min=1)
    # float64 so u * high can never round up to high itself.
    u = torch.rand((batch, stripes), generator=generator, device=draw_device, dtype=torch.float64)
    starts = torch.minimum((u * high).floor().long(), high - 1)
    starts, ends = starts.to(device), (starts + widths).to(device)
    pos = torch.arange(total, device=device)
    inside = (pos >= starts[..., None]) & (pos < ends[..., None])  # (batch, stripes, total)
    return inside.any(dim=1)


class SpecAugment(nn.Module):
    """PANNs' SpecAugmentation: random time and frequency stripes set to zero (training only).

    For each example, ``time_stripes_num`` stripes of width drawn from ``[0, time_drop_width)`` are
    zeroed along time (dim 2) and ``freq_stripes_num`` stripes of width in ``[0, freq_drop_width)``
    along frequency (dim 3) of a ``(batch, channels, time, freq)`` tensor; the input is never
    modified in place. In ``eval()`` mode the input is returned unchanged.

    Args:
        time_drop_width: Exclusive upper bound of a time stripe's width, in frames.
        time_stripes_num: Number of time stripes per example.
        freq_drop_width: Exclusive upper bound of a frequency stripe's width, in bins.
        freq_stripes_num: Number of frequency stripes per example.

    Raises:
        ValueError: If a width is not a positive int or a count is negative.

    References:
        D. S. Park et al., "SpecAugment: A Simple Data Augmentation Method for Automatic Speech
        Recognition", Interspeech 2019.
    """

    def __init__(
        self,
        time_drop_width: int = 64,
        time_stripes_num: int = 2,
        freq_drop_width: int = 8,
        freq_stripes_num: int = 2,
    ) -> None:
        super().__init__()
        for name, value, minimum in (
            ("time_drop_width", time_drop_width, 1),
            ("freq_drop_width", freq_drop_width, 1),
            ("time_stripes_num", time_stripes_num, 0),
            ("freq_stripes_num", freq_stripes_num, 0),
        ):
            if not _is_int(value) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
        self.time_drop_width = time_drop_width
        self.time_stripes_num = time_stripes_num
        self.freq_drop_width = freq_drop_width
        self.freq_stripes_num = freq_stripes_num

    def extra_repr(self) -> str:
        """The constructor settings shown by ``repr(module)``."""
        return (
            f"time_drop_width={self.time_drop_width}, time_stripes_num={self.time_stripes_num}, "
            f"freq_drop_width={self.freq_drop_width}, freq_stripes_num={self.freq_stripes_num}"
        )

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Zero random stripes of ``x`` when training; return ``x`` itself in eval mode.

        Args:
            x: ``(batch, channels, time, freq)`` tensor.
            generator: Optional random generator (on any device) for reproducible masks.

        Returns:
            The augmented tensor (or ``x`` in eval mode).

        Raises:
            ValueError: If ``x`` is not 4-D.
        """
        if x.ndim != 4:
            raise ValueError(f"SpecAugment expects (batch, channels, time, freq), got shape {tuple(x.shape)}")
        if not self.training:
            return x
        batch, _, time, freq = x.shape
        time_mask = _stripe_mask(batch, time, self.time_drop_width, self.time_stripes_num, generator, x.device)
        freq_mask = _stripe_mask(batch, freq, self.freq_drop_width, self.freq_stripes_num, generator, x.device)
        mask = time_mask[:, None, :, None] | freq_mask[:, None, None, :]
        return x.masked_fill(mask, 0.0)


def _log_gamma(shape: float, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    # log of Gamma(shape, 1) draws by Marsaglia & Tsang's squeeze method; shape < 1 is boosted to
    # shape + 1 and corrected by U^(1/shape), kept in log space so tiny alphas cannot underflow.
    boosted = shape + 1.0 if shape < 1.0 else shape
    d = boosted - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=torch.float64, device=device)
    todo = torch.arange(n, device=device)
    while todo.numel() > 0:
        m = todo.numel()
        x = torch.randn(m, generator=generator, device=device, dtype=torch.float64)
        u = torch.rand(m, generator=generator, device=device, dtype=torch.float64)
        v = (1.0 + c * x) ** 3
        log_v = torch.log(v.clamp_min(1e-300))
        accept = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * log_v)
        out[todo[accept]] = math.log(d) + log_v[accept]
        todo = todo[~accept]
    if shape < 1.0:
        u = 1.0 - torch.rand(n, generator=generator, device=device, dtype=torch.float64)  # (0, 1]
        out = out + torch.log(u) / shape
    return out


def do_mixup(x: Tensor, mixup_lambda: Tensor) -> Tensor:
    """Mix consecutive pairs of a batch, PANNs style: the output has **half** the batch size.

    ``out[i] = x[2i] * lambda[2i] + x[2i+1] * lambda[2i+1]``. PANNs feeds the full batch through
    the front end and mixes the features, so targets must be mixed the same way (``do_mixup`` on
    the ``(B, C)`` targets).

    Args:
        x: ``(batch, ...)`` tensor with an even batch size.
        mixup_lambda: ``(batch,)`` coefficients, e.g. from :meth:`Mixup.lambdas`; they are cast to
            ``x``'s dtype and device.

    Returns:
        ``(batch // 2, ...)`` tensor.

    Raises:
        ValueError: If the batch is odd or the shapes disagree.
    """
    if x.ndim < 1 or x.shape[0] % 2:
        raise ValueError(f"do_mixup needs an even batch size, got x of shape {tuple(x.shape)}")
    if mixup_lambda.ndim != 1 or mixup_lambda.shape[0] != x.shape[0]:
        raise ValueError(f"mixup_lambda must have shape ({x.shape[0]},) to match x, got {tuple(mixup_lambda.shape)}")
    lam = mixup_lambda.to(device=x.device, dtype=x.dtype)
    return (x[0::2].transpose(0, -1) * lam[0::2] + x[1::2].transpose(0, -1) * lam[1::2]).transpose(0, -1)


class Mixup:
    """Pairwise mixup coefficients as PANNs draws them, from a torch generator.

    For each consecutive pair ``(2i, 2i+1)`` of a batch, ``lam ~ Beta(alpha, alpha)`` and the
    coefficients are ``(lam, 1 - lam)``. Apply them with :func:`do_mixup`, which halves the batch.

    Args:
        alpha: Beta concentration (PANNs uses 1.0, i.e. a uniform ``lam``).
        generator: Optional torch generator; its device is where the draws are made.

    Raises:
        ValueError: If ``alpha`` is not a positive finite number.

    References:
        H. Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
        G. Marsaglia and W. W. Tsang, "A Simple Method for Generating Gamma Variables",
        ACM TOMS 26(3), 2000.
    """

    def __init__(self, alpha: float = 1.0, generator: torch.Generator | None = None) -> None:
        if not _is_real(alpha) or alpha <= 0:
            raise ValueError(f"mixup alpha must be a positive finite number, got {alpha!r}")
        self.alpha = float(alpha)
        self.generator = generator

    def __repr__(self) -> str:
        return f"Mixup(alpha={self.alpha})"

    def lambdas(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Draw mixup coefficients for a batch.

        Args:
            batch_size: Even, positive batch size.
            device: Device of the result (default: the generator's device, else CPU).
            dtype: Floating dtype of the result.

        Returns:
            ``(batch_size,)`` tensor with ``out[2i] = lam_i`` and ``out[2i+1] = 1 - lam_i``.

        Raises:
            ValueError: If ``batch_size`` is not a positive even int.
        """
        if not _is_int(batch_size) or batch_size <= 0 or batch_size % 2:
            raise ValueError(f"mixup needs a positive even batch size (pairs are mixed), got {batch_size!r}")
        draw_device = self.generator.device if self.generator is not None else torch.device("cpu")
        pairs = batch_size // 2
        log_x = _log_gamma(self.alpha, pairs, self.generator, draw_device)
        log_y = _log_gamma(self.alpha, pairs, self.generator, draw_device)
        lam = torch.sigmoid(log_x - log_y)  # X / (X + Y) ~ Beta(alpha, alpha)
        out = torch.stack([lam, 1.0 - lam], dim=1).reshape(batch_size)
        return out.to(device=device, dtype=dtype)

    # Also reachable as Mixup.do_mixup, mirroring PANNs where both live side by side.
    do_mixup = staticmethod(do_mixup)
