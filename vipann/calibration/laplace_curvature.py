"""The curvature behind :func:`vipann.calibration.fit_laplace`: GGN blocks of linear layers and the evidence.

A Laplace posterior over the weights ``theta`` of some linear layers of a network is
``N(theta*, (GGN + lambda I)^-1)``: ``theta*`` the trained weights, ``GGN`` the generalised Gauss-Newton
matrix of the training negative log-likelihood, ``lambda`` an isotropic prior precision. Every layer is
one block (the GGN between layers is dropped, as in K-FAC), in one of two structures:

* ``"diag"``: the exact GGN diagonal, one number per weight and bias.
* ``"kron"``: K-FAC, ``GGN_W ~ G ⊗ A`` for the weight matrix (``A = (1/N) sum_n a_n a_n^T`` over the
  layer inputs, ``G = sum_n J_n^T H_n J_n`` over the output-side curvature, ``J_n`` the Jacobian of the
  logits with respect to the layer's pre-activation and ``H_n`` the Hessian of the negative
  log-likelihood in the logits) and ``GGN_b = G`` for the bias; the layout of laplace-torch 0.2 (its
  curvlinops K-FAC with weights and biases separate). Stored as the eigendecompositions of ``G`` and
  ``A``, so ``(G ⊗ A + lambda I)^-1`` is available for every ``lambda`` without a dense matrix: a
  527 × 2048 classifier keeps a 2048 × 2048 and a 527 × 527 factor.

Likelihoods: ``"bernoulli"`` (independent sigmoid outputs, ``H_n = diag(p (1 - p))``) and
``"categorical"`` (softmax, ``H_n = diag(p) - p p^T``).

A block turns layer inputs ``x`` into samples of the pre-activation perturbation ``dz = dW x + db``
(:meth:`LinearPosterior.sample`), which is exact Gaussian sampling of the linearised layer output
(``Cov(dz) = (I ⊗ x^T) Sigma_W (I ⊗ x) + Sigma_b``), drawn independently for every input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "HESSIANS",
    "LIKELIHOODS",
    "LinearPosterior",
    "hessian_diagonal",
    "hessian_sqrt",
    "log_marginal_likelihood",
    "negative_log_likelihood",
    "optimize_prior_precision",
]

LIKELIHOODS = ("bernoulli", "categorical")
HESSIANS = ("diag", "kron")


def _probs(logits: Tensor, likelihood: str) -> Tensor:
    return torch.sigmoid(logits) if likelihood == "bernoulli" else torch.softmax(logits, -1)


def hessian_diagonal(logits: Tensor, likelihood: str) -> Tensor:
    """Diagonal ``(N, C)`` of the Hessian of the negative log-likelihood in the logits: ``p (1 - p)``."""
    p = _probs(logits, likelihood)
    return p * (1 - p)


def hessian_sqrt(logits: Tensor, likelihood: str) -> Tensor:
    """A square root ``L`` (``L^T L = H``) of the Hessian in the logits, ``(N, C, C)``.

    Bernoulli: ``diag(sqrt(p (1 - p)))``; categorical: ``diag(sqrt(p)) (I - 1 p^T)``.
    """
    p = _probs(logits, likelihood)
    if likelihood == "bernoulli":
        return torch.diag_embed((p * (1 - p)).sqrt())
    eye = torch.eye(p.shape[-1], dtype=p.dtype, device=p.device)
    return p.sqrt()[:, :, None] * (eye[None] - p[:, None, :])


def negative_log_likelihood(logits: Tensor, targets: Tensor, likelihood: str) -> Tensor:
    """Summed negative log-likelihood of ``(N, C)`` logits (the training loss at ``theta*``)."""
    if likelihood == "bernoulli":
        return nn.functional.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="sum")
    if targets.dim() == 2:
        return -(targets.to(logits.dtype) * torch.log_softmax(logits, -1)).sum()
    return nn.functional.cross_entropy(logits, targets.long(), reduction="sum")


class LinearPosterior(nn.Module):
    """Gaussian posterior of one linear layer's weight ``(out, in)`` and bias ``(out,)``.

    The buffers hold the data part of the precision (the GGN); the prior precision ``lambda`` is added
    when it is used, so it can be changed (re-fitted) at no cost.

    Args:
        out_features: Rows of the weight.
        in_features: Columns of the weight.
        hessian: ``"diag"`` or ``"kron"``.

    Attributes:
        ggn_weight, ggn_bias: ``"diag"``: GGN diagonal of weight and bias.
        a_eigvals, a_eigvecs, g_eigvals, g_eigvecs: ``"kron"``: eigendecompositions of ``A`` (input
            side, ``(in,)`` and ``(in, in)``) and ``G`` (output side, ``(out,)`` and ``(out, out)``).
    """

    def __init__(self, out_features: int, in_features: int, hessian: str) -> None:
        super().__init__()
        if hessian not in HESSIANS:
            raise ValueError(f"unknown hessian {hessian!r}; choose one of: {', '.join(HESSIANS)}")
        self.out_features, self.in_features, self.hessian = int(out_features), int(in_features), hessian
        if hessian == "diag":
            self.register_buffer("ggn_weight", torch.zeros(self.out_features, self.in_features))
            self.register_buffer("ggn_bias", torch.zeros(self.out_features))
        else:
            self.register_buffer("a_eigvals", torch.zeros(self.in_features))
            self.register_buffer("a_eigvecs", torch.zeros(self.in_features, self.in_features))
            self.register_buffer("g_eigvals", torch.zeros(self.out_features))
            self.register_buffer("g_eigvecs", torch.zeros(self.out_features, self.out_features))

    def extra_repr(self) -> str:
        """Summary shown by ``repr(module)``."""
        return f"out_features={self.out_features}, in_features={self.in_features}, hessian={self.hessian!r}"

    @property
    def num_params(self) -> int:
        """Weights and biases the block covers."""
        return self.out_features * (self.in_features + 1)

    # -- fitting --------------------------------------------------------------------------------
    @torch.no_grad()
    def set_diag(self, ggn_weight: Tensor, ggn_bias: Tensor) -> None:
        """Store the GGN diagonal ``(out, in)`` and ``(out,)``."""
        self.ggn_weight.copy_(ggn_weight.clamp(min=0))
        self.ggn_bias.copy_(ggn_bias.clamp(min=0))

    @torch.no_grad()
    def set_kron(self, a_factor: Tensor, g_factor: Tensor) -> None:
        """Store the K-FAC factors ``A`` ``(in, in)`` and ``G`` ``(out, out)`` as eigendecompositions."""
        for name, factor in (("a", a_factor), ("g", g_factor)):
            sym = (factor + factor.T).double() / 2
            vals, vecs = torch.linalg.eigh(sym)
            getattr(self, f"{name}_eigvals").copy_(vals.clamp(min=0))
            getattr(self, f"{name}_eigvecs").copy_(vecs)

    # -- evidence -------------------------------------------------------------------------------
    def eigenvalues(self) -> Tensor:
        """Eigenvalues of the GGN block (``float64``, ``num_params`` of them): weights first, then bias."""
        if self.hessian == "diag":
            return torch.cat([self.ggn_weight.flatten(), self.ggn_bias]).double()
        g, a = self.g_eigvals.double(), self.a_eigvals.double()
        return torch.cat([torch.outer(g, a).flatten(), g])

    # -- prediction -----------------------------------------------------------------------------
    def _kron_variances(self, x: Tensor, prior_precision: float) -> Tensor:
        """Variances ``(N, out)`` of ``dz`` in the eigenbasis of ``G``."""
        g, a = self.g_eigvals.to(x.dtype), self.a_eigvals.to(x.dtype)
        psi = x @ self.a_eigvecs.to(x.dtype)  # inputs in the eigenbasis of A
        inverse = 1.0 / (torch.outer(g, a) + prior_precision)  # (out, in): (G ⊗ A + lambda)^-1 per eigenpair
        return psi.square() @ inverse.T + 1.0 / (g + prior_precision)

    def variances(self, x: Tensor, prior_precision: float) -> Tensor:
        """Per-input variances ``(N, out)``: of ``dz`` itself (diag) or along ``G``'s eigenvectors (kron)."""
        if self.hessian == "diag":
            w = 1.0 / (self.ggn_weight.to(x.dtype) + prior_precision)
            b = 1.0 / (self.ggn_bias.to(x.dtype) + prior_precision)
            return x.square() @ w.T + b
        return self._kron_variances(x, prior_precision)

    def covariance(self, x: Tensor, prior_precision: float) -> Tensor:
        """Covariance ``(N, out, out)`` of ``dz = dW x + db`` for inputs ``x`` ``(N, in)``."""
        v = self.variances(x, prior_precision)
        if self.hessian == "diag":
            return torch.diag_embed(v)
        q = self.g_eigvecs.to(x.dtype)
        return (q[None] * v[:, None, :]) @ q.T[None]

    def sample(self, x: Tensor, prior_precision: float, num_samples: int, generator: torch.Generator | None) -> Tensor:
        """Samples ``(S, N, out)`` of ``dz = dW x + db``, independent for every input row.

        Args:
            x: ``(N, in)`` layer inputs.
            prior_precision: ``lambda``.
            num_samples: ``S``.
            generator: Random generator on ``x``'s device (None: torch's global one).

        Returns:
            The perturbations (zero mean).
        """
        std = self.variances(x, prior_precision).clamp(min=0).sqrt()
        eps = torch.randn((num_samples, *std.shape), generator=generator, device=x.device, dtype=x.dtype)
        dz = eps * std
        if self.hessian == "kron":
            dz = dz @ self.g_eigvecs.to(x.dtype).T
        return dz


