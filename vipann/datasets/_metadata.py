"""Helpers the loaders share for finding a dataset's folder and reading its metadata strictly."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from vipann.datasets.errors import MetadataError

__all__ = ["check_class_names", "find_root", "read_csv", "to_int"]


def find_root(root: str | os.PathLike[str], marker: str, folder_names: Sequence[str], dataset: str) -> Path:
    """Locate a dataset's top folder from the folder the user pointed at.

    Args:
        root: The folder given: the dataset's top folder as distributed, or its parent.
        marker: A path relative to the top folder that identifies it (e.g. ``meta/esc50.csv``).
        folder_names: Names the top folder has when the archive is extracted into ``root``.
        dataset: Dataset name for messages.

    Returns:
        The top folder.

    Raises:
        FileNotFoundError: If neither ``root`` nor ``root/<name>`` holds ``marker``.
    """
    root = Path(root).expanduser()
    for candidate in (root, *(root / name for name in folder_names)):
        if (candidate / marker).exists():
            return candidate
    tried = ", ".join(str(c / marker) for c in (root, *(root / name for name in folder_names)))
    raise FileNotFoundError(f"{dataset}: {str(root)!r} is not the dataset folder as distributed; looked for {tried}")


def read_csv(path: Path, columns: Sequence[str], dataset: str) -> pd.DataFrame:
    """Read a metadata CSV with every cell as a string, checking the required columns.

    Cells stay strings (no NaN guessing, no float conversion of ids such as ``100032``), so each
    loader parses exactly the columns it uses and reports bad cells by row.

    Args:
        path: The CSV file.
        columns: Columns that must be present.
        dataset: Dataset name for messages.

    Returns:
        The table.

    Raises:
        MetadataError: If the file cannot be parsed, lacks a required column, or lists no rows
            (only a header).
    """
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise MetadataError(f"{dataset}: cannot parse {path}: {error}") from error
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise MetadataError(
            f"{dataset}: {path} lacks column(s) {missing}; it has {list(table.columns)} (is this the right dataset?)"
        )
    if table.empty:
        raise MetadataError(
            f"{dataset}: {path} lists no clips (it has a header and no rows): the file is truncated or emptied; "
            "restore it from the dataset's archive"
        )
    return table


def to_int(value: str, column: str, row: int, path: Path, dataset: str) -> int:
    """Parse one integer cell.

    Args:
        value: The cell.
        column: Its column (for the message).
        row: Its 0-based data row (reported 1-based, counting the header as line 1).
        path: The file (for the message).
        dataset: Dataset name for messages.

    Returns:
        The integer.

    Raises:
        MetadataError: If the cell is not an integer.
    """
    try:
        return int(str(value).strip())
    except ValueError:
        raise MetadataError(
            f"{dataset}: {path} line {row + 2}: column {column!r} is {value!r}, not an integer"
        ) from None


def check_class_names(seen: Mapping[int, set[str]], expected: Sequence[str], dataset: str, path: Path) -> None:
    """Check that the metadata's class index -> name pairs are the dataset's official ones.

    Args:
        seen: Every class index in the metadata with the names it appears with.
        expected: The official names in index order.
        dataset: Dataset name for messages.
        path: The metadata file (for the message).

    Raises:
        MetadataError: If an index is out of range or appears with another name.
    """
    wrong = []
    for index in sorted(seen):
        names = seen[index]
        official = expected[index] if 0 <= index < len(expected) else None
        if official is None or names != {official}:
            wrong.append(f"class {index}: metadata says {sorted(names)}, expected {official!r}")
    if wrong:
        listed = "\n  ".join(wrong[:10])
        raise MetadataError(
            f"{dataset}: the class names in {path} do not match the official {dataset} classes "
            f"(wrong dataset or corrupted metadata):\n  {listed}"
        )
