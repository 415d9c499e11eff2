"""Converting EfficientAT's released ``.pt`` state dicts into vipann models of any method.

EfficientAT's GitHub release files (``mn10_as_mAP_471.pt``, ``mn04_as_mAP_432.pt``,
``mn20_as_mAP_478.pt``, ``dymn10_as.pt``, ...) are plain state dicts of the original ``MN`` /
``DyMN`` modules. vipann's networks keep the original trunk names (``features.*`` for ``mn``;
``in_c``, ``layers.*``, ``out_c`` for ``dymn``) and rename only the classifier:
``classifier.2`` -> ``fc1`` and ``classifier.5`` -> ``fc_audioset`` (``classifier.0, 1, 3, 4`` are a
pooling, a flatten, an activation and a dropout, with no tensors). The front end holds no tensors.

:func:`from_efficientat_checkpoint` identifies the architecture from the tensors (and checks it
against the file name and the requested name), checks every key and shape, and loads the weights
strictly: ``det`` and ``drop`` take them as they are, ``flip`` and ``detflip`` by MOPED
(:func:`vipann.zoo.moped.load_deterministic_weights`). Nothing is ever loaded non-strictly.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from vipann.models.efficientat import ARCHITECTURES, EfficientAT
from vipann.zoo.checkpoint import CheckpointError, read_torch_checkpoint, state_dict_from_object
from vipann.zoo.create import create_model
from vipann.zoo.moped import load_deterministic_weights
from vipann.zoo.registry import get_pretrained_cfg, is_model, split_model_name

__all__ = [
    "CLASSIFIER_KEYS",
    "efficientat_architecture",
    "efficientat_name_from_filename",
    "from_efficientat_checkpoint",
    "from_original_keys",
    "is_efficientat_state_dict",
    "to_original_keys",
]

logger = logging.getLogger(__name__)

#: EfficientAT classifier prefix -> vipann head module.
CLASSIFIER_KEYS = {"classifier.2.": "fc1.", "classifier.5.": "fc_audioset."}


def from_original_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An EfficientAT state dict in vipann's names (the classifier renamed, every other key unchanged)."""
    out = {}
    for key, value in state_dict.items():
        for old, new in CLASSIFIER_KEYS.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def to_original_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A deterministic vipann EfficientAT state dict in EfficientAT's names (inverse of :func:`from_original_keys`)."""
    out = {}
    for key, value in state_dict.items():
        for old, new in CLASSIFIER_KEYS.items():
            if key.startswith(new):
                key = old + key[len(new) :]
                break
        out[key] = value
    return out


def is_efficientat_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """Whether a state dict has EfficientAT's layout (an ``mn`` or ``dymn`` trunk and the MLP classifier)."""
    trunk = "features.0.0.weight" in state_dict or "in_c.0.weight" in state_dict
    return trunk and "classifier.5.weight" in state_dict


