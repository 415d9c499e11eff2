"""Model families. ``PANN`` builds every PANN architecture in every flavour."""

from vipann.models.pann import ARCHITECTURES, METHODS, PANN, ArchSpec

__all__ = ["ARCHITECTURES", "METHODS", "PANN", "ArchSpec"]
