"""Checksums of files, JSON documents and tensors, so corrupted or edited files are noticed.

* :func:`sha256_file`: the SHA-256 of a file.
* :func:`seal_json` / :func:`check_json_seal`: a JSON object that carries the SHA-256 of its own
  canonical form (sorted keys, no whitespace), so that an edit of any field, or a flipped bit, is
  detected when it is read back.
* :func:`tensors_sha256`: the SHA-256 of a ``name -> tensor`` mapping (names, dtypes, shapes and
  bytes), which a safetensors file can carry in its own metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["IntegrityError", "canonical_json", "check_json_seal", "seal_json", "sha256_file", "tensors_sha256"]


class IntegrityError(ValueError):
    """A file does not match the checksum recorded for it: corrupted, truncated or edited."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, as 64 lower-case hex digits.

    Args:
        path: The file.

    Returns:
        The digest.
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(obj: Any) -> str:
    """The canonical text of a JSON value: sorted keys, no whitespace, UTF-8 characters kept."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(obj: Mapping[str, Any], field: str) -> str:
    body = {k: v for k, v in obj.items() if k != field}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def seal_json(obj: Mapping[str, Any], field: str = "sha256") -> dict[str, Any]:
    """A copy of a JSON object with ``field`` set to the SHA-256 of everything else in it.

    Args:
        obj: The object (JSON-serialisable).
        field: The name of the checksum field.

    Returns:
        The sealed copy.
    """
    sealed = {k: v for k, v in obj.items() if k != field}
    sealed[field] = _digest(sealed, field)
    return sealed


def check_json_seal(obj: Mapping[str, Any], field: str = "sha256", *, source: str = "the file") -> bool:
    """Check the seal written by :func:`seal_json`.

    Args:
        obj: The parsed JSON object.
        field: The name of the checksum field.
        source: How to name the file in the message.

    Returns:
        True when the seal matches, False when the object has no ``field`` (written before seals).

    Raises:
        IntegrityError: If the seal does not match the content.
    """
    recorded = obj.get(field)
    if recorded is None:
        return False
    actual = _digest(obj, field)
    if recorded != actual:
        raise IntegrityError(
            f"{source} was modified or corrupted after it was written: its content has SHA-256 {actual}, "
            f"but it records {recorded}"
        )
    return True


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """The SHA-256 of named tensors: every name, dtype, shape and byte, in name order.

    Args:
        tensors: ``name -> tensor`` (any device; copied to the CPU as needed).

    Returns:
        The digest.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
