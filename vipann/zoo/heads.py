"""Extra head types that a saved model can carry (SNGP today), registered by the modules that define them.

A model directory's ``config.json`` may hold ``"head": {"type": NAME, ...}``: the arguments that
rebuild a head which replaces the PANN's own (``model.head_config``). Serialization does not know the
head types; the module that defines a head registers a function that attaches it to a freshly built
network (:func:`register_head`), and loading calls :func:`attach_head`. Higher layers (calibration)
thus extend the zoo without the zoo importing them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from vipann.zoo.checkpoint import CheckpointError

__all__ = ["attach_head", "register_head", "registered_heads"]

HeadBuilder = Callable[[nn.Module, Mapping[str, Any]], None]
_HEADS: dict[str, HeadBuilder] = {}


def register_head(name: str, attach: HeadBuilder) -> None:
    """Register a head type for saving and loading.

    Args:
        name: The ``"type"`` value stored in ``config.json`` (e.g. ``"sngp"``).
        attach: ``attach(model, options)`` replaces the head of a freshly built model in place;
            ``options`` is the stored head config without ``"type"``.

    Raises:
        ValueError: If another function is already registered under ``name``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a head type needs a non-empty name, got {name!r}")
    if name in _HEADS and _HEADS[name] is not attach:
        raise ValueError(f"head type {name!r} is already registered")
    _HEADS[name] = attach


def registered_heads() -> tuple[str, ...]:
    """The registered head types, sorted."""
    return tuple(sorted(_HEADS))


def attach_head(model: nn.Module, head: Mapping[str, Any]) -> None:
    """Rebuild a stored head on ``model`` (in place).

    Args:
        model: A freshly built network.
        head: The stored head config, ``{"type": NAME, **options}``.

    Raises:
        CheckpointError: For a head type that is not registered (the message lists the known ones).
    """
    kind = head.get("type")
    attach = _HEADS.get(kind) if isinstance(kind, str) else None
    if attach is None:
        known = ", ".join(repr(k) for k in registered_heads()) or "none"
        raise CheckpointError(
            f"unknown head type {kind!r} in the config (known: {known}); a newer vipann or a plug-in "
            "that registers it (vipann.zoo.heads.register_head) is needed to load this model"
        )
    attach(model, {k: v for k, v in head.items() if k != "type"})
