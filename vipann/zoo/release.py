"""Registry entries built from their original release files on first use, and the cache that keeps them.

For an entry whose weights are an original release file (``weights="release"``: every ``det-*``
and ``drop-*`` AudioSet entry), :func:`load_release` looks in the cache for an earlier conversion;
failing that it downloads the file (progress bar, resume, :mod:`vipann.zoo.download`), verifies its
published checksum, converts it with the entry's recipe (:func:`convert_source`), writes the model
directory into the cache and loads it. Each step is logged on ``vipann.zoo``, with sizes and paths.

The cache (default ``$VIPANN_CACHE_DIR/zoo``, else ``$XDG_CACHE_HOME/vipann/zoo``, else
``~/.cache/vipann/zoo``; ``cache_dir=`` replaces it) holds::

    sources/<md5>/<file>                the verified original file (det- and drop- entries share it)
    sources/<md5>/<file>.incomplete     a partial download, resumed by the next call
    converted/<name>/<md5>-c<version>/  the model directory: config.json, model.safetensors, README.md
    .locks/                             one lock per source file and per converted entry

A converted entry is keyed by its source's checksum and :data:`CONVERTER_VERSION`, written
atomically (:func:`vipann.zoo.serialization.save_pretrained`) with the SHA-256 of its weights and
the source's provenance in ``config.json``, under a lock, so processes loading the same name at
once end with one valid entry.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from vipann.models.pann import PANN
from vipann.utils.atomic import write_text_atomic
from vipann.zoo.checkpoint import CheckpointError
from vipann.zoo.convert import from_efficientat_checkpoint, from_panns_checkpoint, from_vipann_checkpoint
from vipann.zoo.download import download_file, file_digests, file_lock, format_size, offline_mode
from vipann.zoo.hub import NotCachedError
from vipann.zoo.registry import PretrainedCfg
from vipann.zoo.serialization import CONFIG_NAME, WEIGHTS_NAME, load_pretrained_dir, save_pretrained
from vipann.zoo.sources import SourceFile

__all__ = [
    "CONVERTER_VERSION",
    "FIRST_USE_KEY",
    "SourceNotCachedError",
    "build_entry",
    "cached_conversion",
    "convert_source",
    "fetch_source",
    "load_release",
    "recorded_sha256",
    "source_key",
    "source_matches",
    "store_source",
    "zoo_cache_dir",
]

logger = logging.getLogger("vipann.zoo")

#: Version of the conversion recipes; a cached conversion of another version is not used.
CONVERTER_VERSION = 1
_CONVERTERS = {
    "panns": "vipann.zoo.convert.from_panns_checkpoint",
    "vipann": "vipann.zoo.convert.from_vipann_checkpoint",
    "efficientat": "vipann.zoo.convert.from_efficientat_checkpoint",
}
#: Cache key of the files published without a checksum (``SourceFile.first_use``).
FIRST_USE_KEY = "first-use"


class SourceNotCachedError(NotCachedError):
    """An original release file is not cached, and offline mode (or ``local_files_only``) forbids downloading it."""


def zoo_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The root of the zoo cache: ``cache_dir``, else ``$VIPANN_CACHE_DIR/zoo`` (or the XDG default)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from vipann.datasets.cache import default_cache_dir

    return default_cache_dir("zoo")


def source_key(source: SourceFile) -> str:
    """The cache key of a source file: its published MD5 (or SHA-256), or ``first-use`` without one."""
    key = source.md5 or source.sha256
    if key is None and source.first_use:
        return FIRST_USE_KEY
    if key is None:
        raise ValueError(f"{source.filename} has no published checksum; it can only be imported")
    return key


def _record_path(root: Path, source: SourceFile) -> Path:
    return root / "sources" / FIRST_USE_KEY / f"{source.filename}.sha256"


def recorded_sha256(source: SourceFile, cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The SHA-256 recorded at the first download (or import) of a file published without a checksum."""
    if not source.first_use or source.published_checksum:
        return None
    path = _record_path(zoo_cache_dir(cache_dir), source)
    return path.read_text(encoding="utf-8").split()[0] if path.is_file() else None


def _record(root: Path, source: SourceFile, digests: dict[str, str]) -> None:
    if source.first_use and not source.published_checksum and not _record_path(root, source).is_file():
        write_text_atomic(_record_path(root, source), f"{digests['sha256']}  {source.filename}\n")
        logger.warning(
            "%s has no published checksum: recorded the sha256 of this first copy (%s); a later file that "
            "differs is refused",
            source.filename,
            digests["sha256"],
        )


