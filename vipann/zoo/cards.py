"""Model cards (the Hub's ``README.md``), rendered from a model's metadata.

A card is ``vipann/data/hub_cards/template.md`` filled from a registry entry or a ``config.json``,
plus the prose file ``vipann/data/hub_cards/<name>.md`` when the model has one (generic prose,
derived from the metadata, otherwise). Nothing in a card is typed by hand twice: tables, YAML front
matter (``model-index``), the stochastic layers and the citations all come from the metadata.
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vipann.models.families import all_architectures, family_of
from vipann.models.pann import ARCHITECTURES
from vipann.utils.atomic import write_text_atomic
from vipann.zoo.citations import METHOD_CITATIONS
from vipann.zoo.citations import citations as _citations
from vipann.zoo.citations import credits as _credits
from vipann.zoo.config import README_NAME, read_config
from vipann.zoo.registry import PretrainedCfg, get_pretrained_cfg, is_model
from vipann.zoo.sources import DEFAULT_PANNS_ENDPOINT

__all__ = ["CARD_FIELDS", "render_card", "stochastic_layers", "write_card"]

# Fields a card cannot be rendered without (a missing one raises, it is never left blank).
CARD_FIELDS = (
    "name",
    "arch",
    "method",
    "num_classes",
    "multilabel",
    "sample_rate",
    "clip_seconds",
    "frontend",
    "default_num_samples",
    "license",
    "provenance",
    "description",
    "tags",
    "metrics",
    "metrics_source",
)
_DATASETS = {"audioset": "AudioSet", "esc50": "ESC-50", "urbansound8k": "UrbanSound8K", "dcase2013": "DCASE2013"}
_METRIC_NAMES = {
    "mAP": ("map", "mAP"),
    "AUC": ("roc_auc", "ROC AUC"),
    "d_prime": ("d_prime", "d-prime"),
    "accuracy": ("accuracy", "Accuracy"),
    "ECE": ("ece", "Expected calibration error"),
    "MCE": ("mce", "Maximum calibration error"),
    "brier": ("brier", "Brier score"),
    "NLL": ("nll", "Negative log-likelihood"),
}


def _card_file(name: str) -> resources.abc.Traversable:
    return resources.files("vipann").joinpath("data", "hub_cards", name)


def _as_metadata(source: PretrainedCfg | Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(source, str):
        source = get_pretrained_cfg(source)
    if isinstance(source, PretrainedCfg):
        meta = source.to_dict()
        meta["labels"] = list(source.labels)
        return meta
    if isinstance(source, Mapping):
        return dict(source)
    raise TypeError(f"render_card expects a PretrainedCfg, a config dict or a registry name, got {type(source)}")


def _check_fields(meta: Mapping[str, Any]) -> None:
    missing = [k for k in CARD_FIELDS if meta.get(k) is None or (isinstance(meta.get(k), str) and not meta[k])]
    # metrics_source may be empty only when there are no metrics to attribute.
    if "metrics_source" in missing and not meta.get("metrics"):
        missing.remove("metrics_source")
    if missing:
        raise ValueError(f"cannot render the model card of {meta.get('name', '<unnamed>')!r}: missing {missing}")
    if meta["method"] not in METHOD_CITATIONS:
        raise ValueError(f"cannot render the model card: unknown method {meta['method']!r}")
    if meta["arch"] not in all_architectures():
        raise ValueError(f"cannot render the model card: unknown architecture {meta['arch']!r}")


def _model_arg(meta: Mapping[str, Any], key: str, default: float) -> float:
    return float((meta.get("model_args") or {}).get(key, default))


def stochastic_layers(method: str, arch: str, model_args: Mapping[str, Any] | None = None) -> str:
    """Which layers of a model are stochastic, in one sentence.

    Args:
        method: ``det``, ``drop``, ``flip`` or ``detflip``.
        arch: Architecture id.
        model_args: The model's constructor arguments (dropout rates); defaults when absent.

    Returns:
        The sentence.

    Raises:
        ValueError: For an unknown method or architecture.
    """
    if arch not in all_architectures():
        raise ValueError(f"unknown architecture {arch!r}")
    meta = {"model_args": dict(model_args or {})}
    if family_of(arch).name == "efficientat":
        return _efficientat_stochastic_layers(method, arch, meta)
    spec = ARCHITECTURES[arch]
    if method == "det":
        return "none: a deterministic network (every sample of a Monte-Carlo run is the same prediction)"
    if method == "drop":
        conv = _model_arg(meta, "conv_dropout", spec.conv_dropout)
        fc = _model_arg(meta, "fc_dropout", 0.5)
        head = _model_arg(meta, "head_dropout", 0.5)
        sites = f"p={conv:g} after the conv stages, " if conv > 0 else ""
        text = (
            f"MC-dropout sites ({sites}p={fc:g} before fc1, p={head:g} before the classifier), "
            "kept active while sampling"
        )
        if spec.family == "resnet":
            block = _model_arg(meta, "block_dropout", 0.1)
            text += f"; the p={block:g} dropout inside residual blocks is training-only"
        return text
    if method == "flip":
        return (
            "every Conv2d and Linear layer after the front end is a Flipout layer (mean-field Gaussian "
            "weights); BatchNorm and the log-mel front end are deterministic"
        )
    if method == "detflip":
        return "fc1 and the classifier are Flipout layers; the convolutional backbone is deterministic"
    raise ValueError(f"unknown method {method!r}")


def _efficientat_stochastic_layers(method: str, arch: str, meta: Mapping[str, Any]) -> str:
    if method == "det":
        return "none: a deterministic network (every sample of a Monte-Carlo run is the same prediction)"
    if method == "drop":
        sites = [f"p={_model_arg(meta, 'head_dropout', 0.2):g} before the classifier (EfficientAT's own dropout)"]
        if (fc := _model_arg(meta, "fc_dropout", 0.0)) > 0:
            sites.append(f"p={fc:g} before fc1")
        if (conv := _model_arg(meta, "conv_dropout", 0.0)) > 0:
            sites.append(f"p={conv:g} after each of the four resolution stages")
        return "MC-dropout sites (" + ", ".join(sites) + "), kept active while sampling"
    if method == "flip":
        if arch.startswith("dymn"):
            layers = (
                "every convolution, the kernel banks of the dynamic convolutions, their attention layers, the "
                "Dy-ReLU coefficient layers, the context generators' convolutions, fc1 and the classifier"
            )
        else:
            layers = (
                "every convolution (depthwise included), both linear layers of every squeeze-excitation block, "
                "fc1 and the classifier"
            )
        return (
            f"{layers} are Flipout layers (mean-field Gaussian weights); BatchNorm and the log-mel front end "
            "are deterministic"
        )
    if method == "detflip":
        extra = "dynamic layers" if arch.startswith("dymn") else "squeeze-excitation"
        return f"fc1 and the classifier are Flipout layers; the backbone ({extra} included) is deterministic"
    raise ValueError(f"unknown method {method!r}")


def _summary(meta: Mapping[str, Any]) -> str:
    s = meta["default_num_samples"]
    if meta["method"] == "det":
        return "A deterministic model: it gives point predictions and no epistemic uncertainty."
    source = "dropout masks" if meta["method"] == "drop" else "Flipout weight samples"
    return (
        f"A Bayesian approximation: a prediction averages {s} {source}, and the spread between samples "
        "measures the model's own (epistemic) uncertainty."
    )


def _arch_display(arch: str) -> str:
    return family_of(arch).display(arch)


def _datasets(meta: Mapping[str, Any]) -> list[str]:
    found = [meta.get("label_set"), meta.get("tag"), *meta["metrics"]]
    return sorted({d for d in found if d in _DATASETS})


def _tags(meta: Mapping[str, Any]) -> list[str]:
    # The method decides the Bayesian tags, so a card is tagged correctly even if an entry forgot.
    derived = {"det": [], "drop": ["bayesian", "mc-dropout"], "flip": ["bayesian", "flipout"]}
    derived["detflip"] = derived["flip"]
    return list(dict.fromkeys([*meta["tags"], "audio-classification", *derived[meta["method"]]]))


def _yaml(key: str, value: Any) -> str:
    return yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _mc_samples(meta: Mapping[str, Any], values: Mapping[str, Any]) -> int:
    return int(values.get("num_samples", meta["default_num_samples"]))


def _model_index(meta: Mapping[str, Any]) -> str:
    results = []
    task = "Audio tagging (multi-label)" if meta["multilabel"] else "Audio classification"
    for dataset, values in meta["metrics"].items():
        metrics = [
            {"type": _METRIC_NAMES.get(k, (k.lower(), k))[0], "name": _METRIC_NAMES.get(k, (k, k))[1], "value": v}
            for k, v in values.items()
            if k != "num_samples"
        ]
        metrics.append({"type": "mc_samples", "name": "Monte-Carlo samples", "value": _mc_samples(meta, values)})
        results.append(
            {
                "task": {"type": "audio-classification", "name": task},
                "dataset": {"type": dataset, "name": _DATASETS.get(dataset, dataset)},
                "metrics": metrics,
                "source": {"name": meta["metrics_source"]},
            }
        )
    if not results:
        return ""
    return _yaml("model-index", [{"name": meta["name"], "results": results}])


def _evaluation(meta: Mapping[str, Any]) -> str:
    if not meta["metrics"]:
        return "No evaluation is reported for these weights yet."
    rows = ["| dataset | metric | value | MC samples |", "|---|---|---|---|"]
    for dataset, values in meta["metrics"].items():
        for key, value in values.items():
            if key == "num_samples":
                continue
            name = _METRIC_NAMES.get(key, (key, key))[1]
            rows.append(f"| {_DATASETS.get(dataset, dataset)} | {name} | {value:g} | {_mc_samples(meta, values)} |")
    return "\n".join(rows) + f"\n\nSource: {meta['metrics_source']}."


def _load_id(meta: Mapping[str, Any]) -> str:
    # A bare name only where the registry resolves it to these weights; otherwise the explicit
    # source, which also works before the registry entry is switched to weights="hub".
    name, hub_id = meta["name"], meta.get("hf_hub_id")
    if is_model(name):
        entry = get_pretrained_cfg(name)
        # The Hub, the original release (converted on first use) or the package: the bare name loads.
        if entry.available and hub_id in (None, entry.hf_hub_id):
            return name
    return f"hf-hub:{hub_id}" if hub_id else f"local-dir:./{name}"


def _rebuild(meta: Mapping[str, Any]) -> str:
    command = get_pretrained_cfg(meta["name"]).convert_command() if is_model(meta["name"]) else None
    if command:
        return f"The same weights can be rebuilt from the original checkpoint with:\n\n```bash\n{command}\n```"
    if meta.get("source_checkpoint"):
        return f"Converted from `{meta['source_checkpoint']}`."
    return ""


_RESULTS = {
    "exact": "exact: the published weights, converted unchanged",
    "not-public": "the trained weights of this model are not in any public file",
}


def _source_section(meta: Mapping[str, Any]) -> str:
    """The original file the weights come from: where it is published, its checksums, the release's metrics."""
    recorded = (meta.get("extra") or {}).get("source")
    source = recorded
    if not source and "source" not in meta and is_model(meta["name"]):
        meta = get_pretrained_cfg(meta["name"]).to_dict()  # a config.json without a recorded source
    if not source and meta.get("source"):  # a registry entry's metadata (PretrainedCfg.to_dict())
        path = meta["source"].get("path")
        source = {
            **meta["source"],
            "url": DEFAULT_PANNS_ENDPOINT + path if path else None,
            "result": meta.get("result"),
        }
    if not source:
        return ""
    name = source.get("file") or source.get("filename")
    url = source.get("url")
    rows = [
        "### Original file",
        "",
        "| | |",
        "|---|---|",
        f"| file | {f'[{name}]({url})' if url else f'`{name}`'} |",
        f"| published by | {source.get('publisher', '')} ({source.get('page', '')}) |",
    ]
    if source.get("size"):
        rows.append(f"| size | {int(source['size']):,} bytes |")
    published = source.get("published_checksum")
    if published is None:
        published = f"md5:{source['md5']}" if source.get("md5") else "none published"
    rows.append(f"| published checksum | {published} |")
    if recorded:
        rows.append(f"| checksums of the converted file | md5 `{source['md5']}`, sha256 `{source['sha256']}` |")
        rows.append(f"| conversion | `{source['converter']}`, converter version {source['converter_version']} |")
    if source.get("result") in _RESULTS:
        rows.append(f"| result | {_RESULTS[source['result']]} |")
    metrics = source.get("release_metrics") or source.get("metrics") or {}
    shown = [
        f"{_DATASETS.get(d, d)} {_METRIC_NAMES.get(k, (k, k))[1]} {v:g}"
        for d, vs in metrics.items()
        for k, v in vs.items()
    ]
    if shown:
        rows.append(f"| the release reports | {', '.join(shown)} (as published for this file) |")
    return "\n".join(rows)


