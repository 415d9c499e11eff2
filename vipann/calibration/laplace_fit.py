"""Fitting :class:`~vipann.calibration.LaplaceModel`: :func:`fit_laplace` (audio) and :func:`fit_laplace_features`.

One pass over the training data: the trunk runs once per clip (pooled embeddings), and the GGN blocks
of the covered layers and the training negative log-likelihood are accumulated on the embeddings in
float64 (:class:`_Curvature`), then stored as diagonals or K-FAC eigendecompositions
(:mod:`vipann.calibration.laplace_curvature`), and the prior precision is set by the marginal
likelihood. See :mod:`vipann.calibration.laplace` for the model and the references.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vipann.calibration._posterior import PosteriorModel
from vipann.calibration.laplace import _LAYERS, SUBSETS, LaplaceModel, _posterior_module
from vipann.calibration.laplace_curvature import (
    HEAD_ACTIVATIONS,
    HESSIANS,
    LIKELIHOODS,
    activation_derivative,
    hessian_diagonal,
    hessian_sqrt,
    negative_log_likelihood,
)

__all__ = ["fit_laplace", "fit_laplace_features"]

logger = logging.getLogger(__name__)


def _check_network(model: nn.Module, subset: str) -> nn.Module:
    if isinstance(model, LaplaceModel):
        model = model.network  # refit from the network
    if isinstance(model, PosteriorModel):
        raise TypeError(f"fit_laplace needs a deterministic network; this is a {model.method} model (use .network)")
    needed = ("fc1", "act_fc1", "fc_audioset", "dropout_fc1", "dropout_head", "pooled", "pooling")
    if not all(hasattr(model, a) for a in needed):
        raise TypeError(
            f"fit_laplace needs a vipann network (fc1 -> activation -> classifier head), got {type(model).__name__}"
        )
    for name in _LAYERS["head"]:
        if type(getattr(model, name)) is not nn.Linear:
            raise TypeError(
                f"fit_laplace needs deterministic linear fc1 and classifier; {model.method}-{model.arch} has a "
                f"{type(getattr(model, name)).__name__} {name} (Flipout and SNGP heads are already Bayesian: "
                "start from a det or drop model)"
            )
    if subset == "head" and not isinstance(model.act_fc1, HEAD_ACTIVATIONS):
        names = ", ".join(a.__name__ for a in HEAD_ACTIVATIONS)
        raise TypeError(f"subset='head' needs one of {names} after fc1, got {type(model.act_fc1).__name__}")
    if model.pooling != "clip":
        raise ValueError(
            f"fit_laplace needs a clip-level head; {model.arch!r} pools per segment ({model.pooling!r}): use the "
            "clip-level counterpart (e.g. det-cnn14 for det-cnn14-dlmax)"
        )
    return model


class _Curvature:
    """Running sums of the GGN blocks and the negative log-likelihood, in float64."""

    def __init__(self, network: nn.Module, likelihood: str, subset: str, hessian: str, device: torch.device) -> None:
        self.likelihood, self.subset, self.hessian = likelihood, subset, hessian
        self.act = network.act_fc1
        f64 = {"dtype": torch.float64, "device": device}
        self.w1, self.b1 = network.fc1.weight.detach().to(**f64), network.fc1.bias.detach().to(**f64)
        self.w2, self.b2 = network.fc_audioset.weight.detach().to(**f64), network.fc_audioset.bias.detach().to(**f64)
        self.sums: dict[str, Tensor] = {"nll": torch.zeros((), **f64), "n": torch.zeros((), **f64)}
        for name in _LAYERS[subset]:
            out_f, in_f = (self.w1 if name == "fc1" else self.w2).shape
            if hessian == "diag":
                self.sums[f"{name}.w"] = torch.zeros(out_f, in_f, **f64)
                self.sums[f"{name}.b"] = torch.zeros(out_f, **f64)
            else:
                self.sums[f"{name}.A"] = torch.zeros(in_f, in_f, **f64)
                self.sums[f"{name}.G"] = torch.zeros(out_f, out_f, **f64)

    @torch.no_grad()
    def add(self, pooled: Tensor, targets: Tensor) -> None:
        a = pooled.to(self.w1)
        z1 = F.linear(a, self.w1, self.b1)
        phi = self.act(z1)
        f = F.linear(phi, self.w2, self.b2)
        s = self.sums
        s["nll"] += negative_log_likelihood(f, targets.to(f.device), self.likelihood)
        s["n"] += a.shape[0]
        hd = hessian_diagonal(f, self.likelihood)
        if self.hessian == "diag":
            s["fc_audioset.w"] += hd.T @ phi.square()
            s["fc_audioset.b"] += hd.sum(0)
        else:
            s["fc_audioset.A"] += phi.T @ phi
            if self.likelihood == "bernoulli":
                s["fc_audioset.G"] += torch.diag(hd.sum(0))
            else:
                p = torch.softmax(f, -1)
                s["fc_audioset.G"] += torch.diag(p.sum(0)) - p.T @ p
        if self.subset == "head":
            self._add_fc1(a, z1, f)

    def _add_fc1(self, a: Tensor, z1: Tensor, f: Tensor) -> None:
        s, r = self.sums, activation_derivative(self.act, z1)
        if self.hessian == "diag":
            # diag(D_n W2^T H_n W2 D_n), D_n = diag(act'(z1)): the GGN diagonal of fc1's outputs
            p = torch.sigmoid(f) if self.likelihood == "bernoulli" else torch.softmax(f, -1)
            w2sq = self.w2.square()
            if self.likelihood == "bernoulli":
                q = (p * (1 - p)) @ w2sq
            else:
                q = p @ w2sq - (p @ self.w2).square()
            q = q * r.square()  # r is 0/1 for ReLU; Hardswish's slope enters squared
            s["fc1.w"] += q.T @ a.square()
            s["fc1.b"] += q.sum(0)
            return
        s["fc1.A"] += a.T @ a
        classes, width = self.w2.shape
        chunk = max(1, (1 << 24) // (classes * width))  # at most 16 M float64 (128 MB) per chunk
        for start in range(0, a.shape[0], chunk):
            sl = slice(start, start + chunk)
            root = hessian_sqrt(f[sl], self.likelihood)  # (n, C, C)
            b = (root @ self.w2) * r[sl, None, :]  # (n, C, D): L_n W2 diag(r_n)
            flat = b.reshape(-1, width)
            s["fc1.G"] += flat.T @ flat

    def all_reduce(self) -> None:
        for value in self.sums.values():
            dist.all_reduce(value)


def _batches(data: Any, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        waves, targets = data
        if len(waves) != len(targets):
            raise ValueError(f"{len(waves)} waveforms but {len(targets)} targets")
        for start in range(0, len(waves), batch_size):
            yield waves[start : start + batch_size], targets[start : start + batch_size]
        return
    if not isinstance(data, Iterable):
        raise TypeError(
            "data must be a DataLoader (or any iterable) of (waveforms, targets) batches, or a (waveforms, targets) "
            f"pair of tensors; got {type(data).__name__}"
        )
    for batch in data:
        if isinstance(batch, Mapping) or not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("every batch must be a (waveforms, targets) pair")
        yield batch[0], batch[1]


def _check_targets(targets: Tensor, likelihood: str, num_classes: int) -> None:
    if likelihood == "bernoulli" and (targets.dim() != 2 or targets.shape[1] != num_classes):
        raise ValueError(
            f"a Bernoulli (multi-label) likelihood needs (N, {num_classes}) multi-hot targets, got shape "
            f"{tuple(targets.shape)}; pass likelihood='categorical' for class indices"
        )
    if likelihood == "categorical" and targets.dim() == 2 and targets.shape[1] != num_classes:
        raise ValueError(f"(N, C) targets must have C = {num_classes}, got {tuple(targets.shape)}")


def _resolve(model: nn.Module, likelihood: str | None, subset: str, hessian: str) -> str:
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; choose one of: {', '.join(SUBSETS)}")
    if hessian not in HESSIANS:
        raise ValueError(f"unknown hessian {hessian!r}; choose one of: {', '.join(HESSIANS)}")
    if likelihood is None:
        cfg = getattr(model, "pretrained_cfg", None)
        likelihood = "bernoulli" if bool(getattr(cfg, "multilabel", False)) else "categorical"
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of: {', '.join(LIKELIHOODS)}")
    return likelihood


def _finish(
    network: nn.Module,
    curvature: _Curvature,
    *,
    likelihood: str,
    subset: str,
    hessian: str,
    prior_precision: str | float,
    num_samples: int | None,
) -> LaplaceModel:
    if float(curvature.sums["n"]) == 0:
        raise ValueError("fit_laplace got no training data")
    posterior = _posterior_module(network, subset, hessian)
    s = curvature.sums
    n = float(s["n"])
    for name, block in posterior.blocks.items():
        if hessian == "diag":
            block.set_diag(s[f"{name}.w"], s[f"{name}.b"])
        else:  # laplace-torch's K-FAC scaling: A averaged over the data, G summed
            block.set_kron(s[f"{name}.A"] / n, s[f"{name}.G"])
    posterior.stats.copy_(torch.tensor([float(s["nll"]), 0.0, n], dtype=torch.float64))
    if num_samples is None:
        cfg_samples = int(getattr(getattr(network, "pretrained_cfg", None), "default_num_samples", 1))
        num_samples = cfg_samples if cfg_samples > 1 else 30
    model = LaplaceModel(network, posterior, num_samples, likelihood=likelihood, subset=subset, hessian=hessian)
    if isinstance(prior_precision, str):
        if prior_precision != "marglik":
            raise ValueError(f"prior_precision must be 'marglik' or a positive number, got {prior_precision!r}")
        model.optimize_prior_precision()
    else:
        model.prior_precision = float(prior_precision)
    return model.eval()


def fit_laplace_features(
    model: nn.Module,
    pooled: Tensor,
    targets: Tensor,
    *,
    likelihood: str | None = None,
    subset: str = "last_layer",
    hessian: str = "kron",
    prior_precision: str | float = "marglik",
    num_samples: int | None = None,
    batch_size: int = 256,
) -> LaplaceModel:
    """:func:`fit_laplace` on cached pooled embeddings ``(N, D)`` (the input of fc1) instead of audio.

    Args:
        model: The trained network.
        pooled: ``(N, D)`` pooled embeddings of the training clips (``model.pooled(waveforms)``).
        targets: ``(N,)`` class indices (or ``(N, C)`` probabilities) for a categorical likelihood,
            ``(N, C)`` multi-hot for a Bernoulli one.
        likelihood: As :func:`fit_laplace`.
        subset: As :func:`fit_laplace`.
        hessian: As :func:`fit_laplace`.
        prior_precision: As :func:`fit_laplace`.
        num_samples: As :func:`fit_laplace`.
        batch_size: Embeddings per accumulation step.

    Returns:
        The :class:`LaplaceModel`.
    """
    likelihood = _resolve(model, likelihood, subset, hessian)
    network = _check_network(model, subset)
    _check_targets(targets, likelihood, network.num_classes)
    device = next(network.parameters()).device
    curvature = _Curvature(network, likelihood, subset, hessian, device)
    for start in range(0, len(pooled), batch_size):
        curvature.add(pooled[start : start + batch_size].to(device), targets[start : start + batch_size])
    return _finish(
        network,
        curvature,
        likelihood=likelihood,
        subset=subset,
        hessian=hessian,
        prior_precision=prior_precision,
        num_samples=num_samples,
    )


def fit_laplace(
    model: nn.Module,
    data: Any,
    *,
    likelihood: str | None = None,
    subset: str = "last_layer",
    hessian: str = "kron",
    prior_precision: str | float = "marglik",
    num_samples: int | None = None,
    batch_size: int = 16,
    distributed: bool = False,
    progress: bool = False,
) -> LaplaceModel:
    """A Laplace posterior for a trained tagger's classifier (and fc1), fitted in one pass over its data.

    The network is not changed and not copied: the returned model holds it and adds the posterior.

    Args:
        model: A trained clip-level vipann model with a deterministic head (``det`` or ``drop``; a
            :class:`LaplaceModel` is refitted from its network).
        data: A :class:`~torch.utils.data.DataLoader` (or any iterable) of ``(waveforms, targets)``
            batches, or one ``(waveforms, targets)`` pair of tensors: the training data.
        likelihood: ``"bernoulli"`` (multi-label, sigmoid outputs) or ``"categorical"`` (softmax);
            default from the model's metadata (``pretrained_cfg.multilabel``).
        subset: ``"last_layer"`` (the classifier) or ``"head"`` (fc1 and the classifier).
        hessian: ``"diag"`` (GGN diagonal) or ``"kron"`` (K-FAC).
        prior_precision: ``"marglik"`` (maximise the Laplace marginal likelihood) or a fixed value.
        num_samples: Default Monte-Carlo samples of a prediction (default: the model's, or 30 for a
            ``det`` model).
        batch_size: Clips per trunk pass when ``data`` is a pair of tensors.
        distributed: Every process passes its own shard of the data and the GGN is summed over the
            processes (:mod:`torch.distributed` must be initialised).
        progress: Show a progress bar.

    Returns:
        The :class:`LaplaceModel` (method ``laplace``), in ``eval()`` mode.

    Raises:
        TypeError: For a model without a deterministic linear head, or malformed data.
        ValueError: For unknown options, mis-shaped targets, a frame-level model or no data.

    Example:
        >>> import vipann
        >>> from vipann.calibration import fit_laplace
        >>> laplace = fit_laplace(model, (train_waves, train_targets))  # doctest: +SKIP
        >>> vipann.predict(laplace, test_waves, num_samples=30).epistemic  # doctest: +SKIP
    """
    likelihood = _resolve(model, likelihood, subset, hessian)
    network = _check_network(model, subset)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    param = next(network.parameters())
    was_training = network.training
    network.eval()
    curvature = _Curvature(network, likelihood, subset, hessian, param.device)
    batches: Iterable[tuple[Tensor, Tensor]] = _batches(data, int(batch_size))
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="Laplace GGN", unit="batch", leave=False)
    try:
        with torch.no_grad():
            for waves, targets in batches:
                _check_targets(targets, likelihood, network.num_classes)
                pooled = network.pooled(waves.to(device=param.device, dtype=param.dtype))
                curvature.add(pooled, targets)
    finally:
        network.train(was_training)
    if distributed:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("distributed=True needs torch.distributed to be initialised")
        curvature.all_reduce()
    logger.debug("Laplace GGN accumulated on %d clips", int(curvature.sums["n"]))
    return _finish(
        network,
        curvature,
        likelihood=likelihood,
        subset=subset,
        hessian=hessian,
        prior_precision=prior_precision,
        num_samples=num_samples,
    )
