"""IVON: variational learning at Adam's cost (Shen et al., ICML 2024), as an optimizer of the recipes.

IVON learns a mean-field Gaussian posterior ``N(m, diag(1 / (ess (h + delta))))`` over the parameters
it trains: every step draws weights ``m + eps`` (:meth:`IVON.sampled_params`), back-propagates the
loss there, and updates the momentum, the Hessian estimate ``h`` (the reparameterisation estimate
``ess (h + delta) eps * g``, kept positive by the Riemannian correction term) and the mean. This is a
re-implementation of the reference ``ivon-opt`` 0.1.3 (``ivon.IVON``; the tests check that both follow
the same trajectory from the same random draws) with two additions: the step counter is part of
``state_dict()`` (so a resumed run is exact), and :meth:`IVON.posterior` hands the learnt posterior to
:class:`vipann.calibration.IVONModel`, which :func:`vipann.predict` samples.

Data parallel (``torchrun``): every process draws its own weight sample (its own random generator),
computes its gradient locally (no DDP averaging: :func:`vipann.train.fit` runs the backward pass
under ``no_sync``), and ``sync=True`` all-reduces (averages) the gradient and the
noise-times-gradient statistics before the update, so every process applies the same update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vipann.calibration.ivon import IVONModel, attach_ivon_posterior

__all__ = ["IVON", "IVONConfig", "store_ivon_posterior"]

HESS_APPROX = ("price", "gradsq")


@dataclass(frozen=True)
class IVONConfig:
    """IVON settings of a training stage (the learning rate is the stage's).

    Attributes:
        ess: Effective sample size (0: the number of training examples).
        hess_init: Initial Hessian estimate ``h0``.
        beta2: Hessian averaging (0.99999 in the paper).
        weight_decay: ``delta``, the prior precision per example.
        train_samples: Weight samples (gradients) averaged per step.
        clip_radius: Element-wise clipping of the preconditioned update.
    """

    ess: float = 0.0
    hess_init: float = 1.0
    beta2: float = 0.99999
    weight_decay: float = 1e-4
    train_samples: int = 1
    clip_radius: float = float("inf")


def _welford(avg: Tensor | None, new: Tensor, count: int) -> Tensor:
    return new if avg is None else avg + (new - avg) / count


class IVON(torch.optim.Optimizer):
    """The IVON optimizer (improved variational online Newton).

    Args:
        params: Parameters (or parameter groups) to train.
        lr: Learning rate (with ``rescale_lr`` the step is ``lr (h0 + delta) / (h + delta)`` times the
            momentum; values around 0.1 are typical).
        ess: Effective sample size (usually the number of training examples).
        hess_init: Initial Hessian estimate.
        beta1: Momentum.
        beta2: Hessian averaging.
        weight_decay: ``delta``.
        mc_samples: Samples per step when ``step`` is given a closure.
        hess_approx: ``"price"`` (reparameterisation estimate) or ``"gradsq"``.
        clip_radius: Element-wise clipping of the preconditioned update.
        sync: Average the statistics over the processes of :mod:`torch.distributed` before updating.
        debias: Debias the momentum.
        rescale_lr: Scale the learning rate by ``h0 + delta``.

    Raises:
        ValueError: For invalid settings or parameters on several devices or dtypes.

    References:
        Shen et al., "Variational learning is effective for large deep networks", ICML 2024.
    """

    def __init__(
        self,
        params: Sequence[Tensor] | Sequence[dict],
        lr: float,
        ess: float,
        hess_init: float = 1.0,
        beta1: float = 0.9,
        beta2: float = 0.99999,
        weight_decay: float = 1e-4,
        mc_samples: int = 1,
        hess_approx: str = "price",
        clip_radius: float = float("inf"),
        sync: bool = False,
        debias: bool = True,
        rescale_lr: bool = True,
    ) -> None:
        checks = {
            "lr >= 0": lr >= 0,
            "ess > 0": ess > 0,
            "hess_init > 0": hess_init > 0,
            "0 <= beta1 <= 1": 0 <= beta1 <= 1,
            "0 <= beta2 <= 1": 0 <= beta2 <= 1,
            "weight_decay >= 0": weight_decay >= 0,
            "mc_samples >= 1": mc_samples >= 1,
            "clip_radius > 0": clip_radius > 0,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid IVON settings: {', '.join(failed)} does not hold")
        if hess_approx not in HESS_APPROX:
            raise ValueError(f"hess_approx must be one of {HESS_APPROX}, got {hess_approx!r}")
        defaults = {
            "lr": lr,
            "ess": ess,
            "hess_init": hess_init,
            "beta1": beta1,
            "beta2": beta2,
            "weight_decay": weight_decay,
            "clip_radius": clip_radius,
            "step": 0,
        }
        super().__init__(params, defaults)
        self.mc_samples, self.hess_approx, self.sync = int(mc_samples), hess_approx, bool(sync)
        self.debias, self.rescale_lr = bool(debias), bool(rescale_lr)
        all_params = [p for g in self.param_groups for p in g["params"]]
        if len({p.device for p in all_params}) > 1 or len({p.dtype for p in all_params}) > 1:
            raise ValueError("IVON needs every parameter on one device and of one dtype")
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["momentum"] = torch.zeros_like(p)
                self.state[p]["hess"] = torch.full_like(p, float(group["hess_init"]))
        self._reset()

    def _reset(self) -> None:
        self._count = 0
        self._avg_grad: list[Tensor] | None = None
        self._avg_stat: list[Tensor] | None = None

    def _params(self) -> Iterator[tuple[dict, nn.Parameter]]:
        for group in self.param_groups:
            for p in group["params"]:
                yield group, p

    @contextmanager
    def sampled_params(self, train: bool = False) -> Iterator[None]:
        """Within the block the parameters are a posterior sample; with ``train`` their gradients are collected.

        Args:
            train: Record the gradients (run ``backward`` inside the block; call :meth:`step` after).
        """
        means, noises = [], []
        with torch.no_grad():
            for group in self.param_groups:
                numel = sum(p.numel() for p in group["params"])
                first = group["params"][0]
                eps = torch.randn(numel, device=first.device, dtype=first.dtype)  # one draw per group, as ivon-opt
                offset = 0
                for p in group["params"]:
                    hess = self.state[p]["hess"].flatten()
                    noise = eps[offset : offset + p.numel()] / (group["ess"] * (hess + group["weight_decay"])).sqrt()
                    offset += p.numel()
                    means.append(p.detach().clone())
                    noises.append(noise.view(p.shape))
                    p.add_(noises[-1])
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, p), mean in zip(self._params(), means):
                    p.copy_(mean)
        if train:
            grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for _, p in self._params()]
            stats = [n * g if self.hess_approx == "price" else g.square() for n, g in zip(noises, grads)]
            self._count += 1
            if self._avg_grad is None or self._avg_stat is None:
                self._avg_grad, self._avg_stat = grads, stats
            else:
                self._avg_grad = [_welford(a, g, self._count) for a, g in zip(self._avg_grad, grads)]
                self._avg_stat = [_welford(a, s, self._count) for a, s in zip(self._avg_stat, stats)]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Update momentum, Hessian and means from the gradients collected since the last step.

        Args:
            closure: Optional: called ``mc_samples`` times inside :meth:`sampled_params` (``train=True``);
                it must zero the gradients, compute the loss, call ``backward`` and return the loss.

        Returns:
            The mean closure loss, or None.

        Raises:
            RuntimeError: If no gradient was collected.
        """
        loss = None
        if closure is not None:
            losses = []
            for _ in range(self.mc_samples):
                with torch.enable_grad(), self.sampled_params(train=True):
                    losses.append(closure())
            loss = sum(losses) / len(losses)
        if self._avg_grad is None or self._avg_stat is None:
            raise RuntimeError("IVON.step() needs gradients collected inside sampled_params(train=True)")
        if self.sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flat = torch.cat([t.flatten() for t in (*self._avg_grad, *self._avg_stat)])
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
            pieces = list(flat.split([t.numel() for t in (*self._avg_grad, *self._avg_stat)]))
            half = len(self._avg_grad)
            self._avg_grad = [v.view_as(t) for v, t in zip(pieces[:half], self._avg_grad)]
            self._avg_stat = [v.view_as(t) for v, t in zip(pieces[half:], self._avg_stat)]
        for (group, p), grad, stat in zip(self._params(), self._avg_grad, self._avg_stat):
            self._update(group, p, grad, stat)
        for group in self.param_groups:
            group["step"] += 1
        self._reset()
        return loss

    def _update(self, group: dict, p: Tensor, grad: Tensor, stat: Tensor) -> None:
        state = self.state[p]
        b1, b2, wd, ess = group["beta1"], group["beta2"], group["weight_decay"], group["ess"]
        step = group["step"] + 1
        m = b1 * state["momentum"] + (1.0 - b1) * grad
        h = state["hess"]
        f = (stat * (h + wd) if self.hess_approx == "price" else stat) * ess
        h = b2 * h + (1.0 - b2) * f + (0.5 * (1 - b2) ** 2) * (h - f).square() / (h + wd)
        lr = group["lr"] * (group["hess_init"] + wd) if self.rescale_lr else group["lr"]
        debias = 1.0 - math.pow(b1, float(step)) if self.debias else 1.0
        update = torch.clip((m / debias + wd * p) / (h + wd), min=-group["clip_radius"], max=group["clip_radius"])
        p.copy_(p - lr * update)
        state["momentum"], state["hess"] = m, h

    def hessian(self) -> tuple[list[nn.Parameter], Tensor]:
        """The trained parameters and their flat Hessian estimate (in the same order)."""
        params = [p for _, p in self._params()]
        return params, torch.cat([self.state[p]["hess"].flatten() for p in params])

    def posterior(self, network: nn.Module, num_samples: int = 30) -> IVONModel:
        """The learnt posterior as an :class:`~vipann.calibration.IVONModel` around ``network``.

        Args:
            network: The network whose parameters were trained (not copied).
            num_samples: Default Monte-Carlo samples of a prediction.

        Returns:
            The model.

        Raises:
            ValueError: If a trained parameter is not the network's, or the groups differ in ``ess`` or
                ``weight_decay``.
        """
        ess, wd = self._shared_setting("ess"), self._shared_setting("weight_decay")
        params, hess = self.hessian()
        names = {id(p): n for n, p in network.named_parameters()}
        missing = [i for i, p in enumerate(params) if id(p) not in names]
        if missing:
            raise ValueError(f"{len(missing)} trained parameters are not parameters of the network")
        return attach_ivon_posterior(
            network, [names[id(p)] for p in params], hess, ess=ess, weight_decay=wd, num_samples=num_samples
        )

    def _shared_setting(self, key: str) -> float:
        values = {float(g[key]) for g in self.param_groups}
        if len(values) != 1:
            raise ValueError(f"the parameter groups have different {key} {sorted(values)}: one posterior needs one")
        return values.pop()


def store_ivon_posterior(module: nn.Module, optimizer: IVON) -> int:
    """Put the posterior an IVON optimizer learnt into every :class:`~vipann.calibration.IVONModel` in ``module``.

    Args:
        module: The trained module (an IVON model, or a module holding one).
        optimizer: The optimizer that trained it.

    Returns:
        How many IVON models were updated.
    """
    count = 0
    for sub in module.modules():
        if isinstance(sub, IVONModel):
            fresh = optimizer.posterior(sub.network, sub.num_samples)
            sub.set_posterior(fresh.param_names, fresh.posterior, ess=fresh.ess, weight_decay=fresh.weight_decay)
            count += 1
    return count
