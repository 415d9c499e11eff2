"""Helpers for tests against the EfficientAT goldens in ``tests/data/efficientat`` (see ``tests/data/README.md``).

The goldens are outputs of the original EfficientAT code (commit a425fdc) on synthetic weights. The
weights are not stored: :func:`synthetic_state_dict` rebuilds them, in EfficientAT's key names, by
the documented per-key rule, and :func:`content_sha256` gives the fingerprint the golden JSON records.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import wave
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from vipann.models.efficientat import EfficientAT
from vipann.models.efficientat.dynamic import DynamicConv, DyReLUB
from vipann.zoo.efficientat import to_original_keys

DATA_DIR = Path(__file__).resolve().parent / "data"
GOLDEN_FILE = DATA_DIR / "efficientat" / "golden_efficientat.safetensors"
META_FILE = DATA_DIR / "efficientat" / "golden_efficientat.json"
REAL_CLIP = DATA_DIR / "audio" / "R9_ZSCveAHg_7s.wav"
ARCHS = ("mn04", "mn10", "mn20", "dymn10")
INPUTS = ("input_5s", "real_R9_ZSCveAHg_7s")


@functools.lru_cache(maxsize=1)
def golden() -> dict[str, torch.Tensor]:
    """The golden tensors (inputs, mel spectrograms, per-model outputs, torchaudio's filterbank)."""
    return load_file(str(GOLDEN_FILE))


@functools.lru_cache(maxsize=1)
def meta() -> dict[str, dict]:
    """Per model: the weight rule's gains and seed, the weights' content fingerprint, counts."""
    return json.loads(META_FILE.read_text())


def real_clip() -> torch.Tensor:
    """The 7 s real clip ``(1, 224000)`` as the goldens read it: 32 kHz mono PCM16 / 32768."""
    with wave.open(str(REAL_CLIP)) as w:
        assert w.getframerate() == 32000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    return torch.from_numpy(pcm.copy())[None]


def golden_input(name: str) -> torch.Tensor:
    """A golden input waveform by name."""
    return golden()["input_5s"] if name == "input_5s" else real_clip()


def _owners(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    owners = {}
    for prefix, module in model.named_modules():
        for local, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            owners[f"{prefix}.{local}" if prefix else local] = (module, local)
    return owners


def synthetic_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """The synthetic weights of the goldens, in EfficientAT's key names.

    Per key, a CPU generator seeded with ``seed + crc32(key)`` draws: Conv2d weights
    ``randn * conv_gain / sqrt(fan_in)``; dynamic-convolution weights the same times ``sqrt(K)``;
    Linear weights ``randn * gain / sqrt(fan_in)`` (``dyn_linear_gain`` for the Dy-Conv attention
    and Dy-ReLU coefficient layers, ``linear_gain`` otherwise); BatchNorm weight and running_var
    ``0.8 + 0.4 rand``, bias and running_mean ``0.05 randn``; other biases ``0.01 randn``;
    ``num_batches_tracked`` 0; Dy-ReLU's constant buffers unchanged. The module owning each key is
    found in vipann's deterministic network (the trunk keeps EfficientAT's names; the head is
    renamed back).
    """
    rule = meta()[arch]
    seed, conv_gain = rule["seed"], rule["conv_gain"]
    with torch.device("cpu"):
        model = EfficientAT(arch, "det")
    owners = _owners(model)
    own = model.state_dict()
    renamed = to_original_keys({k: k for k in own})  # original key -> vipann key
    out = {}
    for key, vkey in renamed.items():
        module, local = owners[vkey]
        shape = tuple(own[vkey].shape)
        g = torch.Generator().manual_seed((seed + zlib.crc32(key.encode("utf-8"))) % 2**32)
        if isinstance(module, nn.BatchNorm2d):
            if local == "num_batches_tracked":
                t = torch.zeros((), dtype=torch.int64)
            elif local in ("weight", "running_var"):
                t = 0.8 + 0.4 * torch.rand(shape, generator=g)
            else:
                t = 0.05 * torch.randn(shape, generator=g)
        elif isinstance(module, nn.Conv2d) and local == "weight":
            t = torch.randn(shape, generator=g) * (conv_gain / math.sqrt(shape[1] * math.prod(shape[2:])))
        elif isinstance(module, DynamicConv) and local == "weight":
            fan_in = (module.in_channels // module.groups) * module.kernel_size**2
            t = torch.randn(shape, generator=g) * (conv_gain * math.sqrt(module.num_kernels) / math.sqrt(fan_in))
        elif isinstance(module, nn.Linear) and local == "weight":
            dynamic = ".residuals." in key or ".coef_net." in key
            gain = rule["dyn_linear_gain"] if dynamic else rule["linear_gain"]
            t = torch.randn(shape, generator=g) * (gain / math.sqrt(shape[1]))
        elif local == "bias":
            t = 0.01 * torch.randn(shape, generator=g)
        elif isinstance(module, DyReLUB):
            t = own[vkey].clone()
        else:
            raise KeyError(f"no rule for {key}")
        out[key] = t
    return out


def content_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """The golden JSON's fingerprint: sha256 over the sorted ``key|dtype|shape|`` headers and raw bytes."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
