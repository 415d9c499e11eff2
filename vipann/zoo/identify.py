"""Which architecture, and which vipann name, a foreign checkpoint is.

The keys of a PANNs, VI-PANN or bayesian-torch state dict give the architecture (Flipout names are
mapped back to ``weight``/``bias``; when several architectures have the same key names, such as
Cnn10 and the demo net, the shapes decide). ``Cnn14`` and ``Cnn14_DecisionLevelMax`` share every
tensor; for them the file name decides (``Cnn14_DecisionLevelMax_mAP=0.385.pth``, or
``Cnn14_DecisionLevelMax.pth`` as panns-inference saves it, is ``cnn14-dlmax``), or the vipann name
the caller gives; a file whose name says neither is refused with the names to choose from. The
public functions are re-exported by :mod:`vipann.zoo.convert`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from vipann.models.pann import ARCHITECTURES, PANN
from vipann.zoo.checkpoint import CheckpointError
from vipann.zoo.efficientat import is_efficientat_state_dict
from vipann.zoo.registry import (
    PANNS_INFERENCE_FILES,
    PANNS_RELEASE,
    PANNS_ZENODO,
    VIPANN_CHECKPOINTS,
    split_model_name,
)

__all__ = [
    "FRONTEND_KEYS",
    "architecture_from_filename",
    "default_name",
    "describe_conversion",
    "detect_architecture",
    "resolve_architecture",
    "where_published",
]

_PathLike = str | os.PathLike[str]

FRONTEND_KEYS = (
    "spectrogram_extractor.stft.conv_real.weight",
    "spectrogram_extractor.stft.conv_imag.weight",
    "logmel_extractor.melW",
)

# PANNs variants vipann does not implement, by a fragment of their file names (lower case). The
# decision-level Avg pooling has exactly Cnn14's tensors, so only its name can refuse it.
_UNSUPPORTED_NAMES = {
    "decisionlevelavg": "Cnn14_DecisionLevelAvg",
    "decisionlevelatt": "Cnn14_DecisionLevelAtt",
    "wavegram": "Wavegram_Logmel_Cnn14 / Wavegram_Cnn14",
    "16k": "a 16 kHz model (Cnn14_16k)",
    "8k": "an 8 kHz model (Cnn14_8k)",
}


def where_published(path: _PathLike) -> str:
    """Where the original checkpoint a file name refers to is published (for a missing file).

    Args:
        path: The checkpoint file the user gave.

    Returns:
        A sentence naming the publication (Zenodo record 3987831 for the PANNs release files, the
        VI-PANN repository for ``deterministic.pth`` / ``flipout.pth``), with the download URL when
        the file name is a known one.
    """
    name = os.path.basename(os.fspath(path))
    for arch, (release, _) in PANNS_RELEASE.items():
        if name in (release, PANNS_INFERENCE_FILES.get(arch)):
            url = f"{PANNS_ZENODO}/files/{release.replace('=', '%3D')}?download=1"
            return (
                f"{name} is the PANNs release checkpoint {release}, published in Zenodo record 3987831: {url} "
                f"(vipann.from_pretrained('det-{arch}') downloads, checks and converts it by itself)"
            )
    if name in ("deterministic.pth", "flipout.pth"):
        return f"{name} is a VI-PANN checkpoint, published with the VI-PANN code: {VIPANN_CHECKPOINTS}"
    return (
        f"the PANNs release checkpoints (e.g. Cnn14_mAP=0.431.pth) are published in Zenodo record 3987831 "
        f"({PANNS_ZENODO}), VI-PANN's deterministic.pth and flipout.pth at {VIPANN_CHECKPOINTS}"
    )


def _flipout_prefixes(sd: Mapping[str, torch.Tensor]) -> set[str]:
    return {k.rsplit(".", 1)[0] for k in sd if k.endswith((".mu_kernel", ".mu_weight"))}


def _deterministic_shapes(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """The keys (and shapes) the checkpoint would have if none of its layers were Flipout."""
    renamed = {"mu_kernel": "weight", "mu_weight": "weight", "mu_bias": "bias"}
    shapes = {}
    for key, value in sd.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf.startswith(("rho_", "prior_", "eps_")) or key in FRONTEND_KEYS:
            continue
        shapes[f"{prefix}.{renamed.get(leaf, leaf)}"] = tuple(getattr(value, "shape", ()))
    return shapes


def _file_stem(path: _PathLike) -> str:
    """The part of a checkpoint's file name that names its class, lower case (``cnn14_decisionlevelmax``)."""
    name = os.path.basename(os.fspath(path))
    for suffix in (".pth", ".pt", ".ckpt", ".bin"):
        name = name.removesuffix(suffix)
    return name.split("_mAP")[0].lower()


