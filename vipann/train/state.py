"""Training checkpoints: nested state (model, optimizer, RNGs, sampler) in safetensors + JSON.

A training state is any nesting of dicts, lists, tensors and JSON scalars (an optimizer's
``state_dict()``, RNG states, counters). :func:`save_state` splits it into the tensors (one
``state.safetensors``) and the structure (``state.json``) and writes both into a staging
directory that is swapped into place (:mod:`vipann.utils.dirswap`), so a killed run leaves either
the previous checkpoint or the new one, never half of one; the next save or load repairs a swap
cut short. Nothing is pickled.

Everything is checksummed: ``state.json`` records the SHA-256 of ``state.safetensors`` and carries
the SHA-256 of its own content, and :func:`load_state` verifies both, so a flipped bit in a
checkpoint stops a resume instead of silently changing the run. :func:`save_weights` /
:func:`load_weights` do the same for a single safetensors file of weights (the checksum of the
tensors travels in the file's metadata).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vipann.utils.atomic import fsync_path, set_default_mode
from vipann.utils.dirswap import make_staging_dir, recover_dir, swap_into_place
from vipann.utils.integrity import IntegrityError, check_json_seal, seal_json, sha256_file, tensors_sha256

__all__ = ["capture_rng_state", "load_state", "load_weights", "restore_rng_state", "save_state", "save_weights"]

logger = logging.getLogger(__name__)

_FORMAT = 2  # state.json: {"format", "tensors_sha256", "structure", "sha256"}; format 1 was the bare structure

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"


def _flatten(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = path or "root"
        tensors[key] = obj.detach().to("cpu").contiguous()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        int_keys = bool(obj) and all(isinstance(k, int) for k in obj)
        if not int_keys and not all(isinstance(k, str) for k in obj):
            raise TypeError(f"state at {path or 'root'!r} has keys that are neither all str nor all int")
        out = {str(k): _flatten(v, tensors, f"{path}.{k}" if path else str(k)) for k, v in obj.items()}
        return {_INTKEYS: out} if int_keys else out
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, tensors, f"{path}.{i}" if path else str(i)) for i, v in enumerate(obj)]
        return {_TUPLE: items} if isinstance(obj, tuple) else items
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path or 'root'!r} in a training checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            return tensors[obj[_TENSOR]]
        if set(obj) == {_TUPLE}:
            return tuple(_unflatten(v, tensors) for v in obj[_TUPLE])
        if set(obj) == {_INTKEYS}:
            return {int(k): _unflatten(v, tensors) for k, v in obj[_INTKEYS].items()}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(directory: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Atomically write a training state to ``directory`` (replacing any previous one).

    Args:
        directory: Target directory (created; an existing checkpoint there is replaced whole).
        state: Nested dicts/lists/tuples of tensors and JSON scalars.

    Returns:
        The directory.

    Raises:
        TypeError: If the state holds an object that cannot be stored without pickling.
    """
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(state, tensors, "")
    tmp = make_staging_dir(directory)  # also repairs what a killed earlier save left
    try:
        save_file(tensors, str(tmp / "state.safetensors"), metadata={"format": "pt"})
        set_default_mode(tmp / "state.safetensors")
        fsync_path(tmp / "state.safetensors")
        record = seal_json(
            {"format": _FORMAT, "tensors_sha256": sha256_file(tmp / "state.safetensors"), "structure": structure}
        )
        with open(tmp / "state.json", "w", encoding="utf-8") as fh:
            json.dump(record, fh)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_path(tmp)
        swap_into_place(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_state(directory: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training state written by :func:`save_state`, after checking its checksums.

    Args:
        directory: The checkpoint directory.
        map_location: Device for the tensors.

    Returns:
        The nested state.

    Raises:
        FileNotFoundError: If the directory has no complete checkpoint.
        ValueError: If the files are corrupt or do not match their checksums (the message says
            which and how to go on).
    """
    directory = Path(directory)
    recover_dir(directory.absolute())
    files = directory / "state.json", directory / "state.safetensors"
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(f"{directory} holds no complete training checkpoint (state.json + state.safetensors)")
    fix = "the checkpoint is damaged: delete it to restart this stage from scratch, or start the run over (--overwrite)"
    try:
        record = json.loads(files[0].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"training checkpoint {directory} is corrupt ({files[0].name}: {exc}); {fix}") from None
    if isinstance(record, dict) and record.get("format") == _FORMAT:
        try:
            check_json_seal(record, source=str(files[0]))
        except IntegrityError as exc:
            raise ValueError(f"training checkpoint {directory}: {exc}; {fix}") from None
        digest = sha256_file(files[1])
        if digest != record.get("tensors_sha256"):
            raise ValueError(
                f"training checkpoint {directory}: {files[1].name} has SHA-256 {digest} but {files[0].name} "
                f"records {record.get('tensors_sha256')} (corrupted or replaced); {fix}"
            )
        structure = record["structure"]
    else:  # written before checkpoints were checksummed
        logger.warning(
            "training checkpoint %s has no checksums (written by an earlier vipann): not verified", directory
        )
        structure = record
    try:
        tensors = load_file(str(files[1]), device=str(map_location))
        return _unflatten(structure, tensors)
    except Exception as exc:
        raise ValueError(f"training checkpoint {directory} is corrupt: {exc}; {fix}") from exc


def save_weights(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor]) -> Path:
    """Write weights as one safetensors file (atomically) that carries the checksum of its tensors.

    Args:
        path: Target file (its parent is created).
        tensors: ``name -> tensor`` (e.g. ``model.state_dict()``).

    Returns:
        The path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(state, str(tmp), metadata={"format": "pt", "tensors_sha256": tensors_sha256(state)})
        set_default_mode(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_weights(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a file written by :func:`save_weights`, after checking the checksum of its tensors.

    Args:
        path: The file.
        device: Device for the tensors.

    Returns:
        ``name -> tensor``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a readable safetensors file or its tensors do not match their checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            recorded = (fh.metadata() or {}).get("tensors_sha256")
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:
        raise ValueError(f"{path} is not a readable safetensors file (corrupt or truncated?): {exc}") from None
    if recorded is not None and tensors_sha256(tensors) != recorded:
        raise ValueError(
            f"{path} does not match the checksum of its tensors (corrupted after it was written); delete it and "
            "run that stage again (or start the run over with --overwrite)"
        )
    return {k: v.to(device) for k, v in tensors.items()}


def capture_rng_state() -> dict[str, Any]:
    """RNG states of Python, NumPy, torch's CPU generator and every CUDA device.

    Returns:
        A state storable with :func:`save_state`.
    """
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": json.dumps(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states captured by :func:`capture_rng_state`.

    Args:
        state: The captured state.
    """
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to("cpu", torch.uint8) for s in state["cuda"]])
