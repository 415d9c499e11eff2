"""The model registry: one name and one metadata entry per checkpoint vipann knows.

Names are ``<method>-<arch>[.<tag>]`` (``flip-resnet54``, ``drop-cnn14``,
``flip-resnet54.esc50``); the method ends at the first ``-``, so an architecture id may contain
one (``det-cnn14-dlmax``: PANNs ``Cnn14_DecisionLevelMax``). Everything shown to users about a
model — Hub repository, model card, README zoo table, ``vipann list`` — is derived from its
:class:`PretrainedCfg`; nothing is typed twice.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from vipann.datasets.labels import get_labels
from vipann.models.families import all_architectures
from vipann.models.pann import METHODS
from vipann.zoo.entries import DEFAULT_TAGS, HUB_ORG, VIPANN_CHECKPOINTS, all_entries  # noqa: F401 (re-exported)
from vipann.zoo.sources import PANNS_FILES, PANNS_ZENODO, SourceFile  # noqa: F401 (re-exported)

__all__ = [
    "HUB_ORG",
    "WEIGHTS",
    "PretrainedCfg",
    "get_pretrained_cfg",
    "is_model",
    "list_models",
    "register_model",
    "split_model_name",
    "zoo_table",
]

# Official PANNs release file per architecture and its AudioSet eval mAP (from the file name).
PANNS_RELEASE: dict[str, tuple[str, float]] = {
    arch: (source.filename, source.metrics["audioset"]["mAP"]) for arch, source in PANNS_FILES.items()
}

# Where panns-inference keeps a release file under another name (its SoundEventDetection default).
PANNS_INFERENCE_FILES: dict[str, str] = {"cnn14-dlmax": "Cnn14_DecisionLevelMax.pth"}

_LICENSES = ("mit", "cc-by-4.0", "cc-by-nc-3.0", "other")
#: How an entry's weights load today (the README zoo table says it in words).
WEIGHTS: dict[str, str] = {
    "hub": "from the Hub",
    "release": "from the original release, converted on first use",
    "package": "ships with vipann",
    "vipann": "needs VI-PANN's `flipout.pth`",
    "moped": "no trained weights published (untrained MOPED on request)",
    "none": "architecture only",
}
_CONVERSIONS = ("panns", "vipann", "efficientat")
_RESULTS = ("exact", "not-public")


@dataclass(frozen=True)
class PretrainedCfg:
    """Metadata of one registered model.

    Attributes:
        name: ``<method>-<arch>[.<tag>]``.
        arch: Architecture id of any family (:func:`vipann.models.families.all_architectures`).
        method: ``det``, ``drop``, ``flip`` or ``detflip``.
        tag: Optional tag (dataset a model was fine-tuned on), or None.
        num_classes: Number of outputs.
        label_set: Name of a shipped label set (:func:`vipann.datasets.labels.get_labels`) or None for
            generic ``class_<i>`` names.
        multilabel: True for sigmoid outputs (AudioSet), False for a softmax classifier.
        sample_rate: Sample rate (Hz) the weights are valid at.
        clip_seconds: Clip length the model was trained on; longer audio is windowed.
        frontend: Front-end parameters (:class:`vipann.models.frontend.FrontendConfig` as a dict).
        default_num_samples: Recommended number of Monte-Carlo samples (1 for ``det``).
        metrics: ``{dataset: {metric: value}}`` reported for these weights.
        metrics_source: Where the metrics come from.
        license: Licence of the weights (a Hub licence id).
        provenance: How the weights are made.
        source_checkpoint: Original checkpoint file the weights are converted from, if any.
        weights: How the weights load today (:data:`WEIGHTS`): ``"hub"`` (published on the Hub),
            ``"release"`` (the original release file is downloaded, verified and converted on first
            use), ``"vipann"`` (needs VI-PANN's ``flipout.pth``, which has no direct link),
            ``"moped"`` (no trained weights are published; an untrained MOPED model is built only
            on request), ``"package"`` (shipped inside vipann: the demo zoo) or ``"none"``
            (architecture only).
        hf_hub_id: Hub repository id (``org/name``).
        model_args: Extra :class:`vipann.models.PANN` constructor arguments.
        description: One line for tables.
        tags: Hub tags.
        label_names: Explicit class names (overrides ``label_set``), e.g. for a fine-tuned model.
        temperature: Temperature that :func:`vipann.predict` divides every sample's logits by (a
            float, or one per class for multi-label models), fitted with
            :func:`vipann.calibration.calibrate`; None for no scaling.
        source: The original file the weights are made from (:class:`~vipann.zoo.sources.SourceFile`:
            URL, file name, size, checksum), or None.
        conversion: How ``source`` becomes this entry: ``"panns"``
            (:func:`vipann.zoo.convert.from_panns_checkpoint` under this name) or ``"vipann"``
            (:func:`vipann.zoo.convert.from_vipann_checkpoint`) or ``"efficientat"``
            (:func:`vipann.zoo.convert.from_efficientat_checkpoint`); None without a source.
        result: What the conversion gives: ``"exact"`` (the published weights, unchanged) or
            ``"not-public"`` (the trained weights of this entry are not in any public file); None
            without a source.
    """

    name: str
    arch: str
    method: str
    num_classes: int
    label_set: str | None
    multilabel: bool
    sample_rate: int
    clip_seconds: float
    frontend: dict[str, Any]
    default_num_samples: int
    license: str
    provenance: str
    weights: str
    description: str
    tag: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics_source: str = ""
    source_checkpoint: str | None = None
    hf_hub_id: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = DEFAULT_TAGS
    label_names: tuple[str, ...] = ()
    temperature: float | tuple[float, ...] | None = None
    source: SourceFile | None = None
    conversion: str | None = None
    result: str | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names in output order."""
        if self.label_names:
            return tuple(self.label_names)
        if self.label_set is None:
            return tuple(f"class_{i}" for i in range(self.num_classes))
        return get_labels(self.label_set)

    @property
    def published(self) -> bool:
        """Whether the weights can be downloaded from the Hub."""
        return self.weights == "hub"

    @property
    def available(self) -> bool:
        """Whether ``from_pretrained(name)`` works out of the box (Hub, original release or the package)."""
        return self.weights in ("hub", "release", "package")

    def convert_command(self) -> str | None:
        """The ``vipann convert`` command that builds these weights locally, if there is one."""
        if self.source_checkpoint is None:
            return None
        kind = self.conversion or (
            "vipann" if self.source_checkpoint in ("flipout.pth", "deterministic.pth") else "panns"
        )
        return f"vipann convert {kind} {self.source_checkpoint} --name {self.name} --out ./{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field (``source`` as a dict)."""
        out = asdict(self)
        if self.source is not None:
            out["source"]["url"] = self.source.url
        out["tags"] = list(self.tags)
        out["label_names"] = list(self.label_names)
        return out

    def with_classes(self, num_classes: int, labels: tuple[str, ...] | None = None) -> PretrainedCfg:
        """A copy for a model whose classifier has ``num_classes`` outputs.

        The metrics are dropped (they belong to the original classifier).

        Args:
            num_classes: The new number of outputs.
            labels: Optional class names (``num_classes`` of them).

        Returns:
            The new entry (``self`` when nothing changes).

        Raises:
            ValueError: If ``labels`` does not have ``num_classes`` names.
        """
        if labels is not None and len(labels) != num_classes:
            raise ValueError(f"{len(labels)} label names given for {num_classes} classes")
        if num_classes == self.num_classes and labels is None:
            return self
        return replace(
            self,
            num_classes=int(num_classes),
            label_set=None,
            label_names=tuple(labels or ()),
            metrics={},
            metrics_source="",
            temperature=None,
        )

    def validate(self) -> None:
        """Check the entry against the schema.

        Raises:
            ValueError: Naming the first field that is wrong.
        """
        method, arch, tag = split_model_name(self.name)
        problems = []
        if (method, arch, tag) != (self.method, self.arch, self.tag):
            problems.append(f"name {self.name!r} does not match method/arch/tag fields")
        if self.arch not in all_architectures():
            problems.append(f"unknown arch {self.arch!r}")
        if self.method not in METHODS:
            problems.append(f"unknown method {self.method!r}")
        if self.num_classes < 1:
            problems.append("num_classes must be >= 1")
        if self.label_names and len(self.label_names) != self.num_classes:
            problems.append(f"{len(self.label_names)} label_names for {self.num_classes} classes")
        if self.label_set is not None and len(get_labels(self.label_set)) != self.num_classes:
            problems.append(f"label set {self.label_set!r} does not have {self.num_classes} names")
        if self.sample_rate != self.frontend.get("sample_rate"):
            problems.append("sample_rate differs from frontend['sample_rate']")
        if self.clip_seconds <= 0:
            problems.append("clip_seconds must be positive")
        if self.default_num_samples < 1 or (self.method == "det" and self.default_num_samples != 1):
            problems.append("default_num_samples must be >= 1 (exactly 1 for det)")
        if self.license not in _LICENSES:
            problems.append(f"license must be one of {_LICENSES}")
        problems += self._source_problems()
        if not self.provenance or not self.description:
            problems.append("provenance and description must be non-empty")
        for dataset, values in self.metrics.items():
            if not values or not all(isinstance(v, (int, float)) for v in values.values()):
                problems.append(f"metrics[{dataset!r}] must map metric names to numbers")
        if self.metrics and not self.metrics_source:
            problems.append("metrics need a metrics_source")
        if problems:
            raise ValueError(f"registry entry {self.name!r}: " + "; ".join(problems))

    def _source_problems(self) -> list[str]:
        problems = []
        if self.weights not in WEIGHTS:
            problems.append(f"weights must be one of {tuple(WEIGHTS)}")
        if self.weights in ("hub", "release", "vipann", "moped") and not self.hf_hub_id:
            problems.append("an entry with weights needs hf_hub_id")
        if self.weights in ("release", "vipann", "moped") and (self.source is None or self.conversion is None):
            problems.append(f"weights={self.weights!r} needs a source and a conversion")
        if self.weights == "release" and (self.source is None or not self.source.downloadable):
            problems.append("weights='release' needs a source with a download path and a checksum")
        if self.weights == "release" and self.result != "exact":
            problems.append("weights='release' converts exactly (result='exact')")
        if self.weights == "moped" and self.method not in ("flip", "detflip"):
            problems.append("weights='moped' is for flip and detflip entries")
        if self.conversion not in (None, *_CONVERSIONS):
            problems.append(f"conversion must be one of {_CONVERSIONS}")
        if self.result not in (None, *_RESULTS):
            problems.append(f"result must be one of {_RESULTS}")
        if self.source is not None:
            problems += self.source.validate()
            if self.source_checkpoint != self.source.filename:
                problems.append("source_checkpoint must be the source's file name")
        return problems