def _display(arch: str) -> str:
    original = ARCHITECTURES[arch].original_class
    return f"PANNs {original}" if original else f"vipann {arch}"


def architecture_from_filename(path: _PathLike) -> str | None:
    """The architecture a PANNs checkpoint's file name names, if it names one.

    The name must start with the PANNs class name (case-insensitive), followed by its end or a
    separator: ``Cnn14_DecisionLevelMax_mAP=0.385.pth`` and panns-inference's
    ``Cnn14_DecisionLevelMax.pth`` name ``cnn14-dlmax``; ``Cnn14_mAP=0.431.pth`` names ``cnn14``;
    ``flipout.pth`` or ``model.pth`` name none.

    Args:
        path: The checkpoint file (only its name is read).

    Returns:
        An architecture id, or None.

    Raises:
        CheckpointError: For a PANNs variant vipann does not implement (``Cnn14_DecisionLevelAtt``,
            ``Cnn14_DecisionLevelAvg``, Wavegram, 16/8 kHz models), named by the file.
    """
    stem = _file_stem(path)
    tokens = set(re.split(r"[^0-9a-z]+", stem))
    for fragment, what in _UNSUPPORTED_NAMES.items():
        if (fragment in tokens) if fragment[0].isdigit() else (fragment in stem):
            implemented = ", ".join(spec.original_class for spec in ARCHITECTURES.values() if spec.original_class)
            raise CheckpointError(
                f"{os.path.basename(os.fspath(path))} is {what}, a PANNs variant vipann does not implement; "
                f"vipann converts the 32 kHz {implemented} checkpoints"
            )
    best: str | None = None
    for arch, spec in ARCHITECTURES.items():
        cls = (spec.original_class or "").lower()
        named = bool(cls) and stem.startswith(cls) and not stem[len(cls) : len(cls) + 1].isalnum()
        if named and (best is None or len(cls) > len(ARCHITECTURES[best].original_class or "")):
            best = arch
    return best