def _expected(source: SourceFile, root: Path) -> tuple[str | None, str | None]:
    """The ``(md5, sha256)`` a file must have: the published checksums, or the one recorded on first use."""
    if source.published_checksum or not source.first_use:
        return source.md5, source.sha256
    return None, recorded_sha256(source, root)


def source_matches(
    source: SourceFile, digests: dict[str, str], cache_dir: str | os.PathLike[str] | None = None
) -> bool:
    """Whether a file's ``{"md5", "sha256"}`` digests match the checksums ``source`` must have.

    These are the published checksums, or for a file published without one the SHA-256 recorded
    on first use (any file matches before that).
    """
    md5, sha256 = _expected(source, zoo_cache_dir(cache_dir))
    return (md5 is None or digests["md5"] == md5) and (sha256 is None or digests["sha256"] == sha256)


def _expected_text(source: SourceFile, root: Path) -> str:
    sha256 = _expected(source, root)[1]
    if source.published_checksum or sha256 is None:
        return source.checksum
    return f"sha256:{sha256} (recorded at its first download; no checksum is published)"


def _not_cached(name: str, source: SourceFile, root: Path, reason: str, explicit_root: bool) -> SourceNotCachedError:
    option = f" --cache-dir {root}" if explicit_root else ""
    mirror = source.url_at()
    lines = [
        f"{name}: its original file {source.filename} is not in the vipann cache ({root}) and {reason}.",
        f"Download it on a machine with network access ({format_size(source.size)}, {source.checksum}):",
        f"    {source.url}",
    ]
    if mirror != source.url:
        lines.append(f"    (or from the mirror {source.endpoint_variable} names: {mirror})")
    lines += [
        "then import it here, once ("
        + (
            "its sha256 is recorded"
            if source.first_use and not source.published_checksum
            else "the checksum is verified"
        )
        + "):",
        f"    vipann zoo import {source.filename}{option}",
        f"and load {name!r} again: it is converted and cached on first use, offline.",
    ]
    return SourceNotCachedError("\n".join(lines))


def _locks(root: Path) -> Path:
    return root / ".locks"


