"""Training checkpoints: nested state (model, optimizer, RNGs, sampler) in safetensors + JSON.

A training state is any nesting of dicts, lists, tensors and JSON scalars (an optimizer's
``state_dict()``, RNG states, counters). :func:`save_state` splits it into the tensors (one
``state.safetensors``) and the structure (``state.json``) and writes both into a temporary
directory that is renamed into place, so a killed run leaves either the previous checkpoint or the
new one, never half of one. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

__all__ = ["capture_rng_state", "load_state", "restore_rng_state", "save_state"]

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
    directory.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(state, tensors, "")
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        save_file(tensors, str(tmp / "state.safetensors"), metadata={"format": "pt"})
        with open(tmp / "state.json", "w", encoding="utf-8") as fh:
            json.dump(structure, fh)
            fh.flush()
            os.fsync(fh.fileno())
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_state(directory: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training state written by :func:`save_state`.

    Args:
        directory: The checkpoint directory.
        map_location: Device for the tensors.

    Returns:
        The nested state.

    Raises:
        FileNotFoundError: If the directory has no complete checkpoint.
        ValueError: If the files are corrupt.
    """
    directory = Path(directory)
    files = directory / "state.json", directory / "state.safetensors"
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(f"{directory} holds no complete training checkpoint (state.json + state.safetensors)")
    try:
        tensors = load_file(str(files[1]), device=str(map_location))
        structure = json.loads(files[0].read_text(encoding="utf-8"))
    except Exception as exc:
        raise ValueError(f"training checkpoint {directory} is corrupt: {exc}") from exc
    return _unflatten(structure, tensors)


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
