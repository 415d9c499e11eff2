"""SNGP: a random-feature Gaussian-process output layer with a Laplace posterior, and its head.

The Spectral-normalised Neural Gaussian Process (Liu et al., 2020; best-calibrated method on audio in
Ye et al., 2022) replaces the classifier with a GP whose RBF kernel is approximated by ``D`` random
Fourier features ``phi(h) = sqrt(2 / D) cos(W h + b)`` (``W ~ N(0, 1 / l^2)``, ``b ~ U(0, 2 pi)``,
fixed), and a trainable output layer ``beta``: ``logits = beta(phi(h))``. Training is ordinary
maximum a-posteriori training of ``beta`` (and the layers below). During the last training epoch the
layer accumulates the Laplace precision ``P = ridge I + sum_i w_i phi_i phi_i^T``; the posterior
covariance is ``Sigma = ridge P^{-1}`` and the predictive variance of a clip is
``v = phi^T Sigma phi``: close to ``1`` (the prior) far from the training data, small near it. At
inference the logits are mean-field adjusted, ``logits / sqrt(1 + lambda v)`` with ``lambda = pi / 8``,
so predictions far from the data move towards the uniform distribution (multi-class) or 0.5
(multi-label).

A shared covariance is used for all classes (one ``D x D`` matrix, not ``C``). The per-example
weight ``w_i`` is the curvature of the likelihood: ``1`` with ``likelihood="gaussian"`` (the default,
as in the reference implementation: the GP posterior of a Gaussian-likelihood surrogate), or, with
``likelihood="laplace"``, the logistic curvature ``p (1 - p)`` of the predicted class (softmax) or the
class-average of ``p_c (1 - p_c)`` (multi-label sigmoids). With a very confident training fit the
Laplace weights are tiny and the variance then stays close to the prior everywhere, which is why the
Gaussian weights are the default.

Plugging it into a PANN: :func:`attach_sngp_head` replaces ``fc1``/``act_fc1`` by spectral-normalised
hidden layers and ``fc_audioset`` by the GP layer, keeping the stage layout, so :func:`vipann.predict`,
the feature caches and the MC-dropout sites of ``drop`` models work unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vipann.calibration.spectral import SpectralNormMLP
from vipann.zoo.heads import register_head

__all__ = [
    "LIKELIHOODS",
    "RandomFeatureGP",
    "SNGPHead",
    "all_reduce_sngp_precision",
    "attach_sngp_head",
    "mean_field_logits",
    "reset_sngp_precision",
]

LIKELIHOODS = ("gaussian", "laplace")


def mean_field_logits(logits: Tensor, variance: Tensor, mean_field_factor: float = math.pi / 8) -> Tensor:
    """Mean-field approximation of the predictive distribution's logits.

    ``logits / sqrt(1 + lambda * variance)``: the probit approximation of the expected sigmoid
    (``lambda = pi / 8``), also used for the softmax in SNGP. The logits shrink towards 0 as the
    variance grows; ``lambda = 0`` returns them unchanged.

    Inputs:
        logits: ``(B, C)``; variance: ``(B,)`` (one per clip) or ``(B, C)``.

    Args:
        logits: GP posterior-mean logits.
        variance: Predictive variance (non-negative).
        mean_field_factor: ``lambda >= 0``.

    Returns:
        ``(B, C)`` adjusted logits.

    Raises:
        ValueError: For a negative factor or a variance of the wrong shape.

    References:
        Liu et al., "Simple and principled uncertainty estimation with deterministic deep learning via
        distance awareness", NeurIPS 2020. MacKay, "The evidence framework applied to classification
        networks", Neural Computation 1992 (probit approximation).
    """
    if not float(mean_field_factor) >= 0:
        raise ValueError(f"mean_field_factor must be >= 0, got {mean_field_factor}")
    if variance.dim() == logits.dim() - 1:
        variance = variance[..., None]
    if variance.shape[0] != logits.shape[0] or variance.dim() != logits.dim():
        raise ValueError(
            f"variance of shape {tuple(variance.shape)} does not fit logits of shape {tuple(logits.shape)}"
        )
    return logits / torch.sqrt(1.0 + float(mean_field_factor) * variance.clamp(min=0))


class RandomFeatureGP(nn.Module):
    """Random-Fourier-feature Gaussian-process output layer with a Laplace posterior covariance.

    ``forward`` returns plain logits in training mode (and adds the batch to the precision matrix
    when :attr:`accumulate` is True) and mean-field logits in ``eval()`` mode; :meth:`posterior` gives
    the posterior-mean logits and the predictive variance. The random projection, the precision and
    the singular vectors are buffers, so they are saved and loaded with the model.

    Args:
        in_features: Input width.
        num_classes: Number of outputs.
        num_features: Random Fourier features ``D``.
        lengthscale: RBF length scale ``l`` (default ``sqrt(in_features)``, so that typical distances
            between inputs with unit-scale coordinates are a few length scales).
        ridge: Prior precision (the ``ridge I`` the precision starts from).
        likelihood: ``"gaussian"`` (weight 1) or ``"laplace"`` (``p (1 - p)`` weights).
        multilabel: Sigmoid (True) or softmax (False) outputs, for the Laplace weights.
        mean_field_factor: ``lambda`` of the eval-mode mean-field logits; None returns the
            posterior-mean logits in eval mode too.
        bias: Give the output layer a bias.

    Attributes:
        accumulate: Whether training-mode forward passes add to the precision (default True).

    Raises:
        ValueError: For invalid sizes, an unknown likelihood or non-positive scales.

    References:
        Liu et al., "Simple and principled uncertainty estimation with deterministic deep learning via
        distance awareness", NeurIPS 2020. Rahimi & Recht, "Random features for large-scale kernel
        machines", NeurIPS 2007.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        num_features: int = 1024,
        lengthscale: float | None = None,
        ridge: float = 1.0,
        likelihood: str = "gaussian",
        multilabel: bool = False,
        mean_field_factor: float | None = math.pi / 8,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if min(int(in_features), int(num_classes), int(num_features)) < 1:
            raise ValueError("in_features, num_classes and num_features must be positive")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of: {', '.join(LIKELIHOODS)}")
        lengthscale = math.sqrt(in_features) if lengthscale is None else float(lengthscale)
        if not lengthscale > 0 or not float(ridge) > 0:
            raise ValueError(f"lengthscale and ridge must be positive, got {lengthscale} and {ridge}")
        if mean_field_factor is not None and not float(mean_field_factor) >= 0:
            raise ValueError(f"mean_field_factor must be >= 0 or None, got {mean_field_factor}")
        self.in_features, self.num_classes, self.num_features = int(in_features), int(num_classes), int(num_features)
        self.lengthscale, self.ridge, self.likelihood = lengthscale, float(ridge), likelihood
        self.multilabel = bool(multilabel)
        self.mean_field_factor = None if mean_field_factor is None else float(mean_field_factor)
        self.accumulate = True
        self.register_buffer("rff_weight", torch.randn(self.num_features, self.in_features) / lengthscale)
        self.register_buffer("rff_bias", torch.rand(self.num_features) * (2 * math.pi))
        self.register_buffer("precision", self.ridge * torch.eye(self.num_features))
        self.beta = nn.Linear(self.num_features, self.num_classes, bias=bias)
        self._cov: Tensor | None = None

    def extra_repr(self) -> str:
        """Summary shown by ``repr(module)``."""
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, num_features={self.num_features}, "
            f"lengthscale={self.lengthscale:.4g}, likelihood={self.likelihood!r}, "
            f"mean_field_factor={self.mean_field_factor}"
        )

    # -- features and precision ------------------------------------------------------------
    def features(self, x: Tensor) -> Tensor:
        """Random Fourier features ``(..., D)`` of ``(..., in_features)`` inputs."""
        # At least float32 (autocast off): the phases W h + b span many periods and half precision
        # would round them by a sizeable fraction of one.
        dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            phase = F.linear(x.to(dtype), self.rff_weight.to(dtype), self.rff_bias.to(dtype))
        return math.sqrt(2.0 / self.num_features) * torch.cos(phase)

    def reset_precision(self) -> None:
        """Restart the precision from ``ridge I`` (call at the start of the epoch that accumulates it)."""
        self.precision.copy_(self.ridge * torch.eye(self.num_features, device=self.precision.device))
        self._cov = None

    @torch.no_grad()
    def update_precision(self, features: Tensor, logits: Tensor | None = None) -> None:
        """Add ``sum_i w_i phi_i phi_i^T`` of a batch to the precision.

        Args:
            features: ``(B, D)`` random features.
            logits: ``(B, C)`` logits (needed for ``likelihood="laplace"``).

        Raises:
            ValueError: If ``likelihood="laplace"`` and no logits are given.
        """
        with torch.autocast(features.device.type, enabled=False):
            phi = features.detach().reshape(-1, self.num_features).to(self.precision.dtype)
            if self.likelihood == "laplace":
                if logits is None:
                    raise ValueError("the Laplace precision needs the logits of the batch")
                z = logits.detach().reshape(phi.shape[0], -1).to(self.precision.dtype)
                if self.multilabel:
                    p = torch.sigmoid(z)
                    weight = (p * (1 - p)).mean(-1)
                else:
                    p = torch.softmax(z, -1).amax(-1)
                    weight = p * (1 - p)
                phi = phi * weight.sqrt()[:, None]
            self.precision.addmm_(phi.t(), phi)
        self._cov = None

    def covariance(self) -> Tensor:
        """Posterior covariance ``ridge * precision^-1`` ``(D, D)`` (cached until the precision changes)."""
        cov = self._cov
        if cov is None or cov.device != self.precision.device:
            with torch.autocast(self.precision.device.type, enabled=False):
                chol = torch.linalg.cholesky(self.precision)
                cov = self.ridge * torch.cholesky_inverse(chol)
            self._cov = cov
        return cov

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._cov = None
        super()._load_from_state_dict(*args, **kwargs)

    def _variance(self, phi: Tensor) -> Tensor:
        cov = self.covariance()
        phi = phi.to(cov.dtype)
        return ((phi @ cov) * phi).sum(-1)

    # -- outputs ------------------------------------------------------------------------------
    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior-mean logits ``(B, C)`` and predictive variance ``(B,)`` of ``(B, in_features)`` inputs."""
        phi = self.features(x)
        return self.beta(phi.to(self.beta.weight.dtype)), self._variance(phi).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Logits: plain in training mode (accumulating the precision), mean-field in ``eval()`` mode."""
        phi = self.features(x)
        logits = self.beta(phi.to(self.beta.weight.dtype))
        if self.training:
            if self.accumulate:
                self.update_precision(phi, logits)
            return logits
        if self.mean_field_factor is None:
            return logits
        return mean_field_logits(logits, self._variance(phi).to(logits.dtype), self.mean_field_factor)


