"""Checking a device string before anything is moved there, so a missing GPU is one clear error."""

from __future__ import annotations

import torch

__all__ = ["check_device"]


def check_device(device: str | torch.device, *, allow_meta: bool = False) -> torch.device:
    """Parse a device and check that this machine has it.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ... or a :class:`torch.device`.
        allow_meta: Accept the ``meta`` device (shapes only, no data: fine for building, not for computing).

    Returns:
        The device.

    Raises:
        ValueError: For an unknown device string, a CUDA/MPS device this machine does not have,
            or ``meta`` where data is needed; the message says what to pass instead.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"invalid device {str(device)!r} ({exc}); use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(
                f"device {str(device)!r} was asked for, but CUDA is not available ({why}); use --device cpu "
                "(device='cpu'), or leave the device out to use a GPU only when there is one"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {str(device)!r} does not exist: this machine has {count} CUDA device(s)")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {str(device)!r} was asked for, but MPS is not available; use 'cpu'")
    elif dev.type == "meta" and not allow_meta:
        raise ValueError(
            "the 'meta' device holds shapes but no data, so nothing can be computed there; use 'cpu' or 'cuda'"
        )
    return dev
