"""The architectures of the PANN family: one :class:`ArchSpec` per network, and the four methods.

:class:`~vipann.models.PANN` builds every entry of :data:`ARCHITECTURES` in every method of
:data:`METHODS`; the registry (:mod:`vipann.zoo.registry`) names them ``<method>-<arch>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vipann.models.frontend import FrontendConfig

__all__ = ["ARCHITECTURES", "METHODS", "POOLINGS", "ArchSpec"]

METHODS = ("det", "drop", "flip", "detflip")
#: Head layouts: one vector per clip, or per-segment decisions whose maximum is the clip's.
POOLINGS = ("clip", "decision_max")


@dataclass(frozen=True)
class ArchSpec:
    """How one architecture of the family is built.

    Attributes:
        name: Architecture id used in model names (``resnet54``).
        family: ``"cnn"``, ``"cnn5x5"``, ``"resnet"`` or ``"mobilenetv1"``.
        widths: Conv-block widths (cnn families).
        pools: Pool size of each conv block (cnn families).
        block: Residual block type (``"basic"``/``"bottleneck"``) for the resnet family.
        layers: Residual blocks per stage for the resnet family.
        embed_dim: Width of the pooled vector and of fc1.
        conv_dropout: Dropout after conv stages (the MC sites of ``drop``); 0 disables them.
        frontend: Front-end configuration the architecture is defined with.
        original_class: Class name in PANNs ``pytorch/models.py`` (``None`` for vipann-only nets).
        pooling: ``"clip"`` (global pooling, then fc1 and the classifier on one vector per clip)
            or ``"decision_max"`` (fc1 and the classifier per segment, clip logits = maximum over
            segments; PANNs ``Cnn14_DecisionLevelMax``).
    """

    @property
    def time_reduction(self) -> int:
        """Factor by which the trunk shrinks the time axis (frames per output step)."""
        if self.family in ("cnn", "cnn5x5"):
            return math.prod(p[0] for p in self.pools)
        return 32  # resnet: conv_block1 (2) x three strided stages (8) x pool (2); mobilenetv1: 2**5

    name: str
    family: str
    embed_dim: int
    widths: tuple[int, ...] = ()
    pools: tuple[tuple[int, int], ...] = ()
    block: str = ""
    layers: tuple[int, ...] = ()
    conv_dropout: float = 0.2
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    original_class: str | None = None
    pooling: str = "clip"


_P2 = (2, 2)
ARCHITECTURES: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec("cnn6", "cnn5x5", 512, widths=(64, 128, 256, 512), pools=(_P2,) * 4, original_class="Cnn6"),
        ArchSpec("cnn10", "cnn", 512, widths=(64, 128, 256, 512), pools=(_P2,) * 4, original_class="Cnn10"),
        ArchSpec(
            "cnn14",
            "cnn",
            2048,
            widths=(64, 128, 256, 512, 1024, 2048),
            pools=(_P2,) * 5 + ((1, 1),),
            original_class="Cnn14",
        ),
        # Cnn14's trunk and tensors with PANNs' sound-event-detection head (Cnn14_DecisionLevelMax).
        ArchSpec(
            "cnn14-dlmax",
            "cnn",
            2048,
            widths=(64, 128, 256, 512, 1024, 2048),
            pools=(_P2,) * 5 + ((1, 1),),
            original_class="Cnn14_DecisionLevelMax",
            pooling="decision_max",
        ),
        ArchSpec("resnet22", "resnet", 2048, block="basic", layers=(2, 2, 2, 2), original_class="ResNet22"),
        ArchSpec("resnet38", "resnet", 2048, block="basic", layers=(3, 4, 6, 3), original_class="ResNet38"),
        ArchSpec("resnet54", "resnet", 2048, block="bottleneck", layers=(3, 4, 6, 3), original_class="ResNet54"),
        ArchSpec("mobilenetv1", "mobilenetv1", 1024, conv_dropout=0.0, original_class="MobileNetV1"),
        # The embedded demo zoo's network: four conv blocks (8-64 channels) on 32 mels at 16 kHz
        # (~21 M MACs per 2-s clip), small enough for Monte-Carlo evaluation and transfer learning
        # on 2 CPU cores within the demo's minutes, and to ship inside the package.
        ArchSpec(
            "demo",
            "cnn",
            64,
            widths=(8, 16, 32, 64),
            pools=(_P2,) * 4,
            frontend=FrontendConfig(
                sample_rate=16000, window_size=512, hop_size=160, mel_bins=32, fmin=50.0, fmax=8000.0
            ),
        ),
        # A real member of the family, small enough to run a 1 s clip in milliseconds: the whole
        # registry is testable on CPU in seconds.
        ArchSpec(
            "tiny",
            "cnn",
            16,
            widths=(8, 16),
            pools=(_P2, _P2),
            frontend=FrontendConfig(
                sample_rate=16000, window_size=512, hop_size=160, mel_bins=32, fmin=50.0, fmax=8000.0
            ),
        ),
    )
}
