"""Extract the EfficientAT golden subset the test suite ships with, from the shared reference folder.

The shared folder ``golden-efficientat`` (about 18 MB) holds forward passes of the original
EfficientAT code (commit a425fdc) on synthetic weights; see its README. The tests need about
2.5 MB: the 5 s input pair (the 7 s real clip is ``tests/data/audio/R9_ZSCveAHg_7s.wav``, read as
``int16 / 32768`` exactly as the goldens were made), the front end's mel output of both (equal in
every golden file, which this script checks), torchaudio's Kaldi filterbank, and per model the
logits, probabilities, embedding and classifier hidden layer, plus the weight rule's gains and the
content fingerprints of the weights. The weights themselves are rebuilt by the tests.

Usage::

    .venv/bin/python scripts/dev/extract_efficientat_goldens.py --shared /path/to/golden-efficientat \
        --out tests/data/efficientat
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MODELS = ("mn04", "mn10", "mn20", "dymn10")
INPUTS = ("input_5s", "real_R9_ZSCveAHg_7s")
OUTPUTS = ("logits", "clipwise_output", "embedding", "classifier_hidden")


def main() -> None:
    """Write ``golden_efficientat.safetensors`` and ``golden_efficientat.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True, help="the golden-efficientat folder")
    parser.add_argument("--out", type=Path, default=Path("tests/data/efficientat"))
    args = parser.parse_args()
    inputs = load_file(str(args.shared / "effat_inputs.safetensors"))
    out: dict[str, torch.Tensor] = {"input_5s": inputs["input_5s"]}
    meta: dict[str, dict] = {}
    for model in MODELS:
        golden = load_file(str(args.shared / f"effat_{model}_seed0.safetensors"))
        info = json.loads((args.shared / f"effat_{model}_seed0.json").read_text())
        for name in INPUTS:
            mel = golden[f"{name}.mel"]
            if f"{name}.mel" in out:
                assert torch.equal(out[f"{name}.mel"], mel), f"{model}: the front end differs on {name}"
            out[f"{name}.mel"] = mel
            for kind in OUTPUTS:
                out[f"{model}.{name}.{kind}"] = golden[f"{name}.{kind}"]
        out.setdefault("frontend.mel_basis", golden["frontend.mel_basis"])
        weights = info["files"][f"weights/effat_{model}_seed0_weights.safetensors"]
        meta[model] = {
            "original_name": info["model"],
            "seed": info["seed"],
            "conv_gain": info["conv_gain"],
            "linear_gain": info["linear_gain"],
            "dyn_linear_gain": info["dyn_linear_gain"],
            "n_parameters": info["n_parameters"],
            "macs_10s": info["macs_10s"],
            "weights_content_sha256": weights["content_sha256"],
            "fp32_vs_fp64_max_abs_logits": info["conditioning"]["max_abs_diff_logits_fp32_vs_fp64"],
            "effat_commit": info["effat_commit"],
        }
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(args.out / "golden_efficientat.safetensors"))
    (args.out / "golden_efficientat.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(out)} tensors and {len(meta)} model records to {args.out}")


if __name__ == "__main__":
    main()
