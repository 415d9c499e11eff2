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
from vipann.models.pann import ARCHITECTURES, METHODS
from vipann.zoo.entries_efficientat import efficientat_entry_fields, is_efficientat_file

__all__ = [
    "HUB_ORG",
    "PretrainedCfg",
    "get_pretrained_cfg",
    "is_model",
    "list_models",
    "register_model",
    "split_model_name",
    "zoo_table",
]

HUB_ORG = "vipann"

PANNS_ZENODO = "https://zenodo.org/record/3987831"
VIPANN_CHECKPOINTS = "https://github.com/marko-orescanin-nps/VI-PANN (checkpoints/README.md)"

# Official PANNs release file per architecture and its AudioSet eval mAP (from the file name).
PANNS_RELEASE: dict[str, tuple[str, float]] = {
    "cnn6": ("Cnn6_mAP=0.343.pth", 0.343),
    "cnn10": ("Cnn10_mAP=0.380.pth", 0.380),
    "cnn14": ("Cnn14_mAP=0.431.pth", 0.431),
    "cnn14-dlmax": ("Cnn14_DecisionLevelMax_mAP=0.385.pth", 0.385),
    "resnet22": ("ResNet22_mAP=0.430.pth", 0.430),
    "resnet38": ("ResNet38_mAP=0.434.pth", 0.434),
    "resnet54": ("ResNet54_mAP=0.429.pth", 0.429),
    "mobilenetv1": ("MobileNetV1_mAP=0.389.pth", 0.389),
}

# Where panns-inference keeps a release file under another name (its SoundEventDetection default).
PANNS_INFERENCE_FILES: dict[str, str] = {"cnn14-dlmax": "Cnn14_DecisionLevelMax.pth"}

_DEFAULT_SAMPLES = {"det": 1, "drop": 30, "flip": 30, "detflip": 30}
_LICENSES = ("mit", "cc-by-4.0", "cc-by-nc-3.0", "other")
_WEIGHTS = ("hub", "convert", "package", "none")


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
        weights: ``"hub"`` (published on the Hub), ``"convert"`` (build locally with
            ``vipann convert`` from the original checkpoint), ``"package"`` (shipped inside vipann:
            the demo zoo) or ``"none"`` (architecture only).
        hf_hub_id: Hub repository id (``org/name``).
        model_args: Extra :class:`vipann.models.PANN` constructor arguments.
        description: One line for tables.
        tags: Hub tags.
        label_names: Explicit class names (overrides ``label_set``), e.g. for a fine-tuned model.
        temperature: Temperature that :func:`vipann.predict` divides every sample's logits by (a
            float, or one per class for multi-label models), fitted with
            :func:`vipann.calibration.calibrate`; None for no scaling.
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
    tags: tuple[str, ...] = ("audio-classification", "audio-tagging", "uncertainty", "pann")
    label_names: tuple[str, ...] = ()
    temperature: float | tuple[float, ...] | None = None

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
        """Whether ``from_pretrained(name)`` works out of the box (Hub or shipped in the package)."""
        return self.weights in ("hub", "package")

    def convert_command(self) -> str | None:
        """The ``vipann convert`` command that builds these weights locally, if there is one."""
        if self.source_checkpoint is None:
            return None
        kind = "vipann" if self.source_checkpoint in ("flipout.pth", "deterministic.pth") else "panns"
        if is_efficientat_file(self.source_checkpoint):
            kind = "efficientat"
        return f"vipann convert {kind} {self.source_checkpoint} --name {self.name} --out ./{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        out = asdict(self)
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
        if self.weights not in _WEIGHTS:
            problems.append(f"weights must be one of {_WEIGHTS}")
        if self.weights in ("hub", "convert") and not self.hf_hub_id:
            problems.append("an entry with weights needs hf_hub_id")
        if self.weights == "convert" and self.source_checkpoint is None:
            problems.append("weights='convert' needs source_checkpoint")
        if not self.provenance or not self.description:
            problems.append("provenance and description must be non-empty")
        for dataset, values in self.metrics.items():
            if not values or not all(isinstance(v, (int, float)) for v in values.values()):
                problems.append(f"metrics[{dataset!r}] must map metric names to numbers")
        if self.metrics and not self.metrics_source:
            problems.append("metrics need a metrics_source")
        if problems:
            raise ValueError(f"registry entry {self.name!r}: " + "; ".join(problems))


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
        weights: Keep only entries whose ``weights`` field equals this (``"hub"``, ``"convert"``
            or ``"none"``).

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


