"""Building models by name: :func:`create_model` (architecture) and :func:`from_pretrained` (weights).

:func:`create_model` lives in :mod:`vipann.zoo.create` (the converters use it) and is re-exported here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from vipann.models.pann import PANN
from vipann.utils.dirswap import recover_dir
from vipann.zoo.checkpoint import CheckpointError
from vipann.zoo.create import create_model
from vipann.zoo.registry import PretrainedCfg, get_pretrained_cfg, is_model
from vipann.zoo.sources import VIPANN_BOX_PAGE

__all__ = ["create_model", "from_pretrained", "package_weights_dir"]

logger = logging.getLogger("vipann.zoo")


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
    if cfg.weights == "vipann":
        lines = [
            f"the weights of {cfg.name!r} are VI-PANN's trained {cfg.source_checkpoint}, which has no direct "
            f"download link or published checksum (and is not on the Hub as {cfg.hf_hub_id!r} yet): it is shared "
            f"on the Box folder page {VIPANN_BOX_PAGE}",
            f"Download {cfg.source_checkpoint} there, then either import it into the vipann cache once "
            f"(vipann.from_pretrained({cfg.name!r}) then works, offline too):",
            f"    vipann zoo import {cfg.source_checkpoint}",
            "or convert it into a directory and load that:",
            f"    {cfg.convert_command()}",
            f"    vipann.from_pretrained('local-dir:./{cfg.name}')",
        ]
    else:
        lines = [
            f"no trained weights of {cfg.name!r} are published (and {cfg.hf_hub_id!r} is not on the Hub): the "
            "only public VI-trained AudioSet weights are VI-PANN's flipout.pth (flip-resnet54), shared on the Box "
            f"folder page {VIPANN_BOX_PAGE} and converted with `vipann convert vipann flipout.pth`.",
        ]
    base = f"det-{cfg.arch}" + (f".{cfg.tag}" if cfg.tag else "")
    if cfg.method in ("flip", "detflip") and is_model(base) and get_pretrained_cfg(base).weights != "none":
        lines.append(
            f"An untrained model, MOPED-initialised from the weights of {base}, is built only on request: "
            f"vipann.from_pretrained({cfg.name!r}, moped_delta=0.5) (its variances are not trained, so its "
            "uncertainty is not calibrated)."
        )
    return "\n".join(lines)


def _moped_model(cfg: PretrainedCfg, delta: float, load: Any) -> PANN:
    """An untrained ``flip``/``detflip`` model by MOPED from the weights of the entry's ``det`` counterpart."""
    from vipann.zoo.convert import moped

    if cfg.method not in ("flip", "detflip"):
        raise ValueError(f"moped_delta builds flip or detflip models; {cfg.name!r} is a {cfg.method} model")
    if not delta > 0:
        raise ValueError(f"moped_delta must be positive, got {delta}")
    base_name = f"det-{cfg.arch}" + (f".{cfg.tag}" if cfg.tag else "")
    base = load(base_name)
    model = moped(base, cfg.method, delta=float(delta))
    note = "MOPED-initialised, not trained"
    model.pretrained_cfg = replace(
        cfg.with_classes(
            model.num_classes, base.pretrained_cfg.labels if base.num_classes != cfg.num_classes else None
        ),
        description=f"{cfg.description.split(' (')[0]} ({note})",
        provenance=(
            f"{note}: the weights of {base_name} ({base.pretrained_cfg.source_checkpoint or 'its checkpoint'}) as "
            f"posterior means, sigma = {float(delta):g}·|w| (MOPED, prior N(0, 1)); the variances were never "
            "trained, so the uncertainty is not calibrated."
        ),
        metrics={},
        metrics_source="",
        tags=(*cfg.tags, "moped-untrained"),
    )
    model.pretrained_source = f"moped(delta={float(delta):g}):{getattr(base, 'pretrained_source', base_name)}"
    logger.warning("%s: %s (MOPED delta %g from %s)", cfg.name, note, delta, base_name)
    return model.eval()


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
        recover_dir(os.path.abspath(path))  # a save of it killed between its two renames is finished first
        if not os.path.isdir(path):
            raise FileNotFoundError(f"local-dir: {path!r} is not a directory")
        return "local-dir", path, None
    if os.sep in name_or_source or "/" in name_or_source:
        recover_dir(os.path.abspath(name_or_source))
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
    moped_delta: float | None = None,
) -> PANN:
    """Load a pretrained model from the registry, the Hugging Face Hub or a local directory.

    Sources:

    * a registry name (``"drop-cnn14"``), resolved in this order: the entry's Hub repository (when
      it is published); the zoo cache of an earlier conversion; the original release file, which is
      downloaded (progress bar, resumed if interrupted), checked against its published checksum,
      converted with the entry's recipe and cached (:mod:`vipann.zoo.release`). The
      ``vipann.zoo`` log names each step, the sizes and the cache paths;
    * ``"hf-hub:org/name"`` or ``"hf-hub:org/name@revision"``: any Hub repository written by
      :func:`vipann.save_pretrained`;
    * ``"local-dir:PATH"``, or a plain existing directory: a directory written by
      :func:`vipann.save_pretrained`.

    A bare name containing ``/`` is refused (it could be either a repository or a path); the
    message says which prefix to write. Hub downloads use ``huggingface_hub``'s cache and honour
    ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE``; release files honour ``HF_HUB_OFFLINE``
    and ``VIPANN_PANNS_ENDPOINT`` (a mirror of ``https://zenodo.org``) and are cached under
    ``$VIPANN_CACHE_DIR/zoo`` (``~/.cache/vipann/zoo``).

    Args:
        name_or_source: The source, as above.
        revision: Hub branch, tag or commit (Hub sources only; also ``hf-hub:org/name@revision``).
        cache_dir: Cache directory, for the Hub's files and the zoo's (default: ``HF_HUB_CACHE``
            and ``$VIPANN_CACHE_DIR/zoo``).
        force_download: Download (and convert) again even if cached.
        local_files_only: Use only the caches (as ``HF_HUB_OFFLINE=1``).
        token: Hub token for private repositories.
        num_classes: Size of the classifier. When it differs from the checkpoint's, every tensor
            but the classifier is loaded and a fresh classifier of the model's method is created
            (Flipout for ``flip``/``detflip``, behind the MC-dropout site for ``drop``); the
            dropped keys are logged.
        device: Device to put the model on (default: CPU).
        moped_delta: For a ``flip``/``detflip`` registry name only: build an untrained model by
            MOPED (sigma = delta·|w|) from the weights of the entry's ``det`` counterpart. Its
            config, card and log say "MOPED-initialised, not trained". Never done implicitly.

    Returns:
        The model in ``eval()`` mode, with ``model.pretrained_cfg`` (its metadata) and
        ``model.pretrained_source`` (``hf-hub:org/name@<commit>`` or ``local-dir:<path>``).

    Raises:
        ValueError: For an unknown name (listing the closest registered names), an ambiguous
            source (the message says what to write), ``revision`` with a local source, or
            ``moped_delta`` with anything but a ``flip``/``detflip`` name.
        RuntimeError: When no trained weights of an entry can be fetched (``flip``/``detflip``: the
            message names VI-PANN's Box page, the ``vipann convert vipann flipout.pth`` command and
            ``moped_delta``).
        vipann.zoo.hub.HubError: For an unknown repository or revision, or a repository that is not
            a vipann model; :class:`vipann.zoo.hub.NotCachedError` (a ``HubError``) when offline with
            a cold cache, naming the file, where to get it and how to import it.
        vipann.zoo.download.DownloadError: When a release file cannot be downloaded.
        vipann.zoo.download.ChecksumMismatchError: When a downloaded release file is not the
            published one (it is deleted; nothing is cached).
        FileNotFoundError: For a missing directory, ``config.json`` or ``model.safetensors``.
        vipann.CheckpointError: When the files do not make a valid model (config, checksum, a
            corrupt or truncated weights file, missing/unexpected/mis-shaped tensors).

    Example:
        >>> import vipann
        >>> model = vipann.from_pretrained("drop-cnn14")  # doctest: +SKIP
        >>> model = vipann.from_pretrained("hf-hub:vipann/flip-resnet54@main", num_classes=50)  # doctest: +SKIP
        >>> model = vipann.from_pretrained("local-dir:./flip-resnet54")  # doctest: +SKIP
        >>> untrained = vipann.from_pretrained("flip-cnn14", moped_delta=0.1)  # doctest: +SKIP
    """
    from vipann.zoo.serialization import load_pretrained_dir

    kind, value, source_revision = _parse_source(name_or_source)
    if moped_delta is not None and kind != "registry":
        raise ValueError(f"moped_delta applies to flip/detflip registry names, not to {name_or_source!r}")
    if kind == "local-dir":
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to Hub sources only, not to local directory {value!r}")
        model = load_pretrained_dir(value, num_classes=num_classes, device=device)
        return model.eval()
    options: dict[str, Any] = dict(
        cache_dir=cache_dir, force_download=force_download, local_files_only=local_files_only, token=token
    )
    if kind == "registry":
        entry = get_pretrained_cfg(value)
        if moped_delta is not None:
            return _moped_model(
                entry,
                moped_delta,
                lambda base: from_pretrained(
                    base, revision=revision, num_classes=num_classes, device=device, **options
                ),
            )
        return _from_registry(entry, revision, options, num_classes, device)
    repo_id = value
    if source_revision is not None and revision is not None and source_revision != revision:
        raise ValueError(f"two revisions given: {source_revision!r} in {name_or_source!r} and revision={revision!r}")
    model = _from_hub(repo_id, None, revision or source_revision, options, num_classes, device)
    model.pretrained_cfg = replace(model.pretrained_cfg, weights="hub", hf_hub_id=repo_id)
    return model


