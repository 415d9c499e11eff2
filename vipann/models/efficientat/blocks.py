"""Building blocks of the EfficientAT MobileNets: conv-norm-activation, squeeze-excitation, inverted residuals.

Module and parameter names follow EfficientAT's (``features.<i>.block.<j>.0.weight``,
``block.<j>.conc_se_layers.0.fc1.weight``, ...), so a released state dict maps onto the trunk key for
key; only the classifier is renamed (``classifier.2`` -> ``fc1``, ``classifier.5`` ->
``fc_audioset``, see :mod:`vipann.zoo.efficientat`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "MOBILENET_V3_BLOCKS",
    "RESOLUTION_STAGE_ENDS",
    "BlockConfig",
    "ChannelSqueezeExcitation",
    "ConvNormAct",
    "InvertedResidual",
    "batch_norm",
    "last_channels",
    "make_divisible",
]

#: BatchNorm settings of every EfficientAT model (TensorFlow's MobileNetV3 defaults).
BN_EPS = 0.001
BN_MOMENTUM = 0.01


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (MobileNet's rule).

    The nearest multiple, at least ``divisor``, bumped up by one step when rounding down would
    lose more than 10 %.

    Args:
        value: The unrounded channel count (e.g. ``72 * width_mult``).
        divisor: The multiple.

    Returns:
        The channel count.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm2d with EfficientAT's ``eps`` and ``momentum``."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvNormAct(nn.Sequential):
    """``Conv2d`` (no bias) -> ``BatchNorm2d`` -> activation, as children ``0``, ``1`` (and ``2``).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size; the padding keeps the size (``(k - 1) // 2 * dilation``).
        stride: Stride.
        groups: Convolution groups (``in_channels`` for a depthwise convolution).
        dilation: Dilation.
        activation: Activation class (``nn.Hardswish``, ``nn.ReLU``) or None for none.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        activation: Callable[..., nn.Module] | None = nn.Hardswish,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
            batch_norm(out_channels),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class _SqueezeExcitation(nn.Module):
    """Channel squeeze-and-excitation: ``x * sigmoid(fc2(relu(fc1(mean_ft(x)))))``."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, channels)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = x.mean(dim=(2, 3))
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(scale))))
        return x * scale[:, :, None, None]


class ChannelSqueezeExcitation(nn.Module):
    """EfficientAT's squeeze-excitation block in its AudioSet configuration (channel SE, ``se_r = 4``).

    EfficientAT can run SE over channels, frequency and time concurrently and fuse the outputs;
    every released AudioSet model uses the channel dimension alone, for which the fusion (a maximum
    over one output) is the identity. The single SE sits in ``conc_se_layers.0`` as in the original.

    Args:
        channels: Channels of the input.
        reduction: Bottleneck reduction (``squeeze = make_divisible(channels // reduction, 8)``).

    References:
        J. Hu, L. Shen, G. Sun, "Squeeze-and-Excitation Networks", CVPR 2018.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.conc_se_layers = nn.ModuleList([_SqueezeExcitation(channels, make_divisible(channels // reduction, 8))])

    def forward(self, x: Tensor) -> Tensor:
        """Rescale each channel of ``x`` ``(B, C, F, T)`` by its excitation."""
        return self.conc_se_layers[0](x)


@dataclass(frozen=True)
class BlockConfig:
    """One inverted-residual block of the MobileNetV3 table, before width scaling.

    Attributes:
        in_channels: Input channels.
        kernel: Depthwise kernel size.
        expanded: Expanded (hidden) channels.
        out_channels: Output channels.
        use_se: Squeeze-excitation after the depthwise convolution (``mn`` only).
        hardswish: Hardswish activation (``"HS"``) instead of ReLU (``"RE"``).
        stride: Depthwise stride.
    """

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    hardswish: bool
    stride: int

    def scaled(self, width_mult: float) -> BlockConfig:
        """The block with every channel count scaled by ``width_mult`` (rounded to multiples of 8)."""
        return BlockConfig(
            make_divisible(self.in_channels * width_mult),
            self.kernel,
            make_divisible(self.expanded * width_mult),
            make_divisible(self.out_channels * width_mult),
            self.use_se,
            self.hardswish,
            self.stride,
        )

    @property
    def residual(self) -> bool:
        """Whether the block adds its input to its output."""
        return self.stride == 1 and self.in_channels == self.out_channels


#: MobileNetV3-Large's 15 inverted-residual blocks as EfficientAT configures them (strides (2, 2, 2, 2)).
MOBILENET_V3_BLOCKS: tuple[BlockConfig, ...] = (
    BlockConfig(16, 3, 16, 16, False, False, 1),
    BlockConfig(16, 3, 64, 24, False, False, 2),
    BlockConfig(24, 3, 72, 24, False, False, 1),
    BlockConfig(24, 5, 72, 40, True, False, 2),
    BlockConfig(40, 5, 120, 40, True, False, 1),
    BlockConfig(40, 5, 120, 40, True, False, 1),
    BlockConfig(40, 3, 240, 80, False, True, 2),
    BlockConfig(80, 3, 200, 80, False, True, 1),
    BlockConfig(80, 3, 184, 80, False, True, 1),
    BlockConfig(80, 3, 184, 80, False, True, 1),
    BlockConfig(80, 3, 480, 112, True, True, 1),
    BlockConfig(112, 3, 672, 112, True, True, 1),
    BlockConfig(112, 5, 672, 160, True, True, 2),
    BlockConfig(160, 5, 960, 160, True, True, 1),
    BlockConfig(160, 5, 960, 160, True, True, 1),
)

#: Blocks after which the feature-map resolution changes next (or the trunk ends): the MC-dropout
#: sites of ``conv_dropout`` (indices into :data:`MOBILENET_V3_BLOCKS`).
RESOLUTION_STAGE_ENDS = (2, 5, 11, 14)


class InvertedResidual(nn.Module):
    """MobileNetV3 inverted residual: expand (1x1) -> depthwise -> [SE] -> project (1x1), [+ input].

    Its layers are ``block.0``, ``block.1``, ... in that order (no expansion layer when the
    expanded width equals the input width), as in EfficientAT.

    Args:
        cfg: The (width-scaled) block configuration.
        se_reduction: Squeeze-excitation reduction (used when ``cfg.use_se``).

    References:
        A. Howard et al., "Searching for MobileNetV3", ICCV 2019.
    """

    def __init__(self, cfg: BlockConfig, se_reduction: int = 4) -> None:
        super().__init__()
        if cfg.stride not in (1, 2):
            raise ValueError(f"illegal stride {cfg.stride}; EfficientAT blocks use 1 or 2")
        act = nn.Hardswish if cfg.hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if cfg.expanded != cfg.in_channels:
            layers.append(ConvNormAct(cfg.in_channels, cfg.expanded, 1, activation=act))
        layers.append(
            ConvNormAct(cfg.expanded, cfg.expanded, cfg.kernel, cfg.stride, groups=cfg.expanded, activation=act)
        )
        if cfg.use_se:
            layers.append(ChannelSqueezeExcitation(cfg.expanded, se_reduction))
        layers.append(ConvNormAct(cfg.expanded, cfg.out_channels, 1, activation=None))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = cfg.residual
        self.out_channels = cfg.out_channels

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in, F, T)`` -> ``(B, out, F', T')``."""
        out = self.block(x)
        return out + x if self.use_res_connect else out


def last_channels(width_mult: float) -> tuple[int, int]:
    """Channels of the last 1x1 convolution (the embedding width) and of the classifier's hidden layer.

    Args:
        width_mult: The width multiplier.

    Returns:
        ``(6 * out_channels of the last block, make_divisible(1280 * width_mult))``.
    """
    last = MOBILENET_V3_BLOCKS[-1].scaled(width_mult).out_channels
    return 6 * last, make_divisible(1280 * width_mult)
