"""Replacing a whole directory atomically, and repairing what a killed replacement left behind.

A directory is written in a *staging* directory next to it, ``.NAME.tmp-TOKEN``, and then swapped
into place with two renames: the old ``NAME`` becomes ``.NAME.old-TOKEN``, the staging directory
becomes ``NAME``, and the old one is deleted. ``TOKEN`` names the writing process (host, process id
and start time, plus a random part), so that anyone can tell a leftover of a *dead* writer from the
work of a live one.

A process killed during the write leaves its staging directory; one killed between the two renames
leaves no ``NAME`` at all, the previous content under ``.NAME.old-TOKEN`` and the complete new
content under ``.NAME.tmp-TOKEN`` (a staging directory is only swapped in once it is complete).
:func:`recover_dir`, called by every later write *and read* of ``NAME``, repairs both: an
interrupted swap is finished (the staged content was complete) or, without staged content, rolled
back, and the leftovers of dead writers are deleted. Leftovers of live writers (concurrent saves,
in this process or another) are never touched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path

from vipann.utils.atomic import fsync_path

__all__ = ["LEFTOVER_GRACE_S", "make_staging_dir", "recover_dir", "swap_into_place"]

logger = logging.getLogger(__name__)

#: Leftovers whose writer cannot be checked (another host, or an older vipann's naming) are
#: deleted once they have not changed for this long.
LEFTOVER_GRACE_S = 24 * 3600.0

_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _start_time(pid: int) -> str:
    """The start time of process ``pid`` (clock ticks since boot, Linux), or ``"0"`` when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def _token() -> str:
    pid = os.getpid()
    return f"{_HOST}-{pid}-{_start_time(pid)}-{secrets.token_hex(4)}"


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(tmp|old)-(.+)$")


_TOKEN = re.compile(r"^([0-9a-f]{8})-(\d+)-(\d+)-[0-9a-f]+$")


def _writer_alive(token: str, path: Path) -> bool:
    """Whether the process that made a leftover may still be working on it."""
    match = _TOKEN.match(token)
    if match is None or match.group(1) != _HOST:
        # An older vipann's name, or another machine sharing the folder: judge by age alone.
        try:
            return time.time() - path.stat().st_mtime < LEFTOVER_GRACE_S
        except OSError:
            return False
    pid, start = int(match.group(2)), match.group(3)
    if pid == os.getpid():
        return start == "0" or start == _start_time(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return True
    now = _start_time(pid)
    return start == "0" or now == "0" or now == start  # a different start time: the pid was reused


def make_staging_dir(target: str | os.PathLike[str]) -> Path:
    """Create the staging directory ``.NAME.tmp-TOKEN`` next to ``target`` (permissions from the umask).

    Leftovers of dead writers of ``target`` are repaired or removed first (:func:`recover_dir`).

    Args:
        target: The directory that will be replaced (it need not exist; its parent is created).

    Returns:
        The new, empty staging directory.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    while True:
        staging = target.parent / f".{target.name}.tmp-{_token()}"
        try:
            os.mkdir(staging, 0o777)  # 0777 minus the umask, unlike mkdtemp's 0700
            return staging
        except FileExistsError:
            continue


def swap_into_place(staging: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Put a complete staging directory in the place of ``target``, replacing what was there.

    ``target`` is at every instant either the complete old directory, absent (between the two
    renames; :func:`recover_dir` repairs a process killed there), or the complete new one.

    Args:
        staging: From :func:`make_staging_dir`, filled and fsynced.
        target: The directory to replace (absent or empty is fine).

    Returns:
        ``target``.

    Raises:
        OSError: If a rename fails; the old directory is put back first.
    """
    staging, target = Path(staging), Path(target)
    if not target.exists() and not target.is_symlink():
        os.rename(staging, target)
    elif target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        os.rmdir(target)
        os.rename(staging, target)
    else:
        backup = staging.with_name(staging.name.replace(".tmp-", ".old-", 1))
        os.rename(target, backup)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(backup, target)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    fsync_path(target.parent)
    return target


def recover_dir(target: str | os.PathLike[str]) -> bool:
    """Finish or roll back a killed replacement of ``target`` and delete dead writers' leftovers.

    For every ``.NAME.old-TOKEN`` of a dead writer: when ``target`` is missing, the swap was cut
    between its two renames; it is finished with ``.NAME.tmp-TOKEN`` (complete, since only complete
    staging directories are swapped) or, without one, rolled back to the old content. Then the
    dead writer's leftovers are deleted. Live writers' directories are left alone.

    Args:
        target: The directory (absent, present or half-replaced).

    Returns:
        True when ``target`` was restored (it was missing and now exists).

    Raises:
        OSError: If a needed rename fails (e.g. a read-only folder), naming the leftover.
    """
    target = Path(target)
    parent = target.parent
    try:
        names = os.listdir(parent)
    except OSError:
        return False
    pattern = _pattern(target.name)
    groups: dict[str, dict[str, Path]] = {}
    for name in names:
        match = pattern.match(name)
        if match is not None:
            groups.setdefault(match.group(2), {})[match.group(1)] = parent / name
    restored = False

    # Newest first: when several swaps were interrupted, the most recent complete content wins.
    def newest(item: tuple[str, dict[str, Path]]) -> float:
        try:
            return -max(p.stat().st_mtime for p in item[1].values())
        except OSError:
            return 0.0

    for token, group in sorted(groups.items(), key=newest):
        if any(_writer_alive(token, path) for path in group.values()):
            continue
        old, tmp = group.get("old"), group.get("tmp")
        if old is not None and not target.exists() and not target.is_symlink():
            source = tmp if tmp is not None and tmp.is_dir() else old
            try:
                os.rename(source, target)
            except FileNotFoundError:
                pass  # another process repaired it first
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"{target} was being replaced when its writer died; its content is in {source}, "
                    f"which could not be moved back ({exc.strerror}): rename it to {target.name} yourself",
                ) from None
            else:
                restored = True
                logger.warning(
                    "%s: a save was interrupted between its two renames; %s",
                    target,
                    "finished it (the new content was complete)" if source == tmp else "rolled back to the old content",
                )
        for leftover in (old, tmp):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
                logger.info("removed %s, left by an interrupted save", leftover)
    if restored:
        fsync_path(parent)
    return restored
