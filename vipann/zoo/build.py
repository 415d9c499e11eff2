"""The zoo from its original files: build Hub-ready directories, publish them, import files into the cache.

* :func:`build_zoo` (``vipann zoo build --from DIR --out ZOO``): every registry entry whose trained
  weights are an original file found in ``DIR`` (the PANNs release files, and VI-PANN's
  ``flipout.pth`` when present) becomes ``ZOO/<name>``: ``model.safetensors``, ``config.json`` and a
  card with the provenance, the checksums and the release's metrics.
* :func:`publish_zoo` (``vipann zoo publish ZOO --org ORG``): pushes every directory of ``ZOO`` to
  ``ORG/<name>`` on the Hub (:func:`vipann.zoo.hub.push_to_hub`).
* :func:`import_file` (``vipann zoo import FILE``): puts an original file fetched elsewhere into
  the zoo cache, after checking it, so that ``from_pretrained(name)`` works offline.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vipann.utils.atomic import write_text_atomic
from vipann.utils.integrity import seal_json
from vipann.zoo.cards import render_card
from vipann.zoo.checkpoint import CheckpointError
from vipann.zoo.config import CONFIG_SHA256, validate_config
from vipann.zoo.download import ChecksumMismatchError, file_digests, file_lock, format_size
from vipann.zoo.hub import check_repo_id, push_to_hub
from vipann.zoo.registry import PANNS_INFERENCE_FILES, PretrainedCfg, get_pretrained_cfg, list_models
from vipann.zoo.release import (
    CONVERTER_VERSION,
    build_entry,
    load_release,
    source_matches,
    store_source,
    zoo_cache_dir,
)
from vipann.zoo.serialization import CONFIG_NAME, README_NAME, WEIGHTS_NAME, verify_pretrained_dir

__all__ = ["BuildResult", "ImportResult", "build_zoo", "buildable_entries", "import_file", "publish_zoo"]

logger = logging.getLogger("vipann.zoo")


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_zoo` did for one entry.

    Attributes:
        name: The registry name.
        status: ``"built"``, ``"up to date"``, ``"missing"`` (its file is not in the folder) or
            ``"failed"``.
        path: The model directory (for ``built`` and ``up to date``), else None.
        detail: One line: the file used, or what went wrong.
    """

    name: str
    status: str
    path: Path | None
    detail: str


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_file` did.

    Attributes:
        file: The original file's published name.
        stored: Where the file (or, for a file without a published checksum, its conversion) is cached.
        serves: Registry names that now load from the cache.
        built: Names converted during the import.
    """

    file: str
    stored: Path
    serves: list[str]
    built: list[str] = field(default_factory=list)


def buildable_entries() -> list[PretrainedCfg]:
    """Registry entries whose trained weights are an original file (det, drop and VI-PANN's flip-resnet54)."""
    entries = [get_pretrained_cfg(name) for name in list_models()]
    return [c for c in entries if c.source is not None and (c.result == "exact" or c.weights == "vipann")]


def _candidates(folder: Path, cfg: PretrainedCfg) -> list[Path]:
    assert cfg.source is not None
    names = [cfg.source.filename, PANNS_INFERENCE_FILES.get(cfg.arch)]
    return [folder / n for n in dict.fromkeys(names) if n and (folder / n).is_file()]


def _up_to_date(out: Path, digests: dict[str, str]) -> bool:
    try:
        config = verify_pretrained_dir(out)
    except (CheckpointError, FileNotFoundError):
        return False
    recorded = config.get("extra", {}).get("source", {})
    return recorded.get("md5") == digests["md5"] and recorded.get("converter_version") == CONVERTER_VERSION


def build_zoo(
    from_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    pattern: str = "*",
    overwrite: bool = False,
) -> list[BuildResult]:
    """Build every registry entry whose original file is in ``from_dir`` into ``out_dir/<name>``.

    Each file is checked against its published checksum first (a mismatch fails its entries and
    writes nothing); a directory already built from the same file by this converter version is
    kept. Entries whose file is absent are reported as ``missing``.

    Args:
        from_dir: Folder of original checkpoints (``Cnn14_mAP=0.431.pth``, ..., ``flipout.pth``).
        out_dir: Where the model directories go.
        pattern: Only entries matching this ``fnmatch`` pattern.
        overwrite: Replace a directory that was built from another file or converter version.

    Returns:
        One :class:`BuildResult` per entry considered, in name order.

    Raises:
        FileNotFoundError: If ``from_dir`` is not a directory.
    """
    folder, out_root = Path(from_dir), Path(out_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"--from {str(folder)!r} is not a directory")
    wanted = set(list_models(pattern))
    digests_of: dict[Path, dict[str, str]] = {}
    results = []
    for cfg in buildable_entries():
        if cfg.name not in wanted:
            continue
        assert cfg.source is not None
        files = _candidates(folder, cfg)
        if not files:
            results.append(BuildResult(cfg.name, "missing", None, f"{cfg.source.filename} is not in {folder}"))
            continue
        file = files[0]
        if file not in digests_of:
            logger.info("checking %s (%s)", file, format_size(file.stat().st_size))
            digests_of[file] = file_digests(file)
        digests = digests_of[file]
        expected = {"md5": cfg.source.md5, "sha256": cfg.source.sha256}
        wrong = [f"{k}: expected {v}, received {digests[k]}" for k, v in expected.items() if v and digests[k] != v]
        if wrong:
            results.append(BuildResult(cfg.name, "failed", None, f"{file.name} is not the published file: {wrong[0]}"))
            continue
        out = out_root / cfg.name
        if _up_to_date(out, digests):
            results.append(BuildResult(cfg.name, "up to date", out, f"from {file.name}"))
            continue
        if out.exists() and not overwrite:
            results.append(
                BuildResult(cfg.name, "failed", None, f"{out} exists (another file or version); pass --overwrite")
            )
            continue
        try:
            build_entry(cfg, file, out, digests=digests, overwrite=overwrite)
        except (CheckpointError, ValueError) as exc:
            results.append(BuildResult(cfg.name, "failed", None, f"{file.name}: {exc}"))
            continue
        results.append(BuildResult(cfg.name, "built", out, f"from {file.name} ({digests['md5']})"))
    return sorted(results, key=lambda r: r.name)


def _staged_for(directory: Path, config: dict[str, Any], repo_id: str, stage: Path) -> Path:
    """A copy of ``directory`` whose config and card name ``repo_id`` (the weights are hard-linked)."""
    config = {k: v for k, v in config.items() if k != CONFIG_SHA256}
    config = dict(config, hf_hub_id=repo_id)
    validate_config(config, source=f"{directory}/{CONFIG_NAME}")
    config = seal_json(config, CONFIG_SHA256)  # the edited config is sealed again, as save_pretrained seals it
    target = stage / directory.name
    target.mkdir()
    try:
        os.link(directory / WEIGHTS_NAME, target / WEIGHTS_NAME)
    except OSError:
        shutil.copyfile(directory / WEIGHTS_NAME, target / WEIGHTS_NAME)
    write_text_atomic(target / README_NAME, render_card(config))
    write_text_atomic(target / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return target


def publish_zoo(
    zoo_dir: str | os.PathLike[str],
    org: str,
    *,
    dry_run: bool = False,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    api: Any = None,
) -> list[tuple[str, str, list[str]]]:
    """Push every model directory of a zoo folder to ``org/<name>`` on the Hub.

    Every directory is verified before anything is sent (a folder that would not load stops the
    publication). When a directory's ``config.json`` names another repository than ``org/<name>``,
    a copy whose config and card name ``org/<name>`` is uploaded; the folder itself is not changed.

    Args:
        zoo_dir: A folder written by :func:`build_zoo` (one model directory per entry).
        org: The Hub user or organisation.
        dry_run: Only verify and list what would be uploaded.
        private: Create the repositories as private.
        revision: Branch to commit to (default ``main``).
        token: Hub token with write access (default: the saved login / ``HF_TOKEN``).
        api: A ``huggingface_hub.HfApi``-like object (default: a new ``HfApi``).

    Returns:
        ``(name, repo_id, files)`` per directory, in name order.

    Raises:
        FileNotFoundError: If ``zoo_dir`` holds no model directory.
        vipann.CheckpointError: If a directory does not load.
        ValueError: For an invalid ``org``.
    """
    root = Path(zoo_dir)
    directories = sorted(p for p in root.iterdir() if (p / CONFIG_NAME).is_file()) if root.is_dir() else []
    if not directories:
        raise FileNotFoundError(f"{str(root)!r} holds no model directory (build one with `vipann zoo build`)")
    configs = {d: verify_pretrained_dir(d) for d in directories}
    published = []
    with tempfile.TemporaryDirectory(prefix=".publish-", dir=root) as stage:
        for directory, config in configs.items():
            repo_id = check_repo_id(f"{org}/{config['name']}")
            folder = directory
            if config.get("hf_hub_id") != repo_id and not dry_run:
                folder = _staged_for(directory, config, repo_id, Path(stage))
            logger.info("%s %s to %s", "would upload" if dry_run else "uploading", directory, repo_id)
            files = push_to_hub(
                folder, repo_id, revision=revision, private=private, token=token, dry_run=dry_run, api=api
            )
            published.append((config["name"], repo_id, files))
    return published


def import_file(
    path: str | os.PathLike[str],
    *,
    names: tuple[str, ...] | list[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
) -> ImportResult:
    """Import an original file fetched elsewhere into the zoo cache (``vipann zoo import``).

    A release file is recognised by its checksum (so a renamed copy works), copied into the cache
    and converted on first use (or now, for ``names``). An EfficientAT release file (no published
    checksum) is recognised by its name and its SHA-256 recorded (a later, different copy is
    refused). VI-PANN's ``flipout.pth``, which has no
    published checksum, is recognised by its name (or ``names=["flip-resnet54"]``) and converted
    into the cache at once; the conversion checks every tensor.

    Args:
        path: The file.
        names: Registry names to convert now.
        cache_dir: Cache root (default: ``$VIPANN_CACHE_DIR/zoo``).

    Returns:
        What was imported.

    Raises:
        FileNotFoundError: If the file does not exist.
        ChecksumMismatchError: If it is named like a published file but is not that file.
        ValueError: If it is none of the zoo's files, or ``names`` are not served by it.
        vipann.CheckpointError: If a conversion fails.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    entries = buildable_entries()
    digests = file_digests(path)
    published = [c for c in entries if c.source is not None and (c.source.md5 or c.source.sha256)]
    known = [c for c in published if source_matches(c.source, digests)]  # type: ignore[arg-type]
    if known:
        source = known[0].source
        assert source is not None
        unknown = [n for n in names if n not in {c.name for c in known}]
        if unknown:
            raise ValueError(f"{path.name} is {source.filename}; it does not make {unknown}")
        stored = store_source(path, source, cache_dir=cache_dir, digests=digests)
        for name in names:
            load_release(get_pretrained_cfg(name), cache_dir=cache_dir, local_files_only=True)
        return ImportResult(source.filename, stored, [c.name for c in known], list(names))
    named = [c for c in entries if path.name in (c.source.filename, PANNS_INFERENCE_FILES.get(c.arch))]  # type: ignore[union-attr]
    first_use = [c for c in named if c.source.first_use and not c.source.published_checksum]  # type: ignore[union-attr]
    if first_use:
        # Published without a checksum (EfficientAT): recognised by its name; the first copy's SHA-256
        # is recorded and a later, different file is refused.
        source = first_use[0].source
        assert source is not None
        unknown = [n for n in names if n not in {c.name for c in first_use}]
        if unknown:
            raise ValueError(f"{path.name} is {source.filename}; it does not make {unknown}")
        stored = store_source(path, source, cache_dir=cache_dir, digests=digests)
        for name in names:
            load_release(get_pretrained_cfg(name), cache_dir=cache_dir, local_files_only=True)
        return ImportResult(source.filename, stored, [c.name for c in first_use], list(names))
    misnamed = [c for c in named if c in published]
    if misnamed:
        source = misnamed[0].source
        assert source is not None
        raise ChecksumMismatchError(
            f"{path} is named like the published {source.filename} but is not that file: expected {source.checksum}, "
            f"received md5:{digests['md5']}; download it again ({source.url}); nothing was imported"
        )
    targets = [get_pretrained_cfg(n) for n in names] if names else [c for c in named if c.weights == "vipann"]
    if not targets or any(c.weights != "vipann" for c in targets):
        files = sorted({c.source.filename for c in entries if c.source})
        raise ValueError(
            f"{path.name} (md5 {digests['md5']}) is none of the zoo's original files ({', '.join(files)}); "
            "a renamed flipout.pth needs --name flip-resnet54"
        )
    root = zoo_cache_dir(cache_dir)
    built = []
    for cfg in targets:
        out = root / "converted" / cfg.name / f"{digests['md5']}-c{CONVERTER_VERSION}"
        with file_lock(root / ".locks" / f"{cfg.name}--{out.name}.lock", f"converting {cfg.name}"):
            build_entry(cfg, path, out, digests=digests, overwrite=True)
        built.append(cfg.name)
    return ImportResult(path.name, out.parent, built, built)