def _generic_prose(meta: Mapping[str, Any]) -> str:
    rate, method = meta["sample_rate"], meta["method"]
    outputs = "sigmoid outputs, one per class" if meta["multilabel"] else "a softmax over the classes"
    uncertainty = (
        "It has no epistemic uncertainty; use a `drop`, `flip` or `detflip` model for that."
        if method == "det"
        else f"Use at least {meta['default_num_samples']} Monte-Carlo samples for stable uncertainty estimates."
    )
    return f"""## About

{meta["description"]}. {_arch_display(meta["arch"])} with {meta["num_classes"]} classes and {outputs}.
Stochastic layers: {stochastic_layers(method, meta["arch"], meta.get("model_args"))}.

## Intended use

Research on audio classification with uncertainty: predictions, predictive entropy and mutual
information from `vipann.predict`, and flagging clips the model is unsure about. {uncertainty}

## Limitations

- The weights are valid only for {rate} Hz audio and the front end above; resample other audio first.
- Uncertainty estimates are not guaranteed to be calibrated on your data: measure the calibration
  (`vipann.metrics`) before relying on them.
- Not evaluated for safety-critical use."""


def render_card(source: PretrainedCfg | Mapping[str, Any] | str) -> str:
    """Render the model card (``README.md``) of a model.

    Args:
        source: A :class:`~vipann.PretrainedCfg`, a ``config.json`` dict (as written by
            :func:`vipann.zoo.serialization.save_pretrained`), or a registry name.

    Returns:
        The card: YAML front matter (``library_name: vipann``, licence, tags, datasets,
        ``model-index`` with the metrics and Monte-Carlo samples) and Markdown.

    Raises:
        ValueError: If a field the card needs is missing (naming it), or for an unknown method or
            architecture.
        TypeError: For an unsupported ``source``.

    Example:
        >>> import vipann
        >>> from vipann.zoo.cards import render_card
        >>> card = render_card(vipann.get_pretrained_cfg("flip-resnet54"))
        >>> card.splitlines()[1]
        'library_name: vipann'
    """
    meta = _as_metadata(source)
    _check_fields(meta)
    prose_file = _card_file(f"{meta['name']}.md")
    prose = prose_file.read_text(encoding="utf-8") if prose_file.is_file() else _generic_prose(meta)
    fe = meta["frontend"]
    values = {
        "license": meta["license"],
        "tags_yaml": _yaml("tags", _tags(meta)),
        "datasets_yaml": _yaml("datasets", _datasets(meta)),
        "model_index_yaml": _model_index(meta),
        "name": meta["name"],
        "description": meta["description"],
        "stochasticity_summary": _summary(meta),
        "load_id": _load_id(meta),
        "sample_rate": meta["sample_rate"],
        "clip_seconds": f"{float(meta['clip_seconds']):g}",
        "default_num_samples": meta["default_num_samples"],
        "arch_display": _arch_display(meta["arch"]),
        "method": meta["method"],
        "stochastic_layers": stochastic_layers(meta["method"], meta["arch"], meta.get("model_args")),
        "num_classes": meta["num_classes"],
        "output_kind": "multi-label (independent sigmoids)" if meta["multilabel"] else "multi-class (softmax)",
        "frontend": family_of(meta["arch"]).describe_frontend(fe),
        "prose": prose.strip(),
        "evaluation": _evaluation(meta),
        "provenance": meta["provenance"],
        "source": _source_section(meta),
        "rebuild": _rebuild(meta),
        "credits": _credits(meta),
        "citations": _citations(meta),
    }
    template = string.Template(_card_file("template.md").read_text(encoding="utf-8"))
    try:
        text = template.substitute(values)
    except (KeyError, ValueError) as exc:  # a template field with no value: a bug, named
        raise ValueError(f"the card template needs field {exc} which the renderer does not provide") from None
    # Empty optional sections leave blank runs; keep at most one blank line between blocks.
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


def write_card(directory: str | os.PathLike[str]) -> Path:
    """Render the card of a saved model from its ``config.json`` and write ``README.md`` next to it.

    The file is replaced atomically; the weights and their checksum are untouched.

    Args:
        directory: A directory written by :func:`vipann.zoo.serialization.save_pretrained`.

    Returns:
        The path of the written ``README.md``.

    Raises:
        FileNotFoundError: If the directory has no ``config.json``.
        vipann.CheckpointError: If the config is invalid.
        ValueError: If a field the card needs is missing.

    Example:
        >>> from vipann.zoo.cards import write_card
        >>> write_card("./flip-resnet54")  # doctest: +SKIP
        PosixPath('flip-resnet54/README.md')
    """
    directory = Path(directory)
    return write_text_atomic(directory / README_NAME, render_card(read_config(directory)))
