"""Atomic file writes: a temporary file next to the target, flushed, fsynced, then renamed over it.

A reader (or a process killed half-way) sees either the previous file or the complete new one,
never a mixture; a failed write removes its temporary file and leaves the target untouched.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "current_umask",
    "fsync_path",
    "set_default_mode",
    "write_csv_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux ``/proc``).

    Returns:
        The umask bits (e.g. ``0o022``).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it and put it back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def set_default_mode(path: str | os.PathLike[str]) -> None:
    """Give a file or directory the permissions a plain ``open``/``mkdir`` would: 0666/0777 minus the umask.

    Temporary files and directories (``mkstemp``, ``mkdtemp``) and some writers (safetensors) create
    0600/0700 entries; renamed into place, they would keep those permissions whatever the umask.

    Args:
        path: The file or directory.
    """
    path = Path(path)
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file or directory to disk (best effort: directories can be fsynced on POSIX only).

    Args:
        path: The file or directory.
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write text to ``path`` (UTF-8, Unix line ends) through a temporary file and a rename.

    Args:
        path: Target file; its parent directories are created.
        text: The content.

    Returns:
        The path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        set_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON (indented, sorted keys) to ``path`` through a temporary file and a rename.

    Args:
        path: Target file.
        data: JSON-serialisable data.

    Returns:
        The path.
    """
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))


def write_csv_atomic(path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV file (a header row, then ``rows``) through a temporary file and a rename.

    Args:
        path: Target file.
        header: Column names.
        rows: The data rows.

    Returns:
        The path.
    """
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())
