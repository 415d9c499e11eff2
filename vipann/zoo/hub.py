"""Hugging Face Hub transfers: download a model repository, push a model directory.

This is the only vipann module that imports ``huggingface_hub``, and it does so inside functions,
so ``import vipann`` stays light. Downloads go through ``hf_hub_download`` and its cache; the
Hub's own settings apply unchanged (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``,
``HF_TOKEN``), and the arguments keep the Hub's names (``revision``, ``cache_dir``,
``force_download``, ``local_files_only``, ``token``).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from vipann._version import __version__
from vipann.zoo.serialization import CONFIG_NAME, README_NAME, WEIGHTS_NAME, verify_pretrained_dir

__all__ = ["HubError", "NotCachedError", "download_repo_files", "push_to_hub"]

_COMMIT = re.compile(r"[0-9a-f]{40}")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


class HubError(RuntimeError):
    """A Hub transfer failed: unknown repository or revision, a repository that is not a vipann model, ..."""


class NotCachedError(HubError):
    """The files are not in the local cache and the Hub may not (offline mode) or cannot be reached."""


def check_repo_id(repo_id: str) -> str:
    """Validate a Hub repository id.

    Args:
        repo_id: ``org/name``.

    Returns:
        ``repo_id``.

    Raises:
        ValueError: If it is not of the form ``org/name``.
    """
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise ValueError(f"Hub repository ids have the form 'org/name', got {repo_id!r}")
    return repo_id


def _download_hint(repo_id: str, revision: str | None, cache_dir: str | os.PathLike[str] | None) -> str:
    options = (f" --revision {revision}" if revision else "") + (f" --cache-dir {cache_dir}" if cache_dir else "")
    return (
        f"Run once with network access, or pre-download the repository with `hf download {repo_id}{options}` "
        f"(`huggingface-cli download {repo_id}{options}` with older huggingface_hub) and retry; or load a "
        "directory written by vipann.save_pretrained with 'local-dir:PATH'."
    )


def download_repo_files(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """Download (or find in the Hub cache) the files of a vipann model repository.

    ``config.json`` is fetched first; its snapshot fixes the commit, and ``model.safetensors`` and
    the optional ``README.md`` are fetched at that same commit, so a branch that moves during the
    download can never mix two versions.

    Args:
        repo_id: ``org/name``.
        revision: Branch, tag or commit (default: ``main``).
        cache_dir: Hub cache directory (default: ``HF_HUB_CACHE``).
        force_download: Download even if the files are cached.
        local_files_only: Use only the cache (as ``HF_HUB_OFFLINE=1`` does).
        token: Hub token for private repositories (default: the saved login / ``HF_TOKEN``).

    Returns:
        The snapshot directory holding the files.

    Raises:
        ValueError: For a malformed ``repo_id``.
        NotCachedError: When the files are not cached and offline mode (or ``local_files_only``)
            forbids downloading, or the Hub cannot be reached; the message says how to pre-download.
        HubError: For an unknown or gated repository, an unknown revision, or a repository without
            ``config.json`` / ``model.safetensors``.

    Example:
        >>> from vipann.zoo.hub import download_repo_files
        >>> path = download_repo_files("vipann/flip-resnet54")  # doctest: +SKIP
        >>> sorted(p.name for p in path.iterdir())  # doctest: +SKIP
        ['README.md', 'config.json', 'model.safetensors']
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    check_repo_id(repo_id)
    where = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")

    def fetch(filename: str, rev: str | None) -> Path:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=rev,
                cache_dir=cache_dir,
                force_download=force_download,
                local_files_only=local_files_only,
                token=token,
                library_name="vipann",
                library_version=__version__,
            )
        )

    filename = CONFIG_NAME
    try:
        config_path = fetch(CONFIG_NAME, revision)
        snapshot = config_path.parent
        # The cache lays files out as snapshots/<commit>/<file>: pin the rest to that commit.
        commit = snapshot.name if _COMMIT.fullmatch(snapshot.name) else revision
        filename = WEIGHTS_NAME
        fetch(WEIGHTS_NAME, commit)
        # LocalEntryNotFoundError is a subclass of EntryNotFoundError: a card missing from the Hub or
        # from an offline cache is not an error, the card is documentation only.
        with contextlib.suppress(EntryNotFoundError):
            fetch(README_NAME, commit)
    except LocalEntryNotFoundError as exc:
        cache = cache_dir or constants.HF_HUB_CACHE
        if local_files_only or constants.HF_HUB_OFFLINE:
            reason = "offline mode is on (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "local_files_only=True"
            message = f"{filename} of {where} is not in the Hub cache ({cache}) and {reason}."
        else:
            message = (
                f"could not reach the Hub at {constants.ENDPOINT} to download {filename} of {where}, "
                f"and it is not in the Hub cache ({cache})."
            )
        raise NotCachedError(f"{message} {_download_hint(repo_id, revision, cache_dir)}") from exc
    except GatedRepoError as exc:
        raise HubError(
            f"{repo_id!r} is a gated repository: accept its conditions on the Hub and pass token= "
            "(or log in with `hf auth login`)"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise HubError(
            f"repository {repo_id!r} was not found on {constants.ENDPOINT} (if it is private, pass token= or "
            "log in with `hf auth login`)"
        ) from exc
    except RevisionNotFoundError as exc:
        raise HubError(
            f"revision {revision!r} was not found in {repo_id!r}; give a branch, a tag or a commit of that repository"
        ) from exc
    except EntryNotFoundError as exc:
        raise HubError(
            f"{where} has no {filename}: it is not a vipann model repository (vipann.save_pretrained writes "
            f"{CONFIG_NAME}, {WEIGHTS_NAME} and {README_NAME})"
        ) from exc
    except HfHubHTTPError as exc:
        raise HubError(f"downloading {filename} of {where} failed: {exc}") from exc
    return snapshot


def _folder_files(folder: Path) -> list[str]:
    # Hidden files (editor backups, .cache from `hf download --local-dir`) are never uploaded.
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            files.append(rel.as_posix())
    return files


def push_to_hub(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    dry_run: bool = False,
    commit_message: str | None = None,
    api: Any = None,
) -> list[str]:
    """Upload a model directory to a Hub repository.

    The directory is verified first (config, checksum, every tensor name and shape): a folder that
    would not load is never uploaded. Then the repository is created if needed, the branch
    ``revision`` too, and the folder's files are uploaded in one commit.

    Args:
        folder: A directory written by :func:`vipann.zoo.serialization.save_pretrained`.
        repo_id: ``org/name``.
        revision: Branch to commit to (created from ``main`` if missing); default ``main``.
        private: Create the repository as private (an existing repository keeps its visibility).
        token: Hub token with write access (default: the saved login / ``HF_TOKEN``).
        dry_run: Only verify and return the files that would be uploaded; nothing is sent.
        commit_message: Commit message (default: ``"Upload <name> with vipann"``).
        api: A ``huggingface_hub.HfApi``-like object (tests inject a recording fake).

    Returns:
        The uploaded (or, with ``dry_run``, to-be-uploaded) paths relative to ``folder``.

    Raises:
        ValueError: For a malformed ``repo_id``.
        FileNotFoundError: If the folder or its ``config.json`` / ``model.safetensors`` is missing.
        vipann.CheckpointError: If the folder does not load (names what is wrong).

    Example:
        >>> from vipann.zoo.hub import push_to_hub
        >>> push_to_hub("./flip-resnet54", "vipann/flip-resnet54", dry_run=True)  # doctest: +SKIP
        ['README.md', 'config.json', 'model.safetensors']
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    config = verify_pretrained_dir(folder)
    files = _folder_files(folder)
    if dry_run:
        return files
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, token=token, repo_type="model", exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        revision=revision,
        token=token,
        allow_patterns=files,
        commit_message=commit_message or f"Upload {config['name']} with vipann",
    )
    return files
