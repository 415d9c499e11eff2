"""Extract the small golden subset that the test suite ships with, from the shared reference folder.

The shared folder (about 29 MB) holds forward passes of the original PANNs and VI-PANN code on
seeded weights; see its README. The tests need only about 1.6 MB of it, and they must run
from a plain clone, so this script copies the outputs (not the inputs, which a seeded generator
reproduces bit for bit), the key lists and a subset of the weight fingerprints into ``tests/data``.

Usage::

    .venv/bin/python scripts/dev/extract_goldens.py --shared /path/to/reference --out tests/data
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ARCHS = {
    "resnet54": "panns_resnet54_seed0.safetensors",
    "cnn14": "panns_cnn14_seed0.safetensors",
    "cnn6": "panns_cnn6_seed0.safetensors",
    "cnn10": "panns_cnn10_seed0.safetensors",
    "mobilenetv1": "panns_mobilenetv1_seed0.safetensors",
}
TAGS = ("1s", "5s", "10s")
OUTPUTS = ("pooled", "embedding", "logits", "clipwise")
VIPANN = {
    "vipann_flipout": ("vipann_flipout_seed0_mu_only.safetensors", ("pooled", "clipwise", "embedding")),
    "vipann_flip_tl50": ("vipann_flip_tl50_seed0_mu_only.safetensors", ("pooled", "clipwise", "embedding")),
}
VIPANN_SCALARS = {"vipann_flipout": ("kl_loss",), "vipann_flip_tl50": ("kl_loss", "kl_loss_head")}
FRONTEND_FILE = "frontend_32k_1024_320_64_50_14000.safetensors"
STFT_ROWS = list(range(0, 513, 32))  # 0, 32, ..., 512: DC, Nyquist and 15 bins between
FINGERPRINT_LISTS = (
    "ResNet54",
    "Cnn14",
    "Cnn6",
    "Cnn10",
    "MobileNetV1",
    "vipann_flipout_audioset_527",
    "vipann_flip_tl_50",
)


def golden_inputs() -> dict[str, torch.Tensor]:
    """The three golden waveforms, drawn in the documented order from one seeded generator."""
    g = torch.Generator()
    g.manual_seed(1234)
    input_5s = 0.1 * torch.randn(3, 160000, generator=g)
    input_1s = 0.1 * torch.randn(1, 32000, generator=g)
    input_10s = 0.1 * torch.randn(1, 320000, generator=g)
    return {"5s": input_5s, "1s": input_1s, "10s": input_10s}


def _pick_fingerprint_keys(keys: list[dict]) -> list[str]:
    """Choose about a dozen keys of one key list that exercise every seeding rule."""
    names = [k["name"] for k in keys]
    convs = [k for k in keys if len(k["shape"]) == 4 and not k["name"].endswith(".rho_kernel")]

    def first(pred) -> str | None:
        return next((n for n in names if pred(n)), None)

    bn_prefixes = [n[: -len(".running_mean")] for n in names if n.endswith(".running_mean")]
    bn = bn_prefixes[1]  # bn_prefixes[0] is bn0 in every PANN; take a block's BN instead
    picks = [
        "logmel_extractor.melW",
        "spectrogram_extractor.stft.conv_real.weight",
        "spectrogram_extractor.stft.conv_imag.weight",
        convs[0]["name"],  # the first conv (fan_in 9)
        convs[len(convs) // 2]["name"],  # a conv in the middle of the trunk
        next((k["name"] for k in convs[1:] if k["shape"][1] == 1), None),  # depthwise (MobileNet)
        next((k["name"] for k in convs if "downsample" in k["name"]), None),  # ResNet shortcut
        *(f"{bn}.{leaf}" for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")),
        first(lambda n: n in ("fc1.weight", "fc1.mu_weight")),
        first(lambda n: n in ("fc1.bias", "fc1.mu_bias")),
        first(lambda n: n in ("fc_audioset.weight", "fc_audioset.mu_weight")),
        first(lambda n: n in ("fc_audioset.bias", "fc_audioset.mu_bias")),
        first(lambda n: n.endswith(".rho_kernel")),
        first(lambda n: n.endswith(".rho_weight")),
        first(lambda n: n.endswith(".rho_bias")),
    ]
    return [p for p in dict.fromkeys(picks) if p is not None]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True, help="the shared reference folder")
    parser.add_argument("--out", type=Path, default=Path("tests/data"), help="output folder")
    args = parser.parse_args(argv)
    golden = args.shared / "golden" if (args.shared / "golden").is_dir() else args.shared
    if not (golden / "README.md").is_file() or not (golden / FRONTEND_FILE).is_file():
        parser.error(f"{golden} does not look like the golden folder (no README.md / {FRONTEND_FILE})")
    args.out.mkdir(parents=True, exist_ok=True)

    inputs = golden_inputs()
    tensors: dict[str, torch.Tensor] = {}
    for arch, fname in ARCHS.items():
        data = load_file(golden / fname)
        for tag in TAGS:
            if not torch.equal(data[f"input_{tag}"], inputs[tag]):
                raise SystemExit(f"{fname}: input_{tag} is not reproduced by the seeded generator")
            for out in OUTPUTS:
                tensors[f"{arch}.{tag}.{out}"] = data[f"{out}_{tag}"]
            if arch == "resnet54":
                tensors[f"frontend.{tag}.logmel"] = data[f"logmel_{tag}"]
            elif not torch.equal(data[f"logmel_{tag}"], tensors[f"frontend.{tag}.logmel"]):
                raise SystemExit(f"{fname}: logmel_{tag} differs from ResNet54's (front end not shared?)")
    fe = load_file(golden / FRONTEND_FILE)
    tensors["frontend.melW"] = fe["logmel_extractor.melW"]
    tensors["frontend.stft_real_rows"] = fe["spectrogram_extractor.stft.conv_real.weight"][STFT_ROWS]
    tensors["frontend.stft_imag_rows"] = fe["spectrogram_extractor.stft.conv_imag.weight"][STFT_ROWS]
    for name, (fname, outs) in VIPANN.items():
        data = load_file(golden / fname)
        if not torch.equal(data["input_5s"], inputs["5s"]):
            raise SystemExit(f"{fname}: input_5s is not reproduced by the seeded generator")
        for out in outs:
            tensors[f"{name}.5s.{out}"] = data[f"{out}_5s"]
        for out in VIPANN_SCALARS[name]:
            tensors[f"{name}.5s.{out}"] = data[out]
    tensors = {k: v.contiguous() for k, v in sorted(tensors.items())}
    metadata = {
        "source": "subset of the shared golden reference (see tests/data/README.md)",
        "panns": "qiuqiangkong/audioset_tagging_cnn pytorch/models.py @ d2f4b8c, eval, float32 CPU",
        "vipann": "marko-orescanin-nps/VI-PANN @ dbab00b, bayesian-torch 0.5.0, rho -40, eval",
        "torch": "2.13.0+cpu",
        "weights_seed": "0",
        "inputs": "g=torch.Generator(); g.manual_seed(1234); 5s=0.1*randn(3,160000), 1s=0.1*randn(1,32000), "
        "10s=0.1*randn(1,320000), drawn in that order",
        "stft_rows": ",".join(map(str, STFT_ROWS)),
    }
    # One metadata entry: safetensors writes several in hash order, so the file would change on
    # every run and show up as a spurious diff.
    provenance = {"provenance": json.dumps(metadata, sort_keys=True)}
    save_file(tensors, args.out / "golden_panns.safetensors", metadata=provenance)
    (args.out / "golden_panns.safetensors").chmod(0o644)  # save_file creates it owner-only

    keys_out = args.out / "keys"
    keys_out.mkdir(exist_ok=True)
    for src in sorted((golden / "keys").glob("*.json")):
        shutil.copyfile(src, keys_out / src.name)

    fingerprints = json.loads((golden / "seeded_weights_fingerprints_seed0.json").read_text())
    subset: dict[str, object] = {
        "_about": "Subset of seeded_weights_fingerprints_seed0.json (seed 0): float64 sum and sumsq of "
        "the float32 values and the first 4 values (row-major), for a few keys of every key list."
    }
    for list_name in FINGERPRINT_LISTS:
        entry = fingerprints[list_name]
        key_list = json.loads((golden / entry["key_list"]).read_text())
        chosen = _pick_fingerprint_keys(key_list["keys"])
        subset[list_name] = {
            "key_list": Path(entry["key_list"]).name,
            "model": key_list["model"],
            "num_classes": entry["num_classes"],
            "conv_gain": entry["conv_gain"],
            "keys": {k: entry["keys"][k] for k in chosen},
        }
    (args.out / "seeded_fingerprints.json").write_text(json.dumps(subset, indent=1) + "\n")

    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {len(tensors)} tensors, {len(subset) - 1} fingerprint lists; {args.out} is {total:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
