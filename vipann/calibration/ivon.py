"""The posterior learnt by IVON, sampled at prediction: :class:`IVONModel` (method ``ivon``).

IVON (Shen et al., ICML 2024; the optimizer is :class:`vipann.train.IVON`) learns a mean-field
Gaussian posterior ``N(m, diag(sigma^2))`` over the weights it trains, with
``sigma^2 = 1 / (ess (h + delta))``: ``m`` the trained weights, ``h`` its running Hessian estimate,
``ess`` the effective sample size (usually the number of training examples) and ``delta`` the weight
decay (the prior precision per example). :class:`IVONModel` holds the network (the means) and ``h``,
and :func:`vipann.predict` samples it: every Monte-Carlo sample draws one weight vector for the
covered parameters (shared by the clips of a batch, as ``ivon.IVON.sampled_params`` does) and runs
only the stages from the first covered parameter on, so a posterior over the head alone costs a head
pass per sample. Stochastic modules (MC dropout) stay off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vipann.calibration._posterior import PosteriorModel, detach_posterior
from vipann.inference.sampler import LogitSampler, Temperature, check_draws
from vipann.zoo.checkpoint import CheckpointError
from vipann.zoo.heads import register_head

__all__ = ["IVONModel", "attach_ivon_posterior"]


def _posterior_module(numel: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
    posterior = nn.Module()
    posterior.register_buffer("hess", torch.zeros(int(numel), device=device, dtype=dtype))
    return posterior


class IVONModel(PosteriorModel):
    """A network and the IVON posterior over some of its parameters.

    Args:
        network: The trained network (its weights are the posterior means).
        posterior: Module with the flat Hessian estimate ``hess`` of the covered parameters.
        param_names: Names (``network.named_parameters()``) of the covered parameters, in ``hess`` order.
        ess: Effective sample size.
        weight_decay: IVON's weight decay ``delta``.
        num_samples: Default Monte-Carlo samples of a prediction.

    Raises:
        ValueError: For unknown parameter names, a ``hess`` of the wrong size or non-positive ``ess``.
    """

    method = "ivon"
    head_type = "ivon"

    def __init__(
        self,
        network: nn.Module,
        posterior: nn.Module,
        param_names: Sequence[str],
        *,
        ess: float,
        weight_decay: float,
        num_samples: int,
    ) -> None:
        super().__init__(network, posterior, num_samples)
        params = dict(network.named_parameters())
        unknown = [n for n in param_names if n not in params]
        if unknown or not param_names:
            raise ValueError(f"unknown parameters {unknown[:5]} (or none given) for an IVON posterior")
        numel = sum(params[n].numel() for n in param_names)
        if posterior.hess.numel() != numel:
            raise ValueError(f"hess has {posterior.hess.numel()} values for {numel} parameters")
        if not float(ess) > 0 or not float(weight_decay) >= 0:
            raise ValueError(f"ess must be > 0 and weight_decay >= 0, got {ess} and {weight_decay}")
        self.param_names = tuple(param_names)
        self.ess, self.weight_decay = float(ess), float(weight_decay)

    def extra_repr(self) -> str:
        """Summary shown by ``repr(module)``."""
        return f"params={len(self.param_names)}, ess={self.ess:g}, weight_decay={self.weight_decay:g}"

    @property
    def head_config(self) -> dict[str, Any]:
        """The options that rebuild the empty posterior when the model is loaded."""
        return {
            **super().head_config,
            "params": list(self.param_names),
            "ess": self.ess,
            "weight_decay": self.weight_decay,
        }

    def set_posterior(
        self, param_names: Sequence[str], posterior: nn.Module, *, ess: float, weight_decay: float
    ) -> None:
        """Replace the posterior (e.g. by the one a later training stage learnt over other parameters).

        Args:
            param_names: The covered parameters.
            posterior: Module with the flat ``hess`` of those parameters.
            ess: Effective sample size.
            weight_decay: IVON's weight decay.
        """
        checked = IVONModel(self.network, posterior, param_names, ess=ess, weight_decay=weight_decay, num_samples=1)
        self.posterior = checked.posterior
        self.param_names, self.ess, self.weight_decay = checked.param_names, checked.ess, checked.weight_decay

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # A posterior learnt over every parameter (a fine-tuned stage) loads into a model that covered a subset.
        hess = state_dict.get(f"{prefix}posterior.hess")
        if hess is not None and hess.numel() != self.posterior.hess.numel():
            names = [n for n, _ in self.network.named_parameters()]
            total = sum(p.numel() for p in self.network.parameters())
            if hess.numel() == total:
                posterior = _posterior_module(total, hess.device, self.posterior.hess.dtype)
                self.set_posterior(
                    names, posterior.to(self.posterior.hess.device), ess=self.ess, weight_decay=self.weight_decay
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _params(self) -> list[nn.Parameter]:
        params = dict(self.network.named_parameters())
        return [params[n] for n in self.param_names]

    def posterior_std(self) -> dict[str, Tensor]:
        """Parameter name -> posterior standard deviation ``1 / sqrt(ess (h + delta))`` (its shape)."""
        std = (self.ess * (self.posterior.hess.clamp(min=0) + self.weight_decay)).rsqrt()
        out, offset = {}, 0
        for name, p in zip(self.param_names, self._params()):
            out[name] = std[offset : offset + p.numel()].view(p.shape)
            offset += p.numel()
        return out

    def _first_stage(self) -> int:
        covered = {id(p) for p in self._params()}
        staged = {id(p) for name in self.network.stage_names for p in getattr(self.network, name).parameters()}
        if covered - staged:
            return 0  # parameters outside the stages (front end, bn0): run everything per sample
        for index, name in enumerate(self.network.stage_names):
            if any(id(p) in covered for p in getattr(self.network, name).parameters()):
                return index
        return 0  # parameters outside the stages (front end, bn0): run everything per sample

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

        Every sample draws the covered weights from the posterior and runs the stages from the first
        covered one (everything before is computed once per window).

        Args:
            num_samples: ``S``.
            generator: Random generator on the model's device.
            max_rows: Ignored (one weight draw per pass).
            temperature: Override of the stored temperature (None: the model's own).
            draws: Accepted for the protocol and checked, otherwise ignored: IVON draws its weights
                once per sample, shared by the clips of the pass; it has no Flipout layers.

        Returns:
            The sampler, windows ``(N, T)`` to logits ``(S, N, C)``.
        """
        if draws is not None:
            check_draws(draws)
        temperature = self._temperature(temperature)
        net = self.network
        params = self._params()
        stds = list(self.posterior_std().values())
        split = self._first_stage()

        @torch.no_grad()
        def sampler(wave: Tensor) -> Tensor:
            x = net.normalize(net.logmel(wave)) if split > 0 else None
            shared = net.run_stages(x, 0, split) if split > 0 else None
            means = [p.detach().clone() for p in params]
            out = []
            try:
                for _ in range(num_samples):
                    for p, m, s in zip(params, means, stds):
                        noise = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
                        p.copy_(m + noise * s.to(p.dtype))
                    out.append(net.run_stages(shared, split) if split > 0 else net(wave))
            finally:
                for p, m in zip(params, means):
                    p.copy_(m)
            return self._scaled(torch.stack(out), temperature)

        return sampler


