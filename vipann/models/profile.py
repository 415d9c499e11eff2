"""Multiply-accumulate (MAC) and parameter counts of vipann models.

:func:`count_macs` counts the MACs of one forward pass with a
:class:`~torch.utils._python_dispatch.TorchDispatchMode` that sees every ATen operator the model
executes. The forward runs on a copy of the model on the **meta device**, so no arithmetic is done
and no activation memory is allocated: counting flip-resnet54 on a 30 s clip takes well under a
second and a few megabytes.

The counting rules (torchprofile's, applied to ATen operators) are listed in :mod:`vipann.models.macs`.

Stochastic layers are counted in their *sampling* path: the forward runs under
:func:`vipann.layers.mc_sampling`, so every Flipout layer executes its mean operation, the
perturbation ``sigma * eps`` (weight and bias), ``x * sign_in``, the perturbed operation and
``out * sign_out``. MC-dropout sites are kept off while counting: dropout counts zero by the rules,
but on the CPU and meta backends ``aten.dropout`` decomposes into a Bernoulli mask and a ``mul``,
which the rules would otherwise count.

EfficientAT models are counted the same way; ``convention="efficientat"`` reproduces the EfficientAT
repository's own counter instead (:mod:`vipann.models.efficientat.macs`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from vipann.layers import MCDropout, mc_sampling
from vipann.models.blocks import ConvBlock, ConvBlock5x5
from vipann.models.efficientat import EfficientAT
from vipann.models.efficientat import macs as effat_macs
from vipann.models.families import is_network
from vipann.models.macs import COUNTED_OPS, MacCounter, MacReport, _is_int
from vipann.models.pann import PANN

__all__ = [
    "CONVENTIONS",
    "COUNTED_OPS",
    "MacCounter",
    "MacReport",
    "count_macs",
    "count_parameters",
    "frontend_macs",
]

CONVENTIONS = ("vipann", "paper", "efficientat")
FRONTEND = "frontend"


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters of a model.

    Trainable-only is the convention of the VI-PANN paper's Table 1 (and of PANNs'
    ``count_parameters`` and ptflops). vipann keeps the STFT window and mel filterbank as
    non-persistent buffers, so the frozen front end is never counted in either mode; with
    ``trainable_only=False`` frozen parameters (e.g. a backbone frozen for fine-tuning) are counted
    too. Shared parameters are counted once.

    Args:
        model: Any module.
        trainable_only: Count only parameters with ``requires_grad=True``.

    Returns:
        The number of scalar parameters.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def _meta_copy(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` whose parameters and buffers are empty meta tensors (no data copied)."""
    memo: dict[int, Any] = {}
    for param in model.parameters():
        memo[id(param)] = nn.Parameter(torch.empty_like(param, device="meta"), param.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = torch.empty_like(buffer, device="meta")
    for module in model.modules():
        generator = getattr(module, "generator", None)
        if isinstance(generator, torch.Generator):
            memo[id(generator)] = None
    meta = copy.deepcopy(model, memo)
    # The copy shares hook functions with the original; user hooks must not see the counting pass.
    for module in meta.modules():
        for name in _HOOK_DICTS:
            hooks = getattr(module, name, None)
            if hooks is not None:
                hooks.clear()
    return meta


def _check_model(model: Any, convention: str) -> PANN:
    if not is_network(model):
        raise TypeError(f"count_macs expects a vipann model (PANN, EfficientAT), got {type(model).__name__}")
    if convention == "paper" and not isinstance(model, PANN):
        raise ValueError(
            "convention 'paper' reproduces the VI-PANN paper's Table 1 for PANN models; count an EfficientAT "
            "model with 'vipann' or 'efficientat' (the EfficientAT repository's counter)"
        )
    return model


def _resolve_length(
    model: PANN, seconds: float | None, num_samples: int | None, batch_size: int, convention: str
) -> int:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if seconds is not None and num_samples is not None:
        raise ValueError("give either seconds or num_samples, not both")
    sample_rate = model.sample_rate
    if num_samples is None:
        if seconds is None:
            cfg = getattr(model, "pretrained_cfg", None)
            seconds = float(getattr(cfg, "clip_seconds", 1.0))
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not math.isfinite(seconds):
            raise ValueError(f"seconds must be a positive finite number, got {seconds!r}")
        if seconds <= 0:
            raise ValueError(f"seconds must be positive, got {seconds!r}")
        num_samples = round(float(seconds) * sample_rate)
    elif not _is_int(num_samples):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    elif num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    num_samples = int(num_samples)
    min_samples = model.frontend.min_samples
    if num_samples < min_samples:
        raise ValueError(
            f"a clip of {num_samples} samples is too short for the front end, which needs at least "
            f"{min_samples} (for reflect padding)"
        )
    return num_samples


def frontend_macs(model: PANN, num_samples: int, batch_size: int = 1, convention: str = "vipann") -> dict[str, int]:
    """Analytic MACs of the log-mel front end (before ``bn0``), term by term.

    With ``F = n_fft // 2 + 1`` frequency bins, ``N = n_fft`` (the window size), ``M`` mel bins and
    ``T = 1 + num_samples // hop`` frames (``center=True``), per clip:

    * ``"vipann"`` (what :class:`vipann.models.frontend.LogMelFrontend` dispatches): ``torch.stft``
      multiplies every frame by the window (``T * N``, one ``aten.mul``), the FFT itself
      (``aten._fft_r2c``) counts **nothing**, ``|X|^2`` is ``pow``/``add`` (nothing), the mel
      projection is an ``mm`` (``T * F * M``) and ``10 * log10`` is an ``aten.mul`` (``T * M``).
    * ``"paper"`` (torchlibrosa's front end as torchprofile counts it): the STFT is two frozen
      ``Conv1d(1, F, N, stride=hop)`` (``2 * F * N * T``), then the ``melW`` matmul (``T * F * M``)
      and the ``10 * log10`` multiply of ``power_to_db`` (``T * M``).

    Args:
        model: The model whose :attr:`~vipann.models.PANN.frontend_config` is used.
        num_samples: Clip length in samples.
        batch_size: Number of clips.
        convention: ``"vipann"`` or ``"paper"``.

    Returns:
        ``{term: MACs}`` with keys ``"frontend.stft"``, ``"frontend.mel_matmul"`` and
        ``"frontend.db_scale"``; their sum is the front end's MACs.

    Raises:
        ValueError: For an unknown convention.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if isinstance(model, EfficientAT):
        return effat_macs.frontend_macs(model.frontend_config, num_samples, batch_size, convention)
    c = model.frontend_config
    frames = c.num_frames(num_samples)
    bins = c.window_size // 2 + 1
    if convention == "paper":
        stft = 2 * bins * c.window_size * frames
    else:
        stft = c.window_size * frames
    return {
        "frontend.stft": batch_size * stft,
        "frontend.mel_matmul": batch_size * frames * bins * c.mel_bins,
        "frontend.db_scale": batch_size * frames * c.mel_bins,
    }


def _logmel_shape(model: nn.Module, num_samples: int, batch_size: int) -> tuple[int, ...]:
    if isinstance(model, EfficientAT):
        return model.logmel_shape(num_samples, batch_size)
    c = model.frontend_config
    return (batch_size, 1, c.num_frames(num_samples), c.mel_bins)


@contextlib.contextmanager
def _sampling_without_dropout(model: nn.Module) -> Iterator[None]:
    with mc_sampling(model):
        for module in model.modules():
            if isinstance(module, MCDropout):
                module.mc_active = False
        yield


def count_macs(
    model: nn.Module,
    seconds: float | None = None,
    *,
    num_samples: int | None = None,
    batch_size: int = 1,
    convention: str = "vipann",
) -> MacReport:
    """Count the multiply-accumulates of one forward pass (inference, stochastic layers sampling).

    The count runs on a meta-device copy of ``model`` in ``eval()`` mode, so it costs no arithmetic
    and no activation memory; ``model`` itself is neither modified nor moved. Flipout layers are
    counted in their sampling path (see the module docstring for the operator rules), MC-dropout
    sites count zero. Because the meta backend cannot run the front end (it disables autocast, which
    has no meta device type), the front end is counted analytically in both conventions, with
    :func:`frontend_macs`; everything from ``bn0`` on is counted by dispatch.

    Conventions:

    * ``"vipann"``: what vipann's forward executes. The ``torch.stft`` front end contributes the
      window multiply (``frames * n_fft``), the mel ``mm`` and the ``10 *`` of the dB conversion;
      the FFT contributes **nothing** (FFTs are not counted).
    * ``"paper"``: reproduces Table 1 of the VI-PANN paper (torchprofile 0.1.0 on VI-PANN's
      ``models.ResNet54``) exactly. On top of the vipann count from ``bn0`` on, it (1) replaces the
      front end by torchlibrosa's: two STFT ``Conv1d`` (``2 * (n_fft/2+1) * n_fft * frames``), the
      ``melW`` matmul and the ``10 *`` of ``power_to_db``; (2) evaluates ``fc_audioset`` twice, as
      VI-PANN's forward does (clipwise output and ``'embedding'`` logits), Flipout extras included;
      (3) adds the ``avg_pool2d`` with a 1x1 kernel that PANNs runs after a conv block built with
      ``pool_size=(1, 1)`` (``conv_block_after1`` of the ResNets, the last block of Cnn14), which
      vipann skips as the identity (``out.numel()`` MACs). bayesian-torch's ``Conv2dFlipout``
      also computes an unused ``x_tmp = x * sign_input``; torchprofile's JIT trace drops that dead
      node, so it is **not** counted (with it, Flip would exceed Table 1 by 22,256,960 MACs at 5 s).

    Args:
        model: A :class:`vipann.models.PANN` or :class:`vipann.models.EfficientAT` (e.g. from
            :func:`vipann.create_model`), on any device.
        seconds: Clip length in seconds; the sample count is ``round(seconds * sample_rate)``.
            Default (with ``num_samples`` also None): ``model.pretrained_cfg.clip_seconds`` if the
            model has one, else 1 s.
        num_samples: Clip length in samples (instead of ``seconds``).
        batch_size: Clips per forward pass. MACs scale with it except for the per-call weight
            perturbation ``sigma * eps`` of Flipout layers, drawn once per forward pass.
        convention: ``"vipann"``, ``"paper"`` (PANN models) or ``"efficientat"`` (the EfficientAT
            repository's counter: leaf Conv2d and Linear modules only, no front end; see
            :mod:`vipann.models.efficientat.macs`; 541,085,095 MACs for mn10 on 10 s).

    Returns:
        The :class:`MacReport`.

    Raises:
        TypeError: If ``model`` is not a vipann model.
        ValueError: If both ``seconds`` and ``num_samples`` are given, a length is not positive or
            shorter than the front end's minimum, ``batch_size`` is not a positive int, or the
            convention is unknown.

    References:
        J. Fischer, M. Orescanin and E. Eckstrand, "VI-PANN: Harnessing transfer learning and
        uncertainty-aware variational inference for improved generalization in audio pattern
        recognition", 2024 (Table 1).
        torchprofile 0.1.0 (MIT HAN Lab), the counting rules re-implemented here.

    Example:
        >>> import vipann
        >>> from vipann.models.profile import count_macs
        >>> report = count_macs(vipann.create_model("det-tiny"), seconds=1.0)
        >>> report.total > 0
        True
    """
    pann = _check_model(model, convention)
    samples = _resolve_length(pann, seconds, num_samples, batch_size, convention)
    batch_size = int(batch_size)
    paper = convention == "paper"
    hooked = convention == "efficientat"
    dtype = next((p.dtype for p in pann.parameters() if p.is_floating_point()), torch.float32)

    meta = _meta_copy(pann)
    meta.eval()
    counter = MacCounter()
    counter.stage = FRONTEND
    for key, macs in frontend_macs(pann, samples, batch_size, convention).items():
        counter.add(key, macs)
    # Record the ops that exist only in the original code as hooks, so they land in their stage.
    handles = []
    if paper:

        def one_by_one_pool(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if tuple(module.pool_size) == (1, 1) and "avg" in module.pool_type:
                counter.add("aten.avg_pool2d", output.numel())

        for module in meta.modules():
            if isinstance(module, (ConvBlock, ConvBlock5x5)):
                handles.append(module.register_forward_hook(one_by_one_pool))
    if hooked:  # module hooks instead of operator dispatch; one deterministic pass
        handles += effat_macs.efficientat_hooks(meta, counter.add)
    sampling = contextlib.nullcontext() if hooked else _sampling_without_dropout(meta)
    try:
        with torch.no_grad(), sampling, contextlib.nullcontext() if hooked else counter:
            x = torch.empty(_logmel_shape(pann, samples, batch_size), device="meta", dtype=dtype)
            x = meta.normalize(x)
            for index, name in enumerate(meta.stage_names):
                counter.stage = name
                counter.per_stage.setdefault(name, 0)
                y = meta.run_stages(x, index, index + 1)
                if paper and name == "fc_audioset":
                    meta.run_stages(x, index, index + 1)
                x = y
    finally:
        for handle in handles:
            handle.remove()
    return MacReport(
        total=sum(counter.per_stage.values()),
        per_stage=dict(counter.per_stage),
        convention=convention,
        seconds=samples / pann.sample_rate,
        batch_size=batch_size,
        num_samples=samples,
        per_op=dict(counter.per_op),
    )
