"""Where the drop-ins find their weights: the way panns-inference users keep them, or downloaded like it does.

In this order:

1. ``checkpoint_path``: a PANNs ``.pth`` (as panns-inference downloads it) or a directory written
   by :func:`vipann.save_pretrained` / ``vipann convert``;
2. the PANNs release file in ``~/panns_data`` where panns-inference keeps it
   (``Cnn14_mAP=0.431.pth`` for the ``*-cnn14`` names; ``Cnn14_DecisionLevelMax.pth`` or
   ``Cnn14_DecisionLevelMax_mAP=0.385.pth`` for ``*-cnn14-dlmax``), converted in memory;
3. :func:`vipann.from_pretrained`: the Hub when published, else the zoo cache, else the release
   file downloaded from Zenodo with a progress bar, checked against its published checksum,
   converted and cached (:mod:`vipann.zoo.release`); nothing happens at import time.

When none can give the weights (offline with a cold cache, or a model without public trained
weights), :class:`CheckpointNotFoundError` says how to get them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vipann.models.families import family_of, is_network
from vipann.models.pann import PANN
from vipann.zoo.checkpoint import CheckpointError, read_torch_checkpoint
from vipann.zoo.convert import (
    default_name,
    describe_conversion,
    from_bayesian_torch,
    from_efficientat_checkpoint,
    from_panns_checkpoint,
    is_efficientat_state_dict,
    resolve_architecture,
)
from vipann.zoo.download import DownloadError
from vipann.zoo.efficientat import efficientat_architecture
from vipann.zoo.factory import from_pretrained
from vipann.zoo.hub import HubError, NotCachedError
from vipann.zoo.registry import (
    PANNS_INFERENCE_FILES,
    PANNS_RELEASE,
    get_pretrained_cfg,
    is_model,
    split_model_name,
)

__all__ = ["DEFAULT_MODEL", "CheckpointNotFoundError", "load_model", "panns_data_dir"]

logger = logging.getLogger(__name__)

#: The model :class:`AudioTagging` builds when none is named: Cnn14 with MC dropout, whose
#: deterministic output (``num_samples=1``) is exactly panns-inference's.
DEFAULT_MODEL = "drop-cnn14"
# The flavour a PANNs checkpoint becomes when no model is named: same weights, uncertainty available.
_DEFAULT_METHOD = "drop"

_RELEASE_FILES = frozenset(filename for filename, _ in PANNS_RELEASE.values())


class CheckpointNotFoundError(FileNotFoundError):
    """No weights for the requested model are available locally; the message says how to get them."""


def panns_data_dir() -> Path:
    """Where panns-inference keeps its files: ``~/panns_data`` (``HOME`` is honoured)."""
    return Path.home() / "panns_data"


def _local_names(cfg) -> list[str]:
    """File names the PANNs checkpoint of an entry may have in ``~/panns_data`` (panns-inference's first)."""
    return [n for n in (PANNS_INFERENCE_FILES.get(cfg.arch), cfg.source_checkpoint) if n]


def _in_place_file(name: str) -> Path | None:
    """The PANNs release file of an AudioSet registry name, if panns-inference's folder has it."""
    cfg = get_pretrained_cfg(name)
    if cfg.tag is not None or cfg.source_checkpoint not in _RELEASE_FILES:
        return None
    for filename in _local_names(cfg):
        path = panns_data_dir() / filename
        if path.is_file():
            return path
    return None


def _how_to_get(name: str) -> str:
    """What to do when no weights for ``name`` can be had here, besides what from_pretrained's error says."""
    cfg = get_pretrained_cfg(name)
    if cfg.weights == "none":
        return f"{name!r} is an architecture without pretrained weights; build it with vipann.create_model({name!r})"
    # The decision-level (framewise) models are what SoundEventDetection loads.
    spec = family_of(cfg.arch).architectures[cfg.arch]
    user = "AudioTagging" if getattr(spec, "pooling", "clip") == "clip" else "SoundEventDetection"
    source = cfg.source
    if source is None or source.filename not in _RELEASE_FILES or source.url is None:
        return f"Alternatively, pass checkpoint_path=... (a converted model directory) to {user}."
    here = panns_data_dir() / _local_names(cfg)[0]
    return "\n".join(
        [
            f"Alternatively, as with panns-inference, put {source.filename} (Zenodo record 3987831) where "
            f"panns-inference keeps it, {here}, and {user} uses it in place:",
            f'    mkdir -p "{here.parent}" && wget -O "{here}" "{source.url}"',
            f"or convert it once and load the directory: {cfg.convert_command()}, then "
            f"{user}(model='local-dir:./{name}').",
        ]
    )


def _from_file(path: Path, model: str | None) -> tuple[PANN, str]:
    """Convert a foreign ``.pth`` (PANNs release, VI-PANN or bayesian-torch layout) in memory."""
    try:
        state = read_torch_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(
            f"{exc}\nIf {path} was downloaded by panns-inference or wget, the download may be incomplete: "
            "delete it and download it again."
        ) from exc
    if is_efficientat_state_dict(state):  # an EfficientAT release .pt
        net = from_efficientat_checkpoint(path, model or f"{_DEFAULT_METHOD}-{efficientat_architecture(state)}")
        return net, net.pretrained_cfg.name
    flipout = any(k.endswith((".mu_kernel", ".mu_weight")) for k in state)
    if model is None:
        # default_name refuses the PANNs variants vipann does not implement (Wavegram, 16 kHz, ...)
        # and a Cnn14-shaped file whose name does not say Cnn14 or Cnn14_DecisionLevelMax.
        detected = default_name(path, state, "bayesian-torch" if flipout else "panns")
        name = detected if flipout else f"{_DEFAULT_METHOD}-{split_model_name(detected)[1]}"
    else:
        # The requested model must agree with the tensors and with the file name.
        resolve_architecture(state, path, model)
        name = model
    logger.info("%s", describe_conversion(path, name))
    if flipout:
        return from_bayesian_torch(state, name, source=path.name), name
    if split_model_name(name)[0] in ("flip", "detflip"):
        logger.warning("%s from the deterministic %s is MOPED-initialised, not trained (delta 0.5)", name, path.name)
    return from_panns_checkpoint({"model": state}, name), name


def load_model(
    model: str | PANN | None,
    checkpoint_path: str | os.PathLike[str] | None,
    default: str = DEFAULT_MODEL,
) -> tuple[PANN, str, str]:
    """Resolve ``(model, checkpoint_path)`` to ``(network, vipann name, where the weights came from)``.

    Args:
        model: A registry name, a source (``local-dir:``, ``hf-hub:``), a :class:`vipann.PANN`, or None.
        checkpoint_path: A PANNs / VI-PANN / bayesian-torch ``.pth`` or a vipann model directory.
        default: The model used when none is named (and the one the messages suggest).

    Returns:
        The network, its vipann name, and where its weights came from.

    Raises:
        CheckpointNotFoundError: When no weights are available locally (the message says how to get them).
        vipann.CheckpointError: For a checkpoint vipann cannot use.
        ValueError: For contradictory arguments.
        TypeError: For a ``model`` of another type.
    """
    if is_network(model):
        if checkpoint_path is not None:
            raise ValueError(
                "pass either a vipann model instance or checkpoint_path, not both; to load a PANNs checkpoint, "
                f"name the model instead: model={default!r}, checkpoint_path=..."
            )
        cfg = getattr(model, "pretrained_cfg", None)
        return model, cfg.name if cfg is not None else f"{model.method}-{model.arch}", "the given model"
    if model is not None and not isinstance(model, str):
        raise TypeError(
            f"model must be a vipann model name or source, a vipann.PANN, or None; got {type(model).__name__} "
            "(panns_inference models cannot be used: vipann runs its own implementation)"
        )
    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
        if model is not None and not is_model(model):
            raise ValueError(
                f"model={model!r} is a source, and checkpoint_path={str(checkpoint_path)!r} another; give one of them"
            )
        if path.is_dir():
            net = from_pretrained(f"local-dir:{path}")
            name = net.pretrained_cfg.name
            if model is not None and split_model_name(model)[:2] != (net.method, net.arch):
                raise CheckpointError(f"{path} holds a {net.method}-{net.arch} model, not the requested {model!r}")
            return net, name, f"local-dir:{path}"
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"checkpoint_path {str(path)!r} does not exist\n" + _how_to_get(model or default)
            )
        net, name = _from_file(path, model)
        logger.info("loaded %s as vipann model %r (converted in memory)", path, name)
        return net, name, str(path)

    name = model or default
    if not is_model(name):
        net = from_pretrained(name)  # an explicit hf-hub:/local-dir: source
        return net, net.pretrained_cfg.name, getattr(net, "pretrained_source", name)
    local = _in_place_file(name)
    if local is not None:
        net, _ = _from_file(local, name)
        logger.info("using panns-inference's checkpoint %s in place as vipann model %r", local, name)
        return net, name, str(local)
    try:
        net = from_pretrained(name)  # the Hub, the zoo cache, or the release file downloaded and converted
    except NotCachedError as exc:  # offline with a cold cache
        raise CheckpointNotFoundError(f"{exc}\n" + _how_to_get(name)) from exc
    except (HubError, DownloadError):
        raise
    except RuntimeError as exc:  # no trained weights of this entry can be fetched
        raise CheckpointNotFoundError(f"{exc}\n" + _how_to_get(name)) from exc
    return net, name, getattr(net, "pretrained_source", name)