class SNGPHead(nn.Module):
    """An SNGP classifier head: spectral-normalised hidden layers and a random-feature GP output layer.

    Args:
        in_features: Input width (e.g. a backbone's pooled embedding).
        num_classes: Number of outputs.
        hidden: Widths of the spectral-normalised hidden layers (residual where widths match).
        spectral_bound: Spectral-norm bound of the hidden layers.
        **gp_kwargs: :class:`RandomFeatureGP` options (``num_features``, ``lengthscale``, ``ridge``,
            ``likelihood``, ``multilabel``, ``mean_field_factor``, ``bias``).

    References:
        Liu et al., "Simple and principled uncertainty estimation with deterministic deep learning via
        distance awareness", NeurIPS 2020. Ye et al., "Uncertainty calibration for deep audio
        classifiers", Interspeech 2022.

    Example:
        >>> import torch
        >>> head = SNGPHead(16, 3, hidden=(16,))
        >>> head(torch.randn(4, 16)).shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (),
        *,
        spectral_bound: float = 0.95,
        **gp_kwargs: Any,
    ) -> None:
        super().__init__()
        self.body = SpectralNormMLP(in_features, hidden, bound=spectral_bound)
        self.gp = RandomFeatureGP(self.body.out_features, num_classes, **gp_kwargs)

    def reset_precision(self) -> None:
        """Restart the GP precision (see :meth:`RandomFeatureGP.reset_precision`)."""
        self.gp.reset_precision()

    def covariance(self) -> Tensor:
        """GP posterior covariance ``(D, D)``."""
        return self.gp.covariance()

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior-mean logits ``(B, C)`` and predictive variance ``(B,)``."""
        return self.gp.posterior(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (plain in training, mean-field in ``eval()``) of ``(B, in_features)`` inputs."""
        return self.gp(self.body(x))


def attach_sngp_head(
    model: nn.Module,
    hidden: Sequence[int] | None = None,
    *,
    spectral_bound: float = 0.95,
    **gp_kwargs: Any,
) -> nn.Module:
    """Give a PANN an SNGP head in place of ``fc1 -> ReLU -> classifier``.

    The stage layout is kept, so prediction, feature caching and the trainers work unchanged:
    ``fc1`` becomes a :class:`~vipann.calibration.spectral.SpectralNormMLP` on the pooled features
    (``hidden`` widths, default one layer of ``embed_dim``; its ReLU is inside, ``act_fc1`` becomes
    the identity) and ``fc_audioset`` a :class:`RandomFeatureGP`. The dropout sites stay (they are the
    MC-dropout sites of a ``drop`` model); with ``hidden=()`` the second one is removed, because it
    would act on the same vector as the first. The model's forward returns plain logits in training
    mode and mean-field logits in ``eval()`` mode. ``model.method`` is unchanged; ``model.head_type``
    is ``"sngp"`` and ``model.head_config`` holds the arguments that rebuild the head (for saving).
    Flipout ``fc1``/classifier layers of ``flip``/``detflip`` models are replaced by deterministic
    SNGP layers. Train with the engine as usual, calling :func:`reset_sngp_precision` at the start of
    every epoch so that the precision of the last epoch is what remains.

    Args:
        model: A :class:`~vipann.models.PANN` (modified in place).
        hidden: Hidden widths (default ``(model.embed_dim,)``); ``()`` for the GP layer alone.
        spectral_bound: Spectral-norm bound of the hidden layers.
        **gp_kwargs: :class:`RandomFeatureGP` options; ``multilabel`` defaults to the model's metadata.

    Returns:
        The model.

    Raises:
        TypeError: If the model has no PANN head (``fc1``, ``act_fc1``, ``fc_audioset``, ``embed_dim``).

    References:
        Liu et al., "Simple and principled uncertainty estimation with deterministic deep learning via
        distance awareness", NeurIPS 2020. Ye et al., "Uncertainty calibration for deep audio
        classifiers", Interspeech 2022.

    Example:
        >>> import vipann
        >>> model = attach_sngp_head(vipann.create_model("det-tiny", num_classes=5))
        >>> model.head_type
        'sngp'
    """
    if not all(hasattr(model, a) for a in ("fc1", "act_fc1", "fc_audioset", "dropout_head", "embed_dim")):
        raise TypeError(f"attach_sngp_head needs a PANN-style model, got {type(model).__name__}")
    hidden = (int(model.embed_dim),) if hidden is None else tuple(int(h) for h in hidden)
    cfg = getattr(model, "pretrained_cfg", None)
    gp_kwargs.setdefault("multilabel", bool(getattr(cfg, "multilabel", False)))
    param = next(model.parameters())
    with torch.device(param.device):
        body = SpectralNormMLP(model.embed_dim, hidden, bound=spectral_bound)
        gp = RandomFeatureGP(body.out_features, model.num_classes, **gp_kwargs)
    model.fc1 = body.to(param.dtype) if hidden else nn.Identity()
    model.act_fc1 = nn.Identity()
    if not hidden:
        model.dropout_head = nn.Identity()
    model.fc_audioset = gp.to(param.dtype)
    model.head_type = "sngp"
    model.head_config = {"type": "sngp", "hidden": list(hidden), "spectral_bound": float(spectral_bound), **gp_kwargs}
    return model


def reset_sngp_precision(model: nn.Module) -> int:
    """Restart the precision of every :class:`RandomFeatureGP` in ``model``.

    Args:
        model: Any module (a PANN with an SNGP head, a DDP wrapper, ...).

    Returns:
        How many GP layers were reset (0 for a model without SNGP head).
    """
    layers = [m for m in model.modules() if isinstance(m, RandomFeatureGP)]
    for layer in layers:
        layer.reset_precision()
    return len(layers)


@torch.no_grad()
def all_reduce_sngp_precision(model: nn.Module) -> int:
    """Sum the precision that every process accumulated on its shard (data-parallel training).

    Call once after the last epoch on every process; a no-op unless :mod:`torch.distributed` is
    initialised with more than one process.

    Args:
        model: Any module (a PANN with an SNGP head, a DDP wrapper, ...).

    Returns:
        How many GP layers were reduced (0 when not distributed).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return 0
    layers = [m for m in model.modules() if isinstance(m, RandomFeatureGP)]
    for layer in layers:
        prior = layer.ridge * torch.eye(layer.num_features, device=layer.precision.device)
        data = layer.precision - prior  # every process holds the prior once: reduce only the data term
        dist.all_reduce(data)
        layer.precision.copy_(data + prior)
        layer._cov = None
    return len(layers)


def _attach_saved_sngp_head(model: nn.Module, options: Mapping[str, Any]) -> None:
    attach_sngp_head(model, **options)


register_head("sngp", _attach_saved_sngp_head)  # saved SNGP models load through vipann.zoo
