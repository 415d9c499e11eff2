"""The model families vipann builds, and the one place that maps an architecture id to its network class.

Every family is one class with a ``method`` argument (:class:`~vipann.models.PANN`,
:class:`~vipann.models.EfficientAT`) and one front-end config class. Code above the networks
layer (the zoo's factory, serialisation, converters, MOPED, transfer learning) builds and checks
networks through this registry instead of naming a class, so a new family is added here once.

Every network of every family offers the same staged interface: ``forward(waveform)`` -> logits,
``logmel``, ``normalize``, ``stage_names``, ``trunk_names``, ``run_stages``,
``first_stochastic_stage``, ``pooled``, ``embed``, ``clip_embedding``, ``check_waveform``,
``config()``, the metadata ``arch``, ``method``, ``num_classes``, ``sample_rate``, ``min_samples``,
``embed_dim``, ``pooling``, ``frontend_config``, and the head modules ``dropout_fc1``, ``fc1``,
``act_fc1``, ``dropout_head``, ``fc_audioset``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from vipann.models.archs import ARCHITECTURES as PANN_ARCHITECTURES
from vipann.models.efficientat import ARCHITECTURES as EFFICIENTAT_ARCHITECTURES
from vipann.models.efficientat import EfficientAT, EfficientATFrontendConfig
from vipann.models.frontend import FrontendConfig
from vipann.models.pann import PANN

__all__ = [
    "FAMILIES",
    "NETWORK_TYPES",
    "Family",
    "all_architectures",
    "build_network",
    "family_of",
    "frontend_from_dict",
    "is_network",
]


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: ``"pann"`` or ``"efficientat"``.
        network: The network class (``network(arch, method, num_classes, **model_args)``).
        architectures: Architecture id -> its spec (with a ``frontend`` and a ``display`` or
            ``original_class``).
        frontend_config: The front-end config class (``from_dict``/``to_dict``).
    """

    name: str
    network: type[nn.Module]
    architectures: Mapping[str, Any]
    frontend_config: type

    @property
    def model_args(self) -> frozenset[str]:
        """Keyword arguments of the network class besides ``arch``, ``method``, ``num_classes``."""
        return frozenset(inspect.signature(self.network.__init__).parameters) - {
            "self",
            "arch",
            "method",
            "num_classes",
        }

    def display(self, arch: str) -> str:
        """Human-readable name of an architecture (cards, messages)."""
        spec = self.architectures[arch]
        if self.name == "pann":
            original = spec.original_class
            return f"PANNs {original}" if original else f"`{arch}` (vipann test network, no PANNs counterpart)"
        return spec.display

    def describe_frontend(self, frontend: Mapping[str, Any]) -> str:
        """One line describing a front-end config dict of this family."""
        if self.name == "pann":
            fe = frontend
            return (
                f"log-mel, window {fe['window_size']}, hop {fe['hop_size']}, {fe['mel_bins']} mel bins, "
                f"{float(fe['fmin']):g}–{float(fe['fmax']):g} Hz"
            )
        return self.frontend_config.from_dict(dict(frontend)).describe()


FAMILIES: dict[str, Family] = {
    "pann": Family("pann", PANN, PANN_ARCHITECTURES, FrontendConfig),
    "efficientat": Family("efficientat", EfficientAT, EFFICIENTAT_ARCHITECTURES, EfficientATFrontendConfig),
}

#: The network classes of every family (for ``isinstance`` checks).
NETWORK_TYPES: tuple[type[nn.Module], ...] = tuple(f.network for f in FAMILIES.values())


def all_architectures() -> tuple[str, ...]:
    """Every architecture id of every family, in registration order."""
    return tuple(arch for family in FAMILIES.values() for arch in family.architectures)


def family_of(arch: str) -> Family:
    """The family an architecture belongs to.

    Args:
        arch: Architecture id (``resnet54``, ``mn10``, ...).

    Returns:
        Its :class:`Family`.

    Raises:
        ValueError: For an unknown architecture, listing the known ones.
    """
    for family in FAMILIES.values():
        if arch in family.architectures:
            return family
    raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(all_architectures())}")


def build_network(arch: str, method: str = "det", num_classes: int = 527, **kwargs: Any) -> nn.Module:
    """Build a network of any family.

    Args:
        arch: Architecture id.
        method: ``det``, ``drop``, ``flip`` or ``detflip``.
        num_classes: Number of outputs.
        **kwargs: Constructor arguments of the family's class (``frontend``, dropout rates, priors, ...).

    Returns:
        The network (training mode, fresh weights).

    Raises:
        ValueError: For an unknown architecture or method, or arguments the family does not take.
    """
    family = family_of(arch)
    unknown = sorted(set(kwargs) - family.model_args)
    if unknown:
        raise ValueError(
            f"{family.network.__name__} ({arch}) takes no arguments {unknown}; known: {sorted(family.model_args)}"
        )
    return family.network(arch, method, num_classes, **kwargs)


def frontend_from_dict(arch: str, frontend: dict[str, Any]) -> Any:
    """Validate a front-end config dict for an architecture's family.

    Args:
        arch: Architecture id.
        frontend: The dict (``config.json``'s ``"frontend"``).

    Returns:
        The family's front-end config object.

    Raises:
        ValueError: For an unknown architecture or invalid values; TypeError for wrong types.
    """
    return family_of(arch).frontend_config.from_dict(dict(frontend))


def is_network(obj: Any) -> bool:
    """Whether ``obj`` is a network of one of vipann's families."""
    return isinstance(obj, NETWORK_TYPES)
