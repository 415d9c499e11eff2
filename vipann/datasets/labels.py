"""Class-label sets that ship inside the package (nothing is fetched at import or run time)."""

from __future__ import annotations

import csv
import functools
from importlib import resources

__all__ = ["LABEL_SETS", "get_labels"]

# label-set name -> (file inside vipann/data/labels, number of classes)
LABEL_SETS: dict[str, tuple[str, int]] = {
    "audioset": ("audioset.csv", 527),
    "esc50": ("esc50.txt", 50),
    "urbansound8k": ("urbansound8k.txt", 10),
    "dcase2013": ("dcase2013.txt", 10),
    # The 20 event classes of the generated mini-AudioSet (vipann.datasets.synthetic) the demo zoo knows.
    "synthetic": ("synthetic.txt", 20),
}


@functools.cache
def get_labels(label_set: str) -> tuple[str, ...]:
    """Return the class names of a shipped label set, in class-index order.

    Args:
        label_set: ``"audioset"`` (the 527 AudioSet display names of
            ``class_labels_indices.csv``), ``"esc50"``, ``"urbansound8k"`` or ``"dcase2013"``.

    Returns:
        The class names.

    Raises:
        ValueError: For an unknown label set.
    """
    if label_set not in LABEL_SETS:
        raise ValueError(f"unknown label set {label_set!r}; choose one of: {', '.join(LABEL_SETS)}")
    filename, expected = LABEL_SETS[label_set]
    text = resources.files("vipann").joinpath("data", "labels", filename).read_text(encoding="utf-8")
    if filename.endswith(".csv"):
        rows = list(csv.DictReader(text.splitlines()))
        rows.sort(key=lambda row: int(row["index"]))
        names = tuple(row["display_name"] for row in rows)
    else:
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != expected:  # pragma: no cover - guards the shipped data files
        raise RuntimeError(f"label file {filename} holds {len(names)} names, expected {expected}")
    return names
