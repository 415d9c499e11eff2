"""Registry data of the EfficientAT models: the GitHub release files and one entry per method and architecture.

This module holds data only (it imports nothing from the registry, which imports it):
:data:`EFFICIENTAT_RELEASE` records, per architecture, the release file, its URL and its reported
AudioSet mAP; :func:`efficientat_entry_fields` gives the :class:`~vipann.PretrainedCfg` fields of
``det-``, ``drop-``, ``flip-`` and ``detflip-`` ``mn04``/``mn10``/``mn20``/``dymn10``, which
:mod:`vipann.zoo.registry` registers.

EfficientAT publishes no checksums for its release files: :data:`CHECKSUM_NOTE` says so in every
entry's provenance, ``sha256`` is None in every :class:`ReleaseFile`, and a downloader records the
sha256 of the first download (and refuses a later file that differs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vipann.models.efficientat import ARCHITECTURES, METHODS

__all__ = [
    "CHECKSUM_NOTE",
    "EFFICIENTAT_LICENSE",
    "EFFICIENTAT_RELEASE",
    "EFFICIENTAT_RELEASE_URL",
    "EFFICIENTAT_REPOSITORY",
    "ReleaseFile",
    "efficientat_entry_fields",
    "is_efficientat_file",
]

EFFICIENTAT_REPOSITORY = "https://github.com/fschmid56/EfficientAT"
EFFICIENTAT_RELEASE_URL = f"{EFFICIENTAT_REPOSITORY}/releases/download/v0.0.1/"
#: The licence of EfficientAT's code and released weights.
EFFICIENTAT_LICENSE = "mit"
CHECKSUM_NOTE = "no published checksum; the first download's sha256 is recorded"
_MAP_SOURCE = "EfficientAT release (file name / README table; Schmid et al. 2023, 2024)"


@dataclass(frozen=True)
class ReleaseFile:
    """One EfficientAT GitHub release file.

    Attributes:
        arch: vipann architecture id.
        filename: Release file name.
        url: Download URL.
        audioset_map: AudioSet mAP the release reports.
        sha256: Published checksum; None for every EfficientAT file (see :data:`CHECKSUM_NOTE`).
    """

    arch: str
    filename: str
    audioset_map: float
    sha256: str | None = None

    @property
    def url(self) -> str:
        """The download URL."""
        return EFFICIENTAT_RELEASE_URL + self.filename


EFFICIENTAT_RELEASE: dict[str, ReleaseFile] = {
    f.arch: f
    for f in (
        ReleaseFile("mn04", "mn04_as_mAP_432.pt", 0.432),
        ReleaseFile("mn10", "mn10_as_mAP_471.pt", 0.471),
        ReleaseFile("mn20", "mn20_as_mAP_478.pt", 0.478),
        ReleaseFile("dymn10", "dymn10_as.pt", 0.477),
    )
}

_DEFAULT_SAMPLES = {"det": 1, "drop": 30, "flip": 30, "detflip": 30}
_TAGS = ("audio-classification", "audio-tagging", "uncertainty", "efficientat", "mobilenet", "audioset")


def is_efficientat_file(filename: str | None) -> bool:
    """Whether ``filename`` is one of the EfficientAT release files the registry knows."""
    return filename is not None and any(f.filename == filename for f in EFFICIENTAT_RELEASE.values())


def _texts(method: str, arch: str, release: ReleaseFile) -> tuple[str, str]:
    spec = ARCHITECTURES[arch]
    origin = (
        f"EfficientAT {spec.original_name} AudioSet checkpoint {release.filename} ({release.url}; MIT licence; "
        f"{CHECKSUM_NOTE})"
    )
    if method == "det":
        return f"{origin}, converted unchanged.", f"{spec.display}, deterministic"
    if method == "drop":
        return (
            f"{origin}; same weights as det-{arch}, with the classifier's dropout (p=0.2) kept active for "
            "MC-dropout sampling.",
            f"{spec.display}, MC dropout (p=0.2 before the classifier)",
        )
    if method == "detflip":
        return (
            f"{origin}; fc1 and classifier converted to Flipout with MOPED (delta 0.5), backbone deterministic.",
            f"{spec.display}, deterministic backbone + Flipout head (MOPED)",
        )
    return (
        f"{origin}; every convolution and linear layer (squeeze-excitation and dynamic layers included) "
        "converted to Flipout with MOPED (delta 0.5), not further trained.",
        f"{spec.display}, all-Flipout by MOPED (untrained variances)",
    )


def efficientat_entry_fields() -> list[dict[str, Any]]:
    """The :class:`~vipann.PretrainedCfg` fields of every EfficientAT registry entry.

    Returns:
        One dict per ``<method>-<arch>``, for every method and every released architecture.
    """
    entries = []
    for arch, release in EFFICIENTAT_RELEASE.items():
        spec = ARCHITECTURES[arch]
        for method in METHODS:
            provenance, description = _texts(method, arch, release)
            det = method == "det"
            entries.append(
                {
                    "name": f"{method}-{arch}",
                    "arch": arch,
                    "method": method,
                    "num_classes": 527,
                    "label_set": "audioset",
                    "multilabel": True,
                    "sample_rate": spec.frontend.sample_rate,
                    "clip_seconds": 10.0,
                    "frontend": spec.frontend.to_dict(),
                    "default_num_samples": _DEFAULT_SAMPLES[method],
                    "license": EFFICIENTAT_LICENSE,
                    "provenance": provenance,
                    "weights": "convert",
                    "description": description,
                    "metrics": {"audioset": {"mAP": release.audioset_map}} if det else {},
                    "metrics_source": _MAP_SOURCE if det else "",
                    "source_checkpoint": release.filename,
                    "hf_hub_id": f"vipann/{method}-{arch}",
                    "tags": (*_TAGS, *(() if det else ("bayesian",))),
                }
            )
    return entries
