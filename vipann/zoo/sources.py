"""Where the original checkpoints of the zoo are published: file names, URLs, sizes, checksums.

The PANNs checkpoints are on Zenodo (record 3987831, Kong et al. 2020) with published md5 sums; the
registry's ``det-*`` and ``drop-*`` entries are exact conversions of them, built on first use
(:mod:`vipann.zoo.release`). ``VIPANN_PANNS_ENDPOINT`` replaces the base URL
``https://zenodo.org`` (a mirror, or a test server), as ``HF_ENDPOINT`` does for the Hub.

VI-PANN's trained Flipout ResNet54, ``flipout.pth``, is shared only through a Box folder page: there
is no direct link and no published checksum, so it cannot be fetched, only imported by hand
(``vipann convert vipann flipout.pth`` or ``vipann zoo import flipout.pth``).
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_PANNS_ENDPOINT",
    "PANNS_FILES",
    "PANNS_RECORD",
    "PANNS_ZENODO",
    "VIPANN_BOX_PAGE",
    "VIPANN_FLIPOUT",
    "SourceFile",
    "panns_endpoint",
]

#: Base URL of the PANNs release; ``VIPANN_PANNS_ENDPOINT`` replaces it.
DEFAULT_PANNS_ENDPOINT = "https://zenodo.org"
PANNS_RECORD = "3987831"
#: The Zenodo record's page.
PANNS_ZENODO = f"{DEFAULT_PANNS_ENDPOINT}/records/{PANNS_RECORD}"
#: The Box folder page where VI-PANN shares ``deterministic.pth`` and ``flipout.pth``.
VIPANN_BOX_PAGE = "https://nps.box.com/s/6ngybfd8b5jh5j2yd1mt1jz07kuvwhgq"
_PANNS_PUBLISHER = f"PANNs release (Kong et al. 2020), Zenodo record {PANNS_RECORD}"


def panns_endpoint() -> str:
    """The base URL PANNs files are downloaded from: ``$VIPANN_PANNS_ENDPOINT`` or ``https://zenodo.org``."""
    return (os.environ.get("VIPANN_PANNS_ENDPOINT") or DEFAULT_PANNS_ENDPOINT).rstrip("/")


@dataclass(frozen=True)
class SourceFile:
    """One original checkpoint file as its authors publish it.

    Attributes:
        filename: The published file name (``Cnn14_mAP=0.431.pth``).
        page: The human-readable page the file is listed on.
        publisher: Who publishes it, in one phrase.
        md5: Published MD5 checksum (hex), or None when none is published.
        size: Size in bytes where known, or None.
        sha256: Published SHA-256 (hex) where known, or None.
        path: URL path (with query) below the endpoint for a direct download; None when the file
            has no direct link (a share page only).
        metrics: ``{dataset: {metric: value}}`` the release reports for the file.
        endpoint: Base URL ``path`` is below (the publisher's host).
        endpoint_variable: Environment variable that replaces ``endpoint`` (a mirror, or a test server).
        first_use: For a file published without any checksum (EfficientAT's GitHub release): the
            SHA-256 of its first download is recorded in the cache and every later file must match it.
    """

    filename: str
    page: str
    publisher: str
    md5: str | None = None
    size: int | None = None
    sha256: str | None = None
    path: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    endpoint: str = DEFAULT_PANNS_ENDPOINT
    endpoint_variable: str = "VIPANN_PANNS_ENDPOINT"
    first_use: bool = False

    @property
    def published_checksum(self) -> bool:
        """Whether the publisher gives a checksum (MD5 or SHA-256) for the file."""
        return self.md5 is not None or self.sha256 is not None

    @property
    def downloadable(self) -> bool:
        """Whether the file has a direct URL and a checksum to verify it (published, or recorded on first use)."""
        return self.path is not None and (self.published_checksum or self.first_use)

    @property
    def url(self) -> str | None:
        """The download URL at the publisher's endpoint (what to fetch on another machine), or None."""
        return None if self.path is None else self.endpoint + self.path

    def url_at(self, endpoint: str | None = None) -> str | None:
        """The download URL at ``endpoint`` (default: ``$endpoint_variable`` or the publisher's), or None."""
        if self.path is None:
            return None
        base = endpoint or os.environ.get(self.endpoint_variable) or self.endpoint
        return base.rstrip("/") + self.path

    @property
    def checksum(self) -> str:
        """The published checksum as ``md5:<hex>`` (or ``sha256:<hex>``), or what stands in for it."""
        if self.md5:
            return f"md5:{self.md5}"
        if self.sha256:
            return f"sha256:{self.sha256}"
        return "none published; the first download's sha256 is recorded" if self.first_use else "none published"

    def validate(self) -> list[str]:
        """Problems with the record (empty when it is consistent)."""
        problems = []
        for name, value, length in (("md5", self.md5, 32), ("sha256", self.sha256, 64)):
            if value is not None and (len(value) != length or any(c not in "0123456789abcdef" for c in value)):
                problems.append(f"source {name} must be {length} lower-case hex digits")
        if self.size is not None and self.size <= 0:
            problems.append("source size must be positive")
        if self.path is not None and not self.path.startswith("/"):
            problems.append("source path must start with '/'")
        return problems


