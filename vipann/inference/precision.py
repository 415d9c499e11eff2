"""Arithmetic precision of a prediction: float32, or bfloat16 autocast on channels-last weights.

``precision="bf16"`` runs the networks under ``torch.autocast(dtype=torch.bfloat16)`` with their
4-D weights in channels-last (NHWC) layout, the layout oneDNN's and cuDNN's bfloat16 convolution
kernels are fast in: on 2 cores of a Xeon with AMX the ResNet54 forward (B = 2) ran 0.79-0.86x as
fast as float32 under autocast alone and 1.34-1.51x with channels-last weights; at B = 8, 1.28-1.30x
and 2.70-3.21x (two runs of ``benchmarks/bench_det_forward.py``).
The layout change is undone when the prediction ends, so the caller's model leaves with the strides
it came with; its values are never touched. The log-mel front ends disable autocast, so the
spectrogram stays float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["PRECISIONS", "check_precision", "low_precision"]

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> None:
    """Refuse a precision other than :data:`PRECISIONS`.

    Args:
        precision: The requested precision.

    Raises:
        ValueError: ``precision`` is not ``"fp32"`` or ``"bf16"``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


@contextlib.contextmanager
def low_precision(model: nn.Module, precision: str, device: torch.device) -> Iterator[None]:
    """Run the body in ``precision``: nothing changes for ``"fp32"``.

    For ``"bf16"``: every 4-D parameter and buffer of ``model`` is made channels-last for the
    duration and bfloat16 autocast is entered on ``device``; on exit (also on an exception) the
    tensors get back their original strides.

    Args:
        model: The network (or ensemble) about to be run.
        precision: ``"fp32"`` or ``"bf16"``.
        device: Where it runs.

    Yields:
        Nothing; the body runs in the requested precision.
    """
    check_precision(precision)
    if precision == "fp32":
        yield
        return
    moved: list[torch.Tensor] = []  # one tensor at a time is copied: no second copy of the model
    try:
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() == 4 and not tensor.is_contiguous(memory_format=torch.channels_last):
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
                moved.append(tensor)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    finally:
        for tensor in moved:
            tensor.data = tensor.data.contiguous()