def _audioset_entries() -> None:
    for arch, (filename, map_) in PANNS_RELEASE.items():
        spec = ARCHITECTURES[arch]
        cls = spec.original_class
        common = dict(
            arch=arch,
            num_classes=527,
            label_set="audioset",
            multilabel=True,
            sample_rate=spec.frontend.sample_rate,
            clip_seconds=10.0,
            frontend=spec.frontend.to_dict(),
            license="mit",
        )
        panns_metrics = {"audioset": {"mAP": map_}}
        if arch == "resnet54":
            panns_metrics = {"audioset": {"mAP": 0.429, "AUC": 0.971, "d_prime": 2.675}}
        for method in METHODS:
            name = f"{method}-{arch}"
            source, weights = filename, "convert"
            metrics, metrics_source = {}, ""
            if method == "det":
                provenance = f"PANNs {cls} AudioSet checkpoint {filename} ({PANNS_ZENODO}), converted unchanged."
                metrics, metrics_source = panns_metrics, "PANNs release (Kong et al. 2020)"
                description = f"PANNs {cls}, deterministic"
            elif method == "drop":
                provenance = (
                    f"PANNs {cls} checkpoint {filename}; same weights as det-{arch}, with its dropout "
                    "sites kept active for MC-dropout sampling."
                )
                description = f"PANNs {cls}, MC dropout (p=0.2 conv, 0.5 linear)"
            elif method == "detflip":
                provenance = (
                    f"PANNs {cls} checkpoint {filename}; fc1 and classifier converted to Flipout with "
                    "MOPED (delta 0.5), backbone deterministic."
                )
                description = f"PANNs {cls}, deterministic backbone + Flipout head (MOPED)"
            elif arch == "resnet54":
                source = "flipout.pth"
                provenance = (
                    "VI-PANN AudioSet Flipout ResNet54 (flipout.pth, " + VIPANN_CHECKPOINTS + "): Flipout "
                    "convolutions trained 2M steps from a MOPED initialisation; its deterministic fc1 and "
                    "classifier become Flipout layers with negligible variance so the predictive "
                    "distribution is the published one."
                )
                metrics = {"audioset": {"mAP": 0.415, "AUC": 0.972, "d_prime": 2.708}}
                metrics_source = "VI-PANN (Fischer et al. 2024), Table 3"
                description = "VI-PANN Flipout ResNet54 (AudioSet-trained variational weights)"
            else:
                provenance = (
                    f"PANNs {cls} checkpoint {filename}; every conv and linear layer converted to Flipout "
                    "with MOPED (delta 0.5), not further trained."
                )
                description = f"PANNs {cls}, all-Flipout by MOPED (untrained variances)"
            register_model(
                PretrainedCfg(
                    name=name,
                    method=method,
                    default_num_samples=_DEFAULT_SAMPLES[method],
                    provenance=provenance,
                    weights=weights,
                    description=description,
                    metrics=metrics,
                    metrics_source=metrics_source,
                    source_checkpoint=source,
                    hf_hub_id=f"{HUB_ORG}/{name}",
                    tags=(*PretrainedCfg.tags, "audioset", *(("bayesian",) if method != "det" else ())),
                    **common,
                )
            )


def _tiny_entries() -> None:
    spec = ARCHITECTURES["tiny"]
    for method in METHODS:
        register_model(
            PretrainedCfg(
                name=f"{method}-tiny",
                arch="tiny",
                method=method,
                num_classes=10,
                label_set=None,
                multilabel=False,
                sample_rate=spec.frontend.sample_rate,
                clip_seconds=1.0,
                frontend=spec.frontend.to_dict(),
                default_num_samples=min(_DEFAULT_SAMPLES[method], 8),
                license="mit",
                weights="none",
                provenance="Randomly initialised test architecture (two 8/16-channel conv blocks).",
                description="Tiny test network (runs a 1 s clip in milliseconds)",
            )
        )


def _demo_entries() -> None:
    spec = ARCHITECTURES["demo"]
    how = {
        "det": "trained from scratch",
        "drop": "trained from scratch with MC dropout (0.2 after conv blocks, 0.5 before fc1 and classifier)",
        "flip": "initialised from det-demo by MOPED (delta 0.5), then trained on the ELBO",
        "detflip": "det-demo's backbone with a Flipout head from MOPED (delta 0.5), then trained on the ELBO",
    }
    for method in METHODS:
        register_model(
            PretrainedCfg(
                name=f"{method}-demo",
                arch="demo",
                method=method,
                num_classes=20,
                label_set="synthetic",
                multilabel=True,
                sample_rate=spec.frontend.sample_rate,
                clip_seconds=2.0,
                frontend=spec.frontend.to_dict(),
                default_num_samples=_DEFAULT_SAMPLES[method] // 3 or 1,
                license="mit",
                weights="package",
                provenance=f"Demo zoo: {how[method]} on the generated mini-AudioSet (vipann.datasets.synthetic, "
                "seed 0) with the AudioSet pre-training recipe; rebuilt by scripts/build_demo_zoo.sh.",
                description=f"Demo {method} model of the embedded zoo (20 synthetic sound-event classes)",
                tags=(*PretrainedCfg.tags, "demo", *(("bayesian",) if method != "det" else ())),
            )
        )


def _efficientat_entries() -> None:
    for fields in efficientat_entry_fields():
        register_model(PretrainedCfg(**fields))


_audioset_entries()
_efficientat_entries()
_demo_entries()
_tiny_entries()


def zoo_table(pattern: str = "*") -> str:
    """The README's zoo table (Markdown), generated from the registry.

    Args:
        pattern: Which entries to include (``fnmatch`` pattern).

    Returns:
        A Markdown table: name, classes, sample rate, default MC samples, availability, AudioSet
        mAP where reported, and the source of the weights.
    """
    status = {
        "hub": "published",
        "convert": "build it yourself (`vipann convert`)",
        "package": "ships with vipann",
        "none": "architecture only",
    }
    rows = [
        "| name | classes | sample rate | MC samples | weights | AudioSet mAP | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in list_models(pattern):
        cfg = _REGISTRY[name]
        map_ = cfg.metrics.get("audioset", {}).get("mAP")
        rows.append(
            f"| `{name}` | {cfg.num_classes} | {cfg.sample_rate // 1000} kHz | {cfg.default_num_samples} | "
            f"{status[cfg.weights]} | {'' if map_ is None else f'{map_:.3f}'} | {cfg.source_checkpoint or '–'} |"
        )
    return "\n".join(rows)