# -- marginal likelihood and the prior precision --------------------------------------------------
def log_marginal_likelihood(
    eigenvalues: Tensor, theta_sq: float, nll: float, prior_precision: float | Tensor
) -> Tensor:
    """Laplace log marginal likelihood (as laplace-torch: the ``2 pi`` terms cancel).

    ``log p(D | lambda) ~ -nll - 1/2 (sum_i log(h_i + lambda) - P log lambda + lambda |theta*|^2)``
    with ``h_i`` the eigenvalues of the GGN and ``P`` their number.

    Args:
        eigenvalues: ``(P,)`` GGN eigenvalues (non-negative).
        theta_sq: ``|theta*|^2``.
        nll: Negative log-likelihood of the training data at ``theta*``.
        prior_precision: ``lambda > 0`` (a scalar or a tensor of values, evaluated element-wise).

    Returns:
        The value(s), ``float64``.
    """
    lam = torch.as_tensor(prior_precision, dtype=torch.float64)
    h = eigenvalues.double().clamp(min=0)
    flat = lam.reshape(-1)
    logdet = torch.stack([torch.log(h + v).sum() for v in flat]).reshape(lam.shape)
    return -float(nll) - 0.5 * (logdet - h.numel() * torch.log(lam) + lam * float(theta_sq))


