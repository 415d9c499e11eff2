"""An ATen-level multiply-accumulate (MAC) counter: :class:`MacCounter` and :class:`MacReport`.

:class:`MacCounter` is a :class:`~torch.utils._python_dispatch.TorchDispatchMode` that sees every
ATen operator a forward pass executes and adds up its MACs per stage and per operator. Run the
model on the **meta device** (:func:`vipann.models.profile.count_macs` does) and no arithmetic is
done and no activation memory is allocated.

The counting rules are those of torchprofile, the counter behind the MACs of the VI-PANN paper's
Table 1, applied to the ATen operators vipann's forward dispatches:

====================================================  ==================================================
operator (``aten.*``)                                 MACs
====================================================  ==================================================
``convolution``, ``_convolution``                     ``out.numel() * (C_in / groups) * prod(kernel)``
                                                      (transposed: ``input.numel() * (C_out / groups) *
                                                      prod(kernel)``)
``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``matmul``,  the product count: ``out.numel() * k`` for a
``linear``, ``addbmm``, ``mv``, ``addmv``, ``dot``    contraction of length ``k``
``native_batch_norm``,                                ``out.numel()`` when the normalisation is affine
``_native_batch_norm_legit[_no_training]``            (has a weight), else 0
``avg_pool{1,2,3}d``, ``adaptive_avg_pool{1,2,3}d``,  ``out.numel()``
``mean``
``mul``, ``mul_``                                     ``out.numel()``
====================================================  ==================================================

Everything else counts zero: ``add``/``sub``/``div``, ReLU, ``amax``/``max``, dropout, ``softplus``,
random draws (``normal_``, ``uniform_``, ``bernoulli_``), ``sign``, ``pow``, ``log10``, ``clamp``,
views, padding and FFTs (``_fft_r2c``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["COUNTED_OPS", "MacCounter", "MacReport"]

_aten = torch.ops.aten


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _numel(shape: torch.Size | tuple[int, ...]) -> int:
    return math.prod(int(s) for s in shape)


def _first_tensor(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _conv_macs(args: tuple[Any, ...], out: Any) -> int:
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    x, weight = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    per_element = _numel(weight.shape[1:])  # (C_in / groups) * prod(kernel), or C_out / groups ...
    anchor = x if transposed else _first_tensor(out)
    return _numel(anchor.shape) * per_element


def _contraction(k_of: Callable[[tuple[Any, ...]], int]) -> Callable[[tuple[Any, ...], Any], int]:
    def rule(args: tuple[Any, ...], out: Any) -> int:
        return _numel(_first_tensor(out).shape) * k_of(args)

    return rule


def _out_numel(args: tuple[Any, ...], out: Any) -> int:
    return _numel(_first_tensor(out).shape)


def _batch_norm_macs(args: tuple[Any, ...], out: Any) -> int:
    # (input, weight, bias, ...): affine iff a weight is given.
    return _out_numel(args, out) if len(args) > 1 and args[1] is not None else 0


def _addbmm_macs(args: tuple[Any, ...], out: Any) -> int:
    # addbmm(self, batch1 (b, n, m), batch2 (b, m, p)) -> (n, p)
    return _numel(_first_tensor(out).shape) * int(args[1].shape[0]) * int(args[1].shape[2])


def _packets(*names: str) -> list[Any]:
    # Operators missing from this torch build are skipped (older builds lack some batch-norm variants).
    found = []
    for name in names:
        try:
            found.append(getattr(_aten, name))
        except (AttributeError, RuntimeError):
            continue
    return found


_RULES: dict[Any, Callable[[tuple[Any, ...], Any], int]] = {}
for _packet in _packets("convolution", "_convolution"):
    _RULES[_packet] = _conv_macs
for _packet in _packets("mm", "bmm", "matmul"):
    _RULES[_packet] = _contraction(lambda a: int(a[0].shape[-1]))
for _packet in _packets("addmm", "baddbmm", "addmv"):
    _RULES[_packet] = _contraction(lambda a: int(a[1].shape[-1]))
for _packet in _packets("linear", "mv"):
    _RULES[_packet] = _contraction(lambda a: int(a[0].shape[-1]))
for _packet in _packets("dot", "vdot"):
    _RULES[_packet] = lambda a, out: int(a[0].numel())
for _packet in _packets("addbmm"):
    _RULES[_packet] = _addbmm_macs
for _packet in _packets(
    "native_batch_norm",
    "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional",
    "cudnn_batch_norm",
    "miopen_batch_norm",
):
    _RULES[_packet] = _batch_norm_macs
for _packet in _packets(
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "_adaptive_avg_pool2d",
    "_adaptive_avg_pool3d",
    "mean",
    "mul",
    "mul_",
):
    _RULES[_packet] = _out_numel
del _packet

#: Names of the ATen operator packets that contribute MACs; every other operator counts zero.
COUNTED_OPS: tuple[str, ...] = tuple(sorted(f"aten.{p.__name__}" for p in _RULES))


class MacCounter(TorchDispatchMode):
    """Dispatch mode that adds up MACs per stage and per ATen operator (torchprofile's rules).

    Set :attr:`stage` before running a part of the model to attribute its MACs. The rules are
    listed in the module docstring; :data:`COUNTED_OPS` names the counted operators.

    Attributes:
        stage: Key under which MACs are currently recorded.
        per_stage: MACs per stage.
        per_op: MACs per operator packet name (``"aten.convolution"``, ...).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stage = ""
        self.per_stage: dict[str, int] = {}
        self.per_op: dict[str, int] = {}

    def add(self, key: str, macs: int) -> None:
        """Record ``macs`` under operator (or analytic term) ``key`` and the current stage.

        Args:
            key: Operator or term name.
            macs: Number of multiply-accumulates.
        """
        self.per_stage[self.stage] = self.per_stage.get(self.stage, 0) + int(macs)
        self.per_op[key] = self.per_op.get(key, 0) + int(macs)

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        rule = _RULES.get(func.overloadpacket)
        if rule is not None:
            self.add(f"aten.{func.overloadpacket.__name__}", rule(args, out))
        return out


@dataclass(frozen=True)
class MacReport:
    """MACs of one forward pass, split by stage.

    Attributes:
        total: Total multiply-accumulates of the forward pass (all clips of the batch).
        per_stage: MACs per stage: ``"frontend"`` (log-mel front end and ``bn0``) and every entry of
            the model's ``stage_names``, in execution order.
        convention: ``"vipann"`` or ``"paper"`` (see :func:`count_macs`).
        seconds: Clip length in seconds (``num_samples / sample_rate``).
        batch_size: Number of clips in the batch.
        num_samples: Clip length in samples.
        per_op: MACs per ATen operator (``"aten.convolution"``, ...) and per analytic term
            (``"frontend.*"`` for the analytic front end).
    """

    total: int
    per_stage: dict[str, int]
    convention: str
    seconds: float
    batch_size: int
    num_samples: int = 0
    per_op: dict[str, int] = field(default_factory=dict)

    @property
    def gmacs(self) -> float:
        """Total in units of 10^9 MACs."""
        return self.total / 1e9

    def __str__(self) -> str:
        rows = [(name, f"{macs:,}") for name, macs in self.per_stage.items()]
        rows.append(("total", f"{self.total:,}"))
        width = max(len(name) for name, _ in rows)
        number = max(len(value) for _, value in rows)
        header = (
            f"MACs ({self.convention} convention, batch {self.batch_size} x {self.seconds:g} s = "
            f"{self.num_samples} samples)"
        )
        lines = [header, f"{'stage':<{width}}  {'MACs':>{number}}", "-" * (width + number + 2)]
        for i, (name, value) in enumerate(rows):
            if i == len(rows) - 1:
                lines.append("-" * (width + number + 2))
            lines.append(f"{name:<{width}}  {value:>{number}}")
        return "\n".join(lines)
