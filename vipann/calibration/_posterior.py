"""A network plus a posterior over some of its weights: the common part of the Laplace and IVON models.

:class:`PosteriorModel` wraps a trained :class:`~vipann.models.PANN` (``network``, whose weights are
the posterior mean) and a module of posterior buffers (``posterior``). It is a
:class:`~vipann.inference.sampler.MonteCarloModel`: subclasses implement ``mc_sampler``, so
:func:`vipann.predict` samples the posterior without the inference layer knowing about it. Every
attribute the wrapper does not define itself is the network's (``arch``, ``run_stages``, ``fc1``, ...),
so recipes, feature caches and trainers use it as they use a PANN; ``forward`` gives the network's
(posterior-mean) logits.

Saving: :meth:`pretrained_parts` hands :func:`vipann.save_pretrained` the network, the head config that
describes the posterior (``{"type": head_type, ...}``) and the posterior's tensors under the prefix
``<head_type>.``; loading rebuilds the network, attaches an empty posterior there (the function
registered with :func:`vipann.zoo.heads.register_head`), loads every tensor, and the registered
``wrap`` function turns the network back into this wrapper.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor, nn

from vipann.inference.temperature import apply_temperature

__all__ = ["PosteriorModel", "detach_posterior"]


class PosteriorModel(nn.Module):
    """A trained network and a posterior over some of its weights, sampled by :func:`vipann.predict`.

    Args:
        network: The trained network (its weights are the posterior mean).
        posterior: The posterior's buffers.
        num_samples: Default Monte-Carlo samples of a prediction.

    Raises:
        TypeError: If ``network`` is itself a posterior model or has another extra head.
    """

    #: The model's method (``"laplace"``, ``"ivon"``); subclasses set it.
    method: str = ""
    #: The ``"type"`` of its head config (and the prefix of its tensors in a saved model).
    head_type: str = ""

    def __init__(self, network: nn.Module, posterior: nn.Module, num_samples: int) -> None:
        super().__init__()
        if isinstance(network, PosteriorModel):
            raise TypeError(f"the network is already a {network.method} model; pass its .network")
        if getattr(network, "head_config", None) is not None:
            raise TypeError(
                f"a {self.method} posterior needs the network's own PANN head; this network has a "
                f"{network.head_config.get('type')!r} head"
            )
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.network = network
        self.posterior = posterior
        self.num_samples = int(num_samples)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            network = self.__dict__.get("_modules", {}).get("network")
            if network is None or name.startswith("__"):
                raise
            return getattr(network, name)

    def extra_repr(self) -> str:
        """Summary shown by ``repr(module)``."""
        return f"method={self.method!r}, num_samples={self.num_samples}"

    # -- metadata ----------------------------------------------------------------------------
    @property
    def pretrained_cfg(self) -> Any:
        """The network's metadata with this model's ``default_num_samples`` (None without metadata)."""
        cfg = getattr(self.network, "pretrained_cfg", None)
        if cfg is None or not dataclasses.is_dataclass(cfg):
            return cfg
        return dataclasses.replace(cfg, default_num_samples=self.num_samples)

    @pretrained_cfg.setter
    def pretrained_cfg(self, value: Any) -> None:
        own = getattr(self.network, "pretrained_cfg", None)
        if dataclasses.is_dataclass(value) and own is not None and dataclasses.is_dataclass(own):
            value = dataclasses.replace(value, default_num_samples=own.default_num_samples)
        self.network.pretrained_cfg = value

    @property
    def head_config(self) -> dict[str, Any]:
        """What rebuilds the (empty) posterior when the model is loaded; subclasses extend it."""
        return {"type": self.head_type, "num_samples": self.num_samples}

    def pretrained_parts(self) -> tuple[nn.Module, dict[str, Any], dict[str, Tensor]]:
        """``(network, head config, posterior tensors)`` for :func:`vipann.save_pretrained`."""
        state = {f"{self.head_type}.{k}": v for k, v in self.posterior.state_dict().items()}
        return self.network, self.head_config, state

    def posterior_bytes(self) -> int:
        """Memory of the posterior's tensors (what the wrapper adds to the network), in bytes."""
        return sum(t.numel() * t.element_size() for t in self.posterior.state_dict().values())

    def forward(self, waveform: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """The network's logits (the posterior mean's), ``(B, C)``."""
        return self.network(waveform, *args, **kwargs)

    def _temperature(self, temperature: Any) -> Any:
        if temperature is None:
            temperature = getattr(self.pretrained_cfg, "temperature", None)
        return temperature

    @staticmethod
    def _scaled(logits: Tensor, temperature: Any) -> Tensor:
        return logits if temperature is None else apply_temperature(logits, temperature)


def detach_posterior(network: nn.Module, head_type: str) -> nn.Module:
    """Take the posterior module that loading attached to ``network`` (as ``network.<head_type>``) off it.

    Args:
        network: A freshly loaded network.
        head_type: The attribute the posterior was attached under.

    Returns:
        The posterior module; ``network`` no longer holds it.
    """
    posterior = getattr(network, head_type)
    delattr(network, head_type)
    if hasattr(network, "head_config"):
        del network.head_config
    return posterior
