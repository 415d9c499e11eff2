"""Flipout variational layers (``Conv2dFlipout``, ``LinearFlipout``).

The mathematics, initialisation and state-dict names follow bayesian-torch 0.5.0 so checkpoints
move between the two libraries, with four deliberate differences:

* ``forward`` returns a tensor; the KL divergence lives on the module (:meth:`kl_divergence`) and
  :func:`kl_loss` sums it over a model.
* Noise is sampled only in ``train()`` mode or inside :func:`vipann.layers.mc_sampling`; plain
  ``eval()`` uses the posterior mean, and ``mean_only=True`` forces the mean in every mode.
* The priors are persistent buffers, so a MOPED-initialised model (including a prior centred on
  the deterministic weights) survives save/load. A prior that is one value for the whole tensor
  is stored as a 0-d tensor; a full-size prior is stored in full.
* ``num_draws=G`` (set by the sampling API) draws ``G`` independent weight perturbations in one
  pass, one per group of the group-major batch, instead of one draw shared by the whole batch.
* ``draws="shared"`` (set by the sampling API) is Flipout as Wen et al. (2018) and TensorFlow
  Probability define it: one weight perturbation ``ΔW`` per pass and one sign vector per row and
  channel (``s`` over input channels, ``r`` over output channels, broadcast over time, frequency
  and segments); the bias is drawn per row. Row ``n`` computes exactly
  ``op(x_n, mu + ΔW ∘ r_n s_nᵀ, b_n)``, an exact posterior sample, as ``ΔW ∘ r_n s_nᵀ`` has the
  distribution of ``ΔW``. bayesian-torch's element-wise signs (the default, kept for
  equivalence) give each output position of a convolution a differently flipped kernel instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from vipann.layers._noise import gaussian_kl, normal, per_row_forward, rademacher, shared_forward
from vipann.layers.stochastic import StochasticModule

__all__ = [
    "Conv2dFlipout",
    "FlipoutLayer",
    "LinearFlipout",
    "flipout_layers",
    "kl_loss",
    "rho_from_sigma",
    "set_mean_only",
]

_PRIOR_KEYS = ("prior_weight_mu", "prior_weight_sigma", "prior_bias_mu", "prior_bias_sigma")


def rho_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """Inverse softplus: the ``rho`` whose ``softplus(rho)`` is ``sigma``.

    Written as bayesian-torch's ``get_rho`` (``log(expm1(sigma) + 1e-20)``), so a zero sigma maps
    to ``log(1e-20) = -46.05`` (a posterior standard deviation of about 1e-20) instead of -inf.

    Args:
        sigma: Non-negative standard deviations.

    Returns:
        A tensor of the same shape.
    """
    return torch.log(torch.expm1(sigma) + 1e-20)


class FlipoutLayer(StochasticModule):
    """Shared machinery of the Flipout layers: parameters, priors, KL and initialisation.

    Subclasses define ``_weight_name`` (``"kernel"`` or ``"weight"``) and ``_apply`` (the
    deterministic operation, e.g. ``F.conv2d`` with the layer's geometry).

    Args:
        weight_shape: Shape of the weight tensor.
        out_features: Length of the bias.
        bias: Whether the layer has a bias.
        prior_mean: Mean of the Gaussian prior (bayesian-torch ``prior_mean``).
        prior_sigma: Standard deviation of the prior. bayesian-torch calls this argument
            ``prior_variance`` but uses it as a standard deviation; so does vipann.
        posterior_mu_init: Mean of the normal initialisation of ``mu`` (std 0.1).
        posterior_rho_init: Mean of the normal initialisation of ``rho`` (std 0.1).
    """

    _weight_name = "weight"
    #: The channel axis of inputs and outputs (where the shared-draw sign vectors vary).
    _channel_dim = -1
    #: Upper bound on sampled weight values held at once when drawing several groups.
    max_draw_elements: int = 1 << 25
    #: With shared draws, a layer with fewer weights than this draws an exact weight sample per
    #: row instead: drawing is cheap there, and sign flips decorrelate rows least where the fan-in
    #: is small (a first convolution has one input channel).
    shared_min_elements: int = 1 << 16

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        out_features: int,
        bias: bool,
        prior_mean: float = 0.0,
        prior_sigma: float = 1.0,
        posterior_mu_init: float = 0.0,
        posterior_rho_init: float = -3.0,
    ) -> None:
        super().__init__()
        if prior_sigma <= 0:
            raise ValueError(f"prior_sigma must be positive, got {prior_sigma}")
        self.posterior_mu_init = float(posterior_mu_init)
        self.posterior_rho_init = float(posterior_rho_init)
        self.mean_only = False
        wn = self._weight_name
        self.register_parameter(f"mu_{wn}", nn.Parameter(torch.empty(weight_shape)))
        self.register_parameter(f"rho_{wn}", nn.Parameter(torch.empty(weight_shape)))
        self.register_buffer("prior_weight_mu", torch.tensor(float(prior_mean)))
        self.register_buffer("prior_weight_sigma", torch.tensor(float(prior_sigma)))
        if bias:
            self.mu_bias = nn.Parameter(torch.empty(out_features))
            self.rho_bias = nn.Parameter(torch.empty(out_features))
            self.register_buffer("prior_bias_mu", torch.tensor(float(prior_mean)))
            self.register_buffer("prior_bias_sigma", torch.tensor(float(prior_sigma)))
        else:
            self.register_parameter("mu_bias", None)
            self.register_parameter("rho_bias", None)
            self.register_buffer("prior_bias_mu", None)
            self.register_buffer("prior_bias_sigma", None)
        self.reset_parameters()

    # -- parameters -------------------------------------------------------------------------
    @property
    def mu_w(self) -> nn.Parameter:
        """Posterior mean of the weight (``mu_kernel`` or ``mu_weight``)."""
        return getattr(self, f"mu_{self._weight_name}")

    @property
    def rho_w(self) -> nn.Parameter:
        """Posterior ``rho`` of the weight; ``sigma = softplus(rho)``."""
        return getattr(self, f"rho_{self._weight_name}")

    def reset_parameters(self) -> None:
        """bayesian-torch's default initialisation: mu ~ N(mu_init, 0.1), rho ~ N(rho_init, 0.1)."""
        with torch.no_grad():
            self.mu_w.normal_(self.posterior_mu_init, 0.1)
            self.rho_w.normal_(self.posterior_rho_init, 0.1)
            if self.mu_bias is not None:
                self.mu_bias.normal_(self.posterior_mu_init, 0.1)
                self.rho_bias.normal_(self.posterior_rho_init, 0.1)

    @torch.no_grad()
    def init_from_deterministic(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        delta: float = 0.5,
        prior: str = "zero",
    ) -> None:
        """MOPED: posterior mean = the deterministic weights, sigma = delta * |w|.

        Args:
            weight: The deterministic weight (same shape as ``mu``).
            bias: The deterministic bias, or None when the layer has none.
            delta: MOPED's scale; the paper uses 0.5. 0 gives sigma ~1e-20 (a deterministic layer
                in Flipout form).
            prior: ``"zero"`` keeps the prior N(prior_mean, prior_sigma) (bayesian-torch's
                ``dnn_to_bnn``); ``"weights"`` centres the prior on the weights with sigma =
                delta*|w| (the empirical-Bayes variant of MOPED), stored in full.

        Raises:
            ValueError: On a shape mismatch, a missing/unexpected bias, or an unknown prior.

        References:
            R. Krishnan, M. Subedar, O. Tickoo, "Specifying weight priors in Bayesian deep neural
            networks with empirical Bayes" (MOPED), AAAI 2020.
        """
        if prior not in ("zero", "weights"):
            raise ValueError(f"prior must be 'zero' or 'weights', got {prior!r}")
        if delta < 0:
            raise ValueError(f"MOPED delta must be >= 0, got {delta}")
        if tuple(weight.shape) != tuple(self.mu_w.shape):
            raise ValueError(f"weight shape {tuple(weight.shape)} does not match {tuple(self.mu_w.shape)}")
        if (bias is None) != (self.mu_bias is None):
            raise ValueError("bias presence of the deterministic layer and the Flipout layer differ")
        pairs = [(weight, self.mu_w, self.rho_w, "weight")]
        if bias is not None:
            pairs.append((bias, self.mu_bias, self.rho_bias, "bias"))
        for value, mu, rho, kind in pairs:
            value = value.to(mu.dtype).to(mu.device)
            mu.copy_(value)
            rho.copy_(rho_from_sigma(delta * value.abs()))
            if prior == "weights":
                sigma = torch.clamp(delta * value.abs(), min=1e-20)
                setattr(self, f"prior_{kind}_mu", value.clone())
                setattr(self, f"prior_{kind}_sigma", sigma)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A prior is either one value (0-d) or a full tensor; adopt whichever the checkpoint has,
        # provided it broadcasts to the parameter it is the prior of.
        for name in _PRIOR_KEYS:
            key = prefix + name
            current = getattr(self, name)
            if key in state_dict and current is not None:
                incoming = state_dict[key]
                target = self.mu_w if "weight" in name else self.mu_bias
                adoptable = incoming.dim() == 0 or incoming.shape == target.shape
                if incoming.shape != current.shape and adoptable:
                    setattr(self, name, torch.empty_like(incoming, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- KL ---------------------------------------------------------------------------------
    def kl_divergence(self, reduction: str = "mean") -> torch.Tensor:
        """Closed-form KL(q || prior) of this layer.

        Args:
            reduction: ``"mean"`` is bayesian-torch's ``kl_loss()``: the mean over the weight's
                elements plus the mean over the bias's elements. ``"sum"`` sums over every
                element, the KL term of a proper ELBO.

        Returns:
            A scalar tensor.

        Raises:
            ValueError: For an unknown reduction.
        """
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        reduce = torch.mean if reduction == "mean" else torch.sum
        kl = reduce(gaussian_kl(self.mu_w, F.softplus(self.rho_w), self.prior_weight_mu, self.prior_weight_sigma))
        if self.mu_bias is not None:
            kl = kl + reduce(
                gaussian_kl(self.mu_bias, F.softplus(self.rho_bias), self.prior_bias_mu, self.prior_bias_sigma)
            )
        return kl

    # -- forward ----------------------------------------------------------------------------
    def _apply_op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _apply_grouped(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int
    ) -> torch.Tensor:
        raise NotImplementedError

    def _perturbation(self, groups: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        gen = self.generator
        delta_w = F.softplus(self.rho_w) * normal(self.mu_w, groups, gen)
        delta_b = None
        if self.mu_bias is not None:
            delta_b = F.softplus(self.rho_bias) * normal(self.mu_bias, groups, gen)
        return delta_w, delta_b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flipout forward pass (or the posterior mean when not sampling).

        ``out = op(x, mu) + sign_out * op(x * sign_in, sigma * eps)`` with Rademacher signs per
        element of input and output and one ``eps`` draw per group (see ``num_draws``), or, with
        ``draws="shared"``, one ``eps`` for the pass and signs per row and channel (a layer with
        fewer than :attr:`shared_min_elements` weights draws its weights per row instead).

        Args:
            x: The input batch.

        Returns:
            The output batch, a tensor.
        """
        if self.draws == "shared" and self.stochastic and not self.mean_only:
            if self.mu_w.numel() < self.shared_min_elements:
                return per_row_forward(self, x)
            return shared_forward(self, x, self._apply_op(x, self.mu_w, self.mu_bias))
        mean = self._apply_op(x, self.mu_w, self.mu_bias)
        if self.mean_only or not self.stochastic:
            return mean
        groups = self._group_count(x.shape[0])
        if groups == 1:
            if isinstance(self, LinearFlipout):
                # bayesian-torch's draw order for LinearFlipout: eps, then the signs ...
                delta_w, delta_b = self._perturbation(1)
                sign_in, sign_out = rademacher(x, self.generator), rademacher(mean, self.generator)
            else:
                # ... and for Conv2dFlipout: the signs, then eps.
                sign_in, sign_out = rademacher(x, self.generator), rademacher(mean, self.generator)
                delta_w, delta_b = self._perturbation(1)
            return mean + self._apply_op(x * sign_in, delta_w, delta_b) * sign_out
        # Independent draws per group. The draws are materialised a few groups at a time so the
        # sampled weights never take more than ``max_draw_elements`` values at once (a ResNet54
        # conv_block_after1 draw alone is 37.7 M values).
        sign_in, sign_out = rademacher(x, self.generator), rademacher(mean, self.generator)
        signed = x * sign_in
        rows = x.shape[0] // groups
        per_chunk = max(1, self.max_draw_elements // self.mu_w.numel())
        parts = []
        for start in range(0, groups, per_chunk):
            count = min(per_chunk, groups - start)
            delta_w, delta_b = self._perturbation(count)
            chunk = signed[start * rows : (start + count) * rows]
            if count == 1:
                parts.append(self._apply_op(chunk, delta_w[0], None if delta_b is None else delta_b[0]))
            else:
                parts.append(self._apply_grouped(chunk, delta_w, delta_b, count))
        perturbed = parts[0] if len(parts) == 1 else torch.cat(parts)
        return mean + perturbed * sign_out


class Conv2dFlipout(FlipoutLayer):
    """2-D convolution with a factorised Gaussian posterior, sampled with Flipout.

    State-dict names as bayesian-torch: ``mu_kernel``, ``rho_kernel``, ``mu_bias``, ``rho_bias``
    (plus the persistent priors ``prior_weight_mu``, ``prior_weight_sigma``, ``prior_bias_*``).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel size (int or pair).
        stride: Stride (int or pair).
        padding: Zero padding (int or pair).
        dilation: Dilation (int or pair).
        groups: Convolution groups.
        bias: Whether to learn a bias.
        prior_mean: Prior mean.
        prior_sigma: Prior standard deviation (bayesian-torch's ``prior_variance``).
        posterior_mu_init: Initial mean of ``mu``.
        posterior_rho_init: Initial mean of ``rho``.

    References:
        Y. Wen, P. Vicol, J. Ba, D. Tran, R. Grosse, "Flipout: efficient pseudo-independent weight
        perturbations on mini-batches", ICLR 2018.
    """

    _weight_name = "kernel"
    _channel_dim = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        prior_mean: float = 0.0,
        prior_sigma: float = 1.0,
        posterior_mu_init: float = 0.0,
        posterior_rho_init: float = -3.0,
    ) -> None:
        pair = nn.modules.utils._pair
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels}, {out_channels}) must be divisible by groups={groups}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation, self.groups = pair(padding), pair(dilation), int(groups)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        super().__init__(shape, out_channels, bias, prior_mean, prior_sigma, posterior_mu_init, posterior_rho_init)

    def extra_repr(self) -> str:
        """Summary shown by ``repr(module)``."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
            f"bias={self.mu_bias is not None}"
        )

    def _apply_op(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def _apply_grouped(self, x, weight, bias, groups):
        # (G*B, C, H, W) -> (B, G*C, H, W): one grouped convolution applies draw g to group g.
        gb, c, h, w = x.shape
        b = gb // groups
        xg = x.reshape(groups, b, c, h, w).transpose(0, 1).reshape(b, groups * c, h, w)
        wg = weight.reshape(groups * self.out_channels, *weight.shape[2:])
        bg = None if bias is None else bias.reshape(-1)
        out = F.conv2d(xg, wg, bg, self.stride, self.padding, self.dilation, self.groups * groups)
        ho, wo = out.shape[-2:]
        return out.reshape(b, groups, self.out_channels, ho, wo).transpose(0, 1).reshape(gb, -1, ho, wo)


class LinearFlipout(FlipoutLayer):
    """Fully connected layer with a factorised Gaussian posterior, sampled with Flipout.

    State-dict names as bayesian-torch: ``mu_weight``, ``rho_weight``, ``mu_bias``, ``rho_bias``
    (plus the persistent priors).

    Args:
        in_features: Input features.
        out_features: Output features.
        bias: Whether to learn a bias.
        prior_mean: Prior mean.
        prior_sigma: Prior standard deviation (bayesian-torch's ``prior_variance``).
        posterior_mu_init: Initial mean of ``mu``.
        posterior_rho_init: Initial mean of ``rho``.

    References:
        Y. Wen, P. Vicol, J. Ba, D. Tran, R. Grosse, "Flipout: efficient pseudo-independent weight
        perturbations on mini-batches", ICLR 2018.
    """

    _weight_name = "weight"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        prior_mean: float = 0.0,
        prior_sigma: float = 1.0,
        posterior_mu_init: float = 0.0,
        posterior_rho_init: float = -3.0,
    ) -> None:
        self.in_features, self.out_features = int(in_features), int(out_features)
        super().__init__(
            (out_features, in_features),
            out_features,
            bias,
            prior_mean,
            prior_sigma,
            posterior_mu_init,
            posterior_rho_init,
        )

    def extra_repr(self) -> str:
        """Summary shown by ``repr(module)``."""
        bias = self.mu_bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}"

    def _apply_op(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def _apply_grouped(self, x, weight, bias, groups):
        lead = x.shape[:-1]
        xg = x.reshape(groups, -1, x.shape[-1])
        out = torch.bmm(xg, weight.transpose(1, 2))
        if bias is not None:
            out = out + bias[:, None, :]
        return out.reshape(*lead, self.out_features)


def flipout_layers(model: nn.Module) -> Iterator[tuple[str, FlipoutLayer]]:
    """Yield ``(name, layer)`` for every Flipout layer in ``model``.

    Args:
        model: Any module.

    Returns:
        An iterator of named Flipout layers.
    """
    for name, module in model.named_modules():
        if isinstance(module, FlipoutLayer):
            yield name, module


def kl_loss(model: nn.Module, reduction: str = "mean") -> torch.Tensor:
    """Sum of the KL divergences of every Flipout layer of ``model``.

    Args:
        model: A model containing Flipout layers.
        reduction: ``"mean"`` reproduces bayesian-torch's ``get_kl_loss`` (per layer: mean over
            weight elements + mean over bias elements, then summed over layers); ``"sum"`` is the
            full KL over every element, the term a proper ELBO divides by the number of
            training examples.

    Returns:
        A scalar tensor (0 when the model has no Flipout layer).
    """
    total = None
    for _, layer in flipout_layers(model):
        kl = layer.kl_divergence(reduction)
        total = kl if total is None else total + kl
    if total is None:
        param = next(model.parameters(), None)
        return torch.zeros((), device=None if param is None else param.device)
    return total


def set_mean_only(model: nn.Module, enabled: bool = True) -> None:
    """Force (or stop forcing) every Flipout layer of ``model`` to use its posterior mean.

    Args:
        model: The model.
        enabled: True: no weight noise in any mode (training included); False: the default
            behaviour (sample in training and under MC sampling).
    """
    for _, layer in flipout_layers(model):
        layer.mean_only = bool(enabled)
