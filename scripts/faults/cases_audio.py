"""Fault cases: bad audio through every API entry point (predict, Ensemble, AudioTagging, SoundEventDetection)."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import torch

import vipann
from vipann import AudioTagging, SoundEventDetection, predict

from .common import CLEAR, CORRECT, HANG, SR, Outcome, api_error, api_ok, case, python, tiny

G = "audio"


def _sed():
    from vipann.models.archs import ARCHITECTURES
    from vipann.models.pann import PANN

    if "tiny-dlmax" not in ARCHITECTURES:
        ARCHITECTURES["tiny-dlmax"] = dataclasses.replace(
            ARCHITECTURES["tiny"], name="tiny-dlmax", pooling="decision_max"
        )
    torch.manual_seed(0)
    return SoundEventDetection(PANN("tiny-dlmax", "flip", 10).eval(), device="cpu")


ENTRIES = {
    "predict": lambda x: predict(tiny("flip"), x, num_samples=2, generator=0),
    "ensemble": lambda x: predict(vipann.Ensemble([tiny("flip", 0), tiny("flip", 1)]), x, num_samples=2),
    "tagging-s1": lambda x: AudioTagging(tiny("flip"), device="cpu").inference(x),
    "tagging-s3": lambda x: AudioTagging(tiny("flip"), device="cpu").inference(x, num_samples=3, generator=0),
    "sed": lambda x: _sed().inference(x),
}

BAD = {
    "nan": (lambda: torch.full((1, SR), float("nan")), "contains NaN or infinite samples"),
    "inf": (lambda: np.full((1, SR), np.inf, dtype=np.float32), "contains NaN or infinite samples"),
    "1e30": (lambda: torch.full((1, SR), 1e30), r"peak amplitude 1e\+30 is over"),
    "meta": (lambda: torch.empty(1, SR, device="meta"), "'meta' device"),
    "stereo": (lambda: torch.zeros(SR, 2), r"looks like \(samples, channels\).*x\.T"),
}


def _register(entry: str, bad: str) -> None:
    make, pattern = BAD[bad]

    def run(work: Path) -> Outcome:
        return api_error(lambda: ENTRIES[entry](make()), pattern)

    run.__name__ = f"_{entry}_{bad}_audio"
    case(G, CLEAR, f"{entry} on {bad} audio")(run)


for _entry in ENTRIES:
    for _bad in BAD:
        _register(_entry, _bad)


@case(G, CLEAR, "predict on a (32000, 2) stereo array, in a process limited to 120 s")
def _predict_stereo_does_not_hang(work: Path) -> Outcome:
    code = textwrap.dedent(
        """
        import numpy as np, torch, vipann
        torch.manual_seed(0)
        vipann.predict(vipann.create_model("flip-tiny").eval(), np.zeros((32000, 2), np.float32), num_samples=2)
        """
    )
    status, _, err = python(code, timeout=120)
    if status is None:
        return Outcome(HANG, "still running after 120 s")
    if status == 0:
        return Outcome("silent wrong", "predicted 32,000 clips of 2 samples")
    last = err.strip().splitlines()[-1]
    return Outcome(CLEAR if "x.T" in last else "unclear error", last[:110])


@case(G, CLEAR, "predict on int16 samples")
def _predict_int16(work: Path) -> Outcome:
    return api_error(lambda: predict(tiny(), torch.zeros(SR, dtype=torch.int16)), r"x / 32768")


@case(G, CLEAR, "predict on an empty clip")
def _predict_empty(work: Path) -> Outcome:
    return api_error(lambda: predict(tiny(), torch.zeros(0)), "clip 0 is empty")


@case(G, CLEAR, "predict on a 3-D array")
def _predict_3d(work: Path) -> Outcome:
    return api_error(lambda: predict(tiny(), torch.zeros(2, 2, SR)), r"\(samples,\), \(batch, samples\)")


@case(G, CLEAR, "predict with a model on the meta device")
def _predict_meta_model(work: Path) -> Outcome:
    return api_error(
        lambda: predict(vipann.create_model("det-tiny", device="meta"), torch.zeros(SR)), "model is on the 'meta'"
    )


@case(G, CLEAR, "predict(num_samples=0)")
def _predict_zero_samples(work: Path) -> Outcome:
    return api_error(lambda: predict(tiny("flip"), torch.zeros(SR), num_samples=0), "num_samples must be >= 1")


@case(G, CLEAR, "predict with sample_rate=44100 for a 16 kHz model")
def _predict_wrong_rate(work: Path) -> Outcome:
    return api_error(lambda: predict(tiny(), torch.zeros(SR), sample_rate=44100), "resample it first")


@case(G, CLEAR, "predict(device='cuda') on a machine without CUDA")
def _predict_cuda_without_cuda(work: Path) -> Outcome:
    if torch.cuda.is_available():
        return Outcome("skipped", "this machine has CUDA")
    return api_error(lambda: predict(tiny(), torch.zeros(SR), device="cuda"), "CUDA is not available")


@case(G, CLEAR, "predict(window_seconds=0)")
def _predict_zero_window(work: Path) -> Outcome:
    return api_error(lambda: predict(tiny(), torch.zeros(SR), window_seconds=0), "window_seconds must be positive")


@case(G, CLEAR, "predict(aggregate='median')")
def _predict_bad_aggregate(work: Path) -> Outcome:
    return api_error(lambda: predict(tiny(), torch.zeros(SR), aggregate="median"), "'mean' or 'max'")


@case(G, CLEAR, "Prediction.top_k(0)")
def _top_k_zero(work: Path) -> Outcome:
    return api_error(lambda: predict(tiny(), torch.zeros(SR)).top_k(0), "k must be a positive")


@case(G, CLEAR, "Prediction.top_k(-1)")
def _top_k_negative(work: Path) -> Outcome:
    return api_error(lambda: predict(tiny(), torch.zeros(SR)).top_k(-1), "k must be a positive")


@case(G, CORRECT, "predict on a clip shorter than the network's minimum (zero-padded)")
def _predict_short_clip(work: Path) -> Outcome:
    return api_ok(lambda: predict(tiny(), torch.zeros(100)), lambda r: None if r.probs.shape == (1, 1, 10) else "shape")


@case(G, CORRECT, "predict on a list of clips of different lengths")
def _predict_ragged_list(work: Path) -> Outcome:
    return api_ok(
        lambda: predict(tiny(), [torch.zeros(SR), torch.zeros(3 * SR)]),
        lambda r: None if r.probs.shape[1] == 2 and torch.isfinite(r.probs).all() else "wrong output",
    )


@case(G, CORRECT, "predict on int16-scale float audio (mis-scaled but finite)")
def _predict_pcm_scale_float(work: Path) -> Outcome:
    return api_ok(
        lambda: predict(tiny(), torch.randn(SR) * 3000.0),
        lambda r: None if torch.isfinite(r.probs).all() else "NaN probabilities",
    )


@case(G, CLEAR, "AudioTagging on int16 audio")
def _tagging_int16(work: Path) -> Outcome:
    return api_error(lambda: AudioTagging(tiny(), device="cpu").inference(np.zeros((1, SR), np.int16)), "32768")


@case(G, CLEAR, "AudioTagging(num_samples=0)")
def _tagging_zero_samples(work: Path) -> Outcome:
    return api_error(lambda: AudioTagging(tiny(), device="cpu", num_samples=0), "num_samples must be >= 1")


@case(G, CLEAR, "AudioTagging.inference with sample_rate=32000 for a 16 kHz model")
def _tagging_wrong_rate(work: Path) -> Outcome:
    tagger = AudioTagging(tiny(), device="cpu")
    return api_error(lambda: tagger.inference(np.zeros((1, SR), np.float32), sample_rate=32000), "resample")


@case(G, CLEAR, "AudioTagging on a clip too short for the network")
def _tagging_too_short(work: Path) -> Outcome:
    tagger = AudioTagging(tiny(), device="cpu")
    return api_error(lambda: tagger.inference(np.zeros((1, 50), np.float32)), "too short")
