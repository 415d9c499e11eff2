"""Downloading one file over HTTP(S): progress bar, resume by Range requests, checksums, a file lock.

:func:`download_file` writes into ``<target>.incomplete`` and resumes it with an HTTP ``Range``
request, both when the connection drops during a download (it retries while bytes keep arriving)
and when an earlier process left a partial file. The finished file is checked against the expected
size and checksums: a mismatch deletes it and raises :class:`ChecksumMismatchError`, naming the
expected and the received checksum; only a verified file is renamed to ``target``.

:func:`file_lock` serialises processes that work on the same cache entry (``filelock``: ``fcntl``
on POSIX, ``msvcrt`` on Windows, a lock file elsewhere). Settings follow ``huggingface_hub``:
``HF_HUB_OFFLINE`` (:func:`offline_mode`) and ``HF_HUB_DISABLE_PROGRESS_BARS``, read when called.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vipann._version import __version__
from vipann.utils.atomic import fsync_path
from vipann.zoo.checkpoint import CheckpointError

__all__ = [
    "ChecksumMismatchError",
    "DownloadError",
    "download_file",
    "file_digests",
    "file_lock",
    "format_size",
    "offline_mode",
]

logger = logging.getLogger("vipann.zoo")

#: Consecutive failed attempts (no byte received) before a download gives up; a partial file stays.
RETRIES = 5
#: Seconds to wait before the first retry (doubled each time, at most 30 s).
BACKOFF_S = 1.0
#: Seconds a connection may stay silent.
TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(RuntimeError):
    """A download failed: the server refused it, or the connection kept failing (a partial file is kept)."""


class ChecksumMismatchError(CheckpointError):
    """A file's size or checksum differs from the published one; the file is deleted, nothing is cached."""


def _env_true(name: str) -> bool:
    return (os.environ.get(name) or "").upper() in {"1", "ON", "YES", "TRUE"}


def offline_mode() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids network access, read now."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def format_size(num_bytes: int | None) -> str:
    """``327428481`` -> ``'327.4 MB'`` (decimal units); ``'unknown size'`` for None."""
    if num_bytes is None:
        return "unknown size"
    if num_bytes < 1000:
        return f"{num_bytes} B"
    size, unit = float(num_bytes) / 1000, "kB"
    for bigger in ("MB", "GB"):
        if size < 1000:
            break
        size, unit = size / 1000, bigger
    return f"{size:.1f} {unit}"


