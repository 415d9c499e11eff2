"""The registry's entries, as data: one ``PretrainedCfg`` keyword dict per model vipann knows.

:mod:`vipann.zoo.registry` turns each dict into a validated :class:`~vipann.zoo.registry.PretrainedCfg`.
The AudioSet entries record where their weights come from (:mod:`vipann.zoo.sources`), how they
are converted and what the result is:

* ``det-<arch>`` and ``drop-<arch>``: the PANNs release file, converted exactly
  (``weights="release"``: downloaded, verified and converted on first use);
* ``flip-resnet54``: VI-PANN's trained ``flipout.pth``, shared only on a Box page
  (``weights="vipann"``: imported by hand);
* every other ``flip-<arch>`` and ``detflip-<arch>``: no VI-trained weights exist in a public file
  (``weights="moped"``: an untrained MOPED model is built only on explicit request).
"""

from __future__ import annotations

from typing import Any

from vipann.models.pann import ARCHITECTURES, METHODS
from vipann.zoo.sources import PANNS_FILES, PANNS_ZENODO, VIPANN_BOX_PAGE, VIPANN_FLIPOUT

__all__ = ["DEFAULT_TAGS", "HUB_ORG", "all_entries"]

HUB_ORG = "vipann"
DEFAULT_TAGS = ("audio-classification", "audio-tagging", "uncertainty", "pann")
VIPANN_CHECKPOINTS = "https://github.com/marko-orescanin-nps/VI-PANN (checkpoints/README.md)"

_DEFAULT_SAMPLES = {"det": 1, "drop": 30, "flip": 30, "detflip": 30}


def _audioset_entries() -> list[dict[str, Any]]:
    entries = []
    for arch, source in PANNS_FILES.items():
        spec = ARCHITECTURES[arch]
        cls = spec.original_class
        filename = source.filename
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
        panns_metrics = {"audioset": dict(source.metrics["audioset"])}
        if arch == "resnet54":
            panns_metrics = {"audioset": {"mAP": 0.429, "AUC": 0.971, "d_prime": 2.675}}
        for method in METHODS:
            name = f"{method}-{arch}"
            entry: dict[str, Any] = dict(
                source=source, conversion="panns", result="exact", weights="release", metrics={}, metrics_source=""
            )
            if method == "det":
                provenance = f"PANNs {cls} AudioSet checkpoint {filename} ({PANNS_ZENODO}), converted unchanged."
                entry.update(metrics=panns_metrics, metrics_source="PANNs release (Kong et al. 2020)")
                description = f"PANNs {cls}, deterministic"
            elif method == "drop":
                provenance = (
                    f"PANNs {cls} checkpoint {filename} ({PANNS_ZENODO}); same weights as det-{arch}, with its "
                    "dropout sites kept active for MC-dropout sampling."
                )
                description = f"PANNs {cls}, MC dropout (p=0.2 conv, 0.5 linear)"
            elif method == "flip" and arch == "resnet54":
                provenance = (
                    "VI-PANN AudioSet Flipout ResNet54 (flipout.pth, " + VIPANN_CHECKPOINTS + "): Flipout "
                    "convolutions trained 2M steps from a MOPED initialisation; its deterministic fc1 and "
                    "classifier become Flipout layers with negligible variance so the predictive "
                    "distribution is the published one."
                )
                entry.update(
                    source=VIPANN_FLIPOUT,
                    conversion="vipann",
                    result="not-public",
                    weights="vipann",
                    metrics={"audioset": dict(VIPANN_FLIPOUT.metrics["audioset"])},
                    metrics_source="VI-PANN (Fischer et al. 2024), Table 3",
                )
                description = "VI-PANN Flipout ResNet54 (AudioSet-trained variational weights)"
            else:
                layers = "fc1 and classifier" if method == "detflip" else "every conv and linear layer"
                provenance = (
                    f"No VI-trained {method} weights of PANNs {cls} are published (the only public VI-trained "
                    f"AudioSet weights are VI-PANN's flipout.pth, a ResNet54, on {VIPANN_BOX_PAGE}). On request "
                    f"only: PANNs checkpoint {filename} with {layers} converted to Flipout by MOPED, "
                    "MOPED-initialised, not trained."
                )
                entry.update(result="not-public", weights="moped")
                head = "deterministic backbone + Flipout head" if method == "detflip" else "all-Flipout"
                description = f"PANNs {cls}, {head} (no trained weights published; MOPED on request)"
            entry.update(
                name=name,
                method=method,
                default_num_samples=_DEFAULT_SAMPLES[method],
                provenance=provenance,
                description=description,
                source_checkpoint=entry["source"].filename,
                hf_hub_id=f"{HUB_ORG}/{name}",
                tags=(*DEFAULT_TAGS, "audioset", *(("bayesian",) if method != "det" else ())),
                **common,
            )
            entries.append(entry)
    return entries


def _tiny_entries() -> list[dict[str, Any]]:
    spec = ARCHITECTURES["tiny"]
    return [
        dict(
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
        for method in METHODS
    ]


def _demo_entries() -> list[dict[str, Any]]:
    spec = ARCHITECTURES["demo"]
    how = {
        "det": "trained from scratch",
        "drop": "trained from scratch with MC dropout (0.2 after conv blocks, 0.5 before fc1 and classifier)",
        "flip": "initialised from det-demo by MOPED (delta 0.5), then trained on the ELBO",
        "detflip": "det-demo's backbone with a Flipout head from MOPED (delta 0.5), then trained on the ELBO",
    }
    return [
        dict(
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
            tags=(*DEFAULT_TAGS, "demo", *(("bayesian",) if method != "det" else ())),
        )
        for method in METHODS
    ]


def all_entries() -> list[dict[str, Any]]:
    """Every built-in entry, as :class:`~vipann.zoo.registry.PretrainedCfg` keyword arguments."""
    from vipann.zoo.entries_efficientat import efficientat_entry_fields

    return [*_audioset_entries(), *efficientat_entry_fields(), *_demo_entries(), *_tiny_entries()]
