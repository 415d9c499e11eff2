"""Output directories that are never someone else's: refuse to replace or clear a folder vipann did not write.

Commands that write into ``--out`` (``vipann demo``, ``vipann compare``, ``evaluate``, ``retention``,
the recipes) claim it with :func:`claim_output_dir`: a new or empty directory is claimed by writing
the marker file ``.vipann-output.json`` (which command, which vipann, when); a directory holding that
command's marker (or, for runs made before the marker existed, recognised by a caller-given test) is
theirs to write into or to clear; anything else is refused, naming the files that would be lost.

:func:`check_replaceable` is the same rule for replacing a directory whole (``save_pretrained(...,
overwrite=True)``, ``vipann convert --overwrite``): only an empty directory, or one the caller
recognises (a vipann model directory) and that holds nothing but its own files.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Callable, Collection
from pathlib import Path

from vipann._version import __version__
from vipann.utils.atomic import write_json_atomic

__all__ = [
    "MARKER",
    "OutputDirError",
    "check_replaceable",
    "claim_output_dir",
    "clear_output_dir",
    "describe_files",
    "output_owner",
]

#: The file that marks a directory as the output of a vipann command.
MARKER = ".vipann-output.json"
_SHOW = 6
_SCAN = 10_000


class OutputDirError(FileExistsError):
    """A directory cannot be written, replaced or cleared without losing files vipann did not write."""


def describe_files(directory: Path, skip: Collection[str] = ()) -> tuple[str, int]:
    """The first files under ``directory`` (relative paths) and how many there are.

    Args:
        directory: The directory.
        skip: Top-level entries to leave out.

    Returns:
        ``("a.txt, data/b.csv, ... (+N more)", count)``; the count stops at 10,000.
    """
    found: list[str] = []
    count = 0
    for root, dirs, files in os.walk(directory):
        rel = Path(root).relative_to(directory)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in skip]
            files = [f for f in files if f not in skip]
        dirs.sort()
        names = sorted(files) or ([] if dirs else ["(empty folder)"] if rel != Path(".") else [])
        for name in names:
            count += 1
            if len(found) < _SHOW:
                found.append(str(rel / name) if name != "(empty folder)" else f"{rel}/")
        if count >= _SCAN:
            break
    more = count - len(found)
    text = ", ".join(found) + (f" (+{more}{'+' if count >= _SCAN else ''} more)" if more > 0 else "")
    return text, count


def _is_cwd_or_parent(directory: Path) -> bool:
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        return False
    resolved = directory.resolve()
    return cwd == resolved or resolved in cwd.parents


def check_replaceable(
    directory: str | os.PathLike[str],
    *,
    recognise: Callable[[Path], bool],
    own_names: Collection[str],
    what: str,
) -> None:
    """Refuse to replace ``directory`` whole unless nothing but its own files would be lost.

    Args:
        directory: The directory about to be replaced (absent or empty is always fine).
        recognise: Whether a directory is one of the kind being written (e.g. a vipann model directory).
        own_names: The top-level entries such a directory consists of; anything else is the user's.
        what: What the directory would be replaced with, for messages (``"a vipann model directory"``).

    Raises:
        OutputDirError: If files other than its own would be lost, naming them; or if the directory
            is the current working directory (or holds it).
    """
    directory = Path(directory)
    if not directory.exists():
        return
    if not directory.is_dir():
        raise OutputDirError(f"{str(directory)!r} exists and is not a directory; choose another path")
    if any(directory.iterdir()):
        if not recognise(directory):
            listing, count = describe_files(directory)
            raise OutputDirError(
                f"refusing to replace {str(directory)!r}: it is not {what} and replacing it would delete its "
                f"{count} file(s): {listing}; choose a new or empty directory"
            )
        foreign = sorted(name for name in os.listdir(directory) if name not in own_names)
        if foreign:
            shown = ", ".join(foreign[:_SHOW]) + (f" (+{len(foreign) - _SHOW} more)" if len(foreign) > _SHOW else "")
            raise OutputDirError(
                f"refusing to replace {str(directory)!r}: besides the files of {what} it holds {shown}, which "
                "would be deleted; move them out first or choose another directory"
            )
    if _is_cwd_or_parent(directory):
        raise OutputDirError(
            f"refusing to replace {str(directory)!r}: it is the current working directory (or holds it), which "
            "cannot be swapped for a new one; run from another directory or give a subdirectory (e.g. ./NAME)"
        )


def output_owner(directory: str | os.PathLike[str]) -> str | None:
    """The command whose marker ``directory`` holds, or None.

    Args:
        directory: The directory.

    Returns:
        The command name recorded in ``.vipann-output.json``, or None (no marker, or unreadable).
    """
    try:
        data = json.loads((Path(directory) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    command = data.get("command") if isinstance(data, dict) else None
    return command if isinstance(command, str) else None


def clear_output_dir(directory: str | os.PathLike[str]) -> None:
    """Delete everything in a directory claimed by :func:`claim_output_dir`, except the marker.

    Args:
        directory: The directory.

    Raises:
        OutputDirError: If the directory holds no vipann marker (nothing is deleted).
    """
    directory = Path(directory)
    if output_owner(directory) is None:
        raise OutputDirError(f"{str(directory)!r} holds no {MARKER}; vipann clears only directories it wrote")
    for entry in directory.iterdir():
        if entry.name == MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def claim_output_dir(
    directory: str | os.PathLike[str],
    command: str,
    *,
    clear: bool = False,
    recognise: Callable[[Path], bool] | None = None,
) -> Path:
    """Make ``directory`` the output of ``command``, or refuse if it holds files of anything else.

    Args:
        directory: The ``--out`` directory (created with its parents when missing).
        command: The command (``"demo"``, ``"compare"``, ``"transfer"``, ...), recorded in the marker.
        clear: Delete the previous content of a directory that is ``command``'s.
        recognise: Recognises ``command``'s output written before the marker existed.

    Returns:
        The directory.

    Raises:
        OutputDirError: If the directory is not empty and not ``command``'s, naming its files and
            the command that wrote it if it was another vipann command; nothing is changed.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputDirError(f"--out {str(directory)!r} exists and is not a directory; choose another path")
    if directory.is_dir() and any(directory.iterdir()):
        owner = output_owner(directory)
        if owner != command and not (owner is None and recognise is not None and recognise(directory)):
            listing, count = describe_files(directory, skip=(MARKER,))
            by = f"by `{owner}`" if owner else "by vipann"
            raise OutputDirError(
                f"--out {str(directory)!r} is not empty and was not written {by} for `{command}`: writing "
                f"there could overwrite or mix with its {count} file(s) ({listing}); nothing was changed: "
                "choose a new or empty directory"
            )
        if clear:
            if owner is None:
                _write_marker(directory, command)
            clear_output_dir(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if output_owner(directory) != command:
        _write_marker(directory, command)
    return directory


def _write_marker(directory: Path, command: str) -> None:
    write_json_atomic(
        directory / MARKER,
        {
            "command": command,
            "vipann_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "note": "written by vipann: this directory is the output of the command above; vipann may "
            "overwrite or clear it when that command runs again here",
        },
    )