def _matching_architectures(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """The architectures with exactly the checkpoint's keys; when several, those whose shapes fit too."""

    def body(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        # The classifier's number of classes is free.
        return {k: v[1:] if k.startswith("fc_audioset.") else v for k, v in shapes.items()}

    shapes = body(_deterministic_shapes(state_dict))
    found, same_shapes = [], []
    for arch in ARCHITECTURES:
        with torch.device("meta"):
            reference = body({k: tuple(v.shape) for k, v in PANN(arch, "det", 1).state_dict().items()})
        if set(reference) == set(shapes):
            found.append(arch)
            if reference == shapes:
                same_shapes.append(arch)
    if len(found) > 1 and same_shapes:  # e.g. Cnn10 and the demo net: same keys, other widths
        found = same_shapes
    names = set(shapes)
    if not found and is_efficientat_state_dict(state_dict):
        raise CheckpointError(
            "the checkpoint is an EfficientAT state dict, not a PANN one; convert it with "
            "vipann.zoo.convert.from_efficientat_checkpoint or `vipann convert efficientat FILE`"
        )
    if not found:
        raise CheckpointError(
            f"the checkpoint's {len(names)} keys match none of the architectures {', '.join(ARCHITECTURES)}; "
            "is it a PANN (Cnn6/10/14, ResNet22/38/54, MobileNetV1) checkpoint?"
        )
    return found


def resolve_architecture(
    state_dict: Mapping[str, torch.Tensor],
    path: _PathLike | None = None,
    name: str | None = None,
) -> str:
    """Which architecture a checkpoint is, from its keys, its file name and the name asked for.

    The keys decide when they fit one architecture. ``Cnn14`` and ``Cnn14_DecisionLevelMax`` have
    the same tensors; for them the file name decides (:func:`architecture_from_filename`), else
    ``name``. A file name that names a PANNs class is binding: a checkpoint whose tensors or whose
    requested ``name`` contradict its file name is refused rather than converted as something the
    file says it is not.

    Args:
        state_dict: The checkpoint's tensors (Flipout names are mapped back to ``weight``/``bias``).
        path: The checkpoint file, when it came from one.
        name: The vipann name the caller asked for (``det-cnn14-dlmax``), if any; when the keys
            fit no architecture it is returned as is, and loading lists the keys that do not fit.

    Returns:
        The architecture id (``cnn14``, ``cnn14-dlmax``, ``resnet54``, ...).

    Raises:
        CheckpointError: When the keys fit no architecture (and no name is given); when the file
            name or ``name`` contradicts the tensors, or ``name`` the file name; when the file name
            names an unimplemented variant; or when the tensors fit several architectures and
            neither the file name nor ``name`` says which (the message lists the names to pass).
    """
    hinted = architecture_from_filename(path) if path is not None else None
    wanted = split_model_name(name)[1] if name else None
    try:
        candidates = _matching_architectures(state_dict)
    except CheckpointError:
        if wanted is None:
            raise
        candidates = []
    file = os.path.basename(os.fspath(path)) if path is not None else "the checkpoint"
    if hinted is not None and candidates and hinted not in candidates:
        raise CheckpointError(
            f"{file} is named as a {_display(hinted)} checkpoint but holds the tensors of "
            f"{' / '.join(_display(a) for a in candidates)}; rename the file after what it holds"
        )
    if wanted is not None:
        if hinted is not None and wanted != hinted:
            method = split_model_name(name)[0]
            raise CheckpointError(
                f"{file} is a {_display(hinted)} checkpoint (by its file name), but {name!r} is a "
                f"{_display(wanted) if wanted in ARCHITECTURES else wanted}; use a {hinted} name such as "
                f"{method}-{hinted}, or rename the file if it really holds another model"
            )
        if candidates and wanted not in candidates:
            method = split_model_name(name)[0]
            raise CheckpointError(
                f"{file} does not fit {name}: its tensors are those of "
                f"{' / '.join(f'{_display(a)} (vipann {a})' for a in candidates)}; "
                f"pick a {candidates[0]} name such as {method}-{candidates[0]}"
            )
        return wanted
    if hinted is not None:
        return hinted
    if len(candidates) == 1:
        return candidates[0]
    choices = " or ".join(f"det-{a} ({_display(a)})" for a in candidates)
    files = " / ".join(PANNS_RELEASE[a][0] for a in candidates if a in PANNS_RELEASE)
    raise CheckpointError(
        f"{file} has tensors that fit {len(candidates)} architectures with the same weights: "
        f"{', '.join(_display(a) for a in candidates)}, and its file name does not say which. Pass the "
        f"vipann name: --name {choices} on the command line (any method: det, drop, flip, detflip), "
        f"name=... in Python; or keep the original file name ({files})"
    )


def detect_architecture(state_dict: Mapping[str, torch.Tensor], path: _PathLike | None = None) -> str:
    """Which architecture of the family a PANNs or bayesian-torch state dict belongs to.

    Args:
        state_dict: The checkpoint's tensors (Flipout names are mapped back to ``weight``/``bias``).
        path: The checkpoint's file, whose name tells Cnn14 from Cnn14_DecisionLevelMax (same
            tensors).

    Returns:
        The architecture id (``resnet54``, ``cnn14``, ``cnn14-dlmax``, ...).

    Raises:
        CheckpointError: If no architecture has exactly these keys, or several do and the file
            name does not say which (see :func:`resolve_architecture`).
    """
    return resolve_architecture(state_dict, path)


def default_name(path: _PathLike | None, state_dict: Mapping[str, torch.Tensor], kind: str) -> str:
    """The vipann name a checkpoint becomes when none is given.

    PANNs release files (``Cnn14_mAP=0.431.pth``, ``Cnn14_DecisionLevelMax_mAP=0.385.pth``, also as
    kept by panns-inference in ``~/panns_data``) become ``det-<arch>``; VI-PANN ``flipout.pth`` and
    bayesian-torch state dicts become ``flip-``/``detflip-<arch>``. The architecture is read from
    the keys, so a renamed file converts too, except a renamed Cnn14 / Cnn14_DecisionLevelMax,
    which have the same tensors (see :func:`resolve_architecture`).

    Args:
        path: The checkpoint file (its name is read), or None for an in-memory state dict.
        state_dict: Its tensors.
        kind: ``"panns"``, ``"vipann"`` or ``"bayesian-torch"``.

    Returns:
        A registry name.

    Raises:
        CheckpointError: If the architecture is not one vipann implements (the 16 kHz or
            Wavegram Cnn14, the attention and average decision-level heads), or cannot be told.
    """
    flip = _flipout_prefixes(state_dict)
    arch = resolve_architecture(state_dict, path)
    if not flip:
        return f"det-{arch}"
    return f"{'detflip' if flip <= {'fc1', 'fc_audioset'} else 'flip'}-{arch}"


def describe_conversion(path: _PathLike, name: str) -> str:
    """One line that says what a checkpoint file is and which vipann model it becomes.

    Args:
        path: The checkpoint file.
        name: The vipann name of the result.

    Returns:
        E.g. ``".../Cnn14_DecisionLevelMax_mAP=0.385.pth is PANNs Cnn14_DecisionLevelMax; it becomes
        vipann det-cnn14-dlmax"``.
    """
    arch = split_model_name(name)[1]
    what = _display(arch) if arch in ARCHITECTURES else arch
    return f"{os.fspath(path)} is {what}; it becomes vipann {name}"