def _shapes(sd: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    # The classifier's number of classes is free.
    return {k: tuple(v.shape)[1:] if k.startswith("fc_audioset.") else tuple(v.shape) for k, v in sd.items()}


def efficientat_architecture(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> str:
    """The vipann architecture whose keys and shapes (classifier width aside) a released state dict has.

    Args:
        state_dict: An EfficientAT state dict (original names).
        source: Its name in messages.

    Returns:
        ``mn04``, ``mn10``, ``mn20`` or ``dymn10``.

    Raises:
        CheckpointError: When no architecture fits, naming the closest one and its differences.
    """
    shapes = _shapes(from_original_keys(state_dict))
    best, best_score = None, None
    for arch in ARCHITECTURES:
        with torch.device("meta"):
            reference = _shapes(EfficientAT(arch, "det", 1).state_dict())
        if reference == shapes:
            return arch
        score = len(set(reference) ^ set(shapes)) + sum(reference[k] != shapes[k] for k in set(reference) & set(shapes))
        if best_score is None or score < best_score:
            best, best_score = arch, score
    with torch.device("meta"):
        reference = _shapes(EfficientAT(best, "det", 1).state_dict())
    missing = sorted(set(reference) - set(shapes))
    unexpected = sorted(set(shapes) - set(reference))
    shaped = sorted(k for k in set(reference) & set(shapes) if reference[k] != shapes[k])
    raise CheckpointError(
        f"{source} matches none of the EfficientAT architectures {', '.join(ARCHITECTURES)}; the closest, {best}, "
        f"differs in {len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]} "
        f"and {len(shaped)} shapes {shaped[:5]}; vipann converts the AudioSet mn04_as, mn10_as, mn20_as and "
        "dymn10_as release files"
    )


def efficientat_name_from_filename(path: str | os.PathLike[str]) -> str | None:
    """The architecture an EfficientAT file name names (``mn10_as_mAP_471.pt`` -> ``mn10``), if any."""
    stem = os.path.basename(os.fspath(path)).lower()
    match = re.match(r"(dymn|mn)(\d\d)(?![0-9])", stem)
    return f"{match.group(1)}{match.group(2)}" if match else None


def _as_state_dict(path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[dict, str, Any]:
    if isinstance(path_or_state_dict, Mapping):
        return state_dict_from_object(path_or_state_dict), "state dict", None
    sd = read_torch_checkpoint(path_or_state_dict)
    return sd, os.path.basename(os.fspath(path_or_state_dict)), path_or_state_dict


def from_efficientat_checkpoint(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    name: str | None = None,
    *,
    moped_delta: float = 0.5,
    moped_prior: str = "zero",
) -> torch.nn.Module:
    """Build a vipann model from an EfficientAT release state dict.

    Args:
        path_or_state_dict: A released ``.pt`` file (``mn10_as_mAP_471.pt``, ...) or its loaded state dict.
        name: Registry name of the result, any method: ``det-mn10``, ``drop-mn10``, ``flip-mn10``
            (MOPED), ``detflip-dymn10`` (MOPED head), ... Default: ``det-<arch>`` of the tensors.
        moped_delta: MOPED delta for the Flipout layers of ``flip``/``detflip``.
        moped_prior: ``"zero"`` or ``"weights"`` (see :func:`vipann.zoo.moped.load_deterministic_weights`).

    Returns:
        The model in ``eval()`` mode, with ``pretrained_cfg`` attached (its classes are the checkpoint's).

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointError: For an unreadable file, a state dict that is not an EfficientAT one, a file
            name or ``name`` that contradicts the tensors, or missing/unexpected/mis-shaped keys
            (all named).

    Example:
        >>> from vipann.zoo.convert import from_efficientat_checkpoint
        >>> model = from_efficientat_checkpoint("mn10_as_mAP_471.pt", "drop-mn10")  # doctest: +SKIP
    """
    sd, source, path = _as_state_dict(path_or_state_dict)
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DataParallel wrapper
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    if not is_efficientat_state_dict(sd):
        raise CheckpointError(
            f"{source} is not an EfficientAT state dict (no 'features.0.0.weight'/'in_c.0.weight' trunk with a "
            "'classifier.5.weight' MLP classifier); convert PANNs files with from_panns_checkpoint"
        )
    arch = efficientat_architecture(sd, source)
    named = efficientat_name_from_filename(path) if path is not None else None
    if named is not None and named != arch:
        raise CheckpointError(f"{source} is named like an EfficientAT {named} but its tensors are a {arch}")
    if name is None:
        name = f"det-{arch}"
    elif not is_model(name):
        get_pretrained_cfg(name)  # raises, naming the closest registered names
    _, wanted, _ = split_model_name(name)
    if wanted != arch:
        raise CheckpointError(f"{source} holds an EfficientAT {arch}, not a {wanted}; pick a *-{arch} name")
    classes = int(sd["classifier.5.weight"].shape[0])
    model = create_model(name, num_classes=classes)
    cfg = get_pretrained_cfg(name)
    model.pretrained_cfg = cfg if classes == cfg.num_classes else cfg.with_classes(classes)
    load_deterministic_weights(
        model,
        from_original_keys(sd),
        moped_delta=moped_delta,
        moped_prior=moped_prior,
        source=source,
        target=name,
    )
    logger.info("converted %s (EfficientAT %s) into vipann model %s", source, ARCHITECTURES[arch].original_name, name)
    return model.eval()
