"""MAC counting for EfficientAT models: the analytic front end, and EfficientAT's own counting convention.

:func:`vipann.models.profile.count_macs` counts EfficientAT models like every vipann model (ATen
operators, torchprofile's rules). Its ``convention="efficientat"`` reproduces the numbers of the
EfficientAT repository instead (``helpers/flop_count.count_macs``, as ``complexity.py`` runs it,
0.54 GMACs for mn10): forward hooks on the leaf ``Conv2d`` and ``Linear`` modules only, a
convolution counted as ``out_channels * (k_h * k_w * in_channels / groups + has_bias) * H_out * W_out``
and a linear layer as its number of weights and biases; the input is the spectrogram, so the front
end counts nothing, and nothing else (BatchNorm, activations, the squeeze-excitation mean and
product, pooling) is counted. The two conventions differ for mn10 on a 10 s clip by those
uncounted operators (BatchNorm's affine multiply, squeeze-excitation's channel products and the
mean pooling) and by the front end, which the ``vipann`` convention counts.

Extensions, so that the convention is defined for every vipann model (the original counter cannot
count these): a Flipout layer is counted as its deterministic counterpart (one mean pass, no
perturbation), and a DyMN dynamic convolution as a convolution with the per-clip kernel (EfficientAT's
counter skips dynamic convolutions and reports no number for DyMN).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vipann.layers import Conv2dFlipout, LinearFlipout
from vipann.models.efficientat.dynamic import DynamicConv, DynamicConvFlipout
from vipann.models.efficientat.frontend import EfficientATFrontendConfig

__all__ = ["efficientat_hooks", "frontend_macs"]

Add = Callable[[str, int], None]


def frontend_macs(
    config: EfficientATFrontendConfig, num_samples: int, batch_size: int, convention: str
) -> dict[str, int]:
    """Analytic MACs of the EfficientAT front end (what its ATen operators count), term by term.

    Per clip of ``L`` samples with ``T`` frames: the pre-emphasis convolution (``2 (L - 1)``), the
    window multiply of ``torch.stft`` (``T * n_fft``: the window is zero-padded to ``n_fft``; the FFT
    counts nothing) and the mel ``matmul`` (``T * (n_fft / 2 + 1) * mel_bins``); the logarithm and
    the normalisation count nothing. With ``convention="efficientat"`` the front end counts zero
    (the original counter starts at the spectrogram).

    Args:
        config: The front end.
        num_samples: Clip length in samples.
        batch_size: Number of clips.
        convention: ``"vipann"`` or ``"efficientat"``.

    Returns:
        ``{term: MACs}`` with keys ``frontend.preemphasis``, ``frontend.stft`` and ``frontend.mel_matmul``.
    """
    if convention == "efficientat":
        return {}
    frames = config.num_frames(num_samples)
    bins = config.n_fft // 2 + 1
    return {
        "frontend.preemphasis": batch_size * 2 * (num_samples - 1),
        "frontend.stft": batch_size * frames * config.n_fft,
        "frontend.mel_matmul": batch_size * frames * bins * config.mel_bins,
    }


def _conv_macs(module: Any, output: torch.Tensor) -> int:
    kernel = math.prod(module.kernel_size) if isinstance(module.kernel_size, tuple) else module.kernel_size**2
    bias = 0 if getattr(module, "bias", None) is None and getattr(module, "mu_bias", None) is None else 1
    per_position = kernel * (module.in_channels // module.groups) + bias
    return output.shape[0] * module.out_channels * per_position * output.shape[-2] * output.shape[-1]


def _linear_macs(module: Any, inputs: tuple[Any, ...]) -> int:
    x = inputs[0]
    rows = math.prod(x.shape[:-1]) if x.dim() > 1 else 1
    bias = (
        0 if getattr(module, "bias", None) is None and getattr(module, "mu_bias", None) is None else module.out_features
    )
    return rows * (module.in_features * module.out_features + bias)


def efficientat_hooks(model: nn.Module, add: Add) -> list[Any]:
    """Register EfficientAT's counting convention on ``model`` as forward hooks.

    Args:
        model: Any vipann model (run it afterwards, in ``eval()`` without sampling).
        add: ``add(key, macs)`` records the MACs of one module call.

    Returns:
        The hook handles (remove them when done).
    """
    handles = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, Conv2dFlipout, DynamicConv, DynamicConvFlipout)):
            key = f"module.{type(module).__name__}"
            handles.append(module.register_forward_hook(lambda m, i, o, key=key: add(key, _conv_macs(m, o))))
        elif isinstance(module, (nn.Linear, LinearFlipout)):
            key = f"module.{type(module).__name__}"
            handles.append(module.register_forward_hook(lambda m, i, o, key=key: add(key, _linear_macs(m, i))))
    return handles
