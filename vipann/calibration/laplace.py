"""Post-hoc Laplace approximation of a trained tagger's head: :func:`fit_laplace` and :class:`LaplaceModel`.

Any trained deterministic vipann model becomes Bayesian in one pass over its training data: the
trunk runs once per clip (pooled embeddings), the generalised Gauss-Newton (GGN) of the training
likelihood is accumulated on those embeddings for the classifier (``subset="last_layer"``) or for fc1
and the classifier (``subset="head"``), in a diagonal or a Kronecker-factored (K-FAC) structure
(:mod:`vipann.calibration.laplace_curvature`), and the isotropic prior precision is chosen by
maximising the Laplace marginal likelihood. Multi-label taggers get a Bernoulli likelihood (one
sigmoid per class), which laplace-torch 0.2 does not offer; multi-class ones the categorical (softmax)
likelihood.

Prediction is the linearised (GLM) predictive: per clip, logits ``~ N(f(x), J Sigma J^T)`` with ``J``
the Jacobian of the logits with respect to the covered weights, sampled exactly and independently for
every clip and Monte-Carlo sample. The result is a :class:`LaplaceModel` (method ``laplace``), which
:func:`vipann.predict`, the recipes and :func:`vipann.save_pretrained` / :func:`vipann.from_pretrained`
handle like any other model. At AudioSet size (527 classes, 2048-wide embedding) a K-FAC last layer
stores a 2048 × 2048 and a 527 × 527 eigendecomposition (about 18 MB in float32), never the
1.1 M × 1.1 M precision.

References:
    MacKay, "A practical Bayesian framework for backpropagation networks", Neural Computation 1992.
    Ritter, Botev & Barber, "A scalable Laplace approximation for neural networks", ICLR 2018.
    Kristiadi, Hein & Hennig, "Being Bayesian, even just a bit, fixes overconfidence in ReLU
    networks", ICML 2020. Immer, Korzepa & Bauer, "Improving predictions of Bayesian neural nets via
    local linearization", AISTATS 2021. Daxberger et al., "Laplace Redux — effortless Bayesian deep
    learning", NeurIPS 2021 (laplace-torch).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from vipann.calibration._posterior import PosteriorModel, detach_posterior
from vipann.calibration.laplace_curvature import (
    HESSIANS,
    LIKELIHOODS,
    LinearPosterior,
    activation_derivative,
    log_marginal_likelihood,
    optimize_prior_precision,
)
from vipann.inference.sampler import LogitSampler, Temperature, check_draws
from vipann.zoo.checkpoint import CheckpointError
from vipann.zoo.heads import register_head

__all__ = ["SUBSETS", "LaplaceModel"]

logger = logging.getLogger(__name__)

SUBSETS = ("last_layer", "head")
_LAYERS = {"last_layer": ("fc_audioset",), "head": ("fc1", "fc_audioset")}


class LaplaceModel(PosteriorModel):
    """A trained network with a Laplace posterior over its classifier (and fc1): method ``laplace``.

    Build it with :func:`fit_laplace`. ``vipann.predict(model, x)`` samples the linearised predictive;
    ``model(x)`` gives the network's own logits.

    Args:
        network: The trained network (a clip-level PANN with linear fc1 and classifier).
        posterior: The GGN blocks (``blocks``), the prior precision and the training statistics.
        num_samples: Default Monte-Carlo samples of a prediction.
        likelihood: ``"bernoulli"`` or ``"categorical"``.
        subset: ``"last_layer"`` or ``"head"``.
        hessian: ``"diag"`` or ``"kron"``.
    """

    method = "laplace"
    head_type = "laplace"

    def __init__(
        self,
        network: nn.Module,
        posterior: nn.Module,
        num_samples: int,
        *,
        likelihood: str,
        subset: str,
        hessian: str,
    ) -> None:
        super().__init__(network, posterior, num_samples)
        self.likelihood, self.subset, self.hessian = likelihood, subset, hessian

    def extra_repr(self) -> str:
        """Summary shown by ``repr(module)``."""
        return (
            f"likelihood={self.likelihood!r}, subset={self.subset!r}, hessian={self.hessian!r}, "
            f"prior_precision={self.prior_precision:.4g}, num_samples={self.num_samples}"
        )

    @property
    def head_config(self) -> dict[str, Any]:
        """The options that rebuild the empty posterior when the model is loaded."""
        return {
            **super().head_config,
            "likelihood": self.likelihood,
            "subset": self.subset,
            "hessian": self.hessian,
            "num_classes": int(self.network.num_classes),
        }

    # -- the posterior ----------------------------------------------------------------------
    @property
    def prior_precision(self) -> float:
        """The isotropic prior precision ``lambda``."""
        return float(self.posterior.prior_precision)

    @prior_precision.setter
    def prior_precision(self, value: float) -> None:
        if not float(value) > 0 or not math.isfinite(float(value)):
            raise ValueError(f"prior_precision must be positive and finite, got {value}")
        self.posterior.prior_precision.fill_(float(value))

    @property
    def num_data(self) -> int:
        """Training clips the GGN was accumulated on."""
        return int(self.posterior.stats[2])

    def blocks(self) -> dict[str, LinearPosterior]:
        """Layer name -> its posterior block."""
        return dict(self.posterior.blocks.items())

    def eigenvalues(self) -> Tensor:
        """Eigenvalues of the whole GGN (every block's, ``float64``)."""
        return torch.cat([block.eigenvalues().cpu() for block in self.posterior.blocks.values()])

    def theta_sq(self) -> float:
        """``|theta*|^2`` of the covered weights and biases."""
        total = 0.0
        for name in self.posterior.blocks:
            layer = getattr(self.network, name)
            total += float(layer.weight.detach().double().square().sum()) + float(
                layer.bias.detach().double().square().sum()
            )
        return total

    def log_marginal_likelihood(self, prior_precision: float | Tensor | None = None) -> Tensor:
        """The Laplace log marginal likelihood at ``prior_precision`` (default: the current one).

        Args:
            prior_precision: One value or a tensor of values (evaluated element-wise).

        Returns:
            ``float64`` tensor of the same shape.
        """
        lam = self.prior_precision if prior_precision is None else prior_precision
        return log_marginal_likelihood(self.eigenvalues(), self.theta_sq(), float(self.posterior.stats[0]), lam)

    def optimize_prior_precision(self, bounds: tuple[float, float] = (1e-8, 1e8)) -> float:
        """Set the prior precision to the maximiser of the marginal likelihood and return it.

        Args:
            bounds: Search range.

        Returns:
            The new ``lambda``.
        """
        lam, at_bound = optimize_prior_precision(self.eigenvalues(), self.theta_sq(), bounds)
        if at_bound:
            warnings.warn(
                f"the marginal-likelihood prior precision reached the search bound ({lam:.3g}); the GGN may be "
                "degenerate (too little data, or a network that fits the training set exactly)",
                stacklevel=2,
            )
        self.prior_precision = lam
        return lam

    # -- prediction ---------------------------------------------------------------------------
    def _head(self, pooled: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        net = self.network
        z1 = net.fc1(net.dropout_fc1(pooled))
        phi = net.dropout_head(net.act_fc1(z1))
        return z1, phi, net.fc_audioset(phi)

    def _pooled(self, waveform: Tensor) -> Tensor:
        return self.network.pooled(waveform)

    @torch.no_grad()
    def predictive_distribution(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        """The linearised predictive in closed form: mean logits ``(N, C)`` and covariance ``(N, C, C)``.

        Args:
            waveform: ``(N, T)`` clips.

        Returns:
            ``(f, J Sigma J^T)``.
        """
        return self.predictive_from_pooled(self._pooled(waveform))

    @torch.no_grad()
    def predictive_from_pooled(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`predictive_distribution` from pooled embeddings ``(N, D)`` (the input of fc1)."""
        z1, phi, f = self._head(pooled)
        blocks, lam = self.posterior.blocks, self.prior_precision
        cov = blocks["fc_audioset"].covariance(phi, lam)
        if "fc1" in blocks:
            slope = activation_derivative(self.network.act_fc1, z1).to(f.dtype)
            u = self.network.fc_audioset.weight[None] * slope[:, None, :]  # (N, C, D)
            cov = cov + u @ blocks["fc1"].covariance(pooled, lam) @ u.transpose(1, 2)
        return f, cov

    @torch.no_grad()
    def sample_from_pooled(self, pooled: Tensor, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Linearised-predictive logit samples ``(S, N, C)`` from pooled embeddings, independent per clip.

        Args:
            pooled: ``(N, D)`` pooled embeddings.
            num_samples: ``S``.
            generator: Random generator on the model's device.

        Returns:
            The logits (no temperature).
        """
        z1, phi, f = self._head(pooled)
        blocks, lam = self.posterior.blocks, self.prior_precision
        df = blocks["fc_audioset"].sample(phi, lam, num_samples, generator)
        if "fc1" in blocks:
            dz1 = blocks["fc1"].sample(pooled, lam, num_samples, generator)
            slope = activation_derivative(self.network.act_fc1, z1).to(f.dtype)
            df = df + (dz1 * slope) @ self.network.fc_audioset.weight.T
        return f[None] + df

    def mc_sampler(
        self,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        max_rows: int | None = None,
        temperature: Temperature = None,
        draws: str | None = None,
    ) -> LogitSampler:
        """The sampler :func:`vipann.predict` uses (:class:`~vipann.inference.sampler.MonteCarloModel`).

        The trunk runs once per window; the ``S`` logit samples of every window are drawn from the
        linearised predictive (``max_rows`` is not needed: no network pass is repeated).

        Args:
            num_samples: ``S``.
            generator: Random generator on the model's device.
            max_rows: Ignored.
            temperature: Override of the stored temperature (None: the model's own).
            draws: Accepted for the protocol and checked, otherwise ignored: the linearised
                predictive has no Flipout layers; its samples are drawn per clip.

        Returns:
            The sampler, windows ``(N, T)`` to logits ``(S, N, C)``.
        """
        if draws is not None:
            check_draws(draws)
        temperature = self._temperature(temperature)

        def sampler(wave: Tensor) -> Tensor:
            with torch.no_grad():
                logits = self.sample_from_pooled(self._pooled(wave), num_samples, generator)
            return self._scaled(logits, temperature)

        return sampler


# -- the posterior's buffers ---------------------------------------------------------------
def _posterior_module(network: nn.Module, subset: str, hessian: str) -> nn.Module:
    param = next(network.parameters())
    blocks = {}
    for name in _LAYERS[subset]:
        layer = getattr(network, name)
        block = LinearPosterior(layer.out_features, layer.in_features, hessian)
        blocks[name] = block.to(device=param.device, dtype=param.dtype)
    posterior = nn.Module()
    posterior.blocks = nn.ModuleDict(blocks)
    posterior.register_buffer("prior_precision", torch.tensor(1.0, dtype=torch.float64, device=param.device))
    # negative log-likelihood at theta*, (unused), number of training clips
    posterior.register_buffer("stats", torch.zeros(3, dtype=torch.float64, device=param.device))
    return posterior


# -- saving and loading (vipann.zoo.heads) -------------------------------------------------------
def _attach_saved(network: nn.Module, options: Mapping[str, Any]) -> None:
    if int(options.get("num_classes", network.num_classes)) != network.num_classes:
        raise CheckpointError(
            f"this Laplace posterior belongs to a {options['num_classes']}-class classifier; it cannot be loaded "
            f"with num_classes={network.num_classes} (load it as it is, then fit a new one on the new classes)"
        )
    subset, hessian = options.get("subset"), options.get("hessian")
    if subset not in SUBSETS or hessian not in HESSIANS or options.get("likelihood") not in LIKELIHOODS:
        raise CheckpointError(f"invalid Laplace head config {dict(options)}")
    with torch.device(next(network.parameters()).device):
        network.laplace = _posterior_module(network, subset, hessian)


def _wrap_saved(network: nn.Module, options: Mapping[str, Any]) -> LaplaceModel:
    posterior = detach_posterior(network, "laplace")
    return LaplaceModel(
        network,
        posterior,
        int(options.get("num_samples", 30)),
        likelihood=options["likelihood"],
        subset=options["subset"],
        hessian=options["hessian"],
    ).eval()


register_head("laplace", _attach_saved, wrap=_wrap_saved)  # saved Laplace models load through vipann.zoo
