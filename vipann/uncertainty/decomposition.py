"""The entropy and variance decompositions (see :mod:`vipann.uncertainty` for the conventions)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "Decomposition",
    "binary_entropy",
    "decompose",
    "decompose_variance",
    "entropy",
    "validate_probs",
]

# Elements per processing chunk (S * chunk * C); about 16 MB per temporary in float32.
_CHUNK_ELEMENTS = 1 << 22


class Decomposition(NamedTuple):
    """Total, aleatoric and epistemic uncertainty per clip.

    Attributes:
        total: ``(B,)`` total (predictive) uncertainty.
        aleatoric: ``(B,)`` expected data uncertainty.
        epistemic: ``(B,)`` model uncertainty, ``total - aleatoric`` (clamped at 0).
        total_per_class: ``(B, C)`` per-class terms of ``total`` when ``per_class=True``, else None.
        aleatoric_per_class: ``(B, C)`` per-class terms of ``aleatoric``, or None.
        epistemic_per_class: ``(B, C)`` per-class terms of ``epistemic``, or None.
    """

    total: Tensor
    aleatoric: Tensor
    epistemic: Tensor
    total_per_class: Tensor | None = None
    aleatoric_per_class: Tensor | None = None
    epistemic_per_class: Tensor | None = None


def _xlogx(p: Tensor) -> Tensor:
    """``p * log(p)`` with ``0 * log 0 = 0`` exactly.

    ``log`` is taken of ``max(p, tiny)`` (the dtype's smallest normal number), which is about four
    times faster than ``torch.special.xlogy``; only subnormal ``p`` are affected, by less than 1e-36
    (float32), so there is no epsilon bias at ``p = 0`` or ``p = 1``.
    """
    return p.clamp(min=torch.finfo(p.dtype).tiny).log_().mul_(p)


def entropy(p: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy ``-sum(p * log p)`` along ``dim``, in nats.

    ``0 * log 0`` is taken as 0 exactly (no epsilon bias). Values are not validated.

    Args:
        p: Floating-point probabilities; the distribution runs along ``dim``.
        dim: The axis holding the categorical distribution.

    Returns:
        ``p`` reduced over ``dim``.
    """
    return -_xlogx(p).sum(dim)


def binary_entropy(p: Tensor) -> Tensor:
    """Elementwise Bernoulli entropy ``-p log p - (1 - p) log(1 - p)``, in nats.

    Exactly 0 at ``p = 0`` and ``p = 1`` (``0 * log 0 = 0``, no epsilon). Values are not validated.

    Args:
        p: Floating-point Bernoulli probabilities of any shape.

    Returns:
        A tensor shaped like ``p``.
    """
    return _xlogx(p).add_(_xlogx(1.0 - p)).neg_()


def _as_samples(probs: Tensor, name: str) -> Tensor:
    if not isinstance(probs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(probs).__name__}")
    if probs.dim() == 2:
        probs = probs.unsqueeze(0)
    if probs.dim() != 3:
        raise ValueError(
            f"{name} must have shape (S, B, C) = (samples, clips, classes), or (B, C) for a single "
            f"sample; got a {probs.dim()}-d tensor of shape {tuple(probs.shape)}"
        )
    if not probs.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of probabilities; got dtype {probs.dtype}")
    if probs.numel() == 0:
        raise ValueError(f"{name} must be non-empty; got shape (S, B, C) = {tuple(probs.shape)}")
    return probs


def _chunk_len(probs: Tensor, chunk_size: int | None) -> int:
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // (probs.shape[0] * probs.shape[2]))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer (clips per chunk); got {chunk_size!r}")
    return chunk_size


def validate_probs(
    probs: Tensor,
    multilabel: bool,
    name: str = "probs",
    *,
    atol: float | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Check Monte-Carlo probabilities and return them as ``(S, B, C)``.

    Inputs:
        probs: ``(S, B, C)`` (samples, clips, classes), or ``(B, C)`` read as ``S = 1``. Multi-class
        (``multilabel=False``): each ``probs[s, b]`` is a categorical distribution over the classes.
        Multi-label: every entry is an independent Bernoulli probability.

    Args:
        probs: The probabilities to check.
        multilabel: True for independent per-class Bernoullis, False for one categorical per row.
        name: The argument name used in error messages.
        atol: Tolerance on ``|sum_c p - 1|`` for multi-class rows. Defaults to ``1e-3`` (``1e-2`` for
            16-bit dtypes), loose enough for float32 softmax over thousands of classes.
        chunk_size: Clips checked at a time (bounds the temporary memory); None picks one.

    Returns:
        ``probs`` viewed as ``(S, B, C)`` (a 2-d input gains a leading axis of size 1); not copied.

    Raises:
        TypeError: ``probs`` is not a tensor.
        ValueError: Wrong number of dimensions, non-float dtype, empty input, NaN/inf, values outside
            ``[0, 1]``, fewer than 2 classes for multi-class, or multi-class rows not summing to 1.
    """
    p = _as_samples(probs, name)
    _, B, C = p.shape
    if not multilabel and C < 2:
        raise ValueError(
            f"{name}: a multi-class (categorical) input needs at least 2 classes, got C = {C} "
            f"(shape (S, B, C) = {tuple(p.shape)}). For a single binary output use multilabel=True."
        )
    if atol is None:
        atol = 1e-2 if p.dtype in (torch.float16, torch.bfloat16) else 1e-3
    step = _chunk_len(p, chunk_size)
    for start in range(0, B, step):
        block = p[:, start : start + step]
        lo, hi = torch.aminmax(block)
        lo_v, hi_v = float(lo), float(hi)
        if not (math.isfinite(lo_v) and math.isfinite(hi_v)):
            raise ValueError(f"{name} contains NaN or infinite values (clips {start}..{start + step - 1})")
        if lo_v < 0.0 or hi_v > 1.0:
            raise ValueError(
                f"{name} must hold probabilities in [0, 1]; found values in [{lo_v:.4g}, {hi_v:.4g}]. "
                "Did you pass logits? Apply softmax (multi-class) or sigmoid (multi-label) first."
            )
        if not multilabel:
            err = (block.sum(-1, dtype=torch.float64) - 1.0).abs()
            worst = int(err.argmax())
            if float(err.view(-1)[worst]) > atol:
                s, b = divmod(worst, block.shape[1])
                total = float(block[s, b].sum(dtype=torch.float64))
                raise ValueError(
                    f"{name}: for a multi-class (categorical) input every (sample, clip) row must sum to 1 "
                    f"over the C = {C} classes, but row (s={s}, b={start + b}) sums to {total:.6g} "
                    f"(tolerance {atol:g}). Did you pass sigmoid (multi-label) outputs to a multi-class "
                    "function? Use multilabel=True for independent per-class probabilities."
                )
    return p


def _log_scale(base: float | None) -> float:
    if base is None:
        return 1.0
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 0 or base == 1:
        raise ValueError(f"base must be a positive number other than 1 (e.g. 2 for bits); got {base!r}")
    return 1.0 / math.log(base)


def _run_chunked(
    probs: Tensor,
    multilabel: bool,
    per_class: bool,
    chunk_size: int | None,
    scale: float,
    terms: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]],
) -> Decomposition:
    """Apply ``terms`` (per-class total/aleatoric/epistemic of one chunk) over clip chunks."""
    p = validate_probs(probs, multilabel, chunk_size=chunk_size)
    _, B, C = p.shape
    dtype = torch.promote_types(p.dtype, torch.float32)
    out = torch.empty(3, B, dtype=dtype, device=p.device)
    per = torch.empty(3, B, C, dtype=dtype, device=p.device) if per_class else None
    step = _chunk_len(p, chunk_size)
    for start in range(0, B, step):
        stop = min(start + step, B)
        tot, ale, epi = terms(p[:, start:stop].to(dtype))
        out[0, start:stop] = tot.sum(-1)
        out[1, start:stop] = ale.sum(-1)
        out[2, start:stop] = epi.sum(-1)
        if per is not None:
            per[0, start:stop] = tot
            per[1, start:stop] = ale
            per[2, start:stop] = epi
    if scale != 1.0:
        out.mul_(scale)
        if per is not None:
            per.mul_(scale)
    # The epistemic part is >= 0 in exact arithmetic (Jensen); clamp rounding negatives (~eps * total).
    out[2].clamp_(min=0.0)
    if per is None:
        return Decomposition(out[0], out[1], out[2])
    per[2].clamp_(min=0.0)
    return Decomposition(out[0], out[1], out[2], per[0], per[1], per[2])


def decompose(
    probs: Tensor,
    multilabel: bool,
    *,
    per_class: bool = False,
    base: float | None = None,
    chunk_size: int | None = None,
) -> Decomposition:
    """Entropy decomposition: total = aleatoric + epistemic (mutual information).

    With ``p̄ = mean_s probs[s]`` (VI-PANN Eq. 1):

    * multi-class (``multilabel=False``, one categorical per row; Eqs. 2-4):
      ``total = H(p̄)``, ``aleatoric = mean_s H(probs[s])``, ``epistemic = total - aleatoric``
      (the mutual information between label and weights), with ``H`` the Shannon entropy over classes.
    * multi-label (``multilabel=True``, independent Bernoullis; Eqs. 6-8): the same with the binary
      entropy ``H_b`` per class, summed over classes: ``total = sum_c H_b(p̄_c)``,
      ``aleatoric = sum_c mean_s H_b(probs[s, :, c])``.

    ``0 log 0`` is taken as 0 exactly (no epsilon, so no bias at ``p = 0`` or ``1``). The
    epistemic part is non-negative in exact arithmetic (Jensen's inequality); rounding can make
    ``total - aleatoric`` slightly negative (order ``eps * total``), and such values are clamped to 0, so
    ``total == aleatoric + epistemic`` holds up to that rounding. With a 2-d input (``S = 1``) the
    epistemic part is 0. Computation is in float32, or float64 for float64 input.

    Inputs:
        probs: ``(S, B, C)`` Monte-Carlo probabilities (samples, clips, classes) or ``(B, C)`` as ``S=1``.

    Args:
        probs: The Monte-Carlo probabilities.
        multilabel: False: each row is one categorical over the classes (softmax outputs; rows must sum
            to 1). True: the classes are independent Bernoullis (sigmoid outputs).
        per_class: Also return the ``(B, C)`` per-class terms. Multi-label: each class's binary
            entropies. Multi-class: each class's additive share of the categorical entropies
            (``-p̄_c log p̄_c`` and ``-mean_s p_c log p_c``); every share of the epistemic part is
            non-negative because ``x log x`` is convex. The shares sum to the ``(B,)`` totals.
        base: Logarithm base; None for nats, 2 for bits.
        chunk_size: Clips processed at a time, bounding the extra memory to a few times
            ``S * chunk_size * C`` elements. None picks about 4M elements per chunk.

    Returns:
        A :class:`Decomposition` whose fields are ``(B,)`` tensors (and ``(B, C)`` per-class fields when
        ``per_class=True``) on the device of ``probs``.

    Raises:
        ValueError: Invalid probabilities (see :func:`validate_probs`) or an invalid ``base``.

    References:
        Fischer, Orescanin & Eckstrand, "VI-PANN: Harnessing transfer learning and uncertainty-aware
        variational inference for improved generalization in audio pattern recognition", 2024
        (Sections 2.3 and 3.2, Eqs. 1-8). Depeweg et al., "Decomposition of uncertainty in Bayesian deep
        learning for efficient and risk-sensitive learning", ICML 2018.

    Example:
        >>> probs = torch.softmax(torch.randn(30, 8, 50), dim=-1)  # (S, B, C)
        >>> d = decompose(probs, multilabel=False)
        >>> d.total.shape
        torch.Size([8])
    """
    scale = _log_scale(base)

    if multilabel:

        def terms(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            tot = binary_entropy(x.mean(0))
            ale = binary_entropy(x).mean(0)
            return tot, ale, tot - ale

    else:

        def terms(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            tot = _xlogx(x.mean(0)).neg_()
            ale = _xlogx(x).mean(0).neg_()
            return tot, ale, tot - ale

    return _run_chunked(probs, multilabel, per_class, chunk_size, scale, terms)


def decompose_variance(
    probs: Tensor,
    multilabel: bool,
    *,
    per_class: bool = False,
    chunk_size: int | None = None,
) -> Decomposition:
    """Variance decomposition (law of total variance), after Kwon et al. (2020).

    Per class, with ``p̄_c = mean_s p_c``:
    ``aleatoric_c = mean_s p_c (1 - p_c)`` (expected Bernoulli variance),
    ``epistemic_c = mean_s (p_c - p̄_c)^2 = E[p_c^2] - E[p_c]^2`` (variance across samples, population
    form), and ``total_c = p̄_c (1 - p̄_c) = aleatoric_c + epistemic_c``. The ``(B,)`` results sum over
    classes. The formula is the same for both readings of the class axis; for multi-class input it is
    the trace (sum of the diagonal) of Kwon et al.'s aleatoric ``E[diag(p) - p p^T]`` and epistemic
    ``E[(p - p̄)(p - p̄)^T]`` covariance matrices, so ``total = 1 - sum_c p̄_c^2``. ``multilabel`` only
    selects the validation (multi-class rows must sum to 1). The epistemic part is computed from centred
    samples (two passes), which keeps it non-negative without cancellation.

    Inputs:
        probs: ``(S, B, C)`` Monte-Carlo probabilities (samples, clips, classes) or ``(B, C)`` as ``S=1``.

    Args:
        probs: The Monte-Carlo probabilities.
        multilabel: False: one categorical per row (rows must sum to 1). True: independent Bernoullis.
        per_class: Also return the ``(B, C)`` per-class (diagonal) terms.
        chunk_size: Clips processed at a time (see :func:`decompose`).

    Returns:
        A :class:`Decomposition` of ``(B,)`` tensors (plus ``(B, C)`` fields when ``per_class=True``).

    Raises:
        ValueError: Invalid probabilities (see :func:`validate_probs`).

    References:
        Kwon, Won, Kim & Paik, "Uncertainty quantification using Bayesian neural networks in
        classification: Application to biomedical image segmentation", Computational Statistics & Data
        Analysis 142, 2020.
    """

    def terms(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mean = x.mean(0)
        tot = mean * (1.0 - mean)
        epi = (x - mean).square_().mean(0)
        ale = (x * (1.0 - x)).mean(0)
        return tot, ale, epi

    return _run_chunked(probs, multilabel, per_class, chunk_size, 1.0, terms)
