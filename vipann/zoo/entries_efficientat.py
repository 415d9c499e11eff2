"""Registry data of the EfficientAT models: the GitHub release files and one entry per method and architecture.

This module holds data only (it imports nothing from the registry, which imports it):
:data:`EFFICIENTAT_RELEASE` records, per architecture, the release file, its URL and its reported
AudioSet mAP; :func:`efficientat_entry_fields` gives the :class:`~vipann.PretrainedCfg` fields of
``det-``, ``drop-``, ``flip-`` and ``detflip-`` ``mn04``/``mn10``/``mn20``/``dymn10``, which
:mod:`vipann.zoo.registry` registers.

EfficientAT publishes no checksums for its release files: :data:`CHECKSUM_NOTE` says so in every
entry's provenance, and every :class:`~vipann.zoo.sources.SourceFile` here is ``first_use``: the zoo's
downloader (:mod:`vipann.zoo.release`) records the sha256 of the first download and refuses a later
file that differs. ``det-`` and ``drop-`` entries are exact conversions, built on first use
(``weights="release"``); no VI-trained EfficientAT weights exist, so ``flip-`` and ``detflip-`` are
untrained MOPED models, built only on request (``weights="moped"``), as for PANNs.
``VIPANN_EFFICIENTAT_ENDPOINT`` replaces ``https://github.com`` (a mirror, or a test server).
"""

from __future__ import annotations

from typing import Any

from vipann.models.efficientat import ARCHITECTURES, METHODS
from vipann.zoo.sources import SourceFile

__all__ = [
    "CHECKSUM_NOTE",
    "EFFICIENTAT_LICENSE",
    "EFFICIENTAT_RELEASE",
    "EFFICIENTAT_RELEASE_URL",
    "EFFICIENTAT_REPOSITORY",
    "efficientat_entry_fields",
    "is_efficientat_file",
]

EFFICIENTAT_REPOSITORY = "https://github.com/fschmid56/EfficientAT"
EFFICIENTAT_RELEASE_URL = f"{EFFICIENTAT_REPOSITORY}/releases/download/v0.0.1/"
#: The licence of EfficientAT's code and released weights.
EFFICIENTAT_LICENSE = "mit"
CHECKSUM_NOTE = "no published checksum; the first download's sha256 is recorded"
_MAP_SOURCE = "EfficientAT release (file name / README table; Schmid et al. 2023, 2024)"


_RELEASE_PATH = "/fschmid56/EfficientAT/releases/download/v0.0.1/"


def _release(filename: str, audioset_map: float) -> SourceFile:
    return SourceFile(
        filename=filename,
        page=f"{EFFICIENTAT_REPOSITORY}/releases/tag/v0.0.1",
        publisher="EfficientAT release v0.0.1 (Schmid et al.), GitHub",
        path=_RELEASE_PATH + filename,
        metrics={"audioset": {"mAP": audioset_map}},
        endpoint="https://github.com",
        endpoint_variable="VIPANN_EFFICIENTAT_ENDPOINT",
        first_use=True,
    )


#: The release file of every EfficientAT architecture, with the AudioSet mAP the release reports.
EFFICIENTAT_RELEASE: dict[str, SourceFile] = {
    "mn04": _release("mn04_as_mAP_432.pt", 0.432),
    "mn10": _release("mn10_as_mAP_471.pt", 0.471),
    "mn20": _release("mn20_as_mAP_478.pt", 0.478),
    "dymn10": _release("dymn10_as.pt", 0.477),
}

_DEFAULT_SAMPLES = {"det": 1, "drop": 30, "flip": 30, "detflip": 30}
_TAGS = ("audio-classification", "audio-tagging", "uncertainty", "efficientat", "mobilenet", "audioset")


def is_efficientat_file(filename: str | None) -> bool:
    """Whether ``filename`` is one of the EfficientAT release files the registry knows."""
    return filename is not None and any(f.filename == filename for f in EFFICIENTAT_RELEASE.values())


def _texts(method: str, arch: str, release: SourceFile) -> tuple[str, str]:
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
            f"No VI-trained weights of EfficientAT are published. On request only: {origin}, fc1 and classifier "
            "converted to Flipout by MOPED (delta 0.5), not trained; backbone deterministic.",
            f"{spec.display}, deterministic backbone + Flipout head (no trained weights published; MOPED on request)",
        )
    return (
        f"No VI-trained weights of EfficientAT are published. On request only: {origin}, every convolution "
        "and linear layer (squeeze-excitation and dynamic layers included) converted to Flipout by MOPED "
        "(delta 0.5), not trained.",
        f"{spec.display}, all-Flipout (no trained weights published; MOPED on request)",
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
            exact = method in ("det", "drop")
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
                    "weights": "release" if exact else "moped",
                    "source": release,
                    "conversion": "efficientat",
                    "result": "exact" if exact else "not-public",
                    "description": description,
                    "metrics": {"audioset": dict(release.metrics["audioset"])} if det else {},
                    "metrics_source": _MAP_SOURCE if det else "",
                    "source_checkpoint": release.filename,
                    "hf_hub_id": f"vipann/{method}-{arch}",
                    "tags": (*_TAGS, *(() if det else ("bayesian",))),
                }
            )
    return entries