def _zenodo(filename: str, md5: str, size: int | None = None, sha256: str | None = None) -> SourceFile:
    quoted = urllib.parse.quote(filename, safe="")
    map_ = float(filename.rsplit("mAP=", 1)[1].removesuffix(".pth"))
    return SourceFile(
        filename=filename,
        page=PANNS_ZENODO,
        publisher=_PANNS_PUBLISHER,
        md5=md5,
        size=size,
        sha256=sha256,
        path=f"/records/{PANNS_RECORD}/files/{quoted}?download=1",
        metrics={"audioset": {"mAP": map_}},
    )


#: The PANNs release file of every architecture vipann implements, with its published md5 (and
#: size / SHA-256 where they are known).
PANNS_FILES: dict[str, SourceFile] = {
    "cnn6": _zenodo("Cnn6_mAP=0.343.pth", "e25e26b84585b14c7754c91e48efc9be"),
    "cnn10": _zenodo("Cnn10_mAP=0.380.pth", "bfb1f1f9968938fa8ef4012b8471f5f6", 25_237_595),
    "cnn14": _zenodo("Cnn14_mAP=0.431.pth", "541141fa2ee191a88f24a3219fff024e", 327_428_481),
    "cnn14-dlmax": _zenodo(
        "Cnn14_DecisionLevelMax_mAP=0.385.pth",
        "70539c43c18b6a289b3199c503a82c5a",
        327_428_481,
        "dd3b4043a87d4ec13df8082c0fcfee3fb5084151808e47e060987a95eabdd142",
    ),
    "resnet22": _zenodo("ResNet22_mAP=0.430.pth", "cf36d413096793c4e15dc752a3abd599"),
    "resnet38": _zenodo("ResNet38_mAP=0.434.pth", "bf12f36aaabac4e0855e22d3c3239c1b"),
    "resnet54": _zenodo("ResNet54_mAP=0.429.pth", "4f1f1406d37a29e2379916885e18c5f3"),
    "mobilenetv1": _zenodo("MobileNetV1_mAP=0.389.pth", "a419303e1c88aa1b9d2ac3811563d371"),
}

#: VI-PANN's AudioSet Flipout ResNet54: a Box folder page, no direct link, no published checksum.
VIPANN_FLIPOUT = SourceFile(
    filename="flipout.pth",
    page=VIPANN_BOX_PAGE,
    publisher="VI-PANN (Fischer et al. 2024), shared on Box",
    metrics={"audioset": {"mAP": 0.415, "AUC": 0.972, "d_prime": 2.708}},
)
