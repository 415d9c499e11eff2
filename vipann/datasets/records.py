"""What a dataset knows about a clip before decoding it, and the target conventions.

Targets follow one convention across vipann: a multi-class clip's target is its int64 class
index, a multi-label clip's target is a float32 multi-hot vector of length ``C`` (ready for
``binary_cross_entropy_with_logits``), and an unlabelled clip's target is ``-1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

__all__ = ["ON_ERROR", "ClipRecord", "OnError", "check_labels", "label_tensor", "stack_labels"]

OnError = Literal["raise", "skip"]
ON_ERROR: tuple[str, ...] = ("raise", "skip")


@dataclass(frozen=True)
class ClipRecord:
    """One clip as listed in a dataset's metadata.

    Attributes:
        path: The audio file.
        label: Class index (multi-class), a multi-hot tuple of 0/1 of length ``C`` (multi-label),
            or ``None`` (unlabelled).
        fold: The official fold, or ``None`` when the dataset has none.
        clip_id: The name the clip is reported by (the file name as the metadata lists it).
        offset: Start of the clip inside the file in seconds (non-zero only for recordings cut into
            several clips).
    """

    path: Path
    label: int | tuple[int, ...] | None
    fold: int | None
    clip_id: str
    offset: float = 0.0


def check_labels(records: Sequence[ClipRecord], num_classes: int, multilabel: bool, dataset: str) -> None:
    """Check that every record's label has the form its dataset promises.

    Args:
        records: The clips.
        num_classes: Number of classes.
        multilabel: Whether labels are multi-hot tuples.
        dataset: Dataset name for messages.

    Raises:
        ValueError: If only some clips are labelled, or a label is out of range or malformed.
    """
    labelled = [r.label is not None for r in records]
    if any(labelled) and not all(labelled):
        raise ValueError(f"{dataset}: either every clip has a label or none has")
    for record in records:
        label = record.label
        if label is None:
            continue
        if multilabel:
            ok = isinstance(label, tuple) and len(label) == num_classes and set(label) <= {0, 1}
            kind = f"a multi-hot tuple of length {num_classes}"
        else:
            ok = isinstance(label, int) and 0 <= label < num_classes
            kind = f"an int in [0, {num_classes})"
        if not ok:
            raise ValueError(f"{dataset}: clip {record.clip_id!r} has label {label!r}, expected {kind}")


def label_tensor(label: int | tuple[int, ...] | None, multilabel: bool) -> Tensor:
    """One clip's target (see the module docstring).

    Args:
        label: The record's label.
        multilabel: Whether labels are multi-hot tuples.

    Returns:
        A 0-d int64 tensor, or a float32 ``(C,)`` tensor for multi-label.
    """
    if label is None:
        return torch.tensor(-1, dtype=torch.long)
    return torch.tensor(label, dtype=torch.float32 if multilabel else torch.long)


def stack_labels(records: Sequence[ClipRecord], num_classes: int, multilabel: bool) -> Tensor:
    """All clips' targets at once (see the module docstring).

    Args:
        records: The clips.
        num_classes: Number of classes.
        multilabel: Whether labels are multi-hot tuples.

    Returns:
        ``(N,)`` int64, or ``(N, C)`` float32 for multi-label; ``(N,)`` of ``-1`` when unlabelled.
    """
    if not records or records[0].label is None:
        return torch.full((len(records),), -1, dtype=torch.long)
    if multilabel:
        return torch.tensor([r.label for r in records], dtype=torch.float32).reshape(-1, num_classes)
    return torch.tensor([r.label for r in records], dtype=torch.long)
