"""Extra head types that a saved model can carry (SNGP, Laplace, IVON), registered by the modules that define them.

A model directory's ``config.json`` may hold ``"head": {"type": NAME, ...}``: the arguments that
rebuild a head which replaces the PANN's own (``model.head_config``), or a posterior over the PANN's
weights that a wrapper model samples. Serialization does not know the head types; the module that
defines a head registers a function that attaches it to a freshly built network (:func:`register_head`),
and loading calls :func:`attach_head` before the weights are loaded and :func:`wrap_head` after. Higher
layers (calibration) thus extend the zoo without the zoo importing them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from vipann.zoo.checkpoint import CheckpointError

__all__ = ["attach_head", "register_head", "registered_heads", "wrap_head"]

HeadBuilder = Callable[[nn.Module, Mapping[str, Any]], None]
HeadWrapper = Callable[[nn.Module, Mapping[str, Any]], nn.Module]
_HEADS: dict[str, HeadBuilder] = {}
_WRAPPERS: dict[str, HeadWrapper] = {}


def register_head(name: str, attach: HeadBuilder, wrap: HeadWrapper | None = None) -> None:
    """Register a head type for saving and loading.

    Args:
        name: The ``"type"`` value stored in ``config.json`` (e.g. ``"sngp"``).
        attach: ``attach(model, options)`` replaces the head of a freshly built model in place (or adds
            the empty modules whose tensors the saved file holds); ``options`` is the stored head config
            without ``"type"``.
        wrap: Optional ``wrap(model, options)``, called once the weights are loaded: returns the model
            to hand to the caller (e.g. a wrapper that samples a posterior stored with the network).

    Raises:
        ValueError: If another function is already registered under ``name``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a head type needs a non-empty name, got {name!r}")
    if name in _HEADS and (_HEADS[name] is not attach or _WRAPPERS.get(name) is not wrap):
        raise ValueError(f"head type {name!r} is already registered")
    _HEADS[name] = attach
    if wrap is not None:
        _WRAPPERS[name] = wrap


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


def wrap_head(model: nn.Module, head: Mapping[str, Any] | None) -> nn.Module:
    """The model a loaded network becomes: the registered wrapper of its head type, or the network itself.

    Args:
        model: A network whose weights were just loaded (its head attached by :func:`attach_head`).
        head: The stored head config, or None.

    Returns:
        The model to return to the caller.
    """
    if head is None:
        return model
    wrap = _WRAPPERS.get(head.get("type"))
    return model if wrap is None else wrap(model, {k: v for k, v in head.items() if k != "type"})