def store_source(
    file: str | os.PathLike[str],
    source: SourceFile,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    digests: dict[str, str] | None = None,
) -> Path:
    """Copy a verified original file into the cache (``vipann zoo import``), atomically.

    Args:
        file: The file.
        source: The release file it is.
        cache_dir: Cache root (default: :func:`zoo_cache_dir`).
        digests: Its digests when already computed.

    Returns:
        The cached copy.

    Raises:
        ChecksumMismatchError: When the file is not the published one.
    """
    from vipann.zoo.download import ChecksumMismatchError

    root = zoo_cache_dir(cache_dir)
    digests = digests or file_digests(file)
    if not source_matches(source, digests, root):
        raise ChecksumMismatchError(
            f"{file} is not the published {source.filename}: expected {_expected_text(source, root)}, received "
            f"md5:{digests['md5']} (sha256:{digests['sha256']}); nothing was imported"
        )
    key = source_key(source)
    target = root / "sources" / key / source.filename
    with file_lock(_locks(root) / f"{key}.lock", f"importing {source.filename}"):
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".incomplete")
        try:
            shutil.copyfile(file, part)
            if file_digests(part) != digests:
                raise OSError(f"the copy of {file} in {part} differs from the original (disk error?)")
            os.replace(part, target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        _record(root, source, digests)
    logger.info(
        "imported %s (%s) into the vipann cache: %s", source.filename, format_size(target.stat().st_size), target
    )
    return target


def fetch_source(
    source: SourceFile,
    *,
    name: str,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
) -> tuple[Path, dict[str, str], str | None]:
    """The verified original file of an entry, from the cache or downloaded into it.

    Args:
        source: The release file.
        name: The entry it is fetched for (in messages).
        cache_dir: Cache root (default: :func:`zoo_cache_dir`).
        force_download: Download again even if the file is cached.
        local_files_only: Use only the cache (as ``HF_HUB_OFFLINE=1`` does).

    Returns:
        ``(path, digests, url)``; ``url`` is None when the file came from the cache.

    Raises:
        SourceNotCachedError: When it is not cached and downloading is not allowed; the message
            names the file, the URL to fetch elsewhere and the import command.
        vipann.zoo.download.DownloadError: When the download fails.
        vipann.zoo.download.ChecksumMismatchError: When the download is not the published file
            (it is deleted; nothing is cached).
    """
    root = zoo_cache_dir(cache_dir)
    key = source_key(source)
    target = root / "sources" / key / source.filename
    with file_lock(_locks(root) / f"{key}.lock", f"downloading {source.filename}"):
        if target.is_file() and not force_download:
            digests = file_digests(target)
            if source_matches(source, digests, root):
                logger.info("%s: using the cached original %s (%s)", name, target, format_size(target.stat().st_size))
                return target, digests, None
            logger.warning(
                "%s: the cached %s does not match its checksum (%s, received md5:%s); it is deleted",
                name,
                target,
                _expected_text(source, root),
                digests["md5"],
            )
            target.unlink()
        if force_download:
            target.unlink(missing_ok=True)
            target.with_name(target.name + ".incomplete").unlink(missing_ok=True)
        if local_files_only or offline_mode():
            reason = "local_files_only=True" if local_files_only else "offline mode is on (HF_HUB_OFFLINE=1)"
            raise _not_cached(name, source, root, reason, cache_dir is not None)
        url = source.url_at()
        if url is None:
            raise ValueError(f"{source.filename} has no direct download link; get it from {source.page}")
        logger.info(
            "%s: downloading %s (%s, %s) from %s into %s",
            name,
            source.filename,
            format_size(source.size),
            source.checksum,
            url,
            target.parent,
        )
        md5, sha256 = _expected(source, root)
        try:
            digests = download_file(url, target, size=source.size, md5=md5, sha256=sha256)
        except CheckpointError as exc:
            # A checksum mismatch: the download is gone; leave no empty folder behind either.
            if target.parent.is_dir() and not any(target.parent.iterdir()):
                target.parent.rmdir()
            if source.first_use and sha256 is not None:
                raise type(exc)(
                    f"{exc}\n{source.filename} is published without a checksum; this download differs from the "
                    f"first one vipann recorded (sha256:{sha256}, in {_record_path(root, source)}): the "
                    "publisher may have replaced the file. Nothing was converted; delete that record to "
                    "accept the new file."
                ) from None
            raise
        _record(root, source, digests)
    return target, digests, url


def convert_source(cfg: PretrainedCfg, path: str | os.PathLike[str]) -> PANN:
    """Convert an original file into the model of a registry entry, with the entry's recipe.

    Args:
        cfg: The entry (its ``conversion``: ``"panns"`` or ``"vipann"``).
        path: The original file.

    Returns:
        The model in ``eval()`` mode, with the entry as ``pretrained_cfg``.

    Raises:
        ValueError: For an entry without a conversion.
        vipann.CheckpointError: When the file does not convert (names what does not fit).
    """
    if cfg.conversion == "panns":
        model = from_panns_checkpoint(path, cfg.name)
    elif cfg.conversion == "vipann":
        model = from_vipann_checkpoint(path, cfg.name)
    elif cfg.conversion == "efficientat":
        model = from_efficientat_checkpoint(path, cfg.name)
    else:
        raise ValueError(f"registry entry {cfg.name!r} has no conversion recipe")
    model.pretrained_cfg = cfg
    return model.eval()


def source_metadata(
    cfg: PretrainedCfg, path: str | os.PathLike[str], digests: dict[str, str], url: str | None
) -> dict[str, Any]:
    """The provenance of a conversion, stored as ``config.json["extra"]["source"]`` and shown on the card."""
    assert cfg.source is not None and cfg.conversion is not None
    source = cfg.source
    return {
        "file": source.filename,
        "publisher": source.publisher,
        "page": source.page,
        "url": source.url,
        "downloaded_from": url,
        "size": Path(path).stat().st_size,
        "md5": digests["md5"],
        "sha256": digests["sha256"],
        "published_checksum": source.checksum,
        "converter": _CONVERTERS[cfg.conversion],
        "converter_version": CONVERTER_VERSION,
        "result": cfg.result,
        "release_metrics": {k: dict(v) for k, v in source.metrics.items()},
    }


def build_entry(
    cfg: PretrainedCfg,
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    digests: dict[str, str] | None = None,
    url: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert an original file into a model directory with its provenance (cache and ``vipann zoo build``).

    Args:
        cfg: The registry entry.
        path: The verified original file.
        out: The directory to write (atomically).
        digests: The file's digests when already computed.
        url: Where the file was downloaded from, if it was.
        overwrite: Replace an existing directory.

    Returns:
        ``out``.
    """
    digests = digests or file_digests(path)
    logger.info(
        "%s: converting %s with %s (converter version %d)",
        cfg.name,
        Path(path).name,
        _CONVERTERS[cfg.conversion or ""],
        CONVERTER_VERSION,
    )
    model = convert_source(cfg, path)
    meta = source_metadata(cfg, path, digests, url)
    out = save_pretrained(model, out, overwrite=overwrite, extra_metadata={"source": meta})
    logger.info(
        "%s: wrote %s (%s) to %s", cfg.name, WEIGHTS_NAME, format_size((out / WEIGHTS_NAME).stat().st_size), out
    )
    return out


def cached_conversion(cfg: PretrainedCfg, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The cached conversion of an entry for this converter version, if there is one.

    For an entry whose source has a published checksum, only the conversion of that file counts;
    for one without (VI-PANN's ``flipout.pth``), the most recent imported conversion.
    """
    if cfg.source is None:
        return None
    folder = zoo_cache_dir(cache_dir) / "converted" / cfg.name
    if cfg.source.published_checksum or cfg.source.first_use:
        candidates = [folder / f"{source_key(cfg.source)}-c{CONVERTER_VERSION}"]
    else:
        candidates = sorted(folder.glob(f"*-c{CONVERTER_VERSION}"), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((p for p in candidates if (p / CONFIG_NAME).is_file()), None)


def _converted(
    cfg: PretrainedCfg, cache_dir: str | os.PathLike[str] | None, force_download: bool, local_files_only: bool
) -> Path:
    assert cfg.source is not None
    root = zoo_cache_dir(cache_dir)
    target = root / "converted" / cfg.name / f"{source_key(cfg.source)}-c{CONVERTER_VERSION}"
    if not force_download and cached_conversion(cfg, cache_dir) == target:
        logger.info("%s: found in the vipann cache: %s", cfg.name, target)
        return target
    no_network = local_files_only or offline_mode()
    if no_network and not (root / "sources" / source_key(cfg.source) / cfg.source.filename).is_file():
        # Offline with a cold cache: say so before taking any lock (nothing is written).
        reason = "local_files_only=True" if local_files_only else "offline mode is on (HF_HUB_OFFLINE=1)"
        raise _not_cached(cfg.name, cfg.source, root, reason, cache_dir is not None)
    with file_lock(_locks(root) / f"{cfg.name}--{target.name}.lock", f"converting {cfg.name}"):
        if not force_download and cached_conversion(cfg, cache_dir) == target:
            logger.info("%s: built by another process meanwhile: %s", cfg.name, target)
            return target
        path, digests, url = fetch_source(
            cfg.source,
            name=cfg.name,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
        )
        build_entry(cfg, path, target, digests=digests, url=url, overwrite=True)
    return target


def load_release(
    cfg: PretrainedCfg,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
) -> PANN:
    """Load a registry entry built from its original release file: from the cache, or fetched and converted.

    Args:
        cfg: A registry entry with ``weights="release"`` (or a published entry with a release source).
        cache_dir: Cache root (default: :func:`zoo_cache_dir`).
        force_download: Download and convert again even if cached.
        local_files_only: Use only the cache (as ``HF_HUB_OFFLINE=1`` does).
        num_classes: Size of the classifier (see :func:`vipann.zoo.serialization.load_pretrained_dir`).
        device: Device to put the model on.

    Returns:
        The model in ``eval()`` mode; ``pretrained_source`` is ``local-dir:<cached directory>``.

    Raises:
        SourceNotCachedError: Offline (or ``local_files_only``) with a cold cache.
        vipann.zoo.download.DownloadError: When the download fails.
        vipann.zoo.download.ChecksumMismatchError: When the download is not the published file.
        vipann.CheckpointError: When the file does not convert.
    """
    if cfg.source is None or not cfg.source.downloadable:
        raise ValueError(f"{cfg.name!r} has no original release file to download")
    target = _converted(cfg, cache_dir, force_download, local_files_only)
    try:
        model = load_pretrained_dir(target, num_classes=num_classes, device=device)
    except (CheckpointError, FileNotFoundError) as exc:
        logger.warning("%s: the cached conversion %s does not load (%s); it is built again", cfg.name, target, exc)
        root = zoo_cache_dir(cache_dir)
        with file_lock(_locks(root) / f"{cfg.name}--{target.name}.lock", f"converting {cfg.name}"):
            shutil.rmtree(target, ignore_errors=True)
        target = _converted(cfg, cache_dir, False, local_files_only)
        model = load_pretrained_dir(target, num_classes=num_classes, device=device)
    logger.info("%s: loaded from %s", cfg.name, target)
    return model