def _from_hub(
    repo_id: str,
    entry: PretrainedCfg | None,
    revision: str | None,
    options: dict[str, Any],
    num_classes: int | None,
    device: torch.device | str | None,
) -> PANN:
    from vipann.zoo.hub import download_repo_files
    from vipann.zoo.serialization import load_pretrained_dir, read_config

    snapshot = download_repo_files(repo_id, revision=revision, **options)
    if entry is not None:
        _check_against_registry(read_config(snapshot), entry)
    model = load_pretrained_dir(snapshot, num_classes=num_classes, device=device)
    if entry is not None:
        model.pretrained_cfg = entry.with_classes(model.num_classes)
    model.pretrained_source = f"hf-hub:{repo_id}@{Path(snapshot).name}"
    return model.eval()


def _from_registry(
    entry: PretrainedCfg,
    revision: str | None,
    options: dict[str, Any],
    num_classes: int | None,
    device: torch.device | str | None,
) -> PANN:
    from vipann.zoo.hub import HubError
    from vipann.zoo.release import SourceNotCachedError, cached_conversion, load_release
    from vipann.zoo.serialization import load_pretrained_dir

    if entry.weights == "package":
        # Shipped inside the package: the same directory loader as local-dir: and the Hub.
        if revision is not None:
            raise ValueError(f"{entry.name!r} ships inside vipann; it has no revisions")
        model = load_pretrained_dir(package_weights_dir(entry.name), num_classes=num_classes, device=device)
        model.pretrained_cfg = entry.with_classes(model.num_classes)
        model.pretrained_source = f"package:{entry.name}"
        return model.eval()
    from_release = entry.source is not None and entry.source.downloadable and entry.result == "exact"
    hub_error: HubError | None = None
    if entry.published and entry.hf_hub_id:
        try:
            return _from_hub(entry.hf_hub_id, entry, revision, options, num_classes, device)
        except HubError as exc:
            if not from_release or revision is not None:
                raise
            hub_error = exc
            logger.warning(
                "%s: the Hub repository %s cannot be used (%s); falling back to the original release",
                entry.name,
                entry.hf_hub_id,
                exc,
            )
    if revision is not None:
        raise ValueError(
            f"revision={revision!r} applies to Hub repositories; {entry.name!r} is not published on the Hub, it is "
            f"built from {entry.source_checkpoint}"
        )
    release_options = {k: options[k] for k in ("cache_dir", "force_download", "local_files_only")}
    if from_release:
        try:
            model = load_release(entry, num_classes=num_classes, device=device, **release_options)
        except SourceNotCachedError as exc:
            if hub_error is None:
                raise
            raise SourceNotCachedError(f"{exc}\n(The Hub repository was tried first: {hub_error})") from exc
    elif entry.weights == "vipann" and (path := cached_conversion(entry, options["cache_dir"])) is not None:
        logger.info("%s: found the imported %s in the vipann cache: %s", entry.name, entry.source_checkpoint, path)
        model = load_pretrained_dir(path, num_classes=num_classes, device=device)
    else:
        raise RuntimeError(_unpublished_message(entry))
    model.pretrained_cfg = entry.with_classes(model.num_classes)
    return model.eval()
