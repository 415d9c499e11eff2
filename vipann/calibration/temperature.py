"""Temperature scaling: one positive scalar (or one per class) that divides the logits.

Temperature scaling (Guo et al., 2017) fits ``T`` on a held-out validation split by minimising the
negative log-likelihood of ``softmax(z / T)`` (multi-class) or ``sigmoid(z / T)`` (multi-label,
one shared ``T`` or one per class). A shared ``T`` never changes the arg-max of a single
deterministic prediction, so accuracy is unchanged while confidence is made honest.

Monte-Carlo logits ``(S, N, C)`` are supported everywhere: the likelihood is that of the
*MC-averaged* probabilities ``mean_s softmax(z_s / T)``, which is exactly what :func:`vipann.predict`
reports once the temperature is stored in the model's metadata (every sample's logits are divided by
``T`` before the softmax/sigmoid, then the samples are averaged).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vipann.calibration._checks import as_mc_logits, as_temperature, check_bounds, check_targets, work_dtype
from vipann.inference.temperature import apply_temperature

__all__ = ["apply_temperature", "fit_temperature", "scaled_probs"]


def _mean_log_probs(z: Tensor, multilabel: bool) -> tuple[Tensor, Tensor | None]:
    """Log of the MC-averaged probabilities of ``(S, N, C)`` (already scaled) logits.

    Multi-class: ``(log p̄, None)`` with ``p̄ = mean_s softmax``. Multi-label: ``(log p̄, log(1 - p̄))``
    with ``p̄ = mean_s sigmoid``. Log-sum-exps keep confident samples exact (no ``log(0)``).
    """
    log_s = math.log(z.shape[0])
    if multilabel:
        return torch.logsumexp(F.logsigmoid(z), 0) - log_s, torch.logsumexp(F.logsigmoid(-z), 0) - log_s
    return torch.logsumexp(torch.log_softmax(z, dim=-1), 0) - log_s, None


def scaled_probs(
    logits: Tensor, temperature: float | Sequence[float] | Tensor = 1.0, *, multilabel: bool = False
) -> Tensor:
    """Temperature-scaled probabilities, averaged over the Monte-Carlo samples.

    Inputs:
        logits: ``(N, C)`` or ``(S, N, C)`` logits.

    Args:
        logits: The logits.
        temperature: A positive scalar or ``(C,)`` temperatures.
        multilabel: Independent sigmoids (True) or one softmax per row (False).

    Returns:
        ``(N, C)`` probabilities ``mean_s softmax(z_s / T)`` (or sigmoid), in the logits' dtype.

    Raises:
        ValueError: For invalid logits or temperature.

    References:
        Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural networks", ICML 2017.
    """
    z = as_mc_logits(logits)
    t = as_temperature(temperature, z.shape[-1], z)
    probs = torch.sigmoid(z / t) if multilabel else torch.softmax(z / t, dim=-1)
    return probs.mean(0)


def temperature_nll(logits: Tensor, targets: Tensor, temperature: Tensor, *, multilabel: bool = False) -> Tensor:
    """Mean negative log-likelihood (nats) of the MC-averaged, temperature-scaled predictions.

    Differentiable in ``temperature``; used as the objective of :func:`fit_temperature`.

    Inputs:
        logits: ``(S, N, C)``; targets: ``(N,)`` int64 or ``(N, C)`` bool (already validated);
        temperature: 0-d or ``(C,)``.

    Args:
        logits: The logits.
        targets: The validated targets.
        temperature: The temperature.
        multilabel: Binary cross-entropy averaged over all (clip, class) pairs (True) or categorical
            NLL (False).

    Returns:
        A 0-d tensor.
    """
    log_p, log_q = _mean_log_probs(logits / temperature, multilabel)
    if multilabel:
        return -torch.where(targets, log_p, log_q).mean()
    return -log_p.gather(1, targets[:, None]).mean()


def fit_temperature(
    logits: Tensor,
    targets: Tensor,
    multilabel: bool = False,
    per_class: bool = False,
    *,
    max_iter: int = 200,
    bounds: tuple[float, float] = (0.05, 20.0),
) -> Tensor:
    """Fit the temperature that minimises the validation negative log-likelihood.

    ``log T`` is optimised with L-BFGS (strong-Wolfe line search), reparametrised as
    ``log T = log lo + (log hi - log lo) * sigmoid(u)`` so that ``T`` stays inside ``bounds``
    without a flat region that would stop the line search. Computation is in float64 (float32 on
    MPS) on the logits' device. With Monte-Carlo logits ``(S, N, C)`` the objective is the NLL of the
    MC-averaged probabilities ``mean_s softmax(z_s / T)`` (sigmoid for multi-label), i.e. the
    temperature calibrates the Monte-Carlo predictive distribution, not the single samples.

    Inputs:
        logits: ``(N, C)`` logits or ``(S, N, C)`` Monte-Carlo logits of a validation split.
        targets: ``(N,)`` class indices (multi-class) or ``(N, C)`` multi-hot (multi-label).

    Args:
        logits: Raw (unscaled) logits.
        targets: Ground truth.
        multilabel: Independent sigmoids (True) or one softmax per row (False).
        per_class: One temperature per class (multi-label only: each class's Bernoulli is scaled on
            its own; for a softmax, per-class temperatures would change the arg-max).
        max_iter: L-BFGS iterations.
        bounds: ``(low, high)`` range of the temperature.

    Returns:
        The temperature: a 0-d tensor, or ``(C,)`` when ``per_class``, in the logits' dtype and device.

    Raises:
        ValueError: For invalid logits, targets or bounds, or ``per_class`` without ``multilabel``.

    Warns:
        UserWarning: When a fitted temperature ends at a bound (the optimum may lie beyond it).

    References:
        Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural networks", ICML 2017.
        Lukashevich, Grollmisch & Abeßer, "Temperature scaling for reliable uncertainty estimation:
        Application to automatic music genre classification", 2023 (temperature scaling of deep
        ensembles for audio).

    Example:
        >>> import torch
        >>> z = 3 * torch.randn(2000, 5)
        >>> y = torch.distributions.Categorical(logits=z / 2).sample()
        >>> t = fit_temperature(z, y)  # close to 2
    """
    if per_class and not multilabel:
        raise ValueError(
            "per_class temperatures need multilabel=True: for a softmax they change the arg-max "
            "(that is vector scaling, not temperature scaling); use one shared temperature"
        )
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    lo, hi = check_bounds(bounds)
    z = as_mc_logits(logits)
    _, n, c = z.shape
    y = check_targets(targets, n, c, multilabel).to(z.device)
    dtype = work_dtype(z.device)
    z = z.detach().to(dtype)
    log_lo, log_hi = math.log(lo), math.log(hi)
    # Start at T = 1 (or the nearest bound): u with log T = 0.
    start = min(max(-log_lo / (log_hi - log_lo), 1e-6), 1 - 1e-6)
    u = torch.full((c,) if per_class else (), math.log(start / (1 - start)), dtype=dtype, device=z.device)
    u.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [u], lr=1.0, max_iter=int(max_iter), tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def temperature() -> Tensor:
        return torch.exp(log_lo + (log_hi - log_lo) * torch.sigmoid(u))

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = temperature_nll(z, y, temperature(), multilabel=multilabel)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    t = temperature().detach()
    near = (t <= lo * 1.01) | (t >= hi * 0.99)
    if bool(near.any()):
        warnings.warn(
            f"the fitted temperature reached the bounds {bounds} (values {t.flatten()[near.flatten()][:5].tolist()}); "
            "the NLL optimum may lie beyond them: widen `bounds` or check the logits and targets",
            stacklevel=2,
        )
    return t.to(logits.dtype)
