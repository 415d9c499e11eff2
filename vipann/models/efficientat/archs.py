"""The architectures of the EfficientAT family: MobileNetV3 (``mn``) and dynamic MobileNet (``dymn``) widths.

:class:`~vipann.models.efficientat.EfficientAT` builds every entry of :data:`ARCHITECTURES` in every
method; the registry names them ``<method>-<arch>`` (``drop-mn10``, ``detflip-dymn10``). The
trunks are built by :func:`mn_trunk` and :func:`dymn_trunk` from the one MobileNetV3 block table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from vipann.models.efficientat.blocks import (
    MOBILENET_V3_BLOCKS,
    ConvNormAct,
    InvertedResidual,
    last_channels,
)
from vipann.models.efficientat.dynamic import DynamicBlock
from vipann.models.efficientat.frontend import EfficientATFrontendConfig

__all__ = ["ARCHITECTURES", "KINDS", "EfficientATSpec", "dymn_trunk", "mn_trunk"]

KINDS = ("mn", "dymn")


@dataclass(frozen=True)
class EfficientATSpec:
    """How one EfficientAT architecture is built.

    Attributes:
        name: Architecture id used in model names (``mn10``).
        kind: ``"mn"`` (MobileNetV3 with squeeze-excitation) or ``"dymn"`` (dynamic blocks).
        width_mult: Width multiplier of every layer.
        original_name: EfficientAT's name of the AudioSet model (``mn10_as``).
        frontend: The front end the model is trained on.
    """

    name: str
    kind: str
    width_mult: float
    original_name: str
    frontend: EfficientATFrontendConfig = field(default_factory=EfficientATFrontendConfig)

    @property
    def embed_dim(self) -> int:
        """Channels of the last feature map: the pooled embedding (384 / 960 / 1920 for width 0.4 / 1 / 2)."""
        return last_channels(self.width_mult)[0]

    @property
    def hidden_dim(self) -> int:
        """Width of the classifier's hidden layer (fc1): ``make_divisible(1280 * width_mult)``."""
        return last_channels(self.width_mult)[1]

    @property
    def display(self) -> str:
        """Human-readable name for cards and messages."""
        what = "MobileNetV3" if self.kind == "mn" else "dynamic MobileNet (DyMN)"
        return f"EfficientAT {self.original_name} ({what}, width {self.width_mult:.1f})"


ARCHITECTURES: dict[str, EfficientATSpec] = {
    spec.name: spec
    for spec in (
        EfficientATSpec("mn04", "mn", 0.4, "mn04_as"),
        EfficientATSpec("mn10", "mn", 1.0, "mn10_as"),
        EfficientATSpec("mn20", "mn", 2.0, "mn20_as"),
        EfficientATSpec("dymn10", "dymn", 1.0, "dymn10_as"),
    )
}


def mn_trunk(width_mult: float, se_reduction: int = 4) -> nn.Sequential:
    """EfficientAT's MobileNetV3 ``features``: stem conv, the 15 inverted residuals, the last 1x1 conv.

    Args:
        width_mult: Width multiplier.
        se_reduction: Squeeze-excitation reduction.

    Returns:
        ``nn.Sequential`` of 17 modules (``features.0`` ... ``features.16``).
    """
    blocks = [b.scaled(width_mult) for b in MOBILENET_V3_BLOCKS]
    layers: list[nn.Module] = [ConvNormAct(1, blocks[0].in_channels, 3, 2)]
    layers += [InvertedResidual(b, se_reduction) for b in blocks]
    layers.append(ConvNormAct(blocks[-1].out_channels, last_channels(width_mult)[0], 1))
    return nn.Sequential(*layers)


def dymn_trunk(width_mult: float, temperature: float = 1.0) -> tuple[nn.Module, nn.ModuleList, nn.Module]:
    """EfficientAT's DyMN trunk: ``in_c`` (stem conv), ``layers`` (15 dynamic blocks), ``out_c`` (1x1 conv).

    Args:
        width_mult: Width multiplier.
        temperature: Softmax temperature of the dynamic convolutions (1 for AudioSet-trained weights).

    Returns:
        ``(in_c, layers, out_c)``.
    """
    blocks = [b.scaled(width_mult) for b in MOBILENET_V3_BLOCKS]
    in_c = ConvNormAct(1, blocks[0].in_channels, 3, 2)
    layers = nn.ModuleList(DynamicBlock(b, width_mult, temperature) for b in blocks)
    out_c = ConvNormAct(blocks[-1].out_channels, last_channels(width_mult)[0], 1)
    return in_c, layers, out_c