def attach_ivon_posterior(
    network: nn.Module,
    param_names: Sequence[str],
    hess: Tensor | float,
    *,
    ess: float,
    weight_decay: float,
    num_samples: int = 30,
) -> IVONModel:
    """An :class:`IVONModel` from a network and the Hessian estimate of the parameters IVON trained.

    Args:
        network: The trained network (not copied).
        param_names: The covered parameters (``network.named_parameters()`` names), in ``hess`` order.
        hess: Flat Hessian estimate (or one value for all, e.g. IVON's ``hess_init``).
        ess: Effective sample size.
        weight_decay: IVON's weight decay.
        num_samples: Default Monte-Carlo samples.

    Returns:
        The model.
    """
    params = dict(network.named_parameters())
    missing = [n for n in param_names if n not in params]
    if missing:
        raise ValueError(f"the network has no parameters {missing[:5]}")
    numel = sum(params[n].numel() for n in param_names)
    first = params[param_names[0]] if param_names else next(network.parameters())
    posterior = _posterior_module(numel, first.device, first.dtype)
    with torch.no_grad():
        posterior.hess.copy_(torch.as_tensor(hess, dtype=first.dtype).to(first.device).expand(numel))
    return IVONModel(network, posterior, param_names, ess=ess, weight_decay=weight_decay, num_samples=num_samples)


def _attach_saved(network: nn.Module, options: Mapping[str, Any]) -> None:
    names = options.get("params")
    params = dict(network.named_parameters())
    if not isinstance(names, list) or not names or any(n not in params for n in names):
        raise CheckpointError(f"the IVON head config names parameters this network does not have: {names!r}")
    ess = options.get("ess")
    if not isinstance(ess, (int, float)) or not math.isfinite(ess) or ess <= 0:
        raise CheckpointError(f"invalid IVON effective sample size {ess!r}")
    first = params[names[0]]
    network.ivon = _posterior_module(sum(params[n].numel() for n in names), first.device, first.dtype)


def _wrap_saved(network: nn.Module, options: Mapping[str, Any]) -> IVONModel:
    posterior = detach_posterior(network, "ivon")
    return IVONModel(
        network,
        posterior,
        options["params"],
        ess=float(options["ess"]),
        weight_decay=float(options.get("weight_decay", 0.0)),
        num_samples=int(options.get("num_samples", 30)),
    ).eval()


register_head("ivon", _attach_saved, wrap=_wrap_saved)  # saved IVON models load through vipann.zoo
