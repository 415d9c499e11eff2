"""The decoded-audio cache: one safetensors file per dataset configuration, memory-mapped.

Decoding and resampling thousands of files every epoch dominates fine-tuning time, so
:meth:`vipann.datasets.ClipDataset.cache` decodes every clip once into a file holding a single
``(N, clip_samples)`` tensor named ``"audio"``. The file is a standard safetensors file (any
safetensors reader opens it); vipann reads it with ``numpy.memmap`` so that each item touches only
its own row and DataLoader workers share the page cache.

The file is written under a temporary name and renamed when complete, so an interrupted build never
leaves a cache that looks valid, and concurrent builders (e.g. several DDP ranks) each write a
complete file and the last rename wins. The safetensors header is reserved at its largest possible
size up front so that the list of clips that failed to decode can be written at the end without
moving the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from vipann.datasets.audio import resolve_resample_backend
from vipann.datasets.errors import AudioReadError, MissingClipsError

if TYPE_CHECKING:
    from vipann.datasets.records import ClipRecord

__all__ = ["CACHE_DTYPES", "AudioCache", "build_cache", "cache_key", "default_cache_dir"]

logger = logging.getLogger(__name__)

_FORMAT = "vipann-audio-cache/1"
_TENSOR = "audio"
#: dtype name -> (safetensors dtype code, numpy dtype)
CACHE_DTYPES: dict[str, tuple[str, type[np.floating]]] = {
    "float16": ("F16", np.float16),
    "float32": ("F32", np.float32),
}


def default_cache_dir(kind: str = "audio") -> Path:
    """Where vipann keeps dataset files it derives when no directory is given.

    Args:
        kind: Sub-folder: ``"audio"`` for decoded-audio caches, ``"splits"`` for generated
            cross-validation splits that could not be written next to the data.

    Returns:
        ``$VIPANN_CACHE_DIR/<kind>``, else ``$XDG_CACHE_HOME/vipann/<kind>``, else
        ``~/.cache/vipann/<kind>``.
    """
    if os.environ.get("VIPANN_CACHE_DIR"):
        return Path(os.environ["VIPANN_CACHE_DIR"]) / kind
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vipann" / kind


def cache_key(
    *,
    root: Path | None,
    records: Sequence[ClipRecord],
    sample_rate: int,
    clip_samples: int,
    backend: str,
    dtype: str,
) -> str:
    """Hash everything that determines the decoded audio.

    File sizes and modification times are included so that a re-downloaded or edited file makes a
    new cache instead of silently reusing stale audio.

    Args:
        root: The dataset folder.
        records: The clips, in order.
        sample_rate: Target sample rate.
        clip_samples: Clip length in samples.
        backend: Resampling backend (resolved before hashing, so ``"auto"`` hashes as what runs).
        dtype: Cache dtype name.

    Returns:
        A hex SHA-256 digest.
    """
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"cache dtype must be one of {list(CACHE_DTYPES)}, got {dtype!r}")
    digest = hashlib.sha256()
    settings = {
        "format": _FORMAT,
        "root": os.path.abspath(root) if root is not None else None,
        "sample_rate": int(sample_rate),
        "clip_samples": int(clip_samples),
        "backend": resolve_resample_backend(backend),
        "dtype": dtype,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for record in records:
        stat = record.path.stat()
        entry = [os.path.abspath(record.path), record.clip_id, record.offset, stat.st_size, stat.st_mtime_ns]
        digest.update(json.dumps(entry).encode() + b"\n")
    return digest.hexdigest()


def _cache_file(directory: str | os.PathLike[str] | None, prefix: str, key: str) -> Path:
    folder = Path(directory) if directory is not None else default_cache_dir()
    return folder / f"{prefix}-{key[:24]}.safetensors"


def _header(key: str, failed: Sequence[int], shape: tuple[int, int], dtype: str, size: int | None) -> bytes:
    code, np_dtype = CACHE_DTYPES[dtype]
    nbytes = shape[0] * shape[1] * np.dtype(np_dtype).itemsize
    header = {
        _TENSOR: {"dtype": code, "shape": list(shape), "data_offsets": [0, nbytes]},
        # safetensors metadata values must be strings.
        "__metadata__": {"format": _FORMAT, "key": key, "failed": json.dumps(list(failed))},
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    # Pad with spaces (valid JSON whitespace) to a multiple of 8 so the data is aligned.
    size = size if size is not None else -(-len(text) // 8) * 8
    if len(text) > size:  # pragma: no cover - the reserved size is the worst case
        raise RuntimeError("cache header outgrew its reserved size")
    return text + b" " * (size - len(text))


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    with path.open("rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        if not 0 < size < 1 << 28:
            raise ValueError("not a safetensors file")
        header = json.loads(fh.read(size))
    return header, 8 + size


class AudioCache:
    """A read-only view of one cache file (see the module docstring).

    Args:
        path: The cache file.
        shape: ``(num_clips, clip_samples)``.
        dtype: ``"float16"`` or ``"float32"``.
        data_offset: Byte offset of the tensor data.
        failed: Rows whose clip could not be decoded (their rows hold zeros).
        in_memory: Load the whole tensor into RAM instead of memory-mapping it.
    """

    def __init__(
        self,
        path: Path,
        *,
        shape: tuple[int, int],
        dtype: str,
        data_offset: int,
        failed: Sequence[int] = (),
        in_memory: bool = False,
    ) -> None:
        self.path = Path(path)
        self.shape = shape
        self.dtype = dtype
        self.data_offset = data_offset
        self.failed = tuple(int(i) for i in failed)
        self.in_memory = in_memory
        self._array: np.ndarray | None = None
        if in_memory:
            self._array = np.array(self._map())

    @classmethod
    def open(
        cls, key: str, *, directory: str | os.PathLike[str] | None, prefix: str, in_memory: bool = False
    ) -> AudioCache | None:
        """Open the cache file for ``key`` if a complete, matching one exists.

        Args:
            key: From :func:`cache_key`.
            directory: Cache folder (``None``: :func:`default_cache_dir`).
            prefix: File-name prefix (the dataset name).
            in_memory: Load into RAM.

        Returns:
            The cache, or ``None`` when there is none (or it is unreadable or for another key).
        """
        path = _cache_file(directory, prefix, key)
        if not path.is_file():
            return None
        try:
            header, offset = _read_header(path)
            meta, info = header["__metadata__"], header[_TENSOR]
            if meta.get("format") != _FORMAT or meta.get("key") != key:
                return None
            dtype = {code: name for name, (code, _) in CACHE_DTYPES.items()}[info["dtype"]]
            shape = (int(info["shape"][0]), int(info["shape"][1]))
            nbytes = shape[0] * shape[1] * np.dtype(CACHE_DTYPES[dtype][1]).itemsize
            if path.stat().st_size != offset + nbytes:
                raise ValueError("truncated")
            failed = json.loads(meta["failed"])
        except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
            logger.warning("ignoring unreadable audio cache %s (%s); it will be rebuilt", path, error)
            return None
        return cls(path, shape=shape, dtype=dtype, data_offset=offset, failed=failed, in_memory=in_memory)

    def _map(self) -> np.ndarray:
        if self.shape[0] == 0:  # numpy cannot memory-map zero bytes
            return np.zeros(self.shape, dtype=CACHE_DTYPES[self.dtype][1])
        return np.memmap(
            self.path, dtype=CACHE_DTYPES[self.dtype][1], mode="r", offset=self.data_offset, shape=self.shape
        )

    def row(self, index: int) -> np.ndarray:
        """One clip as a fresh float32 array.

        Args:
            index: Row.

        Returns:
            ``(clip_samples,)`` float32 (a copy, safe to modify).
        """
        if self._array is None:
            self._array = self._map()
        return np.array(self._array[index], dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        # Pickling a memmap copies its data; DataLoader workers re-open the file instead.
        state = dict(self.__dict__)
        if not self.in_memory:
            state["_array"] = None
        return state


def build_cache(
    key: str,
    records: Sequence[ClipRecord],
    *,
    decode: Callable[[ClipRecord], np.ndarray],
    num_samples: int,
    dtype: str,
    directory: str | os.PathLike[str] | None,
    prefix: str,
    on_error: str,
    dataset_name: str,
    num_workers: int = 0,
    progress: bool = True,
    in_memory: bool = False,
) -> AudioCache:
    """Decode every clip into a new cache file.

    Args:
        key: From :func:`cache_key`.
        records: The clips, in row order.
        decode: Returns a clip's float32 ``(num_samples,)`` waveform or raises
            :class:`AudioReadError`.
        num_samples: Clip length.
        dtype: ``"float16"`` or ``"float32"``.
        directory: Cache folder (``None``: :func:`default_cache_dir`).
        prefix: File-name prefix.
        on_error: ``"raise"``: any failed clip aborts the build; ``"skip"``: failed rows stay zero
            and are listed in the file.
        dataset_name: For messages.
        num_workers: Decoding threads (0: decode in the calling thread).
        progress: Show a progress bar.
        in_memory: Return a cache loaded into RAM.

    Returns:
        The new cache.

    Raises:
        MissingClipsError: Under ``on_error="raise"`` when clips fail, naming all of them.
    """
    path = _cache_file(directory, prefix, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (len(records), int(num_samples))
    reserved = len(_header(key, range(shape[0]), shape, dtype, None))
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    failures: list[tuple[int, str, str]] = []

    def attempt(record: ClipRecord) -> np.ndarray | str:
        try:
            return decode(record)
        except AudioReadError as error:
            return str(error)

    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(reserved.to_bytes(8, "little"))
            fh.write(_header(key, range(shape[0]), shape, dtype, reserved))
            fh.truncate(8 + reserved + shape[0] * shape[1] * np.dtype(CACHE_DTYPES[dtype][1]).itemsize)
        np_dtype = CACHE_DTYPES[dtype][1]
        # numpy cannot memory-map zero bytes; an empty dataset gets an empty in-memory view.
        view = np.memmap(tmp, dtype=np_dtype, mode="r+", offset=8 + reserved, shape=shape) if shape[0] else None
        chunk = max(1, num_workers) * 8  # bounds the decoded clips held in memory at once
        with (
            ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool,
            tqdm(total=shape[0], desc=f"decoding {dataset_name}", unit="clip", disable=not progress) as bar,
        ):
            for start in range(0, shape[0], chunk):
                batch = records[start : start + chunk]
                results = pool.map(attempt, batch) if num_workers > 0 else map(attempt, batch)
                for offset, (record, result) in enumerate(zip(batch, results)):
                    if isinstance(result, str):
                        failures.append((start + offset, record.clip_id, result))
                    elif view is not None:
                        view[start + offset] = result
                    bar.update(1)
        if failures and on_error == "raise":
            raise MissingClipsError(dataset_name, [(clip_id, reason) for _, clip_id, reason in failures])
        if view is not None:
            view.flush()
            del view
        with tmp.open("r+b") as fh:
            fh.seek(8)
            fh.write(_header(key, [row for row, _, _ in failures], shape, dtype, reserved))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("%s: wrote decoded audio of %d clips to %s", dataset_name, shape[0], path)
    return AudioCache(
        path,
        shape=shape,
        dtype=dtype,
        data_offset=8 + reserved,
        failed=[row for row, _, _ in failures],
        in_memory=in_memory,
    )
