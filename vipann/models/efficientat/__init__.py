"""EfficientAT's MobileNets (``mn04``, ``mn10``, ``mn20``) and dynamic MobileNet (``dymn10``) in four methods.

* :mod:`~vipann.models.efficientat.frontend`: the Kaldi-mel front end (no torchaudio).
* :mod:`~vipann.models.efficientat.blocks`: conv-norm-activation, squeeze-excitation, inverted residuals.
* :mod:`~vipann.models.efficientat.dynamic`: dynamic convolution (and its Flipout form), dynamic ReLU,
  coordinate attention.
* :mod:`~vipann.models.efficientat.archs`: the architectures and their trunks.
* :mod:`~vipann.models.efficientat.model`: :class:`EfficientAT`, the network in any method.
* :mod:`~vipann.models.efficientat.macs`: EfficientAT's own MAC-counting convention.

EfficientAT (https://github.com/fschmid56/EfficientAT) is MIT-licensed; this is vipann's own
implementation, equal to the original's outputs within float32 rounding.
"""

from vipann.models.efficientat.archs import ARCHITECTURES, EfficientATSpec
from vipann.models.efficientat.frontend import EfficientATFrontendConfig, KaldiLogMelFrontend, kaldi_mel_banks
from vipann.models.efficientat.model import METHODS, EfficientAT

__all__ = [
    "ARCHITECTURES",
    "METHODS",
    "EfficientAT",
    "EfficientATFrontendConfig",
    "EfficientATSpec",
    "KaldiLogMelFrontend",
    "kaldi_mel_banks",
]
