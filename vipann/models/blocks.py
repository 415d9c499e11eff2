"""Building blocks of the PANN family (PANNs ``pytorch/models.py``), with their original names.

Module and parameter names match the original code so that original checkpoints map key for key:
``conv_block1.conv1.weight``, ``resnet.layer2.0.downsample.1.weight``, ``features.3.4.weight``, ...
Pooling is a property of a block (given at construction) rather than a forward argument, so a
trunk is a plain sequence of modules that the sampling code can split anywhere.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "Conv2d",
    "ConvBlock",
    "ConvBlock5x5",
    "GlobalPool",
    "ResNetTrunk",
    "SegmentMax",
    "SegmentPool",
    "conv3x3",
    "init_pann_weights",
    "mobilenet_v1_features",
]


def _pool(x: torch.Tensor, size: tuple[int, int], kind: str) -> torch.Tensor:
    if size == (1, 1):
        # A 1x1 average pool is the identity; skip the kernel launch.
        return x if kind in ("avg", "max") else x + x
    if kind == "avg":
        return F.avg_pool2d(x, kernel_size=size)
    if kind == "max":
        return F.max_pool2d(x, kernel_size=size)
    return F.avg_pool2d(x, kernel_size=size) + F.max_pool2d(x, kernel_size=size)


class _Pooled(nn.Module):
    def __init__(self, pool_size: tuple[int, int], pool_type: str) -> None:
        super().__init__()
        if pool_type not in ("avg", "max", "avg+max"):
            raise ValueError(f"pool_type must be 'avg', 'max' or 'avg+max', got {pool_type!r}")
        self.pool_size = tuple(pool_size)
        self.pool_type = pool_type


MIN_WIDE_CHANNELS = 1024
MAX_WIDE_POSITIONS = 256


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled()


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """3x3 convolution, stride 1, padding 1, no bias; wide layers on small CPU maps as one matmul.

    PANNs' last blocks convolve 1024-2048 channels over maps of a few dozen positions (ResNet54's
    ``conv_block_after1``: 2048 -> 2048 channels on 15 x 2 frames x mel bins at 5 s). oneDNN's
    direct convolution runs such layers at a fifth of the machine's matmul rate; unfolding the
    input (im2col) and multiplying by the weight matrix ran them 1.3-5x faster on the project's
    CPU for 1-8 clips. That path is taken on CPU when the layer has at least
    :data:`MIN_WIDE_CHANNELS` input channels, the batch has at most :data:`MAX_WIDE_POSITIONS`
    output positions and both map sides are at least 2 (on a 1-wide map two thirds of the taps are
    padding, and the direct convolution wins); everywhere else, under autocast and for
    non-contiguous weights it is ``F.conv2d``. Results agree to float32 rounding.

    Args:
        x: ``(B, C_in, H, W)`` maps.
        weight: ``(C_out, C_in, 3, 3)`` kernel.
        bias: Optional ``(C_out,)`` bias.

    Returns:
        ``(B, C_out, H, W)`` maps.
    """
    b, c, h, w = x.shape
    if (
        x.device.type != "cpu"
        or c < MIN_WIDE_CHANNELS
        or b * h * w > MAX_WIDE_POSITIONS
        or min(h, w) < 2
        or _cpu_autocast()
        or x.dtype != weight.dtype
        or not weight.is_contiguous()
    ):
        return F.conv2d(x, weight, bias, 1, 1)
    columns = F.unfold(x, kernel_size=3, padding=1)  # (B, C_in·9, H·W) in the weight's (C_in, kh, kw) order
    out = torch.matmul(weight.view(weight.shape[0], -1), columns).view(b, weight.shape[0], h, w)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


torch.fx.wrap("conv3x3")  # a leaf of FX graphs: its shape tests never see a Proxy


class Conv2d(nn.Conv2d):
    """The 3x3, stride-1, padding-1, bias-free ``nn.Conv2d`` of a :class:`ConvBlock`, run by :func:`conv3x3`.

    A subclass of ``nn.Conv2d`` with the same parameters, state-dict keys, hooks and class name
    (bayesian-torch's ``dnn_to_bnn`` picks a layer's Bayesian counterpart by its class name, so
    ``Conv2d`` still becomes ``Conv2dFlipout``).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``(B, C, H, W)`` maps (as ``nn.Conv2d`` does if its geometry was changed after construction)."""
        if (
            self.kernel_size != (3, 3)
            or self.stride != (1, 1)
            or self.padding != (1, 1)
            or self.dilation != (1, 1)
            or self.groups != 1
            or self.padding_mode != "zeros"
        ):
            return super().forward(x)
        return conv3x3(x, self.weight, self.bias)


class ConvBlock(_Pooled):
    """Two 3x3 conv + BN + ReLU layers followed by pooling (PANNs ``ConvBlock``).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        pool_size: Pooling kernel (``(1, 1)`` for none).
        pool_type: ``"avg"``, ``"max"`` or ``"avg+max"`` (the sum of both).
    """

    def __init__(
        self, in_channels: int, out_channels: int, pool_size: tuple[int, int] = (2, 2), pool_type: str = "avg"
    ) -> None:
        super().__init__(pool_size, pool_type)
        self.conv1 = Conv2d(in_channels, out_channels)
        self.conv2 = Conv2d(out_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``(B, C, T, F)`` feature maps."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return _pool(x, self.pool_size, self.pool_type)


class ConvBlock5x5(_Pooled):
    """One 5x5 conv + BN + ReLU followed by pooling (PANNs ``ConvBlock5x5``, used by Cnn6).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        pool_size: Pooling kernel.
        pool_type: ``"avg"``, ``"max"`` or ``"avg+max"``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, pool_size: tuple[int, int] = (2, 2), pool_type: str = "avg"
    ) -> None:
        super().__init__(pool_size, pool_type)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 5, 1, 2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``(B, C, T, F)`` feature maps."""
        return _pool(F.relu(self.bn1(self.conv1(x))), self.pool_size, self.pool_type)


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inplanes == outplanes:
        return None
    conv = nn.Conv2d(inplanes, outplanes, 1, 1, 0, bias=False)
    if stride == 2:
        return nn.Sequential(nn.AvgPool2d(2), conv, nn.BatchNorm2d(outplanes))
    return nn.Sequential(conv, nn.BatchNorm2d(outplanes))


class BasicBlock(nn.Module):
    """PANNs ``_ResnetBasicBlock``: 3x3-3x3 residual block; stride 2 is an average pool first.

    Args:
        inplanes: Input channels.
        planes: Output channels.
        stride: 1 or 2.
        block_dropout: Training-only dropout after the first conv (0.1 in PANNs; never MC).
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, block_dropout: float = 0.1) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(block_dropout)
        self.downsample = _downsample(inplanes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the residual block."""
        out = F.avg_pool2d(x, kernel_size=2) if self.stride == 2 else x
        out = self.dropout(F.relu(self.bn1(self.conv1(out))))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class Bottleneck(nn.Module):
    """PANNs ``_ResnetBottleneck`` (expansion 4): 1x1-3x3-1x1; stride 2 is an average pool first.

    Args:
        inplanes: Input channels.
        planes: Bottleneck width (output channels are ``4 * planes``).
        stride: 1 or 2.
        block_dropout: Training-only dropout after the 3x3 conv (0.1 in PANNs; never MC).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, block_dropout: float = 0.1) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(inplanes, planes, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.dropout = nn.Dropout(block_dropout)
        self.downsample = _downsample(inplanes, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the residual block."""
        out = F.avg_pool2d(x, kernel_size=2) if self.stride == 2 else x
        out = F.relu(self.bn1(self.conv1(out)))
        out = self.dropout(F.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNetTrunk(nn.Module):
    """PANNs ``_ResNet``: four stages of residual blocks, widths 64/128/256/512 (times expansion).

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        layers: Blocks per stage, e.g. ``(3, 4, 6, 3)``.
        inplanes: Channels entering the trunk.
        block_dropout: Training-only dropout inside each block.
    """

    def __init__(self, block: str, layers: tuple[int, ...], inplanes: int = 64, block_dropout: float = 0.1) -> None:
        super().__init__()
        cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[block]
        planes_per_stage = (64, 128, 256, 512)
        strides = (1, 2, 2, 2)
        for index, (planes, stride, count) in enumerate(zip(planes_per_stage, strides, layers), start=1):
            blocks = []
            for i in range(count):
                blocks.append(cls(inplanes, planes, stride if i == 0 else 1, block_dropout))
                inplanes = planes * cls.expansion
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
        self.out_channels = inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the four stages."""
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def mobilenet_v1_features(width: int = 32) -> nn.Sequential:
    """PANNs MobileNetV1 feature extractor (conv_bn + 13 depthwise-separable blocks).

    Args:
        width: Channels of the first layer (32 in PANNs); the rest scale with it.

    Returns:
        ``nn.Sequential`` whose indices match the original keys (``features.1.4.weight``, ...).
    """

    def conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(inp, oup, 3, 1, 1, bias=False), nn.AvgPool2d(stride), nn.BatchNorm2d(oup), nn.ReLU()
        )

    def conv_dw(inp: int, oup: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(inp, inp, 3, 1, 1, groups=inp, bias=False),
            nn.AvgPool2d(stride),
            nn.BatchNorm2d(inp),
            nn.ReLU(),
            nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
            nn.ReLU(),
        )

    w = width
    plan = (
        [
            (w, 2 * w, 1),
            (2 * w, 4 * w, 2),
            (4 * w, 4 * w, 1),
            (4 * w, 8 * w, 2),
            (8 * w, 8 * w, 1),
            (8 * w, 16 * w, 2),
        ]
        + [(16 * w, 16 * w, 1)] * 5
        + [(16 * w, 32 * w, 2), (32 * w, 32 * w, 1)]
    )
    return nn.Sequential(conv_bn(1, w, 2), *(conv_dw(i, o, s) for i, o, s in plan))


class GlobalPool(nn.Module):
    """PANNs clip-level pooling: mean over mel bins, then max plus mean over time.

    Maps ``(B, C, T, F)`` to ``(B, C)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool feature maps to one vector per clip."""
        x = torch.mean(x, dim=3)
        return torch.amax(x, dim=2) + torch.mean(x, dim=2)


class SegmentPool(nn.Module):
    """PANNs decision-level pooling (``Cnn14_DecisionLevelMax``): one feature vector per time step.

    Mean over mel bins, then a max pool plus an average pool over time (kernel 3, stride 1,
    padding 1), and the time axis moved before the channels so the head applies per segment.
    Maps ``(B, C, T, F)`` to ``(B, T, C)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool feature maps to one vector per segment."""
        x = torch.mean(x, dim=3)
        x = F.max_pool1d(x, kernel_size=3, stride=1, padding=1) + F.avg_pool1d(x, kernel_size=3, stride=1, padding=1)
        return x.transpose(1, 2)


class SegmentMax(nn.Module):
    """Clip-level output of a decision-level head: the maximum over segments.

    Maps segment logits ``(B, T, C)`` to clip logits ``(B, C)``. The sigmoid is monotonic, so
    ``sigmoid(max_t z_t) == max_t sigmoid(z_t)``: PANNs' ``clipwise_output``, exactly.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Take the maximum over the segment axis (dim 1)."""
        return torch.amax(x, dim=1)


@torch.no_grad()
def init_pann_weights(model: nn.Module) -> None:
    """PANNs initialisation: Xavier-uniform conv/linear weights, zero biases, unit BatchNorm.

    The last BatchNorm of every residual block starts at zero (PANNs' zero-init residual), so a
    fresh ResNet starts close to its identity paths.

    Args:
        model: The deterministic model to initialise in place.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.fill_(1.0)
            module.bias.zero_()
    for module in model.modules():
        if isinstance(module, Bottleneck):
            module.bn3.weight.zero_()
        elif isinstance(module, BasicBlock):
            module.bn2.weight.zero_()
