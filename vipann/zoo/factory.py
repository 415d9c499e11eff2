"""Building models by name: :func:`create_model` (architecture) and :func:`from_pretrained` (weights)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from vipann.models.families import build_network
from vipann.models.pann import PANN
from vipann.zoo.checkpoint import CheckpointError
from vipann.zoo.registry import PretrainedCfg, get_pretrained_cfg, is_model

__all__ = ["create_model", "from_pretrained", "package_weights_dir"]


def create_model(
    name: str,
    num_classes: int | None = None,
    *,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> PANN:
    """Build a registered model with freshly initialised weights.

    Args:
        name: Registry name ``<method>-<arch>[.<tag>]`` (see :func:`vipann.list_models`).
        num_classes: Number of outputs; defaults to the entry's.
        device: Device to build the model on (default: torch's default device).
        **kwargs: Overrides of the family's constructor arguments (:class:`vipann.models.PANN`,
            :class:`vipann.models.EfficientAT`: ``conv_dropout``, ``prior_sigma``, ``frontend``, ...).

    Returns:
        The model in training mode, with its metadata in ``model.pretrained_cfg``.

    Raises:
        ValueError: For an unknown name (with the closest matches) or invalid arguments.

    Example:
        >>> import vipann
        >>> model = vipann.create_model("flip-tiny", num_classes=5)
        >>> model.pretrained_cfg.method
        'flip'
    """
    cfg = get_pretrained_cfg(name)
    if num_classes is not None:
        cfg = cfg.with_classes(int(num_classes))
    args = {"frontend": dict(cfg.frontend), **cfg.model_args, **kwargs}
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = build_network(cfg.arch, cfg.method, cfg.num_classes, **args)
    model.pretrained_cfg = cfg
    return model


def package_weights_dir(name: str) -> Path:
    """The directory (zoo layout) of a model whose weights ship inside vipann (the demo zoo).

    Args:
        name: Registry name of an entry with ``weights="package"``.

    Returns:
        The directory path.

    Raises:
        FileNotFoundError: If the files are missing from this installation.
    """
    from importlib import resources

    path = Path(str(resources.files("vipann").joinpath("data", "zoo", name)))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the packaged weights of {name!r} are missing from this vipann installation ({path}); "
            "rebuild them with scripts/build_demo_zoo.sh"
        )
    return path


def _unpublished_message(cfg: PretrainedCfg) -> str:
    if cfg.weights == "none":
        return (
            f"{cfg.name!r} is an architecture without pretrained weights; build it with "
            f"vipann.create_model({cfg.name!r}) and train it."
        )
    lines = [
        f"the weights of {cfg.name!r} are not published on the Hugging Face Hub yet "
        f"(tried repository {cfg.hf_hub_id!r}).",
    ]
    command = cfg.convert_command()
    if command:
        lines.append(
            f"Build them locally from the original checkpoint {cfg.source_checkpoint} and load the result:\n"
            f"    {command}\n"
            f"    vipann.from_pretrained('local-dir:./{cfg.name}')"
        )
    return "\n".join(lines)


def _parse_source(name_or_source: str) -> tuple[str, str, str | None]:
    """Split a source into ``(kind, value, revision)``; kind is ``registry``, ``hf-hub`` or ``local-dir``."""
    if not isinstance(name_or_source, str) or not name_or_source:
        raise TypeError(f"from_pretrained expects a non-empty string, got {name_or_source!r}")
    if name_or_source.startswith("hf-hub:"):
        repo, _, rev = name_or_source[len("hf-hub:") :].partition("@")
        from vipann.zoo.hub import check_repo_id

        return "hf-hub", check_repo_id(repo), rev or None
    if name_or_source.startswith("local-dir:"):
        path = name_or_source[len("local-dir:") :]
        if not os.path.isdir(path):
            raise FileNotFoundError(f"local-dir: {path!r} is not a directory")
        return "local-dir", path, None
    is_dir = os.path.isdir(name_or_source)
    if is_model(name_or_source):
        if is_dir:
            hub_id = get_pretrained_cfg(name_or_source).hf_hub_id
            registry = f" or 'hf-hub:{hub_id}' for the registry model's Hub weights" if hub_id else ""
            raise ValueError(
                f"{name_or_source!r} is both a registered model and a directory here; write "
                f"'local-dir:{name_or_source}' for the directory{registry}"
            )
        return "registry", name_or_source, None
    if is_dir:
        return "local-dir", name_or_source, None
    prefix, colon, _ = name_or_source.partition(":")
    if colon and prefix.isidentifier():
        raise ValueError(
            f"unknown source prefix {prefix + ':'!r}; use 'hf-hub:org/name[@revision]' or 'local-dir:PATH'"
        )
    if "/" in name_or_source or "\\" in name_or_source:
        raise ValueError(
            f"{name_or_source!r} looks like a repository or path; write 'hf-hub:{name_or_source}' for a Hub "
            f"repository or 'local-dir:{name_or_source}' for a local directory"
        )
    # Not a registered name: get_pretrained_cfg raises, naming the closest registered names.
    get_pretrained_cfg(name_or_source)
    return "registry", name_or_source, None


def _check_against_registry(config: dict[str, Any], cfg: PretrainedCfg) -> None:
    # The repository behind a registry name must hold the model the entry describes.
    wrong = [
        f"{key} {config[key]!r} (registry: {getattr(cfg, key)!r})"
        for key in ("arch", "method", "num_classes", "multilabel", "sample_rate")
        if config[key] != getattr(cfg, key)
    ]
    if wrong:
        raise CheckpointError(
            f"the files of {cfg.hf_hub_id!r} do not match registry entry {cfg.name!r}: " + "; ".join(wrong)
        )


def from_pretrained(
    name_or_source: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
) -> PANN:
    """Load a pretrained model from the registry, the Hugging Face Hub or a local directory.

    Sources:

    * a registry name (``"flip-resnet54"``): the entry's Hub repository;
    * ``"hf-hub:org/name"`` or ``"hf-hub:org/name@revision"``: any Hub repository written by
      :func:`vipann.save_pretrained`;
    * ``"local-dir:PATH"``, or a plain existing directory: a directory written by
      :func:`vipann.save_pretrained`.

    A bare name containing ``/`` is refused (it could be either a repository or a path); the
    message says which prefix to write. Downloads use ``huggingface_hub``'s cache and honour
    ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE``.

    Args:
        name_or_source: The source, as above.
        revision: Hub branch, tag or commit (Hub sources only; also ``hf-hub:org/name@revision``).
        cache_dir: Hub cache directory (default: ``HF_HUB_CACHE``).
        force_download: Download again even if cached.
        local_files_only: Use only the Hub cache (as ``HF_HUB_OFFLINE=1``).
        token: Hub token for private repositories.
        num_classes: Size of the classifier. When it differs from the checkpoint's, every tensor
            but the classifier is loaded and a fresh classifier of the model's method is created
            (Flipout for ``flip``/``detflip``, behind the MC-dropout site for ``drop``); the
            dropped keys are logged.
        device: Device to put the model on (default: CPU).

    Returns:
        The model in ``eval()`` mode, with ``model.pretrained_cfg`` (its metadata) and
        ``model.pretrained_source`` (``hf-hub:org/name@<commit>`` or ``local-dir:<path>``).

    Raises:
        ValueError: For an unknown name (listing the closest registered names), an ambiguous
            source (the message says what to write), or ``revision`` with a local source.
        RuntimeError: When a registry entry's weights are not published yet; the message gives
            the repository tried and the ``vipann convert`` command that builds the model locally.
        vipann.zoo.hub.HubError: For an unknown repository or revision, or a repository that is not
            a vipann model; :class:`vipann.zoo.hub.NotCachedError` (a ``HubError``) when offline with
            a cold cache, saying how to pre-download.
        FileNotFoundError: For a missing directory, ``config.json`` or ``model.safetensors``.
        vipann.CheckpointError: When the files do not make a valid model (config, checksum, a
            corrupt or truncated weights file, missing/unexpected/mis-shaped tensors).

    Example:
        >>> import vipann
        >>> model = vipann.from_pretrained("flip-resnet54")  # doctest: +SKIP
        >>> model = vipann.from_pretrained("hf-hub:vipann/flip-resnet54@main", num_classes=50)  # doctest: +SKIP
        >>> model = vipann.from_pretrained("local-dir:./flip-resnet54")  # doctest: +SKIP
    """
    from vipann.zoo.serialization import load_pretrained_dir, read_config

    kind, value, source_revision = _parse_source(name_or_source)
    if kind == "local-dir":
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to Hub sources only, not to local directory {value!r}")
        model = load_pretrained_dir(value, num_classes=num_classes, device=device)
        return model.eval()

    from vipann.zoo.hub import download_repo_files

    entry: PretrainedCfg | None = None
    if kind == "registry":
        entry = get_pretrained_cfg(value)
        if entry.weights == "package":
            # Shipped inside the package: the same directory loader as local-dir: and the Hub.
            if revision is not None:
                raise ValueError(f"{value!r} ships inside vipann; it has no revisions")
            model = load_pretrained_dir(package_weights_dir(entry.name), num_classes=num_classes, device=device)
            model.pretrained_cfg = entry.with_classes(model.num_classes)
            model.pretrained_source = f"package:{entry.name}"
            return model.eval()
        if not entry.published or not entry.hf_hub_id:
            raise RuntimeError(_unpublished_message(entry))
        repo_id = entry.hf_hub_id
    else:
        repo_id = value
        if source_revision is not None and revision is not None and source_revision != revision:
            raise ValueError(
                f"two revisions given: {source_revision!r} in {name_or_source!r} and revision={revision!r}"
            )
        revision = revision or source_revision
    snapshot = download_repo_files(
        repo_id,
        revision=revision,
        cache_dir=cache_dir,
        force_download=force_download,
        local_files_only=local_files_only,
        token=token,
    )
    if entry is not None:
        _check_against_registry(read_config(snapshot), entry)
    model = load_pretrained_dir(snapshot, num_classes=num_classes, device=device)
    if entry is not None:
        model.pretrained_cfg = entry.with_classes(model.num_classes)
    else:
        model.pretrained_cfg = replace(model.pretrained_cfg, weights="hub", hf_hub_id=repo_id)
    model.pretrained_source = f"hf-hub:{repo_id}@{Path(snapshot).name}"
    return model.eval()