def optimize_prior_precision(
    eigenvalues: Tensor, theta_sq: float, bounds: Sequence[float] = (1e-8, 1e8), tol: float = 1e-10
) -> tuple[float, bool]:
    """The ``lambda`` that maximises :func:`log_marginal_likelihood`.

    In ``t = log lambda`` the derivative is ``(gamma(lambda) - lambda |theta*|^2) / 2`` with
    ``gamma = sum_i h_i / (h_i + lambda)`` (the effective number of parameters), which decreases in
    ``t``: the objective is concave and its maximiser is the root found here by bisection (MacKay's
    fixed point ``lambda = gamma / |theta*|^2``).

    Args:
        eigenvalues: GGN eigenvalues.
        theta_sq: ``|theta*|^2``.
        bounds: Search range of ``lambda``.
        tol: Bisection tolerance on ``log lambda``.

    Returns:
        ``(lambda, at_bound)``; ``at_bound`` when the maximiser lies at (or beyond) a bound.
    """
    h = eigenvalues.double().clamp(min=0)

    def slope(t: float) -> float:
        lam = math.exp(t)
        return float((h / (h + lam)).sum()) - lam * float(theta_sq)

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    if slope(lo) <= 0:
        return float(bounds[0]), True
    if slope(hi) >= 0:
        return float(bounds[1]), True
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if slope(mid) > 0:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2), False


#: Activations between fc1 and the classifier that the ``head`` subset linearises through.
HEAD_ACTIVATIONS = (nn.ReLU, nn.Hardswish)


def activation_derivative(activation: nn.Module, z: Tensor) -> Tensor:
    """The derivative of a head activation at its input ``z`` (the Jacobian's diagonal).

    Args:
        activation: ``nn.ReLU`` (PANNs) or ``nn.Hardswish`` (EfficientAT).
        z: The activation's input.

    Returns:
        ``d activation(z) / dz``, element-wise, in ``z``'s dtype.

    Raises:
        TypeError: For any other activation.
    """
    if type(activation) is nn.ReLU:
        return (z > 0).to(z.dtype)
    if type(activation) is nn.Hardswish:  # x * relu6(x + 3) / 6
        return torch.where(z <= -3, torch.zeros_like(z), torch.where(z >= 3, torch.ones_like(z), (2 * z + 3) / 6))
    names = ", ".join(a.__name__ for a in HEAD_ACTIVATIONS)
    raise TypeError(f"subset='head' linearises through {names} after fc1, got {type(activation).__name__}")
