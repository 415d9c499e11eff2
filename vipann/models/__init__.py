"""Model families: ``PANN`` and ``EfficientAT`` build every architecture of their family in every flavour.

:mod:`vipann.models.families` maps an architecture id to its family's class.
"""

from vipann.models.efficientat import EfficientAT
from vipann.models.pann import ARCHITECTURES, METHODS, PANN, ArchSpec

__all__ = ["ARCHITECTURES", "METHODS", "PANN", "ArchSpec", "EfficientAT"]