_REGISTRY: dict[str, PretrainedCfg] = {}


def split_model_name(name: str) -> tuple[str, str, str | None]:
    """Split ``<method>-<arch>[.<tag>]`` into its parts.

    Args:
        name: A model name.

    Returns:
        ``(method, arch, tag)``; tag is None when absent.

    Raises:
        ValueError: If the name does not have the form ``<method>-<arch>[.<tag>]``.
    """
    base, _, tag = name.partition(".")
    method, sep, arch = base.partition("-")
    if not sep or not method or not arch:
        raise ValueError(f"model name {name!r} is not of the form <method>-<arch>[.<tag>] (e.g. flip-resnet54)")
    return method, arch, tag or None


def register_model(cfg: PretrainedCfg) -> PretrainedCfg:
    """Validate and register an entry (names are unique).

    Args:
        cfg: The entry.

    Returns:
        The entry.

    Raises:
        ValueError: If it is invalid or its name is taken.
    """
    cfg.validate()
    if cfg.name in _REGISTRY:
        raise ValueError(f"model {cfg.name!r} is already registered")
    _REGISTRY[cfg.name] = cfg
    return cfg


def list_models(pattern: str = "*", *, weights: str | None = None) -> list[str]:
    """Registered model names matching a shell-style pattern, sorted.

    Args:
        pattern: ``fnmatch`` pattern, e.g. ``"flip-*"`` or ``"*resnet54*"``.
        weights: Keep only entries whose ``weights`` field equals this (a key of :data:`WEIGHTS`:
            ``"hub"``, ``"release"``, ``"vipann"``, ``"moped"``, ``"package"`` or ``"none"``).

    Returns:
        The matching names.
    """
    return sorted(
        name
        for name, cfg in _REGISTRY.items()
        if fnmatch.fnmatchcase(name, pattern) and (weights is None or cfg.weights == weights)
    )


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model name."""
    return name in _REGISTRY


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The metadata of a registered model.

    Args:
        name: A registered name.

    Returns:
        Its :class:`PretrainedCfg`.

    Raises:
        ValueError: For an unknown name, listing the closest registered names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean: {', '.join(close)}?" if close else "; see vipann.list_models()"
        raise ValueError(f"unknown model name {name!r}{hint}") from None


for _entry in all_entries():
    register_model(PretrainedCfg(**_entry))


def zoo_table(pattern: str = "*") -> str:
    """The README's zoo table (Markdown), generated from the registry.

    Args:
        pattern: Which entries to include (``fnmatch`` pattern).

    Returns:
        A Markdown table: name, classes, sample rate, default MC samples, how the weights load
        today (:data:`WEIGHTS`), AudioSet mAP where reported, and the original file.
    """
    rows = [
        "| name | classes | sample rate | MC samples | weights load | AudioSet mAP | original file |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in list_models(pattern):
        cfg = _REGISTRY[name]
        map_ = cfg.metrics.get("audioset", {}).get("mAP")
        loads = WEIGHTS[cfg.weights] + (f" (`{cfg.hf_hub_id}`)" if cfg.weights == "hub" else "")
        source = "–"
        if cfg.source is not None:
            source = f"[{cfg.source.filename}]({cfg.source.url or cfg.source.page})"
        rows.append(
            f"| `{name}` | {cfg.num_classes} | {cfg.sample_rate // 1000} kHz | {cfg.default_num_samples} | "
            f"{loads} | {'' if map_ is None else f'{map_:.3f}'} | {source} |"
        )
    return "\n".join(rows)
