"""Helpers for tests that compare against the golden reference data in ``tests/data``.

The data are outputs of the original PANNs / VI-PANN code on deterministic seeded weights (see
``tests/data/README.md``). The weights themselves are not stored: :func:`seeded_state_dict`
regenerates them from a key list by the documented per-key seeding scheme, and
:func:`golden_inputs` regenerates the input waveforms.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file

from vipann.models.frontend import FrontendConfig, mel_filterbank, stft_kernels

DATA_DIR = Path(__file__).resolve().parent / "data"
GOLDEN_FILE = DATA_DIR / "golden_panns.safetensors"
KEYS_DIR = DATA_DIR / "keys"
FINGERPRINTS_FILE = DATA_DIR / "seeded_fingerprints.json"

#: Golden arch name -> key-list file name (without ``.json``).
ARCH_KEY_LISTS = {
    "resnet54": "resnet54_state_dict_527",
    "cnn14": "cnn14_state_dict_527",
    "cnn6": "cnn6_state_dict_527",
    "cnn10": "cnn10_state_dict_527",
    "mobilenetv1": "mobilenetv1_state_dict_527",
    "vipann_flipout": "vipann_flipout_audioset_527",
    "vipann_flip_tl50": "vipann_flip_tl_50",
}

#: Conv (>= 3-dim weight) gains of the seeding scheme, by the key list's "model" field.
CONV_GAINS = {
    "ResNet54": 1.0,
    "Cnn14": 1.25,
    "Cnn10": 1.1,
    "Cnn6": 1.0,
    "MobileNetV1": math.sqrt(2.0),
}

#: Front-end keys of the original layout; they hold true torchlibrosa tensors, not random ones.
FRONTEND_KEYS = (
    "spectrogram_extractor.stft.conv_real.weight",
    "spectrogram_extractor.stft.conv_imag.weight",
    "logmel_extractor.melW",
)

KeySpec = tuple[str, tuple[int, ...], torch.dtype, str]


def golden_inputs() -> dict[str, torch.Tensor]:
    """The golden waveforms, keyed by tag: ``"5s"`` (3, 160000), ``"1s"`` (1, 32000), ``"10s"`` (1, 320000).

    They are drawn in this order from one generator seeded with 1234, which reproduces the stored
    golden inputs bit for bit (checked by ``scripts/dev/extract_goldens.py``).
    """
    g = torch.Generator()
    g.manual_seed(1234)
    input_5s = 0.1 * torch.randn(3, 160000, generator=g)
    input_1s = 0.1 * torch.randn(1, 32000, generator=g)
    input_10s = 0.1 * torch.randn(1, 320000, generator=g)
    return {"5s": input_5s, "1s": input_1s, "10s": input_10s}


def load_golden() -> dict[str, torch.Tensor]:
    """All golden tensors, e.g. ``"resnet54.5s.logits"`` or ``"frontend.1s.logmel"``."""
    return load_file(GOLDEN_FILE)


def load_keys(name: str) -> tuple[str, list[KeySpec]]:
    """Read a key list of an original checkpoint layout.

    Args:
        name: File name in ``tests/data/keys`` with or without ``.json`` (e.g.
            ``"resnet54_state_dict_527"``), or a golden arch name from :data:`ARCH_KEY_LISTS`.

    Returns:
        ``(model_name, [(key, shape, dtype, kind), ...])`` where ``model_name`` is the list's
        ``"model"`` field (e.g. ``"ResNet54"``) and ``kind`` is ``"parameter"`` or ``"buffer"``.
    """
    stem = ARCH_KEY_LISTS.get(name, name.removesuffix(".json"))
    path = KEYS_DIR / f"{stem}.json"
    if not path.is_file():
        available = sorted(p.stem for p in KEYS_DIR.glob("*.json"))
        raise FileNotFoundError(f"no key list {path.name}; available: {available}")
    data = json.loads(path.read_text())
    specs = [(k["name"], tuple(k["shape"]), getattr(torch, k["dtype"]), k["kind"]) for k in data["keys"]]
    return data["model"], specs


def _frontend_tensors(config: FrontendConfig) -> dict[str, torch.Tensor]:
    real, imag = stft_kernels(config.window_size)
    mel = mel_filterbank(config.sample_rate, config.window_size, config.mel_bins, config.fmin, config.fmax)
    return dict(zip(FRONTEND_KEYS, (real, imag, mel)))


def _key_generator(name: str, seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    # torch's CPU Mersenne Twister keeps only the low 32 bits of the seed.
    g.manual_seed((seed + zlib.crc32(name.encode("utf-8"))) % 2**32)
    return g


def seeded_state_dict(
    keys: list[KeySpec],
    model_name: str,
    seed: int = 0,
    num_classes: int | None = None,
    frontend: FrontendConfig | None = None,
    flipout_rho: float = -40.0,
    only: Iterable[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Deterministic weights for a key list, by the golden "Seeded weights (scheme)".

    Every key gets its own CPU generator seeded with ``seed + crc32(name)`` (mod 2**32) and one
    draw; Flipout ``mu_*`` tensors are drawn as the deterministic ``weight``/``bias`` they replace,
    ``rho_*`` are the constant ``flipout_rho``, and the front end holds the true torchlibrosa
    tensors of ``frontend``.

    Args:
        keys: Key specs from :func:`load_keys`.
        model_name: The key list's ``"model"`` field; selects the conv gain.
        seed: Base seed (the goldens use 0).
        num_classes: If given, dim 0 of every ``fc_audioset.*`` tensor (freshly drawn, not sliced).
        frontend: Front-end config for the STFT/mel tensors (default: the PANNs defaults).
        flipout_rho: Value of every Flipout ``rho_*`` tensor.
        only: If given, build just these keys (the rules still see the whole key list).

    Returns:
        Mapping key -> tensor, in key-list order.
    """
    names = {name for name, *_ in keys}
    bn_prefixes = {n.removesuffix(".running_mean") for n in names if n.endswith(".running_mean")}
    conv_gain = CONV_GAINS.get(model_name, 1.0)
    wanted = None if only is None else set(only)
    if wanted is not None and not wanted <= names:
        raise KeyError(f"keys not in the key list: {sorted(wanted - names)}")
    front = _frontend_tensors(frontend or FrontendConfig())
    out: dict[str, torch.Tensor] = {}
    for name, shape, _dtype, _kind in keys:
        if wanted is not None and name not in wanted:
            continue
        prefix, _, leaf = name.rpartition(".")
        if num_classes is not None and prefix == "fc_audioset":
            shape = (num_classes, *shape[1:])
        if name in front:
            tensor = front[name]
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{name}: front end gives {tuple(tensor.shape)}, key list says {shape}")
        elif leaf == "num_batches_tracked":
            tensor = torch.tensor(0, dtype=torch.int64)
        elif leaf in ("rho_kernel", "rho_weight", "rho_bias"):
            tensor = torch.full(shape, flipout_rho, dtype=torch.float32)
        else:
            # A Flipout mean is drawn exactly as the deterministic tensor it replaces.
            leaf = {"mu_kernel": "weight", "mu_weight": "weight", "mu_bias": "bias"}.get(leaf, leaf)
            det_name = f"{prefix}.{leaf}"
            g = _key_generator(det_name, seed)
            if prefix in bn_prefixes and leaf in ("weight", "running_var"):
                tensor = 0.8 + (1.2 - 0.8) * torch.rand(shape, generator=g, dtype=torch.float32)
            elif prefix in bn_prefixes and leaf in ("bias", "running_mean"):
                tensor = torch.randn(shape, generator=g, dtype=torch.float32) * 0.05
            elif leaf == "weight" and len(shape) >= 2:
                fan_in = shape[1] * math.prod(shape[2:])
                gain = 1.0 if len(shape) == 2 else conv_gain
                tensor = torch.randn(shape, generator=g, dtype=torch.float32) * (gain / math.sqrt(fan_in))
            elif leaf == "bias":
                tensor = torch.randn(shape, generator=g, dtype=torch.float32) * 0.01
            else:
                raise ValueError(f"{name}: no seeding rule for this key (shape {shape})")
        out[name] = tensor
    return out