def file_digests(path: str | os.PathLike[str]) -> dict[str, str]:
    """MD5 and SHA-256 of a file, in one pass.

    Args:
        path: The file.

    Returns:
        ``{"md5": hex, "sha256": hex}``.
    """
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            md5.update(chunk)
            sha256.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold an inter-process lock on ``path`` (created with its parents) for the ``with`` block.

    Args:
        path: The lock file.
        what: What the holder does, for the log line written while waiting.

    Yields:
        Nothing; the lock is released on exit, also on an exception.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0.2)
    except Timeout:
        logger.info("waiting for another process %s (lock %s)", what, path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _progress(total: int | None, initial: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1000,
        desc=desc,
        disable=_env_true("HF_HUB_DISABLE_PROGRESS_BARS"),
    )


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": f"vipann/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _start(response: http.client.HTTPResponse, offset: int, url: str) -> tuple[int, int | None]:
    """Where the body starts in the file and the file's total size, from the status and headers."""
    length = response.headers.get("Content-Length")
    length = int(length) if length is not None and length.isdigit() else None
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if match is None or int(match.group(1)) != offset:
            raise DownloadError(
                f"{url} answered a resume request for byte {offset} with Content-Range "
                f"{response.headers.get('Content-Range')!r}; delete the partial file and download again"
            )
        total = int(match.group(3)) if match.group(3) != "*" else None
        return offset, total
    if offset:
        logger.info(
            "the server does not resume downloads (HTTP %d to a Range request); starting again", response.status
        )
    return 0, length


def _fetch(url: str, part: Path, size: int | None, desc: str, timeout: float) -> None:
    """Download ``url`` into ``part``, resuming it, until the server has sent the whole file."""
    failures = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset > size:
            part.unlink()
            offset = 0
        if size is not None and offset == size:
            return
        if offset:
            logger.info("resuming %s at %s of %s", part.name, format_size(offset), format_size(size))
        received = 0
        try:
            with _open(url, offset, timeout) as response:
                start, total = _start(response, offset, url)
                if size is not None and total is not None and total != size:
                    raise DownloadError(
                        f"{url} serves {total} bytes, but the published file has {size} bytes: the server "
                        "holds another file (check VIPANN_PANNS_ENDPOINT); nothing was downloaded"
                    )
                expected = total - start if total is not None else None
                with open(part, "ab" if start else "wb") as f, _progress(total or size, start, desc) as bar:
                    while chunk := response.read(_CHUNK):
                        f.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                    f.flush()
                    os.fsync(f.fileno())
                if expected is not None and received < expected:
                    raise ConnectionError(f"the connection closed after {received} of {expected} bytes")
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:
                # Nothing left to send: the partial file may already be complete (the checksum decides).
                return
            if exc.code not in _RETRY_STATUS:
                raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
            error: Exception = exc
        except (*_NETWORK_ERRORS, ssl.SSLError) as exc:
            error = exc
        failures = 0 if received else failures + 1
        if failures > RETRIES:
            done = part.stat().st_size if part.exists() else 0
            raise DownloadError(
                f"downloading {url} failed {failures} times in a row ({error}); {format_size(done)} are kept in "
                f"{part}: run the same call again to resume"
            ) from error
        wait = 0.0 if received else min(BACKOFF_S * 2 ** (failures - 1), 30.0)
        logger.warning("download of %s interrupted (%s); resuming in %.1f s", desc, error, wait)
        time.sleep(wait)


def download_file(
    url: str,
    target: str | os.PathLike[str],
    *,
    size: int | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    desc: str | None = None,
    timeout: float | None = None,
) -> dict[str, str]:
    """Download ``url`` to ``target``, resuming a partial download, and verify it.

    The caller holds the lock of ``target`` (:func:`file_lock`) and decides whether the network
    may be used (:func:`offline_mode`).

    Args:
        url: The HTTP(S) URL.
        target: Where the verified file goes (its folder is created).
        size: Expected size in bytes, if known.
        md5: Expected MD5 (hex), if published.
        sha256: Expected SHA-256 (hex), if published.
        desc: Label of the progress bar (default: the file name).
        timeout: Seconds a connection may stay silent (default :data:`TIMEOUT_S`).

    Returns:
        The file's ``{"md5", "sha256"}`` digests.

    Raises:
        DownloadError: When the server refuses the request, or the connection fails
            :data:`RETRIES` times in a row without progress (the partial file is kept for a resume).
        ChecksumMismatchError: When the size or a checksum differs; the file is deleted.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".incomplete")
    desc = desc or target.name
    _fetch(url, part, size, desc, TIMEOUT_S if timeout is None else timeout)
    received_size = part.stat().st_size
    digests = file_digests(part)
    wrong = []
    if size is not None and received_size != size:
        wrong.append(f"size: expected {size} bytes, received {received_size}")
    if md5 is not None and digests["md5"] != md5:
        wrong.append(f"md5: expected {md5}, received {digests['md5']}")
    if sha256 is not None and digests["sha256"] != sha256:
        wrong.append(f"sha256: expected {sha256}, received {digests['sha256']}")
    if wrong:
        part.unlink()
        raise ChecksumMismatchError(
            f"{target.name} downloaded from {url} is not the published file ({'; '.join(wrong)}). The download "
            "was deleted and nothing was cached. If this repeats, the server (VIPANN_PANNS_ENDPOINT) serves "
            "another file under this name."
        )
    os.replace(part, target)
    fsync_path(target.parent)
    checked = ", ".join(f"{k} {digests[k]}" for k, v in (("md5", md5), ("sha256", sha256)) if v is not None)
    logger.info("verified %s (%s%s)", target.name, format_size(received_size), f"; {checked}" if checked else "")
    return digests
